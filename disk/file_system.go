package disk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Every file operation of this package goes through a vfs.FS
// (Options.FS, vfs.Default unless set), the interface Pebble uses too, so
// that one file layer can sit under the WAL, the snapshot store and the
// state machine's Pebble instance: tests and the chaos suite put a file
// system there that simulates a power loss. The helpers below keep the
// real-disk behaviour of the code that called the operating system
// directly: fdatasync through File.SyncData, directory fsyncs through
// FS.OpenDir, the lock through FS.Lock, and private permissions.

// Permissions of what this package creates: only the owner may read the
// log, which holds every client value.
const (
	filePerm = 0o600
	dirPerm  = 0o700
)

// noSyncForFuzzing, set only by FuzzOpenSegment, turns fdatasync and
// directory fsyncs into no-ops so that the fuzzer runs thousands of Opens a
// second; durability is not what it tests. Nothing else sets it.
var noSyncForFuzzing atomic.Bool

// syncData flushes f's data and the metadata needed to read it back (the
// size), skipping timestamps: fdatasync(2) for an operating-system file,
// one device flush instead of fsync's two on most file systems. EINTR is
// retried; any other error is final (see ErrFailed for why a failed sync is
// never retried).
func syncData(f vfs.File, path string) error {
	if noSyncForFuzzing.Load() {
		return nil
	}
	for {
		err := f.SyncData()
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EINTR) {
			return &os.PathError{Op: "fdatasync", Path: path, Err: err}
		}
	}
}

// syncDir makes the creation, removal or renaming of entries in dir durable.
func syncDir(fsys vfs.FS, dir string) error {
	if noSyncForFuzzing.Load() {
		return nil
	}
	d, err := fsys.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("disk: open directory for fsync: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("disk: fsync directory %s: %w", dir, err)
	}
	return nil
}

// mkdirDurable creates dir (mode 0700) if needed and syncs its parent so
// the new directory entry survives a crash.
func mkdirDurable(fsys vfs.FS, dir string) error {
	if _, err := fsys.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk: %w", err)
	}
	if err := fsys.MkdirAll(dir, dirPerm); err != nil {
		return fmt.Errorf("disk: create directory: %w", err)
	}
	return syncDir(fsys, filepath.Dir(dir))
}

// createFile creates path, which must not exist, for reading and writing,
// readable by the owner only. vfs.FS.Create replaces an existing file; a
// WAL segment or snapshot that already exists means a bug, never a file
// to discard, so it is refused here instead.
func createFile(fsys vfs.FS, path string) (vfs.File, error) {
	if _, err := fsys.Stat(path); err == nil {
		return nil, fmt.Errorf("disk: create %s: %w", path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("disk: create %s: %w", path, err)
	}
	f, err := fsys.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("disk: create %s: %w", path, err)
	}
	if err := restrictFile(fsys, f, path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// restrictFile gives a newly created file mode 0600. vfs.FS.Create has no
// mode argument (the operating-system implementation uses 0666 less the
// umask), so the mode is set right after creation, while the file is still
// empty and inside a 0700 directory. A file system that is not backed by
// the operating system has no permissions to set.
func restrictFile(fsys vfs.FS, f vfs.File, path string) error {
	var err error
	if fd := f.Fd(); fd != vfs.InvalidFd {
		err = fchmod(fd, filePerm)
	} else if vfs.Root(fsys) == vfs.Default {
		err = os.Chmod(path, filePerm)
	}
	if err != nil {
		return fmt.Errorf("disk: set the mode of %s: %w", path, err)
	}
	return nil
}

// lockFileName is the file in the data directory that Open locks.
const lockFileName = "LOCK"

// dirLock is an exclusive lock on <dir>/LOCK through vfs.FS.Lock: an
// fcntl(2) write lock for the operating-system file system, which the
// kernel drops when the holder dies (kill -9 leaves no stale lock
// behind). fcntl locks belong to the process, so a second Open in this
// process is kept out by the table of held locks below.
type dirLock struct {
	c   io.Closer
	key heldLockKey
}

// heldLockKey names a held lock: a path in one file system. Two in-memory
// file systems can hold the same path, so the file system is part of the
// key when it can be (when its type is comparable).
type heldLockKey struct {
	fs   any
	path string
}

var heldLocks struct {
	sync.Mutex
	m map[heldLockKey]bool
}

func lockDir(fsys vfs.FS, dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	key := heldLockKey{path: path}
	if abs, err := filepath.Abs(path); err == nil {
		key.path = abs
	}
	if t := reflect.TypeOf(fsys); t != nil && t.Comparable() {
		key.fs = fsys
	}
	heldLocks.Lock()
	defer heldLocks.Unlock()
	if heldLocks.m[key] {
		return nil, fmt.Errorf("disk: data directory %s is already in use by another Store in this process (lock %s): %w", dir, path, ErrLocked)
	}
	// Create the lock file with mode 0600 before FS.Lock creates it
	// with the default mode. Only while nobody in this process holds
	// it (heldLocks): closing any descriptor of a file drops the
	// process's fcntl lock on it.
	if _, err := fsys.Stat(path); errors.Is(err, fs.ErrNotExist) {
		f, err := fsys.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			return nil, fmt.Errorf("disk: create lock file: %w", err)
		}
		err = restrictFile(fsys, f, path)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
	}
	c, err := fsys.Lock(path)
	if err != nil {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk: data directory %s is already in use by another Store (lock %s): %w", dir, path, ErrLocked)
		}
		return nil, fmt.Errorf("disk: lock data directory %s (lock %s): %w", dir, path, err)
	}
	if heldLocks.m == nil {
		heldLocks.m = map[heldLockKey]bool{}
	}
	heldLocks.m[key] = true
	return &dirLock{c: c, key: key}, nil
}

func (l *dirLock) release() error {
	heldLocks.Lock()
	defer heldLocks.Unlock()
	delete(heldLocks.m, l.key)
	if err := l.c.Close(); err != nil {
		return fmt.Errorf("disk: release lock %s: %w", l.key.path, err)
	}
	return nil
}
