#!/usr/bin/env bash
# Installs the programs the tests drive (Debian packages), when missing: curl (WebDAV tests),
# unshare and nsenter (util-linux: tmpfs disks in a private mount namespace, mDNS in a private
# network namespace), ip (iproute2), litmus (the WebDAV compliance suite), rclone and cadaver
# (WebDAV clients), openssl (test certificates), ffmpeg and ffprobe (seeking into a video over
# WebDAV), python3-prometheus-client (/metrics parsed by Prometheus's own parser), chromium,
# chromedriver and Debian's python3 with selenium (the admin page driven in a headless
# browser), and for the packaging tests: docker-compose (the compose examples and the rendered
# TrueNAS app), Debian's python3 with jinja2 and yaml (the TrueNAS renderer), debootstrap
# (the chroot the .deb and the Unraid plugin are installed in), lintian, musl-tools (the
# static binary) and systemd's systemd-analyze (the unit's security exposure), fuse3
# (fusermount3, for `wormfs mount`), and mkfs.ext4 (e2fsprogs: a part's failed writeback on a
# loop-mounted image). Fails loudly if
# one cannot be installed, so no test is ever skipped for lack of a tool. Docker itself is the
# machine's (the packaging tests check that it answers).
set -euo pipefail
need=()
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
{ command -v unshare >/dev/null && command -v nsenter >/dev/null; } || need+=(util-linux)
command -v litmus >/dev/null || need+=(litmus)
command -v rclone >/dev/null || need+=(rclone)
command -v cadaver >/dev/null || need+=(cadaver)
command -v openssl >/dev/null || need+=(openssl)
{ command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; } || need+=(ffmpeg)
# The system's Python with Prometheus's own text parser (the /metrics tests run /usr/bin/python3,
# not whatever python3 comes first in PATH).
/usr/bin/python3 -c 'import prometheus_client.parser' 2>/dev/null || need+=(python3-prometheus-client)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
/usr/bin/python3 -c "import selenium" 2>/dev/null || need+=(python3-selenium)
command -v docker-compose >/dev/null || need+=(docker-compose)
/usr/bin/python3 -c "import jinja2, yaml" 2>/dev/null || need+=(python3-jinja2 python3-yaml)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v lintian >/dev/null || need+=(lintian)
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v setpriv >/dev/null || need+=(util-linux)
# The FUSE mount's tests (fusermount3; the kernel's /dev/fuse is the machine's).
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v dpkg-deb >/dev/null && command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
# cargo-deb builds the .deb (pinned: packaging/debian/build.sh names the same version).
if ! command -v cargo-deb >/dev/null; then
    echo "== installing cargo-deb 3.8.0 (cargo install, a few minutes)"
    cargo install cargo-deb --version 3.8.0 --locked --quiet
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "== installing test tools: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"; }
