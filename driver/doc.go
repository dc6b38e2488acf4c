// Package driver runs a Raft node: it owns a core.Node on one goroutine
// and connects it to durable storage, a network transport and the
// embedder's state machine. It is Rafty's embedding API:
//
//	n, err := driver.Start(ctx, driver.Config{ // ctx: the node's lifetime
//		ID: 1, Peers: peers, // []driver.Peer{{ID: 1, Addr: "10.0.0.1:7000"}, ...}
//		Storage: store, StateMachine: sm,
//		Snapshots: store.Snapshots(), // optional: snapshots and log compaction
//		NewTransport: func(h driver.MessageHandler) (driver.Transport, error) {
//			return transport.New(transport.Config{ClusterID: 7, NodeID: 1,
//				ListenAddr: ":7000", Peers: peers, Handler: h}) // the node starts it
//		},
//	})
//	result, err := n.Propose(ctx, cmd) // replicated, applied, result returned
//	err = n.Read(ctx)                  // linearizable barrier, then read sm locally
//	n.Stop()
//
// # What the embedder implements
//
// A StateMachine (Applied, Apply, Snapshot, Restore; see statemachine.go).
// Storage, SnapshotStore and Transport come from packages disk and
// transport, or any implementation of the interfaces in interfaces.go. For
// tests, package drivertest provides an in-memory network, snapshot store
// and manual clock, and core/memlog an in-memory log: a whole cluster runs
// in one process (see Example_inMemory). Example is the README's: three
// nodes over gRPC on loopback with disk storage, also runnable as
// examples/counter.
//
// One []Peer (ID and address per member) configures both the driver
// (Config.Peers) and transport.GRPC, so they cannot disagree.
//
// # The loop and its ordering guarantees
//
// One goroutine (loop.go) is the only caller of the core, which runs with
// core.Config.AsyncStorageWrites: each Ready says, as data, what to send,
// persist, sync, write and apply, and durability and application are
// acknowledged apart (AckPersisted, AckApplied). Two more goroutines do
// the slow work: the persister (persist.go) owns Storage.Save, the
// applier (apply.go) owns StateMachine.Apply. The loop waits for ticks,
// inbound messages, proposals, reads, control requests and the two
// goroutines' progress, feeds them to the core, and handles each Ready
// top to bottom, as core.Ready's asynchronous contract requires:
//
//  1. send Ready.Messages (a leader's appends leave while it writes the
//     same entries to its own log, thesis §10.2.1);
//  2. if Ready.Snapshot is set (rare): wait until the persister and the
//     applier are idle and install it synchronously; then queue the
//     persist batch (hard state if Ready.Sync or entries, Entries,
//     MessagesAfterPersist, the Persist acknowledgement) to the
//     persister, which merges everything queued meanwhile into one Save
//     (group commit), then sends each batch's MessagesAfterPersist (votes
//     and acknowledgements promise what was written, so never earlier —
//     design §3 rule 1) and posts the batches back; the loop calls
//     AckPersisted for each, in order, and only then does a leader count
//     its own copy of the entries;
//  3. if Ready.CommitToWrite is set, write that commit index
//     (CommitWriter, without an fsync; else with the batch's Save, which
//     the applier waits for), then hand Ready.CommittedEntries to the
//     applier, decoded once on the loop (proposal owners, membership
//     entries, which the loop tracks itself and never hands to the state
//     machine); the applier applies them in order, resolves the waiting
//     proposals with the results and reports its applied index, on which
//     the loop calls AckApplied and serves parked reads;
//  4. answer reads whose read index has been applied (the others wait for
//     the applier), then fail refused proposals;
//  5. Advance, which only releases the Ready.
//
// The core hands out committed entries only once they are durable locally
// (acknowledged by AckPersisted) and along with the commit index to write
// first, so the state machine never runs ahead of the local log, nor of
// the commit index a restart finds. Memory is bounded on both sides:
// the loop takes no Ready while Config.MaxPersistQueueBytes wait for the
// persister (a slow disk throttles appends and proposals at the core's
// limits), and the core hands out no committed entries while
// Config.MaxApplyQueueBytes wait for the applier (a slow state machine
// throttles commits, never heartbeats or appends).
//
// Consequences an embedder can rely on:
//   - Commands reach StateMachine.Apply in log order, each once per
//     state-machine lifetime (after a restart, from Applied()+1 on).
//   - Propose returns success only after the command was committed (so it
//     survives any minority of crashes) and applied on this node.
//   - Read returns nil only once this node's state machine reflects every
//     write committed before Read was called.
//   - Proposals queued while a Save runs go into the next Save together
//     (natural batching: no timer, no added latency when idle); the core
//     takes them in batches of up to Config.MaxBatchProposals and
//     Config.MaxBatchBytes, and the persister merges the batches queued
//     during one fsync into the next.
//   - A leader is fed one tick per Config.TickInterval of clock time,
//     counting time its loop spent blocked (up to an election timeout's
//     worth at once), so a leader whose loop was paused for longer than
//     an election timeout no longer trusts its read lease: it confirms
//     leadership with a quorum before answering reads, and steps down
//     when it learns of a newer term or CheckQuorum finds it unfollowed,
//     instead of acting as if no time had passed. Other roles get at most
//     one tick per wake-up, so a pause of the whole process does not set
//     off elections everywhere. Status never waits for the loop.
//
// # Proposals on any node
//
// Each command is wrapped in an envelope naming its proposer (node ID,
// a random per-start epoch, a sequence number; see envelope.go). A
// follower forwards proposals to the leader; when any node applies an
// entry whose envelope names one of its own waiting Propose calls, it
// returns the state machine's result to it. A forwarded proposal the
// leader refuses comes back and fails at once with the reason. A proposal
// whose index is taken by another committed entry fails as dropped. One
// whose fate is undecided when the caller's context ends (typically the
// leader changed or became unreachable) returns ErrOutcomeUnknown: it may
// still be applied later.
//
// # Limits
//
// Every queue is bounded and named in Config: pending proposals and reads
// (excess fails fast with ErrBusy), proposal size, batch count and bytes,
// inbound messages per iteration, inbox capacity (excess is dropped with
// ErrInboxFull; Raft retransmits).
//
// # Snapshots and log compaction
//
// With Config.Snapshots set (snapshot.go, snapsend.go, handler.go,
// install.go):
//   - Every SnapshotEntries entries or SnapshotBytes bytes applied, the
//     loop captures the state machine (StateMachine.Snapshot, a
//     point-in-time view) and one background goroutine streams it into a
//     snapshot file; writes go on meanwhile. Once the file is durable and
//     the state machine is too (Syncer), the log is compacted up to a
//     margin (CompactionMarginEntries, CompactionMarginBytes) below the
//     snapshot, never past what the state machine made durable.
//   - A follower that needs compacted entries is sent the latest snapshot
//     as a stream, in the background, at most MaxSnapshotSends at once;
//     every transfer ends in a report to the core (a stalled one after
//     SnapshotTimeout), and failures are retried with a doubling delay, so
//     no follower stays in snapshot state. An interrupted transfer resumes
//     where the follower's data stops, when the transport supports it.
//   - A follower writes a received snapshot to a temporary file, has it
//     verified end to end, and installs it before anything else of the
//     Ready that carries it: the state machine's state, then the log, then
//     the acknowledgement. A crash at any step leaves a node that Start
//     brings back consistent.
//   - Start restores from snapshot plus log tail: an in-memory state
//     machine is restored from the latest snapshot, an installation a crash
//     interrupted is completed.
//   - Node.Backup streams a consistent backup from a live node;
//     RestoreBackup seeds a new node's storage and state machine from it.
//
// # Membership changes
//
// Config.Peers (IDs, addresses, optional names and client addresses)
// bootstrap a brand-new cluster and nothing else: the core writes them as
// log entry 1 (identical on every bootstrapping node), and from then on
// the replicated configuration is the only truth. A restarted node whose
// Peers disagree with it logs one warning and uses the persisted one. A
// node started with Config.Join and empty storage has no configuration
// and waits for the leader that added it to send it a snapshot or the
// log; its Peers are only dial hints.
//
// On the leader (a follower returns an error wrapping *core.NotLeaderError
// naming the leader, for the caller to redirect):
//   - AddMember adds a learner (ID allocated as HighestID+1 unless given;
//     idempotent by name and incarnation; a known name with a new
//     incarnation is added as the replacement of the old member). Unless
//     AddOptions.LearnerOnly, the leader promotes it once its match index
//     has stayed within Config.AutoPromoteMaxLag of the leader's log for
//     Config.AutoPromoteStableFor, removing the member it replaces in the
//     same change.
//   - PromoteMember, RemoveMember (on the leader removing itself: hands
//     leadership over first and returns *HandedOverError naming the new
//     leader, which must perform the removal), and ChangeMembership (any
//     core.ConfChange).
//
// Each waits until its change is active: its entry applied on this node,
// in the term it was proposed in (else a *DroppedError, or an
// *OutcomeUnknownError when ctx ends first). The methods other than
// ChangeMembership wait and retry while another change is in flight.
//
// The driver applies every membership entry to its own copy of the
// configuration (core.Membership.Apply), so snapshots carry the
// configuration at their index and compaction markers the one at theirs.
// Whenever the active configuration changes it gives the transport the
// members' addresses (PeerSetter). Messages from removed members are
// refused with an error wrapping core.ErrRemoved; a transport that
// receives that refusal calls the handler's RemovedBy, and Status.Removed
// reports it, as it does when a node applies its own removal.
//
// # Start, shutdown and ownership
//
// Start returns once the node runs and has re-applied its log up to the
// commit index it found (no peers needed: a state machine that applies
// without fsync is caught up before the embedder serves from it), without
// waiting for peers, or fails at once saying what is missing. It starts the transport that
// Config.NewTransport returns when that implements Starter
// (transport.GRPC does); an embedder-owned Config.Transport is the
// embedder's to start. A node that knows no leader for ten election
// timeouts logs a warning, and a nil Config.Logger sends warnings and
// errors to slog.Default(), so a cluster that cannot form is never
// silent.
//
// The context given to Start is the node's lifetime. Cancelling it or
// calling Stop ends the loop. On the way out the persister finishes its
// Save in flight (what is queued behind it was never acknowledged, so it
// may be lost) and the applier its Apply in flight (the rest is
// re-applied by the next Start); then the node fails every pending
// Propose and Read with ErrStopped (a
// proposal already handed to Raft gets an *OutcomeUnknownError wrapping
// ErrStopped), closes the transport if it owns it (Config.NewTransport),
// then closes Storage, which it owns from a successful Start. Stop returns
// only when all that is done and no goroutine the node started is left.
// A transport passed as Config.Transport belongs to the embedder, who
// closes it after Stop. A storage or state-machine failure stops the node
// the same way; Err reports it.
package driver
