package driver_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// awaitChan waits for ch to receive, failing after awaitTimeout.
func awaitChan[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(awaitTimeout):
		t.Fatalf("timed out after %v waiting for %s", awaitTimeout, what)
		panic("unreachable")
	}
}

// TestStalledLeaderSave: the leader's disk write blocks for many election
// timeouts. The followers stop hearing from it and elect a new leader,
// which commits a write. When the stalled write finally returns, a Read
// queued on the old leader during the stall must not be answered from the
// old leader's state (in lease mode, from a lease that expired during the
// stall): either it fails with a retryable error or, if it succeeds, the
// old leader's state machine already holds the new leader's write.
//
// Inbound traffic to the old leader is cut during the stall, so no message
// with the new term can warn it; only the clock can. Without the driver
// feeding the missed ticks the lease variant fails (checked by hand by
// capping the catch-up at one tick): the core's tick counter would not
// have moved during the stall, the lease would look valid, and the read
// would be answered at once at the old commit index.
func TestStalledLeaderSave(t *testing.T) {
	for _, mode := range []core.ReadMode{core.ReadSafe, core.ReadLease} {
		t.Run(mode.String(), func(t *testing.T) {
			c := newCluster(t, 3, withTune(func(rc *core.Config) {
				rc.CheckQuorum = true
				rc.ReadMode = mode
			}))
			old := c.leader()
			c.propose(old, "x1")
			c.read(old) // confirms leadership: in lease mode the lease is fresh now

			release := c.stores[old].stall()
			defer release()
			x2 := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := c.nodes[old].Propose(ctx, []byte("x2"))
				x2 <- err
			}()
			awaitChan(t, "the old leader's Save to block", c.stores[old].entered)
			// Nothing reaches the old leader from now on, so only its own
			// sense of time can tell it that its lease is gone: it must not
			// learn of the new term from an inbound message.
			others := c.followers(old)
			for _, id := range others {
				c.net.CutOneWay(id, old)
			}

			// The old leader's loop runs on (only its persister waits), and
			// its Status shows the write in flight to the disk watchdog.
			await(t, "the stalled write to show in Status", func() bool { return c.nodes[old].Status().DiskWriteBlocked > 0 })
			lead := c.leaderOf(others...)
			x3 := c.propose(lead, "x3")
			await(t, "x3 applied on the majority", func() bool {
				for _, id := range others {
					if _, ok := c.sms[id].at(x3); !ok {
						return false
					}
				}
				return true
			})

			// Issue a read on the stalled node. Its loop runs on: the read
			// waits for a quorum it cannot reach, or fails (CheckQuorum
			// deposed the old leader); it must never be answered from the
			// old leader's state.
			readErr := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				readErr <- c.nodes[old].Read(ctx)
			}()
			await(t, "the read to be issued", func() bool {
				return c.nodes[old].Status().PendingReads == 1 || len(readErr) == 1
			})
			release()

			err := awaitChan(t, "the read on the old leader", readErr)
			if err == nil {
				if got, ok := c.sms[old].at(x3); !ok || got != "x3" {
					t.Fatalf("stale read: Read on the stalled old leader returned nil but its state machine lacks x3 (index %d)\n%s", x3, c.dump())
				}
			} else if errors.Is(err, driver.ErrStopped) {
				t.Fatalf("read failed: %v", err)
			}
			t.Logf("read on the old leader after the stall: %v", err)
			c.net.HealAll()

			// The old leader no longer leads, and it converges.
			await(t, "the old leader to step down", func() bool {
				return c.nodes[old].Status().Role != core.RoleLeader || c.leader() == old
			})
			c.read(old)
			if got, _ := c.sms[old].at(x3); got != "x3" {
				t.Fatalf("after a successful Read the old leader lacks x3")
			}
			switch err := awaitChan(t, "x2's outcome", x2); {
			case err == nil:
				c.awaitConverged("x1", "x2", "x3")
			case errors.Is(err, driver.ErrOutcomeUnknown), errors.Is(err, driver.ErrProposalDropped):
				t.Logf("x2: %v", err)
			default:
				t.Fatalf("x2: %v", err)
			}
			c.awaitConverged("x1", "x3")
		})
	}
}

// TestNaturalBatching: proposals queued while a Save blocks all go into
// the next Save.
func TestNaturalBatching(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	c.propose(lead, "warm-up")
	release := c.stores[lead].stall()
	defer release()
	errs := make(chan error, 64)
	// The first proposal's write blocks; the rest queue behind it.
	for i := range 50 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.nodes[lead].Propose(ctx, []byte(fmt.Sprintf("p%d", i)))
			errs <- err
		}()
	}
	awaitChan(t, "the leader's Save to block", c.stores[lead].entered)
	await(t, "50 pending proposals", func() bool { return c.nodes[lead].Status().PendingProposals == 50 })
	savesBefore := c.stores[lead].saves.Load()
	release()
	ok := 0
	for range 50 {
		if err := awaitChan(t, "a proposal", errs); err == nil {
			ok++
		} else if !retryable(err) && !errors.Is(err, driver.ErrOutcomeUnknown) {
			t.Fatalf("proposal: %v", err)
		}
	}
	// Unbatched, 50 proposals would take 50 writes. Batched, they take the
	// blocked one and the next, plus a few for any proposal still between
	// the pending counter and the queue when the write was released.
	saves := c.stores[lead].saves.Load() - savesBefore
	largest := c.stores[lead].maxEntries.Load()
	if saves > 10 || largest < 25 {
		t.Fatalf("50 proposals took %d Saves, the largest writing %d entries: not batched", saves, largest)
	}
	t.Logf("%d proposals succeeded in %d Saves; largest Save: %d entries", ok, saves, largest)
}

// slowFollowers gives every node but node 1 an election timeout of
// ticks, so node 1 wins the first election and the others never campaign
// on their own within a test: whatever makes them lead is what the test
// is about.
func slowFollowers(ticks int) clusterOpt {
	return func(c *cluster) {
		for _, id := range c.ids[1:] {
			c.perNode[id] = func(cfg *driver.Config) {
				tune := cfg.TuneRaft
				cfg.TuneRaft = func(rc *core.Config) {
					tune(rc)
					rc.ElectionTicks = ticks
				}
			}
		}
	}
}

// TestDiskStallHandsOverLeadership: the leader's disk write never
// returns. Once it has been in flight for DiskStallTimeout the leader
// reports the stall in Status (what kvnode's /readyz and status read) and
// hands leadership to a follower — long before the followers' own election
// timeout could have elected one. When the write finally returns, the old
// leader follows the new one, stops reporting the stall, and the cluster
// converges.
func TestDiskStallHandsOverLeadership(t *testing.T) {
	const followerElection = 1000 // ticks: 10 s of clock time
	c := newCluster(t, 3, withTune(func(rc *core.Config) { rc.CheckQuorum = true }),
		withConfig(func(cfg *driver.Config) { cfg.DiskStallTimeout = 5 * testTick }),
		slowFollowers(followerElection))
	old := c.leader()
	if old != 1 {
		t.Fatalf("node %d leads; node 1 has the only short election timeout", old)
	}
	c.propose(old, "x1")
	term := c.nodes[old].Status().Term

	release := c.stores[old].stallOn("stuck")
	defer release()
	stuck := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_, err := c.nodes[old].Propose(ctx, []byte("stuck"))
		stuck <- err
	}()
	awaitChan(t, "the leader's write to block", c.stores[old].entered)
	stallStart := c.clock.Now()
	await(t, "the stall to show in Status", func() bool { return c.nodes[old].Status().DiskStalled })
	if st := c.nodes[old].Status(); st.DiskWriteBlocked < 5*testTick {
		t.Fatalf("DiskStalled with DiskWriteBlocked %v < DiskStallTimeout", st.DiskWriteBlocked)
	}
	others := c.followers(old)
	lead := c.leaderOf(others...)
	if took := c.clock.Now().Sub(stallStart); took >= followerElection*testTick {
		t.Fatalf("new leader after %v of clock time: that is the followers' own election timeout, not a hand-over", took)
	}
	if st := c.nodes[lead].Status(); st.Term <= term {
		t.Fatalf("new leader %d in term %d, old term %d", lead, st.Term, term)
	}
	c.propose(lead, "x2")

	release()
	await(t, "the old leader to follow the new one and stop reporting a stall", func() bool {
		st := c.nodes[old].Status()
		l, _ := c.nodes[old].Leader()
		return !st.DiskStalled && st.DiskWriteBlocked == 0 && st.Role == core.RoleFollower && l == lead
	})
	switch err := awaitChan(t, "the stuck proposal", stuck); {
	case err == nil, errors.Is(err, driver.ErrOutcomeUnknown), errors.Is(err, driver.ErrProposalDropped):
		t.Logf("stuck proposal: %v", err)
	default:
		t.Fatalf("stuck proposal: %v", err)
	}
	c.propose(old, "x3")
	c.awaitConverged("x1", "x2", "x3")
}

// ackRecorder wraps a node's handler and records, per sender, the highest
// index acknowledged by a MsgAppResp that reached the node's inbox.
type ackRecorder struct {
	driver.MessageHandler
	mu    sync.Mutex
	acked map[uint64]uint64
}

func (r *ackRecorder) HandleMessages(ctx context.Context, msgs []core.Message) error {
	var acks []core.Message
	for _, m := range msgs {
		if m.Type == core.MsgAppResp && !m.Reject {
			acks = append(acks, m)
		}
	}
	err := r.MessageHandler.HandleMessages(ctx, msgs)
	if err == nil {
		r.mu.Lock()
		for _, m := range acks {
			r.acked[m.From] = max(r.acked[m.From], m.Index)
		}
		r.mu.Unlock()
	}
	return err
}

func (r *ackRecorder) ackedBy(id uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked[id]
}

// TestSlowFsyncKeepsHealthyLeader: the leader's loop is paused for an
// election timeout of clock time (a process pause; a slow fsync alone no
// longer blocks the loop), while its followers acknowledge the entries it
// sent before. The leader must stay leader (same
// term) and commit: the acknowledgements waiting in its inbox are stepped
// before the missed ticks, so CheckQuorum sees its followers. Fed all ten
// missed ticks first (the old order), the leader found them silent for an
// election timeout and stepped down.
func TestSlowFsyncKeepsHealthyLeader(t *testing.T) {
	rec := &ackRecorder{acked: map[uint64]uint64{}}
	c := newCluster(t, 3, withTune(func(rc *core.Config) { rc.CheckQuorum = true }), slowFollowers(100),
		func(c *cluster) {
			c.perNode[1] = func(cfg *driver.Config) {
				newT := cfg.NewTransport
				cfg.NewTransport = func(h driver.MessageHandler) (driver.Transport, error) {
					rec.MessageHandler = h
					return newT(rec)
				}
			}
		})
	lead := c.leader()
	if lead != 1 {
		t.Fatalf("node %d leads; node 1 has the only short election timeout", lead)
	}
	c.propose(lead, "warm-up")
	c.stopClock() // time moves only when the test says so from here on
	st := c.nodes[lead].Status()
	term, target := st.Term, st.LastIndex+1

	release := c.stores[lead].stallOn("slow")
	defer release()
	// The followers' writes of the entry wait too, so that their
	// acknowledgements can only arrive during the pause below.
	var releaseFollowers []func()
	for _, id := range c.followers(lead) {
		r := c.stores[id].stallOn("slow")
		defer r()
		releaseFollowers = append(releaseFollowers, r)
	}
	slow := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.nodes[lead].Propose(ctx, []byte("slow"))
		slow <- err
	}()
	awaitChan(t, "the leader's fsync to block", c.stores[lead].entered)
	for _, id := range c.followers(lead) {
		awaitChan(t, "a follower's fsync to block", c.stores[id].entered)
	}
	// The loop does not wait for the fsync; a pause of the whole process
	// (here: of the loop) of one election timeout does. Meanwhile both
	// followers persist the entry and their acknowledgements queue up.
	unblock := driver.BlockLoop(c.nodes[lead])
	defer unblock()
	c.clock.Advance(testElectionTicks * testTick)
	for _, r := range releaseFollowers {
		r()
	}
	await(t, "both followers' acknowledgements in the leader's inbox", func() bool {
		for _, id := range c.followers(lead) {
			if rec.ackedBy(id) < target {
				return false
			}
		}
		return true
	})
	unblock()
	release()
	if err := awaitChan(t, "the slow proposal", slow); err != nil {
		t.Fatalf("slow proposal: %v\n%s", err, c.dump())
	}
	if st := c.nodes[lead].Status(); st.Role != core.RoleLeader || st.Term != term {
		t.Fatalf("after one slow fsync node %d is %v in term %d (was leader in term %d)", lead, st.Role, st.Term, term)
	}
}
