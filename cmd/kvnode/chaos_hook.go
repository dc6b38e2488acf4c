//go:build !chaos

package main

import (
	"log/slog"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rafty-db/rafty/driver"
)

// wrapStorage is where the chaos build (chaos_disk.go, `go build -tags
// chaos`) puts its fault injection around the Raft log. In a normal build
// it returns the storage unchanged.
func wrapStorage(st driver.Storage, _ *slog.Logger) driver.Storage { return st }

// storageFS is the file system under the WAL, the snapshot store and
// Pebble. The chaos build can put a power-loss simulation there
// (chaos_powerloss.go); a normal build uses the operating system's (nil).
func storageFS(*slog.Logger) (vfs.FS, error) { return nil, nil }
