package driver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// TestReplicationOnEveryNode: in 3- and 5-node clusters a leader is
// elected, and proposals made on every node (leader and followers) return
// the state machine's result and are applied everywhere, in one order.
func TestReplicationOnEveryNode(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", size), func(t *testing.T) {
			c := newCluster(t, size)
			lead := c.leader()
			var want []string
			for round := range 3 {
				for _, id := range c.ids {
					cmd := fmt.Sprintf("r%d-from-%d", round, id)
					idx := c.propose(id, cmd)
					// The result is the index the command was applied at, on
					// the proposing node.
					if got, ok := c.sms[id].at(idx); !ok || got != cmd {
						t.Fatalf("node %d: result index %d holds %q (present %v), want %q", id, idx, got, ok, cmd)
					}
					want = append(want, cmd)
				}
			}
			c.awaitConverged(want...)
			if got := c.sms[lead].data(); !slices.Equal(got, want) {
				// Sequential proposals must apply in proposal order.
				t.Fatalf("applied order %v, want %v", got, want)
			}
		})
	}
}

// TestConcurrentProposalsOnEveryNode: many concurrent proposers on every
// node; each success is applied at the index it reported, on all nodes.
func TestConcurrentProposalsOnEveryNode(t *testing.T) {
	c := newCluster(t, 3)
	c.leader()
	type ack struct {
		idx uint64
		cmd string
	}
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	for _, id := range c.ids {
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					cmd := fmt.Sprintf("n%d-w%d-%d", id, w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					res, err := c.nodes[id].Propose(ctx, []byte(cmd))
					cancel()
					if err != nil {
						if retryable(err) {
							continue
						}
						t.Errorf("propose %s: %v", cmd, err)
						return
					}
					mu.Lock()
					acks = append(acks, ack{res.(uint64), cmd})
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(acks) < 300 {
		t.Logf("only %d of 600 proposals succeeded (leader changes)", len(acks))
	}
	var want []string
	for _, a := range acks {
		want = append(want, a.cmd)
	}
	c.awaitConverged(want...)
	for _, a := range acks {
		for _, id := range c.ids {
			if got, _ := c.sms[id].at(a.idx); got != a.cmd {
				t.Fatalf("node %d index %d holds %q, acknowledged %q", id, a.idx, got, a.cmd)
			}
		}
	}
}

// TestLeaderCrashReelection: stopping the leader elects a new one among
// the rest, which keeps accepting proposals; the old leader restarts from
// its log and catches up.
func TestLeaderCrashReelection(t *testing.T) {
	for _, size := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", size), func(t *testing.T) {
			c := newCluster(t, size)
			old := c.leader()
			c.propose(old, "before")
			c.stop(old)
			lead := c.leader()
			if lead == old {
				t.Fatalf("stopped node %d still leader", old)
			}
			for _, id := range c.running() {
				c.propose(id, fmt.Sprintf("after-via-%d", id))
			}
			c.restart(old)
			c.awaitConverged("before", "after-via-"+fmt.Sprint(lead))
			if s := c.stores[old].closes.Load(); s < 1 {
				t.Fatalf("storage of stopped node closed %d times", s)
			}
		})
	}
}

// TestFollowerRestartCatchesUp: a follower that was down while the
// cluster made progress catches up after restarting on its log, both with
// an in-memory state machine (replays everything) and a durable one
// (resumes after its applied index, never re-applying: testSM fails on a
// re-applied index).
func TestFollowerRestartCatchesUp(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("durableSM=%v", durable), func(t *testing.T) {
			var opts []clusterOpt
			if durable {
				opts = append(opts, durableSMs())
			}
			c := newCluster(t, 3, opts...)
			lead := c.leader()
			f := c.followers(lead)[0]
			for i := range 5 {
				c.propose(lead, fmt.Sprintf("a%d", i))
			}
			c.awaitConverged("a4")
			c.stop(f)
			for i := range 20 {
				c.propose(lead, fmt.Sprintf("b%d", i))
			}
			c.restart(f)
			c.awaitConverged("a0", "b19")
			c.propose(f, "from-restarted")
			c.awaitConverged("from-restarted")
		})
	}
}

// TestPartitionAndHeal: an isolated leader is replaced by the majority,
// which keeps committing; after the partition heals the old leader steps
// down and converges to the majority's log.
func TestPartitionAndHeal(t *testing.T) {
	c := newCluster(t, 5)
	old := c.leader()
	c.propose(old, "before")
	c.net.Isolate(old, c.ids...)
	majority := c.followers(old)
	lead := c.leaderOf(majority...)
	for _, id := range majority {
		c.propose(id, fmt.Sprintf("during-%d", id))
	}
	// The isolated node cannot commit; whatever it says, no success.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.nodes[old].Propose(ctx, []byte("isolated"))
	cancel()
	if err == nil {
		t.Fatalf("proposal on isolated old leader succeeded")
	}
	c.net.HealAll()
	if got := c.leader(); got == old {
		t.Logf("old leader %d re-elected after heal (allowed)", old)
	} else if got != lead {
		t.Logf("leader changed to %d after heal", got)
	}
	c.propose(old, "after-heal")
	c.awaitConverged("before", "during-"+fmt.Sprint(lead), "after-heal")
	if c.sms[old].has("isolated") && !c.sms[lead].has("isolated") {
		t.Fatal("diverged")
	}
}

// TestProposalOnPartitionedLeader: a leader cut off from its followers
// cannot commit; a proposal made on it must not report success. It
// reports ErrOutcomeUnknown (the entry is in its log and might have been
// replicated) together with the deadline, or, if the node already learned
// that another entry took its index, a DroppedError.
func TestProposalOnPartitionedLeader(t *testing.T) {
	c := newCluster(t, 3)
	old := c.leader()
	c.propose(old, "before")
	c.net.Isolate(old, c.ids...)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := c.nodes[old].Propose(ctx, []byte("lost"))
	cancel()
	switch {
	case err == nil:
		t.Fatal("proposal on a partitioned leader succeeded")
	case errors.Is(err, driver.ErrOutcomeUnknown):
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("outcome-unknown error does not carry the deadline: %v", err)
		}
		var oue *driver.OutcomeUnknownError
		if !errors.As(err, &oue) {
			t.Fatalf("not an *OutcomeUnknownError: %T", err)
		}
	case errors.Is(err, driver.ErrProposalDropped):
		// CheckQuorum demoted the leader before the proposal was handed
		// to the core: it was refused outright (no leader).
	default:
		t.Fatalf("unexpected error %v", err)
	}
	t.Logf("partitioned proposal: %v", err)
	majority := c.followers(old)
	c.leaderOf(majority...)
	c.propose(majority[0], "majority")
	c.net.HealAll()
	c.leader()
	c.awaitConverged("before", "majority")
	if c.sms[old].has("lost") {
		t.Fatal("the unacknowledged proposal was applied after all; fine in Raft, but impossible here: it never left the old leader")
	}
}

// TestLeadershipTransfer: TransferLeadership returns once the target
// leads, whether called on the leader or on a follower.
func TestLeadershipTransfer(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	target := c.followers(lead)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.nodes[lead].TransferLeadership(ctx, target); err != nil {
		t.Fatalf("transfer from leader %d to %d: %v\n%s", lead, target, err, c.dump())
	}
	if got := c.leader(); got != target {
		t.Fatalf("leader %d after transfer to %d", got, target)
	}
	c.propose(target, "after-transfer-1")

	// Now ask a follower to move leadership to the other follower.
	asker, other := uint64(0), uint64(0)
	for _, id := range c.followers(target) {
		if asker == 0 {
			asker = id
		} else {
			other = id
		}
	}
	if err := c.nodes[asker].TransferLeadership(ctx, other); err != nil {
		t.Fatalf("transfer asked on follower %d to %d: %v\n%s", asker, other, err, c.dump())
	}
	if got := c.leader(); got != other {
		t.Fatalf("leader %d after transfer to %d", got, other)
	}
	c.propose(asker, "after-transfer-2")
	c.awaitConverged("after-transfer-1", "after-transfer-2")

	if err := c.nodes[asker].TransferLeadership(ctx, 99); !errors.Is(err, core.ErrUnknownNode) {
		t.Fatalf("transfer to unknown node: %v", err)
	}
}

// TestFollowerReadSeesLeaderWrite: a Read on a follower that starts after
// a write was acknowledged on the leader observes that write.
func TestFollowerReadSeesLeaderWrite(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	fs := c.followers(lead)
	for i := range 30 {
		cmd := fmt.Sprintf("w%d", i)
		idx := c.propose(lead, cmd)
		f := fs[i%len(fs)]
		c.read(f)
		if got, ok := c.sms[f].at(idx); !ok || got != cmd {
			t.Fatalf("after Read on follower %d: index %d = %q (present %v), want %q", f, idx, got, ok, cmd)
		}
	}
	// And on the leader itself.
	idx := c.propose(fs[0], "via-follower")
	c.read(lead)
	if got, _ := c.sms[lead].at(idx); got != "via-follower" {
		t.Fatalf("after Read on leader: index %d = %q", idx, got)
	}
}

// TestStopDuringLoadLosesNoAcknowledgedProposal: all nodes are stopped
// while proposers run on every node. After restarting on the same logs
// (with fresh in-memory state machines, which replay the log), every
// proposal that returned success is applied on every node at the index it
// reported.
func TestStopDuringLoadLosesNoAcknowledgedProposal(t *testing.T) {
	c := newCluster(t, 3)
	c.leader()
	type ack struct {
		idx uint64
		cmd string
	}
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	stopLoad := make(chan struct{})
	nodes := map[uint64]*driver.Node{}
	for id, n := range c.nodes {
		nodes[id] = n
	}
	for id, n := range nodes {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stopLoad:
						return
					default:
					}
					cmd := fmt.Sprintf("n%d-w%d-%d", id, w, i)
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := n.Propose(ctx, []byte(cmd))
					cancel()
					switch {
					case err == nil:
						mu.Lock()
						acks = append(acks, ack{res.(uint64), cmd})
						mu.Unlock()
					case errors.Is(err, driver.ErrStopped):
						return
					case retryable(err), errors.Is(err, driver.ErrOutcomeUnknown):
					default:
						t.Errorf("propose: %v", err)
						return
					}
				}
			}()
		}
	}
	await(t, "100 acknowledged proposals", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acks) >= 100
	})
	// Stop everything concurrently, mid-flight.
	var swg sync.WaitGroup
	for _, id := range c.ids {
		swg.Add(1)
		go func() {
			defer swg.Done()
			if err := nodes[id].Stop(); err != nil {
				t.Errorf("stop %d: %v", id, err)
			}
		}()
	}
	swg.Wait()
	close(stopLoad)
	wg.Wait()
	for _, id := range c.ids {
		delete(c.nodes, id)
		c.sms[id] = c.sms[id].reopen()
		c.start(id)
	}
	lead := c.leader()
	c.propose(lead, "marker")
	c.awaitConverged("marker")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d acknowledged proposals survived the stop", len(acks))
	for _, a := range acks {
		for _, id := range c.ids {
			if got, _ := c.sms[id].at(a.idx); got != a.cmd {
				t.Fatalf("node %d: acknowledged %q at %d, found %q after restart", id, a.cmd, a.idx, got)
			}
		}
	}
}
