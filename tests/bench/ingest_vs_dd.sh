#!/usr/bin/env bash
# End-to-end benchmark: WormFS ingest and read against dd, cat and nginx on the same machine.
#
#   bash tests/bench/ingest_vs_dd.sh [SIZE_MIB] [RUNS]   (defaults 2048 and 3)
#   WORMFS_BIN=/path/to/wormfs bash tests/bench/ingest_vs_dd.sh ...   (a given build)
#
# Starts a release node on the embedded default (six folder-disks, ec:4+2) in a scratch folder
# under ./target, then measures, interleaved and RUNS times each (medians are reported):
#   - ingest of SIZE_MIB into ec:4+2   vs  dd writing SIZE*1.5 (the raw bytes) with fdatasync
#   - sequential `wormfs get` to /dev/null  vs  cat of the plain file (both read once just before)
#     and vs curl fetching the plain file from nginx on loopback (an HTTP reference)
#   - a WebDAV GET of the same file with curl (vs nginx)
#   - the same get with one data part of every segment deleted
# and prints the ratios and the node's peak RSS (VmHWM). nginx is installed with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
RUNS=${2:-3}
source tests/bench/lib.sh
command -v nginx >/dev/null || install_missing nginx-light
# WORMFS_BIN=PATH runs a given build (to compare two) instead of building target/release/wormfs.
if [ -n "${WORMFS_BIN:-}" ]; then BIN=$WORMFS_BIN; else
    cargo build --release -p wormfs-server >/dev/null
    BIN=$PWD/target/release/wormfs
fi
WORK=$PWD/target/bench-e2e
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17710
NGINX_PORT=17780
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
mkdir -p nginx/www && ln src.bin nginx/www/plain.bin
nginx_conf "$WORK/nginx" "127.0.0.1:$NGINX_PORT" "$WORK/nginx/www"
"$BIN" serve --listen 127.0.0.1:$PORT --webdav-listen 127.0.0.1:$((PORT + 100)) > serve.log 2>&1 &
PID=$!
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX=$!
trap 'kill $PID $NGINX 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT
for _ in $(seq 1 200); do
    curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null &&
        curl -sfI http://127.0.0.1:$NGINX_PORT/plain.bin >/dev/null && break
    sleep 0.1
done
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
LOGIN="admin:$(sed -n 's/^password = //p' wormfs-data/webdav-admin.txt)"
raw_mib=$((SIZE_MIB * 3 / 2))

puts=() dds=() cats=() nginxs=() gets=() davs=() degs=()
for i in $(seq 1 "$RUNS"); do
    cat src.bin > /dev/null
    puts+=("$(secs W put src.bin "/bench-$i.bin" --policy ec:4+2)")
    dds+=("$(secs dd if=/dev/zero of=dd.bin bs=1M count=$raw_mib conv=fdatasync)")
    rm -f dd.bin
done
for i in $(seq 1 "$RUNS"); do
    cat src.bin > /dev/null
    cats+=("$(secs cat src.bin)")
    nginxs+=("$(secs curl -sf -o /dev/null http://127.0.0.1:$NGINX_PORT/plain.bin)")
    warm_parts
    gets+=("$(secs W get /bench-1.bin /dev/null)")
    warm_parts
    davs+=("$(secs curl -sf -u "$LOGIN" -o /dev/null http://127.0.0.1:$((PORT + 100))/bench-1.bin)")
done
# Degrade: delete data part 0 of every segment of the first file.
fid=$(W --json stat /bench-1.bin | sed -n 's/.*"file_id": *"\([0-9a-f]*\)".*/\1/p' | head -1)
[ -n "$fid" ] || { echo "FATAL: no file id from stat" >&2; exit 1; }
find wormfs-data/disks -name "$fid-s*-p0.wp" -delete
for i in $(seq 1 "$RUNS"); do
    warm_parts
    degs+=("$(secs W get /bench-1.bin /dev/null)")
done
[ -c /dev/null ] || { echo "FATAL: /dev/null is no longer a character device" >&2; exit 1; }
hwm=$(grep VmHWM /proc/$PID/status | awk '{print $2}')
t_put=$(median "${puts[@]}") t_dd=$(median "${dds[@]}") t_cat=$(median "${cats[@]}")
t_nginx=$(median "${nginxs[@]}") t_get=$(median "${gets[@]}") t_deg=$(median "${degs[@]}")
t_dav=$(median "${davs[@]}")
printf 'size: %d MiB, medians of %d runs\n' "$SIZE_MIB" "$RUNS"
printf 'ingest ec:4+2: %.2f s (%.0f MB/s); dd %d MiB fdatasync: %.2f s; ratio ingest/dd: %.2f (target <= 1.3)\n' "$t_put" "$(echo "$SIZE_MIB*1.048576/$t_put" | bc -l)" "$raw_mib" "$t_dd" "$(echo "$t_put/$t_dd" | bc -l)"
printf 'get: %.2f s (%.0f MB/s); cat: %.2f s; ratio cat/get: %.2f (target >= 0.8)\n' "$t_get" "$(echo "$SIZE_MIB*1.048576/$t_get" | bc -l)" "$t_cat" "$(echo "$t_cat/$t_get" | bc -l)"
printf 'nginx+curl over loopback: %.2f s; ratio nginx/get: %.2f\n' "$t_nginx" "$(echo "$t_nginx/$t_get" | bc -l)"
printf 'WebDAV GET (curl): %.2f s (%.0f MB/s); ratio nginx/webdav: %.2f (issue #3 target >= 0.8)\n' "$t_dav" "$(echo "$SIZE_MIB*1.048576/$t_dav" | bc -l)" "$(echo "$t_nginx/$t_dav" | bc -l)"
printf 'degraded get: %.2f s (%.0f MB/s); ratio cat/degraded: %.2f (target >= 0.5)\n' "$t_deg" "$(echo "$SIZE_MIB*1.048576/$t_deg" | bc -l)" "$(echo "$t_cat/$t_deg" | bc -l)"
printf 'node peak RSS (VmHWM): %d KiB (target < 262144)\n' "$hwm"
printf 'raw seconds: put %s | dd %s | cat %s | nginx %s | get %s | webdav %s | degraded %s\n' "${puts[*]}" "${dds[*]}" "${cats[*]}" "${nginxs[*]}" "${gets[*]}" "${davs[*]}" "${degs[*]}"
