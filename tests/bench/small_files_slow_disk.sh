#!/usr/bin/env bash
# Many small files (issue #20) on a disk whose cache flushes cost what a real disk's do:
# tests/bench/small_files.sh run with its journaled ext4 image in a FUSE filesystem
# (tests/bench/slow_flush.py) whose fsync, which the loop device turns each flush into, takes
# FLUSH_MS longer. On this machine's virtual disk a flush costs about 0.3 ms, so the serial
# durable reference (six flushing fsyncs per file) runs at 430-550 files/s, where on a
# spinning disk it would run at tens; the WormFS rows are bounded by CPU there, by flushes here.
#
#   bash tests/bench/small_files_slow_disk.sh [FLUSH_MS] [N] [SIZE]   (4 ms, 1000 files of 3000 bytes)
#
# 4 ms is about a 7,200 rpm disk's (half a revolution), 1 ms a SATA SSD's without power-loss
# protection. The PROPFIND folder has N entries (PROPFIND_FILES to change it). The same
# environment variables as small_files.sh apply (WORMFS_BIN, BENCH_REUSE_BUILD, KEEP_BENCH...).
# Needs root (the loop device) and installs python3-fusepy and fuse when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh
FLUSH_MS=${1:-4}
N=${2:-1000}
SIZE=${3:-3000}
[ "$(id -u)" = 0 ] || { echo "FATAL: the loop device needs root" >&2; exit 1; }
need=()
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || need+=(python3-fusepy)
command -v fusermount >/dev/null || need+=(fuse)
install_missing "${need[@]}"
D=$PWD/target/slow-flush
mkdir -p "$D/back" "$D/mnt"
/usr/bin/python3 tests/bench/slow_flush.py "$D/back" "$D/mnt" "$FLUSH_MS" > "$D.log" 2>&1 &
FUSE_PID=$!
# With KEEP_BENCH=1 the image stays in $D/back (small_files.sh's path for it is in the mount).
trap 'fusermount -u "$D/mnt" 2>/dev/null || true; kill $FUSE_PID 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$D"' EXIT
for _ in $(seq 1 100); do
    mountpoint -q "$D/mnt" && break
    kill -0 $FUSE_PID 2>/dev/null || { echo "FATAL: slow_flush.py stopped:" >&2; cat "$D.log" >&2; exit 1; }
    sleep 0.1
done
mountpoint -q "$D/mnt" || { echo "FATAL: $D/mnt was not mounted in 10 s" >&2; exit 1; }
echo "flushes cost $FLUSH_MS ms more (tests/bench/slow_flush.py on $D/mnt)" >&2
PROPFIND_FILES=${PROPFIND_FILES:-$N} BENCH_IMG=$D/mnt/bench.img bash tests/bench/small_files.sh "$N" "$SIZE"
