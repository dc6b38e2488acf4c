package core_test

import (
	"errors"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestReadIndexOnLeader: the read index is the commit index, released only
// after a heartbeat round a quorum acknowledged (thesis §6.4).
func TestReadIndexOnLeader(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	if err := c.nodes[1].Propose([]byte("w")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	commit := c.nodes[1].Status().Commit
	// Followers are unreachable: the read must not be answered.
	c.drop = func(m core.Message) bool { return m.From == 1 && m.To != 1 }
	if err := c.nodes[1].ReadIndex(42); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if len(c.reads[1]) != 0 {
		t.Fatalf("read answered without a quorum heartbeat: %+v", c.reads[1])
	}
	c.drop = nil
	c.tick() // next heartbeat round carries the read
	c.stabilize()
	if len(c.reads[1]) != 1 || c.reads[1][0].RequestID != 42 || c.reads[1][0].Index != commit || c.reads[1][0].Err != nil {
		t.Fatalf("read states %+v, want one for 42 at index %d", c.reads[1], commit)
	}
}

// TestReadIndexBatchesRounds: many reads queued together cost one
// heartbeat per follower.
func TestReadIndexBatchesRounds(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.sent = nil
	for id := uint64(1); id <= 100; id++ {
		if err := c.nodes[1].ReadIndex(id); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	heartbeats := 0
	for _, m := range c.sent {
		if m.Type == core.MsgHeartbeat {
			heartbeats++
		}
	}
	if len(c.reads[1]) != 100 {
		t.Fatalf("answered %d of 100 reads", len(c.reads[1]))
	}
	if heartbeats != 2 {
		t.Fatalf("%d heartbeats for 100 reads, want one round (2 followers)", heartbeats)
	}
}

// TestReadIndexWaitsForCommitInTerm: a new leader answers reads only once
// it has committed an entry of its term (thesis §6.4 step 1).
func TestReadIndexWaitsForCommitInTerm(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, nil)
	electSolo(t, s, 2)
	if err := s.n.ReadIndex(7); err != nil {
		t.Fatal(err)
	}
	s.flush()
	hbCtx := uint64(0)
	if err := s.step(core.Message{Type: core.MsgHeartbeatResp, From: 2, Term: s.n.Term(), Context: hbCtx}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if len(s.reads) != 0 {
		t.Fatalf("read answered before the no-op committed: %+v", s.reads)
	}
	// Follower 2 acknowledges the no-op: commit in term, then a round.
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: s.n.Status().LastIndex}); err != nil {
		t.Fatal(err)
	}
	out := s.flush()
	var round uint64
	for _, m := range out {
		if m.Type == core.MsgHeartbeat && m.To == 2 {
			round = m.Context
		}
	}
	if round == 0 {
		t.Fatalf("no heartbeat round started for the released read: %v", out)
	}
	if err := s.step(core.Message{Type: core.MsgHeartbeatResp, From: 2, Term: s.n.Term(), Context: round}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if len(s.reads) != 1 || s.reads[0].Index != s.n.Status().Commit {
		t.Fatalf("reads %+v, want one at commit %d", s.reads, s.n.Status().Commit)
	}
}

// TestReadIndexFromFollower: a follower's read is forwarded and answered
// with the leader's read index.
func TestReadIndexFromFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	if err := c.nodes[1].Propose([]byte("w")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if err := c.nodes[3].ReadIndex(9); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	c.tick()
	c.stabilize()
	if len(c.reads[3]) != 1 || c.reads[3][0].RequestID != 9 || c.reads[3][0].Index != c.nodes[1].Status().Commit {
		t.Fatalf("follower read states %+v", c.reads[3])
	}
}

// TestReadsFailOnStepDown: pending reads of a deposed leader fail with
// ErrStepDown rather than hang.
func TestReadsFailOnStepDown(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.drop = func(m core.Message) bool { return m.From == 1 || m.To == 1 }
	if err := c.nodes[1].ReadIndex(5); err != nil {
		t.Fatal(err)
	}
	for range 25 {
		if err := c.nodes[1].Tick(); err != nil {
			t.Fatal(err)
		}
		c.stabilize()
	}
	if len(c.reads[1]) != 1 || !errors.Is(c.reads[1][0].Err, core.ErrStepDown) {
		t.Fatalf("reads after step-down: %+v", c.reads[1])
	}
}

// TestLeaseRead: with ReadLease, a leader holding its lease answers at
// once; a lease-less leader confirms with a round.
func TestLeaseRead(t *testing.T) {
	c := newCluster(t, 3, func(cfg *core.Config) { cfg.ReadMode = core.ReadLease })
	c.elect(1)
	c.tick() // a round acknowledged by a quorum grants the lease
	c.stabilize()
	c.sent = nil
	if err := c.nodes[1].ReadIndex(1); err != nil {
		t.Fatal(err)
	}
	c.process(1)
	if len(c.reads[1]) != 1 {
		t.Fatalf("lease read not answered at once: %+v", c.reads[1])
	}
	for _, m := range c.sent {
		if m.Type == core.MsgHeartbeat {
			t.Fatal("lease read sent a heartbeat round")
		}
	}
	// Let the lease run out with the followers silent.
	c.drop = func(m core.Message) bool { return m.To == 1 }
	for range 9 {
		if err := c.nodes[1].Tick(); err != nil {
			t.Fatal(err)
		}
		c.stabilize()
	}
	if err := c.nodes[1].ReadIndex(2); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if len(c.reads[1]) != 1 {
		t.Fatalf("expired lease answered a read: %+v", c.reads[1])
	}
}

// TestMaxPendingReads: reads past the limit fail with a typed error.
func TestMaxPendingReads(t *testing.T) {
	c := newCluster(t, 3, func(cfg *core.Config) { cfg.MaxPendingReads = 2 })
	c.elect(1)
	c.drop = func(m core.Message) bool { return m.To != 1 }
	for id := uint64(1); id <= 2; id++ {
		if err := c.nodes[1].ReadIndex(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nodes[1].ReadIndex(3); !errors.Is(err, core.ErrTooManyPendingReads) {
		t.Fatalf("third read: %v, want ErrTooManyPendingReads", err)
	}
}

// TestReadIndexOneRoundInFlight: while a read round awaits its quorum,
// new reads start no round of their own; they gather for the round that
// starts when the outstanding one is confirmed, so a stream of reads costs
// one round per round trip, not one per Ready.
func TestReadIndexOneRoundInFlight(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, nil)
	electSolo(t, s, 2)
	// Commit the no-op so reads are served (thesis §6.4 step 1).
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: s.n.Status().LastIndex}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	heartbeatsTo2 := func(out []core.Message) (rounds []uint64) {
		for _, m := range out {
			if m.Type == core.MsgHeartbeat && m.To == 2 {
				rounds = append(rounds, m.Context)
			}
		}
		return rounds
	}
	if err := s.n.ReadIndex(1); err != nil {
		t.Fatal(err)
	}
	first := heartbeatsTo2(s.flush())
	if len(first) != 1 {
		t.Fatalf("heartbeats to 2 for the first read: rounds %v, want one", first)
	}
	for id := uint64(2); id <= 50; id++ {
		if err := s.n.ReadIndex(id); err != nil {
			t.Fatal(err)
		}
		if more := heartbeatsTo2(s.flush()); len(more) != 0 {
			t.Fatalf("read %d started round %v while round %d awaited its quorum", id, more, first[0])
		}
	}
	if len(s.reads) != 0 {
		t.Fatalf("reads answered before any confirmation: %+v", s.reads)
	}
	// Round 1 confirmed: read 1 is answered and one new round carries 2..50.
	if err := s.step(core.Message{Type: core.MsgHeartbeatResp, From: 2, Term: s.n.Term(), Context: first[0]}); err != nil {
		t.Fatal(err)
	}
	second := heartbeatsTo2(s.flush())
	if len(s.reads) != 1 || s.reads[0].RequestID != 1 {
		t.Fatalf("after round %d: reads %+v, want read 1 only", first[0], s.reads)
	}
	if len(second) != 1 || second[0] <= first[0] {
		t.Fatalf("after round %d was confirmed: rounds %v, want one newer round", first[0], second)
	}
	if err := s.step(core.Message{Type: core.MsgHeartbeatResp, From: 2, Term: s.n.Term(), Context: second[0]}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if len(s.reads) != 50 {
		t.Fatalf("%d of 50 reads answered after two rounds", len(s.reads))
	}
}
