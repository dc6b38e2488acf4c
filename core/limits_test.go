package core_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// TestForgedMaxTermCannotWrapTerms reproduces issue 13 item 4: one forged
// message with Term = MaxUint64 made a follower adopt that term; its next
// election wrapped the term to 0, and the cluster went on to elect a
// second leader in a term that already had one. Paper §5.1: terms only
// increase; §5.2: at most one leader per term. The harness checks both
// after every step; the forged message must be refused and counted.
func TestForgedMaxTermCannotWrapTerms(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    core.Message
	}{
		{"app response", core.Message{Type: core.MsgAppResp, From: 3, To: 2, Term: math.MaxUint64}},
		{"timeout now", core.Message{Type: core.MsgTimeoutNow, From: 3, To: 2, Term: math.MaxUint64}},
		{"vote", core.Message{Type: core.MsgVote, From: 3, To: 2, Term: math.MaxUint64, Index: math.MaxUint64, LogTerm: math.MaxUint64, Context: 1}},
		{"just above MaxTerm", core.Message{Type: core.MsgTimeoutNow, From: 3, To: 2, Term: core.MaxTerm + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without PreVote a wrapped candidate's term 0, 1, 2... reaches
			// the live terms quickly; PreVote only slows the wrap down.
			c := newCluster(t, 3, func(cfg *core.Config) { cfg.PreVote = false })
			c.tolerateInvalid = true
			c.elect(1)
			if err := c.nodes[1].Propose([]byte("before")); err != nil {
				t.Fatal(err)
			}
			c.stabilize()
			err := c.nodes[2].Step(tc.m)
			c.checkTerms(2)
			if !errors.Is(err, core.ErrInvalidMessage) {
				t.Errorf("forged %v: Step = %v, want ErrInvalidMessage", tc.m, err)
			}
			if got := c.nodes[2].Status().Counters.OutOfRangeMessages; got != 1 {
				t.Errorf("OutOfRangeMessages = %d, want 1", got)
			}
			// Let the cluster run: elections, heartbeats, a write.
			for i := range 300 {
				c.tick()
				c.stabilize()
				if i == 150 {
					if lead := c.leader(); lead != 0 {
						if err := c.nodes[lead].Propose([]byte("after")); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			for id, n := range c.nodes {
				if term := n.Term(); term > 10 {
					t.Errorf("node %d reached term %d after the forged message", id, term)
				}
			}
		})
	}
}

// TestStepRefusesOutOfRangeAndInconsistent is the table of numbers no
// honest peer sends: beyond MaxTerm/MaxIndex (counted as out of range), or
// contradicting each other (counted as invalid). The node's state is
// unchanged and nothing is sent.
func TestStepRefusesOutOfRangeAndInconsistent(t *testing.T) {
	const big = math.MaxUint64
	voters := core.Membership{Voters: []uint64{1, 2, 3}}
	cases := []struct {
		name       string
		m          core.Message
		outOfRange bool
	}{
		// §5.1: terms grow by one per election; a term whose successor
		// would wrap is forged.
		{"§5.1 heartbeat term MaxUint64", core.Message{Type: core.MsgHeartbeat, From: 2, Term: big}, true},
		{"§5.1 heartbeat term MaxTerm+1", core.Message{Type: core.MsgHeartbeat, From: 2, Term: core.MaxTerm + 1}, true},
		{"§5.1 app response term MaxUint64", core.Message{Type: core.MsgAppResp, From: 2, Term: big}, true},
		{"§5.1 vote response term MaxUint64", core.Message{Type: core.MsgVoteResp, From: 2, Term: big}, true},
		{"§9.6 pre-vote term MaxUint64", core.Message{Type: core.MsgPreVote, From: 2, Term: big, Index: 1, LogTerm: 1}, true},
		{"§3.10 timeout-now term MaxUint64", core.Message{Type: core.MsgTimeoutNow, From: 2, Term: big}, true},
		{"§5.4.1 vote last log term MaxUint64", core.Message{Type: core.MsgVote, From: 2, Term: 6, Index: 1, LogTerm: big}, true},
		// §5.3: an index grows by one per entry.
		{"§5.3 append previous index MaxUint64", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: big, LogTerm: 5}, true},
		{"§5.3 entry index wraps to 0", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: big, LogTerm: 5,
			Entries: []core.Entry{{Index: 0, Term: 5}}}, true},
		{"§5.3 entries pass MaxIndex", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: core.MaxIndex, LogTerm: 5,
			Entries: []core.Entry{{Index: core.MaxIndex + 1, Term: 5}}}, true},
		{"§5.3 commit MaxUint64", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: 1, LogTerm: 1, Commit: big}, true},
		{"§5.3 heartbeat commit MaxUint64", core.Message{Type: core.MsgHeartbeat, From: 2, Term: 5, Commit: big}, true},
		{"§5.3 app response index MaxUint64", core.Message{Type: core.MsgAppResp, From: 2, Term: 5, Index: big}, true},
		{"§5.3 rejection hint MaxUint64", core.Message{Type: core.MsgAppResp, From: 2, Term: 5, Index: 1, Reject: true, RejectHint: big}, true},
		{"§5.3 entry term MaxUint64", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: 1, LogTerm: 1,
			Entries: []core.Entry{{Index: 2, Term: big}}}, true},
		{"§7 snapshot index MaxUint64", core.Message{Type: core.MsgSnap, From: 2, Term: 5,
			Snapshot: &core.SnapshotMeta{Index: big, Term: 4, Membership: voters}}, true},
		{"§7 snapshot term MaxUint64", core.Message{Type: core.MsgSnap, From: 2, Term: 5,
			Snapshot: &core.SnapshotMeta{Index: 10, Term: big, Membership: voters}}, true},
		// Inconsistent pairs: index 0 is the empty log with term 0, and
		// only index 0 has term 0 (§5.3); no peer's log holds a term
		// newer than the peer's own (§5.1).
		{"§5.3 append previous index 0 with a term", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: 0, LogTerm: 3}, false},
		{"§5.3 append previous index with term 0", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: 4, LogTerm: 0}, false},
		{"§5.3 entry with term 0", core.Message{Type: core.MsgApp, From: 2, Term: 5, Index: 0,
			Entries: []core.Entry{{Index: 1, Term: 0}}}, false},
		{"§5.4.1 vote log term above its term", core.Message{Type: core.MsgVote, From: 2, Term: 6, Index: 3, LogTerm: 7}, false},
		{"§5.4.1 vote empty log with a term", core.Message{Type: core.MsgVote, From: 2, Term: 6, Index: 0, LogTerm: 2}, false},
		{"§9.6 pre-vote log with term 0", core.Message{Type: core.MsgPreVote, From: 2, Term: 6, Index: 5, LogTerm: 0}, false},
		{"§5.3 rejection hint term above its term", core.Message{Type: core.MsgAppResp, From: 2, Term: 5, Index: 1, Reject: true, LogTerm: 6}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 5}, entriesWithTerms(1), nil)
			before := s.n.Status()
			err := s.step(tc.m)
			if !errors.Is(err, core.ErrInvalidMessage) {
				t.Fatalf("Step(%v) = %v, want ErrInvalidMessage", tc.m, err)
			}
			after := s.n.Status()
			c := after.Counters
			if tc.outOfRange && (c.OutOfRangeMessages != 1 || c.InvalidMessages != 0) {
				t.Fatalf("want one out-of-range refusal, counters %+v", c)
			}
			if !tc.outOfRange && (c.InvalidMessages != 1 || c.OutOfRangeMessages != 0) {
				t.Fatalf("want one invalid refusal, counters %+v", c)
			}
			after.Counters = before.Counters
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("state changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if s.n.HasReady() {
				t.Fatal("a refused message produced work")
			}
		})
	}
}

// TestNoCampaignAtMaxTerm: a node whose term is MaxTerm (reachable only
// through a message carrying exactly MaxTerm) refuses to campaign rather
// than wrap (§5.1), counts it, and still follows a leader of that term.
func TestNoCampaignAtMaxTerm(t *testing.T) {
	for _, preVote := range []bool{true, false} {
		s := newSolo(t, core.HardState{Term: core.MaxTerm}, entriesWithTerms(1), func(cfg *core.Config) { cfg.PreVote = preVote })
		for range 100 {
			if err := s.n.Tick(); err != nil {
				t.Fatal(err)
			}
		}
		if out := s.flush(); len(out) != 0 || s.n.Term() != core.MaxTerm || s.n.Role() != core.RoleFollower {
			t.Fatalf("preVote=%v: at MaxTerm the node sent %v, term %d role %v", preVote, out, s.n.Term(), s.n.Role())
		}
		if c := s.n.Status().Counters; c.RefusedCampaigns == 0 {
			t.Fatalf("preVote=%v: refused campaigns not counted: %+v", preVote, c)
		}
		// A transfer cannot make it campaign either.
		if err := s.step(core.Message{Type: core.MsgTimeoutNow, From: 2, Term: core.MaxTerm}); err != nil {
			t.Fatal(err)
		}
		if s.n.Term() != core.MaxTerm || s.n.Role() != core.RoleFollower {
			t.Fatalf("MsgTimeoutNow at MaxTerm: term %d role %v", s.n.Term(), s.n.Role())
		}
		// It still follows a leader of its term.
		if err := s.step(core.Message{Type: core.MsgHeartbeat, From: 2, Term: core.MaxTerm}); err != nil {
			t.Fatal(err)
		}
		if s.n.Leader() != 2 {
			t.Fatalf("leader %d, want 2", s.n.Leader())
		}
	}
}

// TestPersistedTermBeyondMaxTermRefused: a node that adopted a forged term
// before the range check existed does not start (it would wrap on its next
// campaign); the error says why.
func TestPersistedTermBeyondMaxTermRefused(t *testing.T) {
	log := memlog.New()
	if err := log.Save(core.HardState{Term: math.MaxUint64}, entriesWithTerms(1)); err != nil {
		t.Fatal(err)
	}
	_, err := core.New(testConfig(1, 1, 2, 3), log)
	var se *core.StorageError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "beyond MaxTerm") {
		t.Fatalf("New = %v, want a StorageError naming MaxTerm", err)
	}
}

// TestLogIndexExhausted: a leader whose log reaches MaxIndex refuses
// proposals with ErrIndexExhausted (locally and forwarded), and a node
// whose log ends at MaxIndex refuses to campaign (its no-op would pass it).
func TestLogIndexExhausted(t *testing.T) {
	log := memlog.New()
	if err := log.InstallSnapshot(core.SnapshotMeta{Index: core.MaxIndex - 1, Term: 1,
		Membership: core.Membership{Voters: []uint64{1, 2, 3}}}); err != nil {
		t.Fatal(err)
	}
	if err := log.Save(core.HardState{Term: 1, Commit: core.MaxIndex - 1}, nil); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(1, 1, 2, 3)
	cfg.CheckQuorum = false
	cfg.Applied = core.MaxIndex - 1
	n, err := core.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s := &soloNode{t: t, n: n, log: log, afterPersist: map[int]bool{}}
	electSolo(t, s, 2) // the no-op takes index MaxIndex
	s.flush()
	if last := s.n.Status().LastIndex; last != core.MaxIndex {
		t.Fatalf("last index %d, want MaxIndex", last)
	}
	if err := s.n.Propose([]byte("x")); !errors.Is(err, core.ErrIndexExhausted) {
		t.Fatalf("Propose at MaxIndex = %v, want ErrIndexExhausted", err)
	}
	if err := s.step(core.Message{Type: core.MsgProp, From: 2, Entries: []core.Entry{{Data: []byte("y")}}}); err != nil {
		t.Fatal(err)
	}
	var resp *core.Message
	for _, m := range s.flush() {
		if m.Type == core.MsgPropResp {
			resp = &m
		}
	}
	if resp == nil || !resp.Reject {
		t.Fatalf("forwarded proposal at MaxIndex not refused: %v", resp)
	}
	// Node 2 reads the refusal back as ErrIndexExhausted.
	f := newSolo(t, core.HardState{Term: 1}, nil, nil)
	if err := f.n.Step(core.Message{Type: core.MsgPropResp, From: 2, To: 1, Entries: resp.Entries, Reject: true, Context: resp.Context}); err != nil {
		t.Fatal(err)
	}
	f.flush()
	if len(f.rejected) != 1 || !errors.Is(f.rejected[0].Err, core.ErrIndexExhausted) {
		t.Fatalf("refusal read back as %+v, want ErrIndexExhausted", f.rejected)
	}
	// Step down (a higher term) and never campaign again.
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term() + 1}); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := s.n.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	s.flush()
	if s.n.Role() != core.RoleFollower || s.n.Status().Counters.RefusedCampaigns == 0 {
		t.Fatalf("node at MaxIndex: role %v counters %+v", s.n.Role(), s.n.Status().Counters)
	}
}

// TestLeaderHintIsNotAnIndex: MsgPropResp carries the leader's node ID in
// Index; node IDs may use all 64 bits, so the index limit does not apply.
func TestLeaderHintIsNotAnIndex(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, nil)
	hint := uint64(math.MaxUint64 - 1)
	if err := s.step(core.Message{Type: core.MsgPropResp, From: 2, Reject: true, Index: hint,
		Entries: []core.Entry{{Data: []byte("x")}}}); err != nil {
		t.Fatalf("Step: %v", err)
	}
	s.flush()
	var nl *core.NotLeaderError
	if len(s.rejected) != 1 || !errors.As(s.rejected[0].Err, &nl) || nl.Leader != hint {
		t.Fatalf("rejected %+v, want NotLeaderError with leader %d", s.rejected, hint)
	}
}
