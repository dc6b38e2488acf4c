package core

import "fmt"

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
// Invariants the core keeps in this mode, each relied on by a driver
// rule above: CommitToWrite >= the last index of CommittedEntries
// whenever that index exceeds every commit index handed out before
// (so applied never passes the written commit, across restarts too);
// CommittedEntries[last].Index <= the highest acknowledged persisted
// index; at most Config.MaxApplyingBytes of committed entries are handed
// out and not yet acknowledged applied.
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
	// nothing the core waits for.
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
}

// IsZero reports whether the ack acknowledges nothing.
func (a PersistAck) IsZero() bool { return a == PersistAck{} }

// readyMark remembers what an outstanding Ready handed out, so Advance
// acknowledges exactly that.
type readyMark struct {
	lastEntry     Entry // Index 0 when no entries
	snapIndex     uint64
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
// is when its own copy counts toward commitment (design §3 rule 2).
func (n *Node) Advance(rd Ready) error {
	if n.err != nil {
		return n.err
	}
	if !n.outstanding {
		return fmt.Errorf("raft: Advance called without an outstanding Ready")
	}
	mark := &n.mark
	n.outstanding = false
	if mark.snapIndex != 0 {
		n.log.snapshotStable(mark.snapIndex)
	}
	if mark.lastEntry.Index != 0 {
		n.log.stableTo(mark.lastEntry.Index, mark.lastEntry.Term)
	}
	if mark.hadCommitted {
		n.log.appliedTo(mark.appliedTo)
	}
	if n.role == RoleLeader && n.maybeCommit() {
		n.bcastPending = true
	}
	return nil
}

// AckPersisted (AsyncStorageWrites only) acknowledges that the persist
// batch of a Ready handed out earlier is durable: its snapshot installed
// and its entries fsynced. Acknowledgements must come in the order the
// Readies were handed out; a batch superseded meanwhile (its entries
// truncated by a newer leader) is acknowledged only as far as it still
// matches. On the leader its own entries then count toward commitment.
func (n *Node) AckPersisted(a PersistAck) error {
	return fmt.Errorf("raft: AckPersisted: not implemented yet (issue 15 skeleton)")
}

// AckApplied (AsyncStorageWrites only) acknowledges that the state
// machine applied every committed entry handed out up to index, which
// releases their bytes from Config.MaxApplyingBytes and is reported in
// Status.Applied.
func (n *Node) AckApplied(index uint64) error {
	return fmt.Errorf("raft: AckApplied: not implemented yet (issue 15 skeleton)")
}
