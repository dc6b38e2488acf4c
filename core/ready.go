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
