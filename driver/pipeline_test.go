package driver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// metricValue reads a gauge or counter (or, for a histogram, its sample
// sum and count) from reg.
func metricValue(t testing.TB, reg *prometheus.Registry, name string) (value, count float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), 0
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), 0
		case m.GetHistogram() != nil:
			return m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0, 0
}

// TestPersistQueueLimit: with a follower's disk stalled, its loop queues
// the persist batches of the leader's appends until MaxPersistQueueBytes
// is reached, then takes no more Readies while the leader goes on with
// the other follower; once the disk returns, the batches queued during
// the stall are merged into few Saves (group commit) and it catches up.
// (A leader cannot fill its own queue one proposal at a time: it holds
// proposals while its write runs, TestLeaderHoldsProposalsDuringWrite.)
func TestPersistQueueLimit(t *testing.T) {
	const limit = 8 << 10
	regs := map[uint64]*prometheus.Registry{}
	var mu sync.Mutex
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
		mu.Lock()
		defer mu.Unlock()
		if regs[cfg.ID] == nil {
			regs[cfg.ID] = prometheus.NewRegistry()
		}
		cfg.MaxPersistQueueBytes = limit
		cfg.Registerer = regs[cfg.ID]
	}))
	lead := c.leader()
	c.propose(lead, "warm-up")
	var f uint64
	for _, id := range c.running() {
		if id != lead {
			f = id
			break
		}
	}
	reg := regs[f]
	queued := func() float64 {
		v, _ := metricValue(t, reg, "rafty_driver_persist_queue_bytes")
		return v
	}
	batchesBefore, savesBefore := metricValue(t, reg, "rafty_driver_save_batches")
	release := c.stores[f].stall()
	defer release()

	cmd := strings.Repeat("x", 1000)
	// One at a time (each committed by the leader and the other
	// follower), each reaching f in an append of its own, until the limit.
	i := 0
	for queued() < limit {
		prev := queued()
		c.propose(lead, fmt.Sprintf("%s%d", cmd, i))
		i++
		await(t, "the append's persist batch queued on the follower", func() bool { return queued() > prev })
	}
	atLimit := queued()
	t.Logf("follower %d: persist queue at %v bytes (limit %d) after %d proposals", f, atLimit, limit, i)
	// More appends reach f's core, but it takes no Ready: the queue stays.
	for range 10 {
		c.propose(lead, fmt.Sprintf("%s%d", cmd, i))
		i++
	}
	driver.BlockLoop(c.nodes[f])()
	if got := queued(); got != atLimit {
		t.Fatalf("persist queue went from %v to %v bytes while at its limit (%d)", atLimit, got, limit)
	}
	release()
	last := c.nodes[lead].Status().Commit
	await(t, "the follower to catch up", func() bool { return c.nodes[f].Status().Applied >= last })
	await(t, "the persist queue to empty", func() bool { return queued() == 0 })
	batches, saves := metricValue(t, reg, "rafty_driver_save_batches")
	batches, saves = batches-batchesBefore, saves-savesBefore
	if saves == 0 || batches <= saves {
		t.Fatalf("%v persist batches in %v Saves: none merged", batches, saves)
	}
	t.Logf("%v persist batches in %v Saves", batches, saves)
}

// TestLeaderHoldsProposalsDuringWrite: while a leader's own entries are
// being written, proposals wait in its queue instead of each taking a
// Ready (and an append per follower); when the write completes they enter
// the core as one batch.
func TestLeaderHoldsProposalsDuringWrite(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newCluster(t, 1, withConfig(func(cfg *driver.Config) { cfg.Registerer = reg }))
	lead := c.leader()
	n := c.nodes[lead]
	c.propose(lead, "warm-up")
	release := c.stores[lead].stall()
	defer release()
	errs := make(chan error, 64)
	propose := func(cmd string) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
			defer cancel()
			_, err := n.Propose(ctx, []byte(cmd))
			errs <- err
		}()
	}
	last := n.Status().LastIndex
	propose("first")
	await(t, "the first proposal in the log", func() bool { return n.Status().LastIndex == last+1 })
	const held = 20
	for i := range held {
		propose(fmt.Sprint("held", i))
	}
	await(t, "the proposals queued", func() bool { return n.Status().PendingProposals >= held+1 })
	driver.BlockLoop(n)()
	if got := n.Status().LastIndex; got != last+1 {
		t.Fatalf("last index %d while the first write runs, want %d: proposals were not held", got, last+1)
	}
	sumBefore, countBefore := metricValue(t, reg, "rafty_driver_proposals_per_batch")
	release()
	for range held + 1 {
		if err := awaitChan(t, "a proposal", errs); err != nil {
			t.Fatalf("proposal: %v", err)
		}
	}
	sum, count := metricValue(t, reg, "rafty_driver_proposals_per_batch")
	if sum-sumBefore != held || count-countBefore > 2 {
		t.Fatalf("the %d held proposals entered the core in %v batches (%v proposals), want one or two", held, count-countBefore, sum-sumBefore)
	}
	if n.Status().LastIndex != last+1+held {
		t.Fatalf("last index %d, want %d", n.Status().LastIndex, last+1+held)
	}
}

// gatedSM blocks Apply while its gate is closed (armed).
type gatedSM struct {
	driver.StateMachine
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{} // signalled when an Apply waits at the gate
}

func (s *gatedSM) Apply(cmds []driver.Command) ([]any, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	return s.StateMachine.Apply(cmds)
}

// arm closes the gate; the returned release opens it.
func (s *gatedSM) arm() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
		})
	}
}

// TestSlowStateMachine: the leader's state machine blocks in Apply. The
// leader keeps its followers (nobody campaigns: the term never changes),
// keeps accepting, replicating and committing proposals (the followers
// apply them all), and stops handing committed entries to its applier
// once MaxApplyQueueBytes of them wait. When Apply returns, everything is
// applied and every proposal gets its result.
func TestSlowStateMachine(t *testing.T) {
	const limit = 4 << 10
	regs := map[uint64]*prometheus.Registry{}
	gates := map[uint64]*gatedSM{}
	c := newCluster(t, 3, withTune(func(rc *core.Config) { rc.CheckQuorum = true }),
		withConfig(func(cfg *driver.Config) {
			cfg.MaxApplyQueueBytes = limit
			if regs[cfg.ID] == nil {
				regs[cfg.ID] = prometheus.NewRegistry()
			}
			cfg.Registerer = regs[cfg.ID]
			g := &gatedSM{StateMachine: cfg.StateMachine, entered: make(chan struct{}, 1)}
			gates[cfg.ID] = g
			cfg.StateMachine = g
		}))
	lead := c.leader()
	c.propose(lead, "warm-up")
	term := c.nodes[lead].Status().Term
	release := gates[lead].arm()
	defer release()

	const count = 40
	cmd := strings.Repeat("y", 500)
	errs := make(chan error, count)
	var want []string
	for i := range count {
		data := fmt.Sprintf("%s%d", cmd, i)
		want = append(want, data)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
			defer cancel()
			_, err := c.nodes[lead].Propose(ctx, []byte(data))
			errs <- err
		}()
	}
	awaitChan(t, "the leader's Apply to block", gates[lead].entered)
	// Replicated and committed: the followers apply everything.
	await(t, "the followers to apply every proposal", func() bool {
		for _, id := range c.followers(lead) {
			for _, w := range want {
				if !c.sms[id].has(w) {
					return false
				}
			}
		}
		return true
	})
	st := c.nodes[lead].Status()
	if st.Role != core.RoleLeader || st.Term != term {
		t.Fatalf("leader %d is %v in term %d with its state machine blocked (was leader in term %d)", lead, st.Role, st.Term, term)
	}
	for _, id := range c.followers(lead) {
		if st := c.nodes[id].Status(); st.Term != term || st.Leader != lead {
			t.Fatalf("follower %d in term %d following %d (want term %d, leader %d)", id, st.Term, st.Leader, term, lead)
		}
	}
	// The applier holds at most the limit (and at least one batch).
	applyQueued, _ := metricValue(t, regs[lead], "rafty_driver_apply_queue_bytes")
	if applyQueued > limit+2*(float64(len(cmd))+64+driver.EnvelopeOverhead) {
		t.Fatalf("%v bytes handed to the blocked applier (limit %d)", applyQueued, limit)
	}
	if st.Commit < st.LastIndex || st.Applied >= st.Commit {
		t.Fatalf("leader: commit %d, last index %d, applied %d: want everything committed and not applied", st.Commit, st.LastIndex, st.Applied)
	}
	t.Logf("leader: commit %d, applied %d, %v bytes handed to the applier (limit %d)", st.Commit, st.Applied, applyQueued, limit)
	release()
	for range count {
		if err := awaitChan(t, "a proposal", errs); err != nil {
			t.Fatalf("proposal: %v", err)
		}
	}
	c.awaitConverged(want...)
	if st := c.nodes[lead].Status(); st.Term != term {
		t.Fatalf("term moved from %d to %d", term, st.Term)
	}
}

// TestStartReapplies: Start returns only once the node has re-applied its
// log up to the commit index it found, so an in-memory state machine is
// caught up the moment Start returns, with no waiting by the caller.
func TestStartReapplies(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	var want []string
	for i := range 30 {
		cmd := fmt.Sprintf("r%d", i)
		c.propose(lead, cmd)
		want = append(want, cmd)
	}
	c.awaitConverged(want...)
	for _, id := range c.ids {
		before := c.sms[id].data()
		c.restart(id) // in-memory state machine: starts empty
		if got := c.sms[id].data(); len(got) < len(before) {
			t.Fatalf("node %d: %d commands applied when Start returned, %d before the restart", id, len(got), len(before))
		}
	}
	c.propose(c.leader(), "after")
	c.awaitConverged(append(want, "after")...)
}

// TestStopWithBlockedApplier: Stop while the applier is inside a blocked
// Apply with more batches queued behind it waits for that Apply to
// return, then ends every goroutine (goleak, TestMain) and fails the
// proposals still waiting.
func TestStopWithBlockedApplier(t *testing.T) {
	var g *gatedSM
	c := newCluster(t, 1, withConfig(func(cfg *driver.Config) {
		g = &gatedSM{StateMachine: cfg.StateMachine, entered: make(chan struct{}, 1)}
		cfg.StateMachine = g
	}))
	n := c.nodes[c.leader()]
	c.propose(1, "warm-up")
	release := g.arm()
	defer release()
	errs := make(chan error, 5)
	for i := range 5 {
		go func() {
			_, err := n.Propose(context.Background(), []byte(fmt.Sprintf("s%d", i)))
			errs <- err
		}()
	}
	awaitChan(t, "Apply to block", g.entered)
	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop() }()
	await(t, "the node to stop taking work", func() bool { return n.Status().Stopped })
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) with Apply in flight", err)
	default:
	}
	release()
	if err := awaitChan(t, "Stop", stopped); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	delete(c.nodes, 1)
	for range 5 {
		err := awaitChan(t, "a proposal", errs)
		if err != nil && !strings.Contains(err.Error(), "stopped") {
			t.Fatalf("proposal: %v", err)
		}
	}
}

// failingStorage fails every Save once armed.
type failingStorage struct {
	driver.Storage
	fail *atomic.Bool
}

var errDiskGone = errors.New("test: disk gone")

func (s failingStorage) Save(hs core.HardState, ents []core.Entry) error {
	if s.fail.Load() {
		return errDiskGone
	}
	return s.Storage.Save(hs, ents)
}

// TestStorageFailureStopsNode: a Save that fails on the persister stops
// the node as it always did: pending proposals fail, and Err and Stop
// report the storage's error.
func TestStorageFailureStopsNode(t *testing.T) {
	var fail atomic.Bool
	c := newCluster(t, 1, withConfig(func(cfg *driver.Config) {
		cfg.Storage = failingStorage{Storage: cfg.Storage, fail: &fail}
	}))
	n := c.nodes[c.leader()]
	c.propose(1, "ok")
	fail.Store(true)
	_, err := n.Propose(context.Background(), []byte("lost"))
	if !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("proposal during the failure: %v, want ErrStopped", err)
	}
	<-n.Done()
	if err := n.Err(); !errors.Is(err, errDiskGone) {
		t.Fatalf("Err: %v, want the storage's error", err)
	}
	if err := n.Stop(); !errors.Is(err, errDiskGone) {
		t.Fatalf("Stop: %v, want the storage's error", err)
	}
	delete(c.nodes, 1)
}
