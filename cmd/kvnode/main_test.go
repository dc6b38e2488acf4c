package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// binDir holds the kvnode binary the end-to-end tests run; TestMain
// creates and removes it.
var binDir string

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// TestMain owns the directory of the kvnode binary (built at most once per
// test run, by the first test that needs it, so unit-test-only runs do not
// pay for a build) and checks that the in-process tests leaked no
// goroutine.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvnode-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the binary directory:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
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
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipping: no go toolchain on PATH to build the kvnode binary")
	}
	buildOnce.Do(func() {
		bin := filepath.Join(binDir, "kvnode")
		cmd := exec.Command(goTool, "build", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		builtBin = bin
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}
