package kv

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// How driver and store errors become gRPC statuses. The contract for
// clients (also in doc.go):
//
//   - InvalidArgument: the request is malformed or over a limit; nothing
//     was proposed or changed. Do not retry unchanged.
//   - Unavailable: the request was not carried out (no leader, leader
//     change, overload, member stopping, linearizable read impossible
//     now). A write under Unavailable was certainly not applied: retrying
//     is safe.
//   - Aborted: a write's outcome is unknown: it reached the Raft log but
//     was not seen applied before the member gave up (it was stopping). It
//     may or may not have been applied; read back before retrying a
//     non-idempotent write.
//   - DeadlineExceeded / Canceled: the caller's deadline passed or it
//     cancelled. For a write the message says whether it was submitted
//     (then, as with Aborted, the outcome is unknown) or not.
//   - Internal: a bug or a damaged store.

// unknownOutcome is the sentence every outcome-unknown status carries.
const unknownOutcome = "the write may or may not have been applied; read it back before retrying a non-idempotent write"

// writeStatus maps an error of driver.Node.Propose.
func writeStatus(err error) error {
	switch {
	case errors.Is(err, driver.ErrOutcomeUnknown):
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return status.Errorf(codes.DeadlineExceeded, "deadline exceeded before the write was confirmed: outcome unknown: %s (%v)", unknownOutcome, err)
		case errors.Is(err, context.Canceled):
			return status.Errorf(codes.Canceled, "request cancelled before the write was confirmed: outcome unknown: %s (%v)", unknownOutcome, err)
		}
		return status.Errorf(codes.Aborted, "outcome unknown: %s (%v)", unknownOutcome, err)
	case errors.Is(err, driver.ErrProposalDropped):
		if errors.Is(err, core.ErrProposalTooLarge) {
			return status.Errorf(codes.InvalidArgument,
				"invalid request: too large for the Raft proposal limit (driver MaxProposalBytes must be at least Limits.MaxProposalBytes): %v", err)
		}
		return status.Errorf(codes.Unavailable, "write not applied, safe to retry: %v", err)
	case errors.Is(err, driver.ErrBusy):
		return status.Errorf(codes.Unavailable, "write not applied, member overloaded; retry with backoff: %v", err)
	case errors.Is(err, driver.ErrStopped):
		return status.Errorf(codes.Unavailable, "write not applied, member stopping: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		// Not submitted: the driver reports submitted ones as outcome
		// unknown, above.
		return status.Errorf(codes.DeadlineExceeded, "deadline exceeded before the write was submitted; it was not applied: %v", err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "request cancelled before the write was submitted; it was not applied: %v", err)
	}
	return status.Errorf(codes.Internal, "write failed: %v", err)
}

// readStatus maps an error of driver.Node.Read.
func readStatus(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "deadline exceeded waiting for a linearizable read: %v", err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "cancelled waiting for a linearizable read: %v", err)
	case errors.Is(err, driver.ErrBusy), errors.Is(err, driver.ErrStopped),
		errors.Is(err, core.ErrNoLeader), errors.Is(err, core.ErrStepDown),
		errors.Is(err, core.ErrLeaderNotReady), errors.As(err, new(*core.NotLeaderError)):
		return status.Errorf(codes.Unavailable, "linearizable read not possible now; retry, or ask for a serializable read: %v", err)
	}
	return status.Errorf(codes.Internal, "linearizable read failed: %v", err)
}

// storeStatus maps an error of a local store read or of a command result.
func storeStatus(err error) error {
	switch {
	case errors.Is(err, ErrClosed):
		return status.Errorf(codes.Unavailable, "member stopping: %v", err)
	case errors.Is(err, ErrInvalidCommand), errors.Is(err, ErrCorruptCommand):
		return status.Errorf(codes.InvalidArgument, "invalid request: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%v", err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%v", err)
	}
	return status.Errorf(codes.Internal, "store: %v", err)
}

// invalidStatus reports a request that breaks a rule or a limit.
func invalidStatus(err error) error {
	return status.Errorf(codes.InvalidArgument, "invalid request: %v", err)
}

// unexpectedResult reports a state-machine result of the wrong type: a
// bug, since the command decides the result type.
func unexpectedResult(res any) error {
	return status.Error(codes.Internal, fmt.Sprintf("state machine returned %T", res))
}
