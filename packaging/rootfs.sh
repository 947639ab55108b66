#!/usr/bin/env bash
# Makes (once) a minimal Debian bookworm root filesystem with debootstrap, for the package
# tests: the .deb is installed, upgraded, removed and purged in it as a chroot, and the Unraid
# plugin's install and remove scripts run in it. The same tree, imported into Docker as the
# image `wormfs-test/bookworm-minbase` (no registry: `docker import` of the tree), is the
# container the .deb is also installed in.
#
#   packaging/rootfs.sh            -> prints the path of the tree (target/packaging/rootfs/bookworm)
#   packaging/rootfs.sh --image    -> also imports it into Docker and prints the image name
#
# The tree is kept: tests copy it (cp -a) before changing anything, so one debootstrap serves
# the whole suite. Runs as root (debootstrap and chroot need it).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
base="$target_dir/packaging/rootfs"
tree="$base/bookworm"
mirror="${WORMFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
image=wormfs-test/bookworm-minbase

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "== installing debootstrap" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq debootstrap >/dev/null; }
fi

mkdir -p "$base"
# One builder at a time (nextest runs tests in parallel).
exec 9>"$base/.lock"
flock 9
if [ ! -e "$tree/.wormfs-complete" ]; then
    rm -rf "$tree" "$tree.partial"
    echo "== debootstrap --variant=minbase bookworm ($mirror): about a minute" >&2
    $SUDO debootstrap --variant=minbase bookworm "$tree.partial" "$mirror" >&2 ||
        { echo "rootfs: debootstrap failed (see above)" >&2; exit 1; }
    cp /etc/resolv.conf "$tree.partial/etc/resolv.conf" 2>/dev/null || true
    touch "$tree.partial/.wormfs-complete"
    mv "$tree.partial" "$tree"
fi
if [ "${1:-}" = "--image" ]; then
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        echo "== docker import of the tree as $image" >&2
        tar -C "$tree" --exclude=./.wormfs-complete -c . | docker import - "$image" >/dev/null
    fi
    echo "$image"
else
    echo "$tree"
fi
