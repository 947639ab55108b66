#!/usr/bin/env bash
# How long a small fsync (what a Raft log append costs) takes on this machine's disk while a
# large write runs on the same disk: first while dd fills the page cache and fsyncs once at the
# end (as an ingest writes a segment's parts, then fsyncs them), then while dd streams with
# O_DIRECT at normal and at idle I/O priority. Explains docs/performance.md's commit latency
# during an ingest: no metadata store can commit faster than the disk under it fsyncs.
#
#   bash tests/bench/fsync_under_write.sh [SIZE_MIB]     (2048)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-2048}
source tests/bench/lib.sh
command -v python3 >/dev/null || install_missing python3
command -v ionice >/dev/null || install_missing util-linux
WORK=$PWD/target/bench-fsync
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
trap 'wait 2>/dev/null || true; cleanup_work "$WORK"' EXIT
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > src.bin
cat > probe.py <<'PY'
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
pid, times = int(sys.argv[2]), []
while True:  # at least one sample, however quick the writer
    t = time.perf_counter()
    os.write(fd, b"x" * 200)
    os.fsync(fd)
    times.append((time.perf_counter() - t) * 1000)
    if not os.path.exists(f"/proc/{pid}"):
        break
times.sort()
n = len(times)
print(f"n={n} p50={times[n // 2]:.2f} ms p99={times[int(n * 0.99)]:.2f} ms max={times[-1]:.2f} ms")
PY
probe() {
    local label=$1
    shift
    rm -f out.bin log.bin
    "$@" &
    local pid=$!
    printf '%-44s %s\n' "$label" "$(python3 probe.py log.bin $pid)"
    wait $pid
}
echo "200-byte append + fsync, repeated while ${SIZE_MIB} MiB are written to the same disk:"
probe "idle disk (a 3 s sleep)" sleep 3
probe "dd to the page cache, one fsync at the end" dd if=src.bin of=out.bin bs=8M conv=fsync status=none
probe "dd O_DIRECT" dd if=src.bin of=out.bin bs=8M oflag=direct status=none
probe "dd O_DIRECT, ionice idle class" ionice -c3 dd if=src.bin of=out.bin bs=8M oflag=direct status=none
