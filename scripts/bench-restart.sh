#!/usr/bin/env bash
# bench-restart.sh — read throughput of a fresh Rafty cluster against the
# same cluster restarted with the same data (issue 15: "reads are ~25 %
# slower on a restarted node with the same data").
#
# Starts three `kvnode serve` on free loopback ports with --enable-pprof
# (data on the repository's disk, fsync on), preloads KEYS keys as the
# comparison does (kvnode bench --prefill-only, C=128), then measures OP
# (default get, linearizable) at C=CONCURRENCY against the leader:
#   fresh-1, fresh-2          right after the preload, twice
#   restarted-1, restarted-2  after SIGTERM of all three nodes and a restart on
#                             the same data, twice (is it warming up?)
# Each run: WARMUP + DURATION; the leader's CPU profile over PROFILE_SECONDS
# of the window, and its Pebble metrics (rafty_pebble_*) before and after.
# Writes into $OUT (default artifacts/bench-restart): PHASE.json (the
# workload.Result), PHASE-cpu.pprof and PHASE-cpu-top.txt (pprof -top -cum),
# PHASE-pebble-before.txt / -after.txt, nodes' logs, and summary.txt (one
# line per phase). Removes the data at exit.
#
# Environment: OUT, OP (get), CONCURRENCY (16), KEYS (100000), WARMUP (2s,
# whole seconds), DURATION (10s), PROFILE_SECONDS (8), RAFTY_SERVE_FLAGS, GO.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
out=${OUT:-artifacts/bench-restart}
op=${OP:-get}
conc=${CONCURRENCY:-16}
keys=${KEYS:-100000}
warmup=${WARMUP:-2s}
dur=${DURATION:-10s}
psecs=${PROFILE_SECONDS:-8}
go=${GO:-go}
[[ $warmup =~ ^[0-9]+s$ ]] || { echo "bench-restart.sh: WARMUP $warmup: want whole seconds, e.g. 2s" >&2; exit 2; }

log() { printf '%s bench-restart: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p bin "$out"
rm -f "$out"/*.json "$out"/*.pprof "$out"/*.txt "$out"/*.log
log "building bin/kvnode and bin/etcdbench"
"$go" build -o bin/kvnode ./cmd/kvnode
(cd bench/etcd && "$go" build -o "$ROOT/bin/etcdbench" .)

data=$(mktemp -d "$out/data-XXXXXX")
pids=()
bench=""
stop_nodes() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    local deadline=$((SECONDS + 30))
    while kill -0 "$p" 2>/dev/null; do
      if ((SECONDS >= deadline)); then kill -KILL "$p" 2>/dev/null || true; break; fi
      sleep 0.1
    done
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  [[ -n $bench ]] && { kill -TERM "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true; }
  stop_nodes
  rm -rf "$data"
  exit "$code"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

read -r -a ports <<<"$(bin/etcdbench ports 9)"
peers="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
endpoints="127.0.0.1:${ports[3]},127.0.0.1:${ports[4]},127.0.0.1:${ports[5]}"

# start_nodes: the three nodes on their data (new or existing), until ready.
start_nodes() {
  local i
  for i in 1 2 3; do
    # shellcheck disable=SC2086 # RAFTY_SERVE_FLAGS is a list of flags
    bin/kvnode serve --id "$i" --peers "$peers" --cluster-id bench-restart --data-dir "$data/n$i" \
      --peer-listen "127.0.0.1:${ports[i - 1]}" --client-listen "127.0.0.1:${ports[i + 2]}" \
      --metrics-listen "127.0.0.1:${ports[i + 5]}" --enable-pprof --log-level warn ${RAFTY_SERVE_FLAGS:-} \
      </dev/null >>"$out/n$i.log" 2>&1 &
    pids+=("$!")
  done
  local deadline=$((SECONDS + 120))
  for i in 1 2 3; do
    until bin/kvnode health --url "http://127.0.0.1:${ports[i + 5]}/readyz" --timeout 1s >/dev/null 2>&1; do
      ((SECONDS < deadline)) || { log "node $i not ready within 120 s"; exit 1; }
      sleep 0.2
    done
  done
}

leader_id() {
  local l=""
  for _ in $(seq 1 100); do
    l=$(bin/kvnode status --endpoints "$endpoints" 2>/dev/null | awk '$3 == "leader" {print $2}' | head -1 || true)
    [[ $l =~ ^[123]$ ]] && { echo "$l"; return; }
    sleep 0.2
  done
  log "no leader"; exit 1
}

# The Pebble gauges and the Go runtime's heap and GC counters of one node.
pebble_metrics() {
  curl -fsS "http://$1/metrics" | grep -E '^(rafty_pebble_|go_memstats_(heap_inuse|next_gc)_bytes |go_gc_duration_seconds_(count|sum) )' || true
}
metric() { awk -v m="$1" '$1 == m {printf "%.0f", $2}' "$2"; }

# measure PHASE: one run of OP against the leader, with profile and metrics.
measure() {
  local phase=$1 leader metrics
  leader=$(leader_id)
  metrics=127.0.0.1:${ports[leader + 5]}
  pebble_metrics "$metrics" >"$out/$phase-pebble-before.txt"
  bin/kvnode bench --endpoints "$endpoints" --leader-only --op "$op" --concurrency "$conc" --keys "$keys" \
    --warmup "$warmup" --duration "$dur" --pids "$(IFS=,; echo "${pids[*]}")" --json --quiet >"$out/$phase.json" &
  bench=$!
  sleep $((${warmup%s} + 1))
  curl -fsS -o "$out/$phase-cpu.pprof" "http://$metrics/debug/pprof/profile?seconds=$psecs" || true
  wait "$bench" || log "$phase: bench exited non-zero"
  bench=""
  pebble_metrics "$metrics" >"$out/$phase-pebble-after.txt"
  "$go" tool pprof -top -cum -nodecount=50 bin/kvnode "$out/$phase-cpu.pprof" >"$out/$phase-cpu-top.txt" 2>/dev/null || true
  local b=$out/$phase-pebble-before.txt a=$out/$phase-pebble-after.txt
  local hits=$(($(metric rafty_pebble_block_cache_hits_total "$a") - $(metric rafty_pebble_block_cache_hits_total "$b")))
  local misses=$(($(metric rafty_pebble_block_cache_misses_total "$a") - $(metric rafty_pebble_block_cache_misses_total "$b")))
  local gcs=$(($(metric go_gc_duration_seconds_count "$a") - $(metric go_gc_duration_seconds_count "$b")))
  local j=$out/$phase.json
  printf '%-12s leader n%s  %7.0f ops/s  p50 %5.2f ms  p99 %6.2f ms  | L0 files %s sublevels %s read-amp %s memtable %s B  cache %s B, hits %d misses %d (%.1f%% hit) compactions %s flushes %s | heap in use %s MB, next GC at %s MB, %d GCs in the run\n' \
    "$phase" "$leader" "$(sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p' "$j")" \
    "$(sed -n 's/.*"p50_ms":\([0-9.]*\).*/\1/p' "$j")" "$(sed -n 's/.*"p99_ms":\([0-9.]*\).*/\1/p' "$j")" \
    "$(metric rafty_pebble_l0_files "$a")" "$(metric rafty_pebble_l0_sublevels "$a")" \
    "$(metric rafty_pebble_read_amplification "$a")" "$(metric rafty_pebble_memtable_bytes "$a")" \
    "$(metric rafty_pebble_block_cache_bytes "$a")" "$hits" "$misses" \
    "$(awk -v h="$hits" -v m="$misses" 'BEGIN { if (h + m > 0) print 100 * h / (h + m); else print 0 }')" \
    "$(metric rafty_pebble_compactions_total "$a")" "$(metric rafty_pebble_flushes_total "$a")" \
    "$(awk '$1 == "go_memstats_heap_inuse_bytes" {printf "%.0f", $2 / 1048576}' "$a")" \
    "$(awk '$1 == "go_memstats_next_gc_bytes" {printf "%.0f", $2 / 1048576}' "$a")" "$gcs" | tee -a "$out/summary.txt" >&2
}

log "starting a fresh cluster"
start_nodes
log "preloading $keys keys"
bin/kvnode bench --endpoints "$endpoints" --leader-only --prefill-only --json --quiet --concurrency 128 --keys "$keys" >"$out/preload.json"
measure fresh-1
measure fresh-2
log "restarting all three nodes on the same data"
stop_nodes
start_nodes
measure restarted-1
measure restarted-2
log "summary ($out/summary.txt):"
cat "$out/summary.txt"
