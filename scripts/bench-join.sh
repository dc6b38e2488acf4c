#!/usr/bin/env bash
# bench-join.sh — the cost of a learner join (issue 14; `make bench-join`).
#
# Starts a 3-node kvnode cluster on loopback (fsync on, logs at warn), preloads
# KEYS keys of VALUE_BYTES bytes, then alternates windows of `kvnode bench`
# puts sent to the leader (closed loop, CONC clients over one connection, keys
# uniform over the preloaded ones):
#
#   A  no membership change, BASE_WINDOW long;
#   B  a 4th node joins (`kvnode serve --join`, an empty data directory) as
#      the window opens (after the bench's warm-up); the window is as long as
#      A's, and the results say when the new learner had caught up (its lag
#      at the leader <= CAUGHT_UP entries, polled with `kvnode member list`
#      every 200 ms — in A windows too, for the same cost); the leader's log was compacted long before (SNAPSHOT_ENTRIES),
#      so the learner must catch up from a snapshot (the leader's
#      rafty_driver_snapshot_sends_total is checked). After the window the
#      node is removed (`kvnode member remove`), stopped and its data deleted,
#      so every B window is a fresh join.
#
# Order: A B A B ... A (ROUNDS B windows, ROUNDS+1 A windows). Results:
# $OUT/A-N.json and $OUT/B-N.json (one bench/workload Result each), node logs
# in $OUT/logs/, and $OUT/table.md: every window, then the medians and B/A.
# Target (issue 14): B's put throughput at most 10 % below A's.
#
# Usage: bash scripts/bench-join.sh        (from anywhere in the repository)
# Environment: ROUNDS (5), CONC (16), KEYS (100000), VALUE_BYTES (256),
#   BASE_WINDOW (2s), WARMUP (2s), SNAPSHOT_ENTRIES (10000), CAUGHT_UP (100),
#   OUT (artifacts/bench-join), PPROF (1: the leader serves /debug/pprof on its
#   metrics port, for `go tool pprof` during a B window), NO_BUILD (1: use
#   $OUT/kvnode as is), JOINER_WRAP (a command prefix for the joining node,
#   e.g. "nice -n 19 ionice -c 3": on one machine the joiner competes with
#   the members for CPU and disk, which a real 4th machine would not),
#   JOINER_DATA (the directory the joiner's data directory goes in, e.g.
#   /dev/shm: its own "disk", as a 4th machine would have; default: beside
#   the members').
#   Needs go, curl, jq and python3 (free ports).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-5}
CONC=${CONC:-16}
KEYS=${KEYS:-100000}
VALUE_BYTES=${VALUE_BYTES:-256}
BASE_WINDOW=${BASE_WINDOW:-2s}
WARMUP=${WARMUP:-2s}
SNAPSHOT_ENTRIES=${SNAPSHOT_ENTRIES:-10000}
CAUGHT_UP=${CAUGHT_UP:-100}
OUT=${OUT:-artifacts/bench-join}
PPROF=${PPROF:-0}
JOINER_WRAP=${JOINER_WRAP:-}
JOINER_DATA=${JOINER_DATA:-}

mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
KV=$OUT/kvnode
if [[ ${NO_BUILD:-0} != 1 ]]; then
  echo "building kvnode" >&2
  go build -o "$KV" ./cmd/kvnode
fi
DATA=$(mktemp -d "${TMPDIR:-/tmp}/bench-join-XXXXXX")
JDATA=$DATA
if [[ -n $JOINER_DATA ]]; then
  JDATA=$(mktemp -d "$JOINER_DATA/bench-join-joiner-XXXXXX")
fi
CLUSTER=bench-join-$$

pids=()
joiner_pid=
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}" $joiner_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $joiner_pid; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -rf "$DATA"
  [[ $JDATA == "$DATA" ]] || rm -rf "$JDATA"
}
trap cleanup EXIT INT TERM

# 4 nodes x (peer, client, metrics) free ports on 127.0.0.1.
read -r -a P <<<"$(python3 -c '
import socket
ss=[socket.socket() for _ in range(12)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
peer() { echo "127.0.0.1:${P[$((3*($1-1)))]}"; }
client() { echo "127.0.0.1:${P[$((3*($1-1)+1))]}"; }
metrics() { echo "127.0.0.1:${P[$((3*($1-1)+2))]}"; }
PEERS="1=$(peer 1),2=$(peer 2),3=$(peer 3)"
ENDPOINTS="$(client 1),$(client 2),$(client 3)"

common=(--cluster-id "$CLUSTER" --log-level warn --snapshot-entries "$SNAPSHOT_ENTRIES")
[[ $PPROF == 1 ]] && common+=(--enable-pprof)
for i in 1 2 3; do
  "$KV" serve --id "$i" --peers "$PEERS" --data-dir "$DATA/n$i" --peer-listen "$(peer "$i")" \
    --client-listen "$(client "$i")" --metrics-listen "$(metrics "$i")" "${common[@]}" \
    >"$OUT/logs/node$i.log" 2>&1 &
  pids+=($!)
done

ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$1/readyz" || true) == 200 ]]; }
for i in 1 2 3; do
  for _ in $(seq 300); do ready "$(metrics "$i")" && break; sleep 0.2; done
  ready "$(metrics "$i")" || { echo "node $i not ready; see $OUT/logs/node$i.log" >&2; exit 1; }
done

# The leader's metrics address (the bench sends to the leader; it must stay
# the leader, which a learner cannot take from it).
leader_metrics() {
  local i st
  for i in 1 2 3; do
    st=$("$KV" status --endpoints "$(client "$i")" 2>/dev/null | awk 'NR==2')
    if grep -q leader <<<"$st"; then metrics "$i"; return; fi
  done
}
LM=$(leader_metrics)
[[ -n $LM ]] || { echo "no leader" >&2; exit 1; }
# disk_stats: per node "save_sum save_count" (rafty_driver_save_duration_seconds:
# the WAL write + fsync per Ready), one line per node 1..3.
disk_stats() {
  local i
  for i in 1 2 3; do
    { curl -s "http://$(metrics "$i")/metrics" || true; } |
      awk '$1=="rafty_driver_save_duration_seconds_sum"{s=$2} $1=="rafty_driver_save_duration_seconds_count"{c=$2} END{printf "%s %s\n", s+0, c+0}'
  done
}
# save_ms BEFORE AFTER: the mean Save per node over a window, "n1/n2/n3" in ms.
save_ms() {
  paste <(echo "$1") <(echo "$2") | awk '{c=$4-$2; printf "%s%.2f", (NR>1?"/":""), (c>0?($3-$1)/c*1000:0)}'
}
snapshot_sends() { { curl -s "http://$LM/metrics" || true; } | awk '$1=="rafty_driver_snapshot_sends_total"{n=$2+0} END{print n+0}'; }

echo "preloading $KEYS keys of $VALUE_BYTES bytes" >&2
"$KV" bench --endpoints "$ENDPOINTS" --leader-only --op put --keys "$KEYS" --value-bytes "$VALUE_BYTES" \
  --prefill --concurrency 64 --warmup 0s --duration 1s --quiet --json >"$OUT/preload.json"

bench_args() { # bench_args DURATION: the bench command line
  BENCH=("$KV" bench --endpoints "$ENDPOINTS" --leader-only --op put --keys "$KEYS" --value-bytes "$VALUE_BYTES"
    --concurrency "$CONC" --warmup "$WARMUP" --duration "$1" --pids "$(IFS=,; echo "${pids[*]}")" --quiet --json)
}

# joiner_lag prints the 4th node's lag at the leader ("" if not listed or
# not known yet).
joiner_lag() {
  "$KV" member list --endpoints "$ENDPOINTS" 2>/dev/null | awk -v n="$1" '$2==n && $(NF-2) ~ /^[0-9]+$/ && $(NF-2) > 0 {print $(NF-1)}' || true
}

poller() { # the same member-list load in A windows
  while :; do "$KV" member list --endpoints "$ENDPOINTS" >/dev/null 2>&1 || true; sleep 0.2; done
}

secs() { python3 -c "s='$1'; print(float(s[:-2])/1000 if s.endswith('ms') else float(s[:-1]))"; }
warm_s=$(secs "$WARMUP")
win_s=$(python3 -c "import math; print(max(1, math.floor($(secs "$BASE_WINDOW"))))")

# profile NAME: with PPROF=1, a CPU profile of the leader over the window
# (started after the warm-up), into $OUT/prof/NAME.pprof.
prof_pid=
profile() {
  prof_pid=
  [[ $PPROF == 1 ]] || return 0
  mkdir -p "$OUT/prof"
  (sleep "$warm_s"; curl -s -o "$OUT/prof/$1.pprof" "http://$LM/debug/pprof/profile?seconds=$win_s") &
  prof_pid=$!
}
profile_wait() { [[ -z $prof_pid ]] || wait "$prof_pid" || true; }

window_a() {
  poller &
  local pp=$!
  bench_args "$BASE_WINDOW"
  profile "A-$1"
  local d0 d1
  d0=$(disk_stats)
  "${BENCH[@]}" >"$OUT/A-$1.json" || true
  d1=$(disk_stats)
  profile_wait
  jq --arg save "$(save_ms "$d0" "$d1")" '. + {save_ms_per_node: $save}' "$OUT/A-$1.json" >"$OUT/A-$1.json.tmp"
  mv "$OUT/A-$1.json.tmp" "$OUT/A-$1.json"
  kill "$pp" 2>/dev/null; wait "$pp" 2>/dev/null || true
  echo "A$1: $(jq -r '"\(.ops_per_sec|floor) ops/s, p99 \(.p99_ms) ms, p99.9 \(.p999_ms) ms"' "$OUT/A-$1.json")" >&2
}

window_b() {
  local r=$1 name="joiner-$1" s0 s1
  rm -rf "$JDATA/n4"
  s0=$(snapshot_sends)
  # The window opens as the join starts (the bench's warm-up is spent
  # before). kvnode bench cannot be stopped early with its result, so the
  # window has a fixed length: make BASE_WINDOW about as long as a join
  # takes (join_seconds in the results) for a window that is all join.
  bench_args "$BASE_WINDOW"
  profile "B-$r"
  local d0 d1
  d0=$(disk_stats)
  "${BENCH[@]}" >"$OUT/B-$r.json" &
  local bp=$!
  sleep "$warm_s"
  local t0
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # JOINER_WRAP is a command prefix, split on purpose
  $JOINER_WRAP "$KV" serve --join "$(peer 1),$(peer 2),$(peer 3)" --name "$name" --peer-addr "$(peer 4)" \
    --peer-listen "$(peer 4)" --client-listen "$(client 4)" --metrics-listen "$(metrics 4)" \
    --data-dir "$JDATA/n4" "${common[@]}" >"$OUT/logs/joiner-$r.log" 2>&1 &
  joiner_pid=$!
  local lag caught= took
  for _ in $(seq 600); do
    lag=$(joiner_lag "$name")
    if [[ -n $lag ]] && ((lag <= CAUGHT_UP)); then caught=1; break; fi
    sleep 0.2
  done
  took=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
  wait "$bp" || true
  d1=$(disk_stats)
  # The joiner's CPU time so far (it shares the machine's cores).
  local jcpu
  jcpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$joiner_pid/stat" 2>/dev/null || echo 0)
  profile_wait
  s1=$(snapshot_sends)
  [[ -n $caught ]] || echo "B$r: the joiner did not catch up within 2 minutes" >&2
  jq --argjson took "$took" --argjson snaps "$((s1 - s0))" --arg caught "${caught:-no}" --arg save "$(save_ms "$d0" "$d1")" \
    --argjson jcpu "$jcpu" \
    '. + {join_caught_up: $caught, join_seconds: $took, snapshot_sends: $snaps, save_ms_per_node: $save, joiner_cpu_seconds: $jcpu}' \
    "$OUT/B-$r.json" >"$OUT/B-$r.json.tmp"
  mv "$OUT/B-$r.json.tmp" "$OUT/B-$r.json"
  echo "B$r: $(jq -r '"\(.ops_per_sec|floor) ops/s, p99 \(.p99_ms) ms, p99.9 \(.p999_ms) ms; the learner caught up after \(.join_seconds) s, snapshots sent \(.snapshot_sends)"' "$OUT/B-$r.json")" >&2
  # Remove it (retrying: its automatic promotion may be in flight), stop it,
  # delete its data: the next B window is a fresh join.
  for _ in $(seq 30); do
    "$KV" member remove "$name" --endpoints "$ENDPOINTS" >/dev/null 2>&1 && break
    sleep 1
  done
  kill -TERM "$joiner_pid" 2>/dev/null || true
  wait "$joiner_pid" 2>/dev/null || true
  joiner_pid=
  rm -rf "$JDATA/n4"
}

for r in $(seq "$ROUNDS"); do
  window_a "$r"
  window_b "$r"
done
window_a $((ROUNDS + 1))

# The table: every window, then medians and the ratio.
{
  echo "| window | ops/s | p50 ms | p99 ms | p99.9 ms | seconds | learner caught up after s | snapshots sent | mean Save (WAL write + fsync) ms, nodes 1/2/3 | servers' CPU s | joiner's CPU s | load avg |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
  for f in $(ls "$OUT"/A-*.json "$OUT"/B-*.json | sort -t- -k2 -n); do
    w=$(basename "$f" .json)
    jq -r --arg w "$w" '"| \($w) | \(.ops_per_sec|floor) | \(.p50_ms) | \(.p99_ms) | \(.p999_ms) | \(.seconds*10|floor/10) | \(.join_seconds // "-") | \(.snapshot_sends // "-") | \(.save_ms_per_node // "-") | \(.cpu_seconds) | \(.joiner_cpu_seconds // "-") | \(.load_avg_1m // "-") |"' "$f"
  done
  echo
  med() { jq -s "map(.$2) | sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end" "$OUT"/$1-*.json; }
  a_ops=$(med A ops_per_sec); b_ops=$(med B ops_per_sec)
  echo "| median | ops/s | p99 ms | p99.9 ms |"
  echo "| --- | ---: | ---: | ---: |"
  echo "| A (no join) | $(printf %.0f "$a_ops") | $(med A p99_ms) | $(med A p999_ms) |"
  echo "| B (join by snapshot) | $(printf %.0f "$b_ops") | $(med B p99_ms) | $(med B p999_ms) |"
  echo
  python3 -c "a=$a_ops; b=$b_ops; d=(a-b)/a*100; print(f'B/A throughput: {b/a:.3f} ({d:+.1f} % slower during the join); target <= 10 %: ' + ('met' if d <= 10 else 'MISSED'))"
} >"$OUT/table.md"
cat "$OUT/table.md"
