package sim

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/rafty-db/rafty/core"
)

// Random membership changes (issue 14). The reconfiguring workload sends
// changes to the current leader through core.Node.ProposeConfChange:
// learner adds (new IDs, never reused, sometimes replacing a member),
// promotions (a replacement's promotion removes the member it replaces in
// the same change, a joint change if that member votes), removals of
// voters (the leader included) and learners, direct voter adds, and
// multi-voter changes that go through a joint configuration. A new member
// is a joiner: a node with empty storage and an empty Config.Membership
// that the leader must catch up by log or snapshot. Refusals with the
// core's typed errors are expected and counted; any other error fails the
// run.
//
// The simulator tracks, like a driver, the membership at each node's
// applied index (Membership.Apply on every EntryConfChange it applies,
// the snapshot's membership on install), and records the committed
// sequence of configurations the first time each one is applied. The
// checks (see checkConfRecord, checkElectionQuorum, checkCommitQuorum):
//
//   - Consecutive configurations of the committed sequence differ by at
//     most one voter, or one is joint with the other as a half, and every
//     quorum of one intersects every quorum of the other (brute force over
//     the voters). A Replace appears only as the bootstrap entry.
//   - An ID, once removed, never comes back, and an added ID is above
//     every ID used before.
//   - Every node applies the same membership at the same index; a
//     snapshot carries the membership of its index; the core's active
//     configuration is the one at its applied index.
//   - A node becomes leader only as a voter of its active configuration,
//     with vote grants forming a quorum of it (both halves if joint), and
//     that quorum intersects every quorum of every configuration at least
//     as new that is active on any node, and of the newest committed one:
//     no quorum that could elect another leader in the same term exists.
//   - A leader commits an entry of its term only when a quorum of the
//     voters of its active configuration (both halves if joint) hold it
//     durably: learners and non-members never count.

// confRec is one configuration of the committed sequence.
type confRec struct {
	index uint64
	m     core.Membership
}

// confPosAt returns the position in s.confHist of the configuration in
// force at index (the last one activated at or below it), or -1.
func (s *Sim) confPosAt(index uint64) int {
	i, found := slices.BinarySearchFunc(s.confHist, index, func(r confRec, idx uint64) int {
		switch {
		case r.index < idx:
			return -1
		case r.index > idx:
			return 1
		}
		return 0
	})
	if found {
		return i
	}
	return i - 1
}

// effHighest is the largest ID m has used: HighestID, or a larger member.
func effHighest(m core.Membership) uint64 {
	h := m.HighestID
	for _, id := range m.IDs() {
		h = max(h, id)
	}
	return h
}

// sameMembership compares what decides quorums and IDs: the voter halves,
// the learners and the highest ID used.
func sameMembership(a, b core.Membership) bool {
	return slices.Equal(sorted(a.Voters), sorted(b.Voters)) &&
		slices.Equal(sorted(a.OutgoingVoters), sorted(b.OutgoingVoters)) &&
		slices.Equal(sorted(a.Learners), sorted(b.Learners)) &&
		effHighest(a) == effHighest(b)
}

func sorted(ids []uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}

func fmtMembership(m core.Membership) string {
	if m.IsEmpty() {
		return "{}"
	}
	s := fmt.Sprintf("{voters=%v", sorted(m.Voters))
	if m.IsJoint() {
		s += fmt.Sprintf(" outgoing=%v", sorted(m.OutgoingVoters))
	}
	if len(m.Learners) > 0 {
		s += fmt.Sprintf(" learners=%v", sorted(m.Learners))
	}
	return s + fmt.Sprintf(" highest=%d}", effHighest(m))
}

// isQuorum reports whether set holds a majority of every voter half of m.
// A configuration without voters has no quorum.
func isQuorum(m core.Membership, set func(uint64) bool) bool {
	if len(m.Voters) == 0 {
		return false
	}
	for _, half := range [][]uint64{m.Voters, m.OutgoingVoters} {
		if len(half) == 0 {
			continue
		}
		n := 0
		for _, id := range half {
			if set(id) {
				n++
			}
		}
		if n <= len(half)/2 {
			return false
		}
	}
	return true
}

// maxBruteVoters bounds the voters quorumsIntersect enumerates subsets
// of: two joint configurations of at most 7 voters a half share most of
// them, and 2^20 subsets is still quick for the rare pairs checked.
const maxBruteVoters = 20

// quorumsIntersect reports whether every quorum of a intersects every
// quorum of b. Quorums are monotone, so disjoint ones exist exactly when
// some quorum S of a leaves a quorum of b in its complement: enumerate S
// over the subsets of the voters of a and b.
func quorumsIntersect(a, b core.Membership) (bool, error) {
	var u []uint64
	for _, half := range [][]uint64{a.Voters, a.OutgoingVoters, b.Voters, b.OutgoingVoters} {
		u = append(u, half...)
	}
	slices.Sort(u)
	u = slices.Compact(u)
	if len(u) > maxBruteVoters {
		return false, fmt.Errorf("quorum check: %d voters, at most %d", len(u), maxBruteVoters)
	}
	pos := map[uint64]int{}
	for i, id := range u {
		pos[id] = i
	}
	for mask := uint32(0); mask < 1<<len(u); mask++ {
		in := func(id uint64) bool { return mask&(1<<pos[id]) != 0 }
		out := func(id uint64) bool { return mask&(1<<pos[id]) == 0 }
		if isQuorum(a, in) && isQuorum(b, out) {
			return false, nil
		}
	}
	return true, nil
}

// checkConfRecord records the configuration activated by the committed
// entry at index (or compares it with the recorded one) and checks the
// structural rules against the previous configuration of the sequence.
func (s *Sim) checkConfRecord(sn *simNode, index uint64, m core.Membership, replace bool) error {
	p := s.confPosAt(index)
	if p >= 0 && s.confHist[p].index == index {
		if !sameMembership(s.confHist[p].m, m) {
			return fmt.Errorf("membership agreement: node %d activates %s at %d, another node activated %s",
				sn.id, fmtMembership(m), index, fmtMembership(s.confHist[p].m))
		}
		return nil
	}
	if p != len(s.confHist)-1 {
		return fmt.Errorf("membership history: node %d activates a configuration at %d, below the newest recorded at %d that it has not seen",
			sn.id, index, s.confHist[len(s.confHist)-1].index)
	}
	prev := s.confHist[p].m
	s.logf("committed configuration at %d: %s (was %s)", index, fmtMembership(m), fmtMembership(prev))
	if replace {
		// Only the bootstrap entry replaces a configuration here: index 1,
		// identical to the bootstrap membership of the initial members.
		if index != 1 || !sameMembership(prev, m) {
			return fmt.Errorf("membership: a Replace at %d (%s after %s); only the bootstrap entry at 1 may replace",
				index, fmtMembership(m), fmtMembership(prev))
		}
	}
	if err := structuralStep(prev, m); err != nil {
		return fmt.Errorf("quorum intersection: configuration at %d %s after %s: %w", index, fmtMembership(m), fmtMembership(prev), err)
	}
	ok, err := quorumsIntersect(prev, m)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("quorum intersection: configuration at %d %s has a quorum disjoint from one of %s",
			index, fmtMembership(m), fmtMembership(prev))
	}
	// IDs are never reused and never come back.
	for _, id := range m.IDs() {
		if prev.Contains(id) {
			continue
		}
		if s.everRemoved[id] {
			return fmt.Errorf("removed ID returns: node %d is a member again at %d (%s)", id, index, fmtMembership(m))
		}
		if id <= effHighest(prev) {
			return fmt.Errorf("ID reused: node %d added at %d, IDs up to %d were used", id, index, effHighest(prev))
		}
	}
	if effHighest(m) < effHighest(prev) {
		return fmt.Errorf("HighestID goes back at %d: %d after %d", index, effHighest(m), effHighest(prev))
	}
	for _, id := range prev.IDs() {
		if !m.Contains(id) {
			s.everRemoved[id] = true
			s.res.Removals++
		}
	}
	if m.IsJoint() {
		s.res.JointConfigs++
	}
	if !replace {
		s.res.Configs++
	}
	s.confHist = append(s.confHist, confRec{index: index, m: m.Clone()})
	return nil
}

// structuralStep checks that next may follow prev in the committed
// sequence: one voter changed at most between simple configurations,
// entering a joint configuration whose outgoing half is prev, or leaving
// one for its incoming half.
func structuralStep(prev, next core.Membership) error {
	switch {
	case prev.IsJoint() && next.IsJoint():
		return errors.New("a joint configuration follows a joint one")
	case prev.IsJoint():
		if !slices.Equal(sorted(next.Voters), sorted(prev.Voters)) {
			return errors.New("leaving a joint configuration for something other than its incoming half")
		}
	case next.IsJoint():
		if !slices.Equal(sorted(next.OutgoingVoters), sorted(prev.Voters)) {
			return errors.New("a joint configuration whose outgoing half is not the previous voters")
		}
	default:
		if d := symDiff(prev.Voters, next.Voters); d > 1 {
			return fmt.Errorf("%d voters change without a joint configuration", d)
		}
	}
	return nil
}

// symDiff counts IDs in exactly one of a and b. The checker computes it
// itself rather than call the core's copy: it checks that code.
func symDiff(a, b []uint64) int {
	n := 0
	for _, x := range a {
		if !slices.Contains(b, x) {
			n++
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			n++
		}
	}
	return n
}

// applyConfEntry activates a committed EntryConfChange on the node's
// tracked membership, as a driver does, and checks it.
func (s *Sim) applyConfEntry(sn *simNode, e core.Entry) error {
	cc, err := core.UnmarshalConfChange(e.Data)
	if err == nil {
		var next core.Membership
		next, err = sn.mem.Apply(cc)
		if err == nil {
			s.logf("node %d activates %v at %d: %s", sn.id, cc, e.Index, fmtMembership(next))
			sn.mem, sn.memIndex = next, e.Index
			return s.checkConfRecord(sn, e.Index, next, cc.Replace != nil)
		}
	}
	// Only a faulty leader commits a change that does not apply: every
	// leader here checks its proposals with Apply against its active
	// configuration, with one change in flight. The core skips such an
	// entry; for the simulator it is a bug.
	s.res.InvalidConfChanges++
	return fmt.Errorf("committed conf change at %d/%d does not apply on node %d (membership %s): %v",
		e.Term, e.Index, sn.id, fmtMembership(sn.mem), err)
}

// checkInstalledMembership: a snapshot carries the membership in force at
// its index.
func (s *Sim) checkInstalledMembership(sn *simNode, meta core.SnapshotMeta) error {
	p := s.confPosAt(meta.Index)
	if p < 0 {
		return fmt.Errorf("snapshot %d installed on node %d before any configuration was recorded", meta.Index, sn.id)
	}
	if !sameMembership(s.confHist[p].m, meta.Membership) {
		return fmt.Errorf("snapshot membership: node %d installs snapshot %d/%d with %s, the configuration at that index is %s (from %d)",
			sn.id, meta.Term, meta.Index, fmtMembership(meta.Membership), fmtMembership(s.confHist[p].m), s.confHist[p].index)
	}
	sn.mem, sn.memIndex = meta.Membership.Clone(), s.confHist[p].index
	return nil
}

// checkActiveMembership reads the core's active configuration after a
// Ready and checks it: it is committed (its index is at most the node's
// commit index), at least as new as the one at the node's applied index
// (activation when handed out; whatever New restores from the log must
// be committed too), and equal to the configuration the committed
// sequence has in force at its index.
func (s *Sim) checkActiveMembership(sn *simNode) error {
	if !sn.up {
		return nil
	}
	st := sn.n.Status()
	sn.active, sn.activeIdx = st.Membership, st.ConfIndex
	if !s.opts.Reconfig || st.Membership.IsEmpty() {
		return nil
	}
	if st.ConfIndex > st.Commit {
		return fmt.Errorf("activation: node %d has %s active from %d, above its commit index %d",
			sn.id, fmtMembership(st.Membership), st.ConfIndex, st.Commit)
	}
	if st.ConfIndex < sn.memIndex {
		return fmt.Errorf("activation: node %d has %s active from %d, older than %s from %d at its applied index %d",
			sn.id, fmtMembership(st.Membership), st.ConfIndex, fmtMembership(sn.mem), sn.memIndex, sn.appliedIndex)
	}
	if st.ConfIndex <= s.maxApplied {
		// Every configuration up to the highest applied index is recorded.
		if want := s.confHist[s.confPosAt(st.ConfIndex)]; !sameMembership(st.Membership, want.m) {
			return fmt.Errorf("activation: node %d has %s active from %d, the committed configuration in force there is %s (from %d)",
				sn.id, fmtMembership(st.Membership), st.ConfIndex, fmtMembership(want.m), want.index)
		}
	}
	return nil
}

// activePos is the position in the committed sequence of a configuration
// active from index: len(s.confHist) (newer than every recorded one) when
// nothing has been applied that far yet.
func (s *Sim) activePos(index uint64) int {
	if index > s.maxApplied {
		return len(s.confHist)
	}
	return max(0, s.confPosAt(index))
}

// newestPos is the position of the newest committed configuration.
func (s *Sim) newestPos() int { return len(s.confHist) - 1 }

// checkElectionQuorum runs when sn is first seen leading term: it must be
// a voter of its active configuration, the grants it collected must be a
// quorum of it, and no quorum of a configuration at least as new (active
// on any node, or the newest committed) may avoid every granter — such a
// quorum could elect a second leader in this term.
func (s *Sim) checkElectionQuorum(sn *simNode, term uint64) error {
	if !s.opts.Reconfig {
		return nil
	}
	m := sn.active
	if !m.IsVoter(sn.id) {
		return fmt.Errorf("election: node %d became leader of term %d but is not a voter of its configuration %s",
			sn.id, term, fmtMembership(m))
	}
	granted := s.grants[[2]uint64{sn.id, term}]
	in := func(id uint64) bool { return id == sn.id || granted[id] }
	if !isQuorum(m, in) {
		return fmt.Errorf("election: node %d leads term %d with grants from %v, not a quorum of %s",
			sn.id, term, grantList(granted), fmtMembership(m))
	}
	own := s.activePos(sn.activeIdx)
	check := func(other core.Membership, where string) error {
		// The granters voted in this term and cannot vote again; the rest
		// of other's voters must not be a quorum of other.
		if isQuorum(other, func(id uint64) bool { return !in(id) }) {
			return fmt.Errorf("quorum intersection: node %d leads term %d under %s with grants %v, but %s %s has a quorum outside them, which could elect another leader in term %d",
				sn.id, term, fmtMembership(m), grantList(granted), where, fmtMembership(other), term)
		}
		return nil
	}
	if np := s.newestPos(); np > own {
		s.res.ElectionsBehind++
		if err := check(s.confHist[np].m, fmt.Sprintf("the newest committed configuration (at %d)", s.confHist[np].index)); err != nil {
			return err
		}
	}
	for _, o := range s.nodes {
		if !o.up || o == sn || o.active.IsEmpty() {
			continue
		}
		if s.activePos(o.activeIdx) < own {
			continue // older: a lagging node's log cannot win against ours
		}
		if err := check(o.active, fmt.Sprintf("node %d's active configuration", o.id)); err != nil {
			return err
		}
	}
	return nil
}

func grantList(g map[uint64]bool) []uint64 {
	var out []uint64
	for id := range g {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// holds reports whether node id durably holds entry index with term.
func (s *Sim) holds(id, index, term uint64) bool {
	sn := s.node(id)
	if sn == nil {
		return false
	}
	lg := sn.log
	if sn.a != nil {
		lg = sn.a.durable // what has been fsynced
	}
	_, snap, err := lg.InitialState()
	if err != nil {
		return false
	}
	if snap.Index >= index {
		return true // covered by a snapshot of committed state
	}
	t, err := lg.Term(index)
	return err == nil && t == term
}

// checkCommitQuorum: a leader that commits an entry of its own term does
// so with a quorum of the voters of its active configuration (m, the one
// before this Ready's committed entries activate) holding it durably.
//
// In async mode it runs in every workload, whenever a leader's commit
// index moves (checkAsyncLeader), and durably means fsynced; the leader
// itself counts only once AckPersisted covered the entry.
//
// It also checks against the configuration in force at commit-1 by the
// leader's own log (committed up to commit, so the committed sequence):
// no quorum of it may avoid every holder. A leader whose active
// configuration lags one change behind passes (one-step changes keep
// quorums intersecting); one that lags two does not (seed 43428).
func (s *Sim) checkCommitQuorum(sn *simNode, m core.Membership, mIdx, commit uint64) error {
	if (!s.opts.Reconfig && !s.opts.Async) || commit == 0 {
		return nil
	}
	term := sn.n.Term()
	t, err := sn.n.EntryTerm(commit)
	if err != nil || t != term {
		return nil // not an entry this leader committed directly
	}
	holders := func(id uint64) bool {
		if sn.a != nil && id == sn.id && !s.ackCovers(sn, commit) {
			return false
		}
		return s.holds(id, commit, term)
	}
	if !isQuorum(m, holders) {
		var have []uint64
		for _, id := range m.IDs() {
			if holders(id) {
				have = append(have, id)
			}
		}
		return fmt.Errorf("commit quorum: leader %d of term %d commits %d under %s, but only %v hold it durably (the leader counting once acknowledged)",
			sn.id, term, commit, fmtMembership(m), have)
	}
	if !s.opts.Reconfig || mIdx+1 >= commit {
		return nil
	}
	ents, err := sn.log.Entries(mIdx+1, commit, math.MaxUint64)
	if err != nil || len(ents) == 0 || ents[0].Index != mIdx+1 {
		return nil // compacted: not checkable here
	}
	inForce, changed := m, false
	for _, e := range ents {
		if e.Type != core.EntryConfChange {
			continue
		}
		cc, err := core.UnmarshalConfChange(e.Data)
		if err != nil {
			return nil
		}
		next, err := inForce.Apply(cc)
		if err != nil {
			return nil // checked where it is applied
		}
		inForce, changed = next, true
	}
	if changed && isQuorum(inForce, func(id uint64) bool { return !holders(id) }) {
		return fmt.Errorf("commit quorum: leader %d of term %d commits %d under its active %s (from %d), but the configuration in force at %d by its log is %s, a quorum of which does not hold it",
			sn.id, term, commit, fmtMembership(m), mIdx, commit-1, fmtMembership(inForce))
	}
	return nil
}

// currentLeader returns the live leader of the highest term, or nil.
func (s *Sim) currentLeader() *simNode {
	var best *simNode
	for _, sn := range s.nodes {
		if sn.up && sn.n.Role() == core.RoleLeader && (best == nil || sn.n.Term() > best.n.Term()) {
			best = sn
		}
	}
	return best
}

// reconfigure proposes one random membership change to the leader.
func (s *Sim) reconfigure() error {
	ld := s.currentLeader()
	if ld == nil {
		return nil
	}
	m := ld.n.Status().Membership
	cc, added, expect := s.randomChange(m)
	if len(cc.Ops) == 0 {
		return nil
	}
	idx, err := ld.n.ProposeConfChange(cc)
	s.logf("conf change on leader %d: %v (%s): index %d, %v", ld.id, cc, expect, idx, err)
	if err == nil {
		if expect == "reused" {
			return fmt.Errorf("ID reuse: leader %d accepted %v, which adds an ID that was already used (%s)", ld.id, cc, fmtMembership(m))
		}
		if _, aerr := m.Apply(cc); aerr != nil {
			return fmt.Errorf("leader %d accepted %v, which does not apply to its configuration %s: %v", ld.id, cc, fmtMembership(m), aerr)
		}
		s.res.ConfProposed++
		for _, id := range added {
			if err := s.addJoiner(id); err != nil {
				return err
			}
		}
		if op := cc.Ops[0]; op.Member.Replaces != core.None && s.chance(0.7) {
			// The usual reason for a replacement: the member's volume is
			// gone. It stays down while the cluster replaces it.
			if old := s.node(op.Member.Replaces); old != nil && old != ld && old.up {
				s.logf("member %d died; %d replaces it", old.id, op.Member.ID)
				if err := s.crash(old); err != nil {
					return err
				}
				old.lost = true
				s.res.DeadReplaced++
			}
		}
		return s.observe(ld)
	}
	reason := refusalReason(err)
	if reason == "" {
		return fmt.Errorf("conf change %v on leader %d: untyped error: %w", cc, ld.id, err)
	}
	// A reused ID may be refused for another reason first (a change in
	// flight, a joint configuration, not leader); accepting it is the bug.
	s.res.ConfRefused++
	if s.res.Refusals == nil {
		s.res.Refusals = map[string]int{}
	}
	s.res.Refusals[reason]++
	return nil
}

// refusalReason names a typed refusal of ProposeConfChange, or "" for an
// error that is not one.
func refusalReason(err error) string {
	var nl *core.NotLeaderError
	for _, r := range []struct {
		name string
		err  error
	}{
		{"in-progress", core.ErrConfChangeInProgress}, {"id-reused", core.ErrIDReused},
		{"learner-behind", core.ErrLearnerBehind}, {"quorum-unreachable", core.ErrQuorumUnreachable},
		{"invalid", core.ErrInvalidConfChange}, {"transfer", core.ErrTransferInProgress},
		{"uncommitted-limit", core.ErrTooManyUncommitted}, {"removed", core.ErrRemoved},
		{"not-ready", core.ErrLeaderNotReady},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	if errors.As(err, &nl) {
		return "not-leader"
	}
	return ""
}

// Limits of the reconfiguring workload: voters per configuration, members
// (voters and learners), and nodes ever created (each add creates one).
const (
	maxVoters       = 7
	maxMembers      = 9
	maxNodesCreated = 48
)

// randomChange draws a change against m. It returns the IDs it adds
// (joiners to create if the leader accepts) and what it is, for the trace;
// "reused" marks a change that must be refused with ErrIDReused.
func (s *Sim) randomChange(m core.Membership) (core.ConfChange, []uint64, string) {
	var cc core.ConfChange
	if m.IsJoint() {
		// Only LeaveJoint may follow, and the leader proposes it itself;
		// trying anything else checks the refusal.
		if s.chance(0.8) {
			return cc, nil, ""
		}
	}
	learners, voters := sorted(m.Learners), sorted(m.Voters)
	members := m.IDs()
	canAdd := len(members) < maxMembers && len(s.nodes) < maxNodesCreated
	pick := func(ids []uint64) uint64 { return ids[s.rng.IntN(len(ids))] }
	// A drawn ID is taken only if the leader accepts the change (see
	// reconfigure): a refused change left no entry anywhere.
	newID := func() uint64 { return s.nextID + 1 }
	roll := s.rng.IntN(100)
	switch {
	case roll < 25 && canAdd: // add a learner, a replacement half of the time
		id := newID()
		mi := core.MemberInfo{ID: id, Name: fmt.Sprintf("n%d", id), AutoPromote: true}
		what := "add learner"
		if s.chance(0.5) {
			mi.Replaces = pick(members)
			if old, ok := m.Info(mi.Replaces); ok && old.Name != "" {
				mi.Name = old.Name
			}
			what = fmt.Sprintf("add learner replacing %d", mi.Replaces)
		}
		cc.Ops = []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: mi}}
		return cc, []uint64{mi.ID}, what
	case roll < 50 && len(learners) > 0: // promote (a replacement removes its predecessor)
		l := pick(learners)
		cc.Ops = []core.ConfChangeOp{{Type: core.ConfPromote, Member: core.MemberInfo{ID: l}}}
		if info, _ := m.Info(l); info.Replaces != core.None && m.Contains(info.Replaces) {
			cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfRemove, Member: core.MemberInfo{ID: info.Replaces}})
			return cc, nil, "promote replacement"
		}
		if len(voters) >= maxVoters {
			return core.ConfChange{}, nil, ""
		}
		return cc, nil, "promote"
	case roll < 65: // remove a member; rarely the last voter (refused)
		if len(members) == 1 && !s.chance(0.1) {
			return cc, nil, ""
		}
		cc.Ops = []core.ConfChangeOp{{Type: core.ConfRemove, Member: core.MemberInfo{ID: pick(members)}}}
		return cc, nil, "remove"
	case roll < 90: // several voters at once: a joint configuration
		return s.multiChange(m, canAdd)
	case roll < 95 && canAdd && len(voters) < maxVoters: // a voter straight away
		id := newID()
		cc.Ops = []core.ConfChangeOp{{Type: core.ConfAddVoter, Member: core.MemberInfo{ID: id, Name: fmt.Sprintf("n%d", id)}}}
		return cc, []uint64{id}, "add voter"
	case roll >= 95 && len(s.everRemoved) > 0: // reuse a removed ID: must be refused
		var removed []uint64
		for id := range s.everRemoved {
			removed = append(removed, id)
		}
		slices.Sort(removed)
		id := pick(removed)
		cc.Ops = []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: id, Name: fmt.Sprintf("again%d", id)}}}
		return cc, nil, "reused"
	}
	return cc, nil, ""
}

// multiChange draws two or three operations that change voters together:
// promotions, removals of voters, direct voter adds.
func (s *Sim) multiChange(m core.Membership, canAdd bool) (core.ConfChange, []uint64, string) {
	var cc core.ConfChange
	var added []uint64
	used := map[uint64]bool{}
	voters := len(m.Voters)
	want := 2 + s.rng.IntN(2)
	for tries := 0; len(cc.Ops) < want && tries < 10; tries++ {
		switch s.rng.IntN(3) {
		case 0:
			if len(m.Learners) == 0 || voters >= maxVoters {
				continue
			}
			l := m.Learners[s.rng.IntN(len(m.Learners))]
			if used[l] {
				continue
			}
			used[l] = true
			voters++
			cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfPromote, Member: core.MemberInfo{ID: l}})
		case 1:
			v := m.Voters[s.rng.IntN(len(m.Voters))]
			if used[v] || voters <= 1 {
				continue
			}
			used[v] = true
			voters--
			cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfRemove, Member: core.MemberInfo{ID: v}})
		default:
			if !canAdd || voters >= maxVoters || len(added) > 0 {
				continue
			}
			id := s.nextID + 1
			added = append(added, id)
			voters++
			cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfAddVoter, Member: core.MemberInfo{ID: id, Name: fmt.Sprintf("n%d", id)}})
		}
	}
	if len(cc.Ops) < 2 {
		// Nothing to combine.
		return core.ConfChange{}, nil, ""
	}
	return cc, added, "multi-voter"
}

// addJoiner creates a node for a newly added ID: empty storage, empty
// Config.Membership. It waits for a leader to catch it up.
func (s *Sim) addJoiner(id uint64) error {
	if uint64(len(s.nodes)) != id-1 {
		return fmt.Errorf("sim: joiner %d is not the next ID after %d nodes", id, len(s.nodes))
	}
	s.nextID = id
	sn := s.newNode(id, true)
	s.initClock(sn)
	if err := s.start(sn); err != nil {
		return err
	}
	s.nodes = append(s.nodes, sn)
	s.res.Joiners++
	s.logf("joiner %d starts (empty storage, no membership)", id)
	return nil
}

// node returns the node with id, or nil.
func (s *Sim) node(id uint64) *simNode {
	if id == 0 || id > uint64(len(s.nodes)) {
		return nil
	}
	return s.nodes[id-1]
}

// jointCrash crashes the leader or a member while some node has a joint
// configuration active: the window between entering and leaving one.
func (s *Sim) jointCrash() error {
	var joint []*simNode
	for _, sn := range s.nodes {
		if sn.up && sn.active.IsJoint() {
			joint = append(joint, sn)
		}
	}
	if len(joint) == 0 {
		return nil
	}
	victim := joint[s.rng.IntN(len(joint))]
	if ld := s.currentLeader(); ld != nil && ld.active.IsJoint() && s.chance(0.5) {
		victim = ld
	}
	s.res.JointCrashes++
	s.logf("crash in the joint phase:")
	return s.crash(victim)
}

// describeMembership renders the committed sequence's tail and, for a
// liveness failure, which members of the newest committed configuration
// have not activated it yet (and so may depend on removed nodes' votes).
func (s *Sim) describeMembership() string {
	var b strings.Builder
	from := max(0, len(s.confHist)-6)
	for _, r := range s.confHist[from:] {
		fmt.Fprintf(&b, "  config at %d: %s\n", r.index, fmtMembership(r.m))
	}
	if d := s.strandedBy(); d != "" {
		fmt.Fprintf(&b, "  %s\n", d)
	}
	return b.String()
}

// strandedBy diagnoses a cluster without a leader after healing: voters
// of the newest committed configuration that still have an older one
// active whose quorum needs a node that is removed (and passive). Empty
// when there is no such voter.
func (s *Sim) strandedBy() string {
	newest := s.confHist[s.newestPos()]
	var out []string
	for _, id := range newest.m.Voters {
		sn := s.node(id)
		if sn == nil || !sn.up || sn.activeIdx >= newest.index {
			continue
		}
		// Can the voters of sn's active configuration that are not
		// removed form a quorum of it?
		live := func(v uint64) bool { o := s.node(v); return o != nil && !o.n.Status().Removed }
		if !isQuorum(sn.active, live) {
			out = append(out, fmt.Sprintf("node %d (commit %d) has %s active from %d, not the committed %s from %d, and its quorum needs removed nodes",
				id, sn.n.Status().Commit, fmtMembership(sn.active), sn.activeIdx, fmtMembership(newest.m), newest.index))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "stranded voters: " + strings.Join(out, "; ")
}
