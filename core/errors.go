package core

import (
	"errors"
	"fmt"
)

// Errors a caller can act on. Use errors.Is; NotLeaderError also carries
// the leader hint.
var (
	// ErrNoLeader: no leader is known; retry after an election.
	ErrNoLeader = errors.New("raft: no leader known")
	// ErrTransferInProgress: the leader is handing leadership over and
	// accepts no proposals until the transfer ends.
	ErrTransferInProgress = errors.New("raft: leadership transfer in progress")
	// ErrTooManyUncommitted: the leader's uncommitted log exceeds
	// Config.MaxUncommittedBytes; retry once the backlog commits.
	ErrTooManyUncommitted = errors.New("raft: too many uncommitted bytes")
	// ErrProposalTooLarge: one proposal exceeds Config.MaxUncommittedBytes
	// and could never be accepted.
	ErrProposalTooLarge = errors.New("raft: proposal larger than the uncommitted limit")
	// ErrLearner: a learner cannot lead, campaign or be a transfer target.
	ErrLearner = errors.New("raft: node is a learner")
	// ErrUnknownNode: the named node is not a member.
	ErrUnknownNode = errors.New("raft: node is not a member")
	// ErrLeaderNotReady: the leader has not yet committed an entry in its
	// term, so it cannot answer reads yet (thesis §6.4); retry shortly.
	ErrLeaderNotReady = errors.New("raft: leader has not committed in its term yet")
	// ErrStepDown: the node stopped being leader before the request
	// finished; its outcome is decided by the new leader.
	ErrStepDown = errors.New("raft: leader stepped down")
	// ErrInvalidMessage wraps every rejection of a malformed message.
	ErrInvalidMessage = errors.New("raft: invalid message")
	// ErrReadyNotAdvanced: Ready was called again before Advance.
	ErrReadyNotAdvanced = errors.New("raft: previous Ready not yet advanced")
)

// NotLeaderError is returned when a request must go to the leader. Leader
// is None when no leader is known.
type NotLeaderError struct{ Leader uint64 }

func (e *NotLeaderError) Error() string {
	if e.Leader == None {
		return "raft: not leader, no leader known"
	}
	return fmt.Sprintf("raft: not leader, leader is %d", e.Leader)
}

// Is makes errors.Is(err, ErrNoLeader) true when no leader is known.
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNoLeader && e.Leader == None
}

// StorageError wraps a failure of the LogReader. Once returned, the node
// is stopped: every later call returns the same error.
type StorageError struct{ Err error }

func (e *StorageError) Error() string { return "raft: storage failure: " + e.Err.Error() }
func (e *StorageError) Unwrap() error { return e.Err }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidMessage}, args...)...)
}
