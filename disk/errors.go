package disk

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is; every error this package
// returns wraps one of these or an operating-system error, with context.
var (
	// ErrClosed is returned by every method of a closed Store.
	ErrClosed = errors.New("disk: store is closed")
	// ErrLocked is returned by Open when another Store, in this process or
	// another, holds the data directory.
	ErrLocked = errors.New("disk: data directory is locked")
	// ErrCorrupt is wrapped by every CorruptionError: stored data failed a
	// checksum or a consistency check and was not silently skipped.
	ErrCorrupt = errors.New("disk: corrupt data")
	// ErrFormatVersion is returned by Open when a WAL segment was written
	// in a format this build does not read (the error names the file).
	// Version 1, before issue 13, cannot be recovered safely after a
	// power loss, so it is not migrated: move the data directory aside
	// and let the node catch up from its peers (or restore a backup).
	ErrFormatVersion = errors.New("disk: unsupported WAL format version")
	// ErrTooLarge is returned when a record or a Save exceeds the limits in
	// Options (MaxRecordBytes, MaxBatchBytes).
	ErrTooLarge = errors.New("disk: exceeds configured limit")
	// ErrInvalidArgument is returned when a caller breaks a documented
	// precondition (non-contiguous entries, a gap after the last index,
	// an outdated snapshot, Compact above the snapshot).
	ErrInvalidArgument = errors.New("disk: invalid argument")
	// ErrNoSnapshot is returned by SnapshotStore.OpenLatest when the
	// directory holds no snapshot file at all.
	ErrNoSnapshot = errors.New("disk: no snapshot")
	// ErrFailed wraps the write or sync error that stopped the Store from
	// accepting writes. After a failed fdatasync the kernel may have dropped
	// the dirty pages, so retrying could report data durable that is not;
	// the only safe recovery is to close and reopen (recovery rereads what
	// really reached the disk).
	ErrFailed = errors.New("disk: store failed and accepts no more writes")
)

// CorruptionError reports stored bytes that cannot be trusted: it names the
// file and the byte offset of the record (or snapshot section) at fault.
// It matches ErrCorrupt with errors.Is.
type CorruptionError struct {
	File   string // path of the damaged file
	Offset int64  // byte offset of the damaged record within File
	Reason string // what check failed
	Err    error  // underlying cause, if any
}

// Error names the file, the offset and the failed check.
func (e *CorruptionError) Error() string {
	s := fmt.Sprintf("disk: corrupt data in %s at offset %d: %s", e.File, e.Offset, e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrCorrupt) true for every CorruptionError.
func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// Unwrap returns the underlying cause.
func (e *CorruptionError) Unwrap() error { return e.Err }

func corruptf(file string, off int64, format string, args ...any) *CorruptionError {
	return &CorruptionError{File: file, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
