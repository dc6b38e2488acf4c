package kv

import (
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// privateFS is the operating system's file system with the store's files
// readable by their owner only: the data is the users', and the default
// mode (0666 less the umask) lets every local account read it. Directories
// are created 0700. It wraps vfs.Default only: the names it is given are
// real paths.
type privateFS struct{ vfs.FS }

// Create implements vfs.FS; the new file is made 0600 before anything is
// written to it.
func (p privateFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, category)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, 0o600); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// MkdirAll implements vfs.FS with owner-only directories.
func (p privateFS) MkdirAll(dir string, _ os.FileMode) error { return p.FS.MkdirAll(dir, 0o700) }

// Unwrap lets Pebble see the file system underneath (disk-health checks).
func (p privateFS) Unwrap() vfs.FS { return p.FS }

// Lock implements vfs.FS; the lock file is made 0600 too.
func (p privateFS) Lock(name string) (io.Closer, error) {
	c, err := p.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, 0o600); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}
