//go:build chaos

package main

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rafty-db/rafty/internal/powerloss"
)

// The chaos build can simulate power loss: with the environment variable
// KVNODE_CHAOS_POWERLOSS_JOURNAL set to a path outside the data
// directory, every file operation of the WAL, the snapshot store and
// Pebble goes through internal/powerloss, which journals there how to
// undo what is not yet synced. After kill -9, the chaos suite's harness
// (powerloss.Cut) turns the data directory into what a power cut could
// have left, and starts the node again on it. A normal build has none of
// this (chaos_hook.go).

// chaosPowerLossEnv names the journal's environment variable.
const chaosPowerLossEnv = "KVNODE_CHAOS_POWERLOSS_JOURNAL"

// One FS per process: two on one journal would interleave their records.
var chaosFS = sync.OnceValues(func() (*powerloss.FS, error) {
	path := os.Getenv(chaosPowerLossEnv)
	if path == "" {
		return nil, nil
	}
	return powerloss.New(vfs.Default, powerloss.Options{Journal: path})
})

func storageFS(log *slog.Logger) (vfs.FS, error) {
	fs, err := chaosFS()
	if err != nil {
		return nil, fmt.Errorf("chaos build: %s: %w", chaosPowerLossEnv, err)
	}
	if fs == nil {
		log.Warn("chaos build without " + chaosPowerLossEnv + ": power loss is not simulated")
		return nil, nil
	}
	log.Warn("chaos build: unsynced writes are journaled for a simulated power loss", "journal", os.Getenv(chaosPowerLossEnv))
	return fs, nil
}
