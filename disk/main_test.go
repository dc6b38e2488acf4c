package disk

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

var (
	flagSeed = flag.Int64("disk.seed", 0,
		"seed for the randomized model test (0: derive from the clock and print it)")
	flagRecoveryMiB = flag.Int("disk.recovery-mib", 64,
		"size in MiB of the log BenchmarkRecovery builds")
	flagUpdateCorpus = flag.Bool("disk.update-corpus", false,
		"rewrite the fuzz seed corpus under testdata/fuzz")
)

// lockHelperEnv makes the test binary act as a second process for
// TestLockAcrossProcesses: it opens the Store in the named directory,
// reports the outcome on stdout and holds the lock until stdin closes.
const lockHelperEnv = "RAFTY_DISK_LOCK_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(lockHelperEnv); dir != "" {
		os.Exit(lockHelper(dir))
	}
	goleak.VerifyTestMain(cleanupAfter{m})
}

// cleanupAfter removes what benchmarks cached for the whole run before
// goleak checks for leaked goroutines.
type cleanupAfter struct{ m *testing.M }

func (c cleanupAfter) Run() int {
	defer cleanupRecoveryLogs()
	return c.m.Run()
}

func lockHelper(dir string) int {
	s, err := Open(dir, DefaultOptions())
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return 1
	}
	fmt.Println("locked")
	// Hold the lock until the parent closes our stdin.
	bufio.NewReader(os.Stdin).ReadString('\n')
	if err := s.Close(); err != nil {
		fmt.Printf("close: %v\n", err)
		return 1
	}
	return 0
}
