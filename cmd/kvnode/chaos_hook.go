//go:build !chaos

package main

import (
	"log/slog"

	"github.com/rafty-db/rafty/driver"
)

// wrapStorage is where the chaos build (chaos_disk.go, `go build -tags
// chaos`) puts its fault injection around the Raft log. In a normal build
// it returns the storage unchanged.
func wrapStorage(st driver.Storage, _ *slog.Logger) driver.Storage { return st }
