#!/usr/bin/env bash
# Starts a three-node Rafty cluster on loopback (what `make run` runs):
#
#   node  peer            client           metrics
#   1     127.0.0.1:7001  127.0.0.1:23791  127.0.0.1:9091
#   2     127.0.0.1:7002  127.0.0.1:23792  127.0.0.1:9092
#   3     127.0.0.1:7003  127.0.0.1:23793  127.0.0.1:9093
#
# with data under ./data/node{1,2,3} (kept across runs; delete it for a
# fresh cluster), logs in ./data/node{1,2,3}.log and each running node's
# process ID in ./data/node{1,2,3}.pid.
#
# A node that exits (a crash, kill -9, a port already in use) is reported
# on the console at once with its exit status and its last log line; the
# other nodes keep running. From another terminal,
#
#   scripts/run-local.sh restart N
#
# restarts node N under this script. Ctrl-C stops every node gracefully and
# waits for them; a second Ctrl-C makes them exit at once.
#
# A brand-new cluster bootstraps once all three nodes have answered each
# other (a node with an empty data directory never bootstraps alone; see
# docs/operations.md). To grow it, start a fourth node by hand; it joins
# and is promoted to voter once caught up:
#
#   bin/kvnode serve --join 127.0.0.1:7001,127.0.0.1:7002 --name node-4 \
#     --cluster-id rafty-local --peer-listen 127.0.0.1:7004 --client-listen 127.0.0.1:23794 \
#     --metrics-listen 127.0.0.1:9094 --data-dir data/node4
#   bin/kvnode member list --endpoints 127.0.0.1:23791,127.0.0.1:23794
#
# Environment: KVNODE_BIN runs that binary instead of building bin/kvnode;
# DATA_DIR (default data) holds the data, logs and process IDs;
# PEER_PORTS, CLIENT_PORTS and METRICS_PORTS (comma-separated, one per
# node) replace the ports above. KVNODE_* variables reach the nodes as the
# environment twins of serve's flags (KVNODE_LOG_LEVEL=debug).
set -euo pipefail

cd "$(dirname "$0")/.."
data=${DATA_DIR:-data}
go=${GO:-go}
host=127.0.0.1
# The interval of the supervision loop: how soon an exit or a restart
# request is noticed.
poll=0.2
# ready_secs bounds the wait for a started node to become ready before
# the console says which nodes are not, and why.
ready_secs=30

IFS=, read -r -a peer_ports <<<"${PEER_PORTS:-7001,7002,7003}"
IFS=, read -r -a client_ports <<<"${CLIENT_PORTS:-23791,23792,23793}"
IFS=, read -r -a metrics_ports <<<"${METRICS_PORTS:-9091,9092,9093}"
for list in peer_ports client_ports metrics_ports; do
	declare -n ports=$list
	if ((${#ports[@]} != 3)); then
		echo "run-local: ${list^^} must list three ports, got '${ports[*]}'" >&2
		exit 2
	fi
	for p in "${ports[@]}"; do
		if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then
			echo "run-local: ${list^^}: '$p' is not a port number" >&2
			exit 2
		fi
	done
	unset -n ports
done

supervisor_pid_file=$data/run-local.pid

# restart N: ask the running `make run` of this data directory to start
# node N again. It runs there, so its output goes to that console and
# Ctrl-C there stops it with the others.
if [[ ${1:-} == restart ]]; then
	n=${2:-}
	if ! [[ $n =~ ^[123]$ ]] || (($# != 2)); then
		echo "usage: $0 restart N   (N is 1, 2 or 3)" >&2
		exit 2
	fi
	sup=$(cat "$supervisor_pid_file" 2>/dev/null || true)
	if [[ -z $sup ]] || ! kill -0 "$sup" 2>/dev/null; then
		echo "run-local: no make run is running with data in $data (start one with make run)" >&2
		exit 1
	fi
	request=$data/restart-node$n
	: >"$request"
	# The supervisor takes the request within one poll interval.
	for _ in $(seq 1 50); do
		[[ -e $request ]] || break
		sleep 0.1
	done
	if [[ -e $request ]]; then
		rm -f "$request"
		echo "run-local: make run (pid $sup) did not take the request within 5s" >&2
		exit 1
	fi
	answer=$(cat "$data/restart-node$n.answer" 2>/dev/null || true)
	rm -f "$data/restart-node$n.answer"
	echo "$answer"
	[[ $answer == restarted* ]]
	exit
fi
if (($# > 0)); then
	echo "usage: $0 [restart N]" >&2
	exit 2
fi

if [[ -n ${KVNODE_BIN:-} ]]; then
	bin=$KVNODE_BIN
else
	bin=bin/kvnode
	echo "building $bin"
	"$go" build -o "$bin" ./cmd/kvnode
fi

mkdir -p "$data"
if sup=$(cat "$supervisor_pid_file" 2>/dev/null) && kill -0 "$sup" 2>/dev/null; then
	echo "run-local: another make run (pid $sup) is using $data; stop it first" >&2
	exit 1
fi
echo $$ >"$supervisor_pid_file"
rm -f "$data"/restart-node?

# How to run this script's restart from another terminal: the data
# directory names the running make run, so a non-default one is given.
restart_cmd="$0 restart"
[[ -n ${DATA_DIR:-} ]] && restart_cmd="DATA_DIR=$(printf %q "$data") $restart_cmd"

peers="1=$host:${peer_ports[0]},2=$host:${peer_ports[1]},3=$host:${peer_ports[2]}"
endpoints="$host:${client_ports[0]},$host:${client_ports[1]},$host:${client_ports[2]}"

# Per node (index 1..3): its process ID while it runs ("" once it has
# exited), whether it is ready, and when it was started (in seconds).
declare -a pid=("" "" "" "") ready=(0 0 0 0) started=(0 0 0 0) warned=(0 0 0 0)

start_node() {
	local i=$1 log=$data/node$1.log
	echo "==== run-local: starting node $i at $(date '+%Y-%m-%d %H:%M:%S') ====" >>"$log"
	# setsid: a node gets the script's SIGTERM only, not the terminal's
	# SIGINT as well (two signals would cut its graceful stop short).
	setsid "$bin" serve \
		--id "$i" \
		--peers "$peers" \
		--cluster-id rafty-local \
		--data-dir "$data/node$i" \
		--peer-listen "$host:${peer_ports[i - 1]}" \
		--client-listen "$host:${client_ports[i - 1]}" \
		--metrics-listen "$host:${metrics_ports[i - 1]}" \
		>>"$log" 2>&1 &
	pid[i]=$!
	echo "${pid[i]}" >"$data/node$i.pid"
	ready[i]=0
	warned[i]=0
	started[i]=$SECONDS
}

# describe_exit turns a wait status into words.
describe_exit() {
	local st=$1
	if ((st > 128)); then
		echo "killed by SIG$(kill -l $((st - 128)) 2>/dev/null || echo $((st - 128)))"
	else
		echo "exit status $st"
	fi
}

# reap reports node i's exit: its status, its last log line (a startup
# failure's reason), who keeps running and how to restart it.
reap() {
	local i=$1 st=0 log=$data/node$1.log when="" others=() j last
	wait "${pid[i]}" 2>/dev/null || st=$?
	pid[i]=""
	rm -f "$data/node$i.pid"
	((stopping)) && return
	((!ready[i])) && when=" while starting"
	for j in 1 2 3; do
		[[ -n ${pid[j]} ]] && others+=("$j")
	done
	{
		echo
		echo "node $i exited$when ($(describe_exit "$st")):"
		# A failed start ends its log with a one-line error
		# ("kvnode: --client-listen ...: address already in use").
		last=$(tail -n 1 "$log")
		[[ $last == "kvnode: "* ]] && echo "  $last"
		echo "  log: $log"
		case ${#others[@]} in
		0) echo "  no node is running" ;;
		1) echo "  node ${others[0]} keeps running" ;;
		*) echo "  nodes ${others[*]} keep running" ;;
		esac
		echo "  restart it with: $restart_cmd $i"
	} >&2
}

stopping=0
stop() {
	# Every Ctrl-C is forwarded once as SIGTERM: the first starts each
	# node's graceful stop, a second one makes them exit at once.
	stopping=1
	echo
	echo "stopping the cluster (Ctrl-C again to stop at once)"
	local live=()
	for i in 1 2 3; do
		[[ -n ${pid[i]} ]] && live+=("${pid[i]}")
	done
	((${#live[@]})) && kill -TERM "${live[@]}" 2>/dev/null
	return 0
}
trap stop INT TERM
cleanup() {
	rm -f "$supervisor_pid_file" "$data"/node?.pid "$data"/restart-node? "$data"/restart-node?.answer
}
trap cleanup EXIT

# take_restart_requests starts each node a `restart N` asked for, and
# answers it.
take_restart_requests() {
	local i request answer
	for i in 1 2 3; do
		request=$data/restart-node$i
		[[ -e $request ]] || continue
		if ((stopping)); then
			answer="not restarted: the cluster is stopping"
		elif [[ -n ${pid[i]} ]]; then
			answer="not restarted: node $i is running (pid ${pid[i]})"
		else
			start_node "$i"
			answer="restarted node $i (pid ${pid[i]}); the make run console says when it is ready"
			echo "restarting node $i (pid ${pid[i]}) as asked" >&2
		fi
		echo "$answer" >"$request.answer"
		rm -f "$request"
	done
}

announced=0
banner() {
	cat <<EOF

Rafty is running: $running of three nodes on loopback.
  client endpoints  $endpoints
  metrics           http://$host:${metrics_ports[0]}/metrics (also ${metrics_ports[1]}, ${metrics_ports[2]}; /healthz, /readyz)
  data and logs     $data/node{1,2,3}, $data/node{1,2,3}.log
  process IDs       $data/node{1,2,3}.pid

Try:
  export KVNODE_ENDPOINTS=$endpoints
  $bin put greeting hello
  $bin get greeting
  $bin status
  kill -9 \$(cat $data/node1.pid)      # the others keep serving
  $restart_cmd 1

Ctrl-C stops the cluster.
EOF
}

# readyz asks node i's /readyz over bash's /dev/tcp: no process to start
# (a kvnode health probe takes a few hundred milliseconds to start on a
# busy machine), so the loop notices an exit quickly. It succeeds on
# 200 OK, and sets why to the answer's first body line or the failure.
readyz() {
	local i=$1 fd status="" line body=""
	why="connection refused"
	if ! { exec {fd}<>"/dev/tcp/$host/${metrics_ports[i - 1]}"; } 2>/dev/null; then
		return 1
	fi
	printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&"$fd"
	IFS= read -r -t 1 status <&"$fd"
	while IFS= read -r -t 1 line <&"$fd" && [[ ${line%$'\r'} != "" ]]; do :; done
	IFS= read -r -t 1 body <&"$fd"
	exec {fd}>&-
	status=${status%$'\r'}
	why=${body:-${status:-no answer within 1s}}
	[[ $status =~ ^HTTP/1\.[01]\ 200 ]]
}

# check_ready probes the nodes not yet ready: a leader is known and the
# node has applied what it knows committed.
check_ready() {
	local i why
	for i in 1 2 3; do
		[[ -n ${pid[i]} ]] && ((!ready[i])) || continue
		if readyz "$i"; then
			ready[i]=1
			((announced)) && echo "node $i is ready" >&2
		elif ((!warned[i] && SECONDS - started[i] >= ready_secs)); then
			warned[i]=1
			echo "node $i is not ready after ${ready_secs}s: $why" >&2
		fi
	done
	# Announced once every running node is ready, and a quorum runs:
	# a node that failed to start does not hide the others' endpoints.
	local running=0 ready_running=0
	for i in 1 2 3; do
		[[ -n ${pid[i]} ]] || continue
		running=$((running + 1))
		ready_running=$((ready_running + ready[i]))
	done
	if ((!announced && running >= 2 && ready_running == running)); then
		announced=1
		banner
	fi
}

for i in 1 2 3; do
	start_node "$i"
done

# Supervise until Ctrl-C: report exits, take restart requests, announce
# readiness. `sleep & wait` lets a signal interrupt the pause at once.
set +e
while ((!stopping)); do
	for i in 1 2 3; do
		if [[ -n ${pid[i]} ]] && ! kill -0 "${pid[i]}" 2>/dev/null; then
			reap "$i"
		fi
	done
	take_restart_requests
	((stopping)) || check_ready
	sleep "$poll" &
	# 2>/dev/null: bash reports a child killed by a signal ("Killed ...")
	# here; reap says it better.
	wait $! 2>/dev/null
done

# Stopping: wait for every node to be gone. A node's wait is repeated
# while it runs, since a second Ctrl-C interrupts it.
status=0
for i in 1 2 3; do
	[[ -n ${pid[i]} ]] || continue
	st=0
	while kill -0 "${pid[i]}" 2>/dev/null; do
		wait "${pid[i]}"
		st=$?
	done
	if ((st != 0)); then
		echo "node $i: $(describe_exit "$st") while stopping; see $data/node$i.log" >&2
		status=1
	fi
done
echo "stopped"
exit "$status"
