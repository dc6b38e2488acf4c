package core

// TransferLeadership hands leadership to node to (thesis §3.10). The leader
// stops accepting proposals, brings the target's log up to date, then sends
// it MsgTimeoutNow so it campaigns at once. If the target has not taken over
// within an election timeout the transfer is abandoned and proposals resume.
// On a follower the request is forwarded to the leader.
func (n *Node) TransferLeadership(to uint64) error {
	if n.err != nil {
		return n.err
	}
	if n.role == RoleLeader {
		return n.transferLeadership(to)
	}
	if n.lead == None {
		return ErrNoLeader
	}
	if !n.membership.Contains(to) {
		return ErrUnknownNode
	}
	n.send(Message{Type: MsgTransferLeader, To: n.lead, Context: to})
	return nil
}

func (n *Node) transferLeadership(to uint64) error {
	if to == n.id {
		return nil // already leader
	}
	pr, ok := n.progress[to]
	if !ok {
		return ErrUnknownNode
	}
	if pr.IsLearner {
		return ErrLearner
	}
	if n.leadTransferee == to {
		return nil // already under way
	}
	n.abortTransfer()
	n.leadTransferee = to
	// The transfer gets one election timeout to complete (Tick aborts it).
	n.electionElapsed = 0
	if pr.Match == n.log.lastIndex() {
		n.sendTimeoutNow(to)
		return nil
	}
	n.sendAppend(to, true)
	return nil
}

// abortTransfer abandons a transfer. A MsgTimeoutNow already sent may
// still arrive and make the target campaign, which is why sending it ended
// the read lease for good in this term.
func (n *Node) abortTransfer() { n.leadTransferee = None }

// sendTimeoutNow tells the transfer target to campaign at once. Followers
// grant that campaign's votes even inside their vote lease, so this
// leader's read lease ends here, for the rest of the term (reads.go).
func (n *Node) sendTimeoutNow(to uint64) {
	n.revokeLease()
	n.send(Message{Type: MsgTimeoutNow, To: to})
}
