package disk

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestLockSameProcess: a second Open of a directory in use fails with
// ErrLocked and names the directory; after Close it opens again.
func TestLockSameProcess(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions())
	_, err := Open(dir, testOptions())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: %v; want ErrLocked naming %s", err, dir)
	}
	mustClose(t, s)
	s = mustOpen(t, dir, testOptions())
	mustClose(t, s)
}

// TestLockAcrossProcesses: a Store held by another process (this test
// binary re-executed) keeps us out until that process lets go.
func TestLockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("helper said %q, %v", line, err)
	}
	_, err = Open(dir, testOptions())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open while another process holds %s: %v; want ErrLocked naming it", dir, err)
	}
	stdin.Close() // the helper closes its Store and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	s := mustOpen(t, dir, testOptions())
	mustClose(t, s)
}
