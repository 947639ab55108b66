#!/usr/bin/env bash
# Ingest across machines: `wormfs put` of a random file in ec:4+2 into one node with six
# folder-disks, then into three nodes on loopback with two folder-disks each (control and data
# planes on 127.0.0.2-4, static peers), where placement puts two parts of every segment on each
# machine, four of the six over the TLS data plane. Then reads the file back through another
# node and compares its SHA-256. Issue #4's target: three machines at >= 0.7x one machine.
#
#   bash tests/bench/cluster_ingest.sh [GIB]     (2)
# WORMFS_BIN=/abs/path/wormfs uses that binary instead of building target/release/wormfs.
set -euo pipefail
cd "$(dirname "$0")/../.."
GIB=${1:-2}
source tests/bench/lib.sh
command -v curl >/dev/null || install_missing curl
command -v jq >/dev/null || install_missing jq
if [ -z "${WORMFS_BIN:-}" ]; then cargo build --release -p wormfs-server --bin wormfs >/dev/null; fi
BIN=$(realpath "${WORMFS_BIN:-target/release/wormfs}")
WORK=$PWD/target/bench-cluster-ingest
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT

# start NAME API_PORT PEER_ADDR NDISKS [PEER...]: a release node in ./NAME, mDNS off, NDISKS
# folder-disks, its data plane on the control plane's IP at API_PORT + 3.
start() {
    local name=$1 api=$2 peer=$3 ndisks=$4
    shift 4
    local args=()
    for p in "$@"; do args+=(--peer "$p"); done
    for i in $(seq 1 "$ndisks"); do mkdir -p "$name/disk$i"; args+=(--disk "disk$i"); done
    (cd "$name" && exec "$BIN" serve --mdns off --listen 127.0.0.1:"$api" \
        --webdav-listen 127.0.0.1:$((api + 1)) --peer-listen "$peer" \
        --data-listen "${peer%:*}:$((api + 3))" "${args[@]}" > serve.log 2>&1) &
    PIDS+=($!)
}
up() { for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$1/api/v1/health" >/dev/null && return 0; sleep 0.1; done; echo "node on $1 did not start" >&2; exit 1; }
# at NAME PORT ARGS...: the CLI run in NAME's folder (its token) against the node on PORT.
at() { local n=$1 p=$2; shift 2; (cd "$n" && "$BIN" --node "http://127.0.0.1:$p" "$@"); }
now() { date +%s.%N; }

echo "making a random ${GIB} GiB file..." >&2
head -c $((GIB * 1024 * 1024 * 1024)) /dev/urandom > src.bin
SUM=$(sha256sum < src.bin | cut -d' ' -f1)
BYTES=$(stat -c %s src.bin)

# ingest NAME PORT: seconds to `put` src.bin as /big.bin in ec:4+2 through the node.
ingest() {
    local s e
    s=$(now)
    at "$1" "$2" put ../src.bin /big.bin --policy ec:4+2 >/dev/null 2>"$1/put.err" ||
        { echo "put through $1 failed:" >&2; cat "$1/put.err" >&2; exit 1; }
    e=$(now)
    echo "$e - $s" | bc -l
}
# check NAME PORT: the file read back through that node has the source's SHA-256.
check() {
    local got
    got=$(at "$1" "$2" get /big.bin - | sha256sum | cut -d' ' -f1)
    [ "$got" = "$SUM" ] || { echo "read back through $1: sha256 $got, expected $SUM" >&2; exit 1; }
}

echo "one node, six disks..." >&2
start solo 18000 127.0.0.1:18002 6
up 18000
one=$(ingest solo 18000)
check solo 18000
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()

echo "three nodes, two disks each..." >&2
mkdir -p a b c
(cd a && "$BIN" init >/dev/null)
tok=$(cd a && "$BIN" join-token)
(cd b && "$BIN" init --join "$tok" >/dev/null)
(cd c && "$BIN" init --join "$tok" >/dev/null)
start a 18010 127.0.0.2:18012 2 127.0.0.3:18022 127.0.0.4:18032
start b 18020 127.0.0.3:18022 2 127.0.0.2:18012 127.0.0.4:18032
start c 18030 127.0.0.4:18032 2 127.0.0.2:18012 127.0.0.3:18022
up 18010; up 18020; up 18030
ready=
for _ in $(seq 1 300); do
    voters=$(at a 18010 --json cluster | jq '[.members[] | select(.role == "voter" and .data_cert != null)] | length')
    disks=$(at a 18010 --json disks | jq '.disks | length')
    [ "$voters" -eq 3 ] && [ "$disks" -eq 6 ] && { ready=1; break; }
    sleep 0.2
done
[ -n "$ready" ] || { echo "no 3 registered voters and 6 disks on a after 60 s (voters $voters, disks $disks)" >&2; exit 1; }
three=$(ingest a 18010)
check b 18020
# (node ids are u64s, beyond jq's exact integers: group without printing them)
parts=$(at a 18010 --json disks | jq -r '[.disks[] | {node_id, parts}] | group_by(.node_id) | map(map(.parts) | add | tostring) | join(", ")')

mbs() { echo "$BYTES / $1 / 1000000" | bc -l; }
printf 'ingest of %s GiB in ec:4+2 (sha256 checked after reading it back):\n' "$GIB"
printf '  one node, six disks:        %.2f s (%.0f MB/s)\n' "$one" "$(mbs "$one")"
printf '  three nodes, two disks each: %.2f s (%.0f MB/s) through a, read back through b\n' "$three" "$(mbs "$three")"
printf '  three / one: %.2fx the speed (target >= 0.7)\n' "$(echo "$one / $three" | bc -l)"
printf '  parts per node: %s\n' "$parts"
