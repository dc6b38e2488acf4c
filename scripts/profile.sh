#!/usr/bin/env bash
# profile.sh — CPU profiles of Rafty's leader and of a follower under the
# comparison's heaviest write point (what `make profile` runs).
#
# Starts a three-node cluster the way `make bench-compare` does
# (bench/etcd/rafty-cluster.sh, data on the repository's disk, fsync on) with
# --enable-pprof, preloads the keyspace as the comparison does (every key
# written once by 128 clients, `kvnode bench --prefill-only`, not profiled),
# then runs `kvnode bench` against the leader (default: 256-byte puts at
# concurrency 128 over 100,000 keys, 3 s warm-up + 20 s) and takes, during the
# measured window, a CPU profile of the leader and one of a follower (15 s
# each, at the same time) and the leader's allocation profile. Writes into
# $OUT (default artifacts/profile):
#   bench.json, preload.json           the run's and the preload's results
#   cpu-leader.pprof, cpu-follower.pprof, allocs-leader.pprof
#   cpu-leader-top.txt, cpu-follower-top.txt     pprof -top (flat)
#   cpu-leader-cum.txt, cpu-follower-cum.txt     pprof -top -cum (cumulative)
#   allocs-leader-top.txt                        alloc_space, flat
#   cluster.log                                  the nodes' logs
# The cluster and its data are removed at exit (also on Ctrl-C).
#
# Environment: OUT, OP (put), CONCURRENCY (128), KEYS (100000), WARMUP (3s, whole seconds),
# DURATION (20s; the profiles cover 15 s of it), PROFILE_SECONDS (15),
# RAFTY_SERVE_FLAGS (added to every node), GO (go).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
out=${OUT:-artifacts/profile}
op=${OP:-put}
conc=${CONCURRENCY:-128}
keys=${KEYS:-100000}
warmup=${WARMUP:-3s}
[[ $warmup =~ ^[0-9]+s$ ]] || { echo "profile.sh: WARMUP $warmup: want whole seconds, e.g. 3s" >&2; exit 2; }
dur=${DURATION:-20s}
secs=${PROFILE_SECONDS:-15}
go=${GO:-go}

log() { printf '%s profile: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p bin "$out"
rm -f "$out"/*.pprof "$out"/*-top.txt "$out"/*-cum.txt "$out"/bench.json "$out"/preload.json
log "building bin/kvnode and bin/etcdbench"
"$go" build -o bin/kvnode ./cmd/kvnode
(cd bench/etcd && "$go" build -o "$ROOT/bin/etcdbench" .)

data=$(mktemp -d "$out/data-XXXXXX")
cluster=""
bench=""
cleanup() {
  local code=$?
  trap - EXIT INT TERM
  [[ -n $bench ]] && { kill -TERM "$bench" 2>/dev/null || true; wait "$bench" 2>/dev/null || true; }
  if [[ -n $cluster ]]; then
    kill -TERM "$cluster" 2>/dev/null || true
    wait "$cluster" 2>/dev/null || true
  fi
  rm -rf "$data"
  exit "$code"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM

info=$out/cluster.json
: >"$info"
BENCH_DATA_DIR=$data ETCDBENCH=$ROOT/bin/etcdbench RAFTY_SERVE_FLAGS="--enable-pprof ${RAFTY_SERVE_FLAGS:-}" \
  bash bench/etcd/rafty-cluster.sh "$ROOT/bin/kvnode" >"$info" 2>"$out/cluster.log" &
cluster=$!
deadline=$((SECONDS + 90))
until grep -q '}' "$info" 2>/dev/null; do
  kill -0 "$cluster" 2>/dev/null || { log "the cluster exited while starting; see $out/cluster.log"; exit 1; }
  ((SECONDS < deadline)) || { log "the cluster was not ready within 90 s"; exit 1; }
  sleep 0.2
done
list() { sed -n "s/.*\"$1\" *: *\[\([^]]*\)\].*/\1/p" "$info" | tr -d ' "'; }
endpoints=$(list endpoints)
IFS=, read -r -a pids <<<"$(list pids)"
IFS=, read -r -a metrics <<<"$(list metrics)"

# The leader (node IDs are 1..3 in the order of the lists).
leader=""
for _ in $(seq 1 100); do
  leader=$(bin/kvnode status --endpoints "$endpoints" 2>/dev/null | awk '$3 == "leader" {print $2}' | head -1 || true)
  [[ -n $leader ]] && break
  sleep 0.2
done
[[ $leader =~ ^[123]$ ]] || { log "no leader elected"; exit 1; }
follower=$((leader % 3 + 1))
log "leader is node $leader, profiling node $follower as the follower"

log "preloading $keys keys (not profiled)"
bin/kvnode bench --endpoints "$endpoints" --leader-only --prefill-only --json --quiet \
  --concurrency 128 --keys "$keys" >"$out/preload.json"

log "$op at concurrency $conc over $keys keys: $warmup warm-up + $dur; CPU profiles of ${secs}s"
bin/kvnode bench --endpoints "$endpoints" --leader-only --op "$op" --concurrency "$conc" --keys "$keys" \
  --warmup "$warmup" --duration "$dur" --pids "$(IFS=,; echo "${pids[*]}")" --json --quiet >"$out/bench.json" &
bench=$!
# Profile inside the measured window: start one second after the warm-up.
sleep $((${warmup%s} + 1))
curl -fsS -o "$out/cpu-leader.pprof" "http://${metrics[leader - 1]}/debug/pprof/profile?seconds=$secs" &
c1=$!
curl -fsS -o "$out/cpu-follower.pprof" "http://${metrics[follower - 1]}/debug/pprof/profile?seconds=$secs" &
c2=$!
wait "$c1" "$c2"
curl -fsS -o "$out/allocs-leader.pprof" "http://${metrics[leader - 1]}/debug/pprof/allocs"
wait "$bench" || log "bench exited non-zero (some operations failed?): see $out/bench.json"
bench=""

for who in leader follower; do
  "$go" tool pprof -top -nodecount=40 bin/kvnode "$out/cpu-$who.pprof" >"$out/cpu-$who-top.txt" 2>/dev/null
  "$go" tool pprof -top -cum -nodecount=60 bin/kvnode "$out/cpu-$who.pprof" >"$out/cpu-$who-cum.txt" 2>/dev/null
done
"$go" tool pprof -top -nodecount=30 -sample_index=alloc_space bin/kvnode "$out/allocs-leader.pprof" >"$out/allocs-leader-top.txt" 2>/dev/null
log "results in $out: bench.json, cpu-{leader,follower}.pprof with -top.txt (flat) and -cum.txt (cumulative), allocs-leader-top.txt"
cat "$out/bench.json"
