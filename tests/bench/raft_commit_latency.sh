#!/usr/bin/env bash
# Raft commit latency: a metadata command (mkdir through the node API, one keep-alive
# connection) committed by a majority and applied on the node asked, on one node alone and on
# three nodes on loopback (control planes on 127.0.0.2-4, static peers), through the leader and
# through a follower (which forwards to the leader, then waits to apply it itself); then again
# while a large file is being stored through the leader. Issue #4's target: p99 under 20 ms,
# also during a 2 GiB ingest.
#
#   bash tests/bench/raft_commit_latency.sh [COUNT] [INGEST_MIB]     (1000, 2048)
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-1000}
INGEST_MIB=${2:-2048}
source tests/bench/lib.sh
command -v curl >/dev/null || install_missing curl
cargo build --release -p wormfs-server --bin wormfs --example http_bench >/dev/null
BIN=$PWD/target/release/wormfs
HB=$PWD/target/release/examples/http_bench
WORK=$PWD/target/bench-raft
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT

# start NAME API_PORT PEER_ADDR [PEER...]: a release node in ./NAME, mDNS off.
start() {
    local name=$1 api=$2 peer=$3
    shift 3
    local peers=()
    for p in "$@"; do peers+=(--peer "$p"); done
    mkdir -p "$name"
    (cd "$name" && exec "$BIN" serve --mdns off --listen 127.0.0.1:"$api" \
        --webdav-listen 127.0.0.1:$((api + 1)) --peer-listen "$peer" --data-listen "${peer%:*}:$((api + 3))" "${peers[@]}" > serve.log 2>&1) &
    PIDS+=($!)
}
up() { for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$1/api/v1/health" >/dev/null && return 0; sleep 0.1; done; echo "node on $1 did not start" >&2; exit 1; }
token() { cat "$1/wormfs-data/admin-token"; }

echo "one node..." >&2
start solo 17900 127.0.0.1:17902
up 17900
solo=$("$HB" mkdirs 127.0.0.1:17900 /solo "$COUNT" "$(token solo)")

echo "three nodes..." >&2
mkdir -p a b c
(cd a && "$BIN" init >/dev/null)
tok=$(cd a && "$BIN" join-token)
(cd b && "$BIN" init --join "$tok" >/dev/null)
(cd c && "$BIN" init --join "$tok" >/dev/null)
start a 17910 127.0.0.2:17912 127.0.0.3:17922 127.0.0.4:17932
start b 17920 127.0.0.3:17922 127.0.0.2:17912 127.0.0.4:17932
start c 17930 127.0.0.4:17932 127.0.0.2:17912 127.0.0.3:17922
up 17910; up 17920; up 17930
W() { (cd a && "$BIN" --node http://127.0.0.1:17910 "$@"); }
for _ in $(seq 1 300); do
    [ "$(W --json cluster | grep -oE '"role": *"voter"' | wc -l)" -eq 3 ] && break
    sleep 0.2
done
leader=$(W --json cluster | sed -n 's/.*"leader": *\([0-9]*\).*/\1/p' | head -1)
api_of() { for n in a b c; do
    id=$(sed -n 's/.*"node_id": *\([0-9]*\).*/\1/p' "$n/wormfs-data/node.json")
    if [ "$id" = "$1" ]; then echo "$n"; return; fi
done; }
L=$(api_of "$leader")
F=$( [ "$L" = a ] && echo b || echo a )
port() { case $1 in a) echo 17910;; b) echo 17920;; c) echo 17930;; esac; }
via_leader=$("$HB" mkdirs 127.0.0.1:"$(port "$L")" /l "$COUNT" "$(token "$L")")
via_follower=$("$HB" mkdirs 127.0.0.1:"$(port "$F")" /f "$COUNT" "$(token "$F")")

echo "three nodes during a ${INGEST_MIB} MiB ingest..." >&2
head -c $((INGEST_MIB * 1024 * 1024)) /dev/urandom > big.bin
(cd "$L" && exec "$BIN" --node "http://127.0.0.1:$(port "$L")" put ../big.bin /big.bin >/dev/null 2>&1) &
ING=$!
# Timed only while the ingest runs (the put process is alive), up to 100x COUNT commands.
during=$("$HB" mkdirs 127.0.0.1:"$(port "$F")" /during $((COUNT * 100)) "$(token "$F")" "$ING")
wait $ING

val() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<< "$2"; }
echo "mkdir commit latency, $COUNT commands each, p50 / p99 ms:"
printf '  one node alone:                 %s / %s\n' "$(val p50_ms "$solo")" "$(val p99_ms "$solo")"
printf '  three nodes, through the leader: %s / %s\n' "$(val p50_ms "$via_leader")" "$(val p99_ms "$via_leader")"
printf '  three nodes, through a follower: %s / %s\n' "$(val p50_ms "$via_follower")" "$(val p99_ms "$via_follower")"
printf '  same, during a %d MiB ingest:   %s / %s (%s commands while it ran, slowest %s)\n' "$INGEST_MIB" "$(val p50_ms "$during")" "$(val p99_ms "$during")" "$(val n "$during")" "$(val max_ms "$during")"
echo "target: p99 < 20 ms"
