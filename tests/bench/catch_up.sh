#!/usr/bin/env bash
# A follower catching up after a restart: three release nodes on loopback (control and data
# planes on 127.0.0.2-4, static peers, two folder-disks each); one follower (never the leader) is
# stopped with SIGTERM, COUNT small files are committed through the leader meanwhile (concurrent
# `PUT /api/v1/files/...` from curl --parallel; each is an ingest with parts on the two running
# machines and one Raft entry or more), then the follower is started again. Measured: the time
# from its start until its `last_applied` (GET /api/v1/cluster on it, what `wormfs --json
# cluster` shows) reaches the leader's `last_log_index` as read just before the restart.
# Issue #4's target: under 30 s for 10,000 files.
#
#   bash tests/bench/catch_up.sh [COUNT] [PARALLEL]     (10000, 32)
# WORMFS_BIN=/abs/path/wormfs uses that binary instead of building target/release/wormfs.
set -euo pipefail
cd "$(dirname "$0")/../.."
COUNT=${1:-10000}
PAR=${2:-32}
source tests/bench/lib.sh
command -v curl >/dev/null || install_missing curl
command -v jq >/dev/null || install_missing jq
if [ -z "${WORMFS_BIN:-}" ]; then cargo build --release -p wormfs-server --bin wormfs >/dev/null; fi
BIN=$(realpath "${WORMFS_BIN:-target/release/wormfs}")
WORK=$PWD/target/bench-catch-up
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
declare -A PID
trap 'kill "${PID[@]}" 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT

declare -A API=([a]=18110 [b]=18120 [c]=18130) PEER=([a]=127.0.0.2:18112 [b]=127.0.0.3:18122 [c]=127.0.0.4:18132)
# start NAME: the release node in ./NAME, mDNS off, two folder-disks, the others as static
# peers, its data plane on the control plane's IP at its API port + 3.
start() {
    local n=$1 args=()
    for o in a b c; do [ "$o" != "$n" ] && args+=(--peer "${PEER[$o]}"); done
    mkdir -p "$n/disk1" "$n/disk2"
    (cd "$n" && exec "$BIN" serve --mdns off --listen 127.0.0.1:"${API[$n]}" \
        --webdav-listen 127.0.0.1:$((API[$n] + 1)) --peer-listen "${PEER[$n]}" \
        --data-listen "${PEER[$n]%:*}:$((API[$n] + 3))" --disk disk1 --disk disk2 \
        "${args[@]}" >> serve.log 2>&1) &
    PID[$n]=$!
}
up() { for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$1/api/v1/health" >/dev/null && return 0; sleep 0.1; done; echo "node on $1 did not start" >&2; exit 1; }
token() { cat "$1/wormfs-data/admin-token"; }
# cluster NAME: GET /api/v1/cluster on that node (what `wormfs --json cluster` prints).
cluster() { curl -sf -H "Authorization: Bearer $(token "$1")" "http://127.0.0.1:${API[$1]}/api/v1/cluster"; }
# Node ids are u64s beyond jq's exact integers: read them as text.
leader_of() { grep -o '"leader": *[0-9][0-9]*' | head -1 | grep -o '[0-9]*$'; }
id_of() { sed -n 's/.*"node_id": *\([0-9]*\).*/\1/p' "$1/wormfs-data/node.json"; }
now() { date +%s.%N; }

mkdir -p a b c
(cd a && "$BIN" init >/dev/null)
tok=$(cd a && "$BIN" join-token)
(cd b && "$BIN" init --join "$tok" >/dev/null)
(cd c && "$BIN" init --join "$tok" >/dev/null)
for n in a b c; do start "$n"; done
for n in a b c; do up "${API[$n]}"; done
ready=
for _ in $(seq 1 300); do
    [ "$(cluster a | jq '[.members[] | select(.role == "voter" and .data_cert != null)] | length')" -eq 3 ] && { ready=1; break; }
    sleep 0.2
done
[ -n "$ready" ] || { echo "no 3 registered voters after 60 s" >&2; exit 1; }
leader=$(cluster a | leader_of)
L=; for n in a b c; do [ "$(id_of "$n")" = "$leader" ] && L=$n; done
[ -n "$L" ] || { echo "leader $leader is none of a, b, c" >&2; exit 1; }
F=$( [ "$L" = a ] && echo b || echo a )
echo "leader: $L; stopping follower $F" >&2
before=$(cluster "$F" | jq .last_applied)
kill -TERM "${PID[$F]}"
for _ in $(seq 1 300); do kill -0 "${PID[$F]}" 2>/dev/null || break; sleep 0.1; done
if kill -0 "${PID[$F]}" 2>/dev/null; then echo "$F did not stop within 30 s of SIGTERM" >&2; exit 1; fi
wait "${PID[$F]}" 2>/dev/null || true

echo "committing $COUNT small files through $L, $PAR at a time..." >&2
head -c 4096 /dev/urandom > small.bin
curl -sf -X POST -H "Authorization: Bearer $(token "$L")" "http://127.0.0.1:${API[$L]}/api/v1/mkdir/catch" >/dev/null
for i in $(seq 1 "$COUNT"); do
    printf 'url = "http://127.0.0.1:%s/api/v1/files/catch/f%05d"\nupload-file = "small.bin"\noutput = "/dev/null"\n' "${API[$L]}" "$i"
done > puts.cfg
s=$(now)
curl -s --parallel --parallel-max "$PAR" -H "Authorization: Bearer $(token "$L")" \
    -w '%{http_code}\n' -K puts.cfg > codes.txt 2> curl.err || true
e=$(now)
created=$(grep -c '^201$' codes.txt || true)
[ "$created" -eq "$COUNT" ] || { echo "only $created of $COUNT PUTs answered 201:" >&2; sort codes.txt | uniq -c >&2; tail -5 curl.err >&2; exit 1; }
target=$(cluster "$L" | jq .last_log_index)

echo "restarting $F (it had applied $before; the leader's log ends at $target)..." >&2
s2=$(now)
start "$F"
applied=
first=
for _ in $(seq 1 3000); do
    applied=$(cluster "$F" 2>/dev/null | jq -r '.last_applied // 0' 2>/dev/null || true)
    if [ -n "$applied" ] && [ -z "$first" ]; then
        first=$(now) first_applied=$applied
        # What a client reading through it sees at that moment.
        code=$(curl -s -o list.json -w '%{http_code}' -H "Authorization: Bearer $(token "$F")" "http://127.0.0.1:${API[$F]}/api/v1/list/catch" || true)
        first_listed="HTTP $code, $(jq '.entries | length' list.json 2>/dev/null || echo '?') files"
    fi
    [ -n "$applied" ] && [ "$applied" -ge "$target" ] && break
    sleep 0.1
done
e2=$(now)
[ -n "$applied" ] && [ "$applied" -ge "$target" ] ||
    { echo "$F applied ${applied:-nothing} of $target after 300 s" >&2; tail -20 "$F/serve.log" >&2; exit 1; }
snap=$(grep -c 'installed a snapshot' "$F/serve.log" || true)
listed=$(curl -sf -H "Authorization: Bearer $(token "$F")" "http://127.0.0.1:${API[$F]}/api/v1/list/catch" | jq '.entries | length')
[ "$listed" -eq "$COUNT" ] || { echo "$F lists $listed files in /catch, expected $COUNT" >&2; exit 1; }

printf '%d files committed through the leader in %.1f s (%.0f files/s, %d concurrent PUTs)\n' \
    "$COUNT" "$(echo "$e - $s" | bc -l)" "$(echo "$COUNT / ($e - $s)" | bc -l)" "$PAR"
printf 'follower %s: applied %s before its stop; caught up to %s (%d entries) %.1f s after its start (target < 30 s)\n' \
    "$F" "$before" "$target" "$((target - before))" "$(echo "$e2 - $s2" | bc -l)"
printf '  its API answered %.1f s after its start, with %s applied (listing /catch through it then: %s)\n' \
    "$(echo "$first - $s2" | bc -l)" "$first_applied" "$first_listed"
printf '  it lists all %d files; snapshots it installed: %s\n' "$listed" "$snap"
