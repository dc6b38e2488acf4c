package core_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// Membership-change tests (design: /work/notes/membership.md; rule in
// core/membership.go). Each transition runs on the synchronous cluster of
// harness_test.go; removed nodes keep running, so their messages reach the
// others and are refused as the design says.

// addJoiner starts node id with empty storage and no membership: a node
// that waits to be sent a snapshot or log by a leader.
func (c *cluster) addJoiner(id uint64, tweak func(*core.Config)) {
	c.t.Helper()
	cfg := testConfig(id)
	if tweak != nil {
		tweak(&cfg)
	}
	cfg.Membership = core.Membership{}
	log := memlog.New()
	n, err := core.New(cfg, log)
	if err != nil {
		c.t.Fatalf("New(joiner %d): %v", id, err)
	}
	c.nodes[id], c.logs[id] = n, log
}

// propose runs cc on the current leader and stabilizes. It returns the
// proposal's error.
func (c *cluster) confChange(cc core.ConfChange) error {
	c.t.Helper()
	lead := c.leader()
	if lead == 0 {
		c.t.Fatalf("no leader for %v", cc)
	}
	_, err := c.nodes[lead].ProposeConfChange(cc)
	c.stabilize()
	return err
}

// settle ticks every node (and stabilizes) n times.
func (c *cluster) settle(n int) {
	for range n {
		c.tick()
		c.stabilize()
	}
}

func addLearner(id uint64) core.ConfChangeOp {
	return core.ConfChangeOp{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: id, Name: fmt.Sprintf("n%d", id)}}
}

func addVoter(id uint64) core.ConfChangeOp {
	return core.ConfChangeOp{Type: core.ConfAddVoter, Member: core.MemberInfo{ID: id, Name: fmt.Sprintf("n%d", id)}}
}

func promote(id uint64) core.ConfChangeOp {
	return core.ConfChangeOp{Type: core.ConfPromote, Member: core.MemberInfo{ID: id}}
}

func remove(id uint64) core.ConfChangeOp {
	return core.ConfChangeOp{Type: core.ConfRemove, Member: core.MemberInfo{ID: id}}
}

func ops(o ...core.ConfChangeOp) core.ConfChange { return core.ConfChange{Ops: o} }

// checkAgree verifies that every node that is a member of the final
// configuration has it active, with the given voters and learners, and
// that the configuration is not joint.
func (c *cluster) checkAgree(voters, learners []uint64) {
	c.t.Helper()
	for id, n := range c.nodes {
		st := n.Status()
		m := st.Membership
		if !m.Contains(id) {
			if !st.Removed {
				c.t.Errorf("node %d is not a member of %v but Status.Removed is false", id, m.IDs())
			}
			continue
		}
		if !slices.Equal(m.Voters, voters) || !slices.Equal(m.Learners, learners) || m.IsJoint() {
			c.t.Errorf("node %d: voters %v outgoing %v learners %v, want voters %v learners %v",
				id, m.Voters, m.OutgoingVoters, m.Learners, voters, learners)
		}
		if st.Removed {
			c.t.Errorf("node %d is a member but Status.Removed", id)
		}
	}
}

// TestConfChangeTransitions: each transition, proposed on the leader,
// becomes active on every member (and the joint ones leave the joint
// configuration by themselves); the cluster then still commits, and only
// the new voters decide.
func TestConfChangeTransitions(t *testing.T) {
	cases := []transitionCase{
		{name: "add learner", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addLearner(4))},
			voters:  []uint64{1, 2, 3}, learners: []uint64{4}},
		{name: "promote learner", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addLearner(4)), ops(promote(4))},
			voters:  []uint64{1, 2, 3, 4}},
		{name: "add voter directly", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addVoter(4))},
			voters:  []uint64{1, 2, 3, 4}},
		{name: "remove follower", size: 3,
			changes: []core.ConfChange{ops(remove(3))},
			voters:  []uint64{1, 2}},
		{name: "remove learner", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addLearner(4)), ops(remove(4))},
			voters:  []uint64{1, 2, 3}},
		{name: "remove leader hands over", size: 3,
			changes: []core.ConfChange{ops(remove(1))},
			voters:  []uint64{2, 3}, leaderOut: true},
		{name: "joint add two", size: 3, joiners: []uint64{4, 5},
			changes: []core.ConfChange{ops(addVoter(4), addVoter(5))},
			voters:  []uint64{1, 2, 3, 4, 5}, wantJoint: true},
		{name: "joint replace follower", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addVoter(4), remove(3))},
			voters:  []uint64{1, 2, 4}, wantJoint: true},
		{name: "joint replace leader", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{ops(addVoter(4), remove(1))},
			voters:  []uint64{2, 3, 4}, wantJoint: true, leaderOut: true},
		{name: "promote replacement learner", size: 3, joiners: []uint64{4},
			changes: []core.ConfChange{
				{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: 4, Name: "n3", Replaces: 3}}}},
				ops(promote(4), remove(3)),
			},
			voters: []uint64{1, 2, 4}, wantJoint: true},
		{name: "shrink to one", size: 3,
			changes: []core.ConfChange{ops(remove(3)), ops(remove(2))},
			voters:  []uint64{1}},
		{name: "grow from one", size: 1, joiners: []uint64{2, 3},
			changes: []core.ConfChange{ops(addLearner(2)), ops(promote(2)), ops(addLearner(3)), ops(promote(3))},
			voters:  []uint64{1, 2, 3}},
	}
	// Second pass: one committed entry per Ready, so activation spans
	// Readies (MaxCommittedBytesPerReady) and restarts read back page by page.
	onePerReady := func(cfg *core.Config) { cfg.MaxCommittedBytesPerReady = 1 }
	for _, tweak := range []func(*core.Config){nil, onePerReady} {
		for _, tc := range cases {
			name := tc.name
			if tweak != nil {
				name += "/one entry per Ready"
			}
			t.Run(name, func(t *testing.T) {
				runTransition(t, tc, tweak)
			})
		}
	}
}

// transitionCase is one row of TestConfChangeTransitions.
type transitionCase struct {
	name     string
	size     int
	joiners  []uint64
	changes  []core.ConfChange
	voters   []uint64
	learners []uint64
	// wantJoint: a joint configuration is passed through.
	wantJoint bool
	// leaderOut: the first leader is not in the final voters, so
	// leadership must have moved.
	leaderOut bool
}

func runTransition(t *testing.T, tc transitionCase, tweak func(*core.Config)) {
	c := newCluster(t, tc.size, tweak)
	c.tolerateInvalid = true // removed nodes keep sending
	for _, id := range tc.joiners {
		c.addJoiner(id, tweak)
	}
	c.elect(1)
	sawJoint := false
	for i, cc := range tc.changes {
		lead := c.leader()
		idx, err := c.nodes[lead].ProposeConfChange(cc)
		if err != nil {
			t.Fatalf("change %d %v: %v", i, cc, err)
		}
		// Step by step so the joint phase can be observed.
		for range 1000 {
			if c.nodes[lead].Status().Membership.IsJoint() {
				sawJoint = true
			}
			if !c.stepOnce() {
				break
			}
		}
		c.settle(3) // a handover may need ticks
		if st := c.nodes[c.leader()].Status(); st.ConfIndex < idx {
			t.Fatalf("change %d at %d not active on leader (ConfIndex %d)", i, idx, st.ConfIndex)
		}
	}
	c.settle(2 * 10)
	c.checkAgree(tc.voters, tc.learners)
	if sawJoint != tc.wantJoint {
		t.Errorf("passed through a joint configuration: %v, want %v", sawJoint, tc.wantJoint)
	}
	lead := c.leader()
	if lead == 0 || !slices.Contains(tc.voters, lead) {
		t.Fatalf("leader %d is not a voter of %v", lead, tc.voters)
	}
	if tc.leaderOut != (lead != 1) {
		t.Errorf("leader is %d; leaderOut %v", lead, tc.leaderOut)
	}
	// The new configuration commits, and every member applies.
	if err := c.nodes[lead].Propose([]byte("after")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	for _, id := range append(slices.Clone(tc.voters), tc.learners...) {
		if got := c.appliedData(id); len(got) == 0 || got[len(got)-1] != "after" {
			t.Errorf("node %d applied %v, want ... after", id, got)
		}
	}
	// Learners and removed nodes never campaign, whatever the time.
	for id, n := range c.nodes {
		if !slices.Contains(tc.voters, id) && n.Role() != core.RoleFollower {
			t.Errorf("non-voter %d is %v", id, n.Role())
		}
	}
	// Every node restarts into the configuration it had.
	for id, n := range c.nodes {
		cfg := testConfig(id)
		if tweak != nil {
			tweak(&cfg)
		}
		r := restart(t, cfg, c.logs[id])
		if got, want := r.Status().Membership, n.Status().Membership; !slices.Equal(got.Voters, want.Voters) ||
			!slices.Equal(got.Learners, want.Learners) || got.HighestID != want.HighestID {
			t.Errorf("node %d restarted into %+v, was %+v", id, got, want)
		}
	}
}

// restart starts a node from a copy of log with cfg and hands out what it
// re-applies (configurations past cfg.Applied activate then), without
// persisting anything: a read-only look at what the node restores.
func restart(t *testing.T, cfg core.Config, log *memlog.Log) *core.Node {
	t.Helper()
	n, err := core.New(cfg, log.Clone())
	if err != nil {
		t.Fatal(err)
	}
	for n.HasReady() {
		rd, err := n.Ready()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Advance(rd); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// stepOnce processes every node once and delivers what that queued. It
// reports whether anything happened.
func (c *cluster) stepOnce() bool {
	did := false
	for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
		if c.nodes[id] != nil && c.process(id) {
			did = true
		}
	}
	q := c.queue
	c.queue = nil
	for _, m := range q {
		c.deliver(m)
	}
	return did || len(q) > 0
}

// TestConfChangeRefusals: every unsafe or impossible request is refused
// with its typed error and changes nothing.
func TestConfChangeRefusals(t *testing.T) {
	cases := []struct {
		name  string
		size  int
		tweak func(*core.Config)
		// setup runs after node 1 is elected; it returns the change to
		// try (on the leader unless on is set).
		setup   func(c *cluster) core.ConfChange
		on      uint64
		wantErr error
	}{
		{name: "not leader", size: 3, on: 2,
			setup:   func(c *cluster) core.ConfChange { return ops(addLearner(4)) },
			wantErr: &core.NotLeaderError{Leader: 1}},
		{name: "replace", size: 3,
			setup: func(c *cluster) core.ConfChange {
				return core.ConfChange{Replace: &core.Membership{Voters: []uint64{1}}}
			},
			wantErr: core.ErrInvalidConfChange},
		{name: "change in flight", size: 3,
			setup: func(c *cluster) core.ConfChange {
				if _, err := c.nodes[1].ProposeConfChange(ops(addLearner(4))); err != nil {
					c.t.Fatal(err)
				}
				return ops(addLearner(5))
			},
			wantErr: core.ErrConfChangeInProgress},
		{name: "joint: only the automatic LeaveJoint", size: 3,
			setup: func(c *cluster) core.ConfChange {
				if _, err := c.nodes[1].ProposeConfChange(ops(addVoter(4), addVoter(5))); err != nil {
					c.t.Fatal(err)
				}
				// Commit the joint entry, but not yet the exit.
				c.drop = func(m core.Message) bool { return m.Type == core.MsgApp && m.Index >= 3 && m.From == 1 }
				for !c.nodes[1].Status().Membership.IsJoint() {
					if !c.stepOnce() {
						c.t.Fatal("joint configuration never became active")
					}
				}
				return ops(addLearner(6))
			},
			wantErr: core.ErrConfChangeInProgress},
		{name: "new leader waits for its log", size: 3,
			setup: func(c *cluster) core.ConfChange {
				// Elected, no-op not yet committed: anything in the log
				// may be a change.
				c.drop = func(m core.Message) bool { return m.Type == core.MsgAppResp }
				if err := c.nodes[1].TransferLeadership(2); err != nil {
					c.t.Fatal(err)
				}
				c.stabilize()
				if c.leader() != 2 {
					c.t.Fatalf("setup: leader %d", c.leader())
				}
				return ops(addLearner(4))
			},
			on: 2, wantErr: core.ErrConfChangeInProgress},
		{name: "last voter", size: 1,
			setup:   func(c *cluster) core.ConfChange { return ops(remove(1)) },
			wantErr: core.ErrInvalidConfChange},
		{name: "unknown member", size: 3,
			setup:   func(c *cluster) core.ConfChange { return ops(remove(7)) },
			wantErr: core.ErrInvalidConfChange},
		{name: "promote a voter", size: 3,
			setup:   func(c *cluster) core.ConfChange { return ops(promote(2)) },
			wantErr: core.ErrInvalidConfChange},
		{name: "ID reuse of a member", size: 3,
			setup:   func(c *cluster) core.ConfChange { return ops(addLearner(2)) },
			wantErr: core.ErrIDReused},
		{name: "ID reuse after removal", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.tolerateInvalid = true
				if err := c.confChange(ops(remove(3))); err != nil {
					c.t.Fatal(err)
				}
				return ops(addLearner(3))
			},
			wantErr: core.ErrIDReused},
		{name: "ID below the highest ever used", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.addJoiner(5, nil)
				if err := c.confChange(ops(addLearner(5))); err != nil {
					c.t.Fatal(err)
				}
				return ops(addLearner(4))
			},
			wantErr: core.ErrIDReused},
		{name: "learner behind", size: 3,
			tweak: func(cfg *core.Config) { cfg.MaxPromoteLagEntries = 2 },
			setup: func(c *cluster) core.ConfChange {
				c.addJoiner(4, nil)
				if err := c.confChange(ops(addLearner(4))); err != nil {
					c.t.Fatal(err)
				}
				c.drop = func(m core.Message) bool { return m.To == 4 }
				for i := range 5 {
					if err := c.nodes[1].Propose([]byte{byte(i)}); err != nil {
						c.t.Fatal(err)
					}
				}
				c.stabilize()
				return ops(promote(4))
			},
			wantErr: core.ErrLearnerBehind},
		{name: "learner not heard from", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.addJoiner(4, nil)
				if err := c.confChange(ops(addLearner(4))); err != nil {
					c.t.Fatal(err)
				}
				c.drop = func(m core.Message) bool { return m.To == 4 || m.From == 4 }
				c.settle(10) // one election timeout of silence
				return ops(promote(4))
			},
			wantErr: core.ErrLearnerBehind},
		{name: "learner silent since the election", size: 3, on: 2,
			setup: func(c *cluster) core.ConfChange {
				c.addJoiner(4, nil)
				if err := c.confChange(ops(addLearner(4))); err != nil {
					c.t.Fatal(err)
				}
				c.drop = func(m core.Message) bool { return m.To == 4 || m.From == 4 }
				if err := c.nodes[1].TransferLeadership(2); err != nil {
					c.t.Fatal(err)
				}
				c.stabilize()
				if c.leader() != 2 {
					c.t.Fatalf("setup: leader %d", c.leader())
				}
				return ops(promote(4))
			},
			wantErr: core.ErrLearnerBehind},
		{name: "quorum unreachable: add a voter while one is down", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.drop = func(m core.Message) bool { return m.To == 3 || m.From == 3 }
				c.settle(10)
				return ops(addVoter(4))
			},
			wantErr: core.ErrQuorumUnreachable},
		{name: "quorum unreachable: remove a live voter while one is down", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.drop = func(m core.Message) bool { return m.To == 3 || m.From == 3 }
				c.settle(10)
				return ops(remove(2))
			},
			wantErr: core.ErrQuorumUnreachable},
		{name: "quorum unreachable: joint with the new half down", size: 3,
			setup: func(c *cluster) core.ConfChange {
				c.addJoiner(4, nil)
				c.addJoiner(5, nil)
				return ops(addVoter(4), addVoter(5), remove(2), remove(3))
			},
			wantErr: core.ErrQuorumUnreachable},
		{name: "too many uncommitted bytes", size: 3,
			tweak: func(cfg *core.Config) { cfg.MaxUncommittedBytes = 200 },
			setup: func(c *cluster) core.ConfChange {
				c.drop = func(m core.Message) bool { return m.Type == core.MsgAppResp }
				for {
					if err := c.nodes[1].Propose(make([]byte, 40)); err != nil {
						break
					}
				}
				return ops(addLearner(4))
			},
			wantErr: core.ErrTooManyUncommitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, tc.size, tc.tweak)
			c.elect(1)
			cc := tc.setup(c)
			on := tc.on
			if on == 0 {
				on = 1
			}
			before := c.nodes[on].Status()
			_, err := c.nodes[on].ProposeConfChange(cc)
			var nle *core.NotLeaderError
			switch want := tc.wantErr.(type) {
			case *core.NotLeaderError:
				if !errors.As(err, &nle) || nle.Leader != want.Leader {
					t.Fatalf("ProposeConfChange = %v, want %v", err, want)
				}
			default:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ProposeConfChange = %v, want %v", err, tc.wantErr)
				}
			}
			after := c.nodes[on].Status()
			if after.LastIndex != before.LastIndex || after.ConfIndex != before.ConfIndex {
				t.Fatalf("refused change appended or activated something: %+v -> %+v", before, after)
			}
		})
	}
}

// TestBootstrapEntryIdentical: every node bootstrapped with the same
// membership (in any order) writes the same entry 1, committed, term 1,
// and has it active at once.
func TestBootstrapEntryIdentical(t *testing.T) {
	members := []core.MemberInfo{{ID: 1, Name: "a", PeerAddr: "a:1"}, {ID: 2, Name: "b"}, {ID: 3, Name: "c"}}
	orders := [][]uint64{{1, 2, 3}, {3, 1, 2}, {2, 3, 1}}
	var first []byte
	for i, voters := range orders {
		id := uint64(i + 1)
		cfg := testConfig(id)
		// Member infos in another order on each node, too.
		ms := slices.Clone(members)
		for range i {
			ms = append(ms[1:], ms[0])
		}
		cfg.Membership = core.Membership{Voters: voters, Members: ms}
		log := memlog.New()
		n, err := core.New(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		st := n.Status()
		if st.Term != 1 || st.Commit != 1 || st.LastIndex != 1 || st.ConfIndex != 1 ||
			!slices.Equal(st.Membership.Voters, []uint64{1, 2, 3}) || st.Membership.HighestID != 3 {
			t.Fatalf("node %d after bootstrap: %+v", id, st)
		}
		rd, err := n.Ready()
		if err != nil {
			t.Fatal(err)
		}
		if len(rd.Entries) != 1 || rd.HardState != (core.HardState{Term: 1, Commit: 1}) ||
			len(rd.CommittedEntries) != 1 {
			t.Fatalf("bootstrap Ready: %+v", rd)
		}
		e := rd.Entries[0]
		if e.Index != 1 || e.Term != 1 || e.Type != core.EntryConfChange {
			t.Fatalf("bootstrap entry %+v", e)
		}
		cc, err := core.UnmarshalConfChange(e.Data)
		if err != nil || cc.Replace == nil || !slices.Equal(cc.Replace.Voters, []uint64{1, 2, 3}) {
			t.Fatalf("bootstrap entry decodes to %v, %v", cc, err)
		}
		if first == nil {
			first = e.Data
		} else if !bytes.Equal(first, e.Data) {
			t.Fatalf("node %d bootstrap entry differs:\n%x\n%x", id, e.Data, first)
		}
		if err := n.Advance(rd); err != nil {
			t.Fatal(err)
		}
		if st := n.Status(); st.Counters.InvalidConfChanges != 0 || st.ConfIndex != 1 {
			t.Fatalf("handing out the bootstrap entry re-applied it: %+v", st)
		}
	}
}

// TestJoinerIsPassive: a node with empty storage and no membership never
// campaigns, accepts a leader it does not know, and becomes what the log
// says.
func TestJoinerIsPassive(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.addJoiner(4, nil)
	for range 100 {
		if err := c.nodes[4].Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if c.nodes[4].HasReady() {
		rd, _ := c.nodes[4].Ready()
		t.Fatalf("joiner produced work on its own: %+v", rd)
	}
	st := c.nodes[4].Status()
	if !st.Membership.IsEmpty() || st.Removed || st.Term != 0 || st.LastIndex != 0 {
		t.Fatalf("joiner status %+v", st)
	}
	c.elect(1)
	if err := c.confChange(ops(addLearner(4))); err != nil {
		t.Fatal(err)
	}
	st = c.nodes[4].Status()
	if !slices.Equal(st.Membership.Learners, []uint64{4}) || st.Leader != 1 {
		t.Fatalf("joiner after being added: %+v", st)
	}
	// The bootstrap entry reached it through the log: same bytes.
	e4, e1 := c.logs[4].AllEntries()[0], c.logs[1].AllEntries()[0]
	if !bytes.Equal(e4.Data, e1.Data) {
		t.Fatal("joiner's entry 1 differs from the leader's")
	}
}

// TestSnapshotCarriesMembership: a joiner added after the leader compacted
// its log receives a snapshot and becomes, from it and the entries after
// it, a learner; restarted, it restores the same.
func TestSnapshotCarriesMembership(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.addJoiner(4, nil)
	c.addJoiner(5, nil)
	// 4 is added while unreachable, so it too will need the snapshot.
	c.drop = func(m core.Message) bool { return m.To == 4 || m.From == 4 }
	if err := c.confChange(ops(addLearner(4))); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := c.nodes[1].Propose([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	// Snapshot at the applied index, carrying the configuration active
	// there (what the driver tracks with Membership.Apply).
	st := c.nodes[1].Status()
	term, _ := c.logs[1].Term(st.Applied)
	c.logs[1].SetSnapshot(core.SnapshotMeta{Index: st.Applied, Term: term, Membership: st.Membership})
	if err := c.logs[1].Compact(st.Applied); err != nil {
		t.Fatal(err)
	}
	c.drop = nil
	if err := c.confChange(ops(addLearner(5))); err != nil {
		t.Fatal(err)
	}
	c.settle(3)
	for _, id := range []uint64{4, 5} {
		st := c.nodes[id].Status()
		if !slices.Equal(st.Membership.Learners, []uint64{4, 5}) || !slices.Equal(st.Membership.Voters, []uint64{1, 2, 3}) {
			t.Fatalf("node %d membership %+v", id, st.Membership)
		}
	}
	for _, id := range []uint64{4, 5} {
		if _, snap, _ := c.logs[id].InitialState(); snap.Index == 0 || !slices.Equal(snap.Membership.Learners, []uint64{4}) {
			t.Fatalf("joiner %d did not install the snapshot with its membership: %+v", id, snap)
		}
	}
	// Restart 4 from its storage: snapshot membership plus the AddLearner
	// entry after it.
	cfg := testConfig(4)
	cfg.Membership = core.Membership{}
	n, err := core.New(cfg, c.logs[4].Clone())
	if err != nil {
		t.Fatal(err)
	}
	if m := n.Status().Membership; !slices.Equal(m.Learners, []uint64{4}) {
		t.Fatalf("restarted joiner membership before re-applying %+v, want the snapshot's", m)
	}
	if m := restart(t, cfg, c.logs[4]).Status().Membership; !slices.Equal(m.Learners, []uint64{4, 5}) {
		t.Fatalf("restarted joiner membership %+v", m)
	}
}

// TestRestartRestoresMembershipFromLog: a restarted node's configuration
// is the one its log says at Config.Applied, read back in bounded pages,
// whatever Config.Membership says; the configuration entries after
// Applied activate as they are handed out again, and until then the node
// does not campaign.
func TestRestartRestoresMembershipFromLog(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.tolerateInvalid = true
	c.addJoiner(4, nil)
	c.addJoiner(5, nil)
	c.elect(1)
	for _, cc := range []core.ConfChange{ops(addLearner(4)), ops(promote(4)), ops(addVoter(5), remove(3))} {
		if err := c.confChange(cc); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := c.nodes[1].Propose([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		c.stabilize()
	}
	want := c.nodes[2].Status()
	if !slices.Equal(want.Membership.Voters, []uint64{1, 2, 4, 5}) {
		t.Fatalf("setup: %+v", want.Membership)
	}
	// MembershipAt answers the same from storage alone, at any index.
	m, ci, err := core.MembershipAt(c.logs[2], want.Commit, 64)
	if err != nil || !slices.Equal(m.Voters, want.Membership.Voters) || ci != want.ConfIndex {
		t.Fatalf("MembershipAt(commit) = %+v, %d, %v; want %+v at %d", m, ci, err, want.Membership, want.ConfIndex)
	}
	// The last change was the automatic LeaveJoint right after the joint
	// entry: one index earlier the configuration is still joint.
	if m, ci, err := core.MembershipAt(c.logs[2], want.ConfIndex-1, 1); err != nil || !m.IsJoint() || ci != want.ConfIndex-1 {
		t.Fatalf("MembershipAt(%d) = %+v, %d, %v: want the joint configuration", want.ConfIndex-1, m, ci, err)
	}
	if m, ci, err := core.MembershipAt(c.logs[2], 1, 1); err != nil || !slices.Equal(m.Voters, []uint64{1, 2, 3}) || ci != 1 {
		t.Fatalf("MembershipAt(1) = %+v, %d, %v: want the bootstrap configuration", m, ci, err)
	}
	for _, tc := range []struct {
		name    string
		applied uint64
		page    uint64
	}{
		{"applied 0, one entry per page", 0, 1},
		{"applied at commit", want.Applied, 1 << 20},
		{"applied midway", want.Applied / 2, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(2, 1, 2, 3) // stale flags: ignored
			cfg.Applied = tc.applied
			cfg.MaxCommittedBytesPerReady = tc.page
			n, err := core.New(cfg, c.logs[2].Clone())
			if err != nil {
				t.Fatal(err)
			}
			st := n.Status()
			if tc.applied == want.Applied {
				if !slices.Equal(st.Membership.Voters, want.Membership.Voters) || st.Membership.IsJoint() ||
					st.ConfIndex != want.ConfIndex || st.Membership.HighestID != 5 {
					t.Fatalf("restored %+v (conf index %d), want %+v (conf index %d)", st.Membership, st.ConfIndex, want.Membership, want.ConfIndex)
				}
			} else {
				// Committed configuration entries await hand-out: no
				// campaign in a configuration that may be stale.
				for range 100 {
					if err := n.Tick(); err != nil {
						t.Fatal(err)
					}
				}
				if n.Role() != core.RoleFollower {
					t.Fatalf("campaigned before re-applying its configuration entries: %v", n.Role())
				}
			}
			// Handing the entries out again activates them, once.
			for n.HasReady() {
				rd, err := n.Ready()
				if err != nil {
					t.Fatal(err)
				}
				if err := n.Advance(rd); err != nil {
					t.Fatal(err)
				}
			}
			if st := n.Status(); st.Counters.InvalidConfChanges != 0 || !slices.Equal(st.Membership.Voters, want.Membership.Voters) ||
				st.ConfIndex != want.ConfIndex {
				t.Fatalf("after handing out: %+v", st)
			}
		})
	}
}

// TestInvalidCommittedConfEntrySkipped: configuration entries that do not
// decode or do not apply (only a faulty leader commits one) are skipped
// and counted on every replica, which keep running and applying.
func TestInvalidCommittedConfEntrySkipped(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	valid := core.ConfChange{Ops: []core.ConfChangeOp{addLearner(9)}}.Marshal()
	// A forged leader 1 in a later term sends 2 and 3 a log with an
	// undecodable entry, an inapplicable one (re-adds 2), a valid one,
	// and a command, and commits all of it.
	term := c.nodes[1].Term() + 1
	last := c.nodes[2].Status().LastIndex
	lastTerm, _ := c.nodes[2].EntryTerm(last)
	ents := []core.Entry{
		{Index: last + 1, Term: term, Type: core.EntryConfChange, Data: []byte{0xff, 0x01}},
		{Index: last + 2, Term: term, Type: core.EntryConfChange, Data: ops(addLearner(2)).Marshal()},
		{Index: last + 3, Term: term, Type: core.EntryConfChange, Data: valid},
		{Index: last + 4, Term: term, Type: core.EntryNormal, Data: []byte("cmd")},
	}
	for _, to := range []uint64{2, 3} {
		m := core.Message{Type: core.MsgApp, From: 1, To: to, Term: term, Index: last, LogTerm: lastTerm,
			Entries: ents, Commit: last + 4}
		if err := c.nodes[to].Step(m); err != nil {
			t.Fatal(err)
		}
		c.process(to)
		st := c.nodes[to].Status()
		if st.Counters.InvalidConfChanges != 2 || st.ConfIndex != last+3 ||
			!slices.Equal(st.Membership.Learners, []uint64{9}) || st.Applied != last+4 {
			t.Fatalf("node %d: %+v", to, st)
		}
		if got := c.appliedData(to); got[len(got)-1] != "cmd" {
			t.Fatalf("node %d applied %v", to, got)
		}
		// A restart skips them the same way.
		n := restart(t, testConfig(to, 1, 2, 3), c.logs[to])
		if st := n.Status(); st.Counters.InvalidConfChanges != 2 || !slices.Equal(st.Membership.Learners, []uint64{9}) {
			t.Fatalf("node %d restarted: %+v", to, st)
		}
	}
}

// TestRemovedNodeCannotDisrupt: a removed node that never learned of its
// removal keeps campaigning; with PreVote and CheckQuorum it raises no
// term and deposes nobody, and its messages are counted.
func TestRemovedNodeCannotDisrupt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*core.Config)
	}{
		{"prevote+checkquorum", nil},
		{"neither", func(cfg *core.Config) { cfg.PreVote, cfg.CheckQuorum = false, false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 3, tc.tweak)
			c.tolerateInvalid = true
			c.elect(1)
			// 3 never hears of its removal.
			c.drop = func(m core.Message) bool { return m.To == 3 }
			if err := c.confChange(ops(remove(3))); err != nil {
				t.Fatal(err)
			}
			if !c.nodes[1].Status().Membership.WasRemoved(3) {
				t.Fatal("setup: removal not active")
			}
			c.drop = nil
			term := c.nodes[1].Term()
			for range 100 {
				c.tick()
				c.stabilize()
			}
			for _, id := range []uint64{1, 2} {
				st := c.nodes[id].Status()
				if st.Term != term || st.Leader != 1 {
					t.Fatalf("node %d: term %d leader %d, want %d and 1", id, st.Term, st.Leader, term)
				}
			}
			if got := c.nodes[1].Status().Counters.RemovedSenders + c.nodes[2].Status().Counters.RemovedSenders; got == 0 {
				t.Fatal("removed node's messages were not counted")
			}
			for _, err := range c.refused {
				if !errors.Is(err, core.ErrRemoved) {
					t.Fatalf("refused for another reason: %v", err)
				}
			}
		})
	}
}

// TestLearnerNeverCountsOrLeads: a learner receives the log, but is never
// a transfer target, never counted toward commitment, never campaigns.
func TestLearnerNeverCountsOrLeads(t *testing.T) {
	c := newCluster(t, 2, nil)
	c.addJoiner(3, nil)
	c.elect(1)
	if err := c.confChange(ops(addLearner(3))); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].TransferLeadership(3); !errors.Is(err, core.ErrLearner) {
		t.Fatalf("transfer to learner = %v, want ErrLearner", err)
	}
	// With voter 2 gone, the learner's acknowledgement must not commit.
	c.drop = func(m core.Message) bool { return m.To == 2 || m.From == 2 }
	commit := c.nodes[1].Status().Commit
	if err := c.nodes[1].Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if st := c.nodes[1].Status(); st.Commit != commit {
		t.Fatalf("commit moved to %d with only the learner acknowledging", st.Commit)
	}
	if st := c.nodes[3].Status(); st.LastIndex != c.nodes[1].Status().LastIndex {
		t.Fatalf("learner did not receive the log: %+v", st)
	}
	c.drop = func(m core.Message) bool { return m.From == 1 || m.To == 1 }
	c.settle(100)
	if c.nodes[3].Role() != core.RoleFollower {
		t.Fatalf("learner became %v", c.nodes[3].Role())
	}
}

// TestYoungClusterRestartedWithOtherSize is the issue-14 hazard: a young
// cluster (no snapshot) bootstrapped as {1,2,3} is restarted with
// Config.Membership {1..5}, next to fresh nodes 4 and 5 bootstrapped with
// {1..5}. The persisted bootstrap entry wins: 1, 2, 3 stay {1,2,3}, keep
// committing, and never commit anything of 4 and 5's configuration; no term
// has two leaders. (4 and 5 hold a conflicting entry 1; kvnode's cluster
// identity check keeps such nodes out in practice.)
func TestYoungClusterRestartedWithOtherSize(t *testing.T) {
	for _, prevote := range []bool{true, false} {
		t.Run(fmt.Sprintf("prevote=%v", prevote), func(t *testing.T) {
			tweak := func(cfg *core.Config) { cfg.PreVote, cfg.CheckQuorum = prevote, prevote }
			c := newCluster(t, 3, tweak)
			c.elect(1)
			if err := c.nodes[1].Propose([]byte("A")); err != nil {
				t.Fatal(err)
			}
			c.stabilize()
			five := core.Membership{Voters: []uint64{1, 2, 3, 4, 5}}
			// Restart 1, 2, 3 with the new flags.
			for id := uint64(1); id <= 3; id++ {
				cfg := testConfig(id)
				tweak(&cfg)
				cfg.Membership = five
				cfg.Applied = c.nodes[id].Status().Applied
				n, err := core.New(cfg, c.logs[id])
				if err != nil {
					t.Fatal(err)
				}
				if m := n.Status().Membership; !slices.Equal(m.Voters, []uint64{1, 2, 3}) {
					t.Fatalf("restarted node %d took membership %v", id, m.Voters)
				}
				c.nodes[id] = n
			}
			for id := uint64(4); id <= 5; id++ {
				cfg := testConfig(id)
				tweak(&cfg)
				cfg.Membership = five
				log := memlog.New()
				n, err := core.New(cfg, log)
				if err != nil {
					t.Fatal(err)
				}
				c.nodes[id], c.logs[id] = n, log
			}
			c.tolerateInvalid = true
			bad := core.ConfChange{Replace: &five}.Marshal()
			for round := range 40 {
				c.settle(5)
				if lead := c.leader(); lead != 0 && lead <= 3 {
					_ = c.nodes[lead].Propose([]byte(fmt.Sprintf("B%d", round)))
				}
			}
			c.stabilize()
			for id := uint64(1); id <= 3; id++ {
				got := c.appliedData(id)
				if len(got) < 10 || got[0] != "A" {
					t.Fatalf("node %d applied %d commands %v: the original cluster stopped committing", id, len(got), got)
				}
				for _, e := range c.applied[id] {
					if e.Index == 1 && bytes.Equal(e.Data, bad) {
						t.Fatalf("node %d applied 4/5's bootstrap entry", id)
					}
				}
				if m := c.nodes[id].Status().Membership; !slices.Equal(m.Voters, []uint64{1, 2, 3}) {
					t.Fatalf("node %d membership became %v", id, m.Voters)
				}
			}
			// Applied sequences of 1, 2, 3 agree with each other.
			for id := uint64(2); id <= 3; id++ {
				a, b := c.appliedData(1), c.appliedData(id)
				n := min(len(a), len(b))
				if !slices.Equal(a[:n], b[:n]) {
					t.Fatalf("nodes 1 and %d applied different commands:\n%v\n%v", id, a, b)
				}
			}
			// Neither 4 nor 5 ever led a term 1-3 took part in, or
			// committed anything beyond their own bootstrap entry.
			for id := uint64(4); id <= 5; id++ {
				if st := c.nodes[id].Status(); st.Commit > 1 {
					t.Fatalf("node %d committed up to %d", id, st.Commit)
				}
			}
		})
	}
}

// TestNewLeaderLeavesJoint: the leader that entered a joint configuration
// is cut off before its LeaveJoint commits; the next leader finds the joint
// configuration and, with nothing pending, leaves it by itself.
func TestNewLeaderLeavesJoint(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.tolerateInvalid = true
	c.addJoiner(4, nil)
	c.addJoiner(5, nil)
	c.elect(1)
	oldTerm := c.nodes[1].Term()
	if _, err := c.nodes[1].ProposeConfChange(ops(addVoter(4), addVoter(5))); err != nil {
		t.Fatal(err)
	}
	// Node 1 is cut off as it sends its LeaveJoint entry.
	cut := false
	c.drop = func(m core.Message) bool {
		for _, e := range m.Entries {
			if cc, err := core.UnmarshalConfChange(e.Data); e.Type == core.EntryConfChange && err == nil && cc.LeaveJoint {
				cut = true
			}
		}
		return cut && (m.From == 1 || m.To == 1)
	}
	c.stabilize()
	if !cut || !c.nodes[1].Status().Membership.IsJoint() {
		t.Fatalf("setup: cut %v, node 1 membership %+v", cut, c.nodes[1].Status().Membership)
	}
	c.settle(60)
	lead := c.leader()
	if lead == 0 || lead == 1 {
		t.Fatalf("no new leader among the others: %d", lead)
	}
	st := c.nodes[lead].Status()
	if st.Membership.IsJoint() {
		t.Fatalf("new leader %d still joint: %+v", lead, st.Membership)
	}
	if term, _ := c.nodes[lead].EntryTerm(st.ConfIndex); term <= oldTerm {
		t.Fatalf("the exit at %d has term %d: not the new leader's own", st.ConfIndex, term)
	}
	c.drop = nil
	c.settle(10)
	c.checkAgree([]uint64{1, 2, 3, 4, 5}, nil)
}

// TestStepFromNonMembers: what a node accepts from senders outside its
// configuration (design §6).
func TestStepFromNonMembers(t *testing.T) {
	cases := []struct {
		name    string
		m       core.Message
		wantErr error // nil: accepted
		counter func(core.Counters) uint64
	}{
		{name: "append from unknown leader", m: core.Message{Type: core.MsgApp, From: 9, To: 1, Term: 3, Index: 2, LogTerm: 2}},
		{name: "heartbeat from unknown leader", m: core.Message{Type: core.MsgHeartbeat, From: 9, To: 1, Term: 3}},
		{name: "vote request from unknown candidate", m: core.Message{Type: core.MsgVote, From: 9, To: 1, Term: 3, Index: 2, LogTerm: 2}},
		{name: "pre-vote from unknown candidate", m: core.Message{Type: core.MsgPreVote, From: 9, To: 1, Term: 3, Index: 2, LogTerm: 2}},
		{name: "response from unknown node", m: core.Message{Type: core.MsgHeartbeatResp, From: 9, To: 1, Term: 2},
			wantErr: core.ErrInvalidMessage, counter: func(c core.Counters) uint64 { return c.UnknownSenders }},
		{name: "vote response from unknown node", m: core.Message{Type: core.MsgVoteResp, From: 9, To: 1, Term: 2},
			wantErr: core.ErrInvalidMessage, counter: func(c core.Counters) uint64 { return c.UnknownSenders }},
		{name: "proposal from unknown node", m: core.Message{Type: core.MsgProp, From: 9, To: 1, Entries: []core.Entry{{Data: []byte("x")}}},
			wantErr: core.ErrInvalidMessage, counter: func(c core.Counters) uint64 { return c.UnknownSenders }},
		{name: "append from removed node", m: core.Message{Type: core.MsgApp, From: 3, To: 1, Term: 3, Index: 2, LogTerm: 2},
			wantErr: core.ErrRemoved, counter: func(c core.Counters) uint64 { return c.RemovedSenders }},
		{name: "vote request from removed node", m: core.Message{Type: core.MsgVote, From: 3, To: 1, Term: 9, Index: 9, LogTerm: 9},
			wantErr: core.ErrRemoved, counter: func(c core.Counters) uint64 { return c.RemovedSenders }},
		{name: "pre-vote from removed node", m: core.Message{Type: core.MsgPreVote, From: 3, To: 1, Term: 9, Index: 9, LogTerm: 9},
			wantErr: core.ErrRemoved, counter: func(c core.Counters) uint64 { return c.RemovedSenders }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Node 1 of {1, 2}; 3 was removed (HighestID 3).
			log := memlog.New()
			if err := log.Save(core.HardState{Term: 2}, entriesWithTerms(1, 2)); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(1)
			cfg.CheckQuorum = false
			cfg.Membership = core.Membership{Voters: []uint64{1, 2}, HighestID: 3}
			n, err := core.New(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			before := n.Status()
			err = n.Step(tc.m)
			after := n.Status()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Step = %v, want accepted", err)
				}
				rd, _ := n.Ready()
				answered := false
				for _, m := range append(rd.Messages, rd.MessagesAfterPersist...) {
					answered = answered || (m.To == 9 && !m.Reject)
				}
				if !answered {
					t.Fatalf("accepted message not answered (or refused): %+v", rd)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Step = %v, want %v", err, tc.wantErr)
			}
			if tc.counter(after.Counters) != tc.counter(before.Counters)+1 {
				t.Fatalf("not counted: %+v", after.Counters)
			}
			if after.Term != before.Term || n.HasReady() {
				t.Fatalf("refused message changed state: %+v", after)
			}
		})
	}
}

// TestRemovedLeaderHandoverLost: the removed leader's MsgTimeoutNow is
// lost (twice). It keeps leading — refusing proposals — and retries the
// handover each election timeout until a voter takes over; then it is a
// passive, removed follower.
func TestRemovedLeaderHandoverLost(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.tolerateInvalid = true
	c.elect(1)
	lost := 0
	c.drop = func(m core.Message) bool {
		if m.Type == core.MsgTimeoutNow && lost < 2 {
			lost++
			return true
		}
		return false
	}
	if err := c.confChange(ops(remove(1))); err != nil {
		t.Fatal(err)
	}
	if st := c.nodes[1].Status(); st.Role != core.RoleLeader || !st.Removed || st.LeadTransferee == 0 {
		t.Fatalf("removed leader after its first handover was lost: %+v", st)
	}
	if err := c.nodes[1].Propose([]byte("y")); !errors.Is(err, core.ErrTransferInProgress) {
		t.Fatalf("removed leader accepted a proposal: %v", err)
	}
	c.settle(60)
	if lost != 2 {
		t.Fatalf("%d handovers lost, want 2 (one per election timeout)", lost)
	}
	if st := c.nodes[1].Status(); st.Role != core.RoleFollower || !st.Removed {
		t.Fatalf("removed leader after handing over: %+v", st)
	}
	lead := c.leader()
	if lead != 2 && lead != 3 {
		t.Fatalf("leader %d after the lost handover", lead)
	}
	if err := c.nodes[lead].Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	for _, id := range []uint64{2, 3} {
		if got := c.appliedData(id); len(got) == 0 || got[len(got)-1] != "x" {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
}

// TestRestartMembershipSources: where a restarted node takes its
// configuration from, by what its storage holds.
func TestRestartMembershipSources(t *testing.T) {
	boot := core.Entry{Index: 1, Term: 1, Type: core.EntryConfChange,
		Data: core.ConfChange{Replace: &core.Membership{Voters: []uint64{1, 2, 3}}}.Marshal()}
	flags := core.Membership{Voters: []uint64{2, 7}}
	cases := []struct {
		name   string
		hs     core.HardState
		ents   []core.Entry
		snap   *core.SnapshotMeta
		voters []uint64
	}{
		{name: "bootstrap entry committed", hs: core.HardState{Term: 2, Commit: 1}, ents: []core.Entry{boot}, voters: []uint64{1, 2, 3}},
		{name: "joiner holding an uncommitted entry 1 stays a joiner", hs: core.HardState{Term: 2}, ents: []core.Entry{boot}},
		{name: "storage from before the bootstrap entry: flags", hs: core.HardState{Term: 2, Commit: 1},
			ents: entriesWithTerms(1, 2), voters: []uint64{2, 7}},
		{name: "snapshot membership", hs: core.HardState{Term: 2, Commit: 5},
			snap: &core.SnapshotMeta{Index: 5, Term: 2, Membership: core.Membership{Voters: []uint64{2, 4}, HighestID: 4}}, voters: []uint64{2, 4}},
		{name: "snapshot without membership (old format): flags", hs: core.HardState{Term: 2, Commit: 5},
			snap: &core.SnapshotMeta{Index: 5, Term: 2}, voters: []uint64{2, 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := memlog.New()
			if tc.snap != nil {
				if err := log.InstallSnapshot(*tc.snap); err != nil {
					t.Fatal(err)
				}
			}
			if err := log.Save(tc.hs, tc.ents); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(2)
			cfg.Membership = flags
			cfg.Applied = tc.hs.Commit
			n, err := core.New(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Status().Membership.Voters; !slices.Equal(got, tc.voters) {
				t.Fatalf("voters %v, want %v", got, tc.voters)
			}
		})
	}
}

// TestStrandedVoterLearnsCommitFromVotes is core/sim seed 674's shape:
// {1,3} becomes {3}; node 3 acknowledged the entry but never learned it
// committed, and leader 1, removed, crashed with a longer log before
// telling it. Restarted, 1 is a passive removed follower that refuses 3's
// (pre-)votes for its longer log. Without more, 3 counts {1,3} forever.
// 1's vote response carries a commit hint (it holds 3's last entry), so
// 3 learns {3} committed, activates it and leads alone.
func TestStrandedVoterLearnsCommitFromVotes(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.tolerateInvalid = true
	c.elect(1)
	if err := c.confChange(ops(remove(2))); err != nil {
		t.Fatal(err)
	}
	idx := c.nodes[1].Status().LastIndex + 1
	// 3 gets the change but not the entry after it, and never a commit
	// index that covers the change.
	c.drop = func(m core.Message) bool {
		if m.From != 1 || m.To != 3 {
			return false
		}
		for _, e := range m.Entries {
			if e.Index > idx {
				return true
			}
		}
		return m.Commit >= idx || m.Type == core.MsgTimeoutNow
	}
	if got, err := c.nodes[1].ProposeConfChange(ops(remove(1))); err != nil || got != idx {
		t.Fatalf("ProposeConfChange = %d, %v", got, err)
	}
	c.stepOnce() // the change reaches 3 alone
	if err := c.nodes[1].Propose([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if st := c.nodes[1].Status(); !st.Removed || st.Commit < idx {
		t.Fatalf("setup: node 1 %+v", st)
	}
	if st := c.nodes[3].Status(); st.Commit >= idx || st.LastIndex != idx {
		t.Fatalf("setup: node 3 %+v", st)
	}
	// 1 crashes and restarts: a removed follower now.
	cfg := testConfig(1)
	cfg.Applied = c.nodes[1].Status().Applied
	log := c.logs[1].Clone()
	n, err := core.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	c.nodes[1], c.logs[1] = n, log
	c.drop = nil
	c.settle(100)
	st := c.nodes[3].Status()
	if st.Role != core.RoleLeader || !slices.Equal(st.Membership.Voters, []uint64{3}) {
		t.Fatalf("node 3 stranded: %+v", st)
	}
}

// TestCommitHint: a vote response's commit hint is adopted only when it
// names an entry this node holds, and only up to that entry; a voter
// sends one only when it knows more than the candidate.
func TestCommitHint(t *testing.T) {
	cases := []struct {
		name       string
		index, lt  uint64
		commit     uint64
		wantCommit uint64
	}{
		{"matching entry", 3, 2, 2, 2},
		{"up to the named entry", 3, 2, 3, 3},
		{"entry with another term", 3, 1, 2, 0},
		{"commit past the named entry", 2, 2, 3, 0},
		{"entry beyond our log", 5, 2, 4, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 2}, entriesWithTerms(1, 2, 2), nil)
			m := core.Message{Type: core.MsgPreVoteResp, From: 2, To: 1, Term: 2, Reject: true,
				Index: tc.index, LogTerm: tc.lt, Commit: tc.commit}
			if err := s.step(m); err != nil {
				t.Fatal(err)
			}
			if got := s.n.Status().Commit; got != tc.wantCommit {
				t.Fatalf("commit %d, want %d", got, tc.wantCommit)
			}
		})
	}
	// The voter's side: a hint only for a candidate that knows less.
	s := newSolo(t, core.HardState{Term: 2, Commit: 2}, entriesWithTerms(1, 2, 2), nil)
	for _, tc := range []struct {
		candCommit uint64
		want       uint64
	}{{0, 2}, {1, 2}, {2, 0}} {
		if err := s.step(core.Message{Type: core.MsgPreVote, From: 2, To: 1, Term: 3, Index: 3, LogTerm: 2, Commit: tc.candCommit}); err != nil {
			t.Fatal(err)
		}
		out := s.flush()
		if len(out) != 1 || out[0].Commit != tc.want || (tc.want != 0 && (out[0].Index != 3 || out[0].LogTerm != 2)) {
			t.Fatalf("candidate commit %d: answer %v, want hint %d", tc.candCommit, out, tc.want)
		}
	}
}
