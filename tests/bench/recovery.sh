#!/usr/bin/env bash
# Metadata backup and recovery benchmark, on one release node with six folder-disks.
#
#   bash tests/bench/recovery.sh [SMALL_FILES] [BIG_MIB]   (default 2000 files of 3 KB, 1024 MiB)
#   WORMFS_BIN=/path/to/wormfs bash tests/bench/recovery.sh ...   (a given build)
#
# 1. store SMALL_FILES files of 3 KB (copies:3) and BIG_MIB MiB in 4 files (ec:4+2);
# 2. `wormfs admin backup` five times: its median time and the backup's size;
# 3. the node stopped, `meta/` deleted: `wormfs recover --from-disks` with the backup (every
#    file in it: headers read, the backup compared with them);
# 4. the same with every backup moved away: every file from its headers, each segment
#    reassembled and its BLAKE3 checked; against the reference, reading every part file once
#    (`cat` to /dev/null, page cache as warm for both), as a ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."
SMALL=${1:-2000}
BIG_MIB=${2:-1024}
source tests/bench/lib.sh
if [ -n "${WORMFS_BIN:-}" ]; then BIN=$WORMFS_BIN; else
    cargo build --release -p wormfs-server >/dev/null
    BIN=$PWD/target/release/wormfs
fi
WORK=$PWD/target/bench-recovery
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17730
DISKS=()
for i in $(seq 0 5); do DISKS+=(--disk "$WORK/d$i"); done
ARGS=(--data-dir "$WORK/data" "${DISKS[@]}" --peer-listen 127.0.0.1:$((PORT + 2))
    --data-listen 127.0.0.1:$((PORT + 3)))
PID=
start() {
    WORMFS_META__BACKUP_INTERVAL_MS=0 "$BIN" serve --listen 127.0.0.1:$PORT \
        --webdav-listen 127.0.0.1:$((PORT + 1)) --mdns off "${ARGS[@]}" >> serve.log 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
        curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null && return 0
        sleep 0.1
    done
    echo "node did not start" >&2
    exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
trap 'stop; cleanup_work "$WORK"' EXIT
W() { "$BIN" --node http://127.0.0.1:$PORT --token "$(cat "$WORK/data/admin-token")" "$@"; }
now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc -l; }

start
mkdir small
for i in $(seq 1 "$SMALL"); do head -c 3000 /dev/urandom > "small/f$i.txt"; done
W put small /photos --policy copies:3 >/dev/null
for i in 1 2 3 4; do
    head -c $((BIG_MIB * 1024 * 1024 / 4)) /dev/urandom > big.bin
    W put big.bin "/films/f$i.mkv" --policy ec:4+2 >/dev/null
done
rm -f big.bin
backup_times=()
for _ in 1 2 3 4 5; do
    s=$(now); W admin backup >/dev/null; e=$(now)
    backup_times+=("$(secs "$s" "$e")")
done
backup_bytes=$(find d*/meta-backups -name '*.wmb' -printf '%s\n' | sort -n | tail -1)
stop

rm -rf data/meta
s=$(now); "$BIN" recover --from-disks "${ARGS[@]}" > with_backup.txt; e=$(now)
with_backup=$(secs "$s" "$e")
grep -q "files restored from the backup: $((SMALL + 4))" with_backup.txt

rm -rf data/meta data/recovery-report.*
mkdir aside
for d in d*; do if [ -d "$d/meta-backups" ]; then mv "$d/meta-backups" "aside/$d"; fi; done
find d*/parts -name '*.wp' -print0 | xargs -0 cat > /dev/null   # warm, as for both below
s=$(now); find d*/parts -name '*.wp' -print0 | xargs -0 cat > /dev/null; e=$(now)
cat_all=$(secs "$s" "$e")
s=$(now); "$BIN" recover --from-disks "${ARGS[@]}" > headers_only.txt; e=$(now)
headers_only=$(secs "$s" "$e")
grep -q "files restored from part headers (committed after the backup): $((SMALL + 4))" headers_only.txt
part_bytes=$(find d*/parts -name '*.wp' -printf '%s\n' | awk '{s+=$1} END {print s}')

echo "store: $SMALL files of 3 KB (copies:3) + $BIG_MIB MiB in 4 files (ec:4+2); $(echo "scale=1; $part_bytes / 1048576" | bc -l) MiB of part files"
echo "admin backup:               median $(printf %.3f "$(median "${backup_times[@]}")") s, $(echo "scale=2; $backup_bytes / 1048576" | bc -l) MiB per copy"
echo "recover, from the backup:   $(printf %.2f "$with_backup") s"
echo "recover, headers only:      $(printf %.2f "$headers_only") s (every segment reassembled, BLAKE3 checked)"
echo "reading every part (cat):   $(printf %.2f "$cat_all") s; recovery / cat $(echo "scale=2; $headers_only / $cat_all" | bc -l)"
