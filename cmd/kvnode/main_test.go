package main

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/rafty-db/rafty/internal/proctest"
)

// binaries builds the kvnode binary the end-to-end tests run (at most
// once per test run, by the first test that needs it, so unit-test-only
// runs do not pay for a build); TestMain removes it.
var binaries proctest.Binaries

// TestMain removes the kvnode binary once the tests have run and checks
// that the in-process tests leaked no goroutine.
func TestMain(m *testing.M) {
	code := m.Run()
	binaries.Cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// kvnodeBinary returns the path of a freshly built kvnode binary. It is
// static (CGO_ENABLED=0), like the one in the container image. The test is
// skipped when no Go toolchain is on PATH.
func kvnodeBinary(t *testing.T) string {
	t.Helper()
	return binaries.Kvnode(t, "")
}
