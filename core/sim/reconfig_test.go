package sim

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func TestQuorumsIntersect(t *testing.T) {
	simple := func(v ...uint64) core.Membership { return core.Membership{Voters: v} }
	joint := func(in, out []uint64) core.Membership { return core.Membership{Voters: in, OutgoingVoters: out} }
	for _, tc := range []struct {
		name string
		a, b core.Membership
		want bool
	}{
		{"same", simple(1, 2, 3), simple(1, 2, 3), true},
		{"add one voter", simple(1, 2, 3), simple(1, 2, 3, 4), true},
		{"remove one voter", simple(1, 2, 3, 4), simple(1, 2, 3), true},
		{"swap one voter at once", simple(1, 2, 3), simple(1, 2, 4), false},
		{"two voters added at once", simple(1, 2, 3), simple(1, 2, 3, 4, 5), false},
		{"two voters swapped at once", simple(1, 2, 3), simple(1, 4, 5), false},
		{"disjoint", simple(1), simple(2), false},
		{"one to two", simple(1), simple(1, 2), true},
		{"even to odd", simple(1, 2), simple(2, 3, 4), false},
		{"enter joint", simple(1, 2, 3), joint([]uint64{1, 4, 5}, []uint64{1, 2, 3}), true},
		{"leave joint", joint([]uint64{1, 4, 5}, []uint64{1, 2, 3}), simple(1, 4, 5), true},
		{"skip the joint step", simple(1, 2, 3), simple(1, 4, 5), false},
		{"joint two steps apart", joint([]uint64{4, 5, 6}, []uint64{1, 2, 3}), simple(7, 8, 9), false},
		{"learners never count", core.Membership{Voters: []uint64{1}, Learners: []uint64{2, 3}}, simple(2, 3), false},
	} {
		got, err := quorumsIntersect(tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("%s: quorumsIntersect(%s, %s) = %v, %v; want %v", tc.name, fmtMembership(tc.a), fmtMembership(tc.b), got, err, tc.want)
		}
		// Symmetric.
		if got2, _ := quorumsIntersect(tc.b, tc.a); got2 != got {
			t.Errorf("%s: not symmetric", tc.name)
		}
	}
}

func TestStructuralStep(t *testing.T) {
	simple := func(v ...uint64) core.Membership { return core.Membership{Voters: v} }
	joint := func(in, out []uint64) core.Membership { return core.Membership{Voters: in, OutgoingVoters: out} }
	for _, tc := range []struct {
		name       string
		prev, next core.Membership
		ok         bool
	}{
		{"learner added", simple(1, 2), core.Membership{Voters: []uint64{1, 2}, Learners: []uint64{3}}, true},
		{"one voter", simple(1, 2), simple(1, 2, 3), true},
		{"two voters", simple(1, 2), simple(1, 2, 3, 4), false},
		{"enter joint", simple(1, 2, 3), joint([]uint64{1, 2, 4, 5}, []uint64{1, 2, 3}), true},
		{"enter joint with wrong outgoing half", simple(1, 2, 3), joint([]uint64{1, 2, 4, 5}, []uint64{1, 2}), false},
		{"leave joint", joint([]uint64{1, 2, 4, 5}, []uint64{1, 2, 3}), simple(1, 2, 4, 5), true},
		{"leave joint elsewhere", joint([]uint64{1, 2, 4, 5}, []uint64{1, 2, 3}), simple(1, 2, 4), false},
		{"joint after joint", joint([]uint64{1, 4}, []uint64{1, 2, 3}), joint([]uint64{5, 6}, []uint64{1, 4}), false},
	} {
		if err := structuralStep(tc.prev, tc.next); (err == nil) != tc.ok {
			t.Errorf("%s: structuralStep(%s, %s) = %v, want ok=%v", tc.name, fmtMembership(tc.prev), fmtMembership(tc.next), err, tc.ok)
		}
	}
}

// TestFailureNamesReplay: a failure of either workload prints its seed and
// the command that replays it.
func TestFailureNamesReplay(t *testing.T) {
	for _, tc := range []struct {
		reconfig bool
		want     string
	}{
		{false, "-run 'TestSimulation$' -sim.seed=42"},
		{true, "-run 'TestSimulationReconfig$' -sim.seed=42"},
	} {
		f := &Failure{Seed: 42, Step: 7, Err: errTest, Reconfig: tc.reconfig}
		if got := f.Error(); !contains(got, "seed 42 step 7") || !contains(got, tc.want) {
			t.Errorf("Failure.Error() = %q, want the seed and %q", got, tc.want)
		}
	}
}

// TestFailureNamesMode: a failure names its mode, and its replay command
// forces the mode when it is not the one the seed chooses.
func TestFailureNamesMode(t *testing.T) {
	var asyncSeed, syncSeed uint64
	for seed := uint64(1); asyncSeed == 0 || syncSeed == 0; seed++ {
		if AsyncSeed(seed) {
			asyncSeed = seed
		} else {
			syncSeed = seed
		}
	}
	for _, tc := range []struct {
		seed       uint64
		async      bool
		want, flag string
	}{
		{asyncSeed, true, "(async mode)", ""},
		{syncSeed, false, "(sync mode)", ""},
		{asyncSeed, false, "(sync mode)", " -sim.async=off"},
		{syncSeed, true, "(async mode)", " -sim.async=on"},
	} {
		got := (&Failure{Seed: tc.seed, Err: errTest, Async: tc.async}).Error()
		replay := fmt.Sprintf("-sim.seed=%d%s -v", tc.seed, tc.flag)
		if !contains(got, tc.want) || !contains(got, replay) {
			t.Errorf("Failure{Seed: %d, Async: %v}.Error() = %q, want %q and %q", tc.seed, tc.async, got, tc.want, replay)
		}
	}
}

// TestAsyncSeedShare: about half the seeds run in async mode, in both
// cluster sizes of DefaultOptions and among lease seeds.
func TestAsyncSeedShare(t *testing.T) {
	counts := map[string][2]int{}
	for seed := uint64(1); seed <= 4000; seed++ {
		o := DefaultOptions(seed)
		for _, k := range []string{"all", fmt.Sprintf("nodes=%d", o.Nodes), fmt.Sprintf("lease=%v", o.LeaseReads)} {
			c := counts[k]
			c[boolInt(o.Async)]++
			counts[k] = c
		}
		if o.Async && (o.MaxApplyingBytes == 0 || o.MaxPersistQueueBytes == 0) {
			t.Fatalf("seed %d: async without limits: %+v", seed, o)
		}
	}
	for k, c := range counts {
		if share := float64(c[1]) / float64(c[0]+c[1]); share < 0.4 || share > 0.6 {
			t.Errorf("%s: %.2f of the seeds are async (%d of %d), want about half", k, share, c[1], c[0]+c[1])
		}
	}
}

var errTest = testError("boom")

type testError string

func (e testError) Error() string { return string(e) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
