#!/usr/bin/env bash
# Prints the path of a Python 3 that has Jinja2 and PyYAML (what the TrueNAS app renderer
# needs), installing Debian's python3-jinja2 and python3-yaml with apt-get when none has them.
set -euo pipefail
for py in "${WORMFS_PYTHON:-}" python3 /usr/bin/python3; do
    [ -n "$py" ] || continue
    command -v "$py" >/dev/null 2>&1 || continue
    if "$py" -c 'import jinja2, yaml' >/dev/null 2>&1; then
        command -v "$py"
        exit 0
    fi
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "== installing python3-jinja2 and python3-yaml (for packaging/truenas/render)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq python3-jinja2 python3-yaml >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-jinja2 python3-yaml >/dev/null; }
/usr/bin/python3 -c 'import jinja2, yaml' ||
    { echo "ensure-deps: python3-jinja2/python3-yaml could not be installed" >&2; exit 1; }
echo /usr/bin/python3
