package kv

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rafty-db/rafty/driver"
)

// Defaults applied by OpenStore to zero-valued Options fields.
const (
	// DefaultCacheSize is Pebble's block cache: enough to keep the index
	// and hot data blocks of a few GiB of data in memory.
	DefaultCacheSize = 64 << 20
	// DefaultMemTableSize is Pebble's memtable. Larger than Pebble's 4 MiB
	// default so that bursts of writes flush less often; it is also the
	// rough bound on how much applied data is not yet in sstables (see
	// Store.Sync).
	DefaultMemTableSize = 16 << 20
	// DefaultMaxResultBytes bounds the key-value bytes one command's
	// result carries; it stays under gRPC's default 4 MiB message limit.
	DefaultMaxResultBytes = 3 << 20
)

// Directory layout under the directory given to OpenStore.
const (
	pebbleDirName = "pebble"
	// restoreFile is a verified snapshot being installed; its presence at
	// open means an install was interrupted and must be redone.
	restoreFile = "restore.snap"
	// restoreTempFile is a snapshot still being received and verified;
	// at open it is garbage.
	restoreTempFile = "restore.tmp"
	// restoreTableFile is the sstable an install builds from restoreFile
	// and ingests; at open it is garbage (the install is redone).
	restoreTableFile = "restore.sst"
)

// Options configures a Store. The zero value is usable.
type Options struct {
	// CacheSize is Pebble's block cache size in bytes (0: DefaultCacheSize).
	CacheSize int64
	// MemTableSize is Pebble's memtable size in bytes (0:
	// DefaultMemTableSize).
	MemTableSize uint64
	// DisableWAL turns Pebble's own write-ahead log off. Safe, because the
	// Raft log already is one (design §3): after a crash the store comes
	// back at the applied index of its last flushed memtable and the driver
	// re-applies the rest. It saves a write of every value, but a crash
	// then loses up to a memtable of applied work, and Sync must flush
	// memtables instead of syncing a log. With the WAL on (the default)
	// Pebble writes it without fsync (pebble.NoSync) either way.
	DisableWAL bool
	// MaxResultBytes bounds the key and value bytes one command's result
	// may carry: reads inside a transaction and prev_kvs of a delete. What
	// does not fit is left out and flagged (RangeResponse.more,
	// DeleteResponse.prev_kvs_truncated). 0: DefaultMaxResultBytes. It
	// affects only results, never the stored state, so members may differ.
	MaxResultBytes int
	// Logger receives Pebble's messages (informational ones at Debug) and
	// the store's own; nil discards them.
	Logger *slog.Logger
	// FS is the file system; nil means the operating system's. Tests use
	// Pebble's in-memory file systems.
	FS vfs.FS
}

func (o Options) withDefaults() Options {
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.MaxResultBytes == 0 {
		o.MaxResultBytes = DefaultMaxResultBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FS == nil {
		// Pebble creates files 0666 less the umask (usually 0644):
		// privateFS makes them 0600, as disk/ does for the Raft log.
		o.FS = privateFS{vfs.Default}
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.CacheSize < 0 {
		errs = append(errs, fmt.Errorf("CacheSize must not be negative, got %d", o.CacheSize))
	}
	if o.MaxResultBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxResultBytes must not be negative, got %d", o.MaxResultBytes))
	}
	if len(errs) > 0 {
		return fmt.Errorf("kv: invalid store options: %w", errors.Join(errs...))
	}
	return nil
}

// Store is the replicated key-value state machine on Pebble. It implements
// driver.StateMachine (Apply, Applied, Snapshot, Restore; see apply.go and
// snapshot.go), which the driver calls from one goroutine, and serves
// local reads to the Service concurrently.
type Store struct {
	dir  string
	fs   vfs.FS
	opts Options
	log  *slog.Logger

	// mu guards the database's lifetime and the exclusivity of snapshot
	// installation: reads, Apply, Snapshot, Sync and Hash hold it shared;
	// Close and Restore's install hold it exclusively, so nobody sees a
	// half-installed snapshot or a closed *pebble.DB (whose methods panic).
	mu sync.RWMutex
	db *pebble.DB // nil once closed
	// failed, once set (a snapshot install failed half way), makes every
	// operation fail: the keyspace may be half replaced. OpenStore
	// completes the install.
	failed error

	// applied mirrors the stored applied index. Invariant: it is updated
	// only after the batch recording it has been committed, so readers
	// never see an index whose effects are not yet readable.
	applied atomic.Uint64

	// Apply's scratch, touched only by the driver's goroutine (Apply is
	// never concurrent with itself).
	cmd     command
	applier applier

	// hashSem lets one Hash run at a time: each reads the whole keyspace.
	hashSem chan struct{}

	// sources are the open snapshot sources (Snapshot). srcMu guards them
	// and srcClosed; a source streams holding it shared, and Close takes
	// it exclusively to close them before the database.
	srcMu     sync.RWMutex
	sources   map[*snapshotSource]struct{}
	srcClosed bool
}

var _ driver.StateMachine = (*Store)(nil)

// OpenStore opens (creating if needed) the store in dir. Pebble's files go
// in dir/pebble; a snapshot being restored is staged in dir. If a previous
// Restore was interrupted by a crash, OpenStore completes it.
func OpenStore(dir string, opts Options) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	fs := opts.FS
	pebbleDir := fs.PathJoin(dir, pebbleDirName)
	if err := mkdirAllDurable(fs, pebbleDir); err != nil {
		return nil, fmt.Errorf("kv: creating store directory: %w", err)
	}
	cache := pebble.NewCache(opts.CacheSize)
	// Pebble takes its own reference; ours is dropped on every return path.
	defer cache.Unref()
	popts := &pebble.Options{
		Cache:        cache,
		MemTableSize: opts.MemTableSize,
		DisableWAL:   opts.DisableWAL,
		Logger:       pebbleLogger{opts.Logger},
		FS:           fs,
	}
	db, err := pebble.Open(pebbleDir, popts)
	if err != nil {
		return nil, fmt.Errorf("kv: opening pebble in %s: %w", dir, err)
	}
	s := &Store{dir: dir, fs: fs, opts: opts, log: opts.Logger, db: db, hashSem: make(chan struct{}, 1),
		sources: map[*snapshotSource]struct{}{}}
	if err := s.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// mkdirAllDurable creates dir and any missing parents, and syncs the
// parent of every directory it created, so that the new directories
// survive a power loss (Pebble syncs its own directory, not the path to
// it; without this, a crash soon after the first start could lose the
// whole store, synced data included).
func mkdirAllDurable(fs vfs.FS, dir string) error {
	var created []string
	for d := dir; ; {
		if _, err := fs.Stat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		created = append(created, d)
		parent := fs.PathDir(d)
		if parent == d {
			break
		}
		d = parent
	}
	if len(created) == 0 {
		return nil
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Each sync makes one new entry durable; the order does not matter.
	for _, d := range created {
		if err := syncDir(fs, fs.PathDir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory, making its entries durable.
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// recover finishes an interrupted restore, if any, and loads the applied
// index.
func (s *Store) recover() error {
	for _, stale := range []string{restoreTempFile, restoreTableFile} {
		tmp := s.fs.PathJoin(s.dir, stale)
		if err := s.fs.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kv: removing stale %s: %w", tmp, err)
		}
	}
	switch _, err := s.fs.Stat(s.fs.PathJoin(s.dir, restoreFile)); {
	case err == nil:
		s.log.Warn("completing a snapshot restore interrupted by a crash")
		if err := s.installSpool(); err != nil {
			return err
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("kv: looking for an interrupted restore: %w", err)
	}
	applied, err := readApplied(s.db)
	if err != nil {
		return err
	}
	s.applied.Store(applied)
	return nil
}

// usable reports why the store cannot serve, if it cannot. The caller
// holds mu (shared or exclusive).
func (s *Store) usable() error {
	if s.db == nil {
		return ErrClosed
	}
	return s.failed
}

// Applied returns the index of the last command whose effects are in the
// store: read from Pebble at open, then advanced by Apply and Restore.
func (s *Store) Applied() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	return s.applied.Load(), nil
}

// AppliedIndex is Applied without the error, for status reporting: the
// last index applied (the last known one after Close).
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Sync makes every command applied so far durable in Pebble and returns
// the applied index it covers: after a crash, the store reopens at that
// index or later.
//
// This is what makes log compaction safe. Applied commands are committed
// to Pebble without fsync (pebble.NoSync), because the Raft log is the
// write-ahead log: a crash may lose recently applied effects, which the
// driver re-applies from the log. Hence the invariant
//
//	the Raft log must never be compacted past an index Sync has returned.
//
// Call Sync before compacting and compact at most to its result. With the
// WAL on, Sync is one fsync of Pebble's log; with Options.DisableWAL it
// flushes the memtables to sstables, which costs more.
func (s *Store) Sync() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	// Read the index first: everything it covers was committed before
	// the sync below is requested, so the sync covers it.
	idx := s.applied.Load()
	var err error
	if s.opts.DisableWAL {
		err = s.db.Flush()
	} else {
		// An empty log record written with Sync fsyncs the WAL, and with
		// it every batch committed before it.
		err = s.db.LogData(nil, pebble.Sync)
	}
	if err != nil {
		return 0, fmt.Errorf("kv: syncing store: %w", err)
	}
	return idx, nil
}

// DiskSize returns the bytes Pebble uses on disk.
func (s *Store) DiskSize() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return 0, err
	}
	return s.db.Metrics().DiskSpaceUsage(), nil
}

// Close closes the database. Stop the driver node first: Apply after
// Close fails (and would stop the node). Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil {
		return nil
	}
	// Snapshot sources first: Pebble's snapshots must not outlive it.
	s.srcMu.Lock()
	s.srcClosed = true
	for src := range s.sources {
		_ = src.snap.Close()
		src.snap = nil
		delete(s.sources, src)
	}
	s.srcMu.Unlock()
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("kv: closing pebble: %w", err)
	}
	return nil
}
