// Package chaos is Rafty's fault-injection and linearizability test suite.
// It has no library code: everything is in its tests, which build the real
// kvnode binary and try to make a cluster of it break its promise — a client
// never sees a non-linearizable result and never loses an acknowledged
// write, whatever fails.
//
// The harness (cluster_test.go, compose_test.go) runs 3- and 5-node
// clusters as separate processes on loopback, with a fault-injecting TCP
// proxy (proxy_test.go) on every ordered pair of peers — each node has one
// peer address, a front (front_test.go) that finds the sending node of
// every connection through /proc and hands it to that pair's proxy, since
// members' addresses are replicated — and as the Docker Compose
// deployment. A workload of concurrent clients (workload_test.go)
// issues Put, linearizable and serializable Get, and compare-and-swap Txn on
// a few contended keys, and records every operation's invocation, completion
// and result; an operation that timed out or failed ambiguously is recorded
// with an unknown outcome. Faults (faults_test.go) come from schedules drawn
// from a printed seed: kill -9 of one node, the leader, a majority or all of
// them; SIGSTOP pauses; partitions (leader isolated, majority/minority, a
// bridge node, one-way); added latency; a slow disk on the leader (a
// chaos-tagged kvnode build, cmd/kvnode/chaos_disk.go); simulated power
// cuts of one node, of an isolated one, or of all of them, which drop or
// partly keep what was written but not synced (internal/powerloss under
// the WAL, snapshots and Pebble of the chaos build,
// cmd/kvnode/chaos_powerloss.go); and bad input on the peer and client
// ports (badinput_test.go). The membership nemesis (membership_test.go)
// changes the cluster among those faults: a node joins with `kvnode serve
// --join`, a follower or the leader is removed with `kvnode member
// remove`, a member is killed, wiped and restarted empty under its name
// (it must rejoin under a new ID and its old ID be removed), and a learner
// is added and promoted by hand; sometimes another member is killed or
// paused while the change is under way. The clients follow the members
// the cluster lists.
//
// After every schedule the checker (checker_test.go) verifies the history
// with porcupine (a key-partitioned register model with compare-and-swap),
// that serializable reads never go back in time on a node (within a
// process, across restarts and across power cuts), that every
// (key, mod_index) names one value, that replicas converge to the same
// state hash, and that every acknowledged write is still there or was
// superseded. A violation writes porcupine's HTML visualization, the
// history and the fault schedule to an artifact directory and fails with
// the seed and the command that replays it.
//
//	go test ./chaos/                                  # the short suites (CI)
//	go test ./chaos/ -run TestChaosLong -chaos.duration=10m -v
//	go test ./chaos/ -run 'TestChaosMembership$' -chaos.member-duration=4m -v
//	go test ./chaos/ -run TestChaosReplay -chaos.seed=N -chaos.nodes=3 -v
//
// See docs/reliability.md for what is covered and the figures of recent
// runs.
package chaos
