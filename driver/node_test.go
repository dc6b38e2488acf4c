package driver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// TestSingleNode: a one-voter cluster commits on its own write.
func TestSingleNode(t *testing.T) {
	c := newCluster(t, 1)
	if lead := c.leader(); lead != 1 {
		t.Fatalf("leader %d", lead)
	}
	for i := range 10 {
		c.propose(1, fmt.Sprintf("c%d", i))
	}
	c.read(1)
	if got := len(c.sms[1].data()); got != 10 {
		t.Fatalf("applied %d commands", got)
	}
}

// TestStopFailsPendingCalls: Stop while calls are pending. A proposal the
// core already has gets ErrOutcomeUnknown wrapping ErrStopped; one still
// queued gets plain ErrStopped, as does a queued read. Stop returns only
// after storage was closed, is idempotent, and later calls fail fast.
func TestStopFailsPendingCalls(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	n := c.nodes[lead]
	// Block exactly the write of p1's entry: a plain stall could catch a
	// commit-only write still due from the election first, with p1 not
	// yet in the core (1 run in ~200 failed that way).
	release := c.stores[lead].stallOn("p1")
	defer release()

	p1 := make(chan error, 1)
	go func() {
		_, err := n.Propose(context.Background(), []byte("p1"))
		p1 <- err
	}()
	awaitChan(t, "p1's write to block", c.stores[lead].entered)
	// The loop itself does not wait for the write: pause it, so that p2
	// and r1 stay queued.
	unblock := driver.BlockLoop(n)
	defer unblock()
	p2 := make(chan error, 1)
	go func() {
		_, err := n.Propose(context.Background(), []byte("p2"))
		p2 <- err
	}()
	r1 := make(chan error, 1)
	go func() { r1 <- n.Read(context.Background()) }()
	await(t, "p2 and r1 to be queued", func() bool {
		st := n.Status()
		return st.PendingProposals == 2 && st.PendingReads == 1
	})

	// Cancel the node's context (what Stop does first) while the
	// persister is inside Save and the loop paused: once they return, the
	// node must exit without taking more work, so p1 stays uncommitted.
	c.cancels[lead]()
	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop() }()
	// Stop cannot finish while a Save is in flight.
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a Save was still blocked", err)
	default:
	}
	unblock()
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a Save was still blocked", err)
	default:
	}
	release()
	if err := awaitChan(t, "Stop", stopped); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	delete(c.nodes, lead)
	if got := c.stores[lead].closes.Load(); got != 1 {
		t.Fatalf("storage closed %d times, want 1", got)
	}

	err := awaitChan(t, "p1", p1)
	if !errors.Is(err, driver.ErrOutcomeUnknown) || !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("p1 (in the core at Stop): %v, want ErrOutcomeUnknown wrapping ErrStopped", err)
	}
	err = awaitChan(t, "p2", p2)
	if !errors.Is(err, driver.ErrStopped) || errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("p2 (queued at Stop): %v, want plain ErrStopped", err)
	}
	if err := awaitChan(t, "r1", r1); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("r1: %v", err)
	}

	if err := n.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := n.Propose(context.Background(), []byte("late")); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("Propose after Stop: %v", err)
	}
	if err := n.Read(context.Background()); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("Read after Stop: %v", err)
	}
	if err := n.TransferLeadership(context.Background(), 2); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("TransferLeadership after Stop: %v", err)
	}
	if err := n.Handler().HandleMessages(context.Background(), []core.Message{{Type: core.MsgHeartbeat}}); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("HandleMessages after Stop: %v", err)
	}
	if !n.Status().Stopped {
		t.Fatal("Status does not report Stopped")
	}
}

// TestContextCancelStopsNode: cancelling Start's context stops the node
// and releases everything, without Stop.
func TestContextCancelStopsNode(t *testing.T) {
	c := newCluster(t, 1)
	c.stop(1)
	ctx, cancel := context.WithCancel(context.Background())
	n, err := driver.Start(ctx, c.config(1))
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[1] = n
	c.propose(1, "x")
	closesBefore := c.stores[1].closes.Load()
	cancel()
	awaitChan(t, "Done", n.Done())
	if got := c.stores[1].closes.Load() - closesBefore; got != 1 {
		t.Fatalf("storage closed %d times", got)
	}
	if err := n.Err(); err != nil {
		t.Fatalf("Err after cancel: %v", err)
	}
	if _, err := n.Propose(context.Background(), []byte("y")); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("Propose after cancel: %v", err)
	}
}

// TestStateMachineFailureStopsNode: an Apply error is fatal for that node
// only; Err and Stop report it and callers get ErrStopped.
func TestStateMachineFailureStopsNode(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	f := c.followers(lead)[0]
	boom := errors.New("disk full")
	c.sms[f].mu.Lock()
	c.sms[f].failWith = boom
	c.sms[f].mu.Unlock()
	c.propose(lead, "x")
	n := c.nodes[f]
	awaitChan(t, "the failing node to stop", n.Done())
	if err := n.Err(); !errors.Is(err, boom) {
		t.Fatalf("Err: %v", err)
	}
	if err := n.Stop(); !errors.Is(err, boom) {
		t.Fatalf("Stop: %v", err)
	}
	delete(c.nodes, f)
	_, err := n.Propose(context.Background(), []byte("y"))
	if !errors.Is(err, driver.ErrStopped) || !errors.Is(err, boom) {
		t.Fatalf("Propose on failed node: %v", err)
	}
	c.propose(lead, "still-works")
}

// TestProposeLimits: size limit, pending-proposal limit (fail fast with
// ErrBusy), and a context that ends before submission.
func TestProposeLimits(t *testing.T) {
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
		cfg.MaxPendingProposals = 2
		cfg.MaxProposalBytes = 100
	}))
	lead := c.leader()
	n := c.nodes[lead]

	_, err := n.Propose(context.Background(), bytes.Repeat([]byte("a"), 101))
	if !errors.Is(err, driver.ErrProposalDropped) || !errors.Is(err, core.ErrProposalTooLarge) {
		t.Fatalf("oversized proposal: %v", err)
	}
	if _, err := n.Propose(context.Background(), bytes.Repeat([]byte("a"), 100)); err != nil {
		t.Fatalf("proposal at the limit: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = n.Propose(ctx, []byte("x"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("proposal with a done context: %v", err)
	}

	release := c.stores[lead].stall()
	defer release()
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = n.Propose(ctx, []byte(fmt.Sprintf("blocked%d", i)))
		}()
	}
	await(t, "two pending proposals", func() bool { return n.Status().PendingProposals == 2 })
	if _, err := n.Propose(context.Background(), []byte("third")); !errors.Is(err, driver.ErrBusy) {
		t.Fatalf("third proposal: %v, want ErrBusy", err)
	}
	release()
	wg.Wait()
}

// TestForwardedProposalRefused: a follower's proposal that the leader
// refuses (here: its uncommitted budget is exhausted because replication
// is blocked) fails at once with the leader's reason, not at the deadline.
func TestForwardedProposalRefused(t *testing.T) {
	c := newCluster(t, 3,
		withTune(func(rc *core.Config) { rc.MaxUncommittedBytes = 4096 }),
		withConfig(func(cfg *driver.Config) {
			cfg.MaxProposalBytes = 1000
			cfg.MaxBatchBytes = 2048
		}))
	lead := c.leader()
	f := c.followers(lead)[0]
	c.propose(f, "before")
	// Appends carrying entries are lost; heartbeats still flow, so the
	// leader keeps its place but commits nothing more.
	c.net.SetDrop(func(m core.Message) bool { return m.Type == core.MsgApp && len(m.Entries) > 0 })

	errs := make(chan error, 10)
	start := time.Now()
	for i := range 10 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := c.nodes[f].Propose(ctx, bytes.Repeat([]byte{byte('a' + i)}, 900))
			errs <- err
		}()
	}
	refused := 0
	for range 10 {
		err := awaitChan(t, "a proposal", errs)
		switch {
		case errors.Is(err, core.ErrTooManyUncommitted):
			if !errors.Is(err, driver.ErrProposalDropped) {
				t.Fatalf("refusal is not a DroppedError: %v", err)
			}
			var de *driver.DroppedError
			if !errors.As(err, &de) {
				t.Fatalf("not a *DroppedError: %T", err)
			}
			refused++
		case errors.Is(err, driver.ErrOutcomeUnknown):
		case err == nil:
			t.Fatal("a proposal succeeded although nothing can commit")
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if refused == 0 {
		t.Fatalf("no proposal was refused with ErrTooManyUncommitted (%v)", time.Since(start))
	}
	c.net.SetDrop(nil)
	c.propose(f, "after")
	c.awaitConverged("before", "after")
}

// TestInboxFull: when the loop is blocked and the inbox is full, the
// handler drops batches and returns ErrInboxFull instead of blocking the
// transport; the node recovers once the loop resumes.
func TestInboxFull(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	f := c.followers(lead)[0]
	// Only f gets a one-batch inbox: it is the node under test, and the
	// others must not lose messages (a lost forwarded proposal is only
	// resolved by its deadline).
	c.perNode[f] = func(cfg *driver.Config) { cfg.InboxSize = 1 }
	c.restart(f)
	c.leader()
	release := c.stores[f].stall()
	defer release()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.nodes[lead].Propose(ctx, []byte("x"))
	}()
	awaitChan(t, "the follower's Save to block", c.stores[f].entered)
	h := c.nodes[f].Handler()
	msg := []core.Message{{Type: core.MsgHeartbeat, From: lead, To: f, Term: 1}}
	full := false
	for range 3 {
		if err := h.HandleMessages(context.Background(), msg); errors.Is(err, driver.ErrInboxFull) {
			full = true
			break
		}
	}
	if !full {
		t.Fatal("HandleMessages never reported ErrInboxFull with a one-batch inbox and a blocked loop")
	}
	if err := h.HandleSnapshot(context.Background(), core.Message{}, bytes.NewReader(nil)); !errors.Is(err, driver.ErrSnapshotUnsupported) {
		t.Fatalf("HandleSnapshot: %v", err)
	}
	release()
	c.propose(lead, "after")
	c.awaitConverged("x", "after")
}

// TestReadErrors: Read fails fast with a retryable error when there is no
// leader, and ErrBusy past MaxPendingReads.
func TestReadErrors(t *testing.T) {
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) { cfg.MaxPendingReads = 1 }))
	lead := c.leader()
	f := c.followers(lead)[0]
	c.propose(lead, "x")

	// Isolate the follower: once it knows no leader, reads fail with
	// ErrNoLeader (possibly ErrStepDown first, if a read raced the loss).
	c.net.Isolate(f, c.ids...)
	await(t, "the isolated follower to lose its leader", func() bool {
		l, _ := c.nodes[f].Leader()
		return l == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.nodes[f].Read(ctx); !errors.Is(err, core.ErrNoLeader) {
		t.Fatalf("read without a leader: %v", err)
	}
	c.net.HealAll()
	c.leader()

	release := c.stores[lead].stall()
	defer release()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = c.nodes[lead].Propose(ctx, []byte("block"))
	}()
	awaitChan(t, "the leader's Save to block", c.stores[lead].entered)
	// The loop does not wait for the Save: pause it, so the read stays
	// pending.
	unblock := driver.BlockLoop(c.nodes[lead])
	defer unblock()
	readDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		readDone <- c.nodes[lead].Read(ctx)
	}()
	await(t, "one pending read", func() bool { return c.nodes[lead].Status().PendingReads == 1 })
	if err := c.nodes[lead].Read(context.Background()); !errors.Is(err, driver.ErrBusy) {
		t.Fatalf("second read: %v, want ErrBusy", err)
	}
	unblock()
	release()
	if err := awaitChan(t, "the first read", readDone); err != nil {
		t.Logf("first read: %v", err)
	}
}

// TestStartErrors: Start refuses an invalid config and a log that does
// not match the state machine, and leaves the storage open.
func TestStartErrors(t *testing.T) {
	c := newCluster(t, 1)
	c.propose(1, "x")
	c.stop(1)
	cfg := c.config(1)
	cfg.ID = 0
	if _, err := driver.Start(context.Background(), cfg); err == nil {
		t.Fatal("Start with ID 0 succeeded")
	}
	cfg = c.config(1)
	cfg.StateMachine = &testSM{applied: 1000}
	_, err := driver.Start(context.Background(), cfg)
	if err == nil {
		t.Fatal("Start with a state machine ahead of the log succeeded")
	}
	t.Logf("state machine ahead of log: %v", err)
	cfg = c.config(1)
	cfg.NewTransport = func(driver.MessageHandler) (driver.Transport, error) { return nil, errors.New("no network") }
	if _, err := driver.Start(context.Background(), cfg); err == nil {
		t.Fatal("Start with a failing NewTransport succeeded")
	}
	closes := c.stores[1].closes.Load()
	c.start(1)
	c.propose(1, "y")
	if got := c.stores[1].closes.Load(); got != closes {
		t.Fatal("a failed Start closed the storage")
	}
}

// TestMetrics: with a Registerer the node's metrics are registered,
// observed, and unregistered on Stop, so a restart can register again.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newCluster(t, 1, withConfig(func(cfg *driver.Config) { cfg.Registerer = reg }))
	c.leader()
	for i := range 5 {
		c.propose(1, fmt.Sprintf("m%d", i))
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				counts[f.GetName()] += h.GetSampleCount()
			}
		}
	}
	for _, name := range []string{
		"rafty_driver_propose_duration_seconds", "rafty_driver_save_duration_seconds",
		"rafty_driver_apply_duration_seconds", "rafty_driver_save_entries", "rafty_driver_proposals_per_batch",
	} {
		if counts[name] == 0 {
			t.Errorf("%s: no observations (have %v)", name, counts)
		}
	}
	if got := counts["rafty_driver_propose_duration_seconds"]; got != 5 {
		t.Errorf("propose latency observed %d times, want 5", got)
	}
	c.restart(1) // re-registers in the same registry
	c.propose(1, "after-restart")
	c.stop(1)
	if families, _ := reg.Gather(); len(families) != 0 {
		t.Fatalf("%d metric families still registered after Stop", len(families))
	}
}

// TestDeadlineOutcomes: when a proposal's context ends, the error says
// whether the core ever saw it. One still queued behind a paused loop was
// never submitted (plain deadline: safe to retry); one inside a blocked
// write may yet commit (ErrOutcomeUnknown with the deadline).
func TestDeadlineOutcomes(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	n := c.nodes[lead]
	// Block exactly the write of in-write's entry: a plain stall can catch
	// a commit-only write still due from the election first, with in-write
	// then still queued (seen once under load: a plain context error).
	release := c.stores[lead].stallOn("in-write")
	defer release()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inWrite := make(chan error, 1)
	go func() {
		_, err := n.Propose(ctx, []byte("in-write"))
		inWrite <- err
	}()
	awaitChan(t, "the write to block", c.stores[lead].entered)
	// The loop does not wait for the write: pause it, so that the next
	// proposal stays queued.
	unblock := driver.BlockLoop(n)
	defer unblock()
	queued := make(chan error, 1)
	go func() {
		_, err := n.Propose(ctx, []byte("queued"))
		queued <- err
	}()
	await(t, "the second proposal to queue", func() bool { return n.Status().PendingProposals == 2 })
	cancel()
	err := awaitChan(t, "the queued proposal", queued)
	if !errors.Is(err, context.Canceled) || errors.Is(err, driver.ErrOutcomeUnknown) {
		t.Fatalf("queued proposal: %v, want a plain context error", err)
	}
	err = awaitChan(t, "the proposal in the write", inWrite)
	if !errors.Is(err, driver.ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("proposal in the blocked write: %v, want ErrOutcomeUnknown wrapping the context error", err)
	}
	unblock()
	release()
	// The abandoned-but-submitted proposal commits after all; the queued
	// one never reaches the log.
	c.propose(lead, "after")
	c.awaitConverged("in-write", "after")
	if c.sms[lead].has("queued") {
		t.Fatal("a proposal abandoned while queued was applied")
	}
}
