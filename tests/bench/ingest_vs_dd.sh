#!/usr/bin/env bash
# End-to-end benchmark: WormFS ingest and read against dd and cat on the same filesystem.
#
#   bash tests/bench/ingest_vs_dd.sh [SIZE_MIB]   (default 2048)
#
# Starts a release node on the embedded default (six folder-disks, ec:4+2) in a scratch folder
# under ./target, then, in one run and interleaved:
#   - ingest of SIZE_MIB into ec:4+2   vs  dd writing SIZE*1.5 (the raw bytes) with fdatasync
#   - sequential get to /dev/null       vs  cat of the plain file (both read once just before)
#   - the same get with one data part of every segment deleted
# and prints the ratios and the node's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
cargo build --release -p wormfs-server >/dev/null
BIN=$PWD/target/release/wormfs
WORK=$PWD/target/bench-e2e
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17710
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
"$BIN" serve --listen 127.0.0.1:$PORT > serve.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null && break; sleep 0.1; done
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

cat src.bin > /dev/null
t_put=$(secs W put src.bin /bench.bin --policy ec:4+2)
raw_mib=$((SIZE_MIB * 3 / 2))
t_dd=$(secs dd if=/dev/zero of=dd.bin bs=1M count=$raw_mib conv=fdatasync)
rm -f dd.bin
cat src.bin > /dev/null
t_cat=$(secs cat src.bin)
find wormfs-data/disks -name '*.wp' -exec cat {} + > /dev/null
t_get=$(secs W get /bench.bin /dev/null)
# Degrade: delete data part 0 of every segment.
for f in $(find wormfs-data/disks -name '*-p0.wp'); do rm -f "$f"; done
find wormfs-data/disks -name '*.wp' -exec cat {} + > /dev/null
t_deg=$(secs W get /bench.bin /dev/null)
[ -c /dev/null ] || { echo "FATAL: /dev/null is no longer a character device" >&2; exit 1; }
hwm=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
printf 'size: %d MiB\n' "$SIZE_MIB"
printf 'ingest ec:4+2: %.2f s (%.0f MB/s); dd %d MiB fdatasync: %.2f s; ratio ingest/dd: %.2f (target <= 1.3)\n' "$t_put" "$(echo "$SIZE_MIB*1.048576/$t_put" | bc -l)" "$raw_mib" "$t_dd" "$(echo "$t_put/$t_dd" | bc -l)"
printf 'get: %.2f s; cat: %.2f s; ratio cat/get: %.2f (target >= 0.8)\n' "$t_get" "$t_cat" "$(echo "$t_cat/$t_get" | bc -l)"
printf 'degraded get: %.2f s; ratio cat/degraded: %.2f (target >= 0.5)\n' "$t_deg" "$(echo "$t_cat/$t_deg" | bc -l)"
printf 'node peak RSS (VmHWM): %d KiB (target < 262144)\n' "$hwm"
