package core

import "errors"

// ProposeConfChange proposes a membership change on the leader and
// returns the index of its entry. The change is active once that entry is
// handed out in Ready.CommittedEntries. Errors: *NotLeaderError on a
// follower, and the membership errors of membership.go.
//
// TODO(membership): being implemented on branch core-membership.
func (n *Node) ProposeConfChange(cc ConfChange) (uint64, error) {
	return 0, errors.New("raft: membership changes are not implemented yet")
}
