#!/usr/bin/env bash
# Drop-folder latency: how long after the last write of a SIZE_MIB file (default 2048) it is
# committed, on the default settle time (issue #3's target: within 60 s for 2 GiB).
#
#   bash tests/bench/drop_folder_latency.sh [SIZE_MIB]
#
# Starts a release node with one inotify drop folder under ./target/bench-drop, writes the file
# with dd (fdatasync, so the write is really done when dd exits), then polls the ingest status.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
source tests/bench/lib.sh
cargo build --release -p wormfs-server >/dev/null
BIN=$PWD/target/release/wormfs
WORK=$PWD/target/bench-drop
rm -rf "$WORK" && mkdir -p "$WORK/drop" && cd "$WORK"
PORT=17711
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
"$BIN" serve --listen 127.0.0.1:$PORT --webdav-listen 127.0.0.1:$((PORT + 100)) --ingest drop=/dropped > serve.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT
for _ in $(seq 1 200); do curl -sf http://127.0.0.1:$PORT/api/v1/health >/dev/null && break; sleep 0.1; done
W() { "$BIN" --node http://127.0.0.1:$PORT "$@"; }
cat src.bin > /dev/null
dd if=src.bin of=drop/film.mkv bs=1M conv=fdatasync status=none
written=$(date +%s.%N)
while :; do
    done_n=$(W --json ingest | sed -n 's/^  "done": \([0-9]*\),*/\1/p')
    [ "${done_n:-0}" = 1 ] && break
    sleep 0.1
done
committed=$(date +%s.%N)
[ ! -e drop/film.mkv ] || { sleep 1; [ ! -e drop/film.mkv ] || { echo "FATAL: original still there" >&2; exit 1; }; }
want=$(b3sum --no-names src.bin 2>/dev/null || true)
got=$(W --json stat /dropped/film.mkv | sed -n 's/^  "blake3": "\([0-9a-f]*\)".*/\1/p')
[ -z "$want" ] || [ "$want" = "$got" ] || { echo "FATAL: hash mismatch $want != $got" >&2; exit 1; }
printf 'size: %d MiB; committed %.1f s after its last write (settle 5 s; target <= 60 s)\n' "$SIZE_MIB" "$(echo "$committed - $written" | bc -l)"
