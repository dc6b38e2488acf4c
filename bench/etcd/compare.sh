#!/usr/bin/env bash
# compare.sh — Rafty vs etcd side by side (`make bench-compare`).
#
# Builds bin/etcdbench (this module), bin/etcd-member (the etcd server, from
# the module in member/, with etcd's own dependency versions: checked with
# etcd-member --verify-deps before anything runs) and bin/kvnode (the main
# module). Then, for each round and each keyspace, it starts a fresh 3-node
# cluster of one system, preloads the keyspace (every key written once by
# --preload-concurrency clients through the system's load generator with
# --prefill-only: the same keys, values and order for both systems; not
# measured), runs every workload point against its leader (gets read existing
# keys, puts overwrite), stops it, and does the same for the other system (the
# order of the two alternates between rounds). Results go to
# $OUT/results/kKEYS-rROUND-SYSTEM-OP-cC.json (one workload.Result each),
# preloads, cluster and load logs and the binaries' `go version -m` to
# $OUT/logs/, the markdown tables (one per keyspace, largest first; medians
# over rounds, ratios Rafty/etcd) to $OUT/table.md, the throughput-latency
# chart of the first keyspace to $OUT/chart.svg and of the others to
# $OUT/chart-kKEYS.svg. Everything it started is stopped and its data removed
# on exit, including on Ctrl-C.
#
# Usage: bash bench/etcd/compare.sh [options]     (from anywhere in the repo)
#   --rounds N          rounds (default 3; env ROUNDS)
#   --duration D        measured window per point (default 10s; env DURATION)
#   --warmup D          warm-up per point (default 2s; env WARMUP)
#   --keys LIST         keyspaces, space-separated, the main one first
#                       (default "100000 10000"; env KEYS)
#   --points LIST       space-separated op:concurrency, for the first keyspace
#                       (default "put:1 put:16 put:128 get:16 get:128 sget:16
#                       sget:128"; env POINTS)
#   --points-other LIST the points of the other keyspaces (default "put:16
#                       put:128 get:128": where the keyspace's size shows, at
#                       a third of the time; env POINTS_OTHER)
#   --preload-concurrency N  clients writing the preload (default 128; env
#                       PRELOAD_CONCURRENCY)
#   --systems LIST      "rafty etcd" (default), or one of them (env SYSTEMS)
#   --etcd-only         same as --systems etcd
#   --conns N           client connections (default 1; env CONNS)
#   --value-bytes N     value size (default 256; env VALUE_BYTES)
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
#                       stdout; with --prefill-only it writes every key once
#                       (workload.Preload) instead. Default: bin/kvnode bench
# If RAFTY_LOAD_CMD is unset and bin/kvnode has no `bench` command, only etcd
# runs (and the script says so).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
POINTS=${POINTS:-"put:1 put:16 put:128 get:16 get:128 sget:16 sget:128"}
POINTS_OTHER=${POINTS_OTHER:-"put:16 put:128 get:128"}
PRELOAD_CONCURRENCY=${PRELOAD_CONCURRENCY:-128}
SYSTEMS=${SYSTEMS:-"rafty etcd"}
CONNS=${CONNS:-1}
VALUE_BYTES=${VALUE_BYTES:-256}
KEYS=${KEYS:-"100000 10000"}
OUT=${OUT:-artifacts/bench}
BUILD=1

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --points) POINTS=$2; shift 2 ;;
    --points-other) POINTS_OTHER=$2; shift 2 ;;
    --preload-concurrency) PRELOAD_CONCURRENCY=$2; shift 2 ;;
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
  if [[ " $SYSTEMS " == *" etcd "* ]]; then
    log "building bin/etcd-member (its own module: etcd's dependency versions)"
    (cd bench/etcd/member && go build -o "$ROOT/bin/etcd-member" .)
  fi
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
    if [[ -x bin/kvnode && $bench_help == *--concurrency* && $bench_help == *--prefill-only* ]]; then
      RAFTY_LOAD_CMD="$ROOT/bin/kvnode bench"
    else
      log "bin/kvnode has no 'bench' command with --prefill-only (or did not build): running etcd only"
      SYSTEMS=etcd
    fi
  fi
fi
RAFTY_VERSION="git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"

read -r -a systems <<<"$SYSTEMS"
read -r -a keyspaces <<<"$KEYS"
for s in "${systems[@]}"; do
  [[ $s == rafty || $s == etcd ]] || { echo "compare.sh: unknown system $s" >&2; exit 2; }
done
((${#keyspaces[@]} > 0)) || { echo "compare.sh: --keys is empty" >&2; exit 2; }
for k in "${keyspaces[@]}"; do
  [[ $k =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --keys: $k is not a positive number" >&2; exit 2; }
done
[[ $PRELOAD_CONCURRENCY =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --preload-concurrency $PRELOAD_CONCURRENCY" >&2; exit 2; }
# points_of KEYSPACE-INDEX: the points measured in that keyspace.
points_of() { if (($1 == 0)); then echo "$POINTS"; else echo "$POINTS_OTHER"; fi; }

RESULTS=$OUT/results
LOGS=$OUT/logs
rm -rf "$RESULTS" "$LOGS"
mkdir -p "$RESULTS" "$LOGS"

# ---- what was built with what -----------------------------------------------
# The etcd server must be built with the versions etcd pins, not with the
# main module's (which minimal version selection would raise them to): refuse
# to measure otherwise.
NOTES=()
bins=()
for b in etcdbench etcd-member kvnode; do [[ -x bin/$b ]] && bins+=("bin/$b"); done
go version -m "${bins[@]}" >"$LOGS/binaries.txt" 2>&1 || true
# dep_version BINARY MODULE: the version of MODULE linked into BINARY.
dep_version() {
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "dep" && $2 == m { print $3; exit }'
}
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  [[ -x bin/etcd-member ]] || { log "bin/etcd-member is missing (drop --no-build)"; exit 1; }
  etcd_gomod=$(cd bench/etcd/member && go list -m -f '{{.GoMod}}' go.etcd.io/etcd/server/v3)
  if ! bin/etcd-member --verify-deps "$etcd_gomod" >"$LOGS/etcd-member-deps.txt" 2>&1; then
    log "bin/etcd-member is not built with etcd's own dependency versions; see $LOGS/etcd-member-deps.txt"
    tail -3 "$LOGS/etcd-member-deps.txt" >&2
    exit 1
  fi
  log "bin/etcd-member: every linked module at the version etcd's go.mod pins (grpc $(dep_version bin/etcd-member google.golang.org/grpc)); see $LOGS/etcd-member-deps.txt"
  NOTES+=("The etcd server is built from bench/etcd/member, a module requiring only go.etcd.io/etcd/server/v3, with the dependency versions etcd pins (grpc $(dep_version bin/etcd-member google.golang.org/grpc), checked with etcd-member --verify-deps).")
fi
if [[ " $SYSTEMS " == *" rafty "* && -x bin/kvnode ]]; then
  NOTES+=("Rafty is built from the main module (grpc $(dep_version bin/kvnode google.golang.org/grpc), Pebble $(dep_version bin/kvnode github.com/cockroachdb/pebble/v2)).")
fi
NOTES+=("Before its first point every cluster is preloaded: each key written once by $PRELOAD_CONCURRENCY clients through the system's own load generator (--prefill-only, the same keys and values for both), not measured; gets read existing keys and puts overwrite.")
# Both systems keep their data here, on the repository's disk (not a tmpfs).
DATA=$(mktemp -d "$OUT/data-XXXXXX")
DATA=$(cd "$DATA" && pwd)
export BENCH_DATA_DIR=$DATA ETCDBENCH

# Estimate: per point the warm-up and window and 2 s around them, per cluster
# 12 s to start and stop it and its preload (about 5,000 writes a second on the
# slower system at C=128 on 2 cores).
per_point=$((WARM_S + DUR_S + 2))
estimate=0
for i in "${!keyspaces[@]}"; do
  read -r -a pts <<<"$(points_of "$i")"
  estimate=$((estimate + ROUNDS * ${#systems[@]} * (${#pts[@]} * per_point + 12 + keyspaces[i] / 5000)))
done
log "systems: ${systems[*]}; rounds: $ROUNDS; keyspaces: ${keyspaces[*]}; ${WARMUP} warm-up + ${DURATION} per point"
log "points: $POINTS (${keyspaces[0]} keys)${keyspaces[1]:+; $POINTS_OTHER (the other keyspaces)}"
log "estimated time: $((estimate / 60)) min $((estimate % 60)) s"
if ((estimate > 25 * 60)); then
  log "warning: over 25 minutes; lower --rounds, --duration, --points or --keys"
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

# start_cluster SYSTEM TAG: start a fresh cluster, set ENDPOINTS and
# CLUSTER_PIDS. TAG (kKEYS-rROUND) names its logs.
start_cluster() {
  local sys=$1 tag=$2 cmd info
  if [[ $sys == etcd ]]; then cmd=$ETCD_CLUSTER_CMD; else cmd=$RAFTY_CLUSTER_CMD; fi
  info=$LOGS/$tag-$sys-cluster.json
  : >"$info"
  if [[ $sys == etcd ]]; then
    bash -c "exec $cmd --data-dir '$DATA'" >"$info" 2>"$LOGS/$tag-$sys-cluster.log" &
  else
    bash -c "exec $cmd" >"$info" 2>"$LOGS/$tag-$sys-cluster.log" &
  fi
  CLUSTER_PID=$!
  local deadline=$((SECONDS + 90))
  until [[ -s $info ]] && grep -q '}' "$info"; do
    if ! kill -0 "$CLUSTER_PID" 2>/dev/null; then
      log "$sys cluster exited while starting; see $LOGS/$tag-$sys-cluster.log"
      tail -5 "$LOGS/$tag-$sys-cluster.log" >&2 || true
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
  log "$tag: $sys cluster up: endpoints $ENDPOINTS, pids $CLUSTER_PIDS"
}

# preload SYSTEM TAG KEYS ROUND: write every key once (not measured). Fails
# when the load generator produced no result; failed writes only warn (they
# are in the preload's JSON, and the gets of those keys find nothing).
preload() {
  local sys=$1 tag=$2 keys=$3 round=$4 cmd
  if [[ $sys == etcd ]]; then cmd=$ETCD_LOAD_CMD; else cmd=$RAFTY_LOAD_CMD; fi
  local out=$LOGS/$tag-$sys-preload.json
  local args=(--endpoints "$ENDPOINTS" --leader-only --pids "$CLUSTER_PIDS" --json --prefill-only
    --op put --concurrency "$PRELOAD_CONCURRENCY" --conns "$CONNS" --value-bytes "$VALUE_BYTES" --keys "$keys"
    --seed "$round")
  # shellcheck disable=SC2086 # cmd is a command line
  timeout -s TERM $((keys / 200 + 120)) $cmd "${args[@]}" >"$out" 2>"$LOGS/$tag-$sys-preload.log" &
  LOAD_PID=$!
  local rc=0
  wait "$LOAD_PID" || rc=$?
  LOAD_PID=""
  if ((rc > 1)) || ! grep -q '"ops"' "$out"; then
    log "$tag: $sys preload FAILED (exit $rc); see $LOGS/$tag-$sys-preload.log"
    tail -3 "$LOGS/$tag-$sys-preload.log" >&2 || true
    return 1
  fi
  if ! grep -q '"errors":{}' "$out"; then
    log "$tag: warning: some $sys preload writes failed: $(sed -n 's/.*"errors":\({[^}]*}\).*/\1/p' "$out")"
  fi
  log "$tag: $sys preloaded $(json_num ops "$out") keys in $(printf '%.1f' "$(json_num seconds "$out")") s"
}

# run_point SYSTEM TAG KEYS ROUND OP CONCURRENCY
run_point() {
  local sys=$1 tag=$2 keys=$3 round=$4 op=$5 c=$6 cmd
  if [[ $sys == etcd ]]; then cmd=$ETCD_LOAD_CMD; else cmd=$RAFTY_LOAD_CMD; fi
  local name=$tag-$sys-$op-c$c
  local out=$RESULTS/$name.json
  local args=(--endpoints "$ENDPOINTS" --leader-only --pids "$CLUSTER_PIDS" --json
    --op "$op" --concurrency "$c" --conns "$CONNS" --value-bytes "$VALUE_BYTES" --keys "$keys"
    --warmup "$WARMUP" --duration "$DURATION" --seed "$round")
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
    ((rc == 1)) && log "$tag $sys $op c=$c: some operations failed; see $LOGS/$name.log"
    printf '%s compare: %s %-5s %-4s c=%-3s %8.0f ops/s  p50 %6.2f ms  p99 %7.2f ms  p99.9 %7.2f ms  server CPU %5.2f s\n' \
      "$(date +%H:%M:%S)" "$tag" "$sys" "$op" "$c" "$(json_num ops_per_sec "$out")" \
      "$(json_num p50_ms "$out")" "$(json_num p99_ms "$out")" "$(json_num p999_ms "$out")" "$(json_num cpu_seconds "$out")" >&2
  else
    LOAD_PID=""
    rm -f "$out.tmp"
    log "$tag $sys $op c=$c FAILED; see $LOGS/$name.log"
    tail -3 "$LOGS/$name.log" >&2 || true
  fi
}

# ---- rounds ------------------------------------------------------------------
start=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${systems[@]}")
  if ((round % 2 == 0 && ${#systems[@]} == 2)); then order=("${systems[1]}" "${systems[0]}"); fi
  for ki in "${!keyspaces[@]}"; do
    keys=${keyspaces[ki]}
    tag=k$keys-r$round
    read -r -a points <<<"$(points_of "$ki")"
    for sys in "${order[@]}"; do
      if ! start_cluster "$sys" "$tag"; then
        log "$tag: skipping $sys"
        continue
      fi
      if preload "$sys" "$tag" "$keys" "$round"; then
        for p in "${points[@]}"; do
          run_point "$sys" "$tag" "$keys" "$round" "${p%%:*}" "${p##*:}"
        done
      else
        log "$tag: skipping $sys's points (no preload)"
      fi
      stop_cluster
    done
  done
done
log "all rounds done in $((SECONDS - start)) s"

notes=()
for n in "${NOTES[@]}"; do notes+=(--note "$n"); done
"$ETCDBENCH" table --rafty-version "$RAFTY_VERSION" "${notes[@]}" --out "$OUT/table.md" "$RESULTS"
log "table written to $OUT/table.md"
for ki in "${!keyspaces[@]}"; do
  chart=$OUT/chart.svg
  ((ki == 0)) || chart=$OUT/chart-k${keyspaces[ki]}.svg
  if "$ETCDBENCH" chart --keys "${keyspaces[ki]}" --out "$chart" "$RESULTS"; then
    log "chart of ${keyspaces[ki]} keys written to $chart"
  fi
done
log "(docs/benchmarks-compare.svg is drawn from the first table in docs/benchmarks.md: see bench/etcd/chart_test.go)"
cat "$OUT/table.md"
