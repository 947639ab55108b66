#!/usr/bin/env bash
# Many small files (issue #20): files per second through every way in, against a serial durable
# reference, the raw bytes a small file costs, and a PROPFIND of a big folder.
#
#   bash tests/bench/small_files.sh [N] [SIZE]   (3000 files of 3000 bytes)
#   WORMFS_BIN=/path/to/wormfs bash tests/bench/small_files.sh ...   (a given build)
#   BENCH_REUSE_BUILD=1 ...   (target/release/wormfs as it is, when it exists)
#   KEEP_BENCH=1 ...          (keep target/bench-small: the nodes' logs, rclone's log)
#   DROP_SETTLE_MS=200 ...    (the drop folder's settle_ms)
#   BENCH_FS=here ...         (run on the filesystem of ./target as it is, not on a fresh
#                              journaled ext4 image; the image needs root)
#   PROPFIND_FILES=10000 ...  (the PROPFIND folder's size)
#   BENCH_IMG=/path/img ...   (where the ext4 image file goes: another disk, or a file on a
#                              filesystem whose flushes cost what a real disk's do, see
#                              tests/bench/slow_flush.py)
#
# Everything runs under ./target/bench-small (one filesystem: sources, reference copies and the
# nodes' disks; a journaled ext4 image mounted there, see BENCH_FS below), on 127.0.0.1 only,
# mDNS off. N files of SIZE random bytes are made once; every
# method stores those same files. Files/s = N / wall time; each WormFS run is checked afterwards
# by listing its folder (the node must list exactly N files, else the script fails).
#
# 1. Reference (tests/bench/small_files.py reference): one file at a time, its bytes written into
#    three folders (open, write, fsync, close per copy), then an fsync of each of the three
#    folders. Run twice (before the node starts and after it stopped); the mean counts.
# 2. `wormfs put SRC /put`: the CLI's folder upload (node API), default policy for the size
#    (files under storage.small_file_threshold_bytes, 1 MiB: copies:3 on six disks).
# 3. Drop folder: the node runs with one inotify drop folder ([[ingest.folders]], tree /dropped,
#    settle_ms DROP_SETTLE_MS, 200 by default: the watcher ticks every settle/4 but never faster
#    than 50 ms, so 200 ms is the shortest settle that still ticks at its fastest; that settle is
#    a fixed latency, not throughput). The N files are `mv`ed in (same filesystem: each appears
#    complete at once); time from the mv to the drop folder being empty (each original is removed
#    once its commit is durable; polled every 50 ms), then /dropped must list N files.
# 4. WebDAV PUTs, four at a time: `rclone copy --transfers 4` (flags printed; --no-check-dest so
#    it lists nothing and checks nothing before each upload; vendor other has no hashes; the
#    remote's URL is the destination folder, made first, so that rclone does not MKCOL the
#    parent before every PUT). rclone still sends a PROPFIND after every PUT (it reads back what
#    it stored), and older versions (Debian's 1.60) space all the WebDAV backend's calls 10 ms
#    apart (a fixed pacer; newer ones take --webdav-pacer-min-sleep, used when offered): at
#    most 100 calls/s, so about 50 files/s, whatever the server does. And small_files.py davput:
#    4 threads, each PUTting over its own keep-alive http.client connection (bodies in
#    memory), and server/examples/http_bench puts: the same four keep-alive connections from a
#    client that costs little CPU (0.05 ms per file against Python's 0.38, measured with
#    /usr/bin/time), since on this two-core machine the client takes its CPU from the server,
#    where Finder or rclone run on another machine: the server's own rate.
# 5. Raw bytes per logical byte, files of 3000, 65536 and 1048576 bytes (1000, 200 and 20 of
#    them), `wormfs put --policy copies:3` (the small-file default), each size into a fresh node
#    (the embedded default in its own folder). Counted with the node stopped by SIGTERM (a clean
#    stop: nothing in flight, and the databases are closed, which checkpoints and removes the
#    SQLite WAL; whatever -wal, -shm or Raft log file is left is counted as it is on disk), once
#    after a start and stop with nothing stored and once after the put:
#      (a) apparent bytes of every part file (*.wp under wormfs-data/disks),
#      (b) the same allocated on disk (st_blocks * 512),
#      (c) growth of wormfs-data/meta (every file: database, WAL, Raft log), apparent bytes,
#    each over the logical bytes; "raw/logical" is (a)+(c), "allocated/logical" (b)+(c). Growth
#    of other files under the disks (metadata backups) is printed beside them.
# 6. PROPFIND Depth: 1 (allprop) of a folder of PROPFIND_FILES entries (the tree
#    webdav_vs_nginx_apache.sh lists, lib.sh's propfind_tree), with server/examples/http_bench on
#    one keep-alive connection: median of 20 after 3 warm-ups.
# Each measured run starts after a `sync`: the files made just before (sources, the PROPFIND tree,
# the reference's copies) would otherwise still be written back during it, and a group sync
# (`syncfs`) waits for every dirty byte of the filesystem.
# Then the summary: files/s, ratios against the reference, raw-byte ratios, PROPFIND time and
# the node's peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-3000}
SIZE=${2:-3000}
SETTLE_MS=${DROP_SETTLE_MS:-200}
PROPFIND_FILES=${PROPFIND_FILES:-10000}
source tests/bench/lib.sh
need=()
command -v rclone >/dev/null || need+=(rclone)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v python3 >/dev/null || need+=(python3)
install_missing "${need[@]}"
PY=$PWD/tests/bench/small_files.py
if [ -n "${WORMFS_BIN:-}" ]; then
    BIN=$WORMFS_BIN
elif [ "${BENCH_REUSE_BUILD:-0}" = 1 ] && [ -x target/release/wormfs ]; then
    BIN=$PWD/target/release/wormfs
else
    cargo build --release -p wormfs-server --bin wormfs --example http_bench >/dev/null
    BIN=$PWD/target/release/wormfs
fi
# server/examples/http_bench: the one built beside BIN, else this tree's (built if missing).
HB=$(dirname "$BIN")/examples/http_bench
if [ ! -x "$HB" ]; then
    HB=$PWD/target/release/examples/http_bench
    [ -x "$HB" ] || cargo build --release -p wormfs-server --example http_bench >/dev/null
fi
WORK=$PWD/target/bench-small
IMG=${BENCH_IMG:-$PWD/target/bench-small.img}
umount "$WORK" 2>/dev/null || true
rm -rf "$WORK" && mkdir -p "$WORK"
# The filesystem: a fresh ext4 image with a journal (mkfs.ext4's default, as on a home server's
# disks), loop-mounted at $WORK (BENCH_FS=image, the default; needs root). This machine's own
# root filesystem is ext4 without a journal, where creating a file after a mass delete (the
# previous run's, the reference's copies) walks every inode deleted in the last 60 to 360
# seconds (fs/ext4/ialloc.c, recently_deleted): a put measured there ran at 600 to 890 files/s
# depending on how recently something was removed. BENCH_FS=here runs in $WORK as it is.
MOUNTED=0
case ${BENCH_FS:-image} in
    image)
        [ "$(id -u)" = 0 ] || { echo "FATAL: mounting the benchmark's ext4 image needs root (or BENCH_FS=here)" >&2; exit 1; }
        rm -f "$IMG" && truncate -s 8G "$IMG" && mkfs.ext4 -q -F "$IMG"
        mount -o loop "$IMG" "$WORK"
        MOUNTED=1
        ;;
    here) ;;
    *) echo "FATAL: BENCH_FS is image or here, not $BENCH_FS" >&2; exit 1 ;;
esac
cd "$WORK"
FS_NOTE="$(findmnt -n -o FSTYPE -T "$WORK") $( [ $MOUNTED = 1 ] && echo "(journaled, loop image)" || echo "(as found)")"
PORT=17920
DAV=127.0.0.1:$((PORT + 1))
RAW_PORT=17930
PIDS=()
# At the end: the image unmounted and removed (kept with KEEP_BENCH=1), then the folder.
finish_work() {
    cd /
    if [ $MOUNTED = 1 ]; then
        umount "$WORK" || { echo "cannot unmount $WORK; left mounted" >&2; return 0; }
        if [ "${KEEP_BENCH:-0}" = 1 ]; then
            echo "kept $IMG (KEEP_BENCH=1): mount -o loop $IMG $WORK to read it" >&2
        else
            rm -f "$IMG"
        fi
    fi
    cleanup_work "$WORK"
}
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; finish_work' EXIT
now() { date +%s.%N; }
f2() { printf '%.2f' "$(echo "$1" | bc -l)"; }
# count DIR: the files the node in the current folder lists in DIR (its API on $NODE).
count() { "$BIN" --node "$NODE" --json ls "$1" | python3 "$PY" count -; }
expect_count() {
    local got
    got=$(count "$1")
    [ "$got" = "$2" ] || { echo "FATAL: $1 lists $got files, expected $2" >&2; exit 1; }
}

echo "making $N files of $SIZE bytes..." >&2
python3 "$PY" make src "$N" "$SIZE"
cp -a src drop-src
propfind_tree many "$PROPFIND_FILES"

echo "reference (serial, 3 fsynced copies + 3 folder fsyncs per file)..." >&2
sync
ref1=$(python3 "$PY" reference src ref1)
rm -rf ref1

cat > wormfs.toml <<EOF
[node]
data_dir = "./wormfs-data"
[api]
listen = "127.0.0.1:$PORT"
[webdav]
listen = "$DAV"
[discovery]
mdns = false
[cluster]
peer_listen = "127.0.0.1:0"
data_listen = "127.0.0.1:0"
[[ingest.folders]]
path = "./drop"
tree = "/dropped"
settle_ms = $SETTLE_MS
EOF
"$BIN" serve --config wormfs.toml --mdns off > serve.log 2>&1 &
PID=$!
PIDS+=("$PID")
wait_health $PORT 60
NODE=http://127.0.0.1:$PORT
W() { "$BIN" --node "$NODE" "$@"; }
PASS=$(sed -n 's/^password = //p' wormfs-data/webdav-admin.txt)
LOGIN="admin:$PASS"
W --json ingest > ingest.json
grep -q "\"settle_ms\": $SETTLE_MS" ingest.json || { echo "FATAL: the drop folder is not configured" >&2; cat ingest.json >&2; exit 1; }

echo "wormfs put..." >&2
sync
t0=$(now)
W put src /put > put.log 2>&1 || { tail -5 put.log >&2; exit 1; }
t_put=$(echo "$(now) - $t0" | bc -l)
expect_count /put "$N"
policy=$(W --json stat "/put/$(ls src | head -1)" | sed -n 's/^  "policy": "\([^"]*\)".*/\1/p')

echo "drop folder..." >&2
deadline=$((SECONDS + 120 + N))
sync
t0=$(now)
mv drop-src/* drop/
# Done when the drop folder is empty: the worker removes each original only after its commit
# is durable (after = "delete"), so an empty folder means every file is committed. Watching the
# folder costs the node nothing; listing /dropped through the node's API while it ingests (as
# this script did before) cost it a listing of up to N entries five times a second.
while [ -n "$(find drop -type f -print -quit)" ]; do
    [ $SECONDS -lt $deadline ] || { echo "FATAL: $(find drop -type f | wc -l) of $N files still in the drop folder at the deadline" >&2; W ingest >&2 || true; exit 1; }
    sleep 0.05
done
t_drop=$(echo "$(now) - $t0" | bc -l)
expect_count /dropped "$N"

echo "rclone copy..." >&2
RCLONE_FLAGS=(--transfers 4 --checkers 4 --no-check-dest --ignore-checksum --retries 1 --low-level-retries 1)
# A newer rclone can lift its WebDAV pacer (one call per 10 ms otherwise).
rclone help backend webdav 2>/dev/null | grep -q pacer-min-sleep && RCLONE_FLAGS+=(--webdav-pacer-min-sleep 1ms)
# The remote's URL is the destination folder itself: rclone then MKCOLs no parent before each PUT.
curl -sf -u "$LOGIN" -X MKCOL "http://$DAV/rclone/" >/dev/null
export RCLONE_CONFIG=$WORK/rclone.conf
export RCLONE_CONFIG_NODE_TYPE=webdav RCLONE_CONFIG_NODE_URL=http://$DAV/rclone RCLONE_CONFIG_NODE_VENDOR=other
export RCLONE_CONFIG_NODE_USER=admin RCLONE_CONFIG_NODE_PASS=$(rclone obscure "$PASS")
touch rclone.conf
sync
t0=$(now)
rclone copy src node: "${RCLONE_FLAGS[@]}" --log-file rclone.log || { tail -5 rclone.log >&2; exit 1; }
t_rclone=$(echo "$(now) - $t0" | bc -l)
expect_count /rclone "$N"

echo "WebDAV PUTs, 4 threads..." >&2
sync
davput=$(python3 "$PY" davput "$DAV" "$LOGIN" src /davput 4)
expect_count /davput "$N"
echo "WebDAV PUTs, 4 connections from http_bench..." >&2
sync
hbput=$("$HB" puts "$DAV" src /hbput 4 "$LOGIN")
expect_count /hbput "$N"

echo "PROPFIND of $PROPFIND_FILES entries (storing them first)..." >&2
python3 "$PY" davput "$DAV" "$LOGIN" many /many 4 >/dev/null
expect_count /many "$PROPFIND_FILES"
pf=$("$HB" propfind "$DAV" /many/ 20 "$LOGIN")
[ "$(sed -n 's/.*responses=\([0-9]*\).*/\1/p' <<< "$pf")" = $((PROPFIND_FILES + 1)) ] ||
    { echo "FATAL: PROPFIND answered $pf, expected $((PROPFIND_FILES + 1)) responses" >&2; exit 1; }

hwm=$(vmhwm_kib "$PID")
stop_pid "$PID"

echo "reference again..." >&2
sync
ref2=$(python3 "$PY" reference src ref2)
rm -rf ref2

# Raw bytes: each size into a fresh node, counted with the node stopped.
wp_bytes() { find wormfs-data/disks -name '*.wp' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
wp_alloc() { find wormfs-data/disks -name '*.wp' -printf '%b\n' | awk '{s+=$1*512} END {print s+0}'; }
other_disk_bytes() { find wormfs-data/disks -type f ! -name '*.wp' -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
meta_bytes() { find wormfs-data/meta -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
raw_rows=()
for spec in 3000:1000 65536:200 1048576:20; do
    sz=${spec%%:*} n=${spec##*:}
    echo "raw bytes: $n files of $sz bytes..." >&2
    mkdir -p "$WORK/raw-$sz" && cd "$WORK/raw-$sz"
    python3 "$PY" make src "$n" "$sz"
    start_raw() {
        "$BIN" serve --listen 127.0.0.1:$RAW_PORT --webdav-listen 127.0.0.1:$((RAW_PORT + 1)) \
            --peer-listen 127.0.0.1:0 --data-listen 127.0.0.1:0 --mdns off >> serve.log 2>&1 &
        RPID=$!
        PIDS+=("$RPID")
        wait_health $RAW_PORT 60
    }
    NODE=http://127.0.0.1:$RAW_PORT
    start_raw
    stop_pid "$RPID"
    m0=$(meta_bytes) o0=$(other_disk_bytes) a0=$(wp_bytes) b0=$(wp_alloc)
    start_raw
    "$BIN" --node "$NODE" put src /raw --policy copies:3 > put.log 2>&1 || { tail -5 put.log >&2; exit 1; }
    expect_count /raw "$n"
    stop_pid "$RPID"
    m1=$(meta_bytes) o1=$(other_disk_bytes) a1=$(wp_bytes) b1=$(wp_alloc)
    logical=$((sz * n))
    a=$((a1 - a0)) b=$((b1 - b0)) c=$((m1 - m0)) o=$((o1 - o0))
    raw_rows+=("$(printf '| %d | %d | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %d |' "$sz" "$n" "$logical" \
        "$(echo "$a/$logical" | bc -l)" "$(echo "$b/$logical" | bc -l)" "$(echo "$c/$logical" | bc -l)" \
        "$(echo "($a+$c)/$logical" | bc -l)" "$(echo "($b+$c)/$logical" | bc -l)" "$o")")
    cd "$WORK"
done

val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }
r1=$(val files_per_s "$ref1") r2=$(val files_per_s "$ref2")
ref=$(echo "($r1 + $r2) / 2" | bc -l)
row() { # name seconds
    local fps
    fps=$(echo "$N / $2" | bc -l)
    printf '| %s | %.1f | %.2f | %.3f |\n' "$1" "$fps" "$2" "$(echo "$fps / $ref" | bc -l)"
}
echo
printf 'small files: %d files of %d bytes, one node (six folder-disks), policy %s, on %s\n' "$N" "$SIZE" "${policy:-?}" "$FS_NOTE"
echo '| method | files/s | seconds | x reference |'
echo '| --- | --- | --- | --- |'
printf '| reference: serial, 3 copies fsynced + 3 folder fsyncs per file (mean of 2 runs: %s, %s files/s) | %.1f | %.2f | 1.000 |\n' "$r1" "$r2" "$ref" "$(echo "$N / $ref" | bc -l)"
row "wormfs put SRC /put" "$t_put"
row "drop folder, mv of N files (settle_ms $SETTLE_MS, in the time)" "$t_drop"
row "rclone copy ${RCLONE_FLAGS[*]}" "$t_rclone"
row "WebDAV PUT, 4 threads x keep-alive (Python http.client)" "$(val secs "$davput")"
row "WebDAV PUT, 4 threads x keep-alive (http_bench puts, a lean client)" "$(val secs "$hbput")"
echo
echo "raw bytes per logical byte, --policy copies:3, fresh node per size (node stopped by SIGTERM when counted):"
echo '| file bytes | files | logical bytes | parts apparent (a) | parts allocated (b) | meta growth (c) | raw/logical (a+c) | allocated/logical (b+c) | other disk files growth, bytes |'
echo '| --- | --- | --- | --- | --- | --- | --- | --- | --- |'
printf '%s\n' "${raw_rows[@]}"
echo
printf 'PROPFIND Depth 1 (allprop), %d entries, one keep-alive connection: median %s ms of 20 (%s)\n' \
    "$PROPFIND_FILES" "$(val median_ms "$pf")" "$pf"
printf 'node peak RSS (VmHWM): %d KiB\n' "$hwm"
printf 'raw: reference %s | %s; put %s s; drop %s s; rclone %s s; davput %s; http_bench puts %s\n' "$ref1" "$ref2" \
    "$(f2 "$t_put")" "$(f2 "$t_drop")" "$(f2 "$t_rclone")" "$davput" "$hbput"
