package driver

import "io"

// Command is one committed command handed to the state machine.
type Command struct {
	// Index is the command's Raft log index. Indexes increase strictly
	// across calls to Apply; gaps are no-op entries the driver skipped.
	Index uint64
	// Data is the command exactly as passed to Propose (without the
	// driver's envelope). It is shared with the Raft log: read it, keep
	// it if you like, but never modify it.
	Data []byte
}

// StateMachine is what the embedder implements: the replicated
// application. The driver calls it from its loop goroutine only, never
// concurrently with itself, so implementations need no locking for calls
// made by the driver (they do for their own readers). Because the loop
// waits for these calls, they must not call back into the Node's waiting
// methods (Propose, Read, TransferLeadership, WaitLeader, Stop): that
// would deadlock. While Apply runs, the node neither ticks nor persists,
// so keep it short; a slow Apply delays heartbeats like a slow disk.
type StateMachine interface {
	// Applied returns the index of the last command whose effects the
	// state machine has durably recorded (0 for a fresh one). The driver
	// calls it once, in Start, and re-delivers every committed command
	// after it. Recording the index in the same atomic write as the
	// command's effects makes apply exactly-once across crashes (design
	// §3 rule 3); returning 0 from an in-memory state machine simply
	// replays the whole log.
	Applied() (uint64, error)

	// Apply applies cmds in order and returns exactly one result per
	// command; result i is returned from the Propose call that proposed
	// cmds[i] if that call was made on this node and still waits. Results
	// are typically values, or errors the application wants to report
	// (a failed precondition is a result, not a failure of Apply).
	//
	// A non-nil error means the state machine can no longer be trusted:
	// the node stops, and the error is reported by Node.Err. Entries the
	// driver proposed as no-ops (empty commands, such as the one a new
	// leader appends) are not passed; their index is nevertheless
	// applied.
	Apply(cmds []Command) ([]any, error)

	// Snapshot writes the state machine's state as of the last applied
	// command to w. It is called from the loop goroutine between Apply
	// calls; an implementation that takes long should capture a
	// point-in-time view (e.g. a Pebble snapshot) and stream it. Reserved
	// for log compaction; the driver does not call it yet.
	Snapshot(w io.Writer) error

	// Restore replaces the state machine's entire state with a snapshot
	// produced by Snapshot (possibly on another node). Reserved for
	// snapshot installation; the driver does not call it yet.
	Restore(r io.Reader) error
}
