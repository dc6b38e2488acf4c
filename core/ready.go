package core

import (
	"errors"
	"fmt"
)

// Ready is a batch of work the node asks of its driver. The contract, in
// the order the driver must follow:
//
//  1. Send Messages. They do not depend on anything in this Ready being
//     durable, so the leader replicates entries while it writes them
//     (thesis §10.2.1).
//  2. Persist: if Snapshot is set, install it (state machine data and
//     storage) first; then write HardState (if not zero) and Entries in one
//     durable write. Entries may start at or below the stored last index:
//     the stored suffix from Entries[0].Index on is replaced.
//  3. Send MessagesAfterPersist. They acknowledge what step 2 wrote
//     (votes, append acknowledgements), so they must not leave earlier.
//  4. Apply CommittedEntries in order, then serve ReadStates whose Index
//     the state machine has reached; fail the requests in ReadStates and
//     RejectedProposals that carry an error.
//  5. Call Advance with this Ready.
//
// Only one Ready is outstanding at a time: Ready returns ErrReadyNotAdvanced
// until Advance is called. Tick, Step and the request methods may be called
// between Ready and Advance; their effects go into the next Ready.
//
// Slices in a Ready are owned by the node and must not be modified; they
// stay valid after Advance.
//
// # Asynchronous storage writes (Config.AsyncStorageWrites)
//
// The order of work is then data in the Ready, and Advance acknowledges
// nothing but the hand-over; the driver may call Ready again at once:
//
//  1. Send Messages at once.
//  2. Persist: queue {Snapshot, HardState, Entries, MessagesAfterPersist,
//     Sync, Persist} to a writer that handles such batches strictly in
//     the order the Readies were handed out (it may merge consecutive
//     ones into one write and one fsync). For each batch, once its
//     Snapshot (installed: state machine restored, storage marker
//     written), HardState and Entries are written, and fsynced if Sync
//     is set in it or in any later batch merged with it, the writer sends
//     its MessagesAfterPersist and the driver calls AckPersisted(Persist)
//     (on the loop goroutine). A Ready with a Snapshot may only be
//     persisted once every committed entry handed out before it has been
//     applied (or abandoned): restoring replaces the state machine.
//  3. Apply: if CommitToWrite is non-zero, first write that commit index
//     (it need not be synced: driver.CommitWriter), then hand
//     CommittedEntries to the applier, which applies them in order,
//     possibly on another goroutine, and reports through AckApplied.
//     CommittedEntries never include an entry that AckPersisted has not
//     covered, so the state machine never runs ahead of the local log.
//  4. Serve ReadStates once the applier has reached their Index; fail
//     the requests in ReadStates and RejectedProposals that carry an
//     error.
//  5. Call Advance.
//
// Every Ready goes through the writer, in order, even one whose Persist
// is zero: a vote for a peer has no acknowledgement, but its response
// in MessagesAfterPersist must not leave before it (and every earlier
// batch) is durable. AckPersisted is called exactly once per Ready with a
// non-zero Persist, in hand-out order; AckApplied whenever the applier
// has progressed (acknowledging a prefix of a batch is allowed; only
// whole batches release bytes). Acknowledgements that break these rules
// return an error wrapping ErrInvalidAck and change nothing.
//
// Invariants the core keeps in this mode, each relied on by a driver
// rule above: CommitToWrite >= the last index of CommittedEntries
// whenever that index exceeds every commit index handed out before, or
// the commit index the node started with (so applied never passes the
// written commit, across restarts too, given a restarted node starts
// from max(stored commit, Config.Applied)); CommittedEntries[last].Index
// <= the highest index AckPersisted made durable and current (entries a
// later batch rewrites count only once that batch is acknowledged); at
// most Config.MaxApplyingBytes of committed entries are handed out and
// not yet acknowledged applied, give or take the one entry always handed
// out while under the limit; committed entries blocked by either rule do
// not make HasReady true, while new entries, messages or state do,
// however many earlier batches await acknowledgement.
type Ready struct {
	// SoftState is set when the role or the known leader changed.
	SoftState *SoftState
	// HardState is the state to persist; zero when unchanged.
	HardState HardState
	// Entries are to be persisted before MessagesAfterPersist leave.
	Entries []Entry
	// Snapshot, when set, is a snapshot to install before Entries.
	Snapshot *SnapshotMeta
	// Messages may be sent at once.
	Messages []Message
	// MessagesAfterPersist may be sent only once HardState, Snapshot and
	// Entries are durable.
	MessagesAfterPersist []Message
	// CommittedEntries are to be applied, in order, after persisting.
	CommittedEntries []Entry
	// Sync reports whether persisting this Ready needs an fsync: term or
	// vote changed, or entries or a snapshot are to be written (the same
	// rule as MustSync, against the hard state last handed out). A Ready
	// with Sync false may still carry a HardState whose commit index
	// changed: writing it is optional (CommitToWrite is what apply needs).
	Sync bool
	// Persist identifies what this Ready asks to persist, for
	// AckPersisted (AsyncStorageWrites only); zero when the Ready asks
	// nothing the core waits for. When non-zero (entries, a snapshot or
	// this node's vote for itself), Sync is set.
	Persist PersistAck
	// CommitToWrite (AsyncStorageWrites only), when non-zero, is a commit
	// index the driver must write (without fsync) before applying
	// CommittedEntries; see the contract above.
	CommitToWrite uint64
	// ReadStates answer ReadIndex requests.
	ReadStates []ReadState
	// RejectedProposals are forwarded proposals the leader refused.
	RejectedProposals []RejectedProposal
}

// MustSync reports whether the persist step needs an fsync: the term or
// vote changed, or entries or a snapshot are to be written.
func (rd *Ready) MustSync(prev HardState) bool {
	return len(rd.Entries) > 0 || rd.Snapshot != nil ||
		(!rd.HardState.IsZero() && (rd.HardState.Term != prev.Term || rd.HardState.Vote != prev.Vote))
}

// IsEmpty reports whether rd asks nothing of the driver.
func (rd *Ready) IsEmpty() bool {
	return rd.SoftState == nil && rd.HardState.IsZero() && len(rd.Entries) == 0 &&
		rd.Snapshot == nil && len(rd.Messages) == 0 && len(rd.MessagesAfterPersist) == 0 &&
		len(rd.CommittedEntries) == 0 && len(rd.ReadStates) == 0 && len(rd.RejectedProposals) == 0
}

// PersistAck identifies one Ready's persist batch (AsyncStorageWrites).
// The driver passes it back unchanged to AckPersisted.
type PersistAck struct {
	// Index and Term are the last entry the batch writes (zero if none).
	Index, Term uint64
	// SnapshotIndex is the index of the snapshot the batch installs (zero
	// if none).
	SnapshotIndex uint64
	// VoteTerm is the term of this node's vote for itself that the
	// batch's HardState makes durable (zero if none): a candidate that
	// wins by its own vote alone (a single voter) becomes leader only
	// once that vote is durable.
	VoteTerm uint64
}

// IsZero reports whether the ack acknowledges nothing.
func (a PersistAck) IsZero() bool { return a == PersistAck{} }

// ErrInvalidAck is wrapped by the errors AckPersisted and AckApplied
// return for an acknowledgement that does not match what was handed out
// (out of order, repeated, never handed out, or in synchronous mode). The
// node's state is unchanged by such a call; it is a driver bug, not a
// storage failure, so nothing latches.
var ErrInvalidAck = errors.New("raft: invalid acknowledgement")

// persistBatch is one async persist batch awaiting AckPersisted.
type persistBatch struct {
	ack PersistAck
	// first is the index of the batch's first entry (0 if it writes
	// none); with snap, whether it installs a snapshot. Both tell whether
	// the batch rewrites entries an earlier batch wrote (supersedes).
	first uint64
	snap  bool
}

// readyMark remembers what an outstanding Ready handed out, so Advance
// acknowledges exactly that (sync mode; async mode keeps persistQ and
// raftLog.applyingBatches instead).
type readyMark struct {
	lastEntry     Entry // Index 0 when no entries
	snapIndex     uint64
	voteTerm      uint64 // the HardState carries our vote for ourselves in this term
	appliedTo     uint64
	hadCommitted  bool
	persistedHard HardState
}

// HasReady reports whether Ready would return a non-empty batch.
func (n *Node) HasReady() bool {
	if n.err != nil || n.outstanding {
		return false
	}
	if (n.reads.wantsRound() || n.bcastPending) && n.role == RoleLeader {
		return true
	}
	if n.softState() != n.prevSoft {
		return true
	}
	if hs := n.hardState(); hs != n.prevHard {
		return true
	}
	return n.log.hasUnpersisted() || n.log.hasNextCommitted() ||
		len(n.msgs) > 0 || len(n.msgsAfterPersist) > 0 ||
		len(n.readStates) > 0 || len(n.rejectedProposals) > 0
}

// Ready returns the next batch of work; see Ready for the contract.
func (n *Node) Ready() (Ready, error) {
	if n.err != nil {
		return Ready{}, n.err
	}
	if n.outstanding {
		return Ready{}, ErrReadyNotAdvanced
	}
	// Committed entries first: handing a configuration entry out
	// activates it (membership.go), and what that does (probes to new
	// members, the exit from a joint configuration, a removed leader's
	// handover) belongs in this same Ready.
	committed, err := n.log.takeCommitted()
	if err != nil {
		return Ready{}, n.fail(err)
	}
	n.activateConfChanges(committed)
	if n.cfg.AsyncStorageWrites && len(committed) > 0 && n.role == RoleLeader && n.maybeCommit() {
		// A configuration just activated may count acknowledgements
		// already in (e.g. leaving a joint configuration whose new
		// half has acked more): nothing else would re-count them, as
		// Advance does in sync mode, since no further ack may come.
		n.bcastPending = true
	}
	if n.bcastPending {
		n.flushBcast()
	}
	if n.reads.wantsRound() && n.role == RoleLeader {
		n.startReadRound()
	}
	var rd Ready
	if ss := n.softState(); ss != n.prevSoft {
		rd.SoftState = &ss
		n.prevSoft = ss
	}
	if hs := n.hardState(); hs != n.prevHard {
		rd.HardState = hs
	}
	n.mark = readyMark{persistedHard: n.prevHard}
	mark := &n.mark
	if hs := rd.HardState; hs.Vote == n.id && (hs.Term != n.prevHard.Term || hs.Vote != n.prevHard.Vote) {
		// A vote for ourselves is written: selfVoteDurable once it is.
		mark.voteTerm = hs.Term
	}
	if n.log.pendingSnap != nil && !n.log.snapHandedOut {
		s := *n.log.pendingSnap
		s.Membership = s.Membership.Clone()
		rd.Snapshot = &s
		n.log.snapHandedOut = true
		mark.snapIndex = s.Index
	}
	rd.Entries = n.log.takeUnpersisted()
	if len(rd.Entries) > 0 {
		mark.lastEntry = rd.Entries[len(rd.Entries)-1]
	}
	if len(committed) > 0 {
		rd.CommittedEntries = committed
		mark.appliedTo = committed[len(committed)-1].Index
		mark.hadCommitted = true
	}
	rd.Sync = rd.MustSync(n.prevHard)
	if n.cfg.AsyncStorageWrites {
		n.handOutAsync(&rd)
	}
	rd.Messages, n.msgs = n.msgs, nil
	rd.MessagesAfterPersist, n.msgsAfterPersist = n.msgsAfterPersist, nil
	rd.ReadStates, n.readStates = n.readStates, nil
	rd.RejectedProposals, n.rejectedProposals = n.rejectedProposals, nil
	if !rd.HardState.IsZero() {
		n.prevHard = rd.HardState
	}
	n.outstanding = true
	return rd, nil
}

// Advance acknowledges the outstanding Ready: its snapshot, hard state and
// entries are durable and its committed entries applied. On the leader this
// is when its own copy counts toward commitment (design §3 rule 2). With
// Config.AsyncStorageWrites it only releases the Ready, acknowledging
// nothing: see AckPersisted and AckApplied.
func (n *Node) Advance(rd Ready) error {
	if n.err != nil {
		return n.err
	}
	if !n.outstanding {
		return fmt.Errorf("raft: Advance called without an outstanding Ready")
	}
	mark := &n.mark
	n.outstanding = false
	if n.cfg.AsyncStorageWrites {
		// Durability and application are acknowledged apart
		// (AckPersisted, AckApplied); handOutAsync remembered what this
		// Ready asked.
		return nil
	}
	if mark.snapIndex != 0 {
		n.log.snapshotStable(mark.snapIndex)
	}
	if mark.lastEntry.Index != 0 {
		n.log.stableTo(mark.lastEntry.Index, mark.lastEntry.Term)
	}
	if mark.hadCommitted {
		n.log.appliedTo(mark.appliedTo)
	}
	if mark.voteTerm != 0 {
		n.selfVoteDurable(mark.voteTerm)
	}
	if n.role == RoleLeader && n.maybeCommit() {
		n.bcastPending = true
	}
	return nil
}

// handOutAsync (AsyncStorageWrites) records the persist batch of rd for
// AckPersisted and sets rd.CommitToWrite.
func (n *Node) handOutAsync(rd *Ready) {
	var b persistBatch
	if len(rd.Entries) > 0 {
		last := rd.Entries[len(rd.Entries)-1]
		b.ack.Index, b.ack.Term = last.Index, last.Term
		b.first = rd.Entries[0].Index
	}
	if rd.Snapshot != nil {
		b.ack.SnapshotIndex = rd.Snapshot.Index
		b.snap = true
	}
	b.ack.VoteTerm = n.mark.voteTerm
	if !b.ack.IsZero() {
		// Only entries, snapshots and our own votes are waited for:
		// another hard state (a vote for a peer, a new term) matters
		// through the MessagesAfterPersist it travels with, which the
		// writer sends once it is durable.
		rd.Persist = b.ack
		n.persistQ = append(n.persistQ, b)
	}
	if k := len(rd.CommittedEntries); k > 0 {
		// The commitHanded invariant (node.go): these entries go to the
		// applier only after the driver wrote CommitToWrite.
		if last := rd.CommittedEntries[k-1].Index; last > n.commitHanded {
			rd.CommitToWrite = last
			n.commitHanded = last
		}
	}
}

// AckPersisted (AsyncStorageWrites only) acknowledges that the persist
// batch of a Ready handed out earlier is durable: its snapshot installed
// and its entries fsynced. Acknowledgements must come in the order the
// Readies were handed out, one per Ready with a non-zero Persist (a zero
// ack is accepted and does nothing); anything else returns an error
// wrapping ErrInvalidAck and changes nothing. A batch superseded meanwhile
// (its entries truncated by a newer leader, or replaced by a snapshot) is
// acknowledged only as far as it still matches. On the leader its own
// entries then count toward commitment, and a new commit index is
// broadcast in the next Ready.
func (n *Node) AckPersisted(a PersistAck) error {
	if n.err != nil {
		return n.err
	}
	if !n.cfg.AsyncStorageWrites {
		return fmt.Errorf("%w: AckPersisted without AsyncStorageWrites (Advance acknowledges)", ErrInvalidAck)
	}
	if a.IsZero() {
		return nil
	}
	if len(n.persistQ) == 0 {
		return fmt.Errorf("%w: AckPersisted(%+v): no persist batch awaits acknowledgement", ErrInvalidAck, a)
	}
	if head := n.persistQ[0].ack; head != a {
		return fmt.Errorf("%w: AckPersisted(%+v): the oldest unacknowledged persist batch is %+v", ErrInvalidAck, a, head)
	}
	n.persistQ = n.persistQ[1:]
	later := n.persistQ
	if len(n.persistQ) == 0 {
		n.persistQ = nil
	}
	if a.SnapshotIndex != 0 {
		// A later snapshot replaces pendingSnap, and then this does
		// nothing (snapshotStable checks the index).
		n.log.snapshotStable(a.SnapshotIndex)
	}
	if a.Index != 0 && !supersededBy(later, a.Index) {
		// stableTo's term check covers truncations not yet handed out:
		// storage then holds exactly what this batch wrote.
		n.log.stableTo(a.Index, a.Term)
	}
	if a.VoteTerm != 0 {
		n.selfVoteDurable(a.VoteTerm)
	}
	if n.role == RoleLeader && n.maybeCommit() {
		n.bcastPending = true
	}
	return nil
}

// supersededBy reports whether a batch ending at last is rewritten by one
// of the later batches already handed out: one installing a snapshot, or
// writing entries from an index at or below last. Their writes may already
// be on disk (the writer runs ahead of the acknowledgements), so what
// storage holds at last is unknown and nothing is marked stable: the
// stableTo term check alone would not do, since a log suffix can be
// replaced and then restored to the very same entries (A, B, A again).
// The later batch's own acknowledgement covers the entries.
func supersededBy(later []persistBatch, last uint64) bool {
	for _, b := range later {
		if b.snap || (b.first != 0 && b.first <= last) {
			return true
		}
	}
	return false
}

// AckApplied (AsyncStorageWrites only) acknowledges that the state
// machine applied every committed entry handed out up to index, which
// releases their bytes from Config.MaxApplyingBytes (a Ready's batch once
// index reaches its last entry) and is reported in Status.Applied. An
// index at or below the last acknowledged one does nothing (a snapshot
// installed meanwhile may already cover it); one past the last committed
// entry handed out returns an error wrapping ErrInvalidAck.
func (n *Node) AckApplied(index uint64) error {
	if n.err != nil {
		return n.err
	}
	if !n.cfg.AsyncStorageWrites {
		return fmt.Errorf("%w: AckApplied without AsyncStorageWrites (Advance acknowledges)", ErrInvalidAck)
	}
	return n.log.ackApplied(index)
}
