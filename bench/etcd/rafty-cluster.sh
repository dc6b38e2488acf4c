#!/usr/bin/env bash
# rafty-cluster.sh KVNODE — the default Rafty cluster command of compare.sh.
#
# Starts a 3-node Rafty cluster (three `KVNODE serve` processes) on free
# loopback ports with data under a fresh directory in $BENCH_DATA_DIR (default
# $TMPDIR or /tmp), waits until every node answers /readyz, prints one JSON
# line on stdout (the same shape as `etcdbench cluster`):
#
#   {"system":"rafty","version":"","endpoints":["127.0.0.1:P",...],"pids":[...],"leader":"","data_dir":"...",
#    "metrics":["127.0.0.1:M",...]}
#
# (metrics: each node's metrics address, where --enable-pprof in
# RAFTY_SERVE_FLAGS serves /debug/pprof; scripts/profile.sh uses it.)
#
# and runs until SIGTERM/SIGINT or until a node dies; then it stops every
# node with SIGTERM (SIGKILL after 20 s) and removes the data directory.
# Logs go to stderr at warn, each line prefixed with the node.
#
# Environment: ETCDBENCH (default bin/etcdbench next to KVNODE) finds free
# ports; RAFTY_SERVE_FLAGS adds flags to every `serve`.
set -euo pipefail

KVNODE=${1:?usage: rafty-cluster.sh KVNODE}
ETCDBENCH=${ETCDBENCH:-$(dirname "$KVNODE")/etcdbench}
PARENT=${BENCH_DATA_DIR:-${TMPDIR:-/tmp}}
READY_TIMEOUT=${READY_TIMEOUT:-60}

mkdir -p "$PARENT"
dir=$(mktemp -d "$PARENT/rafty-XXXXXX")
pids=()

cleanup() {
  trap - EXIT TERM INT
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  local deadline=$((SECONDS + 20))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        echo "rafty-cluster: node pid $p did not stop within 20 s: killing it" >&2
        kill -KILL "$p" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' TERM INT

read -r -a ports <<<"$("$ETCDBENCH" ports 9)"
peers="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
endpoints=()
for i in 1 2 3; do
  peer=${ports[i - 1]} client=${ports[i + 2]} metrics=${ports[i + 5]}
  # shellcheck disable=SC2086 # RAFTY_SERVE_FLAGS is a list of flags
  "$KVNODE" serve --id "$i" --peers "$peers" --cluster-id bench --data-dir "$dir/n$i" \
    --peer-listen "127.0.0.1:$peer" --client-listen "127.0.0.1:$client" \
    --metrics-listen "127.0.0.1:$metrics" --log-level warn ${RAFTY_SERVE_FLAGS:-} \
    </dev/null > >(sed -u "s/^/[rafty n$i] /" >&2) 2>&1 &
  pids+=("$!")
  endpoints+=("127.0.0.1:$client")
done

deadline=$((SECONDS + READY_TIMEOUT))
for i in 1 2 3; do
  until "$KVNODE" health --url "http://127.0.0.1:${ports[i + 5]}/readyz" --timeout 1s >/dev/null 2>&1; do
    for p in "${pids[@]}"; do
      kill -0 "$p" 2>/dev/null || { echo "rafty-cluster: node pid $p exited while starting" >&2; exit 1; }
    done
    if ((SECONDS >= deadline)); then
      echo "rafty-cluster: node $i not ready within ${READY_TIMEOUT}s" >&2
      exit 1
    fi
    sleep 0.2
  done
done

printf '{"system":"rafty","version":"","endpoints":["%s","%s","%s"],"pids":[%s,%s,%s],"leader":"","data_dir":"%s","metrics":["127.0.0.1:%s","127.0.0.1:%s","127.0.0.1:%s"]}\n' \
  "${endpoints[@]}" "${pids[@]}" "$dir" "${ports[6]}" "${ports[7]}" "${ports[8]}"

while true; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "rafty-cluster: node pid $p exited" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
