package sim

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"
)

var (
	seedsFlag = flag.Int("sim.seeds", 500, "number of seeds TestSimulation and TestSimulationReconfig each run")
	seedFlag  = flag.Uint64("sim.seed", 0, "run only this seed, with a full trace")
	firstSeed = flag.Uint64("sim.first", 1, "first seed of the range")
	keepGoing = flag.Bool("sim.keepgoing", false, "run every seed and list the failing ones (first line of each) instead of stopping at the first")
	traceLen  = flag.Int("sim.tracelen", 400, "events a replayed seed's failure report shows (-sim.seed)")
	asyncFlag = flag.String("sim.async", "", "on: every seed in async mode (core.Config.AsyncStorageWrites); off: every seed in sync mode; empty: the seed decides (AsyncSeed, half of them)")
)

// defaultOptions and reconfigOptions apply -sim.async.
func defaultOptions(seed uint64) Options  { return withMode(DefaultOptions(seed)) }
func reconfigOptions(seed uint64) Options { return withMode(ReconfigOptions(seed)) }

func withMode(o Options) Options {
	switch *asyncFlag {
	case "on":
		o.SetAsync(true)
	case "off":
		o.SetAsync(false)
	}
	return o
}

// TestSimulation runs many seeded fault schedules over 3- and 5-node
// clusters and checks safety after every step and liveness after healing.
// Replay a failure with -sim.seed=N.
func TestSimulation(t *testing.T) {
	if *seedFlag != 0 {
		opts := defaultOptions(*seedFlag)
		opts.TraceLen = *traceLen
		runSeed(t, opts)
		return
	}
	regression(t, simRegressionSeeds, DefaultOptions)
	start := time.Now()
	var total Result
	var failed []string
	for seed := *firstSeed; seed < *firstSeed+uint64(*seedsFlag); seed++ {
		res, err := runOne(defaultOptions(seed))
		if err == nil {
			total.add(res)
			continue
		}
		if !*keepGoing {
			t.Fatalf("%v", err)
		}
		lines := strings.SplitN(err.Error(), "\n", 3)
		failed = append(failed, strings.Join(lines[:min(2, len(lines))], " — "))
	}
	t.Logf("%d seeds in %v (totals of the %d that passed): %+v", *seedsFlag, time.Since(start).Round(time.Millisecond),
		*seedsFlag-len(failed), total)
	if len(failed) > 0 {
		t.Fatalf("%d of %d seeds failed:\n%s", len(failed), *seedsFlag, strings.Join(failed, "\n"))
	}
	// The schedule must actually exercise the faults it claims to.
	if *seedsFlag >= 100 {
		for name, v := range map[string]int{
			"elections": total.Elections, "crashes": total.Crashes, "partitions": total.Partitions,
			"snapshots": total.Snapshots, "reads": total.Reads, "applied": total.Applied,
			"dropped": total.Dropped, "duplicated": total.Duplicated,
			"forged messages": total.Forged, "transfers": total.Transfers,
			"lease reads": total.LeaseReads,
		} {
			if v == 0 {
				t.Errorf("no %s across %d seeds: the schedule does not exercise them", name, *seedsFlag)
			}
		}
		asyncCoverage(t, total, *seedsFlag)
	}
}

// TestSimulationReconfig runs the reconfiguring workload (reconfig.go):
// clusters of 1 to 7 initial voters under every fault of TestSimulation,
// with random membership changes, joiners caught up by log or snapshot,
// crashes in the joint phase, and the membership invariants checked after
// every step. Replay a failure with -run 'TestSimulationReconfig$'
// -sim.seed=N.
func TestSimulationReconfig(t *testing.T) {
	if *seedFlag != 0 {
		opts := reconfigOptions(*seedFlag)
		opts.TraceLen = *traceLen
		res := runSeed(t, opts)
		t.Logf("seed %d: %+v", *seedFlag, res)
		return
	}
	// Seeds that once failed run first, in both modes: under this
	// workload they ended with voters stranded by a leader that removed
	// itself (fixed in core 04751ec and 408ecff; docs/reliability.md), and
	// see reconfigRegressionSeeds.
	regression(t, reconfigRegressionSeeds, ReconfigOptions)
	start := time.Now()
	var total Result
	var failed []string
	for seed := *firstSeed; seed < *firstSeed+uint64(*seedsFlag); seed++ {
		res, err := runOne(reconfigOptions(seed))
		if err == nil {
			total.add(res)
			continue
		}
		lines := strings.SplitN(err.Error(), "\n", 3)
		line := strings.Join(lines[:min(2, len(lines))], " — ")
		if !*keepGoing {
			t.Fatalf("%v", err)
		}
		failed = append(failed, line)
	}
	t.Logf("%d reconfiguring seeds in %v (totals of the %d that passed): %+v", *seedsFlag, time.Since(start).Round(time.Millisecond),
		*seedsFlag-len(failed), total)
	if len(failed) > 0 {
		t.Fatalf("%d of %d seeds failed:\n%s", len(failed), *seedsFlag, strings.Join(failed, "\n"))
	}
	if *seedsFlag >= 100 {
		for name, v := range map[string]int{
			"accepted changes": total.ConfProposed, "refused changes": total.ConfRefused,
			"committed configurations": total.Configs, "joint configurations": total.JointConfigs,
			"removals": total.Removals, "joiners": total.Joiners, "joint-phase crashes": total.JointCrashes,
			"snapshots installed by joiners": total.JoinerSnapshots,
			"dead members replaced":          total.DeadReplaced,
			"snapshots":                      total.Snapshots, "elections": total.Elections, "crashes": total.Crashes,
			"partitions": total.Partitions, "ID-reuse refusals": total.Refusals["id-reused"],
		} {
			if v == 0 {
				t.Errorf("no %s across %d seeds: the schedule does not exercise them", name, *seedsFlag)
			}
		}
		asyncCoverage(t, total, *seedsFlag)
	}
}

// reconfigRegressionSeeds are seeds of TestSimulationReconfig that found
// bugs (see there); 66708: a candidate whose own removal became active
// mid-campaign (through a vote response's commit hint) won the election.
// 70 and 371 (async mode): a lone voter led a term whose vote was not yet
// durable, lost it in a power loss and led the same term again with other
// entries (core c6af6e5: it leads once the vote is durable); 274: such an
// election, now inside Advance, is checked under the configuration active
// then. Async mode also found: 1232, 7870 (a learner that alone could
// complete a lone voter's replacement never learned it committed after the
// voter lost appends it had sent: core 682dd66, vote requests carry a
// commit hint); 19099 (commit stalled when leaving a joint configuration
// that already had a quorum: core ce9ba25); 10979 (a snapshot acknowledged
// while an AckApplied below it was pending); 43428 (a lone voter whose
// commit index a power loss took back below two configuration changes
// committed both, and data after them, under the older one: core 0d04c25
// commits at most up to the second configuration not yet activated).
var reconfigRegressionSeeds = []uint64{70, 274, 371, 674, 1232, 1442, 2276, 2277, 2983, 7870, 10979, 19099, 43428, 66708}

// simRegressionSeeds are seeds of TestSimulation that found bugs; 23113
// (async): an append acknowledgement of entries a newer leader's append
// replaced before they were written left after that Ready (core 7d4edda
// withdraws it; see checkDurableMessages).
var simRegressionSeeds = []uint64{23113}

// regression runs seeds first, in both modes unless -sim.async picks one.
func regression(t *testing.T, seeds []uint64, options func(uint64) Options) {
	t.Helper()
	for _, seed := range seeds {
		for _, async := range []bool{false, true} {
			if *asyncFlag != "" && async != (*asyncFlag == "on") {
				continue
			}
			opts := options(seed)
			opts.SetAsync(async)
			runSeed(t, opts)
		}
	}
}

func runSeed(t *testing.T, opts Options) Result {
	t.Helper()
	res, err := runOne(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return res
}

func runOne(opts Options) (Result, error) {
	s, err := New(opts)
	if err != nil {
		return Result{}, fmt.Errorf("seed %d: %w", opts.Seed, err)
	}
	return s.Run()
}

func (r *Result) add(o Result) {
	r.Steps += o.Steps
	r.Elections += o.Elections
	r.Crashes += o.Crashes
	r.Partitions += o.Partitions
	r.Snapshots += o.Snapshots
	r.Proposed += o.Proposed
	r.Applied += o.Applied
	r.Reads += o.Reads
	r.Delivered += o.Delivered
	r.Dropped += o.Dropped
	r.Duplicated += o.Duplicated
	r.Forged += o.Forged
	r.Transfers += o.Transfers
	r.LeaseReads += o.LeaseReads
	r.ConfProposed += o.ConfProposed
	r.ConfRefused += o.ConfRefused
	r.Configs += o.Configs
	r.JointConfigs += o.JointConfigs
	r.Removals += o.Removals
	r.Joiners += o.Joiners
	r.JointCrashes += o.JointCrashes
	r.InvalidConfChanges += o.InvalidConfChanges
	r.JoinerSnapshots += o.JoinerSnapshots
	r.DeadReplaced += o.DeadReplaced
	r.ElectionsBehind += o.ElectionsBehind
	for k, v := range o.Refusals {
		if r.Refusals == nil {
			r.Refusals = map[string]int{}
		}
		r.Refusals[k] += v
	}
	r.AsyncRuns += o.AsyncRuns
	r.PowerLosses += o.PowerLosses
	r.ProcessCrashes += o.ProcessCrashes
	r.MarkerWrites += o.MarkerWrites
	r.Writes += o.Writes
	r.MergedWrites += o.MergedWrites
	r.Fsyncs += o.Fsyncs
	r.KeptUnsynced += o.KeptUnsynced
	r.LostUnsynced += o.LostUnsynced
	r.LostApplies += o.LostApplies
	r.AckedWrites += o.AckedWrites
}

// asyncCoverage fails t if a run of many seeds with async ones among them
// did not exercise what async mode claims to.
func asyncCoverage(t *testing.T, total Result, seeds int) {
	t.Helper()
	if total.AsyncRuns == 0 || *asyncFlag == "off" {
		return
	}
	for name, v := range map[string]int{
		"power losses": total.PowerLosses, "process crashes": total.ProcessCrashes,
		"commit marker writes": total.MarkerWrites, "merged writes": total.MergedWrites,
		"fsyncs": total.Fsyncs, "unsynced batches kept by a power loss": total.KeptUnsynced,
		"unsynced batches lost": total.LostUnsynced, "applies lost": total.LostApplies,
		"acknowledged writes": total.AckedWrites,
	} {
		if v == 0 {
			t.Errorf("no %s across %d seeds (%d async): async mode does not exercise them", name, seeds, total.AsyncRuns)
		}
	}
}
