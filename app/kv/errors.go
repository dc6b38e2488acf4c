package kv

import (
	"errors"
	"fmt"
)

// Errors the state machine reports. Use errors.Is: a command's failure is
// returned as a *CommandError result wrapping one of the first three.
var (
	// ErrCorruptCommand: the command's bytes are not a valid encoding of
	// kvpb.Command (truncated, unknown or repeated field, wrong wire
	// type). It changed nothing.
	ErrCorruptCommand = errors.New("kv: corrupt command")

	// ErrInvalidCommand: the command decodes but breaks a rule every
	// member enforces the same way (empty key, range_end not after key,
	// unknown comparison, ...). It changed nothing.
	ErrInvalidCommand = errors.New("kv: invalid command")

	// ErrAlreadyApplied: the command's log index is at or below the
	// store's applied index, so its effects are already recorded; it was
	// skipped. The driver re-delivers such commands after a restart only
	// if it was given a lower Applied(), which it never is; the check
	// keeps apply exactly-once regardless.
	ErrAlreadyApplied = errors.New("kv: command already applied")

	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("kv: store closed")
)

// CommandError is the result (not the error) Apply returns for a command
// that had no effect: corrupt, invalid or already applied. It is a result
// because it is deterministic: every member reaches the same verdict for
// the same command, so the replicas stay identical.
type CommandError struct {
	// Index is the command's Raft log index.
	Index uint64
	// Err wraps ErrCorruptCommand, ErrInvalidCommand or ErrAlreadyApplied.
	Err error
}

// Error describes the command and why it had no effect.
func (e *CommandError) Error() string {
	return fmt.Sprintf("kv: command at index %d: %v", e.Index, e.Err)
}

// Unwrap returns Err.
func (e *CommandError) Unwrap() error { return e.Err }

// ruleError is a validation failure: its text describes the rule broken
// (it is shown to clients as is), and it matches ErrInvalidCommand.
type ruleError struct{ msg string }

func (e *ruleError) Error() string        { return e.msg }
func (e *ruleError) Is(target error) bool { return target == ErrInvalidCommand }

func invalidf(format string, args ...any) error {
	return &ruleError{msg: fmt.Sprintf(format, args...)}
}

// wireError is a decoding failure; it matches ErrCorruptCommand.
type wireError struct{ msg string }

func (e *wireError) Error() string        { return "malformed encoding: " + e.msg }
func (e *wireError) Is(target error) bool { return target == ErrCorruptCommand }

func corruptf(format string, args ...any) error {
	return &wireError{msg: fmt.Sprintf(format, args...)}
}
