#!/usr/bin/env bash
# compare.sh — Rafty vs etcd side by side (`make bench-compare`).
#
# Builds bin/etcdbench (this module) and bin/kvnode (the main module), then for
# each round starts a fresh 3-node cluster of one system, runs every workload
# point against its leader, stops it, and does the same for the other system
# (the order of the two alternates between rounds). Results go to
# $OUT/results/*.json (one workload.Result each), cluster and load logs to
# $OUT/logs/, the markdown table (medians over rounds, ratios Rafty/etcd)
# to $OUT/table.md and its throughput-latency chart to $OUT/chart.svg. Everything it started is stopped and its data removed on
# exit, including on Ctrl-C.
#
# Usage: bash bench/etcd/compare.sh [options]     (from anywhere in the repo)
#   --rounds N          rounds (default 3; env ROUNDS)
#   --duration D        measured window per point (default 10s; env DURATION)
#   --warmup D          warm-up per point (default 2s; env WARMUP)
#   --points LIST       space-separated op:concurrency (default
#                       "put:1 put:16 put:128 get:16 get:128 sget:16 sget:128"; env POINTS)
#   --systems LIST      "rafty etcd" (default), or one of them (env SYSTEMS)
#   --etcd-only         same as --systems etcd
#   --conns N           client connections (default 1; env CONNS)
#   --value-bytes N     value size (default 256; env VALUE_BYTES)
#   --keys N            keyspace (default 10000; env KEYS)
#   --out DIR           output directory, relative to the repository root
#                       (default artifacts/bench; env OUT); the clusters' data
#                       lives in a temporary DIR/data-* removed at exit
#   --no-build          use the binaries already in bin/
#
# The Rafty side is pluggable through the environment:
#   RAFTY_CLUSTER_CMD   starts a Rafty cluster; contract as `etcdbench cluster`:
#                       one JSON line {"endpoints":[...],"pids":[...],...} on
#                       stdout when ready, runs until SIGTERM, then stops the
#                       nodes and removes its data (under $BENCH_DATA_DIR).
#                       Default: bash bench/etcd/rafty-cluster.sh bin/kvnode
#   RAFTY_LOAD_CMD      runs one point; contract as `etcdbench load`: takes the
#                       workload flags plus --endpoints --leader-only --pids
#                       --json, prints one workload.Result JSON object on
#                       stdout. Default: bin/kvnode bench
# If RAFTY_LOAD_CMD is unset and bin/kvnode has no `bench` command, only etcd
# runs (and the script says so).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
POINTS=${POINTS:-"put:1 put:16 put:128 get:16 get:128 sget:16 sget:128"}
SYSTEMS=${SYSTEMS:-"rafty etcd"}
CONNS=${CONNS:-1}
VALUE_BYTES=${VALUE_BYTES:-256}
KEYS=${KEYS:-10000}
OUT=${OUT:-artifacts/bench}
BUILD=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --points) POINTS=$2; shift 2 ;;
    --systems) SYSTEMS=$2; shift 2 ;;
    --etcd-only) SYSTEMS=etcd; shift ;;
    --conns) CONNS=$2; shift 2 ;;
    --value-bytes) VALUE_BYTES=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '%s compare: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# seconds D: whole seconds of a duration written 10s, 1m, 1m30s, 500ms or 12.
seconds() {
  local d=$1 total=0 n
  if [[ $d =~ ^[0-9]+$ ]]; then echo "$d"; return; fi
  while [[ -n $d ]]; do
    if [[ $d =~ ^([0-9]+)(ms|s|m|h)(.*)$ ]]; then
      n=${BASH_REMATCH[1]}
      case ${BASH_REMATCH[2]} in
        ms) total=$((total + (n + 999) / 1000)) ;;
        s) total=$((total + n)) ;;
        m) total=$((total + n * 60)) ;;
        h) total=$((total + n * 3600)) ;;
      esac
      d=${BASH_REMATCH[3]}
    else
      echo "compare.sh: cannot read duration $1 (want e.g. 10s, 1m, 500ms)" >&2
      exit 2
    fi
  done
  echo "$total"
}
DUR_S=$(seconds "$DURATION")
WARM_S=$(seconds "$WARMUP")

# ---- build -----------------------------------------------------------------
mkdir -p bin
if ((BUILD)); then
  log "building bin/etcdbench"
  (cd bench/etcd && go build -o "$ROOT/bin/etcdbench" .)
  if [[ " $SYSTEMS " == *" rafty "* ]]; then
    if [[ -d cmd/kvnode ]]; then
      log "building bin/kvnode"
      if ! go build -o bin/kvnode ./cmd/kvnode; then
        # Never benchmark a stale binary by accident.
        rm -f bin/kvnode
        log "building bin/kvnode failed"
      fi
    fi
  fi
fi
ETCDBENCH=$ROOT/bin/etcdbench
ETCD_CLUSTER_CMD="$ETCDBENCH cluster"
ETCD_LOAD_CMD="$ETCDBENCH load"
RAFTY_CLUSTER_CMD=${RAFTY_CLUSTER_CMD:-"bash $ROOT/bench/etcd/rafty-cluster.sh $ROOT/bin/kvnode"}

if [[ " $SYSTEMS " == *" rafty "* ]]; then
  if [[ -z ${RAFTY_LOAD_CMD:-} ]]; then
    # Captured, not piped into grep -q: grep exiting at the first match
    # would kill kvnode with SIGPIPE, and pipefail would call that a failure.
    bench_help=$( (bin/kvnode bench --help 2>&1) || true)
    if [[ -x bin/kvnode && $bench_help == *--concurrency* ]]; then
      RAFTY_LOAD_CMD="$ROOT/bin/kvnode bench"
    else
      log "bin/kvnode has no 'bench' command (or did not build): running etcd only"
      SYSTEMS=etcd
    fi
  fi
fi
RAFTY_VERSION="git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"

read -r -a systems <<<"$SYSTEMS"
read -r -a points <<<"$POINTS"
for s in "${systems[@]}"; do
  [[ $s == rafty || $s == etcd ]] || { echo "compare.sh: unknown system $s" >&2; exit 2; }
done

RESULTS=$OUT/results
LOGS=$OUT/logs
rm -rf "$RESULTS" "$LOGS"
mkdir -p "$RESULTS" "$LOGS"
# Both systems keep their data here, on the repository's disk (not a tmpfs).
DATA=$(mktemp -d "$OUT/data-XXXXXX")
DATA=$(cd "$DATA" && pwd)
export BENCH_DATA_DIR=$DATA ETCDBENCH

per_point=$((WARM_S + DUR_S + 2))
estimate=$((ROUNDS * ${#systems[@]} * (${#points[@]} * per_point + 12)))
log "systems: ${systems[*]}; rounds: $ROUNDS; points: ${points[*]}; ${WARMUP} warm-up + ${DURATION} each"
log "estimated time: $((estimate / 60)) min $((estimate % 60)) s"
if ((estimate > 15 * 60)); then
  log "warning: over 15 minutes; lower --rounds, --duration or --points"
fi

# ---- cluster lifecycle -------------------------------------------------------
CLUSTER_PID=""
CLUSTER_PIDS=""
LOAD_PID=""

stop_cluster() {
  [[ -n $CLUSTER_PID ]] || return 0
  kill -TERM "$CLUSTER_PID" 2>/dev/null || true
  local deadline=$((SECONDS + 40))
  while kill -0 "$CLUSTER_PID" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "cluster pid $CLUSTER_PID did not stop within 40 s: killing it and its nodes"
      kill -KILL "$CLUSTER_PID" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$CLUSTER_PID" 2>/dev/null || true
  local p
  for p in ${CLUSTER_PIDS//,/ }; do
    if kill -0 "$p" 2>/dev/null; then
      log "node pid $p outlived its cluster: killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  CLUSTER_PID="" CLUSTER_PIDS=""
}

cleanup() {
  local code=$?
  trap - EXIT INT TERM
  if [[ -n $LOAD_PID ]]; then
    kill -TERM "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  stop_cluster
  rm -rf "$DATA"
  exit "$code"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# json_list FIELD FILE: the elements of a one-line JSON array field, comma-joined.
json_list() {
  sed -n "s/.*\"$1\" *: *\[\([^]]*\)\].*/\1/p" "$2" | head -1 | tr -d ' "'
}
# json_num FIELD FILE: a numeric field of a one-line JSON object.
json_num() {
  sed -n "s/.*\"$1\" *: *\([-0-9.eE+]*\).*/\1/p" "$2" | head -1
}

# start_cluster SYSTEM ROUND: start a fresh cluster, set ENDPOINTS and CLUSTER_PIDS.
start_cluster() {
  local sys=$1 round=$2 cmd info
  if [[ $sys == etcd ]]; then cmd=$ETCD_CLUSTER_CMD; else cmd=$RAFTY_CLUSTER_CMD; fi
  info=$LOGS/r$round-$sys-cluster.json
  : >"$info"
  if [[ $sys == etcd ]]; then
    bash -c "exec $cmd --data-dir '$DATA'" >"$info" 2>"$LOGS/r$round-$sys-cluster.log" &
  else
    bash -c "exec $cmd" >"$info" 2>"$LOGS/r$round-$sys-cluster.log" &
  fi
  CLUSTER_PID=$!
  local deadline=$((SECONDS + 90))
  until [[ -s $info ]] && grep -q '}' "$info"; do
    if ! kill -0 "$CLUSTER_PID" 2>/dev/null; then
      log "$sys cluster exited while starting; see $LOGS/r$round-$sys-cluster.log"
      tail -5 "$LOGS/r$round-$sys-cluster.log" >&2 || true
      CLUSTER_PID=""
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$sys cluster not ready within 90 s"
      stop_cluster
      return 1
    fi
    sleep 0.2
  done
  ENDPOINTS=$(json_list endpoints "$info")
  CLUSTER_PIDS=$(json_list pids "$info")
  log "round $round: $sys cluster up: endpoints $ENDPOINTS, pids $CLUSTER_PIDS"
}

# run_point SYSTEM ROUND OP CONCURRENCY PREFILL
run_point() {
  local sys=$1 round=$2 op=$3 c=$4 prefill=$5 cmd
  if [[ $sys == etcd ]]; then cmd=$ETCD_LOAD_CMD; else cmd=$RAFTY_LOAD_CMD; fi
  local name=r$round-$sys-$op-c$c
  local out=$RESULTS/$name.json
  local args=(--endpoints "$ENDPOINTS" --leader-only --pids "$CLUSTER_PIDS" --json
    --op "$op" --concurrency "$c" --conns "$CONNS" --value-bytes "$VALUE_BYTES" --keys "$KEYS"
    --warmup "$WARMUP" --duration "$DURATION" --seed "$round")
  ((prefill)) && args+=(--prefill)
  # shellcheck disable=SC2086 # cmd is a command line
  timeout -s TERM $((WARM_S + DUR_S + 180)) $cmd "${args[@]}" >"$out.tmp" 2>"$LOGS/$name.log" &
  LOAD_PID=$!
  local rc=0
  wait "$LOAD_PID" || rc=$?
  # Exit 1 with a result means some operations failed (kvnode bench names
  # them in its log); the point is kept, like etcd's, with its errors
  # counted in the JSON. Anything else (a crash, the timeout) loses it.
  if ((rc <= 1)) && [[ -s $out.tmp ]]; then
    mv "$out.tmp" "$out"
    LOAD_PID=""
    ((rc == 1)) && log "round $round $sys $op c=$c: some operations failed; see $LOGS/$name.log"
    printf '%s compare: round %s %-5s %-4s c=%-3s %8.0f ops/s  p50 %6.2f ms  p99 %7.2f ms  server CPU %5.2f s\n' \
      "$(date +%H:%M:%S)" "$round" "$sys" "$op" "$c" "$(json_num ops_per_sec "$out")" \
      "$(json_num p50_ms "$out")" "$(json_num p99_ms "$out")" "$(json_num cpu_seconds "$out")" >&2
  else
    LOAD_PID=""
    rm -f "$out.tmp"
    log "round $round $sys $op c=$c FAILED; see $LOGS/$name.log"
    tail -3 "$LOGS/$name.log" >&2 || true
  fi
}

# ---- rounds ------------------------------------------------------------------
start=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${systems[@]}")
  if ((round % 2 == 0 && ${#systems[@]} == 2)); then order=("${systems[1]}" "${systems[0]}"); fi
  for sys in "${order[@]}"; do
    if ! start_cluster "$sys" "$round"; then
      log "round $round: skipping $sys"
      continue
    fi
    wrote=0
    for p in "${points[@]}"; do
      op=${p%%:*} c=${p##*:}
      prefill=0
      # Reads of an empty store would measure nothing: fill it first unless
      # this cluster already took writes.
      if [[ $op == get || $op == sget ]] && ((!wrote)); then prefill=1; fi
      [[ $op == put || $op == txn || $op == mixed ]] && wrote=1
      ((prefill)) && wrote=1
      run_point "$sys" "$round" "$op" "$c" "$prefill"
    done
    stop_cluster
  done
done
log "all rounds done in $((SECONDS - start)) s"

"$ETCDBENCH" table --rafty-version "$RAFTY_VERSION" --out "$OUT/table.md" "$RESULTS"
log "table written to $OUT/table.md"
"$ETCDBENCH" chart --out "$OUT/chart.svg" "$RESULTS"
log "chart written to $OUT/chart.svg (docs/benchmarks-compare.svg is drawn from the table in docs/benchmarks.md: see bench/etcd/chart_test.go)"
cat "$OUT/table.md"
