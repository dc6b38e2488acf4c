#!/usr/bin/env bash
# Starts a three-node Rafty cluster on loopback (what `make run` runs):
#
#   node  peer            client           metrics
#   1     127.0.0.1:7001  127.0.0.1:23791  127.0.0.1:9091
#   2     127.0.0.1:7002  127.0.0.1:23792  127.0.0.1:9092
#   3     127.0.0.1:7003  127.0.0.1:23793  127.0.0.1:9093
#
# with data under ./data/node{1,2,3} (kept across runs; delete it for a
# fresh cluster) and logs in ./data/node{1,2,3}.log. Ctrl-C stops all three
# gracefully and waits for them; a second Ctrl-C makes them exit at once.
set -euo pipefail

cd "$(dirname "$0")/.."
bin=${KVNODE_BIN:-bin/kvnode}
data=${DATA_DIR:-data}
go=${GO:-go}

echo "building $bin"
"$go" build -o "$bin" ./cmd/kvnode

peers="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
endpoints="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"

pids=()
stopping=0
stop() {
	# Every Ctrl-C is forwarded once as SIGTERM: the first starts each
	# node's graceful stop, a second one makes them exit at once.
	stopping=1
	echo
	echo "stopping the cluster (Ctrl-C again to stop at once)"
	kill -TERM "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

mkdir -p "$data"
for i in 1 2 3; do
	# setsid: a node gets the script's SIGTERM only, not the terminal's
	# SIGINT as well (two signals would cut its graceful stop short).
	setsid "$bin" serve \
		--id "$i" \
		--peers "$peers" \
		--cluster-id rafty-local \
		--data-dir "$data/node$i" \
		--peer-listen "127.0.0.1:700$i" \
		--client-listen "127.0.0.1:2379$i" \
		--metrics-listen "127.0.0.1:909$i" \
		2>>"$data/node$i.log" &
	pids+=("$!")
done

# Wait (bounded) until every node reports ready: a leader is known and it
# has applied what it knows committed.
ready=0
for _ in $(seq 1 150); do
	((stopping)) && break
	ready=0
	for i in 1 2 3; do
		if "$bin" health --url "http://127.0.0.1:909$i/readyz" --timeout 1s >/dev/null 2>&1; then
			ready=$((ready + 1))
		fi
	done
	((ready == 3)) && break
	sleep 0.2
done

if ((ready == 3)); then
	cat <<EOF

Rafty is running: three nodes on loopback.
  client endpoints  $endpoints
  metrics           http://127.0.0.1:9091/metrics (also 9092, 9093; /healthz, /readyz)
  data and logs     $data/node{1,2,3}, $data/node{1,2,3}.log

Try:
  export KVNODE_ENDPOINTS=$endpoints
  $bin put greeting hello
  $bin get greeting
  $bin status

Ctrl-C stops the cluster.
EOF
elif ((!stopping)); then
	echo "the cluster is not ready after 30 s; see $data/node{1,2,3}.log" >&2
fi

# Wait until a node exits on its own (then stop the others) or a signal
# asks us to stop; then wait for every node to be gone.
set +e
wait -n "${pids[@]}"
if ((!stopping)); then
	echo "a node exited unexpectedly; stopping the others (see $data/node{1,2,3}.log)" >&2
	stop
	status=1
else
	status=0
fi
for pid in "${pids[@]}"; do
	while kill -0 "$pid" 2>/dev/null; do
		wait "$pid"
	done
done
echo "stopped"
exit "$status"
