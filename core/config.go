package core

import (
	"errors"
	"fmt"
)

// ReadMode selects how the leader confirms it may answer a read.
type ReadMode uint8

const (
	// ReadSafe confirms leadership with a heartbeat round for every batch
	// of reads (ReadIndex, thesis §6.4). Correct under any clock behaviour.
	ReadSafe ReadMode = iota
	// ReadLease answers from the leader's lease (thesis §6.4.1) when it is
	// held, saving the heartbeat round. It requires CheckQuorum and relies
	// on a clock assumption: over any stretch of real time that one node's
	// clock measures as ElectionTicks-1 ticks, every other node's clock
	// advances at least ElectionTicks-1-MaxClockDriftTicks ticks. A node
	// whose clock stalls or jumps (a paused VM, a stopped process) breaks
	// it. See reads.go for the argument.
	ReadLease
)

func (m ReadMode) String() string {
	switch m {
	case ReadSafe:
		return "safe"
	case ReadLease:
		return "lease"
	}
	return fmt.Sprintf("ReadMode(%d)", uint8(m))
}

// Config holds a node's protocol settings. The zero value is not valid;
// start from DefaultConfig. Times are in ticks: the driver decides how long
// a tick is (100 ms by default).
type Config struct {
	// ID is this node's ID; non-zero.
	ID uint64
	// Membership is the bootstrap configuration: on empty storage New
	// writes it as entry 1 (see New); empty, the node is a joiner. Once
	// storage holds a configuration it is ignored (storage written before
	// the bootstrap entry existed falls back to it). Order does not matter.
	Membership Membership
	// Applied is the last index the state machine has durably applied;
	// committed entries at or below it are not handed out again.
	Applied uint64

	// ElectionTicks is the minimum election timeout E; each timeout is
	// drawn uniformly from [E, 2E) (paper §5.2).
	ElectionTicks int
	// HeartbeatTicks is the interval between leader heartbeats; it must
	// be less than ElectionTicks.
	HeartbeatTicks int
	// PreVote runs a pre-election that does not raise terms (thesis §9.6),
	// so a node returning from a partition cannot depose a healthy leader.
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum within an election timeout, and makes followers ignore votes
	// while they hear from a leader (thesis §4.2.3, §6.2).
	CheckQuorum bool
	// ReadMode selects ReadIndex confirmation; ReadLease needs CheckQuorum.
	ReadMode ReadMode
	// MaxClockDriftTicks is subtracted from the lease (ReadLease only): it
	// bounds how many ticks any node's clock may fall behind another's over
	// an election timeout (see ReadLease). The lease after a confirmed
	// heartbeat round lasts ElectionTicks-1-MaxClockDriftTicks ticks; the
	// one tick more is rounding, not drift. It must be in
	// [0, ElectionTicks), and in lease mode in [1, ElectionTicks-2].
	MaxClockDriftTicks int

	// MaxInflightMsgs bounds unacknowledged appends per follower in the
	// pipelined replicate state.
	MaxInflightMsgs int
	// MaxInflightBytes bounds unacknowledged entry bytes per follower.
	MaxInflightBytes uint64
	// MaxMsgBytes bounds the entry bytes of one append message (one entry
	// larger than this is still sent alone).
	MaxMsgBytes uint64
	// MaxUncommittedBytes bounds the leader's appended-but-uncommitted
	// entry bytes; proposals past it fail with ErrTooManyUncommitted.
	MaxUncommittedBytes uint64
	// MaxCommittedBytesPerReady bounds the committed entry bytes handed out
	// in one Ready (at least one entry is always handed out).
	MaxCommittedBytesPerReady uint64
	// MaxPendingReads bounds ReadIndex requests waiting for confirmation.
	MaxPendingReads int
	// MaxPromoteLagEntries is how far behind the leader's last index a
	// learner may be and still be promoted (ErrLearnerBehind otherwise).
	MaxPromoteLagEntries uint64

	// AsyncStorageWrites selects the asynchronous persistence contract
	// (see Ready): Advance only releases a Ready, durability is
	// acknowledged apart with AckPersisted and application with
	// AckApplied, so the driver can keep stepping messages and accepting
	// proposals while its disk writes run, and apply on a goroutine of
	// its own. The leader counts its own entries toward commitment only
	// once AckPersisted covers them. Off, Advance acknowledges everything
	// the Ready asked (the synchronous contract).
	AsyncStorageWrites bool
	// MaxApplyingBytes (AsyncStorageWrites only) bounds the bytes of
	// committed entries handed out in Readies and not yet acknowledged
	// by AckApplied: past it no further committed entries are handed out
	// until the driver's state machine catches up (back-pressure on a
	// slow apply). While under it, a Ready's committed entries fit in
	// what is left, except that at least one entry goes out: the bytes
	// outstanding may pass the limit by less than one entry.
	MaxApplyingBytes uint64

	// RandomSeed seeds the election-timeout randomisation. Use a
	// different seed per node (e.g. derived from ID and start time); the
	// simulator fixes it for replayability.
	RandomSeed uint64
}

// DefaultConfig returns the design defaults for node id: with a 100 ms
// tick, heartbeats every tick and election timeouts in [500 ms, 1 s).
func DefaultConfig(id uint64, voters ...uint64) Config {
	return Config{
		ID:                        id,
		Membership:                Membership{Voters: voters},
		ElectionTicks:             5,
		HeartbeatTicks:            1,
		PreVote:                   true,
		CheckQuorum:               true,
		ReadMode:                  ReadSafe,
		MaxClockDriftTicks:        1,
		MaxInflightMsgs:           256,
		MaxInflightBytes:          32 << 20,
		MaxMsgBytes:               1 << 20,
		MaxUncommittedBytes:       64 << 20,
		MaxCommittedBytesPerReady: 16 << 20,
		MaxPendingReads:           65536,
		MaxPromoteLagEntries:      1000,
		MaxApplyingBytes:          64 << 20,
		RandomSeed:                id,
	}
}

// FieldError is one problem Validate found, with the field it is about.
// Validate joins every problem it finds (errors.Join) and wraps them, so a
// caller finds them with FieldErrors or errors.As; driver.Config.Validate
// reports its problems the same way, the core's nested under its TuneRaft
// field. A program that fills a configuration from settings of its own
// (command-line flags, a file) maps Field to its setting instead of
// parsing messages, which may be reworded.
type FieldError struct {
	// Field is the field as Go spells it ("ElectionTicks"). A problem
	// between two fields is reported on the one whose value is judged:
	// "HeartbeatTicks (5) must be less than ElectionTicks (5)" is
	// HeartbeatTicks'. In what FieldErrors returns, nested fields are
	// joined with dots ("TuneRaft.ElectionTicks").
	Field string
	// Err is the problem. Its message names the fields it involves as Go
	// spells them, so that it reads on its own.
	Err error
}

// Error returns Err's message.
func (e *FieldError) Error() string {
	if e.Err == nil {
		return e.Field + " is invalid"
	}
	return e.Err.Error()
}

// Unwrap returns Err.
func (e *FieldError) Unwrap() error { return e.Err }

// FieldErrors flattens an error returned by Validate (or by
// driver.Config.Validate) into its problems, in order. Each has the path
// of the fields it is nested under as its Field and the innermost problem
// as its Err; an error that names no field is returned with Field "".
// nil gives nil.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(err error, path string)
	walk = func(err error, path string) {
		if err == nil {
			return
		}
		if !hasFieldError(err) {
			out = append(out, &FieldError{Field: path, Err: err})
			return
		}
		switch e := err.(type) {
		case *FieldError:
			if path != "" {
				path += "."
			}
			path += e.Field
			if !hasFieldError(e.Err) {
				out = append(out, &FieldError{Field: path, Err: e.Err})
				return
			}
			walk(e.Err, path)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner, path)
			}
		case interface{ Unwrap() error }:
			// A wrapper such as "invalid raft config: %w": the fields
			// say where the problems come from.
			walk(e.Unwrap(), path)
		default:
			out = append(out, &FieldError{Field: path, Err: err})
		}
	}
	walk(err, "")
	return out
}

// hasFieldError reports whether err is or wraps a *FieldError.
func hasFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// Validate reports every problem with c, joined, each a *FieldError (see
// FieldErrors).
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, args...)})
	}
	if c.ID == None {
		bad("ID", "ID must be non-zero")
	}
	if c.ElectionTicks < 2 {
		bad("ElectionTicks", "ElectionTicks must be at least 2, got %d", c.ElectionTicks)
	}
	if c.HeartbeatTicks < 1 {
		bad("HeartbeatTicks", "HeartbeatTicks must be at least 1, got %d", c.HeartbeatTicks)
	} else if c.ElectionTicks >= 2 && c.HeartbeatTicks >= c.ElectionTicks {
		// Only once both are valid on their own: one mistake, one line.
		bad("HeartbeatTicks", "HeartbeatTicks (%d) must be less than ElectionTicks (%d)", c.HeartbeatTicks, c.ElectionTicks)
	}
	switch c.ReadMode {
	case ReadSafe:
		// Unused without the lease, but a drift of a whole election
		// timeout or more (or below zero) is a slip that would surface
		// only when the lease is turned on.
		if c.MaxClockDriftTicks < 0 || c.ElectionTicks >= 2 && c.MaxClockDriftTicks >= c.ElectionTicks {
			bad("MaxClockDriftTicks", "MaxClockDriftTicks must be in [0, ElectionTicks), got %d", c.MaxClockDriftTicks)
		}
	case ReadLease:
		if !c.CheckQuorum {
			bad("ReadMode", "ReadMode lease requires CheckQuorum")
		}
		// The lease argument in reads.go needs D >= 1 (no two real clocks
		// tick at exactly the same rate) and a lease of E-1-D >= 1 ticks.
		if c.MaxClockDriftTicks < 1 {
			bad("MaxClockDriftTicks", "ReadMode lease requires MaxClockDriftTicks of at least 1 (no two clocks tick at exactly the same rate), got %d", c.MaxClockDriftTicks)
		} else if c.ElectionTicks >= 2 && c.MaxClockDriftTicks > c.ElectionTicks-2 {
			bad("MaxClockDriftTicks", "ReadMode lease requires MaxClockDriftTicks (%d) at most ElectionTicks - 2 (%d): the lease lasts ElectionTicks - 1 - MaxClockDriftTicks ticks",
				c.MaxClockDriftTicks, c.ElectionTicks-2)
		}
	default:
		bad("ReadMode", "unknown ReadMode %d", c.ReadMode)
	}
	if c.MaxInflightMsgs < 1 {
		bad("MaxInflightMsgs", "MaxInflightMsgs must be at least 1, got %d", c.MaxInflightMsgs)
	}
	if c.MaxInflightBytes == 0 {
		bad("MaxInflightBytes", "MaxInflightBytes must be non-zero")
	}
	if c.MaxMsgBytes == 0 {
		bad("MaxMsgBytes", "MaxMsgBytes must be non-zero")
	}
	if c.MaxInflightBytes != 0 && c.MaxMsgBytes > c.MaxInflightBytes {
		bad("MaxMsgBytes", "MaxMsgBytes (%d) must not exceed MaxInflightBytes (%d)", c.MaxMsgBytes, c.MaxInflightBytes)
	}
	if c.MaxUncommittedBytes == 0 {
		bad("MaxUncommittedBytes", "MaxUncommittedBytes must be non-zero")
	}
	if c.MaxCommittedBytesPerReady == 0 {
		bad("MaxCommittedBytesPerReady", "MaxCommittedBytesPerReady must be non-zero")
	}
	if c.MaxPendingReads < 1 {
		bad("MaxPendingReads", "MaxPendingReads must be at least 1, got %d", c.MaxPendingReads)
	}
	if c.AsyncStorageWrites && c.MaxApplyingBytes == 0 {
		bad("MaxApplyingBytes", "MaxApplyingBytes must be non-zero with AsyncStorageWrites")
	}
	if !c.Membership.IsEmpty() {
		// Order does not matter here: bootstrap writes the canonical form.
		if err := c.Membership.canonical().validate(); err != nil {
			bad("Membership", "bootstrap %v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid raft config: %w", errors.Join(errs...))
}
