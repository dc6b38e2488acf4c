package driver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

// Membership changes through the driver (membership.go), on the in-memory
// harness.

func withNames() clusterOpt { return func(c *cluster) { c.named = true } }

// fastPromotion makes automatic promotion quick in clock time.
func fastPromotion(cfg *driver.Config) {
	cfg.AutoPromoteStableFor = 5 * testElectionTicks * testTick
	cfg.AutoPromoteMaxLag = 10
}

// join starts node id as a joiner (empty storage, Config.Join).
func (c *cluster) join(id uint64) *driver.Node {
	c.t.Helper()
	if !slices.Contains(c.ids, id) {
		c.ids = append(c.ids, id)
	}
	c.stores[id] = newStallStore()
	c.sms[id] = &testSM{}
	c.joiners[id] = true
	return c.start(id)
}

// memberCtx bounds one membership call.
func memberCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// awaitMembership waits until every node in ids has voters and learners
// as given in its active configuration.
func (c *cluster) awaitMembership(ids []uint64, voters, learners []uint64) {
	c.t.Helper()
	await(c.t, fmt.Sprintf("nodes %v to have voters %v learners %v", ids, voters, learners), func() bool {
		for _, id := range ids {
			m, _ := c.nodes[id].Membership()
			if !slices.Equal(m.Voters, voters) || !slices.Equal(m.Learners, learners) || m.IsJoint() {
				return false
			}
		}
		return true
	})
}

// A fourth node joins as a learner, catches up from the log, is promoted
// by the leader on its own once it has stayed caught up for
// AutoPromoteStableFor of clock time, and then takes part in commitment.
// A retried AddMember (same name and incarnation) changes nothing.
func TestJoinLearnerAutoPromoted(t *testing.T) {
	const stableFor = 50 * testTick
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
		cfg.AutoPromoteStableFor = stableFor
		cfg.AutoPromoteMaxLag = 10
	}))
	lead := c.leader()
	for i := range 20 {
		c.propose(lead, fmt.Sprintf("before-%d", i))
	}
	mi, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "n4", Incarnation: 44}, driver.AddOptions{})
	if err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	if mi.ID != 4 || !mi.AutoPromote || mi.Replaces != 0 || mi.Name != "n4" {
		t.Fatalf("added %+v", mi)
	}
	m, confIdx := c.nodes[lead].Membership()
	if !slices.Equal(m.Learners, []uint64{4}) || m.HighestID != 4 {
		t.Fatalf("after AddMember: %+v", m)
	}
	// A follower refuses, naming the leader.
	f := c.followers(lead)[0]
	_, err = c.nodes[f].AddMember(memberCtx(t), core.MemberInfo{Name: "other"}, driver.AddOptions{})
	var nle *core.NotLeaderError
	if !errors.As(err, &nle) {
		t.Fatalf("AddMember on a follower: %v", err)
	}

	c.join(4)
	// Watch the leader: the clock time at which it first shows the
	// learner caught up, and at which the learner is a voter.
	var caughtUp, promoted time.Time
	await(t, "the learner to be promoted", func() bool {
		st := c.nodes[lead].Status()
		now := c.clock.Now()
		for _, ms := range st.Members {
			switch {
			case ms.ID != 4:
			case ms.Voter:
				promoted = now
			case ms.Learner && ms.HasProgress && ms.RecentActive && ms.Lag <= 10 && caughtUp.IsZero():
				caughtUp = now
			}
		}
		return !promoted.IsZero() || st.Role != core.RoleLeader
	})
	if promoted.IsZero() {
		t.Logf("leadership moved during the join; the promotion delay is not measured")
	} else if caughtUp.IsZero() || promoted.Sub(caughtUp) < stableFor-2*testTick {
		t.Fatalf("caught up at %v, promoted at %v: sooner than AutoPromoteStableFor %v", caughtUp, promoted, stableFor)
	}
	c.awaitMembership([]uint64{1, 2, 3, 4}, []uint64{1, 2, 3, 4}, nil)
	c.propose(4, "via-the-new-member")
	c.awaitConverged("before-0", "before-19", "via-the-new-member")

	// A retried join finds the member it added.
	lead = c.leader()
	again, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "n4", Incarnation: 44}, driver.AddOptions{})
	if err != nil || again.ID != 4 {
		t.Fatalf("retried AddMember: %+v, %v", again, err)
	}
	if _, idx := c.nodes[lead].Membership(); idx <= confIdx {
		t.Fatalf("conf index %d after the promotion, %d before", idx, confIdx)
	}
	st := c.nodes[lead].Status()
	if len(st.Members) != 4 || !st.Members[3].Voter || !st.Members[3].HasProgress {
		t.Fatalf("leader's Members: %+v", st.Members)
	}
	peers, sets := c.net.Endpoint(4).Peers()
	if sets == 0 || len(peers) != 4 {
		t.Fatalf("the joiner's transport was given peers %+v (%d calls)", peers, sets)
	}
}

// A member whose data is lost comes back under its name with a new
// incarnation: it is added as a new member replacing the old one, and its
// promotion removes the old ID. The old node, started again on its old
// data, learns it was removed and does not disrupt anything.
func TestReplaceMember(t *testing.T) {
	c := newCluster(t, 3, withNames(), withConfig(fastPromotion))
	lead := c.leader()
	old := c.followers(lead)[0]
	c.propose(lead, "before")
	c.stop(old)
	mi, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: fmt.Sprintf("n%d", old), Incarnation: 99}, driver.AddOptions{})
	if err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	if mi.ID != 4 || mi.Replaces != old {
		t.Fatalf("replacement added as %+v, want ID 4 replacing %d", mi, old)
	}
	c.join(4)
	var rest []uint64
	for _, id := range []uint64{1, 2, 3, 4} {
		if id != old {
			rest = append(rest, id)
		}
	}
	c.awaitMembership(rest, rest, nil)
	c.propose(4, "after")
	m, _ := c.nodes[4].Membership()
	if !m.WasRemoved(old) {
		t.Fatalf("old ID %d not removed: %+v", old, m)
	}

	// The old node on its old data: refused by the others, it learns it
	// was removed; the cluster goes on.
	c.sms[old] = c.sms[old].reopen()
	c.start(old)
	await(t, "the old node to learn it was removed", func() bool { return c.nodes[old].Status().Removed })
	for i := range 5 {
		c.propose(c.leaderOf(rest...), fmt.Sprintf("later-%d", i))
	}
	for _, id := range rest {
		if st := c.nodes[id].Status(); st.Role == core.RoleLeader && id == old {
			t.Fatalf("removed node leads")
		}
	}
}

// The leader asked to remove itself hands leadership over and says where
// to ask; the new leader removes it; the old leader learns it was
// removed.
func TestRemoveLeaderHandsOver(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	c.propose(lead, "x")
	err := c.nodes[lead].RemoveMember(memberCtx(t), lead)
	var ho *driver.HandedOverError
	if !errors.As(err, &ho) || ho.Leader == lead || ho.Leader == 0 {
		t.Fatalf("RemoveMember(self) on the leader: %v", err)
	}
	var nle *core.NotLeaderError
	if !errors.As(err, &nle) || nle.Leader != ho.Leader {
		t.Fatalf("HandedOverError does not unwrap to the NotLeaderError: %v", err)
	}
	if err := c.nodes[ho.Leader].RemoveMember(memberCtx(t), lead); err != nil {
		t.Fatalf("RemoveMember(%d) on the new leader %d: %v", lead, ho.Leader, err)
	}
	rest := c.followers(lead)
	c.awaitMembership(rest, rest, nil)
	await(t, "the removed leader to know", func() bool { return c.nodes[lead].Status().Removed })
	// Idempotent: removing it again does nothing.
	if err := c.nodes[c.leaderOf(rest...)].RemoveMember(memberCtx(t), lead); err != nil {
		t.Fatalf("second RemoveMember: %v", err)
	}
	c.propose(c.leaderOf(rest...), "after")
}

// A follower removed while it is down finds out when it comes back, and
// the others refuse its elections.
func TestRemoveFollowerWhileDown(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	f := c.followers(lead)[0]
	c.propose(lead, "x")
	c.stop(f)
	if err := c.nodes[lead].RemoveMember(memberCtx(t), f); err != nil {
		t.Fatalf("RemoveMember(%d): %v", f, err)
	}
	rest := c.followers(f)
	c.awaitMembership(rest, rest, nil)
	// The transport no longer knows it, and its messages are refused.
	await(t, "the leader's transport to forget the removed node", func() bool {
		peers, _ := c.net.Endpoint(lead).Peers()
		return len(peers) == 2 && !slices.ContainsFunc(peers, func(p driver.Peer) bool { return p.ID == f })
	})
	st := c.nodes[lead].Status()
	err := c.nodes[lead].Handler().HandleMessages(context.Background(),
		[]core.Message{{Type: core.MsgPreVote, From: f, To: lead, Term: st.Term + 1}})
	if !errors.Is(err, core.ErrRemoved) {
		t.Fatalf("a message from the removed node: %v", err)
	}
	c.sms[f] = c.sms[f].reopen()
	c.start(f)
	await(t, "the removed follower to know", func() bool { return c.nodes[f].Status().Removed })
	for i := range 5 {
		c.propose(c.leaderOf(rest...), fmt.Sprintf("after-%d", i))
	}
	if st := c.nodes[f].Status(); st.Role == core.RoleLeader {
		t.Fatalf("the removed node leads: %+v", st)
	}
}

// A restarted node keeps the configuration its log holds (a learner added
// after bootstrap included), whatever its Peers say.
func TestRestartKeepsMembership(t *testing.T) {
	c := newCluster(t, 3, durableSMs())
	lead := c.leader()
	if _, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "l4"}, driver.AddOptions{LearnerOnly: true}); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	c.join(4)
	c.propose(lead, "x")
	c.awaitMembership(c.ids, []uint64{1, 2, 3}, []uint64{4})
	for _, id := range slices.Clone(c.ids) {
		c.restart(id)
	}
	c.leader()
	c.awaitMembership(c.ids, []uint64{1, 2, 3}, []uint64{4})
	c.propose(c.leader(), "y")
	c.awaitConverged("x", "y")
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newLogRecorder() logRecorder { return logRecorder{mu: &sync.Mutex{}, recs: &[]slog.Record{}} }

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.recs = append(*r.recs, rec.Clone())
	return nil
}
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r logRecorder) WithGroup(string) slog.Handler      { return r }

// count returns the records at level or above whose message contains s.
func (r logRecorder) count(level slog.Level, s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range *r.recs {
		if rec.Level >= level && strings.Contains(rec.Message, s) {
			n++
		}
	}
	return n
}

// Peers that disagree with the persisted configuration produce exactly one
// warning, and the persisted configuration is used.
func TestFlagsDisagreeOneWarning(t *testing.T) {
	c := newCluster(t, 3, durableSMs())
	lead := c.leader()
	c.propose(lead, "x")
	rec := newLogRecorder()
	c.perNode[1] = func(cfg *driver.Config) {
		cfg.Peers = idPeers(1, 2, 3, 4, 5) // "--cluster-size=5"
		cfg.Logger = slog.New(rec)
	}
	c.restart(1)
	if n := rec.count(slog.LevelWarn, "disagree"); n != 1 {
		t.Fatalf("Start logged %d warnings about the peers, want 1", n)
	}
	c.propose(1, "y")
	c.awaitConverged("x", "y")
	m, _ := c.nodes[1].Membership()
	if !slices.Equal(m.Voters, []uint64{1, 2, 3}) {
		t.Fatalf("membership after the restart: %+v", m)
	}
	if n := rec.count(slog.LevelWarn, "disagree"); n != 1 {
		t.Fatalf("%d warnings about the peers, want 1", n)
	}
	// Agreeing peers: no warning.
	rec2 := newLogRecorder()
	c.perNode[2] = func(cfg *driver.Config) { cfg.Logger = slog.New(rec2) }
	c.restart(2)
	c.propose(2, "z")
	if n := rec2.count(slog.LevelWarn, "disagree"); n != 0 {
		t.Fatalf("%d warnings with agreeing peers", n)
	}
	// A state machine that starts empty replays the log from the
	// bootstrap entry: still one warning, once the replay reaches what
	// was committed.
	rec3 := newLogRecorder()
	c.perNode[3] = func(cfg *driver.Config) {
		cfg.Peers = idPeers(1, 2, 3, 9)
		cfg.Logger = slog.New(rec3)
	}
	c.stop(3)
	c.sms[3] = &testSM{}
	c.start(3)
	c.propose(3, "w")
	c.awaitConverged("x", "y", "z", "w")
	if n := rec3.count(slog.LevelWarn, "disagree"); n != 1 {
		t.Fatalf("%d warnings about the peers after a replay, want 1", n)
	}
}

// snapJoin starts node id of a snapshot cluster as a joiner.
func (c *snapCluster) join(id uint64) {
	c.t.Helper()
	if !slices.Contains(c.ids, id) {
		c.ids = append(c.ids, id)
	}
	c.logs[id] = memlog.New()
	c.snaps[id] = drivertest.NewSnapshotStore()
	c.sms[id] = newMapSM()
	prev := c.tune
	c.tune = func(cfg *driver.Config) {
		if prev != nil {
			prev(cfg)
		}
		if cfg.ID == id {
			cfg.Join = true
		}
	}
	c.start(id)
}

// A snapshot taken after a change carries the configuration at its index,
// and the compaction marker below the change carries the one before it.
func TestSnapshotAfterChangeCarriesMembership(t *testing.T) {
	c := newSnapCluster(t, 3, func(cfg *driver.Config) {
		cfg.Peers = idPeers(1, 2, 3)
		cfg.SnapshotEntries = 100
		cfg.CompactionMarginEntries = 60
	})
	lead := c.leader()
	c.write(lead, overwrites(60, 10, "a"))
	if _, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "l4"}, driver.AddOptions{LearnerOnly: true}); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	_, confIdx := c.nodes[lead].Membership()
	c.write(lead, overwrites(100, 10, "b"))
	await(t, "a snapshot above the change, compacted below it", func() bool {
		st := c.nodes[lead].Status().Snapshots
		return st.Index > confIdx && st.CompactedIndex > 0
	})
	metas, err := c.snaps[lead].ListSnapshots()
	if err != nil || len(metas) == 0 {
		t.Fatalf("snapshots: %v %v", metas, err)
	}
	if !slices.Equal(metas[0].Membership.Learners, []uint64{4}) || metas[0].Membership.HighestID != 4 {
		t.Fatalf("snapshot %d (change at %d) has membership %+v", metas[0].Index, confIdx, metas[0].Membership)
	}
	_, marker, err := c.logs[lead].InitialState()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("change at %d, snapshot at %d, compaction marker at %d", confIdx, metas[0].Index, marker.Index)
	if marker.Index >= confIdx {
		t.Fatalf("the marker (%d) is not below the change (%d): the test proves nothing", marker.Index, confIdx)
	}
	wantLearner := marker.Index >= confIdx
	if got := slices.Contains(marker.Membership.Learners, 4); got != wantLearner {
		t.Fatalf("compaction marker at %d (change at %d) has membership %+v", marker.Index, confIdx, marker.Membership)
	}
	// A restart from the snapshot and the log keeps the learner.
	c.stop(lead)
	c.sms[lead] = newMapSM()
	c.start(lead)
	if m, _ := c.nodes[lead].Membership(); !slices.Equal(m.Learners, []uint64{4}) {
		t.Fatalf("after a restart: %+v", m)
	}
}

// A joiner whose log the leader has compacted away catches up by a
// snapshot and is then promoted.
func TestLearnerCatchUpBySnapshot(t *testing.T) {
	c := newSnapCluster(t, 3, func(cfg *driver.Config) {
		cfg.Peers = idPeers(1, 2, 3)
		cfg.SnapshotEntries = 100
		cfg.CompactionMarginEntries = 20
		fastPromotion(cfg)
	})
	lead := c.leader()
	c.write(lead, overwrites(400, 30, "a"))
	await(t, "the leader to compact", func() bool { return c.nodes[lead].Status().Snapshots.CompactedIndex > 0 })
	mi, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "n4"}, driver.AddOptions{})
	if err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	c.join(mi.ID)
	await(t, "the joiner to install a snapshot", func() bool { return c.nodes[mi.ID].Status().Snapshots.Installed > 0 })
	await(t, "the joiner to be promoted", func() bool {
		m, _ := c.nodes[c.leader()].Membership()
		return slices.Equal(m.Voters, []uint64{1, 2, 3, 4}) && !m.IsJoint()
	})
	c.write(c.leader(), []string{"after=join"})
	c.awaitSame(1, 2, 3, 4)
	if got := c.sms[4].get("after"); got != "join" {
		t.Fatalf("joiner: after=%q", got)
	}
}

// ChangeMembership on a follower names the leader; invalid changes are
// refused with the core's typed errors.
func TestChangeMembershipErrors(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	// A new leader refuses changes until its election no-op is applied
	// (ChangeMembership does not retry): wait for that.
	c.propose(lead, "ready")
	lead = c.leader()
	f := c.followers(lead)[0]
	_, err := c.nodes[f].ChangeMembership(memberCtx(t), core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: 9}}}})
	var nle *core.NotLeaderError
	if !errors.As(err, &nle) || nle.Leader != lead {
		t.Fatalf("on a follower: %v", err)
	}
	_, err = c.nodes[lead].ChangeMembership(memberCtx(t), core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: 2}}}})
	if !errors.Is(err, core.ErrIDReused) {
		t.Fatalf("reusing ID 2: %v", err)
	}
	if err := c.nodes[lead].PromoteMember(memberCtx(t), 9); !errors.Is(err, core.ErrUnknownNode) {
		t.Fatalf("promoting a non-member: %v", err)
	}
	if err := c.nodes[lead].RemoveMember(memberCtx(t), 9); !errors.Is(err, core.ErrUnknownNode) {
		t.Fatalf("removing a non-member: %v", err)
	}
	idx, err := c.nodes[lead].ChangeMembership(memberCtx(t), core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: 7, Name: "seven"}}}})
	if err != nil {
		t.Fatalf("adding learner 7: %v", err)
	}
	m, confIdx := c.nodes[lead].Membership()
	if confIdx != idx || !slices.Equal(m.Learners, []uint64{7}) || m.HighestID != 7 {
		t.Fatalf("after adding 7 at %d: %+v at %d", idx, m, confIdx)
	}
	mi, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "next"}, driver.AddOptions{LearnerOnly: true})
	if err != nil || mi.ID != 8 || mi.AutoPromote {
		t.Fatalf("AddMember after 7: %+v, %v", mi, err)
	}
}

// A restarted node whose state machine applied a command before the
// membership changes (a durable state machine records the index of the
// last command it saw; changes are not commands) is handed the changes
// again: its tracked configuration starts at its applied index, not at
// the core's (at the commit index), so none is refused as applied twice.
func TestReplayAfterChanges(t *testing.T) {
	c := newCluster(t, 3, durableSMs(), withConfig(fastPromotion))
	lead := c.leader()
	c.propose(lead, "x")
	c.awaitConverged("x")
	if _, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "n4"}, driver.AddOptions{}); err != nil {
		t.Fatalf("AddMember: %v", err)
	}
	c.join(4)
	c.awaitMembership(c.ids, []uint64{1, 2, 3, 4}, nil)
	lead = c.leader()
	var victim, again uint64
	for _, id := range c.followers(lead) {
		switch {
		case id == 4:
		case victim == 0:
			victim = id
		default:
			again = id
		}
	}
	if err := c.nodes[lead].RemoveMember(memberCtx(t), victim); err != nil {
		t.Fatalf("RemoveMember(%d): %v", victim, err)
	}
	c.stop(victim)
	rest := c.running()
	c.awaitMembership(rest, rest, nil)
	if _, ok := c.sms[again].at(c.nodes[again].Status().Applied); ok {
		t.Fatalf("node %d's last applied entry is a command; the test needs changes after it", again)
	}

	rec := newLogRecorder()
	c.perNode[again] = func(cfg *driver.Config) { cfg.Logger = slog.New(rec) }
	c.restart(again)
	c.propose(again, "y")
	c.awaitMembership(rest, rest, nil)
	if n := rec.count(slog.LevelWarn, "skipped"); n != 0 {
		t.Fatalf("%d membership changes skipped on replay", n)
	}
	if n := rec.count(slog.LevelInfo, "membership changed"); n < 3 {
		t.Fatalf("replay applied %d membership changes, want add, promote, remove", n)
	}
}

// Replacing the leader: its replacement's automatic promotion removes the
// leader in the same (joint) change; once the new configuration is active
// the old leader hands leadership over, and it learns it was removed.
func TestReplaceLeader(t *testing.T) {
	c := newCluster(t, 3, withNames(), withConfig(fastPromotion))
	lead := c.leader()
	c.propose(lead, "before")
	mi, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: fmt.Sprintf("n%d", lead), Incarnation: 5}, driver.AddOptions{})
	if err != nil || mi.Replaces != lead || mi.ID != 4 {
		t.Fatalf("AddMember under the leader's name: %+v, %v", mi, err)
	}
	c.join(4)
	var rest []uint64
	for _, id := range c.ids {
		if id != lead {
			rest = append(rest, id)
		}
	}
	c.awaitMembership(rest, rest, nil)
	await(t, "the old leader to know it was removed", func() bool { return c.nodes[lead].Status().Removed })
	newLead := c.leaderOf(rest...)
	if newLead == lead {
		t.Fatalf("the removed node still leads")
	}
	c.propose(newLead, "after")
	c.stop(lead)
	c.awaitConverged("before", "after")
}

// A learner that never became a voter and comes back with a new
// incarnation (its data lost before promotion) is removed in the change
// that adds its new life (a voter's new life replaces it instead,
// TestReplaceMember).
func TestAddMemberNewIncarnationOfLearner(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	first, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "l", Incarnation: 1}, driver.AddOptions{LearnerOnly: true})
	if err != nil || first.ID != 4 {
		t.Fatalf("first life: %+v, %v", first, err)
	}
	second, err := c.nodes[lead].AddMember(memberCtx(t), core.MemberInfo{Name: "l", Incarnation: 2}, driver.AddOptions{LearnerOnly: true})
	if err != nil || second.ID != 5 {
		t.Fatalf("second life: %+v, %v", second, err)
	}
	m, _ := c.nodes[lead].Membership()
	if !slices.Equal(m.Learners, []uint64{5}) || !m.WasRemoved(4) {
		t.Fatalf("after the second life: %+v", m)
	}
	if mi, _ := m.ByName("l"); mi.ID != 5 || mi.Incarnation != 2 {
		t.Fatalf("member named l: %+v", mi)
	}
}
