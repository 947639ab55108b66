#!/usr/bin/env bash
# Installs the programs the tests drive (Debian packages), when missing: curl (WebDAV tests),
# unshare and nsenter (util-linux: tmpfs disks in a private mount namespace, mDNS in a private
# network namespace), ip (iproute2), litmus (the WebDAV compliance suite), rclone and cadaver
# (WebDAV clients), openssl (test certificates), ffmpeg and ffprobe (seeking into a video over
# WebDAV), python3-prometheus-client (/metrics parsed by Prometheus's own parser), chromium,
# chromedriver and Debian's python3 with selenium (the admin page driven in a headless
# browser). Fails loudly if one cannot be installed, so no test is ever skipped for lack of a
# tool.
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
[ ${#need[@]} -eq 0 ] && exit 0
echo "== installing test tools: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"; }
