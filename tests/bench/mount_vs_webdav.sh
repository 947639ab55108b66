#!/usr/bin/env bash
# FUSE mount benchmark: `wormfs mount` against the WebDAV GET of the same file from the same
# node, and against `rclone mount` of WormFS's WebDAV, in the same run; prints the ratios issue
# #19 sets targets for.
#
#   bash tests/bench/mount_vs_webdav.sh [SIZE_MIB] [RUNS] [READS]   (1024, 3, 500)
#
# - Sequential read of a SIZE_MIB file (ec:4+2 on six folder-disks): `dd bs=1M` through the
#   mount, through rclone mount (its defaults, --vfs-cache-mode off, --read-only), and curl's
#   GET over WebDAV. The node's parts are read into the page cache before each run and the
#   mounts' own page cache for the file is dropped (dd iflag=nocache), so every run asks the
#   node. Targets: mount >= 0.8x the WebDAV GET, and >= rclone mount.
# - READS random 64 KiB reads (the same offsets for both): pread through the mount with its page
#   cache for the file dropped before each read, and a WebDAV Range GET of the same bytes on one
#   keep-alive connection; p50 and p99. Target: mount p50 <= 1.5x the Range GET's.
# Must run as root (FUSE mounts, the mount's read-ahead). rclone, fuse3, curl and bc are
# installed with apt if missing. mDNS is off.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
READS=${3:-500}
source tests/bench/lib.sh
need=()
command -v rclone >/dev/null || need+=(rclone)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
install_missing "${need[@]}"
# BENCH_REUSE_BUILD=1 runs the release binaries already built (as they are).
[ "${BENCH_REUSE_BUILD:-0}" = 1 ] || cargo build --release -p wormfs-server --bin wormfs --example http_bench >/dev/null
BIN=$PWD/target/release/wormfs
HB=$PWD/target/release/examples/http_bench
WORK=$PWD/target/bench-mount
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17910
DAV=127.0.0.1:$((PORT + 1))
MNT=$WORK/mnt
RMNT=$WORK/rclone-mnt
mkdir -p "$MNT" "$RMNT"

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
SIZE=$(stat -c %s src.bin)

"$BIN" serve --listen 127.0.0.1:$PORT --webdav-listen $DAV --mdns off > serve.log 2>&1 &
PID=$!
MPID="" RPID=""
stop_all() {
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    fusermount3 -u -z "$RMNT" 2>/dev/null || true
    kill $PID $MPID $RPID 2>/dev/null || true
    wait 2>/dev/null || true
    cleanup_work "$WORK"
}
trap stop_all EXIT
for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null && break
    sleep 0.1
done
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
PASS=$(sed -n 's/^password = //p' wormfs-data/webdav-admin.txt)
LOGIN="admin:$PASS"
echo "storing the test data..." >&2
W put src.bin /big.bin --policy ec:4+2 >/dev/null

"$BIN" --node http://127.0.0.1:$PORT mount "$MNT" > mount.log 2>&1 &
MPID=$!
rclone mount :webdav: "$RMNT" --webdav-url "http://$DAV" --webdav-user admin \
    --webdav-pass "$(rclone obscure "$PASS")" --read-only --vfs-cache-mode off \
    > rclone.log 2>&1 &
RPID=$!
for _ in $(seq 1 300); do
    [ -f "$MNT/big.bin" ] && [ -f "$RMNT/big.bin" ] && break
    sleep 0.1
done
[ -f "$MNT/big.bin" ] || { cat mount.log; exit 1; }
[ -f "$RMNT/big.bin" ] || { cat rclone.log; exit 1; }

drop() { dd if="$1" iflag=nocache count=0 status=none; }
ddsecs() { drop "$1"; secs dd if="$1" of=/dev/null bs=1M; }
gets=() mounts=() rclones=()
for _ in $(seq 1 "$RUNS"); do
    warm_parts
    gets+=("$(secs curl -sf -u "$LOGIN" -o /dev/null "http://$DAV/big.bin")")
    warm_parts
    mounts+=("$(ddsecs "$MNT/big.bin")")
    warm_parts
    rclones+=("$(ddsecs "$RMNT/big.bin")")
done
t_get=$(median "${gets[@]}") t_mount=$(median "${mounts[@]}") t_rclone=$(median "${rclones[@]}")

# Random 64 KiB reads: the same offsets through the mount (page cache dropped before each)
# and as Range GETs.
warm_parts
python3 - "$MNT/big.bin" "$SIZE" "$READS" > mount_random.txt <<'PY'
import os, random, sys, time
path, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
fd = os.open(path, os.O_RDONLY)
lat = []
for _ in range(n):
    off = rnd.randrange(0, size - 65536) // 4096 * 4096
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    t = time.perf_counter()
    got = os.pread(fd, 65536, off)
    lat.append((time.perf_counter() - t) * 1000)
    assert len(got) == 65536
lat.sort()
print(f"p50_ms={lat[len(lat)//2]:.3f} p99_ms={lat[int(len(lat)*0.99)]:.3f}")
PY
r_dav=$("$HB" ranges "$DAV" /big.bin "$SIZE" "$READS" "$LOGIN")
r_mount=$(cat mount_random.txt)
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }
p50m=$(val p50_ms "$r_mount") p99m=$(val p99_ms "$r_mount")
p50d=$(val p50_ms "$r_dav") p99d=$(val p99_ms "$r_dav")

mbs() { echo "$SIZE/$1/1000000" | bc -l; }
printf 'sequential %d MiB: mount %.2f s (%.0f MB/s), WebDAV GET %.2f s (%.0f MB/s), rclone mount %.2f s (%.0f MB/s)\n' \
    "$SIZE_MIB" "$t_mount" "$(mbs "$t_mount")" "$t_get" "$(mbs "$t_get")" "$t_rclone" "$(mbs "$t_rclone")"
printf '  mount: %.2fx the WebDAV GET (target >= 0.8), %.2fx rclone mount (target >= 1)\n' \
    "$(echo "$t_get/$t_mount" | bc -l)" "$(echo "$t_rclone/$t_mount" | bc -l)"
printf 'random 64 KiB reads (%d): mount p50 %s ms p99 %s ms; WebDAV Range GET p50 %s ms p99 %s ms: p50 %.2fx (target <= 1.5)\n' \
    "$READS" "$p50m" "$p99m" "$p50d" "$p99d" "$(echo "$p50m/$p50d" | bc -l)"
printf 'raw seconds: mount %s | GET %s | rclone %s\n' "${mounts[*]}" "${gets[*]}" "${rclones[*]}"
printf 'mount process peak RSS (VmHWM): %s\n' "$(grep VmHWM /proc/$MPID/status 2>/dev/null | awk '{print $2, $3}')"
