package disk_test

import (
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
)

// Store implements the interfaces the rest of Rafty consumes. disk itself
// depends only on core, so the driver check lives in this test.
var (
	_ driver.Storage      = (*disk.Store)(nil)
	_ driver.CommitWriter = (*disk.Store)(nil)
	_ core.LogReader      = (*disk.Store)(nil)
)
