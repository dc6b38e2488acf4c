// Package workload is the shared definition of the key-value benchmark that
// runs against Rafty (`kvnode bench` in the main module) and against etcd
// (`etcdbench load` in bench/etcd), and the result schema both print. It is a
// package of the main module that depends on the standard library only, so
// the separate bench/etcd module can import it without etcd ever becoming a
// dependency of Rafty.
//
// # Workload definition
//
// Both load generators follow these rules exactly; keep them in step.
//
//   - Closed loop: Concurrency worker goroutines (numbered 0..C-1), each
//     issuing one operation at a time and the next as soon as the previous
//     one returns. No think time, no rate limit.
//   - Connections: the caller opens Conns client connections (each its own
//     gRPC connection); worker w uses connection w mod Conns. In the side by
//     side comparison every connection goes to the leader (found through the
//     system's status call before the run starts).
//   - Operation choice: worker w draws from its own math/rand/v2 PCG source
//     seeded with (Seed, w). For each operation it first draws the kind
//     (IntN over the sum of the mix weights, kinds in the order put, get,
//     sget, txn) and then the key index (IntN(Keys)). With Op other than
//     "mixed" the mix is that one kind with weight 1.
//   - Keys: "key-%08d" of the drawn index, uniform over [0, Keys).
//   - Values: ValueBytes bytes of lower-case ASCII letters, drawn once per
//     worker from its source before the run (the same value for every write
//     of that worker).
//   - Kinds:
//     put: write key = value.
//     get: linearizable read of key (etcd: default Get; Rafty: a read that
//     goes through the leader's read path, not a stale local read).
//     sget: serializable read of key (etcd: Get WithSerializable; Rafty:
//     the serializable / local read option) served by the endpoint the
//     client is connected to.
//     txn: one transaction IF value(key) == value THEN put(key, value) ELSE
//     put(key, value): a compare-and-swap on the key's value whose two
//     branches cost the same (one write), so its throughput does not depend
//     on what earlier operations left in the store.
//     A get of a key that does not exist is a success (an empty answer).
//   - Prefill (optional, not measured): every key is written once, before
//     the warm-up, by the same C workers (worker w writes the keys whose
//     index mod C is w, in increasing order).
//   - Phases: warm-up for Warmup, then the measured window of Duration.
//     Only operations that start and finish inside the measured window are
//     recorded; operations still in flight when it closes are cancelled and
//     dropped.
//   - Recorded: successful operations (count and latency, from just before
//     the client call to just after it returns) and failed operations by
//     kind of error, from a classifier the system's tool supplies (see
//     Classify for the shared names). A failed operation's latency is not
//     recorded and it does not count in Ops.
//   - Latency percentiles come from a log-linear histogram (128 sub-buckets
//     per power of two: relative error under 0.8 %).
//   - CPU: the servers' CPU time (utime+stime of /proc/PID/stat summed over
//     the cluster's member processes) is sampled when the measured window
//     opens and when it closes; CPUSeconds is the difference. The load
//     generator's own CPU time over the same window is ClientCPUSeconds.
package workload
