package chaos

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/internal/proctest"
)

// The membership nemesis (issue 14): members join, leave and are replaced
// while the workload runs, between and during the other faults. It needs
// a loopback cluster with spare slots (startProcClusterSpares): a node
// joins from a free slot, and a removed node's slot is freed (its process
// stopped, its data wiped).
const (
	// A node joins from a free slot with `kvnode serve --join` (a new
	// data directory); it is added as a learner and promoted by the
	// leader once caught up.
	fMemberAdd faultKind = "member-add"
	// `kvnode member remove` of a voter that is not the leader; the
	// removed node stays up (passive, not ready) for the hold, then is
	// stopped and its slot freed.
	fMemberRemove faultKind = "member-remove"
	// The same of the leader, which hands leadership over first.
	fMemberRemoveLeader faultKind = "member-remove-leader"
	// kill -9 of a member (the leader half of the time), its data
	// directory wiped, restarted empty under the same name after the
	// hold: it must join with a new ID, and the old ID be removed when it
	// is promoted.
	fMemberReplace faultKind = "member-replace"
	// `kvnode member add --learner`, the node started with --join takes
	// that member, stays a learner, and `kvnode member promote` makes it
	// a voter.
	fMemberPromote faultKind = "member-promote"
)

// memberKinds are the membership faults; TestChaosMembership draws from
// them and from memberMixKinds.
var memberKinds = []faultKind{fMemberAdd, fMemberRemove, fMemberRemoveLeader, fMemberReplace, fMemberPromote}

// memberMixKinds are the other faults the membership schedules interleave.
var memberMixKinds = []faultKind{fKillRandom, fKillLeader, fPauseLeader, fPauseRandom, fIsoLeader, fSplit, fOneWay}

func isMemberKind(k faultKind) bool { return slices.Contains(memberKinds, k) }

// Bounds of the membership nemesis.
const (
	minMembers = 3 // removals stop here (an add comes first)
	// memberChangeBound is how long one membership step may take: a
	// join (snapshot, catch-up, promotion after AutoPromoteStableFor)
	// under the faults that run during it.
	memberChangeBound = 60 * time.Second
)

// memberCluster is a cluster whose membership the nemesis can change.
type memberCluster interface {
	cluster
	SetMember(i int, in bool)
	FrontAddr(i int) string
	NodeName(i int) string
	SetJoin(i int, name string, via []int)
	Wipe(i int) error
	// Joined reports whether slot i starts with --join (not with the
	// initial members' flags).
	Joined(i int) bool
	UnknownSenders() int64
}

// memberStats are the membership figures of a run.
type memberStats struct {
	adds, removes, leaderRemoves, replaces, promotes int
	during                                           int             // faults injected while a change was under way
	joinTimes                                        []time.Duration // start of a joining process until it is a voter
	wipedReadsBack                                   int             // serializable reads older than one the slot's previous member answered (not a violation: another member)
}

func (m *memberStats) add(o memberStats) {
	m.adds += o.adds
	m.removes += o.removes
	m.leaderRemoves += o.leaderRemoves
	m.replaces += o.replaces
	m.promotes += o.promotes
	m.during += o.during
	m.joinTimes = append(m.joinTimes, o.joinTimes...)
	m.wipedReadsBack += o.wipedReadsBack
}

func (m *memberStats) String() string {
	s := fmt.Sprintf("membership: %d joins (--join), %d removals of a follower, %d of the leader, %d replacements (wiped, rejoined under the same name), %d learners added and promoted by hand; %d faults during a change",
		m.adds, m.removes, m.leaderRemoves, m.replaces, m.promotes, m.during)
	if len(m.joinTimes) > 0 {
		t := slices.Clone(m.joinTimes)
		slices.Sort(t)
		s += fmt.Sprintf("; a joining node was a voter after %v to %v (median %v)", t[0].Round(10*time.Millisecond), t[len(t)-1].Round(10*time.Millisecond), t[len(t)/2].Round(10*time.Millisecond))
	}
	return s
}

// memberState is what the nemesis keeps across the schedules on one
// cluster: every Raft ID the cluster ever had (IDs are never reused) and
// the incarnations that started on a wiped data directory.
type memberState struct {
	mu       sync.Mutex
	ids      map[uint64]string // ID -> name
	highest  uint64
	wipeIncs map[int][]int
	joins    int // names of joined nodes are join-<slot>-<k>
}

func newMemberState() *memberState {
	return &memberState{ids: map[uint64]string{}, wipeIncs: map[int][]int{}}
}

// memberList asks the members for the membership until one answers as
// the leader, or timeout passes (then the last follower view, if any).
func memberList(ctx context.Context, c cluster, nc *nodeClients, timeout time.Duration) (*kvpb.MemberListResponse, error) {
	deadline := time.Now().Add(timeout)
	var last error
	var view *kvpb.MemberListResponse
	for {
		for _, i := range c.Members() {
			if !c.Alive(i) || c.Paused(i) {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
			resp, err := kvpb.NewClusterClient(nc.conns[i]).MemberList(actx, &kvpb.MemberListRequest{})
			cancel()
			if err != nil {
				last = err
				continue
			}
			if resp.GetFromLeader() {
				return resp, nil
			}
			view = resp
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if view != nil {
				return view, fmt.Errorf("no leader answered within %v (a follower's view returned)", timeout)
			}
			return nil, fmt.Errorf("no member answered the member list within %v (last error: %v)", timeout, last)
		}
		sleepCtx(ctx, 150*time.Millisecond)
	}
}

// slotOf returns the slot whose front is addr, or -1.
func slotOf(c memberCluster, addr string) int {
	for i := range c.Size() {
		if c.FrontAddr(i) == addr {
			return i
		}
	}
	return -1
}

// memberOf returns the member of resp at slot i's peer address.
func memberOf(c memberCluster, resp *kvpb.MemberListResponse, i int) *kvpb.Member {
	for _, m := range resp.GetMembers() {
		if m.GetPeerAddr() == c.FrontAddr(i) {
			return m
		}
	}
	return nil
}

// followMembers makes the workload's clients follow the membership as the
// cluster lists it (members' peer addresses mapped to slots), polling
// until ctx ends: a new member gets requests once it is listed, a removed
// one no more once it is not.
func followMembers(ctx context.Context, c memberCluster, nc *nodeClients, done func()) {
	defer done()
	for ctx.Err() == nil {
		if resp, err := memberList(ctx, c, nc, time.Second); resp != nil && err == nil {
			var ts []int
			for _, m := range resp.GetMembers() {
				if i := slotOf(c, m.GetPeerAddr()); i >= 0 {
					ts = append(ts, i)
				}
			}
			slices.Sort(ts)
			if len(ts) > 0 {
				nc.targets.Store(&ts)
			}
		}
		sleepCtx(ctx, 300*time.Millisecond)
	}
}

// cli runs `kvnode member ARGS` against the current members' client
// addresses and returns its output.
func (e *env) cli(ctx context.Context, bin string, args ...string) (string, error) {
	var eps []string
	for _, i := range e.c.Members() {
		eps = append(eps, e.c.ClientAddr(i))
	}
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	full := append(append([]string{"member"}, args...), "--endpoints", strings.Join(eps, ","), "--timeout", "30s")
	out, err := exec.CommandContext(cctx, bin, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kvnode %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cliRetry runs the command until it succeeds or bound passes: a change is
// refused while another is in flight (an automatic promotion, the leaving
// of a joint configuration) and while there is no leader.
func (e *env) cliRetry(ctx context.Context, bin string, bound time.Duration, args ...string) (string, int, error) {
	deadline := time.Now().Add(bound)
	for tries := 1; ; tries++ {
		out, err := e.cli(ctx, bin, args...)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return out, tries, err
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

// freeSlot returns a slot that is not a member and not running, or -1.
func freeSlot(c memberCluster, r uint64) int {
	var free []int
	members := c.Members()
	for i := range c.Size() {
		if !slices.Contains(members, i) && !c.Alive(i) {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return -1
	}
	return free[r%uint64(len(free))]
}

// waitMember waits until the leader lists what ok accepts, and returns
// that list.
func (e *env) waitMember(ctx context.Context, what string, bound time.Duration, ok func(*kvpb.MemberListResponse) bool) (*kvpb.MemberListResponse, error) {
	deadline := time.Now().Add(bound)
	var last *kvpb.MemberListResponse
	for {
		resp, err := memberList(ctx, e.c, e.nc, 3*time.Second)
		if err == nil {
			last = resp
			if ok(resp) {
				return resp, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return last, fmt.Errorf("%s: not within %v; the leader's last list: %s", what, bound, describeMembers(last))
		}
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

// describeMembers is a member list on one line.
func describeMembers(resp *kvpb.MemberListResponse) string {
	if resp == nil {
		return "(none)"
	}
	var parts []string
	for _, m := range resp.GetMembers() {
		role := "voter"
		if m.GetLearner() {
			role = "learner"
		}
		if m.GetOutgoing() {
			role += "(outgoing)"
		}
		if m.GetLeader() {
			role += "*"
		}
		parts = append(parts, fmt.Sprintf("%d %s %s lag %d", m.GetId(), m.GetName(), role, m.GetLag()))
	}
	j := ""
	if resp.GetJoint() {
		j = " (joint)"
	}
	return "[" + strings.Join(parts, "; ") + "]" + j
}

// voterAt reports whether resp lists slot i as a voter outside any joint
// configuration.
func voterAt(c memberCluster, resp *kvpb.MemberListResponse, i int) (*kvpb.Member, bool) {
	m := memberOf(c, resp, i)
	return m, m != nil && !m.GetLearner() && !resp.GetJoint()
}

// noteID records a member ID the cluster allocated; an ID seen before
// under another name, or a new ID not above every earlier one, is a
// violation (IDs are never reused).
func (e *env) noteID(id uint64, name string) {
	ms := e.ms
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if prev, ok := ms.ids[id]; ok {
		if prev != name {
			e.violate("member ID %d reused: it was %s, now %s", id, prev, name)
		}
		return
	}
	if id <= ms.highest {
		e.violate("member ID %d allocated to %s is not above the highest ID so far (%d)", id, name, ms.highest)
	}
	ms.ids[id] = name
	ms.highest = max(ms.highest, id)
}

// violate records a membership violation (reported with the schedule's).
func (e *env) violate(format string, args ...any) {
	e.mu.Lock()
	e.memberViolations = append(e.memberViolations, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

// during runs a fault on another member while a membership change is
// under way, when the step's random bits say so: kill -9 and restart, or
// SIGSTOP and SIGCONT, of one member other than except, for 0.8-2 s. It
// returns a function that waits for the fault to end and describes it.
func (e *env) during(ctx context.Context, s step, except ...int) func() string {
	if (s.r2>>16)%2 == 0 {
		return func() string { return "" }
	}
	others := slices.DeleteFunc(e.c.Members(), func(x int) bool { return slices.Contains(except, x) })
	if len(others) == 0 {
		return func() string { return "" }
	}
	rng := rand.New(rand.NewPCG(s.r1, s.r2^0xd0))
	victim := others[rng.IntN(len(others))]
	wait := time.Duration(300+rng.IntN(1500)) * time.Millisecond
	hold := time.Duration(800+rng.IntN(1200)) * time.Millisecond
	kill := rng.IntN(2) == 0
	done := make(chan string, 1)
	go func() {
		sleepCtx(ctx, wait)
		var err error
		what := "SIGSTOP"
		if kill {
			what, err = "kill -9", e.c.Kill(victim)
		} else {
			err = e.c.Pause(victim)
		}
		if err != nil {
			done <- fmt.Sprintf("; %s of node %d during the change failed: %v", what, victim+1, err)
			return
		}
		sleepCtx(ctx, hold)
		if kill {
			err = e.restart(victim)
		} else {
			err = e.c.Resume(victim)
		}
		e.mu.Lock()
		e.ms2.during++
		e.mu.Unlock()
		if err != nil {
			done <- fmt.Sprintf("; %s of node %d for %v during the change, then: %v", what, victim+1, hold, err)
			return
		}
		done <- fmt.Sprintf("; %s of node %d for %v during the change", what, victim+1, hold)
	}()
	return func() string { return <-done }
}

// membership runs one membership step.
func (e *env) membership(ctx context.Context, s step, start int64) error {
	c, ok := e.c.(memberCluster)
	if !ok || c.Size() == len(c.Members()) && len(c.Members()) <= minMembers {
		return fmt.Errorf("%s needs a loopback cluster with spare slots", s.kind)
	}
	var notes []string
	switch s.kind {
	case fMemberAdd, fMemberPromote:
		if freeSlot(c, s.r1) < 0 {
			// Full: make room first.
			note, err := e.removeMember(ctx, c, s, false)
			if err != nil {
				return err
			}
			notes = append(notes, "to make room: "+note)
		}
		note, err := e.addMember(ctx, c, s, s.kind == fMemberPromote)
		if err != nil {
			return err
		}
		notes = append(notes, note)
	case fMemberRemove, fMemberRemoveLeader:
		if len(c.Members()) <= minMembers {
			note, err := e.addMember(ctx, c, s, false)
			if err != nil {
				return err
			}
			notes = append(notes, "to keep "+strconv.Itoa(minMembers)+": "+note)
		}
		note, err := e.removeMember(ctx, c, s, s.kind == fMemberRemoveLeader)
		if err != nil {
			return err
		}
		notes = append(notes, note)
	case fMemberReplace:
		note, err := e.replaceMember(ctx, c, s)
		if err != nil {
			return err
		}
		notes = append(notes, note)
	default:
		return fmt.Errorf("not a membership fault: %s", s.kind)
	}
	e.record(start, "%s", strings.Join(notes, "; then "))
	return nil
}

var addedID = regexp.MustCompile(`added member ([0-9]+) `)

// addMember starts a node in a free slot with --join (or, byHand, adds it
// with `member add --learner` first and promotes it with `member
// promote`), and waits until it is a voter.
func (e *env) addMember(ctx context.Context, c memberCluster, s step, byHand bool) (string, error) {
	i := freeSlot(c, s.r1)
	if i < 0 {
		return "", errors.New("no free slot")
	}
	e.ms.mu.Lock()
	e.ms.joins++
	name := fmt.Sprintf("join-%d-%d", i+1, e.ms.joins)
	e.ms.mu.Unlock()
	if err := c.Wipe(i); err != nil {
		return "", err
	}
	var id uint64
	if byHand {
		out, tries, err := e.cliRetry(ctx, e.bin, memberChangeBound/2, "add", name, "--peer-addr", c.FrontAddr(i), "--client-addr", c.ClientAddr(i), "--learner")
		if err != nil {
			e.violate("member add %s --learner: %v (after %d tries)", name, err, tries)
			return fmt.Sprintf("member add %s --learner failed", name), nil
		}
		m := addedID.FindStringSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("member add: no ID in %q", out)
		}
		id, _ = strconv.ParseUint(m[1], 10, 64)
		e.noteID(id, name)
	}
	c.SetJoin(i, name, c.Members())
	began := time.Now()
	wait := e.during(ctx, s, i)
	if err := c.Start(i); err != nil {
		wait() // the fault during the change ends before the schedule does
		return "", err
	}
	var how string
	if byHand {
		// It takes over the learner added for it, and stays a learner
		// until promoted.
		resp, err := e.waitMember(ctx, fmt.Sprintf("%s caught up as a learner", name), memberChangeBound, func(r *kvpb.MemberListResponse) bool {
			m := memberOf(c, r, i)
			return m != nil && m.GetProgressKnown() && m.GetLag() <= 100
		})
		if err != nil {
			e.violate("%v", err)
			return how + wait(), nil
		}
		if m := memberOf(c, resp, i); m.GetId() != id || !m.GetLearner() {
			e.violate("%s: the node did not take over learner %d added for it, or was promoted by itself: %s", name, id, describeMembers(resp))
		}
		_, tries, err := e.cliRetry(ctx, e.bin, memberChangeBound/2, "promote", strconv.FormatUint(id, 10))
		if err != nil {
			e.violate("member promote %d (%s): %v", id, name, err)
			return how + wait(), nil
		}
		how = fmt.Sprintf("member add %s --learner (ID %d), started with --join, member promote %d (%d tries)", name, id, id, tries)
	}
	resp, err := e.waitMember(ctx, fmt.Sprintf("%s (node %d) a voter", name, i+1), memberChangeBound, func(r *kvpb.MemberListResponse) bool {
		_, ok := voterAt(c, r, i)
		return ok
	})
	took := time.Since(began)
	if err != nil {
		e.violate("%v", err)
		return fmt.Sprintf("node %d joined as %s: not a voter within %v", i+1, name, memberChangeBound) + wait(), nil
	}
	m, _ := voterAt(c, resp, i)
	e.noteID(m.GetId(), name)
	if err := waitReady(c, i, 30*time.Second); err != nil {
		e.violate("%s, a voter, not ready: %v", name, err)
	}
	c.SetMember(i, true)
	e.mu.Lock()
	if byHand {
		e.ms2.promotes++
	} else {
		e.ms2.adds++
		how = fmt.Sprintf("node %d joined with --join as %s", i+1, name)
	}
	e.ms2.joinTimes = append(e.ms2.joinTimes, took)
	e.mu.Unlock()
	return fmt.Sprintf("%s: member %d, a voter after %v", how, m.GetId(), took.Round(10*time.Millisecond)) + wait(), nil
}

// removeMember removes a voter (the leader, or not) with `member remove`,
// leaves the removed node running for the hold (it must not be ready,
// and it must not disturb the others), then stops it and frees its slot.
func (e *env) removeMember(ctx context.Context, c memberCluster, s step, leader bool) (string, error) {
	resp, err := memberList(ctx, c, e.nc, 10*time.Second)
	if err != nil {
		e.violate("before a removal: %v", err)
		return "no leader to remove a member through", nil
	}
	var cands []int
	lead := -1
	for _, m := range resp.GetMembers() {
		i := slotOf(c, m.GetPeerAddr())
		if i < 0 || !slices.Contains(c.Members(), i) {
			continue
		}
		if m.GetLeader() {
			lead = i
		}
		if m.GetLeader() == leader && !m.GetLearner() {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return "", fmt.Errorf("no member to remove (leader %v) in %s", leader, describeMembers(resp))
	}
	i := cands[s.r1%uint64(len(cands))]
	m := memberOf(c, resp, i)
	id := m.GetId()
	_, tries, err := e.cliRetry(ctx, e.bin, memberChangeBound/2, "remove", strconv.FormatUint(id, 10))
	if err != nil {
		e.violate("member remove %d (%s): %v", id, m.GetName(), err)
		return fmt.Sprintf("member remove %d failed", id), nil
	}
	c.SetMember(i, false)
	if _, err := e.waitMember(ctx, fmt.Sprintf("member %d gone", id), 15*time.Second, func(r *kvpb.MemberListResponse) bool {
		return memberOf(c, r, i) == nil
	}); err != nil {
		e.violate("%v", err)
	}
	// The removed node stays up, passive: it learns it was removed
	// (or is never told, if it missed the entry) and must not
	// become ready again or disturb the others meanwhile.
	sleepCtx(ctx, s.hold)
	readyAfter := ""
	if c.Alive(i) && waitNotReady(c, i, 5*time.Second) != nil {
		readyAfter = " (still ready: a removed member stays ready)"
		e.violate("removed member %d (node %d) is still ready %v after its removal", id, i+1, s.hold+5*time.Second)
	}
	if err := c.Kill(i); err != nil {
		return "", err
	}
	if err := c.Wipe(i); err != nil {
		return "", err
	}
	e.mu.Lock()
	if leader {
		e.ms2.leaderRemoves++
	} else {
		e.ms2.removes++
	}
	e.mu.Unlock()
	who := "a follower"
	if i == lead {
		who = "the leader"
	}
	return fmt.Sprintf("member remove %d (%s, node %d, %s; %d tries), left running %v then stopped%s", id, m.GetName(), i+1, who, tries, s.hold.Round(time.Millisecond), readyAfter), nil
}

// replaceMember kills a member, wipes its data and restarts it empty under
// the same name: it must join with a new ID and the old one be removed.
func (e *env) replaceMember(ctx context.Context, c memberCluster, s step) (string, error) {
	resp, err := memberList(ctx, c, e.nc, 10*time.Second)
	if err != nil {
		e.violate("before a replacement: %v", err)
		return "no leader to replace a member under", nil
	}
	members := c.Members()
	i, why := members[s.r1%uint64(len(members))], "random"
	if (s.r2>>8)%2 == 0 {
		for _, m := range resp.GetMembers() {
			if m.GetLeader() {
				if j := slotOf(c, m.GetPeerAddr()); j >= 0 && slices.Contains(members, j) {
					i, why = j, "leader"
				}
			}
		}
	}
	old := memberOf(c, resp, i)
	if old == nil {
		return "", fmt.Errorf("node %d is not listed: %s", i+1, describeMembers(resp))
	}
	name := c.NodeName(i)
	if err := c.Kill(i); err != nil {
		return "", err
	}
	if err := c.Wipe(i); err != nil {
		return "", err
	}
	sleepCtx(ctx, s.hold)
	flags := "its initial flags (--id, --peers: it probes, finds the cluster and joins)"
	if i >= e.initialSlots() || (s.r2>>12)%2 == 0 || c.Joined(i) {
		c.SetJoin(i, name, slices.DeleteFunc(slices.Clone(members), func(x int) bool { return x == i }))
		flags = "--join"
	}
	began := time.Now()
	wait := e.during(ctx, s, i)
	if err := c.Start(i); err != nil {
		wait() // the fault during the change ends before the schedule does
		return "", err
	}
	e.ms.mu.Lock()
	e.ms.wipeIncs[i] = append(e.ms.wipeIncs[i], c.Incarnation(i))
	e.ms.mu.Unlock()
	resp, err = e.waitMember(ctx, fmt.Sprintf("%s replaced (a voter under a new ID, %d removed)", name, old.GetId()), memberChangeBound, func(r *kvpb.MemberListResponse) bool {
		m, ok := voterAt(c, r, i)
		if !ok || m.GetId() == old.GetId() {
			return false
		}
		for _, x := range r.GetMembers() {
			if x.GetId() == old.GetId() {
				return false
			}
		}
		return true
	})
	took := time.Since(began)
	// From now on it restarts under its persisted ID: no --id.
	c.SetJoin(i, name, slices.DeleteFunc(slices.Clone(members), func(x int) bool { return x == i }))
	if err != nil {
		e.violate("%v", err)
		return fmt.Sprintf("replace node %d (%s, member %d): not done within %v", i+1, name, old.GetId(), memberChangeBound) + wait(), nil
	}
	m, _ := voterAt(c, resp, i)
	if m.GetName() != name {
		e.violate("node %d rejoined as %q, not under its name %q", i+1, m.GetName(), name)
	}
	e.noteID(m.GetId(), name)
	if err := waitReady(c, i, 30*time.Second); err != nil {
		e.violate("replaced %s not ready: %v", name, err)
	}
	e.mu.Lock()
	e.ms2.replaces++
	e.ms2.joinTimes = append(e.ms2.joinTimes, took)
	e.mu.Unlock()
	return fmt.Sprintf("replace node %d (%s, %s, member %d): kill -9, data wiped, restarted empty after %v with %s; member %d a voter and %d removed after %v",
		i+1, name, why, old.GetId(), s.hold.Round(time.Millisecond), flags, m.GetId(), old.GetId(), took.Round(10*time.Millisecond)) + wait(), nil
}

// initialSlots is the number of initial members of a loopback cluster.
func (e *env) initialSlots() int {
	if pc, ok := e.c.(*procCluster); ok {
		return pc.initial
	}
	return e.c.Size()
}

// waitNotReady waits until node i's /readyz is not 200.
func waitNotReady(c cluster, i int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if code := proctest.Readyz(c.MetricsAddr(i)); code != http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d still ready after %v", i+1, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkMembership verifies, after healing, that the cluster lists exactly
// the harness's members, all voters, outside any joint configuration
// (learners promoted, replaced members removed), within bound.
func (e *env) checkMembership(ctx context.Context, bound time.Duration) {
	c, ok := e.c.(memberCluster)
	if !ok {
		return
	}
	want := c.Members()
	_, err := e.waitMember(ctx, "the membership settled", bound, func(r *kvpb.MemberListResponse) bool {
		if r.GetJoint() || len(r.GetMembers()) != len(want) {
			return false
		}
		for _, m := range r.GetMembers() {
			if m.GetLearner() || !slices.Contains(want, slotOf(c, m.GetPeerAddr())) {
				return false
			}
		}
		return true
	})
	if err != nil {
		e.violate("the cluster's membership is not the harness's (nodes %s, all voters): %v", ids(want), err)
	}
}

// remapWiped gives every life of a slot after a wipe a node index of its
// own (from size on) for the serializable check: a node that rejoined
// with an empty data directory is another member, whose reads need not be
// newer than those of the member it replaced. It returns the remapped
// operations, the new number of nodes and the power-cut incarnations of
// the new indexes.
func remapWiped(ops []op, size int, wipes map[int][]int, cuts map[int][]int) ([]op, int, map[int][]int) {
	out := slices.Clone(ops)
	newCuts := map[int][]int{}
	for n, v := range cuts {
		newCuts[n] = v
	}
	next := size
	virt := map[[2]int]int{} // (slot, wipe number) -> node index
	for slot, incs := range wipes {
		for k := range incs {
			virt[[2]int{slot, k}] = next
			newCuts[next] = cuts[slot]
			next++
		}
	}
	for j := range out {
		o := &out[j]
		incs := wipes[o.Node]
		k := -1
		for w, inc := range incs {
			if o.Inc[0] >= inc {
				k = w
			}
		}
		if k >= 0 {
			o.Node = virt[[2]int{o.Node, k}]
		}
	}
	return out, next, newCuts
}

var flagMemberDuration = flag.Duration("chaos.member-duration", 0, "run TestChaosMembership for this long; 0 skips it (make chaos runs it for CHAOS_MEMBER_DURATION)")

// memberSnapshotEntries is the snapshot threshold of the membership
// clusters: low, so that a joining node catches up from a snapshot and
// the log is compacted under the changes.
const memberSnapshotEntries = "300"

// spareSlots is how many nodes can join beyond the initial members.
const spareSlots = 2

// startMemberCluster starts an n-node loopback cluster with spare slots,
// a low snapshot threshold, and the nemesis's state.
func startMemberCluster(t *testing.T, bin string, n int) (*procCluster, *nodeClients, scheduleOpts) {
	t.Helper()
	needProc(t)
	t.Setenv("KVNODE_SNAPSHOT_ENTRIES", memberSnapshotEntries)
	t.Setenv("KVNODE_COMPACTION_MARGIN_ENTRIES", "100")
	start := time.Now()
	c, err := startProcClusterSpares(t.Logf, bin, t.TempDir(), n, spareSlots)
	if err != nil {
		t.Fatalf("starting a %d-node cluster: %v", n, err)
	}
	t.Cleanup(c.Close)
	nc, err := dialNodes(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	t.Logf("%s ready in %v (snapshot every %s entries)", c.Name(), time.Since(start).Round(time.Millisecond), memberSnapshotEntries)
	o := opts()
	o.members, o.bin = newMemberState(), bin
	return c, nc, o
}

// TestChaosMembershipShort is the CI version of the membership nemesis
// (under a minute): a 3-node loopback cluster with two spare slots runs
// one schedule with every membership change — a join, a replacement, the
// leader removed, a learner added and promoted by hand, a follower
// removed — between kills, a pause and a partition. Targets, timings and
// the faults run during a change come from the printed seed.
func TestChaosMembershipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the chaos suite in -short mode: it runs a real kvnode cluster under membership changes for about a minute")
	}
	bin := kvnodeBinary(t, "chaos")
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	defer report(t, tot, start)
	c, nc, o := startMemberCluster(t, bin, 3)
	kinds := []faultKind{fMemberAdd, fKillLeader, fMemberReplace, fSplit, fMemberRemoveLeader, fMemberPromote, fPauseLeader, fMemberRemove}
	runSchedule(t, c, nc, newPlan(subSeed(base, 30), 3, 0, kinds, true), o, tot)
}

// TestChaosMembership is the membership nemesis of `make chaos`: random
// schedules on 3- and 5-node loopback clusters with two spare slots each
// (a fresh cluster every three schedules), half of their steps
// membership changes, the others kills, pauses and partitions, for
// -chaos.member-duration.
func TestChaosMembership(t *testing.T) {
	if *flagMemberDuration <= 0 {
		t.Skip("skipping the long membership run: set -chaos.member-duration (make chaos runs it)")
	}
	kinds := slices.Concat(memberKinds, memberKinds[:2], memberMixKinds)
	if *flagKinds != "" {
		kinds = flagKindsOrAll(t)
	}
	bin := kvnodeBinary(t, "chaos")
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	deadline := start.Add(*flagMemberDuration)
	defer report(t, tot, start)
	// A schedule takes about 8 s per step plus 20 s of warm-up, healing
	// and checks.
	budget := time.Duration(*flagSteps)*8*time.Second + 20*time.Second
	for round, i := 0, 0; time.Until(deadline) > budget; round++ {
		n := []int{3, 5}[round%2]
		ok := t.Run(fmt.Sprintf("round%d-%dnodes", round, n), func(t *testing.T) {
			c, nc, o := startMemberCluster(t, bin, n)
			for k := 0; k < 3 && time.Until(deadline) > budget; k++ {
				runSchedule(t, c, nc, newPlan(subSeed(base, 100+i), n, *flagSteps, kinds, false), o, tot)
				i++
			}
		})
		if !ok {
			break
		}
	}
}
