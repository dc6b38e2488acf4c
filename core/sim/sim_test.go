package sim

import (
	"flag"
	"testing"
	"time"
)

var (
	seedsFlag = flag.Int("sim.seeds", 500, "number of seeds TestSimulation runs")
	seedFlag  = flag.Uint64("sim.seed", 0, "run only this seed, with a full trace")
	firstSeed = flag.Uint64("sim.first", 1, "first seed of the range")
)

// TestSimulation runs many seeded fault schedules over 3- and 5-node
// clusters and checks safety after every step and liveness after healing.
// Replay a failure with -sim.seed=N.
func TestSimulation(t *testing.T) {
	if *seedFlag != 0 {
		opts := DefaultOptions(*seedFlag)
		opts.TraceLen = 400
		runSeed(t, opts)
		return
	}
	start := time.Now()
	var total Result
	for seed := *firstSeed; seed < *firstSeed+uint64(*seedsFlag); seed++ {
		res := runSeed(t, DefaultOptions(seed))
		if t.Failed() {
			return
		}
		total.add(res)
	}
	t.Logf("%d seeds in %v: %+v", *seedsFlag, time.Since(start).Round(time.Millisecond), total)
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
	}
}

func runSeed(t *testing.T, opts Options) Result {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("seed %d: %v", opts.Seed, err)
	}
	res, err := s.Run()
	if err != nil {
		t.Fatalf("%v", err)
	}
	return res
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
}
