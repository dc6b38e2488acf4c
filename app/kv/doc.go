// Package kv is Rafty's replicated key-value store: a state machine on
// Pebble that the driver replicates (Store, driver-facing) and the client
// gRPC service in front of it (Service, gRPC-facing; protocol in
// app/kv/kvpb/kv.proto), and the membership service next to it
// (ClusterService over a MembershipNode; app/kv/kvpb/cluster.proto).
//
// # Wiring a server
//
//	limits := kv.DefaultLimits()
//	store, err := kv.OpenStore(filepath.Join(dataDir, "kv"), kv.Options{Logger: log})
//	node, err := driver.Start(ctx, driver.Config{
//		ID: id, Peers: peers, Storage: raftLog, StateMachine: store,
//		MaxProposalBytes: limits.MaxProposalBytes(), // the driver's default is too small
//		NewTransport: ...,
//	})
//	svc, err := kv.NewService(store, node, clusterID, limits)
//	gs := grpc.NewServer(limits.ServerOptions()...)
//	svc.Register(gs)
//	csvc, err := kv.NewClusterService(store, members, clusterID, limits) // members: a MembershipNode over node
//	csvc.Register(gs)
//	stopHealth := kv.RegisterHealth(gs, node) // grpc.health.v1, SERVING while a leader is known
//	go gs.Serve(lis)
//	...
//	stopHealth()     // report NOT_SERVING first
//	gs.GracefulStop() // finish in-flight requests
//	node.Stop()       // the driver stops calling the store
//	store.Close()     // the node does not own the state machine
//
// # Guarantees
//
// Exactly-once apply. Store.Apply writes the effects of a whole batch of
// commands and the index of the last one (the applied index) in one
// Pebble batch, committed atomically. Applied() returns the stored index,
// so after a crash the driver re-delivers exactly the commands whose
// effects were lost; a command at or below the applied index is skipped
// (result ErrAlreadyApplied), never applied twice. Commands are
// deterministic: every member computes the same state and the same
// verdicts, including rejections (a corrupt or invalid command is a
// *CommandError result that changes nothing, on every member).
//
// Durability, and the compaction invariant. Batches are committed with
// pebble.NoSync: the Raft log is the write-ahead log (design §3), so no
// fsync is on the apply path. A crash may lose recently applied effects,
// which is harmless as long as the log still holds those commands. Hence:
//
//	The Raft log must never be compacted past an index that Store.Sync
//	has returned. Sync forces everything applied so far to stable storage
//	(an fsync of Pebble's WAL, or a memtable flush with Options.DisableWAL)
//	and returns the applied index it covers.
//
// Linearizable reads. Get and Range (unless serializable is set) first
// run driver.Node.Read, the ReadIndex barrier, on whichever member
// received them, leader or follower; when it returns, the local store
// reflects every write committed before the request arrived, and the read
// is served locally. A serializable read skips the barrier: local, fast,
// possibly stale. Reads inside a Txn are part of the replicated command
// and so always linearizable.
//
// Writes on any member. Put, Delete and Txn become Raft proposals on the
// member that received them; a follower forwards them to the leader, and
// the response is sent once the command is applied locally, so a
// subsequent read on the same member observes it.
//
// Errors (gRPC status codes): InvalidArgument for a malformed request or
// one over a Limits bound, detected before anything is proposed;
// Unavailable when a request was certainly not carried out (no leader,
// leadership change, overload, member stopping) and may be retried;
// Aborted when a write's outcome is unknown (it reached the Raft log but
// the member stopped before seeing it applied; it may or may not have
// been applied); DeadlineExceeded or Canceled when the caller's context
// ended, whose message says whether a write had been submitted (outcome
// unknown) or not (not applied). Requests without a deadline get
// Limits.RequestTimeout.
//
// # Data model and key encoding
//
// Keys and values are byte strings; keys are non-empty. Every key records
// its mod index: the Raft log index of the command that last wrote it
// (all writes of one Txn share the Txn's index). In Pebble:
//
//	0x00 "applied"    -> applied index, 8 bytes big-endian
//	0x01 <user key>   -> 0x01 (format) | mod index (8 bytes BE) | value
//
// The one-byte namespace keeps metadata apart from user keys; user keys
// keep their byte order, so ranges and prefixes map to Pebble ranges. A
// span deletion (range or prefix) is one Pebble range tombstone.
//
// Commands are kvpb.Command messages (protobuf). The apply path decodes
// them by hand without allocating, strictly: unknown or repeated fields
// are corruption, so a member never applies half of what was meant.
// Decoding never panics (fuzzed: FuzzDecodeCommand).
//
// # Snapshots and hashes
//
// Snapshot streams the keyspace from a Pebble snapshot as length-prefixed
// records with a trailing record count and CRC-32C (format in
// snapshot.go); Restore verifies a stream completely while spooling it to
// disk, then replaces the keyspace in bounded batches; memory stays
// bounded on both sides. Store.Hash digests the keyspace (SHA-256 of the
// snapshot records, truncated to 64 bits) at a stated applied index, for
// convergence checks; it costs a full scan, runs one at a time, and is
// computed only when asked (StatusRequest.hash). The Backup RPC streams
// driver.Node.Backup after a linearizable read barrier (backup.go): a
// consistent backup holding every write acknowledged before the call.
//
// Directory layout: dir/pebble holds Pebble's files; dir/restore.snap is
// a verified snapshot whose installation is in progress (OpenStore
// completes it after a crash).
package kv
