package chaos

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rafty-db/rafty/internal/proctest"
)

var (
	flagDuration  = flag.Duration("chaos.duration", 0, "run TestChaosLong (and a longer TestChaosCompose) for this long; 0 skips TestChaosLong")
	flagSeed      = flag.Uint64("chaos.seed", 0, "base seed of the schedules (0: a random one, printed); required by TestChaosReplay")
	flagNodes     = flag.Int("chaos.nodes", 3, "TestChaosReplay: cluster size")
	flagKinds     = flag.String("chaos.kinds", "", "TestChaosReplay and TestChaosLong: fault kinds to draw from (comma-separated; default all)")
	flagForced    = flag.Bool("chaos.forced", false, "TestChaosReplay: run exactly -chaos.kinds, in order, instead of drawing from them")
	flagSteps     = flag.Int("chaos.steps", 5, "TestChaosReplay and TestChaosLong: faults per schedule")
	flagWorkers   = flag.Int("chaos.workers", 12, "concurrent clients of the workload (at least 10)")
	flagKeep      = flag.Bool("chaos.keep", false, "write the artifacts (history, visualization, schedule, logs) of every schedule, not only of failing ones")
	flagArtifacts = flag.String("chaos.artifacts", defaultArtifacts(), "where a failing schedule leaves its history, porcupine's visualization, the fault schedule and the node logs")
)

// defaultArtifacts is artifacts/chaos at the repository root (ignored by
// git, removed by make clean).
func defaultArtifacts() string {
	if abs, err := filepath.Abs(filepath.Join("..", "artifacts", "chaos")); err == nil {
		return abs
	}
	return filepath.Join(os.TempDir(), "rafty-chaos")
}

// binaries builds the kvnode binaries the tests run; TestMain removes
// them.
var binaries proctest.Binaries

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	binaries.Cleanup()
	// The figures of every chaos test that ran, on standard output: `go
	// test` shows them with -v, or when run in the package's directory
	// (make chaos-short), or when the package fails.
	summaryMu.Lock()
	for _, s := range summaries {
		fmt.Println(s)
	}
	summaryMu.Unlock()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	summaryMu sync.Mutex
	summaries []string
)

// report logs a test's figures and keeps them for TestMain to print.
func report(t *testing.T, tot *totals, start time.Time) {
	tot.elapsed = time.Since(start)
	line := fmt.Sprintf("%s: %s", t.Name(), tot)
	t.Log(tot)
	summaryMu.Lock()
	summaries = append(summaries, line)
	summaryMu.Unlock()
}

// kvnodeBinary builds cmd/kvnode once per test run, static like the one in
// the container image. The "chaos" flavour has the chaos build tag (the
// slow-disk hook, cmd/kvnode/chaos_disk.go); the "plain" one is the
// production build, for the container image.
func kvnodeBinary(t *testing.T, flavour string) string {
	t.Helper()
	tags := flavour
	if flavour == "plain" {
		tags = ""
	}
	return binaries.Kvnode(t, tags)
}

// baseSeed is -chaos.seed, or a random seed; either way it is printed.
func baseSeed(t *testing.T) uint64 {
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64() % 1e12
	}
	t.Logf("base seed %d (rerun these schedules with -chaos.seed=%d)", seed, seed)
	return seed
}

// subSeed derives the seed of schedule i.
func subSeed(base uint64, i int) uint64 {
	return base*1000 + uint64(i)
}

// startLoopback starts an n-node loopback cluster of bin, closed (every
// process killed, every proxy closed, the data removed) when t ends.
func startLoopback(t *testing.T, bin string, n int) (*procCluster, *nodeClients) {
	t.Helper()
	needProc(t)
	start := time.Now()
	c, err := startProcCluster(t.Logf, bin, t.TempDir(), n)
	if err != nil {
		t.Fatalf("starting a %d-node cluster: %v", n, err)
	}
	t.Cleanup(c.Close)
	nc, err := dialNodes(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	t.Logf("%s ready in %v", c.Name(), time.Since(start).Round(time.Millisecond))
	return c, nc
}

// flagKindsOrAll returns the fault kinds of -chaos.kinds, all of them if
// it is not set.
func flagKindsOrAll(t *testing.T) []faultKind {
	t.Helper()
	if *flagKinds == "" {
		return allKinds
	}
	kinds, err := parseKinds(*flagKinds)
	if err != nil {
		t.Fatal(err)
	}
	return kinds
}

func opts() scheduleOpts {
	o := defaultOpts()
	o.workers = max(*flagWorkers, 10)
	return o
}

// TestChaosShort is the CI version (about two minutes): a 3-node loopback
// cluster runs three schedules that together inject every kind of fault
// but the power cuts (TestChaosPowerLossShort),
// then a 5-node cluster, serving linearizable reads from leader leases,
// runs one schedule of partitions, kills and pauses. The schedules' kinds are fixed so that every run covers every
// fault; their targets and timings come from the printed seed.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the chaos suite in -short mode: it runs real kvnode clusters under faults for about two minutes")
	}
	bin := kvnodeBinary(t, "chaos")
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	defer report(t, tot, start)
	t.Run("3nodes", func(t *testing.T) {
		c, nc := startLoopback(t, bin, 3)
		for i, kinds := range [][]faultKind{
			{fKillLeader, fPauseLeader, fIsoLeader, fSlowDisk},
			{fKillRandom, fSplit, fOneWay, fBadInput, fLatency},
			{fKillMajority, fBridge, fResets, fKillAll, fPauseRandom},
		} {
			runSchedule(t, c, nc, newPlan(subSeed(base, i), 3, 0, kinds, true), opts(), tot)
		}
	})
	t.Run("5nodes", func(t *testing.T) {
		// This cluster serves linearizable reads from the leader's lease
		// (kvnode --read-mode lease, through its environment twin): the
		// pause-leader fault is what a lease must survive — a leader
		// frozen past its lease must not answer from it when it wakes.
		t.Setenv("KVNODE_READ_MODE", "lease")
		t.Log("read mode: lease")
		c, nc := startLoopback(t, bin, 5)
		kinds := []faultKind{fBridge, fSplit, fKillMajority, fPauseLeader, fOneWay}
		runSchedule(t, c, nc, newPlan(subSeed(base, 10), 5, 0, kinds, true), opts(), tot)
	})
}

// TestChaosPowerLossShort is the CI version of the power-loss faults
// (about 40 s): a 3-node loopback cluster runs two schedules of power
// cuts — one node, one node cut off from its peers before and after,
// every node at once, and a partition between them — with unsynced writes dropped or partly kept by
// internal/powerloss under the WAL, snapshots and Pebble. Targets, timings
// and what each cut keeps come from the printed seed.
func TestChaosPowerLossShort(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the chaos suite in -short mode: it runs real kvnode clusters under power cuts for about 40 s")
	}
	bin := kvnodeBinary(t, "chaos")
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	defer report(t, tot, start)
	c, nc := startLoopback(t, bin, 3)
	for i, kinds := range [][]faultKind{
		{fPowerLoss, fPowerLossIsolated, fPowerLossAll, fPowerLoss},
		{fPowerLossAll, fSplit, fPowerLossIsolated, fPowerLossAll},
	} {
		runSchedule(t, c, nc, newPlan(subSeed(base, 20+i), 3, 0, kinds, true), opts(), tot)
	}
}

// TestChaosLong is `make chaos`: random schedules drawn from every kind of
// fault (or -chaos.kinds), on 3- and 5-node loopback clusters in turn (a
// fresh cluster every four schedules; every other 5-node cluster serves
// linearizable reads from leader leases), for -chaos.duration.
func TestChaosLong(t *testing.T) {
	if *flagDuration <= 0 {
		t.Skip("skipping the long chaos run: set -chaos.duration (make chaos runs it for 10m)")
	}
	kinds := flagKindsOrAll(t)
	bin := kvnodeBinary(t, "chaos")
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	deadline := start.Add(*flagDuration)
	defer report(t, tot, start)
	// A schedule of s steps takes about 4 s per step plus 15 s of
	// warm-up, healing and checks.
	budget := time.Duration(*flagSteps)*4*time.Second + 15*time.Second
	if *flagKinds == "" {
		t.Run("regressions", func(t *testing.T) {
			c, nc := startLoopback(t, bin, 3)
			for _, r := range regressionPlans {
				t.Logf("regression schedule: %s", r.why)
				runSchedule(t, c, nc, newPlan(r.seed, 3, 0, r.kinds, true), opts(), tot)
			}
		})
	}
	for round, i := 0, 0; time.Until(deadline) > budget; round++ {
		n := []int{3, 5}[round%2]
		ok := t.Run(fmt.Sprintf("round%d-%dnodes", round, n), func(t *testing.T) {
			if round%4 == 3 {
				// Every other 5-node cluster reads from leader leases.
				t.Setenv("KVNODE_READ_MODE", "lease")
				t.Log("read mode: lease")
			}
			c, nc := startLoopback(t, bin, n)
			for k := 0; k < 4 && time.Until(deadline) > budget; k++ {
				runSchedule(t, c, nc, newPlan(subSeed(base, i), n, *flagSteps, kinds, false), opts(), tot)
				i++
			}
		})
		if !ok {
			break
		}
	}
}

// TestChaosReplay runs one schedule again: the seed, size and kinds that a
// failure printed.
func TestChaosReplay(t *testing.T) {
	if *flagSeed == 0 {
		t.Skip("skipping: TestChaosReplay replays the schedule of -chaos.seed (with -chaos.nodes, -chaos.kinds, -chaos.forced)")
	}
	kinds := flagKindsOrAll(t)
	bin := kvnodeBinary(t, "chaos")
	tot := &totals{}
	start := time.Now()
	if slices.ContainsFunc(kinds, isMemberKind) {
		// The membership nemesis needs spare slots and its state.
		c, nc, o := startMemberCluster(t, bin, *flagNodes)
		runSchedule(t, c, nc, newPlan(*flagSeed, *flagNodes, *flagSteps, kinds, *flagForced), o, tot)
		report(t, tot, start)
		return
	}
	c, nc := startLoopback(t, bin, *flagNodes)
	runSchedule(t, c, nc, newPlan(*flagSeed, *flagNodes, *flagSteps, kinds, *flagForced), opts(), tot)
	report(t, tot, start)
}
