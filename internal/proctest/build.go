package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// kvnodePkg is the kvnode command, named by import path so that go build
// finds it from any package's directory.
const kvnodePkg = "github.com/rafty-db/rafty/cmd/kvnode"

// Binaries builds the kvnode binaries of one test binary: each set of
// build tags at most once, by the first test that needs it (so runs of
// unit tests alone do not pay for a build), into a temporary directory
// that Cleanup removes. The zero value is ready to use; a package keeps
// one in a variable and calls Cleanup from TestMain.
type Binaries struct {
	mu     sync.Mutex
	dir    string
	builds map[string]*build
}

// build is one binary: built once, its path or the build's error kept.
type build struct {
	once sync.Once
	path string
	err  error
}

// Kvnode returns the path of a kvnode binary built with tags (a
// comma-separated list as go build -tags takes it; "" for the production
// build). It is static (CGO_ENABLED=0), like the one in the container
// image. The first call for tags builds it; later calls return the same
// binary, or fail tb with the same error. tb is skipped when no Go
// toolchain is on PATH.
func (b *Binaries) Kvnode(tb testing.TB, tags string) string {
	tb.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		tb.Skip("skipping: no go toolchain on PATH to build the kvnode binary")
	}
	bd := b.entry(tags)
	var took time.Duration // set by the call that builds
	bd.once.Do(func() {
		dir, err := b.binDir()
		if err != nil {
			bd.err = fmt.Errorf("creating the binary directory: %v", err)
			return
		}
		name := "kvnode"
		if tags != "" {
			name += "-" + strings.ReplaceAll(tags, ",", "-")
		}
		path := filepath.Join(dir, name)
		args := []string{"build", "-o", path}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, kvnodePkg)
		cmd := exec.Command(goTool, args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			bd.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		took = time.Since(start)
		bd.path = path
	})
	if bd.err != nil {
		tb.Fatal(bd.err)
	}
	if took > 0 {
		tb.Logf("built %s in %v", filepath.Base(bd.path), took.Round(time.Millisecond))
	}
	return bd.path
}

// entry returns the build of tags, created on first use.
func (b *Binaries) entry(tags string) *build {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.builds == nil {
		b.builds = map[string]*build{}
	}
	bd := b.builds[tags]
	if bd == nil {
		bd = &build{}
		b.builds[tags] = bd
	}
	return bd
}

// binDir returns the directory of the binaries, created on first use.
func (b *Binaries) binDir() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir == "" {
		dir, err := os.MkdirTemp("", "rafty-test-kvnode-")
		if err != nil {
			return "", err
		}
		b.dir = dir
	}
	return b.dir, nil
}

// Cleanup removes every binary built. TestMain calls it once m.Run has
// returned.
func (b *Binaries) Cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
		b.dir = ""
	}
}
