package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/internal/powerloss"
)

// faultKind names a kind of fault; the names are what -chaos.kinds takes.
type faultKind string

const (
	fKillRandom   faultKind = "kill-random"        // kill -9 of a random node, then restart
	fKillLeader   faultKind = "kill-leader"        // kill -9 of the leader, then restart
	fKillMajority faultKind = "kill-majority"      // kill -9 of a majority at once, then restart
	fKillAll      faultKind = "kill-all"           // kill -9 of every node at once, then restart (the page cache survives: not a power loss)
	fPauseLeader  faultKind = "pause-leader"       // SIGSTOP the leader past the election timeout, SIGCONT, probe it with reads
	fPauseRandom  faultKind = "pause-random"       // the same on a random node
	fIsoLeader    faultKind = "isolate-leader"     // cut the leader off from every peer
	fSplit        faultKind = "partition-majority" // majority/minority split (the leader on either side)
	fBridge       faultKind = "partition-bridge"   // two sides that only one bridge node sees both of
	fOneWay       faultKind = "partition-one-way"  // asymmetric: some directions of some links cut
	fLatency      faultKind = "latency"            // added latency on every peer link
	fResets       faultKind = "conn-resets"        // peer connections reset repeatedly
	fSlowDisk     faultKind = "slow-disk"          // the leader's WAL writes made slow: it must lose leadership, not stall the cluster
	fBadInput     faultKind = "bad-input"          // garbage, truncated, oversized and malformed input on peer and client ports
	// Power loss (internal/powerloss under the WAL, snapshots and Pebble
	// of the chaos build): kill -9, then the node's data directory loses
	// what was not synced, or keeps a random part of it, then restart.
	fPowerLoss         faultKind = "power-loss"          // one node (the leader half of the time)
	fPowerLossIsolated faultKind = "power-loss-isolated" // the same, cut off from its peers first and restarted cut off, with serializable reads sent to it (issue 18)
	fPowerLossAll      faultKind = "power-loss-all"      // every node at once: a datacenter power cut
)

var allKinds = []faultKind{fKillRandom, fKillLeader, fKillMajority, fKillAll, fPauseLeader, fPauseRandom,
	fIsoLeader, fSplit, fBridge, fOneWay, fLatency, fResets, fSlowDisk, fBadInput, fPowerLoss, fPowerLossIsolated, fPowerLossAll}

// supported reports whether cluster capabilities allow kind.
func (k faultKind) supported(cp caps) bool {
	switch k {
	case fBridge, fOneWay:
		return cp.oneWay
	case fLatency:
		return cp.latency
	case fResets:
		return cp.reset
	case fSlowDisk:
		return cp.slowDisk
	case fBadInput:
		return cp.badInput
	case fMemberAdd, fMemberRemove, fMemberRemoveLeader, fMemberReplace, fMemberPromote:
		return cp.membership
	case fPowerLoss, fPowerLossIsolated, fPowerLossAll:
		return cp.powerCut
	}
	return true
}

// step is one fault of a schedule: its kind, how long it is held, and
// random numbers that pick its targets when it runs (the leader is only
// known then).
type step struct {
	kind faultKind
	hold time.Duration
	r1   uint64
	r2   uint64
	d    time.Duration // kind-specific: latency, disk delay, how long a power-lost node stays cut off after its restart
}

func (s step) String() string {
	extra := ""
	switch s.kind {
	case fLatency:
		extra = fmt.Sprintf(" latency=%v", s.d)
	case fSlowDisk:
		extra = fmt.Sprintf(" disk-delay=%v", s.d)
	case fPowerLossIsolated:
		extra = fmt.Sprintf(" isolated-after-restart=%v", s.d)
	}
	return fmt.Sprintf("%s hold=%v%s", s.kind, s.hold.Round(time.Millisecond), extra)
}

// plan is a schedule, entirely determined by its seed, the cluster size
// and the kinds it may draw from (or the kinds it must run, in order).
type plan struct {
	seed  uint64
	nodes int
	steps []step
}

// newPlan draws n steps from seed. With forced set, the steps are exactly
// those kinds in that order; otherwise each is drawn from kinds.
func newPlan(seed uint64, nodes, n int, kinds []faultKind, forced bool) plan {
	// Kinds and parameters come from separate streams, so a schedule
	// replayed with its kinds forced gets the same parameters.
	krng := rand.New(rand.NewPCG(seed, 0x4b1d))
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	p := plan{seed: seed, nodes: nodes}
	if forced {
		n = len(kinds)
	}
	for i := range n {
		k := kinds[i%len(kinds)]
		if !forced {
			k = kinds[krng.IntN(len(kinds))]
		}
		s := step{kind: k, r1: rng.Uint64(), r2: rng.Uint64()}
		between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
		switch k {
		case fKillAll, fPowerLossAll:
			s.hold = between(300*time.Millisecond, 1500*time.Millisecond)
		case fPowerLoss:
			s.hold = between(500*time.Millisecond, 2500*time.Millisecond)
		case fPowerLossIsolated:
			s.hold = between(500*time.Millisecond, 1500*time.Millisecond)
			s.d = between(1500*time.Millisecond, 3*time.Second).Round(time.Millisecond)
		case fKillRandom, fKillLeader, fKillMajority:
			s.hold = between(500*time.Millisecond, 2500*time.Millisecond)
		case fPauseLeader, fPauseRandom:
			// Longer than the longest election timeout, shorter than the
			// workload's operation timeout so that requests queued on
			// the paused node are answered when it wakes.
			s.hold = between(maxElectionTimeout+200*time.Millisecond, 2500*time.Millisecond)
		case fLatency:
			s.hold = between(1500*time.Millisecond, 3*time.Second)
			s.d = between(10*time.Millisecond, 150*time.Millisecond).Round(time.Millisecond)
		case fSlowDisk:
			s.hold = between(5*time.Second, 7*time.Second)
			s.d = between(1500*time.Millisecond, 3*time.Second).Round(time.Millisecond)
		case fBadInput:
			s.hold = 0
		case fMemberAdd, fMemberRemove, fMemberRemoveLeader, fMemberReplace, fMemberPromote:
			// How long a removed node stays up, or a replaced one down.
			s.hold = between(500*time.Millisecond, 2500*time.Millisecond)
		default:
			s.hold = between(1500*time.Millisecond, 3500*time.Millisecond)
		}
		p.steps = append(p.steps, s)
	}
	return p
}

func (p plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d, %d nodes:", p.seed, p.nodes)
	for i, s := range p.steps {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, s)
	}
	return b.String()
}

// kindsString is the -chaos.kinds value of a list.
func kindsString(ks []faultKind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// parseKinds parses a -chaos.kinds value.
func parseKinds(s string) ([]faultKind, error) {
	var ks []faultKind
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(allKinds, faultKind(f)) && !isMemberKind(faultKind(f)) {
			return nil, fmt.Errorf("unknown fault kind %q (known: %s)", f, kindsString(append(slices.Clone(allKinds), memberKinds...)))
		}
		ks = append(ks, faultKind(f))
	}
	return ks, nil
}

// faultEvent is one injected fault, timed on the history's clock.
type faultEvent struct {
	start, end int64
	desc       string
}

// env is what a running schedule's steps act on.
type env struct {
	c    cluster
	nc   *nodeClients
	w    *workload
	logf func(string, ...any)

	mu     sync.Mutex
	events []faultEvent
	faults int // faults injected
	// measurements for the report
	slowDisks []slowDiskResult
	bad       badInputResult
	probes    int // reads sent to a node just resumed from a pause
	// cutIncs are, per node, the incarnations that started on a data
	// directory a power cut had gone through.
	cutIncs map[int][]int
	cuts    []powerloss.CutReport

	// The membership nemesis (membership_test.go).
	bin              string       // the kvnode binary, for `kvnode member`
	ms               *memberState // kept across the schedules on one cluster
	ms2              memberStats  // this schedule's figures
	memberViolations []string
}

type slowDiskResult struct {
	node         int
	delay        time.Duration
	newLeader    time.Duration // when another node led; 0 if none did
	writesDuring int64
	probeWrites  int // by a client that avoids the slow node
}

func (e *env) now() int64 { return e.w.h.now() }

// record logs a fault that ran from start until now.
func (e *env) record(start int64, format string, args ...any) {
	desc := fmt.Sprintf(format, args...)
	e.mu.Lock()
	e.events = append(e.events, faultEvent{start: start, end: e.now(), desc: desc})
	e.faults++
	e.mu.Unlock()
	e.logf("  [%s-%s] %s", fmtTime(start), fmtTime(e.now()), desc)
}

// statusAll asks every live, unpaused node for its status (nil entries for
// the others and for those that did not answer in time).
func statusAll(c cluster, nc *nodeClients, hash bool, timeout time.Duration) []*kvpb.StatusResponse {
	out := make([]*kvpb.StatusResponse, c.Size())
	var wg sync.WaitGroup
	for _, i := range c.Members() {
		if !c.Alive(i) || c.Paused(i) {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if st, err := nc.kv[i].Status(ctx, &kvpb.StatusRequest{Hash: hash}); err == nil {
				out[i] = st
			}
		})
	}
	wg.Wait()
	return out
}

// leader returns the index of the node that leads in the highest term
// among the answers, or -1.
func leader(c cluster, nc *nodeClients) int {
	best, term := -1, uint64(0)
	for i, st := range statusAll(c, nc, false, 500*time.Millisecond) {
		if st != nil && st.GetRole() == "leader" && st.GetTerm() >= term {
			best, term = i, st.GetTerm()
		}
	}
	return best
}

// waitLeader waits up to timeout for a leader, or returns -1.
func waitLeader(c cluster, nc *nodeClients, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		if l := leader(c, nc); l >= 0 || time.Now().After(deadline) {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pickLeaderOr returns the leader, or (none found) the node r picks.
func (e *env) pickLeaderOr(r uint64) (int, string) {
	if l := waitLeader(e.c, e.nc, 3*time.Second); l >= 0 {
		return l, "leader"
	}
	m := e.c.Members()
	return m[r%uint64(len(m))], "no leader known; random"
}

// pickTarget returns the node r picks, or with leader the leader (see
// pickLeaderOr), and why it is the one.
func (e *env) pickTarget(r uint64, leader bool) (int, string) {
	if leader {
		return e.pickLeaderOr(r)
	}
	m := e.c.Members()
	return m[r%uint64(len(m))], "random"
}

// perm returns a permutation of the node indexes drawn from r.
func perm(n int, r uint64) []int {
	return rand.New(rand.NewPCG(r, 1)).Perm(n)
}

// permOf returns a permutation of the slots in members drawn from r.
func permOf(members []int, r uint64) []int {
	out := make([]int, len(members))
	for k, p := range perm(len(members), r) {
		out[k] = members[p]
	}
	return out
}

func ids(is []int) string {
	s := make([]string, len(is))
	for k, i := range is {
		s[k] = fmt.Sprint(i + 1)
	}
	return "{" + strings.Join(s, ",") + "}"
}

// cutBetween returns the cuts separating a from b in both directions.
func cutBetween(a, b []int) []pair {
	var cuts []pair
	for _, x := range a {
		for _, y := range b {
			cuts = append(cuts, pair{x, y}, pair{y, x})
		}
	}
	return cuts
}

// restart starts the given nodes and waits until each is ready.
func (e *env) restart(is ...int) error {
	start := time.Now()
	for _, i := range is {
		if err := e.c.Start(i); err != nil {
			return err
		}
	}
	started := time.Since(start)
	for _, i := range is {
		if err := waitReady(e.c, i, 30*time.Second); err != nil {
			return err
		}
	}
	if len(is) > 0 {
		e.logf("    restarted %s in %v, ready after %v", ids(is), started.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// run injects one step and undoes it. Errors are the harness failing to
// inject or undo (a node that does not come back is one).
func (e *env) run(ctx context.Context, s step) error {
	members := e.c.Members()
	n := len(members)
	start := e.now()
	hold := func() { sleepCtx(ctx, s.hold) }
	switch s.kind {
	case fKillRandom, fKillLeader:
		i, why := e.pickTarget(s.r1, s.kind == fKillLeader)
		if err := e.c.Kill(i); err != nil {
			return err
		}
		hold()
		err := e.restart(i)
		e.record(start, "kill -9 node %d (%s), restart after %v", i+1, why, s.hold.Round(time.Millisecond))
		return err

	case fKillMajority, fKillAll:
		victims := permOf(members, s.r1)[:n/2+1]
		what := "a majority"
		if s.kind == fKillAll {
			victims, what = permOf(members, s.r1), "every node"
		}
		sort.Ints(victims)
		if err := e.c.Kill(victims...); err != nil {
			return err
		}
		hold()
		err := e.restart(victims...)
		e.record(start, "kill -9 of %s %s at once, restart after %v", what, ids(victims), s.hold.Round(time.Millisecond))
		return err

	case fPauseLeader, fPauseRandom:
		i, why := e.pickTarget(s.r1, s.kind == fPauseLeader)
		if err := e.c.Pause(i); err != nil {
			return err
		}
		hold()
		if err := e.c.Resume(i); err != nil {
			return err
		}
		// The woken node may still believe it leads: ask it for every
		// key at once, and again a little later. A stale answer shows
		// up in the history as a read that misses a write acknowledged
		// before it was sent.
		probes := e.probe(i, 3, 100*time.Millisecond)
		e.record(start, "SIGSTOP node %d (%s) for %v, SIGCONT, %d probe reads on it", i+1, why, s.hold.Round(time.Millisecond), probes)
		return nil

	case fIsoLeader:
		l, why := e.pickLeaderOr(s.r1)
		var others []int
		for _, i := range members {
			if i != l {
				others = append(others, i)
			}
		}
		if err := e.c.Partition(cutBetween([]int{l}, others)); err != nil {
			return err
		}
		hold()
		err := e.c.Heal()
		e.record(start, "isolate node %d (%s) from its peers for %v", l+1, why, s.hold.Round(time.Millisecond))
		return err

	case fSplit:
		l := leader(e.c, e.nc)
		p := permOf(members, s.r1)
		minority := p[:1+int(s.r2%uint64((n-1)/2))]
		if l >= 0 && (s.r2>>8)%2 == 0 && !slices.Contains(minority, l) {
			minority[0] = l // the leader in the minority, half of the time
		}
		var majority []int
		for _, i := range members {
			if !slices.Contains(minority, i) {
				majority = append(majority, i)
			}
		}
		if err := e.c.Partition(cutBetween(minority, majority)); err != nil {
			return err
		}
		hold()
		err := e.c.Heal()
		e.record(start, "partition minority %s | majority %s (leader was %d) for %v", ids(minority), ids(majority), l+1, s.hold.Round(time.Millisecond))
		return err

	case fBridge:
		p := permOf(members, s.r1)
		bridge, rest := p[0], p[1:]
		a, b := rest[:len(rest)/2], rest[len(rest)/2:]
		if err := e.c.Partition(cutBetween(a, b)); err != nil {
			return err
		}
		hold()
		err := e.c.Heal()
		e.record(start, "partition %s | %s with node %d bridging both (leader was %d) for %v", ids(a), ids(b), bridge+1, leader(e.c, e.nc)+1, s.hold.Round(time.Millisecond))
		return err

	case fOneWay:
		var cuts []pair
		var desc string
		x, why := e.pickLeaderOr(s.r1)
		if (s.r2>>4)%2 == 1 {
			x, why = members[s.r1%uint64(n)], "random"
		}
		switch s.r2 % 3 {
		case 0:
			for _, y := range members {
				if y != x {
					cuts = append(cuts, pair{y, x})
				}
			}
			desc = fmt.Sprintf("node %d (%s) receives from nobody but can send", x+1, why)
		case 1:
			for _, y := range members {
				if y != x {
					cuts = append(cuts, pair{x, y})
				}
			}
			desc = fmt.Sprintf("node %d (%s) sends to nobody but can receive", x+1, why)
		default:
			rng := rand.New(rand.NewPCG(s.r1, s.r2))
			var names []string
			for _, a := range members {
				for _, b := range members {
					if a != b && rng.IntN(3) == 0 {
						cuts = append(cuts, pair{a, b})
						names = append(names, fmt.Sprintf("%d->%d", a+1, b+1))
					}
				}
			}
			desc = "one-way cuts " + strings.Join(names, " ")
		}
		if err := e.c.Partition(cuts); err != nil {
			return err
		}
		hold()
		err := e.c.Heal()
		e.record(start, "%s for %v", desc, s.hold.Round(time.Millisecond))
		return err

	case fLatency:
		if err := e.c.SetLatency(s.d); err != nil {
			return err
		}
		hold()
		err := e.c.SetLatency(0)
		e.record(start, "%v latency on every peer link for %v", s.d, s.hold.Round(time.Millisecond))
		return err

	case fResets:
		resets := 0
		for end := time.Now().Add(s.hold); time.Now().Before(end) && ctx.Err() == nil; resets++ {
			if err := e.c.ResetConns(); err != nil {
				return err
			}
			sleepCtx(ctx, 300*time.Millisecond)
		}
		e.record(start, "reset every peer connection %d times over %v", resets, s.hold.Round(time.Millisecond))
		return nil

	case fSlowDisk:
		return e.slowDisk(ctx, s, start)

	case fPowerLoss, fPowerLossIsolated, fPowerLossAll:
		return e.powerLoss(ctx, s, start)

	case fMemberAdd, fMemberRemove, fMemberRemoveLeader, fMemberReplace, fMemberPromote:
		return e.membership(ctx, s, start)

	case fBadInput:
		i := members[s.r1%uint64(n)]
		r := badInput(e.c, i, s.r2)
		e.mu.Lock()
		e.bad.add(r)
		e.mu.Unlock()
		e.record(start, "bad input to node %d: %d peer-port and %d client-port attacks", i+1, r.peerSent, r.clientSent)
		return nil // what went wrong is in e.bad, a violation
	}
	return fmt.Errorf("unknown fault kind %q", s.kind)
}

// powerLoss kills one node (or every node), cuts the power of its data
// directory, and restarts it on what is left. power-loss-isolated cuts
// the node off from its peers first and keeps it cut off for s.d after
// its restart, with serializable reads sent to it meanwhile: a member
// must never answer one with an older state than it answered before
// (issue 18).
func (e *env) powerLoss(ctx context.Context, s step, start int64) error {
	members := e.c.Members()
	victims, what := permOf(members, s.r1), "every node at once"
	isolated := false
	if s.kind != fPowerLossAll {
		i, why := e.pickTarget(s.r1, (s.r2>>8)%2 == 0)
		victims, what = []int{i}, fmt.Sprintf("node %d (%s)", i+1, why)
		isolated = s.kind == fPowerLossIsolated
	}
	sort.Ints(victims)
	if isolated {
		var others []int
		for _, i := range members {
			if i != victims[0] {
				others = append(others, i)
			}
		}
		if err := e.c.Partition(cutBetween(victims, others)); err != nil {
			return err
		}
		// Let the workload read from it while it is cut off, before
		// the power goes.
		e.probeKind(victims[0], opSGet, 2, 100*time.Millisecond)
	}
	if err := e.c.Kill(victims...); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(s.r2, 0xc07))
	var reps []string
	for _, i := range victims {
		rep, err := e.c.PowerCut(i, rng)
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.cuts = append(e.cuts, rep)
		e.mu.Unlock()
		reps = append(reps, fmt.Sprintf("node %d: %s", i+1, rep))
	}
	sleepCtx(ctx, s.hold)
	if !isolated {
		err := e.restart(victims...)
		e.noteCut(victims)
		e.record(start, "power loss of %s, restart after %v; %s", what, s.hold.Round(time.Millisecond), strings.Join(reps, "; "))
		return err
	}
	i := victims[0]
	if err := e.c.Start(i); err != nil {
		return err
	}
	e.noteCut(victims)
	// Cut off, it knows no leader and is not ready; it serves reads once
	// it has re-applied what it had.
	probes := 0
	for end := time.Now().Add(s.d); time.Now().Before(end) && ctx.Err() == nil; {
		probes += e.probeKind(i, opSGet, 1, 0)
		sleepCtx(ctx, 200*time.Millisecond)
	}
	if err := e.c.Heal(); err != nil {
		return err
	}
	err := waitReady(e.c, i, 30*time.Second)
	e.record(start, "power loss of %s cut off from its peers, restart after %v still cut off for %v (%d serializable probe reads), heal; %s",
		what, s.hold.Round(time.Millisecond), s.d, probes, strings.Join(reps, "; "))
	return err
}

// noteCut records that the nodes' current incarnations started after a
// power cut.
func (e *env) noteCut(is []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cutIncs == nil {
		e.cutIncs = map[int][]int{}
	}
	for _, i := range is {
		e.cutIncs[i] = append(e.cutIncs[i], e.c.Incarnation(i))
	}
}

// probe sends rounds of linearizable reads of every contended key to node
// i, the rounds gap apart, and returns how many it sent. They are part of
// the history.
func (e *env) probe(i, rounds int, gap time.Duration) int {
	return e.probeKind(i, opGet, rounds, gap)
}

// probeKind is probe with reads of kind k.
func (e *env) probeKind(i int, kind opKind, rounds int, gap time.Duration) int {
	var wg sync.WaitGroup
	sent := 0
	for r := range rounds {
		if r > 0 {
			time.Sleep(gap)
		}
		for key := range e.w.cfg.keys {
			sent++
			wg.Go(func() {
				o := op{Proc: int(e.w.h.proc.Add(1)), Worker: -1, Kind: kind, Key: e.w.cfg.key(key), Node: i}
				e.w.do(o)
			})
		}
	}
	wg.Wait()
	e.mu.Lock()
	e.probes += sent
	e.mu.Unlock()
	return sent
}

// slowDisk makes the leader's WAL writes slow for s.hold and watches what
// the cluster does: another node must take over (the slow leader's loop
// stops heartbeating while it waits for its disk), and writes must go on.
func (e *env) slowDisk(ctx context.Context, s step, start int64) error {
	l, why := e.pickLeaderOr(s.r1)
	sts := statusAll(e.c, e.nc, false, 500*time.Millisecond)
	var term uint64
	if sts[l] != nil {
		term = sts[l].GetTerm()
	}
	if err := e.c.SetDiskDelay(l, s.d); err != nil {
		return err
	}
	began := time.Now()
	ackedBefore := e.w.acked.Load()
	res := slowDiskResult{node: l, delay: s.d}
	// A writer that avoids the slow node measures whether the cluster
	// goes on without it (the workload's clients also send to the slow
	// node, and wait on it).
	pctx, stopProbe := context.WithCancel(ctx)
	probeDone := make(chan int)
	go func() {
		ok := 0
		for k := 0; pctx.Err() == nil; k++ {
			m := slices.DeleteFunc(e.c.Members(), func(x int) bool { return x == l })
			node := m[k%len(m)]
			o := e.w.do(op{Proc: int(e.w.h.proc.Add(1)), Worker: -1, Kind: opPut, Key: e.w.cfg.key(k % e.w.cfg.keys),
				Value: fmt.Sprintf("slowdisk.%d.%d.%d", start, l, k), Node: node})
			if o.Out == outOK {
				ok++
			} else {
				sleepCtx(pctx, 50*time.Millisecond)
			}
		}
		probeDone <- ok
	}()
	for time.Since(began) < s.hold && ctx.Err() == nil {
		if res.newLeader == 0 {
			for i, st := range statusAll(e.c, e.nc, false, 300*time.Millisecond) {
				if i != l && st != nil && st.GetRole() == "leader" && st.GetTerm() > term {
					res.newLeader = time.Since(began)
				}
			}
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	res.writesDuring = e.w.acked.Load() - ackedBefore
	stopProbe()
	res.probeWrites = <-probeDone
	if err := e.c.SetDiskDelay(l, 0); err != nil {
		return err
	}
	e.mu.Lock()
	e.slowDisks = append(e.slowDisks, res)
	e.mu.Unlock()
	outcome := "no other node took over"
	if res.newLeader > 0 {
		outcome = fmt.Sprintf("another node led after %v", res.newLeader.Round(10*time.Millisecond))
	}
	e.record(start, "slow disk (+%v per WAL write) on node %d (%s) for %v: %s; %d writes acknowledged meanwhile, %d of them by a client of the other nodes",
		s.d, l+1, why, s.hold.Round(time.Millisecond), outcome, res.writesDuring, res.probeWrites)
	return nil
}

// healAll undoes every fault: network healed, latency and disk delays
// removed, paused nodes resumed, dead ones restarted, and waits until
// every node is ready.
func (e *env) healAll() error {
	c := e.c
	if err := c.Heal(); err != nil {
		return err
	}
	if c.caps().latency {
		if err := c.SetLatency(0); err != nil {
			return err
		}
	}
	var dead []int
	for _, i := range c.Members() {
		if c.caps().slowDisk {
			if err := c.SetDiskDelay(i, 0); err != nil {
				return err
			}
		}
		if c.Paused(i) {
			if err := c.Resume(i); err != nil {
				return err
			}
		}
		if !c.Alive(i) {
			dead = append(dead, i)
		}
	}
	if len(dead) > 0 {
		e.logf("  restarting nodes %s, which died outside the schedule", ids(dead))
	}
	if err := e.restart(dead...); err != nil {
		return err
	}
	for _, i := range c.Members() {
		if err := waitReady(c, i, 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}
