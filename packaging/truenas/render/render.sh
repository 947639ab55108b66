#!/usr/bin/env bash
# Renders the TrueNAS app (packaging/truenas) the way the catalog's tooling does: see
# render.py --help and packaging/truenas/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="$(bash "$here/ensure-deps.sh")"
exec "$py" "$here/render.py" "$@"
