#!/usr/bin/env bash
# Builds the Debian package `wormfs` with cargo-deb from the release binary every package
# ships (packaging/build-binary.sh: target/packaging/bin/wormfs, stripped, static with musl
# where possible) and prints the .deb's path on its last line of output.
#
#   packaging/debian/build.sh                 the package, version from Cargo.toml (0.1.0-1)
#   packaging/debian/build.sh --version V     the same package as version V (upgrade tests)
#   packaging/debian/build.sh --no-build      use target/packaging/bin/wormfs as it is
#   packaging/debian/build.sh --binary PATH   package PATH instead (implies --no-build)
#   packaging/debian/build.sh --lint          also run lintian on it (fails on errors)
#
# WORMFS_DEB_NO_BUILD=1 in the environment is --no-build (for iterating on the package tests
# while the release binary is built elsewhere).
#
# The package's metadata is `[package.metadata.deb]` in server/Cargo.toml; its files are in
# this folder (README.Debian says what the package does on the system). cargo-deb is
# installed when missing (pinned, built with CARGO_BUILD_JOBS=1 unless set), lintian with apt.
#
# cargo-deb's assets name the binary `target/release/wormfs`, its placeholder for "the
# target folder's release binary" (kept literal so that a plain `cargo deb -p wormfs-server`
# also works). Here `cargo deb --no-build` runs with CARGO_TARGET_DIR pointing at a staging
# folder whose release/wormfs is a copy of the shipped binary, so the package holds exactly
# the binary the other packages ship, already stripped (--no-strip).
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
cargo_deb_version=3.8.0

version=""
build=1
[ "${WORMFS_DEB_NO_BUILD:-0}" = 1 ] && build=0
binary=""
lint=0
while [ $# -gt 0 ]; do
    case "$1" in
        --version) version="${2:?--version needs a version}"; shift 2 ;;
        --version=*) version="${1#--version=}"; shift ;;
        --no-build) build=0; shift ;;
        --binary) binary="$(realpath "${2:?--binary needs a path}")"; build=0; shift 2 ;;
        --lint) lint=1; shift ;;
        *) echo "build.sh: unknown argument '$1' (see the top of $0)" >&2; exit 2 ;;
    esac
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq && $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null; }
}

if ! cargo deb --version >/dev/null 2>&1; then
    echo "== installing cargo-deb $cargo_deb_version (cargo install, a few minutes)" >&2
    CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" \
        cargo install cargo-deb --version "$cargo_deb_version" --locked >&2
fi
# dpkg-shlibdeps (cargo-deb's $auto dependencies) is in dpkg-dev.
command -v dpkg-shlibdeps >/dev/null 2>&1 || { echo "== installing dpkg-dev" >&2; apt_install dpkg-dev; }
command -v lintian >/dev/null 2>&1 || { echo "== installing lintian" >&2; apt_install lintian; }

if [ "$build" = 1 ]; then
    bash packaging/build-binary.sh >&2
fi
[ -n "$binary" ] || binary="$target_dir/packaging/bin/wormfs"
[ -x "$binary" ] || { echo "build.sh: no binary at $binary (run packaging/build-binary.sh)" >&2; exit 1; }

out="$target_dir/packaging/deb"
stage="$target_dir/packaging/deb-stage"
mkdir -p "$out" "$stage/release"
# One build at a time (nextest may run two package tests together): they share the stage.
exec 9>"$stage/.lock"
flock 9
cp -f "$binary" "$stage/release/wormfs"

args=(deb -p wormfs-server --no-build --no-strip --output "$out/")
[ -z "$version" ] || args+=(--deb-version "$version")
deb="$(CARGO_TARGET_DIR="$stage" cargo "${args[@]}" | tail -n 1)"
[ -f "$deb" ] || { echo "build.sh: cargo deb printed '$deb', which is not a file" >&2; exit 1; }

if [ "$lint" = 1 ]; then
    lintian --allow-root --fail-on error --display-info "$deb" >&2
fi
echo "build.sh: $deb ($(du -h "$deb" | cut -f1), binary $(cat "$target_dir/packaging/bin/KIND" 2>/dev/null || echo "of unknown kind"))" >&2
echo "$deb"
