//go:build linux

package disk

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back (the
// size), skipping timestamps: one device flush instead of fsync's two on
// most file systems. EINTR is retried; any other error is final (see
// ErrFailed for why a failed sync is never retried).
func fdatasync(f *os.File) error {
	if noSyncForFuzzing.Load() {
		return nil
	}
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}
