//go:build unix

package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFileName is the file in the data directory that Open locks.
const lockFileName = "LOCK"

// dirLock is an exclusive flock(2) on <dir>/LOCK. flock locks belong to the
// open file description, so a second Open in the same process conflicts
// just like one in another process, and the kernel drops the lock when the
// holder dies (kill -9 leaves no stale lock behind).
type dirLock struct {
	f *os.File
}

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("disk: open lock file: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk: data directory %s is already in use by another Store (flock %s): %w", dir, path, ErrLocked)
		}
		return nil, fmt.Errorf("disk: lock data directory %s (flock %s): %w", dir, path, err)
	}
	return &dirLock{f: f}, nil
}

func (l *dirLock) release() error {
	// Closing the descriptor releases the flock.
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("disk: release lock %s: %w", l.f.Name(), err)
	}
	return nil
}
