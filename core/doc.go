// Package core is the Raft consensus protocol as a pure, deterministic
// state machine (Raft paper, extended version; Ongaro's thesis).
//
// A Node consumes inputs — Tick, Step (messages from peers), Propose,
// ProposeConfChange, ReadIndex, TransferLeadership, ReportUnreachable,
// ReportSnapshot — and
// emits its work as a Ready batch: state and entries to persist, messages
// to send (split into those that may leave at once and those that may
// leave only after the persist), committed entries to apply, read states
// and refused proposals. The driver acknowledges each Ready with Advance.
// With Config.AsyncStorageWrites, Advance only releases the Ready: the
// driver persists and applies on its own goroutines and acknowledges
// apart, with AckPersisted and AckApplied, while the node keeps stepping
// messages and handing out new Readies; what must happen in which order
// (persist batches, the commit index to write before applying) is data
// in the Ready. See Ready for the exact contract.
//
// Guarantees:
//   - No I/O, goroutines, clocks, global randomness or logging. Time is
//     Tick; randomness comes from Config.RandomSeed. The same inputs give
//     the same outputs, which is what lets core/sim replay any run.
//   - Durable before dependent: votes, vote requests and append
//     acknowledgements are in MessagesAfterPersist; a lone voter becomes
//     leader only once its vote for itself is durable; the leader counts its
//     own log toward commitment only after Advance (AckPersisted in async
//     mode) says it is durable; in async mode no committed entry is handed
//     out for applying before the local copy is durable, nor above a
//     commit index the driver was asked to write (Ready.CommitToWrite).
//   - Input from the network is untrusted: Step validates every message and
//     returns an error wrapping ErrInvalidMessage (counted in Status)
//     without changing state. Nothing a peer sends can panic the node.
//   - Terms and indexes never wrap: Step refuses any beyond MaxTerm or
//     MaxIndex (Counters.OutOfRangeMessages), and a node at either limit
//     refuses to campaign (Counters.RefusedCampaigns) — see limits.go.
//   - Storage failures are returned, never panicked: the first one latches
//     and every later call returns it (*StorageError).
//   - Every growing structure has a limit in Config: inflight appends per
//     follower (count and bytes), bytes per append, uncommitted bytes,
//     committed bytes per Ready, committed bytes being applied (async),
//     pending reads; a configuration has at most MaxMembers members and a
//     change MaxConfChangeOps operations.
//   - A configuration becomes active when its committed EntryConfChange
//     is handed out in Ready.CommittedEntries, never when appended. The
//     invariants that rule needs: one change in flight (a new leader
//     first waits until everything through its election no-op is
//     active), more than one voter changed only through a joint
//     configuration (left automatically), every replica computing the
//     same configuration from the same committed prefix (Membership.Apply
//     is pure; a committed entry that fails it is skipped everywhere),
//     and a snapshot carrying the configuration active at its index.
//     New bootstraps entry 1 (ConfChange{Replace}) on empty storage, so
//     after the first start the log, not Config.Membership, is the truth.
//
// Assumptions:
//   - One goroutine uses a Node at a time.
//   - The LogReader reflects exactly what the driver persisted from Ready.
//   - The transport may drop, delay, reorder and duplicate messages, except
//     that it does not duplicate MsgProp (a duplicated forwarded proposal
//     would be appended twice; gRPC streams never duplicate).
//
// Where each feature lives: election.go (§5.2, §5.4.1, PreVote §9.6,
// CheckQuorum §6.2), replication.go (§5.3, fast backoff, §5.4.2 commit,
// proposals, InstallSnapshot §7), reads.go (ReadIndex §6.4 and leases,
// with the lease's clock argument), limits.go (term and index limits),
// transfer.go (§3.10), progress.go (flow control), log.go (stable and
// unstable log), ready.go (the output contract), quorum/ (majority and
// joint quorums), membership.go (thesis ch. 4: what a change does —
// Membership.Apply — its errors and its one encoding), confchange.go
// (ProposeConfChange and its refusals, activation on hand-out, leaving a
// joint configuration, a removed leader's handover §4.2.2), node.go
// (New: bootstrap entry, joiners, restoring the configuration; which
// messages non-members and removed members may send).
package core
