# Shared by the benchmark scripts (sourced, not run).

# install_missing PKG...: apt-get install the Debian packages given, quietly.
install_missing() {
    [ $# -eq 0 ] && return 0
    echo "installing $*..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "$@" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq "$@" >/dev/null; }
}

# nginx_conf DIR LISTEN ROOT: writes DIR/nginx.conf for a foreground nginx (one worker, sendfile,
# no access log, everything under DIR) serving ROOT on LISTEN. Run it with
#   nginx -c DIR/nginx.conf -p DIR
nginx_conf() {
    local dir=$1 listen=$2 root=$3
    mkdir -p "$dir/tmp"
    cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    keepalive_requests 100000;
    server { listen $listen; root $root; }
}
CONF
}

# secs CMD...: wall-clock seconds CMD takes (its output discarded).
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
# median N...: the median of the numbers given.
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# warm_parts: reads every part file of the node in ./wormfs-data once (into the page cache).
warm_parts() { find wormfs-data/disks -name '*.wp' -exec cat {} + > /dev/null; }

# cleanup_work DIR: removes a benchmark's scratch folder (gigabytes of test data and the nodes'
# disks) when the script ends, unless KEEP_BENCH=1 (to read the nodes' logs afterwards).
cleanup_work() {
    if [ "${KEEP_BENCH:-0}" = 1 ]; then
        echo "kept $1 (KEEP_BENCH=1)" >&2
    else
        rm -rf "$1"
    fi
}

# propfind_tree DIR FILES: FILES small files DIR/file-1.txt ... (each "file N"), the folder the
# PROPFIND Depth: 1 benchmarks list (webdav_vs_nginx_apache.sh, small_files.sh).
propfind_tree() {
    local dir=$1 n=$2 i
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do printf 'file %d\n' "$i" > "$dir/file-$i.txt"; done
}

# wait_health PORT [SECS]: waits (default 30 s) until the node API on 127.0.0.1:PORT answers
# its health check; fails loudly after that.
wait_health() {
    local port=$1 deadline=$((SECONDS + ${2:-30}))
    until curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null; do
        [ $SECONDS -lt "$deadline" ] || { echo "FATAL: no node on port $port after ${2:-30} s" >&2; return 1; }
        sleep 0.1
    done
}

# stop_pid PID [SECS]: SIGTERM, then waits (default 60 s) for the process to end (a clean stop);
# fails loudly (after a SIGKILL) if it does not.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + ${2:-60}))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $SECONDS -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            echo "FATAL: process $pid did not stop within ${2:-60} s of SIGTERM" >&2
            return 1
        fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
}

# vmhwm_kib PID: the process's peak resident set (VmHWM), KiB.
vmhwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
