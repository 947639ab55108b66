#!/usr/bin/env bash
# The part data plane's transport on loopback, one connection: plain TCP, TLS 1.3 with the data
# plane's own configurations (the cipher a node picks here, then ChaCha20-Poly1305 as on a CPU
# without AES instructions), and HTTP/1.1 PUT and GET of 1 MiB bodies over that TLS the way the
# data plane sends them (server/examples/data_plane_bench.rs). Prints every run's table, then
# the medians over the runs (each ratio is taken within its own run).
#
#   bash tests/bench/data_plane.sh [GIB] [RUNS]     (2, 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
GIB=${1:-2}
RUNS=${2:-3}
cargo build --release -p wormfs-server --example data_plane_bench >/dev/null
BENCH=$PWD/target/release/examples/data_plane_bench
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

for i in $(seq 1 "$RUNS"); do
    echo "run $i of $RUNS (load average: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    "$BENCH" "$GIB" | tee /dev/stderr | grep '^| ' | grep -v -e '^| case' -e '^| ---' >> "$OUT"
done

echo "medians of $RUNS runs, $GIB GiB per case:"
echo "| case | GB/s | vs plain TCP | client CPU-s/GiB | server CPU-s/GiB |"
echo "| --- | --- | --- | --- | --- |"
# Rows keep the order of the first run; each column's median over the runs.
awk -F' *\\| *' '
    { c = $2; if (!(c in n)) order[++k] = c; n[c]++
      for (j = 3; j <= 6; j++) v[c, j, n[c]] = $j }
    function med(c, j,   m, i, a, t, x, y) {
        m = n[c]; for (i = 1; i <= m; i++) a[i] = v[c, j, i] + 0
        for (x = 1; x <= m; x++) for (y = x + 1; y <= m; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
        return a[int((m + 1) / 2)]
    }
    END { for (i = 1; i <= k; i++) { c = order[i]
        printf "| %s | %.2f | %.2f | %.3f | %.3f |\n", c, med(c, 3), med(c, 4), med(c, 5), med(c, 6) } }
' "$OUT"
