//go:build !linux

package disk

import "os"

// fdatasync falls back to fsync where fdatasync is not available.
func fdatasync(f *os.File) error {
	if noSyncForFuzzing.Load() {
		return nil
	}
	return f.Sync()
}
