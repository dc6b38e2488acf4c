package core_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

func entriesWithTerms(terms ...uint64) []core.Entry {
	ents := make([]core.Entry, len(terms))
	for i, t := range terms {
		ents[i] = core.Entry{Index: uint64(i + 1), Term: t, Data: []byte{byte(t)}}
	}
	return ents
}

// electSolo makes a solo node leader of a cluster of voters by granting
// it pre-votes and votes from the given peers.
func electSolo(t *testing.T, s *soloNode, grant ...uint64) {
	t.Helper()
	s.tickUntil(40, func() bool { return s.n.Role() == core.RolePreCandidate })
	for _, id := range grant {
		if err := s.step(core.Message{Type: core.MsgPreVoteResp, From: id, Term: s.n.Term() + 1}); err != nil {
			t.Fatal(err)
		}
		if s.n.Role() == core.RoleCandidate {
			break
		}
	}
	for _, id := range grant {
		if err := s.step(core.Message{Type: core.MsgVoteResp, From: id, Term: s.n.Term()}); err != nil {
			t.Fatal(err)
		}
		if s.n.Role() == core.RoleLeader {
			break
		}
	}
	if s.n.Role() != core.RoleLeader {
		t.Fatalf("setup: not leader: %v", s.n.Role())
	}
}

// TestAppendConsistencyCheck: a follower accepts an append only if it holds
// the entry before it (paper §5.3), truncates a conflicting suffix, and
// never truncates committed entries.
func TestAppendConsistencyCheck(t *testing.T) {
	// Follower log: 1/1 2/1 3/2 (index/term), term 3, commit 1.
	cases := []struct {
		name        string
		prevIdx     uint64
		prevTerm    uint64
		ents        []core.Entry
		wantReject  bool
		wantLast    uint64
		wantTermAt3 uint64
	}{
		{"matching prev, new entries appended", 3, 2, []core.Entry{{Index: 4, Term: 3}}, false, 4, 2},
		{"matching prev, empty heartbeat-like append", 3, 2, nil, false, 3, 2},
		{"prev beyond our log", 5, 3, []core.Entry{{Index: 6, Term: 3}}, true, 3, 2},
		{"prev term mismatch", 3, 3, []core.Entry{{Index: 4, Term: 3}}, true, 3, 2},
		{"conflict truncates suffix", 2, 1, []core.Entry{{Index: 3, Term: 3}}, false, 3, 3},
		{"duplicate entries are not truncated", 1, 1, []core.Entry{{Index: 2, Term: 1}}, false, 3, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 3, Commit: 1}, entriesWithTerms(1, 1, 2), nil)
			if err := s.step(core.Message{Type: core.MsgApp, From: 2, Term: 3, Index: tc.prevIdx, LogTerm: tc.prevTerm, Entries: tc.ents}); err != nil {
				t.Fatal(err)
			}
			out := s.flush()
			if len(out) != 1 || out[0].Type != core.MsgAppResp || out[0].Reject != tc.wantReject {
				t.Fatalf("response %v, want one MsgAppResp reject=%v", out, tc.wantReject)
			}
			if !s.afterPersist[len(s.out)-1] {
				t.Fatal("append response must wait for persistence (design §3 rule 1)")
			}
			last, _ := s.log.LastIndex()
			t3, _ := s.log.Term(3)
			if last != tc.wantLast || t3 != tc.wantTermAt3 {
				t.Fatalf("stored log last=%d term(3)=%d, want %d and %d", last, t3, tc.wantLast, tc.wantTermAt3)
			}
		})
	}
	t.Run("conflict with a committed entry is refused", func(t *testing.T) {
		s := newSolo(t, core.HardState{Term: 3, Commit: 3}, entriesWithTerms(1, 1, 2), nil)
		err := s.step(core.Message{Type: core.MsgApp, From: 2, Term: 3, Index: 3, LogTerm: 2, Entries: nil})
		if err != nil {
			t.Fatal(err)
		}
		err = s.step(core.Message{Type: core.MsgApp, From: 2, Term: 3, Index: 3, LogTerm: 2,
			Entries: []core.Entry{{Index: 4, Term: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		// An impossible message claiming index 3 has another term.
		err = s.step(core.Message{Type: core.MsgApp, From: 2, Term: 3, Index: 3, LogTerm: 2, Commit: 4,
			Entries: []core.Entry{{Index: 4, Term: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		s.flush()
		s2 := newSolo(t, core.HardState{Term: 3, Commit: 3}, entriesWithTerms(1, 1, 2), nil)
		// prev (2,1) matches; entry 3 with term 3 conflicts with committed 3/2.
		err = s2.step(core.Message{Type: core.MsgApp, From: 2, Term: 3, Index: 2, LogTerm: 1, Entries: []core.Entry{{Index: 3, Term: 3}}})
		if err == nil {
			// Index 2 < commit 3 short-circuits to an ack of the commit;
			// that is also safe. Check the entry survived.
			if tm, _ := s2.n.EntryTerm(3); tm != 2 {
				t.Fatalf("committed entry 3 overwritten: term %d", tm)
			}
		}
	})
}

// TestFastBackoff replays the worked example in replication.go: the
// follower's stale tail is found in two rejected round trips, not seven.
func TestFastBackoff(t *testing.T) {
	leaderTerms := []uint64{1, 1, 1, 4, 4, 5, 5, 6, 6}
	followerTerms := []uint64{1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}
	c := &cluster{t: t, nodes: map[uint64]*core.Node{}, logs: map[uint64]*memlog.Log{},
		applied: map[uint64][]core.Entry{}, reads: map[uint64][]core.ReadState{}, rejects: map[uint64][]core.RejectedProposal{}}
	for id, terms := range map[uint64][]uint64{1: leaderTerms, 2: followerTerms, 3: leaderTerms} {
		log := memlog.New()
		if err := log.Save(core.HardState{Term: 6}, entriesWithTerms(terms...)); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(id, 1, 2, 3)
		// The nodes restart from persisted logs and only node 1's clock
		// runs; without CheckQuorum the others have no restart lease to
		// sit out (see TestRestartedNodeKeepsLeaderLease).
		cfg.CheckQuorum = false
		n, err := core.New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[id], c.logs[id] = n, log
	}
	c.elect(1)
	rejections := 0
	for _, m := range c.sent {
		if m.Type == core.MsgAppResp && m.From == 2 && m.Reject {
			rejections++
		}
	}
	if rejections > 2 {
		t.Fatalf("follower rejected %d appends, want at most 2 with fast backoff", rejections)
	}
	got := c.logs[2].AllEntries()
	want := c.logs[1].AllEntries()
	if len(got) != len(want) {
		t.Fatalf("follower log has %d entries, leader %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Term != want[i].Term {
			t.Fatalf("entry %d: follower term %d, leader term %d", i+1, got[i].Term, want[i].Term)
		}
	}
}

// TestFigure8: a leader does not commit an entry from an earlier term by
// counting replicas (paper §5.4.2, Figure 8), only once an entry of its own
// term is replicated on a majority.
func TestFigure8(t *testing.T) {
	five := func(cfg *core.Config) { cfg.Membership = core.Membership{Voters: []uint64{1, 2, 3, 4, 5}} }
	// S1's log: 1/1 and 2/2 (written as leader of term 2, never
	// committed). It is now elected in term 4.
	s := newSolo(t, core.HardState{Term: 3}, entriesWithTerms(1, 2), five)
	electSolo(t, s, 2, 3)
	s.flush() // the no-op 3/4 is persisted, so S1 counts itself to 3
	term := s.n.Term()
	if term != 4 {
		t.Fatalf("setup: leader term %d, want 4", term)
	}
	for _, id := range []uint64{2, 3} {
		if err := s.step(core.Message{Type: core.MsgAppResp, From: id, Term: term, Index: 2}); err != nil {
			t.Fatal(err)
		}
	}
	s.flush()
	if c := s.n.Status().Commit; c >= 2 {
		t.Fatalf("entry 2 of term 2 committed by counting replicas (commit %d): Figure 8 violation", c)
	}
	for _, id := range []uint64{2, 3} {
		if err := s.step(core.Message{Type: core.MsgAppResp, From: id, Term: term, Index: 3}); err != nil {
			t.Fatal(err)
		}
	}
	s.flush()
	if c := s.n.Status().Commit; c != 3 {
		t.Fatalf("commit %d once the term-4 entry is on a majority, want 3", c)
	}
}

// TestLeaderCountsItselfOnlyWhenDurable: the leader's own copy counts
// toward commitment only after Advance (design §3 rule 2), and its appends
// leave in Messages, before its write (thesis §10.2.1).
func TestLeaderCountsItselfOnlyWhenDurable(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, nil)
	electSolo(t, s, 2)
	s.flush()
	// Bring follower 2 up to date so it is in replicate state.
	last := s.n.Status().LastIndex
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: last}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if err := s.n.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	rd, err := s.n.Ready()
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Entries) != 1 {
		t.Fatalf("want the proposal to persist, got %v", rd.Entries)
	}
	sentApp := false
	for _, m := range rd.Messages {
		if m.Type == core.MsgApp && m.To == 2 && len(m.Entries) == 1 {
			sentApp = true
		}
	}
	if !sentApp {
		t.Fatalf("leader must send the append before its own write: %v", rd.Messages)
	}
	// Follower 3 acknowledges before the leader's write is durable: one
	// follower plus an undurable leader is not a quorum of durable copies.
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 3, Term: s.n.Term(), Index: last + 1}); err != nil {
		t.Fatal(err)
	}
	if c := s.n.Status().Commit; c > last {
		t.Fatalf("committed %d before the leader's own write or a second follower", c)
	}
	if err := s.log.Save(rd.HardState, rd.Entries); err != nil {
		t.Fatal(err)
	}
	if err := s.n.Advance(rd); err != nil {
		t.Fatal(err)
	}
	if c := s.n.Status().Commit; c != last+1 {
		t.Fatalf("commit %d after the leader's write became durable, want %d", c, last+1)
	}
}

// TestFlowControl: in replicate state the leader keeps at most
// MaxInflightMsgs appends outstanding, and resumes as they are acknowledged.
func TestFlowControl(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, func(cfg *core.Config) { cfg.MaxInflightMsgs = 2 })
	electSolo(t, s, 2)
	s.flush()
	last := s.n.Status().LastIndex
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: last}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	// One proposal per Ready, so each would be its own append.
	apps := 0
	for i := range 5 {
		if err := s.n.Propose([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		for _, m := range s.flush() {
			if m.Type == core.MsgApp && m.To == 2 && len(m.Entries) > 0 {
				apps++
			}
		}
	}
	if apps != 2 {
		t.Fatalf("sent %d appends to a replicating follower, want MaxInflightMsgs=2", apps)
	}
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: last + 1}); err != nil {
		t.Fatal(err)
	}
	more := 0
	for _, m := range s.flush() {
		if m.Type == core.MsgApp && m.To == 2 && len(m.Entries) > 0 {
			more++
		}
	}
	if more == 0 {
		t.Fatal("acknowledgement did not reopen the window")
	}
}

// TestInflightBytesLimit: one large append fills the byte window.
func TestInflightBytesLimit(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, func(cfg *core.Config) {
		cfg.MaxInflightBytes = 1000
		cfg.MaxMsgBytes = 1000
	})
	electSolo(t, s, 2)
	s.flush()
	last := s.n.Status().LastIndex
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: last}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	for range 3 {
		if err := s.n.Propose(bytes.Repeat([]byte{1}, 600)); err != nil {
			t.Fatal(err)
		}
	}
	apps, sent := 0, 0
	for _, m := range s.flush() {
		if m.Type == core.MsgApp && m.To == 2 && len(m.Entries) > 0 {
			apps++
			sent += len(m.Entries)
		}
	}
	if apps != 1 || sent != 1 {
		t.Fatalf("sent %d appends with %d entries, want 1 with 1 within a 1000-byte window", apps, sent)
	}
}

// TestUncommittedLimit: proposals past MaxUncommittedBytes are refused with
// a typed error, never dropped silently, and accepted again after commit.
func TestUncommittedLimit(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 1}, nil, func(cfg *core.Config) { cfg.MaxUncommittedBytes = 1000 })
	electSolo(t, s, 2)
	s.flush()
	payload := bytes.Repeat([]byte{7}, 300)
	for i := range 3 {
		if err := s.n.Propose(payload); err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	if err := s.n.Propose(payload); !errors.Is(err, core.ErrTooManyUncommitted) {
		t.Fatalf("4th proposal: %v, want ErrTooManyUncommitted", err)
	}
	if err := s.n.Propose(bytes.Repeat([]byte{7}, 2000)); !errors.Is(err, core.ErrProposalTooLarge) {
		t.Fatalf("oversized proposal: %v, want ErrProposalTooLarge", err)
	}
	s.flush()
	last := s.n.Status().LastIndex
	if err := s.step(core.Message{Type: core.MsgAppResp, From: 2, Term: s.n.Term(), Index: last}); err != nil {
		t.Fatal(err)
	}
	s.flush()
	if err := s.n.Propose(payload); err != nil {
		t.Fatalf("after commit: %v", err)
	}
}

// TestForwardedProposals: a follower forwards proposals; ones the leader
// refuses come back with the reason (never silently dropped).
func TestForwardedProposals(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	if err := c.nodes[2].Propose([]byte("via-follower")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	for id := uint64(1); id <= 3; id++ {
		if got := c.appliedData(id); len(got) != 1 || got[0] != "via-follower" {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
	// Leader starts a transfer to an isolated node: it refuses proposals.
	c.drop = func(m core.Message) bool { return m.To == 3 }
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[2].Propose([]byte("refused")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if len(c.rejects[2]) != 1 || !errors.Is(c.rejects[2][0].Err, core.ErrTransferInProgress) ||
		string(c.rejects[2][0].Data[0]) != "refused" {
		t.Fatalf("rejected proposals on node 2: %+v", c.rejects[2])
	}
	// No leader: refused at once.
	s := newSolo(t, core.HardState{Term: 1}, nil, nil)
	if err := s.n.Propose([]byte("x")); !errors.Is(err, core.ErrNoLeader) {
		t.Fatalf("Propose without leader: %v", err)
	}
}

// TestProposalsBatchIntoOneAppend: proposals made between two Readies
// leave as one append per follower, not one per proposal.
func TestProposalsBatchIntoOneAppend(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.sent = nil
	for i := range 64 {
		if err := c.nodes[1].Propose([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	withEntries := 0
	for _, m := range c.sent {
		if m.Type == core.MsgApp && len(m.Entries) > 0 {
			withEntries++
			if len(m.Entries) != 64 {
				t.Fatalf("append carried %d entries, want 64", len(m.Entries))
			}
		}
	}
	if withEntries != 2 {
		t.Fatalf("%d appends with entries for 64 proposals, want 2 (one per follower)", withEntries)
	}
	for id := uint64(1); id <= 3; id++ {
		if got := len(c.appliedData(id)); got != 64 {
			t.Fatalf("node %d applied %d", id, got)
		}
	}
}

// TestSnapshotOverMatchingEntryAcksOnlyTheSnapshot: a follower that
// already holds the snapshot's last entry keeps its log (paper §7) but
// acknowledges only up to the snapshot, since its later entries were never
// checked against the leader's. Acknowledging its whole log let the
// leader record a false match and commit conflicting entries to it (found
// by the driver's snapshot work, driver/core_bug_test.go).
func TestSnapshotOverMatchingEntryAcksOnlyTheSnapshot(t *testing.T) {
	// Follower log: 1/1 2/1 3/1 4/1 5/1 (term/index); 4 and 5 are stale.
	s := newSolo(t, core.HardState{Term: 3}, entriesWithTerms(1, 1, 1, 1, 1), nil)
	snap := &core.SnapshotMeta{Index: 3, Term: 1, Membership: core.Membership{Voters: []uint64{1, 2, 3}}}
	if err := s.step(core.Message{Type: core.MsgSnap, From: 2, Term: 3, Snapshot: snap}); err != nil {
		t.Fatal(err)
	}
	out := s.flush()
	if len(out) != 1 || out[0].Type != core.MsgAppResp || out[0].Reject || out[0].Index != 3 {
		t.Fatalf("response %v, want one MsgAppResp acknowledging index 3", out)
	}
	if st := s.n.Status(); st.Commit != 3 || st.LastIndex != 5 {
		t.Fatalf("commit %d last %d, want commit 3 with the log kept (last 5)", st.Commit, st.LastIndex)
	}
}
