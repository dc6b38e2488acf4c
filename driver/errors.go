package driver

import (
	"errors"
	"fmt"

	"github.com/rafty-db/rafty/core"
)

// Errors a caller can act on. Use errors.Is; the reasons inside
// DroppedError are the core's sentinels (core.ErrNoLeader,
// core.ErrTransferInProgress, core.ErrTooManyUncommitted,
// core.ErrProposalTooLarge, core.ErrStepDown), the driver's
// (ErrInvalidProposal, ErrLeaderBusy), or a *core.NotLeaderError
// carrying the leader hint, reachable with errors.Is / errors.As.
var (
	// ErrStopped: the node has stopped (Stop, context cancelled, or a fatal
	// storage or state-machine error; Node.Err says which). Give up on
	// this node.
	ErrStopped = errors.New("driver: node stopped")

	// ErrBusy: the node already holds Config.MaxPendingProposals proposals
	// or Config.MaxPendingReads reads. Nothing was submitted; back off and
	// retry.
	ErrBusy = errors.New("driver: too many pending requests")

	// ErrProposalDropped: the proposal was refused and will never be
	// applied (no leader, not leader, transfer in progress, too much
	// uncommitted data, too large, or another entry was committed at its
	// index). Retrying is safe. The concrete error is a *DroppedError
	// whose Reason says why.
	ErrProposalDropped = errors.New("driver: proposal dropped")

	// ErrOutcomeUnknown: the proposal reached the Raft log (locally or
	// forwarded to a leader) but had not been applied on this node when
	// the caller stopped waiting (context done or node stopped). It may
	// still be committed and applied later, or never. Retry only if the
	// command is idempotent, or read back to find out. The concrete error
	// is an *OutcomeUnknownError whose Cause is the context error or
	// ErrStopped.
	ErrOutcomeUnknown = errors.New("driver: proposal outcome unknown")

	// ErrInboxFull is returned by the MessageHandler when the inbound
	// queue (Config.InboxSize) is full: the batch was dropped and Raft
	// will retransmit. Transports count it; they must not retry in a loop.
	ErrInboxFull = errors.New("driver: inbox full, messages dropped")

	// ErrSnapshotUnsupported is returned by HandleSnapshot, and reported
	// for outgoing snapshots, when the node has no Config.Snapshots.
	ErrSnapshotUnsupported = errors.New("driver: snapshots are not configured (Config.Snapshots)")

	// ErrSnapshotCorrupt marks snapshot data that failed verification in
	// transit or on disk. Transports wrap it in the error a snapshot reader
	// returns when the sender's checksum does not match, so the handler
	// discards what it received instead of resuming from it.
	ErrSnapshotCorrupt = errors.New("driver: snapshot data corrupt")

	// ErrSnapshotNotNeeded is returned by HandleSnapshot when this node
	// already holds everything the snapshot covers; the leader learns its
	// position from the acknowledgement sent instead.
	ErrSnapshotNotNeeded = errors.New("driver: snapshot not needed, the log already covers it")

	// ErrSnapshotBusy is reported when a snapshot transfer cannot start
	// because another one with the same peer is still running.
	ErrSnapshotBusy = errors.New("driver: a snapshot transfer with this peer is in progress")

	// ErrCorruptEntry: entry data does not carry a valid proposal
	// envelope (too short, zero IDs, or a version this build does not
	// know). A forwarded proposal like that is refused (ErrInvalidProposal);
	// a committed entry like that is applied as a failed no-op on every
	// replica (counted in rafty_driver_undecodable_entries_total and
	// logged), never stopping the node: see envelope.go.
	ErrCorruptEntry = errors.New("driver: entry is not a valid proposal envelope")

	// ErrInvalidProposal: the proposal is malformed — its envelope does not
	// decode, it claims another proposer, or Config.ValidateCommand refused
	// its command — and was not appended. The reason of a *DroppedError,
	// so errors.Is(err, ErrProposalDropped) holds too. Retrying the same
	// bytes fails the same way.
	ErrInvalidProposal = errors.New("driver: malformed proposal refused")

	// ErrLeaderBusy: the leader's inbox was full when a forwarded
	// proposal reached it, so it dropped the proposal unread and said so
	// at once. The reason of a *DroppedError; retrying is safe.
	ErrLeaderBusy = errors.New("driver: leader's inbox full, forwarded proposal dropped")
)

// DroppedError reports a proposal that will never be applied, with the
// reason. errors.Is(err, ErrProposalDropped) is true, and Unwrap yields the
// reason so errors.Is(err, core.ErrNoLeader) and errors.As(err,
// **core.NotLeaderError) work.
type DroppedError struct {
	Reason error
}

// Error describes the refusal and its reason.
func (e *DroppedError) Error() string { return "driver: proposal dropped: " + e.Reason.Error() }

// Is makes errors.Is(err, ErrProposalDropped) true.
func (e *DroppedError) Is(target error) bool { return target == ErrProposalDropped }

// Unwrap returns the reason.
func (e *DroppedError) Unwrap() error { return e.Reason }

// OutcomeUnknownError reports a proposal whose fate is unknown: it was
// handed to Raft but not seen applied before the caller stopped waiting.
// errors.Is(err, ErrOutcomeUnknown) is true; Cause (the context's error or
// ErrStopped) is reachable through Unwrap, so errors.Is(err,
// context.DeadlineExceeded) also holds after a deadline.
type OutcomeUnknownError struct {
	Cause error
}

// Error says the proposal may still be applied, and why the caller
// stopped waiting.
func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("driver: proposal outcome unknown (it may still be applied): %v", e.Cause)
}

// Is makes errors.Is(err, ErrOutcomeUnknown) true.
func (e *OutcomeUnknownError) Is(target error) bool { return target == ErrOutcomeUnknown }

// Unwrap returns the cause.
func (e *OutcomeUnknownError) Unwrap() error { return e.Cause }

// stoppedError wraps the reason the node stopped, when there is one, so
// callers see both ErrStopped and, e.g., the storage failure.
func stoppedError(cause error) error {
	if cause == nil {
		return ErrStopped
	}
	return fmt.Errorf("%w: %w", ErrStopped, cause)
}

// tooLargeError refuses a proposal for a size limit of the driver's own;
// it matches core.ErrProposalTooLarge, with a message that names the limit.
type tooLargeError struct{ msg string }

func (e *tooLargeError) Error() string { return e.msg }

// Is makes errors.Is(err, core.ErrProposalTooLarge) true.
func (e *tooLargeError) Is(target error) bool { return target == core.ErrProposalTooLarge }
