// Package etcdraft holds a throughput benchmark of go.etcd.io/raft/v3 used as
// a baseline for Rafty's own core. It is a separate module so that etcd's raft
// never becomes a dependency of github.com/rafty-db/rafty. The benchmark lives
// in propose_bench_test.go; see README.md.
package etcdraft
