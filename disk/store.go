package disk

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// Store is the durable Raft log, hard state and snapshot metadata of one
// node, kept in a segmented write-ahead log, plus the commit index written
// before applying, kept apart in a marker file (WriteCommit). It
// implements core.LogReader, driver.Storage and driver.CommitWriter. All
// methods are safe for concurrent use.
//
// Locking: wmu guards the group-commit queue and the right to write (the
// "write token", held while flushing is true or while an exclusive
// operation holds wmu); mu guards what readers see; commit.mu guards the
// commit marker file (WriteCommit), which never takes wmu. Lock order is
// wmu, then commit.mu, then mu; nothing waits for wmu while holding mu or
// commit.mu, and no disk write or sync happens under mu, so readers and
// WriteCommit never wait for an fsync.
type Store struct {
	dir    string
	walDir string
	fs     vfs.FS
	opts   Options
	logger *slog.Logger
	lock   *dirLock
	snaps  *SnapshotStore

	// Group commit (see group_commit.go).
	wmu       sync.Mutex
	wcond     sync.Cond // signalled when a batch completes or the token frees
	flushing  bool      // a goroutine is writing a batch without holding wmu
	exclusive bool      // InstallSnapshot/Compact/Close is draining the queue
	queue     []*batch  // batches waiting to be written, oldest first
	closed    bool
	failed    error // sticky write/sync failure (wraps ErrFailed)
	// The state after every queued Save, for validating new Saves.
	qLast, qSnapIndex uint64
	qHS               core.HardState
	// Fields only the write-token holder touches.
	nextBatchSeq uint64
	active       vfs.File // last segment, opened read-write
	// salt is the active segment's (see batchHeader); chain is the chain
	// value after its last written batch (synced or not).
	salt  uint64
	chain uint32
	// syncedEnd: the active segment's file is durable up to here (a
	// completed fdatasync covered every byte before it). Every batch
	// header records it; recovery uses the claim to tell damage of
	// synced data from a torn tail.
	syncedEnd int64
	// zeroedTo is the active segment file's size. Invariant: every byte
	// between the logical end (the last segment's size) and zeroedTo is
	// zero, so recovery can tell this preallocated tail from a torn
	// write (see Options.PreallocateBytes and writeBatch). Without
	// preallocation it equals the logical end.
	zeroedTo int64

	// The commit marker file (commit_marker.go): its own lock, never
	// wmu, so WriteCommit never waits for the WAL.
	commit commitMarker

	// Read side.
	mu      sync.RWMutex
	rclosed bool
	st      logState
	cache   entryCache
	segs    []*segment // ascending; the last is active

	stats struct {
		saves, batches, fsyncs, sealSyncs, dirSyncs, bytes, zeroFills, commitWrites atomic.Uint64
	}

	// testHookEnqueued, when set by tests, runs (under wmu) once a Save is
	// queued and before it waits, letting a test order concurrent Saves.
	testHookEnqueued func()
}

// Open opens or creates the Store in dir: WAL segments in dir/wal,
// snapshots in dir/snap, an exclusive lock on dir/LOCK. It replays the WAL,
// cutting a torn tail of the last segment that nothing proves synced
// (reported to Options.Logger), and failing with a *CorruptionError on any
// other damage and with ErrFormatVersion on a WAL of another format.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	fsys := opts.fs()
	if err := mkdirDurable(fsys, dir); err != nil {
		return nil, err
	}
	lock, err := lockDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:    dir,
		walDir: filepath.Join(dir, walDirName),
		fs:     fsys,
		opts:   opts,
		logger: opts.logger(),
		lock:   lock,
		cache:  entryCache{max: opts.CacheBytes},
	}
	s.wcond.L = &s.wmu
	if err := s.open(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Store) open() error {
	if err := mkdirDurable(s.fs, s.walDir); err != nil {
		return err
	}
	snaps, err := OpenSnapshotStoreFS(s.fs, filepath.Join(s.dir, snapDirName), s.logger)
	if err != nil {
		return err
	}
	s.snaps = snaps
	if err := s.recover(); err != nil {
		return err
	}
	if err := s.openCommitMarker(); err != nil {
		return err
	}
	s.qLast, s.qSnapIndex, s.qHS = s.st.last, s.st.snap.Index, s.st.hs
	return nil
}

// Snapshots returns the snapshot file store in dir/snap, covered by the
// Store's directory lock.
func (s *Store) Snapshots() *SnapshotStore { return s.snaps }

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// Close waits for queued Saves, then releases files and the directory lock.
// Later calls of any method fail with ErrClosed; a second Close returns nil.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil
	}
	s.beginExclusive()
	defer s.endExclusive()
	s.closed = true
	s.mu.Lock()
	s.rclosed = true
	s.mu.Unlock()
	return s.closeFiles()
}

func (s *Store) closeFiles() error {
	errs := []error{s.commit.close()}
	if s.active != nil {
		errs = append(errs, s.active.Close())
		s.active = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.release())
		s.lock = nil
	}
	return errors.Join(errs...)
}

// InitialState returns the durable hard state and snapshot metadata. The
// hard state's commit index is the largest of the one last Saved, the one
// last recorded by WriteCommit (capped at LastIndex) and the snapshot
// index: never above LastIndex, never below the snapshot.
func (s *Store) InitialState() (core.HardState, core.SnapshotMeta, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rclosed {
		return core.HardState{}, core.SnapshotMeta{}, ErrClosed
	}
	snap := s.st.snap
	snap.Membership = snap.Membership.Clone()
	hs := s.st.hs
	hs.Commit = s.reportedCommit()
	return hs, snap, nil
}

// FirstIndex returns the first available index: snapshot index + 1.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rclosed {
		return 0, ErrClosed
	}
	return s.st.first(), nil
}

// LastIndex returns the last durable index (the snapshot index when the
// log is empty).
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rclosed {
		return 0, ErrClosed
	}
	return s.st.last, nil
}

// Term returns the term of entry i for FirstIndex-1 <= i <= LastIndex,
// core.ErrCompacted below and core.ErrUnavailable above that range. It is
// answered from memory.
func (s *Store) Term(i uint64) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rclosed {
		return 0, ErrClosed
	}
	return s.st.term(i)
}

// Entries returns entries [lo, hi), stopping before the total of
// core.Entry.Size would exceed maxBytes but returning at least one entry
// when lo < hi. It returns core.ErrCompacted if lo < FirstIndex and
// core.ErrUnavailable if hi > LastIndex+1. Recent entries come from the
// cache, older ones from the segment files (CRC-checked on every read).
// The returned slice and its Data are never modified by the Store.
func (s *Store) Entries(lo, hi, maxBytes uint64) ([]core.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.rclosed {
		return nil, ErrClosed
	}
	switch {
	case lo < s.st.first():
		return nil, core.ErrCompacted
	case hi > s.st.last+1:
		return nil, core.ErrUnavailable
	case lo > hi:
		return nil, fmt.Errorf("disk: Entries(%d, %d): lo > hi: %w", lo, hi, ErrInvalidArgument)
	case lo == hi:
		return nil, nil
	}
	out := make([]core.Entry, 0, min(hi-lo, 1024))
	var size uint64
	full := func(e *core.Entry) bool {
		size += e.Size()
		return len(out) > 0 && size > maxBytes
	}
	cacheLo, _ := s.cache.bounds()
	if s.cache.len() == 0 {
		cacheLo = hi
	}
	i := lo
	if i < cacheLo {
		var err error
		out, size, err = s.readEntries(out, i, min(hi, cacheLo), size, maxBytes)
		if err != nil {
			return nil, err
		}
		i = lo + uint64(len(out))
		if i < min(hi, cacheLo) {
			return out, nil // byte limit reached
		}
	}
	for ; i < hi; i++ {
		e := s.cache.get(i)
		if full(e) {
			break
		}
		out = append(out, *e)
	}
	return out, nil
}

// readEntries appends entries [lo, hi) read from the segments to out,
// within the byte limit. Called with mu held for reading, which keeps
// Compact from deleting a segment being read.
func (s *Store) readEntries(out []core.Entry, lo, hi, size, maxBytes uint64) ([]core.Entry, uint64, error) {
	for i := lo; i < hi; {
		c := s.st.locs.find(i)
		if c == nil {
			return nil, 0, fmt.Errorf("disk: index has no location for live entry %d (bug)", i)
		}
		seg := s.segment(c.seq)
		if seg == nil {
			return nil, 0, fmt.Errorf("disk: entry %d is in segment %d, which is gone (bug)", i, c.seq)
		}
		f := s.active
		if seg != s.segs[len(s.segs)-1] {
			var err error
			if f, err = s.fs.Open(seg.path); err != nil {
				return nil, 0, fmt.Errorf("disk: open segment: %w", err)
			}
		}
		ra := recordAt{r: f, path: seg.path, maxPayload: s.opts.MaxRecordBytes}
		end := min(hi, c.end())
		for ; i < end; i++ {
			off := int64(c.offs[i-c.first])
			typ, p, err := ra.read(off)
			if err == nil && typ != recEntry {
				err = corruptf(seg.path, off, "indexed record for entry %d is a %s record", i, typ)
			}
			var e core.Entry
			if err == nil {
				if e, err = decodeEntry(p); err != nil {
					err = &CorruptionError{File: seg.path, Offset: off, Reason: "bad entry", Err: err}
				} else if e.Index != i {
					err = corruptf(seg.path, off, "record holds entry %d, index says %d", e.Index, i)
				}
			}
			if err != nil {
				if f != s.active {
					f.Close()
				}
				return nil, 0, err
			}
			e.Data = clonedData(e.Data)
			size += e.Size()
			if len(out) > 0 && size > maxBytes {
				hi = i // stop both loops
				break
			}
			out = append(out, e)
		}
		if f != s.active {
			f.Close()
		}
	}
	return out, size, nil
}

func clonedData(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

// segment returns the live segment with sequence number seq, or nil.
func (s *Store) segment(seq uint64) *segment {
	if len(s.segs) == 0 || seq < s.segs[0].seq || seq > s.segs[len(s.segs)-1].seq {
		return nil
	}
	return s.segs[seq-s.segs[0].seq]
}

// Stats is a snapshot of counters and sizes, for tests, benchmarks and
// metrics.
type Stats struct {
	Saves   uint64 // Save calls that wrote something
	Batches uint64 // group-commit writes (each is one write syscall)
	// Fsyncs counts fdatasync calls on segment files: one per batch,
	// plus SealSyncs.
	Fsyncs uint64
	// SealSyncs counts the fdatasyncs (included in Fsyncs) that starting
	// a segment costs besides its batches: one for the new segment's
	// checkpoint.
	SealSyncs uint64
	// CommitWrites counts the WriteCommit calls that wrote the commit
	// marker (one pwrite each, never an fdatasync).
	CommitWrites uint64
	DirSyncs     uint64 // fsync calls on the WAL directory
	// BytesWritten counts the bytes of records written to segment files
	// (zero fill excluded).
	BytesWritten uint64
	// ZeroFills counts the extensions of the active segment by zeros
	// (Options.PreallocateBytes): an extra write, about once per chunk,
	// not counted in Batches.
	ZeroFills uint64

	Segments     int // segment files in use
	FirstIndex   uint64
	LastIndex    uint64
	CacheEntries int
	CacheBytes   int64
	// IndexBytes approximates the memory of the in-memory index (offsets
	// and term runs), which grows by about 4 bytes per live entry.
	IndexBytes int64
}

// Stats returns the current counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Saves:        s.stats.saves.Load(),
		Batches:      s.stats.batches.Load(),
		Fsyncs:       s.stats.fsyncs.Load(),
		SealSyncs:    s.stats.sealSyncs.Load(),
		DirSyncs:     s.stats.dirSyncs.Load(),
		BytesWritten: s.stats.bytes.Load(),
		ZeroFills:    s.stats.zeroFills.Load(),
		CommitWrites: s.stats.commitWrites.Load(),
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	st.Segments = len(s.segs)
	st.FirstIndex, st.LastIndex = s.st.first(), s.st.last
	st.CacheEntries, st.CacheBytes = s.cache.len(), s.cache.bytes
	st.IndexBytes = s.st.locs.memBytes() + int64(cap(s.st.terms.runs))*int64(unsafe.Sizeof(termRun{}))
	return st
}
