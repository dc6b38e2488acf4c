#!/usr/bin/env bash
# Profiles Rafty under load (what `make profile` runs): starts a three-node
# kvnode cluster on loopback with --enable-pprof, drives it with
# `kvnode bench` (default: 256-byte puts to the leader at concurrency 128),
# and saves the leader's CPU and allocation profiles plus the top of each
# into $OUT (default artifacts/profile). The cluster and its data are
# removed at exit.
#
# Environment: OUT, OP (put), CONCURRENCY (128), DURATION (25s; the CPU
# profile covers 15 s of it after a 5 s warm-up), GO (go).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${OUT:-artifacts/profile}
op=${OP:-put}
conc=${CONCURRENCY:-128}
dur=${DURATION:-25s}
go=${GO:-go}
bin=bin/kvnode

"$go" build -o "$bin" ./cmd/kvnode
mkdir -p "$out"
data=$(mktemp -d "${TMPDIR:-/tmp}/rafty-profile-XXXXXX")

peers="1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103"
endpoints="127.0.0.1:17201,127.0.0.1:17202,127.0.0.1:17203"
pids=()
cleanup() {
	trap - EXIT INT TERM
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	rm -rf "$data"
}
trap cleanup EXIT INT TERM

for i in 1 2 3; do
	"$bin" serve --id "$i" --peers "$peers" --cluster-id rafty-profile --data-dir "$data/node$i" \
		--peer-listen "127.0.0.1:1710$i" --client-listen "127.0.0.1:1720$i" \
		--metrics-listen "127.0.0.1:1730$i" --enable-pprof --log-level warn 2>>"$out/node$i.log" &
	pids+=("$!")
done

# The leader's metrics port serves the profiles; wait (bounded) for one.
leader=""
for _ in $(seq 1 100); do
	leader=$("$bin" status --endpoints "$endpoints" 2>/dev/null | awk '$3 == "leader" {print $2}' || true)
	[[ -n $leader ]] && break
	sleep 0.2
done
[[ -n $leader ]] || { echo "profile: no leader elected" >&2; exit 1; }
metrics="127.0.0.1:1730$leader"
echo "profile: leader is node $leader; $op at concurrency $conc for $dur"

"$bin" bench --endpoints "$endpoints" --leader-only --op "$op" --concurrency "$conc" \
	--warmup 5s --duration "$dur" --pids "${pids[$((leader - 1))]}" --json --quiet >"$out/bench.json" &
bench=$!
sleep 5
curl -fsS -o "$out/cpu.pprof" "http://$metrics/debug/pprof/profile?seconds=15"
curl -fsS -o "$out/allocs.pprof" "http://$metrics/debug/pprof/allocs"
wait "$bench"

"$go" tool pprof -top -nodecount=25 "$bin" "$out/cpu.pprof" >"$out/cpu-top.txt" 2>/dev/null
"$go" tool pprof -top -nodecount=25 -sample_index=alloc_space "$bin" "$out/allocs.pprof" >"$out/allocs-top.txt" 2>/dev/null
echo "profile: results in $out (bench.json, cpu.pprof, allocs.pprof, cpu-top.txt, allocs-top.txt)"
cat "$out/bench.json"
