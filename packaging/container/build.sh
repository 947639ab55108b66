#!/usr/bin/env bash
# Builds the WormFS container image from packaging/build-binary.sh's binary, with no registry
# (FROM scratch, Docker's classic builder). Tags ghcr.io/wormfs/wormfs:VERSION and :latest and
# prints the VERSION tag. Fails clearly when Docker does not answer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
docker info >/dev/null 2>&1 ||
    { echo "container/build.sh: Docker does not answer (is the daemon running? docker info)" >&2; exit 1; }
bin="$target_dir/packaging/bin"
mkdir -p "$target_dir/packaging"
# WORMFS_PACKAGING_REUSE_BINARY=1 takes the binary already in target/packaging/bin as it is
# (no cargo run: for iterating on the image alone).
if [ "${WORMFS_PACKAGING_REUSE_BINARY:-}" = 1 ] && [ -x "$bin/wormfs" ] && [ -f "$bin/KIND" ]; then
    echo "container/build.sh: reusing $bin/wormfs ($(cat "$bin/KIND"))" >&2
else
    bash packaging/build-binary.sh >&2
fi
# One image build at a time: the test binaries of several packages may ask for the image at
# once, and they share the build context below. (The binary above needs no lock of ours:
# cargo serialises its builds, and build-binary.sh replaces the file atomically.)
exec 9>"$target_dir/packaging/.container-build.lock"
flock 9
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
image="ghcr.io/wormfs/wormfs"
ctx="$target_dir/packaging/container-context"
rm -rf "$ctx"
mkdir -p "$ctx/owned/data/tmp" "$ctx/owned/disks" "$ctx/root/etc/wormfs"
cp "$here/Dockerfile" "$ctx/Dockerfile"
cp "$bin/wormfs" "$ctx/root/wormfs"
cp "$here/wormfs.toml" "$ctx/root/etc/wormfs/wormfs.toml"
if [ "$(cat "$bin/KIND")" = glibc ]; then
    cp -a "$bin/glibc-root/." "$ctx/root/"
fi
# owned/ holds /data (with tmp/ for SQLite) and /disks: the Dockerfile copies them with
# --chown to the default user (COPY would make them root's).
# /data is private to the node (tokens, the cluster secret, keys): 0700, as serve makes it.
chmod 0755 "$ctx/root/wormfs" "$ctx/owned/disks"
chmod 0700 "$ctx/owned/data" "$ctx/owned/data/tmp"
DOCKER_BUILDKIT=0 docker build -q -t "$image:$version" -t "$image:latest" \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.title=WormFS" \
    --label "org.opencontainers.image.description=WormFS, a write-once storage cluster for home media (WebDAV)" \
    --label "org.opencontainers.image.licenses=AGPL-3.0-or-later" \
    --label "org.opencontainers.image.base.name=scratch" \
    --label "wormfs.binary.kind=$(cat "$bin/KIND")" \
    "$ctx" >&2
size=$(docker image inspect -f '{{.Size}}' "$image:$version")
echo "container/build.sh: $image:$version ($(cat "$bin/KIND"), $((size / 1000000)) MB)" >&2
echo "$image:$version"
