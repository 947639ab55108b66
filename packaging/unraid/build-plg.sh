#!/usr/bin/env bash
# Builds the Unraid plugin: the binary tarball and the .plg that downloads it.
#
#   packaging/unraid/build-plg.sh [--binary PATH] [--out DIR] [--base-url URL] [--plugin-url URL]
#
# --binary      the wormfs binary to ship (default: packaging/build-binary.sh's, which is static
#               with musl where the toolchain allows: Unraid is Slackware, and a static binary
#               does not depend on its glibc)
# --out         where to write (default target/packaging/unraid)
# --base-url    where the tarball will be downloaded from (default: the GitHub release of this
#               version); the .plg's <URL> is BASE-URL/wormfs-VERSION-x86_64.tar.gz
# --plugin-url  the .plg's pluginURL (where the plugin manager looks for updates)
#
# Writes OUT/wormfs-VERSION-x86_64.tar.gz (reproducible: same binary, same SHA-256) and
# OUT/wormfs.plg with the version, the URL and the tarball's SHA-256 filled in, and the files of
# packaging/unraid/plugin/ included. Prints the .plg's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
binary="" out="$target_dir/packaging/unraid"
base_url="https://github.com/wormfs/wormfs/releases/download/v$version"
plugin_url="https://raw.githubusercontent.com/wormfs/wormfs/main/packaging/unraid/wormfs.plg"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --base-url) base_url="${2%/}"; shift 2 ;;
        --plugin-url) plugin_url="$2"; shift 2 ;;
        *) echo "build-plg: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    bash packaging/build-binary.sh >&2
    binary="$target_dir/packaging/bin/wormfs"
    if [ "$(cat "$target_dir/packaging/bin/KIND")" != musl-static ]; then
        echo "build-plg: WARNING: the binary is not static (KIND glibc): it needs a glibc as new as the build machine's on Unraid" >&2
    fi
fi
[ -x "$binary" ] || { echo "build-plg: no binary at $binary" >&2; exit 1; }

mkdir -p "$out"
name="wormfs-$version-x86_64"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
install -m 0755 "$binary" "$stage/$name/wormfs"
tarball="$out/$name.tar.gz"
tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$name" |
    gzip -n -9 >"$tarball.new"
mv -f "$tarball.new" "$tarball"
sha256="$(sha256sum "$tarball" | cut -d' ' -f1)"

# Fill in the placeholders; an @INCLUDE FILE@ line becomes that file (relative to this folder).
awk -v dir="$here" '
    /^@INCLUDE [^@]+@$/ {
        f = $2; sub(/@$/, "", f); f = dir "/" f
        while ((getline line < f) > 0) {
            if (index(line, "]]>")) { print "build-plg: " f " contains ]]>" > "/dev/stderr"; exit 1 }
            print line
        }
        close(f); next
    }
    { print }
' "$here/wormfs.plg" |
    sed -e "s|@VERSION@|$version|g" -e "s|@SHA256@|$sha256|g" \
        -e "s|@TARBALL_URL@|$base_url/$name.tar.gz|g" -e "s|@PLUGIN_URL@|$plugin_url|g" \
        >"$out/wormfs.plg.new"
if grep -n '@[A-Z_]*@' "$out/wormfs.plg.new" >&2; then
    echo "build-plg: placeholders left (above)" >&2
    exit 1
fi
mv -f "$out/wormfs.plg.new" "$out/wormfs.plg"
echo "build-plg: $out/wormfs.plg ($version, $tarball sha256 $sha256)" >&2
echo "$out/wormfs.plg"
