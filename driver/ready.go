package driver

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/rafty-db/rafty/core"
)

// This file holds the loop's handling of one core.Ready: persisting,
// sending, applying, and resolving the waiters the Ready answers.

// handleReady follows core.Ready's contract, step by step.
func (l *loop) handleReady() error {
	rd, err := l.rn.Ready()
	if err != nil {
		return err
	}
	if rd.SoftState != nil {
		l.onSoftState(*rd.SoftState)
	}
	// 1. Messages that depend on nothing in this Ready: the leader's
	// appends go out while it writes the same entries (thesis §10.2.1).
	l.send(rd.Messages)
	// 1b. Committed entries that were durable before this Ready need
	// not wait for its fsync (see applyEarly).
	committed, err := l.applyEarly(&rd)
	if err != nil {
		return err
	}
	// 2. Make the snapshot, hard state and entries durable.
	if err := l.persist(&rd, committed); err != nil {
		return err
	}
	// 3. Votes and acknowledgements of what step 2 wrote.
	l.send(rd.MessagesAfterPersist)
	// 4. Apply, then answer reads and refusals.
	if err := l.apply(committed); err != nil {
		return err
	}
	l.serveReads(rd.ReadStates)
	l.rejectProposals(rd.RejectedProposals)
	// 5. Acknowledge; on the leader its own write now counts toward
	// commitment.
	if err := l.rn.Advance(rd); err != nil {
		return err
	}
	l.n.publishStatus(l.rn.Status())
	l.deliverConfResults()
	if l.install != nil {
		// The received snapshot was installed (rd.Snapshot) or found not
		// needed; either way its acknowledgement has left.
		l.finishInstall(nil)
	}
	return nil
}

func (l *loop) onSoftState(ss core.SoftState) {
	if ss.Role != l.role {
		l.log.Info("role changed", "from", l.role, "to", ss.Role, "leader", ss.Leader)
	}
	l.role = ss.Role
	if ss.Leader == l.leader {
		return
	}
	old := l.leader
	l.leader = ss.Leader
	l.n.setLeader(ss.Leader)
	l.log.Info("leader changed", "from", old, "to", ss.Leader)
	// A read forwarded to the old leader may never be answered; fail it so
	// the caller retries against the new one. (Reads the core itself
	// queued as leader are failed by the core with ErrStepDown.) Late
	// answers find no waiter and are ignored.
	for id := range l.readsSent {
		l.resolveRead(id, fmt.Errorf("driver: read: leader changed from %d to %d before the read was confirmed: %w",
			old, ss.Leader, core.ErrStepDown))
	}
	clear(l.readsSent)
}

// send hands msgs to the transport, except MsgSnap: a snapshot travels
// with its data over a stream of its own (snapsend.go).
func (l *loop) send(msgs []core.Message) {
	if len(msgs) == 0 {
		return
	}
	hasSnap := false
	for i := range msgs {
		if msgs[i].Type == core.MsgSnap {
			hasSnap = true
			break
		}
	}
	if hasSnap {
		out := make([]core.Message, 0, len(msgs))
		for _, m := range msgs {
			if m.Type == core.MsgSnap {
				l.sendSnapshot(m)
				continue
			}
			out = append(out, m)
		}
		msgs = out
	}
	if len(msgs) > 0 {
		l.n.transport.Send(msgs)
	}
}

// applyEarly applies, before the Ready is persisted, the committed entries
// that were already durable in the local log before this Ready (those
// below its first new entry), and returns the committed entries left for
// after the Save. Under load the leader's Ready typically carries the next
// batch of entries together with the previous batch's commitment; without
// this, every client waited for the next batch's fsync as well as its own
// — two fsyncs per write instead of one.
//
// Applying needs the commit index written first (persist's invariant),
// so applyEarly writes it with UnsyncedCommitSaver — capped at the last
// early entry, which is durable, so a crash never leaves a commit index
// past the log. It applies nothing early when the Storage lacks the
// extension (the write would cost an fsync of its own), when the Ready
// installs a snapshot (the state machine is about to be replaced), or
// when it changes term or vote (that hard state must be synced; entries
// then wait for it as before).
func (l *loop) applyEarly(rd *core.Ready) ([]core.Entry, error) {
	ents := rd.CommittedEntries
	if len(ents) == 0 || rd.Snapshot != nil {
		return ents, nil
	}
	if hs := rd.HardState; !hs.IsZero() && (hs.Term != l.lastHS.Term || hs.Vote != l.lastHS.Vote) {
		return ents, nil
	}
	if l.commitSaver == nil {
		return ents, nil
	}
	k := len(ents)
	if len(rd.Entries) > 0 {
		first := rd.Entries[0].Index
		k = 0
		for k < len(ents) && ents[k].Index < first {
			k++
		}
	}
	if k == 0 {
		return ents, nil
	}
	early := ents[:k]
	if last := early[k-1].Index; last > l.writtenCommit {
		if err := l.writeCommitUnsynced(core.HardState{Term: l.lastHS.Term, Vote: l.lastHS.Vote, Commit: last}); err != nil {
			return nil, err
		}
	}
	if err := l.apply(early); err != nil {
		return nil, err
	}
	l.n.metrics.appliedEarly.Add(float64(k))
	return ents[k:], nil
}

// writeCommitUnsynced writes hs, which differs from the stored hard state
// only in its commit index, through the Storage's UnsyncedCommitSaver. It
// is counted apart from Save: a pwrite in the save-duration histogram
// would hide the fsync times operators read it for.
func (l *loop) writeCommitUnsynced(hs core.HardState) error {
	if err := l.timeWrite(func() error { return l.commitSaver.SaveCommitUnsynced(hs) }); err != nil {
		return fmt.Errorf("driver: writing commit index %d: %w", hs.Commit, err)
	}
	l.writtenCommit = hs.Commit
	l.n.metrics.commitsUnsynced.Inc()
	return nil
}

// persist performs step 2 of the Ready contract.
//
// A Ready whose only durable change is the commit index does not need an
// fsync for Raft's safety (core.Ready.MustSync), so the loop defers it to
// the next Save (and shutdown) — unless the Ready's committed entries go
// past the commit index written so far. The state machine applies without
// fsync (the Raft log is its WAL), and a restarted node re-applies only up
// to the commit index it finds in storage; if entries already visible to
// reads lay beyond it, a serializable read after kill -9 would go back in
// time (found by the chaos suite). So such a commit index is written
// first: without an fsync if the Storage is an UnsyncedCommitSaver (see
// there for what a power loss does), else by a full Save.
//
// Invariant: every applied index is at most writtenCommit.
func (l *loop) persist(rd *core.Ready, committed []core.Entry) error {
	st := l.n.cfg.Storage
	if rd.Snapshot != nil {
		if err := l.installSnapshot(*rd.Snapshot); err != nil {
			return err
		}
	}
	l.trackOurs(rd.Entries)
	mustSync := rd.MustSync(l.lastHS)
	hs := rd.HardState
	if !hs.IsZero() {
		l.lastHS = hs
		l.unsavedHS = true
	}
	needCommit := false
	if n := len(committed); n > 0 && committed[n-1].Index > l.writtenCommit {
		needCommit = true
	}
	if !mustSync && needCommit && l.unsavedHS && l.commitSaver != nil {
		// The next Save's fsync (or Close's) covers it.
		l.unsavedHS = false
		return l.writeCommitUnsynced(l.lastHS)
	}
	if !mustSync && !needCommit {
		return nil
	}
	if hs.IsZero() && l.unsavedHS {
		hs = l.lastHS
	}
	start := time.Now()
	if err := l.timeWrite(func() error { return st.Save(hs, rd.Entries) }); err != nil {
		return fmt.Errorf("driver: saving hard state and %d entries: %w", len(rd.Entries), err)
	}
	l.unsavedHS = false
	if !hs.IsZero() {
		l.writtenCommit = hs.Commit
	}
	l.n.metrics.saveSeconds.Observe(time.Since(start).Seconds())
	l.n.metrics.saveEntries.Observe(float64(len(rd.Entries)))
	return nil
}

// ourSeq reports whether data is an envelope proposed by this incarnation,
// and its sequence number. It only compares the header; data that fails
// it is not ours whatever else it is.
func (l *loop) ourSeq(data []byte) (uint64, bool) {
	if len(data) < EnvelopeOverhead || data[0] != envelopeVersion ||
		binary.BigEndian.Uint64(data[1:9]) != l.n.cfg.ID ||
		binary.BigEndian.Uint64(data[9:17]) != l.n.epoch {
		return 0, false
	}
	return binary.BigEndian.Uint64(data[17:25]), true
}

// trackOurs records where our proposals landed in the local log. A later
// entry overwriting one of ours locally does not clear the record: ours
// could still be re-replicated and committed at the same index by a later
// leader (Raft paper Figure 8), so only a committed entry settles it.
func (l *loop) trackOurs(ents []core.Entry) {
	for i := range ents {
		if seq, ok := l.ourSeq(ents[i].Data); ok {
			l.ours[ents[i].Index] = seq
		}
	}
}

// apply hands committed commands to the state machine in index order and
// resolves the waiters they belong to.
func (l *loop) apply(ents []core.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	l.recordApplied(ents)
	cmds, owners := l.cmds[:0], l.owners[:0]
	defer func() {
		clear(cmds) // do not pin entry data until the next apply
		l.cmds, l.owners = cmds[:0], owners[:0]
	}()
	for i := range ents {
		e := &ents[i]
		if e.Index != l.applied+1 {
			return fmt.Errorf("driver: committed entry %d does not follow applied index %d", e.Index, l.applied)
		}
		l.applied = e.Index
		var owner uint64
		switch {
		case e.Type == core.EntryConfChange:
			// Not the state machine's business: its index is applied like
			// a no-op's. The driver tracks the configuration (membership.go).
			l.resolveConfWaiters(e, l.applyConfChange(e))
		case e.Type != core.EntryNormal:
			l.log.Warn("skipping committed entry of unsupported type", "index", e.Index, "type", e.Type)
		case len(e.Data) == 0:
			// A leader's no-op (paper §5.4.2): nothing to apply.
		default:
			id, cmd, err := decodeEnvelope(e.Data)
			if err != nil {
				// Deterministic on every replica, and again after a
				// restart: a failed no-op, never a stop (envelope.go).
				// No waiter is resolved by it (none can be found), and
				// one of ours appended at this index fails below.
				l.n.metrics.undecodableEntries.Inc()
				l.log.Warn("committed entry does not decode; applied as a failed no-op",
					"index", e.Index, "term", e.Term, "bytes", len(e.Data), "err", err)
				break
			}
			if id.node == l.n.cfg.ID && id.epoch == l.n.epoch {
				owner = id.seq
			}
			cmds = append(cmds, Command{Index: e.Index, Data: cmd})
			owners = append(owners, owner)
		}
		if e.Type != core.EntryConfChange {
			l.resolveConfWaiters(e, nil)
		}
		if seq, ok := l.ours[e.Index]; ok {
			delete(l.ours, e.Index)
			if seq != owner {
				l.resolveProposal(seq, proposalResult{err: &DroppedError{Reason: fmt.Errorf(
					"%w: another entry was committed at index %d, where this proposal had been appended",
					core.ErrStepDown, e.Index)}})
			}
		}
	}
	if len(cmds) > 0 {
		start := time.Now()
		results, err := l.n.cfg.StateMachine.Apply(cmds)
		l.n.metrics.applySeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			return fmt.Errorf("driver: state machine Apply (indexes %d..%d): %w", cmds[0].Index, cmds[len(cmds)-1].Index, err)
		}
		if len(results) != len(cmds) {
			return fmt.Errorf("driver: state machine Apply returned %d results for %d commands", len(results), len(cmds))
		}
		for i, owner := range owners {
			if owner != 0 {
				l.resolveProposal(owner, proposalResult{value: results[i]})
			}
		}
	}
	l.ready = l.parked.popReady(l.applied, l.ready[:0])
	for _, id := range l.ready {
		l.resolveRead(id, nil)
	}
	return nil
}

// serveReads answers the Ready's read states: at once if the state
// machine has reached the read index, else when it does (apply).
func (l *loop) serveReads(rss []core.ReadState) {
	for _, rs := range rss {
		delete(l.readsSent, rs.RequestID)
		switch {
		case rs.Err != nil:
			l.resolveRead(rs.RequestID, fmt.Errorf("driver: read: %w", rs.Err))
		case rs.Index <= l.applied:
			l.resolveRead(rs.RequestID, nil)
		case l.n.reads.has(rs.RequestID):
			l.parked.push(readAtIndex{index: rs.Index, id: rs.RequestID})
		}
	}
}

// rejectProposals fails our forwarded proposals the leader refused.
func (l *loop) rejectProposals(rps []core.RejectedProposal) {
	for _, rp := range rps {
		for _, data := range rp.Data {
			if seq, ok := l.ourSeq(data); ok {
				l.resolveProposal(seq, proposalResult{err: &DroppedError{Reason: rp.Err}})
			}
		}
	}
}

func (l *loop) resolveProposal(seq uint64, r proposalResult) {
	if w, ok := l.n.props.take(seq); ok {
		w.done <- r
	}
}

func (l *loop) resolveRead(id uint64, err error) {
	if w, ok := l.n.reads.take(id); ok {
		w.done <- err
	}
}
