#!/usr/bin/env bash
# WebDAV benchmark: a WormFS node against nginx (GET, Range GETs) and Apache mod_dav (PROPFIND)
# on the same machine, warmed and interleaved; prints the ratios issue #3 sets targets for.
#
#   bash tests/bench/webdav_vs_nginx_apache.sh [SIZE_MIB] [RUNS] [FILES]   (2048, 3, 10000)
#
# - GET of a SIZE_MIB file (ec:4+2 on six folder-disks) with curl, vs nginx (sendfile) serving
#   the same bytes; each side's input is read once just before its run (the machine drops page
#   cache nobody touched for about 30 s). Target: WormFS >= 0.8x nginx's speed.
# - 2,000 random 64 KiB Range GETs on one keep-alive connection (the same offsets for both),
#   p50 and p99. Target: p50 <= 2x nginx's and under 0.5 ms.
# - PROPFIND Depth: 1 (allprop) on a folder of FILES small files, median of 20, vs Apache
#   mod_dav over the same files. Target: faster than Apache.
# nginx and Apache are installed with apt if missing. WormFS runs with its generated admin user
# (Basic auth on every request, as clients do); nginx and Apache without auth.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
RUNS=${2:-3}
FILES=${3:-10000}
source tests/bench/lib.sh
need=()
command -v nginx >/dev/null || need+=(nginx-light)
[ -x /usr/sbin/apache2 ] || need+=(apache2)
command -v curl >/dev/null || need+=(curl)
command -v bc >/dev/null || need+=(bc)
install_missing "${need[@]}"
# Debian starts the services it installs: stop them, they would hold ports and CPU.
{ systemctl stop nginx apache2 || service nginx stop || service apache2 stop; } >/dev/null 2>&1 || true
cargo build --release -p wormfs-server --bin wormfs --example http_bench >/dev/null
BIN=$PWD/target/release/wormfs
HB=$PWD/target/release/examples/http_bench
WORK=$PWD/target/bench-webdav
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PORT=17810
DAV=127.0.0.1:$((PORT + 1))
NGINX=127.0.0.1:17880
APACHE=127.0.0.1:17881

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
SIZE=$(stat -c %s src.bin)
mkdir -p www/many apache/run
ln src.bin www/plain.bin
propfind_tree www/many "$FILES"

nginx_conf "$WORK/nginx" "$NGINX" "$WORK/www"
M=/usr/lib/apache2/modules
cat > apache/httpd.conf <<EOF
ServerRoot $WORK/apache
Listen $APACHE
ServerName localhost
PidFile $WORK/apache/run/httpd.pid
ErrorLog $WORK/apache/error.log
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule dav_module $M/mod_dav.so
LoadModule dav_fs_module $M/mod_dav_fs.so
DavLockDB $WORK/apache/run/davlock
MaxKeepAliveRequests 0
DocumentRoot $WORK/www
<Directory $WORK/www>
    Dav On
    Require all granted
</Directory>
EOF

"$BIN" serve --listen 127.0.0.1:$PORT --webdav-listen $DAV --mdns off > serve.log 2>&1 &
PID=$!
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NPID=$!
/usr/sbin/apache2 -f "$WORK/apache/httpd.conf" -DFOREGROUND &
APID=$!
trap 'kill $PID $NPID $APID 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT
for _ in $(seq 1 300); do
    curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null &&
        curl -sfI "http://$NGINX/plain.bin" >/dev/null &&
        curl -s -o /dev/null "http://$APACHE/" && break
    sleep 0.1
done
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
LOGIN="admin:$(sed -n 's/^password = //p' wormfs-data/webdav-admin.txt)"

echo "storing the test data..." >&2
W put src.bin /big.bin --policy ec:4+2 >/dev/null
W put www/many /many >/dev/null

gets=() nginxs=()
curl -sf -o /dev/null "http://$NGINX/plain.bin"
curl -sf -u "$LOGIN" -o /dev/null "http://$DAV/big.bin"
for _ in $(seq 1 "$RUNS"); do
    cat src.bin > /dev/null
    nginxs+=("$(secs curl -sf -o /dev/null "http://$NGINX/plain.bin")")
    warm_parts
    gets+=("$(secs curl -sf -u "$LOGIN" -o /dev/null "http://$DAV/big.bin")")
done
# Two interleaved rounds each; each side's better round counts (p50 first).
best() { sort -t= -k2 -g | head -1; }
cat src.bin > /dev/null
warm_parts
r_n=() r_d=()
for _ in 1 2; do
    r_n+=("$("$HB" ranges "$NGINX" /plain.bin "$SIZE" 2000)")
    r_d+=("$("$HB" ranges "$DAV" /big.bin "$SIZE" 2000 "$LOGIN")")
done
r_nginx=$(printf '%s\n' "${r_n[@]}" | best)
r_dav=$(printf '%s\n' "${r_d[@]}" | best)
p_apache=$("$HB" propfind "$APACHE" /many/ 20)
p_dav=$("$HB" propfind "$DAV" /many/ 20 "$LOGIN")
p_apache2=$("$HB" propfind "$APACHE" /many/ 20)
p_dav2=$("$HB" propfind "$DAV" /many/ 20 "$LOGIN")

t_get=$(median "${gets[@]}") t_nginx=$(median "${nginxs[@]}")
val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }
p50n=$(val p50_ms "$r_nginx") p99n=$(val p99_ms "$r_nginx")
p50d=$(val p50_ms "$r_dav") p99d=$(val p99_ms "$r_dav")
# Each side's better of its two interleaved rounds.
pa=$(printf '%s\n' "$(val median_ms "$p_apache")" "$(val median_ms "$p_apache2")" | sort -g | head -1)
pd=$(printf '%s\n' "$(val median_ms "$p_dav")" "$(val median_ms "$p_dav2")" | sort -g | head -1)
printf 'GET %d MiB: WormFS %.2f s (%.0f MB/s), nginx %.2f s (%.0f MB/s): %.2fx nginx (target >= 0.8)\n' \
    "$SIZE_MIB" "$t_get" "$(echo "$SIZE/$t_get/1000000" | bc -l)" "$t_nginx" "$(echo "$SIZE/$t_nginx/1000000" | bc -l)" "$(echo "$t_nginx/$t_get" | bc -l)"
printf '64 KiB Range GETs, one connection: WormFS p50 %s ms p99 %s ms; nginx p50 %s ms p99 %s ms: p50 %.2fx nginx (target <= 2, and < 0.5 ms)\n' \
    "$p50d" "$p99d" "$p50n" "$p99n" "$(echo "$p50d/$p50n" | bc -l)"
printf 'PROPFIND depth 1, %d files: WormFS %s ms (%s), Apache %s ms (%s): %.2fx Apache'"'"'s time (target < 1)\n' \
    "$FILES" "$pd" "$p_dav" "$pa" "$p_apache" "$(echo "$pd/$pa" | bc -l)"
printf 'raw GET seconds: wormfs %s | nginx %s\n' "${gets[*]}" "${nginxs[*]}"
printf 'raw Range rounds: wormfs %s | nginx %s\n' "${r_d[*]}" "${r_n[*]}"
printf 'node peak RSS (VmHWM): %s\n' "$(grep VmHWM /proc/$PID/status | awk '{print $2, $3}')"
