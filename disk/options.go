package disk

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Defaults and bounds of Options. Every quantity the Store lets grow has a
// named limit here; the bounds keep segment offsets within uint32 (see
// chunk in log_index.go) and keep a corrupt length field from turning into
// a huge allocation.
const (
	// DefaultSegmentBytes is the default target size of a WAL segment.
	DefaultSegmentBytes = 64 << 20
	// MinSegmentBytes is the smallest SegmentBytes accepted.
	MinSegmentBytes = 4 << 10
	// MaxSegmentBytes is the largest SegmentBytes accepted.
	MaxSegmentBytes = 1 << 30

	// DefaultMaxRecordBytes is the default bound on one record's payload.
	DefaultMaxRecordBytes = 8 << 20
	// MinRecordBytes is the smallest MaxRecordBytes accepted: room for a
	// segment checkpoint with a small membership.
	MinRecordBytes = 256

	// DefaultMaxBatchBytes is the default bound on one group-commit write.
	DefaultMaxBatchBytes = 32 << 20
	// MaxMaxBatchBytes is the largest MaxBatchBytes accepted.
	MaxMaxBatchBytes = 1 << 30

	// DefaultCacheBytes is the default budget of the recent-entry cache.
	DefaultCacheBytes = 16 << 20

	// DefaultPreallocateBytes is the default chunk by which the active
	// segment file is extended with zeros ahead of the log.
	DefaultPreallocateBytes = 1 << 20
	// MinPreallocateBytes is the smallest nonzero PreallocateBytes
	// accepted (one page); PreallocateBytes must also be a multiple of it.
	MinPreallocateBytes = 4 << 10
	// MaxPreallocateBytes is the largest PreallocateBytes accepted.
	MaxPreallocateBytes = 64 << 20
)

// Options configures a Store. Start from DefaultOptions and change fields;
// Open rejects a zero Options with an error naming each bad field.
type Options struct {
	// SegmentBytes is the size at which the WAL moves to a new segment
	// file. A write is never split: a batch that does not fit in the
	// current segment starts a new one, and a batch larger than
	// SegmentBytes gets a segment of its own. Range
	// [MinSegmentBytes, MaxSegmentBytes].
	SegmentBytes int64

	// MaxRecordBytes bounds the payload of one record (the value of its
	// length field). An entry record's payload is EntryOverheadBytes plus
	// len(Data), so the largest entry Data is MaxRecordBytes -
	// EntryOverheadBytes. Recovery treats a length field above this as
	// damage; it must not be lowered below the size of records already
	// on disk. Range [MinRecordBytes, SegmentBytes].
	MaxRecordBytes int

	// MaxBatchBytes bounds one group-commit write (and so one Save): a
	// Save whose encoding is larger fails with ErrTooLarge, and concurrent
	// Saves stop merging into a batch once it would exceed this. Recovery
	// stages one batch's index updates, so this also bounds recovery
	// memory (about 24 bytes per entry of the largest batch). Must hold a
	// maximal record plus the batch framing, at most MaxMaxBatchBytes.
	MaxBatchBytes int

	// CacheBytes is the budget of the cache of recently saved entries,
	// counted as core.Entry.Size. 0 disables the cache. Entries beyond it
	// are read from the segment files.
	CacheBytes int64

	// PreallocateBytes is the chunk by which the active segment file is
	// extended with zero bytes ahead of the log. When a batch would end
	// past the zero-filled space, the file is extended to the next
	// multiple of PreallocateBytes (never past SegmentBytes, unless the
	// batch itself is) before the batch's fdatasync, which covers both.
	// Saves that land in already-zeroed space overwrite allocated blocks
	// without changing the file size, so their fdatasync commits no
	// metadata: on ext4 and similar file systems that avoids a journal
	// commit per Save. A batch of a quarter chunk or more is written
	// without zero fill: it is bound by bandwidth, and filling would write
	// the space twice. A sealed segment keeps its zero tail (at most one
	// chunk of disk space), past the log end its successor records. 0
	// disables preallocation (every Save then
	// extends the file). Otherwise a multiple of MinPreallocateBytes in
	// [MinPreallocateBytes, MaxPreallocateBytes].
	PreallocateBytes int64

	// FS is the file system every file of the Store (WAL segments, the
	// lock, snapshot files, directory syncs) goes through; nil means
	// vfs.Default, the operating system's. The same interface carries
	// Pebble's files, so one layer (a simulated power loss in tests, for
	// example) can sit under the WAL, the snapshots and the state
	// machine. Files must honour the vfs.File contract: SyncData makes
	// written data durable, WriteAt never modifies its argument.
	FS vfs.FS

	// Logger receives recovery reports (a truncated torn tail, a skipped
	// corrupt snapshot, a damaged or clamped commit marker). nil discards
	// them.
	Logger *slog.Logger
}

// DefaultOptions returns the recommended configuration.
func DefaultOptions() Options {
	return Options{
		SegmentBytes:   DefaultSegmentBytes,
		MaxRecordBytes: DefaultMaxRecordBytes,
		MaxBatchBytes:  DefaultMaxBatchBytes,
		CacheBytes:     DefaultCacheBytes,

		PreallocateBytes: DefaultPreallocateBytes,
	}
}

// Validate reports every field of o that is out of range, joined into one
// error wrapping ErrInvalidArgument.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("disk: invalid Options: "+format+": %w", append(args, ErrInvalidArgument)...))
	}
	if o.SegmentBytes < MinSegmentBytes || o.SegmentBytes > MaxSegmentBytes {
		bad("SegmentBytes is %d, must be in [%d, %d] (start from DefaultOptions())",
			o.SegmentBytes, MinSegmentBytes, MaxSegmentBytes)
	}
	if o.MaxRecordBytes < MinRecordBytes {
		bad("MaxRecordBytes is %d, must be at least %d", o.MaxRecordBytes, MinRecordBytes)
	} else if o.SegmentBytes >= MinSegmentBytes && int64(o.MaxRecordBytes) > o.SegmentBytes {
		bad("MaxRecordBytes is %d, must not exceed SegmentBytes (%d)", o.MaxRecordBytes, o.SegmentBytes)
	}
	if minBatch := minBatchBytes(o.MaxRecordBytes); o.MaxBatchBytes < minBatch || o.MaxBatchBytes > MaxMaxBatchBytes {
		bad("MaxBatchBytes is %d, must be in [%d, %d] (a maximal record plus batch framing)",
			o.MaxBatchBytes, minBatch, MaxMaxBatchBytes)
	}
	if o.CacheBytes < 0 {
		bad("CacheBytes is %d, must be >= 0 (0 disables the cache)", o.CacheBytes)
	}
	if p := o.PreallocateBytes; p != 0 && (p < MinPreallocateBytes || p > MaxPreallocateBytes || p%MinPreallocateBytes != 0) {
		bad("PreallocateBytes is %d, must be 0 (off) or a multiple of %d in [%d, %d]",
			p, MinPreallocateBytes, MinPreallocateBytes, MaxPreallocateBytes)
	}
	return errors.Join(errs...)
}

// minBatchBytes is the smallest batch that can carry a hard state and one
// record of the given maximal payload.
func minBatchBytes(maxRecord int) int {
	return batchRecordBytes + hardStateRecordBytes + recordHeaderSize + max(maxRecord, 0)
}

func (o Options) fs() vfs.FS {
	if o.FS == nil {
		return vfs.Default
	}
	return o.FS
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}
