package core

import "errors"

// ErrCompacted is returned by a LogReader when the requested index lies at
// or below the snapshot, so the entry is no longer available.
var ErrCompacted = errors.New("raft log: requested index is compacted")

// ErrUnavailable is returned by a LogReader when the requested index lies
// beyond the last stored entry.
var ErrUnavailable = errors.New("raft log: requested index is not yet stored")

// LogReader is the read-only view of the durable log that the core
// consumes. disk implements it; tests use memlog. The core never writes
// through it: it asks the driver to persist via Ready and learns what became
// durable via Advance (or AckPersisted with AsyncStorageWrites).
//
// Invariants a LogReader keeps:
//   - Entries (FirstIndex ..= LastIndex) are contiguous; FirstIndex-1 is the
//     compaction point: the index of the latest snapshot the log was
//     compacted to or installed (0 if none), and Term(FirstIndex-1)
//     returns its term. It is never beyond FirstIndex-1: a snapshot with
//     data taken later (to send to a follower) is the driver's business,
//     not the log's. When a follower needs entries at or below it, the
//     core emits a MsgSnap naming it; the driver may send any snapshot at
//     or above it instead (the follower's acknowledgement of that index
//     completes the transfer).
//   - A LogReader reflects only durable state: an entry is visible once the
//     Save that wrote it has returned.
//   - Returned slices are never modified afterwards by the LogReader.
//
// Any error other than ErrCompacted or ErrUnavailable is treated as a
// storage failure: the core stops and reports it from every call.
type LogReader interface {
	// InitialState returns the persisted hard state and the metadata of
	// the compaction point, FirstIndex-1 (zero if none): its index, term
	// and the membership in force there.
	InitialState() (HardState, SnapshotMeta, error)
	// FirstIndex returns the index of the first available entry.
	FirstIndex() (uint64, error)
	// LastIndex returns the index of the last stored entry (the snapshot
	// index when the log is empty).
	LastIndex() (uint64, error)
	// Term returns the term of entry i, for FirstIndex-1 <= i <= LastIndex.
	Term(i uint64) (uint64, error)
	// Entries returns entries [lo, hi), stopping early once maxBytes
	// would be exceeded; at least one entry is returned if lo < hi.
	Entries(lo, hi, maxBytes uint64) ([]Entry, error)
}
