package core_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// soloNode builds node 1 of a {1,2,3} cluster whose peers are simulated
// by the test: it persists to a memlog and the test reads its output.
type soloNode struct {
	t   *testing.T
	n   *core.Node
	log *memlog.Log
	// out collects messages from every Ready, in order.
	out []core.Message
	// afterPersist marks which of out came from MessagesAfterPersist.
	afterPersist map[int]bool
	applied      []core.Entry
	reads        []core.ReadState
	rejected     []core.RejectedProposal
}

func newSolo(t *testing.T, hs core.HardState, ents []core.Entry, tweak func(*core.Config)) *soloNode {
	t.Helper()
	log := memlog.New()
	if err := log.Save(hs, ents); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(1, 1, 2, 3)
	cfg.CheckQuorum = false
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := core.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return &soloNode{t: t, n: n, log: log, afterPersist: map[int]bool{}}
}

// flush processes every Ready and returns the messages produced, in order.
func (s *soloNode) flush() []core.Message {
	s.t.Helper()
	var out []core.Message
	for s.n.HasReady() {
		rd, err := s.n.Ready()
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, rd.Messages...)
		if rd.Snapshot != nil {
			if err := s.log.InstallSnapshot(*rd.Snapshot); err != nil {
				s.t.Fatal(err)
			}
		}
		if err := s.log.Save(rd.HardState, rd.Entries); err != nil {
			s.t.Fatal(err)
		}
		for _, m := range rd.MessagesAfterPersist {
			s.afterPersist[len(s.out)+len(out)] = true
			out = append(out, m)
		}
		s.applied = append(s.applied, rd.CommittedEntries...)
		s.reads = append(s.reads, rd.ReadStates...)
		s.rejected = append(s.rejected, rd.RejectedProposals...)
		if err := s.n.Advance(rd); err != nil {
			s.t.Fatal(err)
		}
	}
	s.out = append(s.out, out...)
	return out
}

func (s *soloNode) step(m core.Message) error {
	if m.To == 0 {
		m.To = 1
	}
	return s.n.Step(m)
}

// tickUntil ticks until cond holds, failing after limit ticks.
func (s *soloNode) tickUntil(limit int, cond func() bool) {
	s.t.Helper()
	for range limit {
		if cond() {
			return
		}
		if err := s.n.Tick(); err != nil {
			s.t.Fatal(err)
		}
	}
	if !cond() {
		s.t.Fatalf("condition not reached within %d ticks: %+v", limit, s.n.Status())
	}
}

// makeRole brings a fresh solo node into role, returning it. Its log holds
// one entry (1/1) and it starts in term 3.
func makeRole(t *testing.T, role core.Role, tweak func(*core.Config)) *soloNode {
	t.Helper()
	s := newSolo(t, core.HardState{Term: 3}, []core.Entry{{Index: 1, Term: 1}}, tweak)
	if role == core.RoleFollower {
		return s
	}
	s.tickUntil(30, func() bool { return s.n.Role() != core.RoleFollower })
	if role == core.RolePreCandidate {
		return s
	}
	// Grant the pre-vote: the node becomes a candidate in term 2.
	if err := s.step(core.Message{Type: core.MsgPreVoteResp, From: 2, Term: s.n.Term() + 1}); err != nil {
		t.Fatal(err)
	}
	if role == core.RoleCandidate {
		return s
	}
	if err := s.step(core.Message{Type: core.MsgVoteResp, From: 2, Term: s.n.Term()}); err != nil {
		t.Fatal(err)
	}
	if s.n.Role() != core.RoleLeader {
		t.Fatalf("setup: want leader, got %v", s.n.Role())
	}
	return s
}

// TestTermRules is the role × message type × term relation table (paper
// §5.1: any higher term makes a node follower; lower terms are refused;
// thesis §9.6 for PreVote, which never changes terms).
func TestTermRules(t *testing.T) {
	roles := []core.Role{core.RoleFollower, core.RolePreCandidate, core.RoleCandidate, core.RoleLeader}
	type outcome struct {
		role     core.Role // resulting role; 255 = unchanged
		termRel  int       // resulting term relative to the node's term before
		respType core.MessageType
		reject   bool
		err      bool
	}
	const same core.Role = 255
	cases := []struct {
		msg     core.MessageType
		termRel int
		want    func(core.Role) outcome
	}{
		// Higher term.
		{core.MsgApp, +1, func(core.Role) outcome { return outcome{core.RoleFollower, +1, core.MsgAppResp, false, false} }},
		{core.MsgHeartbeat, +1, func(core.Role) outcome {
			return outcome{core.RoleFollower, +1, core.MsgHeartbeatResp, false, false}
		}},
		{core.MsgVote, +1, func(core.Role) outcome { return outcome{core.RoleFollower, +1, core.MsgVoteResp, false, false} }},
		{core.MsgPreVote, +1, func(core.Role) outcome { return outcome{same, 0, core.MsgPreVoteResp, false, false} }},
		// Lower term: refused; stale leaders are told our term (PreVote on).
		{core.MsgApp, -1, func(core.Role) outcome { return outcome{same, 0, core.MsgAppResp, false, false} }},
		{core.MsgHeartbeat, -1, func(core.Role) outcome { return outcome{same, 0, core.MsgAppResp, false, false} }},
		{core.MsgVote, -1, func(core.Role) outcome { return outcome{same, 0, 0, false, false} }},
		{core.MsgPreVote, -1, func(core.Role) outcome { return outcome{same, 0, core.MsgPreVoteResp, true, false} }},
		// Equal term.
		{core.MsgApp, 0, func(r core.Role) outcome {
			if r == core.RoleLeader {
				return outcome{same, 0, 0, false, true} // two leaders in a term
			}
			return outcome{core.RoleFollower, 0, core.MsgAppResp, false, false}
		}},
		{core.MsgHeartbeat, 0, func(r core.Role) outcome {
			if r == core.RoleLeader {
				return outcome{same, 0, 0, false, true}
			}
			return outcome{core.RoleFollower, 0, core.MsgHeartbeatResp, false, false}
		}},
		{core.MsgVote, 0, func(r core.Role) outcome {
			if r == core.RoleFollower || r == core.RolePreCandidate {
				// Has not voted in this term and knows no leader.
				return outcome{same, 0, core.MsgVoteResp, false, false}
			}
			return outcome{same, 0, core.MsgVoteResp, true, false} // voted for itself
		}},
	}
	for _, role := range roles {
		for _, tc := range cases {
			name := fmt.Sprintf("%v/%v/term%+d", role, tc.msg, tc.termRel)
			t.Run(name, func(t *testing.T) {
				s := makeRole(t, role, nil)
				s.flush()
				before := s.n.Term()
				m := core.Message{Type: tc.msg, From: 2, Term: uint64(int(before) + tc.termRel)}
				switch tc.msg {
				case core.MsgApp:
					m.Index, m.LogTerm = 1, 1
				case core.MsgVote, core.MsgPreVote:
					lastTerm, _ := s.n.EntryTerm(s.n.Status().LastIndex)
					// A candidate's last log term never exceeds its term.
					m.Index, m.LogTerm = s.n.Status().LastIndex, min(lastTerm, m.Term)
				}
				want := tc.want(role)
				err := s.step(m)
				if (err != nil) != want.err {
					t.Fatalf("Step err = %v, want error %v", err, want.err)
				}
				wantRole := want.role
				if wantRole == same {
					wantRole = role
				}
				if got := s.n.Role(); got != wantRole {
					t.Errorf("role = %v, want %v", got, wantRole)
				}
				if got := int(s.n.Term()) - int(before); got != want.termRel {
					t.Errorf("term moved by %d, want %d", got, want.termRel)
				}
				var resp *core.Message
				for _, o := range s.flush() {
					if o.To == 2 && o.Type != core.MsgApp && o.Type != core.MsgHeartbeat && o.Type != core.MsgVote && o.Type != core.MsgPreVote {
						resp = &o
					}
				}
				switch {
				case want.respType == 0 && resp != nil:
					t.Errorf("unexpected response %v", *resp)
				case want.respType != 0 && resp == nil:
					t.Errorf("no response, want %v", want.respType)
				case want.respType != 0 && (resp.Type != want.respType || resp.Reject != want.reject):
					t.Errorf("response %v, want %v reject=%v", *resp, want.respType, want.reject)
				}
			})
		}
	}
}

// TestVoteGranting checks one vote per term (paper §5.2) and the election
// restriction (§5.4.1): our log is 1/1 1/2 2/3 (term/index) in term 2.
func TestVoteGranting(t *testing.T) {
	ents := []core.Entry{{Index: 1, Term: 1}, {Index: 2, Term: 1}, {Index: 3, Term: 2}}
	cases := []struct {
		name          string
		vote          uint64
		lastTerm, idx uint64
		grant         bool
	}{
		{"longer log same last term", 0, 2, 4, true},
		{"equal log", 0, 2, 3, true},
		{"shorter log same last term", 0, 2, 2, false},
		{"higher last term shorter log", 0, 3, 1, true},
		{"lower last term longer log", 0, 1, 9, false},
		{"already voted for another", 3, 2, 9, false},
		{"already voted for this candidate", 2, 2, 3, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 2, Vote: tc.vote}, ents, nil)
			// A candidate's last log term is never above its term (§5.1).
			if err := s.step(core.Message{Type: core.MsgVote, From: 2, Term: max(2, tc.lastTerm), Index: tc.idx, LogTerm: tc.lastTerm}); err != nil {
				t.Fatal(err)
			}
			out := s.flush()
			if len(out) != 1 || out[0].Type != core.MsgVoteResp {
				t.Fatalf("want one MsgVoteResp, got %v", out)
			}
			if out[0].Reject == tc.grant {
				t.Fatalf("granted = %v, want %v", !out[0].Reject, tc.grant)
			}
			if tc.grant {
				if hs, _, _ := s.log.InitialState(); hs.Vote != 2 {
					t.Fatalf("granted vote not persisted: %+v", hs)
				}
				if !s.afterPersist[len(s.out)-1] {
					t.Fatal("vote response must leave only after the vote is durable (design §3 rule 1)")
				}
			}
		})
	}
}

// TestPreVoteDoesNotDisrupt: a node partitioned away keeps pre-voting
// without raising its term, so when it returns the leader is undisturbed
// (thesis §9.6).
func TestPreVoteDoesNotDisrupt(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	term := c.nodes[1].Term()
	c.drop = func(m core.Message) bool { return m.From == 3 || m.To == 3 }
	for range 100 {
		c.tick()
		c.stabilize()
	}
	if got := c.nodes[3].Term(); got != term {
		t.Fatalf("isolated node raised its term to %d (was %d) despite PreVote", got, term)
	}
	c.drop = nil
	for range 5 {
		c.tick()
		c.stabilize()
	}
	if c.leader() != 1 || c.nodes[1].Term() != term {
		t.Fatalf("leader disturbed: leader %d term %d, want 1 term %d", c.leader(), c.nodes[1].Term(), term)
	}
}

// TestWithoutPreVoteRejoiningNodeDisrupts is the control for the test
// above: with PreVote off, the isolated node's term climbs.
func TestWithoutPreVoteRejoiningNodeDisrupts(t *testing.T) {
	c := newCluster(t, 3, func(cfg *core.Config) { cfg.PreVote = false; cfg.CheckQuorum = false })
	c.elect(1)
	term := c.nodes[1].Term()
	c.drop = func(m core.Message) bool { return m.From == 3 || m.To == 3 }
	for range 100 {
		c.tick()
		c.stabilize()
	}
	if c.nodes[3].Term() <= term {
		t.Fatalf("control failed: isolated node's term %d did not rise above %d", c.nodes[3].Term(), term)
	}
}

// TestCheckQuorumStepDown: a leader that hears from no quorum for an
// election timeout steps down (thesis §6.2).
func TestCheckQuorumStepDown(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.drop = func(m core.Message) bool { return m.From == 1 || m.To == 1 }
	for range 2 * 10 {
		if err := c.nodes[1].Tick(); err != nil {
			t.Fatal(err)
		}
		c.stabilize()
	}
	if r := c.nodes[1].Role(); r == core.RoleLeader {
		t.Fatal("isolated leader kept leading with CheckQuorum on")
	}
}

// TestLeaderLeaseIgnoresVotes: with CheckQuorum, a follower that hears a
// live leader ignores vote requests (thesis §4.2.3).
func TestLeaderLeaseIgnoresVotes(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	term := c.nodes[2].Term()
	err := c.nodes[2].Step(core.Message{Type: core.MsgVote, From: 3, To: 2, Term: term + 5, Index: 99, LogTerm: term + 4})
	if err != nil {
		t.Fatal(err)
	}
	if c.nodes[2].Term() != term {
		t.Fatalf("follower in lease adopted a disruptive term %d", c.nodes[2].Term())
	}
	if c.nodes[2].Status().Counters.IgnoredVotes != 1 {
		t.Fatalf("ignored vote not counted: %+v", c.nodes[2].Status().Counters)
	}
}

// TestSingleNodeElectsAndCommits: a one-voter cluster needs nobody.
func TestSingleNodeElectsAndCommits(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.elect(1)
	if err := c.nodes[1].Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if got := c.appliedData(1); len(got) != 1 {
		t.Fatalf("applied %v", got)
	}
}

// TestLearnerNeverCampaigns: learners receive the log but do not vote.
func TestLearnerNeverCampaigns(t *testing.T) {
	log := memlog.New()
	cfg := testConfig(3)
	cfg.Membership = core.Membership{Voters: []uint64{1, 2}, Learners: []uint64{3}}
	n, err := core.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if err := n.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if n.Role() != core.RoleFollower || n.HasReady() && hasVoteRequest(t, n) {
		t.Fatalf("learner campaigned: %v", n.Role())
	}
	if err := n.TransferLeadership(3); !errors.Is(err, core.ErrNoLeader) {
		t.Fatalf("TransferLeadership without leader = %v, want ErrNoLeader", err)
	}
}

func hasVoteRequest(t *testing.T, n *core.Node) bool {
	rd, err := n.Ready()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range append(rd.Messages, rd.MessagesAfterPersist...) {
		if m.Type == core.MsgVote || m.Type == core.MsgPreVote {
			return true
		}
	}
	return false
}

// TestRestartedNodeKeepsLeaderLease: a node restarted from persisted state
// may have acknowledged a leader just before the crash, and that leader may
// serve lease reads on the strength of it. So for one election timeout the
// restarted node ignores vote requests, as a follower hearing a live leader
// would (thesis §4.2.3). Found by the driver's lease-read scenario
// (driver/corebug_test.go).
func TestRestartedNodeKeepsLeaderLease(t *testing.T) {
	s := newSolo(t, core.HardState{Term: 3}, entriesWithTerms(1, 3), func(cfg *core.Config) { cfg.CheckQuorum = true })
	vote := core.Message{Type: core.MsgPreVote, From: 2, Term: 4, Index: 2, LogTerm: 3}
	if err := s.step(vote); err != nil {
		t.Fatal(err)
	}
	if out := s.flush(); len(out) != 0 {
		t.Fatalf("restarted node answered a pre-vote inside the lease window: %v", out)
	}
	for range 10 { // one election timeout (ElectionTicks 10)
		if err := s.n.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	s.flush()
	if err := s.step(vote); err != nil {
		t.Fatal(err)
	}
	granted := false
	for _, m := range s.flush() {
		if m.Type == core.MsgPreVoteResp && m.To == 2 && !m.Reject {
			granted = true
		}
	}
	if !granted {
		t.Fatal("pre-vote refused after the restart lease expired")
	}
	// A brand-new node has acknowledged nobody: no lease to keep. (It
	// holds the bootstrap entry, 1/1, so the candidate's log must too.)
	fresh := newSolo(t, core.HardState{}, nil, func(cfg *core.Config) { cfg.CheckQuorum = true })
	if err := fresh.step(core.Message{Type: core.MsgPreVote, From: 2, Term: 2, Index: 1, LogTerm: 1}); err != nil {
		t.Fatal(err)
	}
	if out := fresh.flush(); len(out) != 1 || out[0].Reject {
		t.Fatalf("fresh node refused a pre-vote: %v", out)
	}
}
