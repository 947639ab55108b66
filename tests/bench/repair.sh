#!/usr/bin/env bash
# Self-healing benchmark: repair and scrub against ingest and reads, on one release node with
# eight folder-disks, in one run.
#
#   bash tests/bench/repair.sh [SIZE_MIB]   (default 2048)
#   WORMFS_BIN=/path/to/wormfs bash tests/bench/repair.sh ...   (a given build)
#
# 1. ingest SIZE_MIB as 16 files in ec:4+2 (the ingest rate, logical bytes per second);
# 2. delete one disk's folder, flat out (repair.tranquility 0): the time from the disk going
#    `out` to every segment back at full policy, and the repair rate (logical bytes of the
#    queued segments per second) as a ratio to the ingest rate;
# 3. with the default throttle (tranquility 1): WebDAV GETs of one file while a second lost
#    disk is repaired, against the same GETs with repair paused, alternating (ratio of medians);
# 4. `wormfs scrub now` at scrub.max_bytes_per_sec = 32 MiB/s: the rate it holds (ratio).
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
source tests/bench/lib.sh
if [ -n "${WORMFS_BIN:-}" ]; then BIN=$WORMFS_BIN; else
    cargo build --release -p wormfs-server >/dev/null
    BIN=$PWD/target/release/wormfs
fi
WORK=$PWD/target/bench-repair
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17720
DAV=$((PORT + 100))
SCRUB_RATE=$((32 << 20))
DISKS=()
for i in $(seq 0 7); do DISKS+=(--disk "$WORK/d$i"); done
PID=
start() { # start TRANQUILITY
    WORMFS_REPAIR__DISK_OUT_AFTER_MS=2000 WORMFS_REPAIR__TRANQUILITY=$1 \
    WORMFS_SCRUB__MAX_BYTES_PER_SEC=$SCRUB_RATE \
        "$BIN" serve --listen 127.0.0.1:$PORT --webdav-listen 127.0.0.1:$DAV --mdns off \
        "${DISKS[@]}" >> serve.log 2>&1 &
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
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
jq_() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
now() { date +%s.%N; }
disk_id() { W --json disks | jq_ "[x['disk_id'] for x in d['disks'] if x['path']=='$WORK/d$1' and x['status']!='removed'][0]"; }
status_of() { W --json disks | jq_ "[x['status'] for x in d['disks'] if x['disk_id']=='$1'][0]"; }
wait_status() { # ID STATE
    until [ "$(status_of "$1")" = "$2" ]; do sleep 0.1; done
}
wait_full() { until W health >/dev/null 2>&1; do sleep 0.25; done; }

start 0
FILE_MIB=$((SIZE_MIB / 16))
head -c $((FILE_MIB * 1024 * 1024)) /dev/urandom > src.bin
cat src.bin > /dev/null
s=$(now)
for i in $(seq 1 16); do W put src.bin "/f$i" --policy ec:4+2 >/dev/null; done
e=$(now)
ingest_bps=$(echo "$SIZE_MIB * 1048576 / ($e - $s)" | bc -l)

# 2. One disk lost, repaired flat out.
D0=$(disk_id 0)
rm -rf "$WORK/d0"
wait_status "$D0" out
t0=$(now)
queued=$(W --json repair status | jq_ "d['queued_bytes']")
wait_full
t1=$(now)
repair_secs=$(echo "$t1 - $t0" | bc -l)
repair_bps=$(echo "$queued / $repair_secs" | bc -l)
W disk replace "$D0" "$WORK/d0" >/dev/null
wait_full

# 3. GETs with and without a repair running, default throttle.
stop
start 1
LOGIN="admin:$(sed -n 's/^password = //p' wormfs-data/webdav-admin.txt)"
get_bps() { # one WebDAV GET of /f1: bytes per second
    curl -sf -u "$LOGIN" -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$DAV/f1"
}
D1=$(disk_id 1)
W repair pause >/dev/null
rm -rf "$WORK/d1"
wait_status "$D1" out
# Alternate, in the same conditions (same queue, same page cache): GETs with repair paused,
# then GETs with it running, while segments are still queued.
base=() during=()
for _ in $(seq 1 8); do
    W repair pause >/dev/null
    until [ "$(W --json repair status | jq_ "len(d['in_progress'])")" = 0 ]; do sleep 0.05; done
    base+=("$(get_bps)")
    W repair resume >/dev/null
    sleep 0.3
    [ "$(W --json repair status | jq_ "d['queued']")" -gt 0 ] || break
    r=$(get_bps)
    [ "$(W --json repair status | jq_ "d['queued']")" -gt 0 ] || break
    during+=("$r")
done
W repair resume >/dev/null
wait_full
W disk replace "$D1" "$WORK/d1" >/dev/null
wait_full

# 4. Scrub at its configured rate.
W scrub now >/dev/null
sleep 3
b0=$(W --json scrub status | jq_ "d['counters']['bytes_verified']")
s=$(now)
sleep 15
b1=$(W --json scrub status | jq_ "d['counters']['bytes_verified']")
e=$(now)
scrub_bps=$(echo "($b1 - $b0) / ($e - $s)" | bc -l)

mib() { echo "scale=1; $1 / 1048576" | bc -l; }
echo "ingest ec:4+2:            $(mib "$ingest_bps") MiB/s ($SIZE_MIB MiB in 16 files)"
echo "repair of one lost disk:  $(mib "$repair_bps") MiB/s of segments ($(mib "$queued") MiB queued), ratio to ingest $(echo "scale=2; $repair_bps / $ingest_bps" | bc -l)"
echo "out -> full policy:       $(printf %.1f "$repair_secs") s"
if [ ${#during[@]} -gt 0 ]; then
    echo "WebDAV GET during repair: $(mib "$(median "${during[@]}")") MiB/s vs $(mib "$(median "${base[@]}")") MiB/s idle, ratio $(echo "scale=2; $(median "${during[@]}") / $(median "${base[@]}")" | bc -l) (${#during[@]} GETs overlapped the repair)"
else
    echo "WebDAV GET during repair: the repair ended before the first GET did (idle $(mib "$(median "${base[@]}")") MiB/s)"
fi
echo "scrub:                    $(mib "$scrub_bps") MiB/s at a limit of $(mib $SCRUB_RATE) MiB/s, ratio $(echo "scale=2; $scrub_bps / $SCRUB_RATE" | bc -l)"
