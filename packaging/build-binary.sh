#!/usr/bin/env bash
# Builds the `wormfs` binary every package ships (the container image, the Debian package, the
# Unraid plugin) and puts it, stripped, in target/packaging/bin/wormfs.
#
# Static with musl when the toolchain has (or can add) the x86_64-unknown-linux-musl target
# and musl-gcc is installed (Debian's musl-tools, installed here when missing); otherwise the
# glibc binary, with exactly the loader and libraries `ldd` names copied beside it under
# target/packaging/bin/glibc-root/ (for a FROM scratch image). It says which, and writes the
# kind (`musl-static` or `glibc`) to target/packaging/bin/KIND.
#
# WORMFS_PACKAGING_LIBC=glibc|musl forces one (musl fails if it cannot be had).
set -euo pipefail
cd "$(dirname "$0")/.."
# A caller running under cargo (a test) passes the variables cargo sets for it, and cargo's
# fingerprints remember some of them (ring's build script: CARGO_MANIFEST_DIR): left set, they
# make the release build look stale and rebuild it (minutes) each time the caller changes.
for v in $(compgen -e | grep -E '^(CARGO_(PKG_|MANIFEST_|CRATE_|BIN_|PRIMARY_PACKAGE|TARGET_TMPDIR)|NEXTEST|__NEXTEST)'); do
    unset "$v"
done
unset CARGO
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/packaging/bin"
mkdir -p "$out"
# One build at a time (the package tests may ask at once); the next finds it made.
exec 9>"$out/.lock"
flock 9
want="${WORMFS_PACKAGING_LIBC:-auto}"
musl=x86_64-unknown-linux-musl

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

musl_ready() {
    command -v rustup >/dev/null 2>&1 || return 1
    if ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        echo "== rustup target add $musl" >&2
        timeout 600 rustup target add "$musl" >&2 || return 1
    fi
    if ! command -v musl-gcc >/dev/null 2>&1; then
        echo "== installing musl-tools (musl-gcc, for the C parts: SQLite, ring, mimalloc)" >&2
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get install -y -qq musl-tools >/dev/null 2>&1 ||
            { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq musl-tools >/dev/null; } ||
            return 1
    fi
    command -v musl-gcc >/dev/null 2>&1
}

kind=glibc
case "$want" in
    musl) musl_ready || { echo "build-binary: the musl target cannot be had here" >&2; exit 1; }
          kind=musl-static ;;
    glibc) ;;
    auto) if musl_ready; then kind=musl-static; else
              echo "build-binary: no musl target here: building the glibc binary with its libraries" >&2
          fi ;;
    *) echo "build-binary: WORMFS_PACKAGING_LIBC must be glibc or musl, not '$want'" >&2; exit 2 ;;
esac

if [ "$kind" = musl-static ]; then
    cargo build --release --locked -p wormfs-server --bin wormfs --target "$musl"
    built="$target_dir/$musl/release/wormfs"
else
    cargo build --release --locked -p wormfs-server --bin wormfs
    built="$target_dir/release/wormfs"
fi

tmp="$out/wormfs.new.$$"
strip -o "$tmp" "$built"
mv -f "$tmp" "$out/wormfs"
rm -rf "$out/glibc-root"
if [ "$kind" = glibc ]; then
    # The loader and every library the binary links, at the paths the binary asks for.
    mkdir -p "$out/glibc-root"
    ldd "$built" | awk '/=> \// {print $3} /^\s*\/[^ ]+ \(/ {print $1}' | while read -r lib; do
        cp --parents -L "$lib" "$out/glibc-root/"
    done
fi
echo "$kind" > "$out/KIND"
echo "build-binary: $out/wormfs ($kind, $(du -h "$out/wormfs" | cut -f1))" >&2
