package core

import (
	"fmt"

	"github.com/rafty-db/rafty/core/quorum"
)

// ProposeConfChange proposes a membership change on the leader and
// returns the index of its entry. The change is active once that entry is
// handed out in Ready.CommittedEntries (membership.go has the rule and
// what it needs). Refusals, each wrapped with details (use errors.Is or
// errors.As):
//   - *NotLeaderError on a follower (with the leader hint);
//   - ErrTransferInProgress while the leader hands over;
//   - ErrConfChangeInProgress while an earlier change, the automatic exit
//     from a joint configuration, or (for a new leader) anything in its
//     log at election is not yet active, and in a joint configuration
//     (only the leader's own LeaveJoint may follow);
//   - ErrInvalidConfChange and ErrIDReused from Membership.Apply (last
//     voter removed, unknown member, reused ID, ...), and for Replace,
//     which only bootstrap and offline recovery write;
//   - ErrLearnerBehind when a learner to promote has a match more than
//     Config.MaxPromoteLagEntries behind the leader's last index or was not
//     heard from within an election timeout;
//   - ErrQuorumUnreachable when the leader and the voters it heard from
//     within an election timeout are not a quorum of the resulting
//     configuration (of both halves if joint): such a change would commit
//     under the old configuration and leave the cluster unable to commit,
//     or to leave the joint configuration, afterwards;
//   - ErrTooManyUncommitted and ErrProposalTooLarge, as for Propose.
func (n *Node) ProposeConfChange(cc ConfChange) (uint64, error) {
	if n.err != nil {
		return 0, n.err
	}
	if n.role != RoleLeader {
		return 0, &NotLeaderError{Leader: n.lead}
	}
	if n.leadTransferee != None {
		return 0, ErrTransferInProgress
	}
	if cc.Replace != nil {
		return 0, fmt.Errorf("%w: Replace is written only by bootstrap and offline recovery", ErrInvalidConfChange)
	}
	if n.pendingConfIndex > n.confScanned {
		return 0, fmt.Errorf("%w: the entry at index %d is not yet active (active through %d)",
			ErrConfChangeInProgress, n.pendingConfIndex, n.confScanned)
	}
	if n.membership.IsJoint() && !cc.LeaveJoint {
		return 0, fmt.Errorf("%w: the configuration is joint and the leader is leaving it", ErrConfChangeInProgress)
	}
	next, err := n.membership.Apply(cc)
	if err != nil {
		return 0, err
	}
	last := n.log.lastIndex()
	for _, op := range cc.Ops {
		if op.Type != ConfPromote {
			continue
		}
		pr := n.progress[op.Member.ID]
		if pr == nil { // Apply checked it is a learner; defensive
			return 0, fmt.Errorf("%w: node %d has no progress", ErrInvalidConfChange, op.Member.ID)
		}
		if last > pr.Match && last-pr.Match > n.cfg.MaxPromoteLagEntries {
			return 0, fmt.Errorf("%w: node %d matches index %d, leader's last is %d (at most %d behind)",
				ErrLearnerBehind, op.Member.ID, pr.Match, last, n.cfg.MaxPromoteLagEntries)
		}
		if !n.heardRecently(op.Member.ID) {
			return 0, fmt.Errorf("%w: node %d not heard from within an election timeout", ErrLearnerBehind, op.Member.ID)
		}
	}
	if err := n.checkReachable(next); err != nil {
		return 0, err
	}
	return n.appendConfChange(cc)
}

// heardRecently reports whether the leader heard from id within the last
// election timeout (the CheckQuorum bookkeeping); the leader hears itself.
func (n *Node) heardRecently(id uint64) bool {
	if id == n.id {
		return true
	}
	pr := n.progress[id]
	return pr != nil && pr.heard && n.ticks-pr.lastHeardTick < uint64(n.cfg.ElectionTicks)
}

// checkReachable applies the reachability rule: the leader and the voters
// it heard from recently must be a quorum of m (of both halves if joint).
func (n *Node) checkReachable(m Membership) error {
	jc := quorum.JointConfig{
		Incoming: quorum.NewMajorityConfig(m.Voters...),
		Outgoing: quorum.NewMajorityConfig(m.OutgoingVoters...),
	}
	reachable := map[uint64]bool{}
	for _, id := range jc.IDs() {
		if n.heardRecently(id) {
			reachable[id] = true
		}
	}
	if jc.VoteResult(reachable) != quorum.VoteWon {
		return fmt.Errorf("%w: voters %v (outgoing %v), heard from %v",
			ErrQuorumUnreachable, m.Voters, m.OutgoingVoters, sortedKeys(reachable))
	}
	return nil
}

func sortedKeys(set map[uint64]bool) []uint64 {
	ids := make([]uint64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	return quorum.NewMajorityConfig(ids...)
}

// appendConfChange appends cc as the leader's next entry, counting it
// against MaxUncommittedBytes like a proposal.
func (n *Node) appendConfChange(cc ConfChange) (uint64, error) {
	data := cc.Marshal()
	size := uint64(len(data)) + entryOverheadBytes
	if err := n.checkUncommitted(size); err != nil {
		return 0, err
	}
	last := n.log.lastIndex()
	if last >= MaxIndex {
		return 0, ErrIndexExhausted
	}
	n.log.append(Entry{Index: last + 1, Term: n.term, Type: EntryConfChange, Data: data})
	n.trackUncommitted(last+1, size)
	n.pendingConfIndex = last + 1
	return last + 1, nil
}

// activateConfChanges activates the configuration entries among ents, the
// committed entries being handed out in a Ready, in log order. An entry
// that does not decode or apply is skipped and counted: every replica
// skips it alike, so none diverges, and none stops.
func (n *Node) activateConfChanges(ents []Entry) {
	changed := false
	for i := range ents {
		e := &ents[i]
		if e.Index <= n.confScanned {
			continue // activated when New read it back
		}
		n.confScanned = e.Index
		if e.Type != EntryConfChange {
			continue
		}
		next, err := applyConfEntry(n.membership, e)
		if err != nil {
			n.counters.InvalidConfChanges++
			continue
		}
		n.confIndex = e.Index
		n.setMembership(next)
		changed = true
	}
	if changed {
		n.maybeHandOver()
		if (n.role == RoleCandidate || n.role == RolePreCandidate) && !n.voters.Contains(n.id) {
			// Our own removal or demotion became active mid-campaign
			// (its commit can arrive with a vote response): stop
			// campaigning; a non-voter never leads.
			n.becomeFollower(n.term, None)
		}
	}
	// A new leader's election no-op may be what just became active.
	n.maybeLeaveJoint()
}

// maybeLeaveJoint proposes the exit from a joint configuration once it is
// active on the leader and nothing else is pending (design §2). If the
// append is refused (uncommitted bytes full, a transfer under way) the
// next tick tries again.
func (n *Node) maybeLeaveJoint() {
	if n.role != RoleLeader || !n.membership.IsJoint() || n.pendingConfIndex > n.confScanned ||
		n.leadTransferee != None {
		return
	}
	_, _ = n.appendConfChange(ConfChange{LeaveJoint: true})
}

// outOfConfig reports whether this node, leading, is not a voter of an
// active non-joint configuration: it must hand over (thesis §4.2.2).
// While joint it keeps leading even if only in the outgoing half.
func (n *Node) outOfConfig() bool {
	return !n.membership.IsJoint() && !n.voters.Contains(n.id)
}

// maybeHandOver, on a leader that is not a voter of the active
// configuration, transfers leadership to the most caught-up voter it
// heard from recently (any voter if none; lowest ID on a tie).
//
// It does not step down once the transfer is sent: it keeps leading —
// refusing proposals, since a transfer is always under way, and retrying
// the transfer when one times out — until a leader of a later term
// appears (the target's election, or a reply from a node that dropped its
// messages), or CheckQuorum finds it cut off. It may be the only node that
// knows C_new committed: a voter of C_new that has not learned it still
// counts C_old, and if C_old's quorum needs this node, which as a removed
// member never campaigns and may hold a longer log, going passive at once
// would strand that voter (core/sim found it). Its heartbeats carry the
// commit index to it; once passive, its vote responses do (commit hint).
func (n *Node) maybeHandOver() {
	if n.role != RoleLeader || !n.outOfConfig() || n.leadTransferee != None {
		return
	}
	best, bestHeard := None, false
	for _, id := range n.membership.Voters {
		pr := n.progress[id]
		if pr == nil {
			continue
		}
		heard := n.heardRecently(id)
		if best == None || (heard && !bestHeard) || (heard == bestHeard && pr.Match > n.progress[best].Match) {
			best, bestHeard = id, heard
		}
	}
	if best != None {
		_ = n.transferLeadership(best)
	}
}
