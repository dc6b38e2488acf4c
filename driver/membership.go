package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/rafty-db/rafty/core"
)

// Membership changes (issue 14), the driver's side. The core decides what
// a change means and when it takes effect (core/membership.go: a
// configuration is active once its committed EntryConfChange is handed out
// in Ready.CommittedEntries); the driver
//
//   - bootstraps a new cluster from Config.Peers (Config.bootstrapMembership)
//     and starts joiners without a membership (Config.Join);
//   - offers the change API on Node (AddMember, PromoteMember,
//     RemoveMember, ChangeMembership), run on the loop goroutine because
//     the core is single-threaded, each waiting until its change is
//     active (or fails, or its context ends);
//   - promotes caught-up AutoPromote learners when it leads (autoPromote);
//   - tracks the configuration at its applied index with
//     core.Membership.Apply, so that a snapshot and the log's compaction
//     marker carry the configuration in force at their index, never a
//     later one (snapshot.go);
//   - tells the transport who the members are (PeerSetter) whenever the
//     active configuration changes, refuses messages from removed members
//     with core.ErrRemoved, and learns from the transport that it was
//     removed itself (RemovedBy).

// AddOptions tunes Node.AddMember.
type AddOptions struct {
	// LearnerOnly adds the member as a learner that stays one (until
	// PromoteMember). Without it the member is added as a learner the
	// leader promotes automatically once it has caught up (see
	// Config.AutoPromoteMaxLag).
	LearnerOnly bool
}

// HandedOverError is returned by RemoveMember called on the leader to
// remove the leader itself: the driver handed leadership to Leader first
// (a leader removing itself would otherwise stop leading in the middle of
// its own change), and the removal must now be asked of Leader. It
// unwraps to a *core.NotLeaderError naming the new leader, so a caller
// that redirects followers' refusals handles it with the same code.
type HandedOverError struct {
	// Leader is the node that leads now.
	Leader uint64
}

// Error says where to retry.
func (e *HandedOverError) Error() string {
	return fmt.Sprintf("driver: leadership handed over to %d before removing this node; ask %d to remove it", e.Leader, e.Leader)
}

// Unwrap returns the *core.NotLeaderError naming the new leader.
func (e *HandedOverError) Unwrap() error { return &core.NotLeaderError{Leader: e.Leader} }

// MemberStatus describes one member in Status.Members.
type MemberStatus struct {
	core.MemberInfo
	// Voter: votes in the incoming (or only) configuration; Outgoing:
	// votes in the outgoing half of a joint configuration; Learner:
	// receives the log without voting.
	Voter, Outgoing, Learner bool
	// Leader: this member is the leader this node knows.
	Leader bool
	// HasProgress is set on the leader, which alone knows Match, Lag
	// (the leader's last index minus Match) and RecentActive (heard from
	// within the last election timeout).
	HasProgress  bool
	Match, Lag   uint64
	RecentActive bool
}

// maxPendingConfChanges bounds the membership calls in flight on one
// node; beyond it they fail with ErrBusy. Only one change can be in flight
// in the cluster anyway, so this only bounds callers piling up.
const maxPendingConfChanges = 64

// Membership returns the active configuration as this node knows it, and
// the index of the entry that made it active (see core.Status.ConfIndex:
// the snapshot's index for one that came with a snapshot, 0 for a joiner
// that has none yet).
func (n *Node) Membership() (core.Membership, uint64) {
	st := n.status.Load()
	return st.Membership.Clone(), st.ConfIndex
}

// ChangeMembership proposes cc on the leader and waits until it is active:
// the entry at the returned index has been applied on this node and is the
// one proposed (same term); Membership and Status show it by then. It is
// the raw form of the methods below: no idempotence, no ID allocation, no
// retry while another change is in flight.
//
// Errors: on a follower, an error wrapping *core.NotLeaderError (with the
// leader's ID, when known); the core's refusals (core.ErrConfChangeInProgress,
// core.ErrInvalidConfChange, core.ErrIDReused, core.ErrLearnerBehind,
// core.ErrQuorumUnreachable), wrapped; a *DroppedError when another entry
// was committed at the index (the change will never apply; retry); an
// error wrapping core.ErrInvalidConfChange when the entry committed but
// every replica skipped it; an *OutcomeUnknownError when ctx ended (or the
// node stopped, or a snapshot replaced the log) before the entry was seen
// applied; ErrBusy; ErrStopped.
func (n *Node) ChangeMembership(ctx context.Context, cc core.ConfChange) (uint64, error) {
	return n.changeMembership(ctx, false, func(core.Membership) (*core.ConfChange, error) { return &cc, nil })
}

// AddMember adds mi on the leader and returns the member as added, once
// the change is active. mi.ID 0 allocates the next ID (HighestID+1; IDs
// are never reused). It is idempotent and safe to retry: if a member with
// mi's Name and Incarnation exists it is returned as it is; a member with
// mi's Name and another Incarnation is an earlier life of the same node
// (its data is gone), so mi is added with Replaces set to it (promoting mi
// removes it; an earlier replacement that is still a learner is removed
// in the same change, and named in Replaces when no voter is). The
// member is added as a learner, which the leader promotes automatically
// once it has caught up unless opts.LearnerOnly. mi.AutoPromote and
// mi.Replaces are set by AddMember. While another change is in flight it
// waits and retries until ctx ends. Errors are those of ChangeMembership.
func (n *Node) AddMember(ctx context.Context, mi core.MemberInfo, opts AddOptions) (core.MemberInfo, error) {
	var added core.MemberInfo
	_, err := n.changeMembership(ctx, true, func(m core.Membership) (*core.ConfChange, error) {
		var cc core.ConfChange
		info := mi
		info.AutoPromote = !opts.LearnerOnly
		info.Replaces = core.None
		if info.Name != "" {
			var learner uint64
			for _, ex := range m.Members {
				if ex.Name != info.Name {
					continue
				}
				if ex.Incarnation == info.Incarnation && (info.ID == core.None || info.ID == ex.ID) {
					added = ex
					return nil, nil // already a member: done
				}
				if slices.Contains(m.Learners, ex.ID) {
					// An earlier life that never became a voter: it goes.
					cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfRemove, Member: core.MemberInfo{ID: ex.ID}})
					learner = ex.ID
				} else {
					info.Replaces = ex.ID
				}
			}
			if info.Replaces == core.None {
				// Replacing the learner removed in this change lets the
				// two share the name while Apply checks it; promotion
				// ignores a Replaces that is no longer a member.
				info.Replaces = learner
			}
		}
		if info.ID == core.None {
			info.ID = highestID(m) + 1
		}
		cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfAddLearner, Member: info})
		added = info
		return &cc, nil
	})
	if err != nil {
		return core.MemberInfo{}, err
	}
	return added, nil
}

// PromoteMember makes learner id a voter on the leader, once the change
// is active; if the learner Replaces a member, that member is removed in
// the same change (a joint configuration if it is a voter). Promoting a
// voter does nothing. While another change is in flight it waits and
// retries until ctx ends. Errors are those of ChangeMembership
// (core.ErrLearnerBehind while the learner lags).
func (n *Node) PromoteMember(ctx context.Context, id uint64) error {
	_, err := n.changeMembership(ctx, true, func(m core.Membership) (*core.ConfChange, error) {
		if slices.Contains(m.Voters, id) {
			return nil, nil
		}
		if !slices.Contains(m.Learners, id) {
			return nil, fmt.Errorf("driver: promote %d: %w", id, core.ErrUnknownNode)
		}
		cc := promotion(m, id)
		return &cc, nil
	})
	return err
}

// promotion is the change that promotes learner id (and removes the
// member it replaces).
func promotion(m core.Membership, id uint64) core.ConfChange {
	cc := core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfPromote, Member: core.MemberInfo{ID: id}}}}
	if mi, _ := m.Info(id); mi.Replaces != core.None && mi.Replaces != id && m.Contains(mi.Replaces) {
		cc.Ops = append(cc.Ops, core.ConfChangeOp{Type: core.ConfRemove, Member: core.MemberInfo{ID: mi.Replaces}})
	}
	return cc
}

// RemoveMember removes member id on the leader, once the change is
// active. Removing an ID that was already removed does nothing. While
// another change is in flight it waits and retries until ctx ends.
//
// Called on the leader to remove the leader itself, it first hands
// leadership to the most up-to-date voter and returns a *HandedOverError
// naming the new leader once this node sees it lead: the caller asks that
// node (a follower's refusal names the leader the same way, so one
// redirect loop serves both). The driver does not forward the removal
// itself because only a leader can propose a change and the driver has no
// request channel to another node's API; the embedder has one (kvnode's
// Cluster service). Errors are otherwise those of ChangeMembership.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	var handTo uint64
	_, err := n.changeMembership(ctx, true, func(m core.Membership) (*core.ConfChange, error) {
		if m.WasRemoved(id) {
			return nil, nil
		}
		if !m.Contains(id) {
			return nil, fmt.Errorf("driver: remove %d: %w", id, core.ErrUnknownNode)
		}
		if id == n.cfg.ID {
			handTo = n.handoverTarget(m)
			if handTo == core.None {
				return nil, fmt.Errorf("driver: remove %d, the leader: no other voter to hand leadership to: %w", id, core.ErrInvalidConfChange)
			}
			return nil, nil
		}
		return &core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfRemove, Member: core.MemberInfo{ID: id}}}}, nil
	})
	if err != nil || handTo == core.None {
		return err
	}
	n.log.Info("handing leadership over before this node is removed", "to", handTo)
	if err := n.TransferLeadership(ctx, handTo); err != nil {
		return fmt.Errorf("driver: remove %d, the leader: handing leadership to %d: %w", id, handTo, err)
	}
	return &HandedOverError{Leader: handTo}
}

// handoverTarget picks the voter (other than this node, in every half of
// the configuration it belongs to) with the highest match index among
// those the leader heard from recently, from the published status.
func (n *Node) handoverTarget(m core.Membership) uint64 {
	st := n.status.Load()
	var to, match uint64
	for _, id := range m.Voters {
		pr, ok := st.Progress[id]
		if id == n.cfg.ID || !ok || !pr.RecentActive {
			continue
		}
		if to == core.None || pr.Match > match {
			to, match = id, pr.Match
		}
	}
	return to
}

// highestID is m.HighestID, or the largest member ID if larger.
func highestID(m core.Membership) uint64 {
	h := m.HighestID
	for _, id := range m.IDs() {
		h = max(h, id)
	}
	return h
}

// confWaiter is one membership call waiting for its entry to be applied.
// The loop owns it once registered; the caller only reads done or marks
// it abandoned.
type confWaiter struct {
	index, term uint64
	done        chan error // buffered, one send
}

// changeMembership runs build on the loop, against the active
// configuration, and proposes what it returns (nil: nothing to do),
// then waits for the entry to be applied. With retry, a refusal because
// another change is in flight is retried every tick until ctx ends.
func (n *Node) changeMembership(ctx context.Context, retry bool, build func(core.Membership) (*core.ConfChange, error)) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if n.stopped() {
		return 0, stoppedError(n.fatalIfDone())
	}
	if n.pendingConf.Add(1) > maxPendingConfChanges {
		n.pendingConf.Add(-1)
		return 0, fmt.Errorf("%w: %d membership calls pending", ErrBusy, maxPendingConfChanges)
	}
	defer n.pendingConf.Add(-1)
	var tk Ticker
	defer func() {
		if tk != nil {
			tk.Stop()
		}
	}()
	for {
		// proposed is set by the loop; read here also when ctx ended
		// before its reply arrived, to tell "never proposed" from
		// "proposed, fate unknown".
		var proposed atomic.Pointer[confWaiter]
		err := n.control(ctx, ctrlRequest{reply: make(chan error, 1), smFree: true, lfn: func(l *loop) error {
			w, err := l.proposeConf(build)
			proposed.Store(w)
			return err
		}})
		w := proposed.Load()
		if err != nil && w != nil {
			// The loop proposed, but ctx ended (or the node stopped)
			// before its reply was read.
			return w.index, &OutcomeUnknownError{Cause: err}
		}
		if errors.Is(err, core.ErrConfChangeInProgress) && retry {
			if tk == nil {
				tk = n.cfg.Clock.NewTicker(n.cfg.TickInterval)
			}
			select {
			case <-tk.C():
				continue
			case <-ctx.Done():
				return 0, fmt.Errorf("%w (waited for it to end: %w)", err, ctx.Err())
			case <-n.loopDone:
				return 0, stoppedError(n.fatalIfDone())
			}
		}
		if err != nil || w == nil {
			return 0, err
		}
		select {
		case err := <-w.done:
			return w.index, err
		case <-ctx.Done():
			return w.index, &OutcomeUnknownError{Cause: ctx.Err()}
		case <-n.loopDone:
			select {
			case err := <-w.done:
				return w.index, err
			default:
				return w.index, &OutcomeUnknownError{Cause: stoppedError(n.fatalIfDone())}
			}
		}
	}
}

// proposeConf runs on the loop: build the change against the active
// configuration, propose it, and register a waiter for its entry. A nil
// waiter and error mean there was nothing to do.
func (l *loop) proposeConf(build func(core.Membership) (*core.ConfChange, error)) (*confWaiter, error) {
	if l.rn.Role() != core.RoleLeader {
		return nil, fmt.Errorf("driver: membership change: %w", &core.NotLeaderError{Leader: l.leader})
	}
	cc, err := build(l.membership)
	if err != nil || cc == nil {
		return nil, err
	}
	idx, err := l.rn.ProposeConfChange(*cc)
	if err != nil {
		return nil, fmt.Errorf("driver: membership change %v: %w", *cc, err)
	}
	l.log.Info("membership change proposed", "change", cc.String(), "index", idx, "term", l.rn.Term())
	w := &confWaiter{index: idx, term: l.rn.Term(), done: make(chan error, 1)}
	// Waiters of callers that gave up stay until their index is applied;
	// there are at most maxPendingConfChanges live ones, and each index
	// is applied (or covered by a snapshot) eventually.
	l.confWaiters = append(l.confWaiters, w)
	return w, nil
}

// resolveConfWaiters settles the waiters for entry e, just applied (with
// applyErr when the driver's Membership.Apply refused it, as every
// replica does). The answers go out after the Ready, once the status
// that Node.Membership reads shows the change (deliverConfResults).
func (l *loop) resolveConfWaiters(e *core.Entry, applyErr error) {
	if len(l.confWaiters) == 0 {
		return
	}
	l.confWaiters = slices.DeleteFunc(l.confWaiters, func(w *confWaiter) bool {
		if w.index != e.Index {
			return false
		}
		var err error
		switch {
		case e.Term != w.term || e.Type != core.EntryConfChange:
			err = &DroppedError{Reason: fmt.Errorf("%w: another entry was committed at index %d, where this membership change had been appended",
				core.ErrStepDown, e.Index)}
		case applyErr != nil:
			err = fmt.Errorf("driver: membership change at index %d committed but not applicable, skipped by every member: %w", e.Index, applyErr)
		}
		l.confResults = append(l.confResults, confResult{w: w, err: err})
		return true
	})
}

// confResult is a settled waiter's answer, held until the Ready is done.
type confResult struct {
	w   *confWaiter
	err error
}

// deliverConfResults answers the waiters settled during the Ready just
// handled, after its status was published.
func (l *loop) deliverConfResults() {
	for i, r := range l.confResults {
		r.w.done <- r.err
		l.confResults[i] = confResult{}
	}
	l.confResults = l.confResults[:0]
}

// failConfWaitersUpTo settles the waiters whose entries a snapshot
// covering index replaced: whether each entry was in it is unknown.
func (l *loop) failConfWaitersUpTo(index uint64) {
	l.confWaiters = slices.DeleteFunc(l.confWaiters, func(w *confWaiter) bool {
		if w.index > index {
			return false
		}
		l.confResults = append(l.confResults, confResult{w: w, err: &OutcomeUnknownError{Cause: fmt.Errorf(
			"driver: the log up to index %d, where this membership change had been appended, was replaced by a snapshot", w.index)}})
		return true
	})
}

// applyConfChange applies a committed EntryConfChange to the tracked
// configuration. An entry that does not decode or apply is skipped, as
// the core skips it on every replica (core.Counters.InvalidConfChanges);
// the error is returned for its waiter.
func (l *loop) applyConfChange(e *core.Entry) error {
	cc, err := core.UnmarshalConfChange(e.Data)
	if err == nil {
		var m core.Membership
		if m, err = l.membership.Apply(cc); err == nil {
			l.setMembership(e.Index, m)
			l.log.Info("membership changed", "index", e.Index, "change", cc.String(),
				"voters", m.Voters, "outgoing", m.OutgoingVoters, "learners", m.Learners)
			return nil
		}
	}
	l.log.Warn("committed membership change skipped: it does not apply", "index", e.Index, "term", e.Term, "err", err)
	return err
}

// setMembership records m as the configuration in force from index on.
func (l *loop) setMembership(index uint64, m core.Membership) {
	l.membership = m
	l.confVersion++
	l.noteConf(index, m)
	l.noteRemoved()
}

// noteRemoved logs, once, that this node is no longer a member.
func (l *loop) noteRemoved() {
	if !l.membership.WasRemoved(l.n.cfg.ID) {
		return
	}
	l.n.removedSelf.Store(true)
	if l.n.removedNoted.CompareAndSwap(false, true) {
		l.log.Warn("this node was removed from the cluster; it stays passive (its data directory is of no further use to the cluster)")
	}
}

var _ RemovedNotifier = handler{}

// RemovedBy is called by a transport when peer refused our messages
// because we were removed from the configuration (the peer's handler
// returned an error wrapping core.ErrRemoved). Status.Removed becomes
// true, and it is logged once.
func (h handler) RemovedBy(peer uint64) {
	n := h.n
	n.removedBy.CompareAndSwap(0, peer)
	if n.removedNoted.CompareAndSwap(false, true) {
		n.log.Warn("a member says this node was removed from the cluster; it stays passive", "told_by", peer)
	}
}

// refuseRemoved returns an error wrapping core.ErrRemoved if a message in
// msgs comes from a node the active configuration says was removed: such
// a node must not disrupt the cluster (its transport tells it, RemovedBy).
//
// The exception, as in the core, is the leader of the current term
// removed by the change it just committed: it finishes handing leadership
// over (MsgTimeoutNow) to a voter that may already have activated the
// change.
func (n *Node) refuseRemoved(msgs []core.Message) error {
	st := n.status.Load()
	m := &st.Membership
	for i := range msgs {
		from := msgs[i].From
		if from == st.Leader && msgs[i].Term == st.Term {
			continue
		}
		if m.WasRemoved(from) {
			n.metrics.removedSenders.Inc()
			return fmt.Errorf("driver: node %d: messages from node %d refused, it was removed from the cluster: %w", n.cfg.ID, from, core.ErrRemoved)
		}
	}
	return nil
}

// autoPromote runs on the leader's loop, at most once per tick: it
// promotes the AutoPromote learner that has stayed caught up for
// AutoPromoteStableFor (see Config.AutoPromoteMaxLag). One change at a
// time: a refusal because one is in flight is retried at the next check.
func (l *loop) autoPromote() {
	if l.role != core.RoleLeader {
		clear(l.caughtUpSince)
		return
	}
	var cands []uint64
	for _, id := range l.membership.Learners {
		if mi, _ := l.membership.Info(id); mi.AutoPromote {
			cands = append(cands, id)
		}
	}
	if len(cands) == 0 {
		clear(l.caughtUpSince)
		return
	}
	cfg := &l.n.cfg
	now := cfg.Clock.Now()
	if now.Sub(l.promoteCheckedAt) < l.interval {
		return
	}
	l.promoteCheckedAt = now
	st := l.rn.Status()
	for id := range l.caughtUpSince {
		if !slices.Contains(cands, id) {
			delete(l.caughtUpSince, id)
		}
	}
	for _, id := range cands {
		pr, ok := st.Progress[id]
		if !ok || !pr.RecentActive || pr.Match+uint64(cfg.AutoPromoteMaxLag) < st.LastIndex {
			delete(l.caughtUpSince, id)
			continue
		}
		since, ok := l.caughtUpSince[id]
		if !ok {
			l.caughtUpSince[id] = now
			continue
		}
		if now.Sub(since) < cfg.AutoPromoteStableFor {
			continue
		}
		cc := promotion(l.membership, id)
		idx, err := l.rn.ProposeConfChange(cc)
		switch {
		case err == nil:
			l.log.Info("promoting a caught-up learner", "change", cc.String(), "index", idx,
				"match", pr.Match, "last", st.LastIndex, "caught_up_for", now.Sub(since))
			delete(l.caughtUpSince, id)
			return
		case errors.Is(err, core.ErrConfChangeInProgress):
			return
		default:
			// Count the stable time again before the next attempt, so a
			// persistent refusal is logged once per AutoPromoteStableFor.
			l.caughtUpSince[id] = now
			l.log.Warn("automatic promotion refused", "learner", id, "change", cc.String(), "err", err)
		}
	}
}

// updatePeers tells a PeerSetter transport who the members are (see
// PeerSetter), when the configuration changed since the last call.
func (l *loop) updatePeers() {
	if l.peersVersion == l.confVersion && l.peersSet {
		return
	}
	l.peersVersion, l.peersSet = l.confVersion, true
	ps, ok := l.n.transport.(PeerSetter)
	if !ok {
		return
	}
	ps.SetPeers(peersFor(l.membership, l.n.cfg.Peers))
}

// peersFor lists the peers a transport should know for membership m and
// the configured hints (see PeerSetter).
func peersFor(m core.Membership, hints []Peer) []Peer {
	byAddr := false // a transport that dials addresses, not one routing by ID
	for _, h := range hints {
		byAddr = byAddr || h.Addr != ""
	}
	for _, mi := range m.Members {
		byAddr = byAddr || mi.PeerAddr != ""
	}
	var out []Peer
	for _, id := range m.IDs() {
		mi, _ := m.Info(id)
		p := Peer{ID: id, Addr: mi.PeerAddr, Name: mi.Name, ClientAddr: mi.ClientAddr}
		if i := slices.IndexFunc(hints, func(h Peer) bool { return h.ID == id }); i >= 0 && p.Addr == "" {
			p.Addr = hints[i].Addr
		}
		out = append(out, p)
	}
	for _, h := range hints {
		if !m.Contains(h.ID) && !m.WasRemoved(h.ID) {
			out = append(out, h)
		}
	}
	if byAddr {
		// A transport that dials addresses cannot use a peer without one.
		out = slices.DeleteFunc(out, func(p Peer) bool { return p.Addr == "" })
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmpID(a.ID, b.ID) })
	return out
}

// memberStatuses builds Status.Members from a core status.
func memberStatuses(st *core.Status) []MemberStatus {
	m := &st.Membership
	ids := m.IDs()
	out := make([]MemberStatus, 0, len(ids))
	for _, id := range ids {
		mi, _ := m.Info(id)
		ms := MemberStatus{
			MemberInfo: mi,
			Voter:      slices.Contains(m.Voters, id),
			Outgoing:   slices.Contains(m.OutgoingVoters, id),
			Learner:    slices.Contains(m.Learners, id),
			Leader:     id == st.Leader,
		}
		if pr, ok := st.Progress[id]; ok {
			ms.HasProgress, ms.Match, ms.RecentActive = true, pr.Match, pr.RecentActive || id == st.ID
			ms.Lag = st.LastIndex - min(pr.Match, st.LastIndex)
		}
		out = append(out, ms)
	}
	return out
}

// membershipEqual reports whether a and b are the same configuration
// (members, roles, infos and HighestID).
func membershipEqual(a, b core.Membership) bool {
	return slices.Equal(a.Voters, b.Voters) && slices.Equal(a.OutgoingVoters, b.OutgoingVoters) &&
		slices.Equal(a.Learners, b.Learners) && slices.Equal(a.Members, b.Members) && a.HighestID == b.HighestID
}

// peersDisagree describes how peers (Config.Peers) differ from the
// persisted configuration m, or returns "" if they agree: the same IDs,
// and, where both give one, the same address and name.
func peersDisagree(peers []Peer, m core.Membership) string {
	ids := peerIDs(peers)
	slices.Sort(ids)
	if !slices.Equal(ids, m.IDs()) {
		return fmt.Sprintf("peers %v, members %v", ids, m.IDs())
	}
	for _, p := range peers {
		mi, _ := m.Info(p.ID)
		if p.Addr != "" && mi.PeerAddr != "" && p.Addr != mi.PeerAddr {
			return fmt.Sprintf("node %d: address %q, persisted %q", p.ID, p.Addr, mi.PeerAddr)
		}
		if p.Name != "" && mi.Name != "" && p.Name != mi.Name {
			return fmt.Sprintf("node %d: name %q, persisted %q", p.ID, p.Name, mi.Name)
		}
	}
	return ""
}

// storageEmpty reports whether r holds nothing at all: a node that never
// ran (or crashed before its first write).
func storageEmpty(r core.LogReader) (bool, error) {
	hs, snap, err := r.InitialState()
	if err != nil {
		return false, err
	}
	last, err := r.LastIndex()
	if err != nil {
		return false, err
	}
	return hs.IsZero() && snap.IsEmpty() && last == 0, nil
}

// checkPeers compares Config.Peers with the configuration restored from
// storage, which is the one used, and logs one warning if they disagree.
// Start does it with the configuration at the persisted commit index
// (core.MembershipAt); if that could not be read, the loop does it once it
// has applied everything that was committed at start (peersCheckAt): the
// configuration at a lower applied index (a state machine that starts
// empty replays the log) is not the persisted one.
func (l *loop) checkPeers() {
	if l.peersChecked || l.applied < l.peersCheckAt {
		return
	}
	l.peersChecked = true
	l.n.warnPeers(l.membership, l.applied)
}

// warnPeers logs the warning of checkPeers if Config.Peers disagree with
// m, the persisted configuration at index.
func (n *Node) warnPeers(m core.Membership, index uint64) {
	if m.IsEmpty() {
		return
	}
	if diff := peersDisagree(n.cfg.Peers, m); diff != "" {
		n.log.Warn("Config.Peers (flags) disagree with the persisted membership; using the persisted one: flags only bootstrap a new cluster, change members with the membership API",
			"difference", diff, "voters", m.Voters, "outgoing", m.OutgoingVoters, "learners", m.Learners, "at_index", index)
	}
}
