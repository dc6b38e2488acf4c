package driver

import "io"

// Command is one committed command handed to the state machine.
type Command struct {
	// Index is the command's Raft log index. Indexes increase strictly
	// across calls to Apply; gaps are no-op entries and membership changes
	// (core.EntryConfChange), which the driver handles itself.
	Index uint64
	// Data is the command exactly as passed to Propose (without the
	// driver's envelope). It is shared with the Raft log: read it, keep
	// it if you like, but never modify it.
	Data []byte
}

// StateMachine is what the embedder implements: the replicated
// application. The driver never calls it concurrently with itself: Apply
// runs on the driver's applier goroutine, and Snapshot and Restore on its
// loop goroutine while the applier is idle (it has applied everything
// handed to it and is given nothing more until they return). So
// implementations need no locking for calls made by the driver (they do
// for their own readers). These calls must not call back into the Node's
// waiting methods (Propose, Read, TransferLeadership, WaitLeader, Stop):
// that would deadlock.
//
// A slow Apply delays neither heartbeats nor the replication and
// persistence of new entries: the loop goes on while it runs, and only
// stops handing out committed entries once Config.MaxApplyQueueBytes of
// them wait to be applied. It does delay the results of proposals and
// reads (which wait for the state machine), and Snapshot and Restore,
// which wait for it to finish.
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
	// leader appends) and membership changes are not passed; their index
	// is nevertheless applied (a state machine that records the index of
	// the last command it saw reports a lower Applied after a restart,
	// and is then re-delivered only the commands after it).
	Apply(cmds []Command) ([]any, error)

	// Snapshot captures the state as of the last applied command and
	// returns a source that streams it. It is called from the loop
	// goroutine with the applier idle (through the driver's
	// withStateMachine): periodically for a state machine without Syncer,
	// and when a follower needs a snapshot or a backup is taken. It must be
	// quick (the loop waits for it): capture a point-in-time view (a
	// Pebble snapshot, a copy-on-write reference, or a copy of small
	// state) and leave the streaming to the source. The
	// driver then calls the source's WriteTo from another goroutine,
	// concurrently with later Apply calls (and possibly Restore), and
	// Close once, when done or abandoned.
	Snapshot() (SnapshotSource, error)

	// Restore replaces the state machine's entire state with a snapshot
	// streamed by a SnapshotSource (possibly on another node). It must
	// not change the state if it fails before the end of r (verify, then
	// replace), and when it returns nil the new state must be as durable
	// as applied commands are (a state machine whose Applied survives a
	// restart must report the snapshot's index, or at least the index of
	// its last command, after one). The driver calls it from the loop
	// goroutine, the applier idle: when installing a snapshot received
	// from the leader, and in Start when the log no longer holds what the
	// state machine lacks (an in-memory state machine after a restart, or
	// an install a crash interrupted).
	Restore(r io.Reader) error
}

// SnapshotSource streams a state captured by StateMachine.Snapshot.
type SnapshotSource interface {
	// WriteTo writes the captured state to w and returns the bytes
	// written. The driver calls it at most once, from its own goroutine;
	// an error from w (the driver's cancellation included) must end it
	// promptly.
	io.WriterTo
	// Close releases the captured view. Called exactly once, after WriteTo
	// returned or instead of it.
	io.Closer
}

// Syncer is implemented by a StateMachine whose Apply does not make its
// effects durable on return (app/kv.Store writes without fsync, since the
// Raft log is the write-ahead log). Every SnapshotEntries entries or
// SnapshotBytes bytes applied the driver calls Sync, on a goroutine of its
// own and possibly concurrently with Apply and Restore; it must make every
// command applied so far durable and return an applied index all of whose
// effects are durable. The log is compacted to at most that index (a
// margin below it) and no snapshot data is written: a snapshot is captured
// (Snapshot) only when a follower needs one or a backup is taken.
// A state machine without Sync is taken to be either durable on return or
// in memory (Applied 0), in which case Start restores it from the latest
// snapshot.
type Syncer interface {
	Sync() (uint64, error)
}
