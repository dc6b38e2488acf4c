#!/usr/bin/env bash
# bench-binary.sh — put throughput of one kvnode binary, for quick A/B
# comparisons of two builds run back to back (docs/benchmarks.md, issue 15).
#
# Usage: bash scripts/bench-binary.sh BINARY [CONCURRENCIES] [DURATION]
#   BINARY         a kvnode binary (e.g. bin/kvnode, or one built from an
#                  older commit with `go build -o bin/kvnode-old ./cmd/kvnode`)
#   CONCURRENCIES  space-separated list (default "128 16 1")
#   DURATION       measured window per point (default 6s; 1 s warm-up)
# Starts a 3-node cluster of BINARY the way bench-compare does
# (bench/etcd/rafty-cluster.sh: loopback, data on this disk, fsync on),
# preloads 100,000 keys of 256 B with bin/kvnode bench --prefill-only,
# runs one put point per concurrency (leader-directed), prints the results
# and the nodes' proposals-per-batch and entries-per-save counters, then
# stops the cluster and removes its data.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${1:?usage: bench-binary.sh BINARY [CONCURRENCIES] [DURATION]}
CONC=${2:-"128 16 1"}
DUR=${3:-6s}
[[ -x bin/kvnode ]] || go build -o bin/kvnode ./cmd/kvnode
mkdir -p artifacts
export BENCH_DATA_DIR
BENCH_DATA_DIR=$(mktemp -d -p artifacts bench-binary.XXXXXX)
info=$BENCH_DATA_DIR/cluster.json
bash bench/etcd/rafty-cluster.sh "$BIN" >"$info" 2>"$BENCH_DATA_DIR/cluster.log" &
cluster=$!
cleanup() { kill "$cluster" 2>/dev/null || true; wait "$cluster" 2>/dev/null || true; rm -rf "$BENCH_DATA_DIR"; }
trap cleanup EXIT
for _ in $(seq 100); do [[ -s $info ]] && break; sleep 0.2; done
[[ -s $info ]] || { echo "bench-binary: the cluster did not start (see $BENCH_DATA_DIR/cluster.log)" >&2; exit 1; }
field() { python3 -c "import json,sys; print(sys.argv[2].join(json.load(open(sys.argv[1]))[sys.argv[3]]))" "$info" "$1" "$2"; }
endpoints=$(field , endpoints)
bin/kvnode bench --endpoints "$endpoints" --leader-only --prefill-only --op put --concurrency 128 --keys 100000 >/dev/null
for c in $CONC; do
  bin/kvnode bench --endpoints "$endpoints" --leader-only --op put --concurrency "$c" --keys 100000 --warmup 1s --duration "$DUR" | tail -n 1
done
for m in $(field ' ' metrics); do
  curl -s "http://$m/metrics" | grep -E '^rafty_driver_(proposals_per_batch|save_entries)_(sum|count)' | tr '\n' ' '
  echo
done
