package driver

import (
	"fmt"

	"github.com/rafty-db/rafty/core"
)

// This file holds the loop's handling of one core.Ready under the
// asynchronous storage contract (core.Config.AsyncStorageWrites, the doc
// comment on core.Ready): the loop follows the Ready's data top to bottom
// and hands persisting to the persister (persist.go) and applying to the
// applier (apply.go), so it never waits for a disk or a state machine
// except around a snapshot install.

// handleReady follows core.Ready's asynchronous contract, step by step.
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
	if !rd.HardState.IsZero() {
		l.lastHS = rd.HardState
	}
	// 2. Persist. A snapshot (rare) is installed synchronously, once
	// everything before it is durable and applied: restoring replaces the
	// state machine.
	if rd.Snapshot != nil {
		if err := l.installReady(*rd.Snapshot); err != nil {
			return err
		}
	}
	l.trackOurs(rd.Entries)
	var hs core.HardState
	if rd.Sync || len(rd.Entries) > 0 {
		// A hard state that changed only its commit index need not be
		// written (CommitToWrite is what apply needs); a later Save
		// carries it.
		hs = rd.HardState
	}
	b := newPersistBatch(hs, rd.Entries, rd.MessagesAfterPersist, rd.Persist)
	// 3. Apply: the commit index covering the entries is written first.
	if c := rd.CommitToWrite; c != 0 {
		if err := l.writeCommit(c, b); err != nil {
			return err
		}
	}
	l.queuePersist(b)
	if rd.Snapshot != nil {
		// The snapshot's acknowledgement (MessagesAfterPersist) leaves
		// before the handler answers the sender (finishInstall below).
		if err := l.drainPersister(); err != nil {
			return err
		}
	}
	if err := l.handOut(rd.CommittedEntries, b.durable); err != nil {
		return err
	}
	// 4. Reads whose index is applied, and refusals.
	l.serveReads(rd.ReadStates)
	l.rejectProposals(rd.RejectedProposals)
	// 5. Release the Ready; the core may hand out the next at once.
	if err := l.rn.Advance(rd); err != nil {
		return err
	}
	if err := l.ackPersisted(); err != nil {
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

// writeCommit writes the commit index c before the Ready's committed
// entries go to the applier (core.Ready.CommitToWrite), so that a
// restarted node re-applies everything this one exposed to reads.
//
// With a CommitWriter it is a write of its own, on the loop, that waits
// for no WAL fsync. Without one it rides on this Ready's persist batch as
// a hard state (the newest handed out, whose commit index is at least c)
// with a Save, and the applier waits for that Save before applying the
// entries (applyBatch.durable): correct, but every commit advance then
// costs an fsync before it is applied, queued behind the WAL's.
func (l *loop) writeCommit(c uint64, b *persistBatch) error {
	if cw := l.commitWriter; cw != nil {
		if err := l.n.timeWrite(&l.n.loopWriteStart, func() error { return cw.WriteCommit(c) }); err != nil {
			return fmt.Errorf("driver: writing commit index %d: %w", c, err)
		}
		l.n.metrics.commitWrites.Inc()
		return nil
	}
	b.hs = l.lastHS
	if b.hs.Commit < c {
		return fmt.Errorf("driver: the core asks for commit index %d to be written, past its hard state %+v", c, b.hs)
	}
	b.durable = make(chan struct{})
	l.n.metrics.commitSaves.Inc()
	return nil
}

// installReady installs the snapshot a Ready carries: once every batch
// queued before it is durable and the applier has applied everything
// handed out, synchronously (install.go), after which the loop's view of
// the applied index is the snapshot's.
func (l *loop) installReady(meta core.SnapshotMeta) error {
	if err := l.drainPersister(); err != nil {
		return err
	}
	return l.withStateMachine(func(StateMachine) error {
		if err := l.installSnapshot(meta); err != nil {
			return err
		}
		// Entries up to the snapshot will never be handed out one by
		// one; the applier, idle, continues after it.
		l.handedOut = meta.Index
		l.applier.applied.Store(meta.Index)
		return nil
	})
}

// queuePersist hands b to the persister. A batch with nothing to write
// whose predecessors are all durable is done at once, on the loop.
func (l *loop) queuePersist(b *persistBatch) {
	if b.hs.IsZero() && len(b.ents) == 0 && b.durable == nil {
		if len(b.msgs) == 0 && b.ack.IsZero() {
			return
		}
		if l.persistInFlight == 0 {
			l.send(b.msgs)
			l.acks = append(l.acks, b)
			return
		}
	}
	l.persistInFlight++
	l.persistBytes += b.bytes
	l.n.metrics.persistQueueBytes.Set(float64(l.persistBytes))
	l.persister.push(b)
}

// collectPersisted takes the batches the persister finished, in order,
// into l.acks. A failed write is fatal.
func (l *loop) collectPersisted() error {
	if l.persistInFlight == 0 {
		return nil
	}
	start := len(l.acks)
	l.acks = l.persister.collect(l.acks)
	for _, b := range l.acks[start:] {
		l.persistInFlight--
		l.persistBytes -= b.bytes
		if b.err != nil {
			return b.err
		}
		l.send(b.deferred)
	}
	l.n.metrics.persistQueueBytes.Set(float64(l.persistBytes))
	return nil
}

// ackPersisted collects what the persister finished and acknowledges it to
// the core, in order. Never between Ready and Advance.
func (l *loop) ackPersisted() error {
	if err := l.collectPersisted(); err != nil {
		return err
	}
	for i, b := range l.acks {
		if !b.ack.IsZero() {
			if err := l.rn.AckPersisted(b.ack); err != nil {
				return err
			}
		}
		l.acks[i] = nil
	}
	l.acks = l.acks[:0]
	return nil
}

// drainPersister waits until every batch queued so far is durable (or the
// node stops), collecting them without acknowledging (ackPersisted does,
// after the Ready).
func (l *loop) drainPersister() error {
	for {
		if err := l.collectPersisted(); err != nil {
			return err
		}
		if l.persistInFlight == 0 {
			return nil
		}
		select {
		case <-l.persister.notify:
		case <-l.n.ctx.Done():
			return ErrStopped
		}
	}
}

// canTakeReady reports whether the loop may take a Ready: the bytes queued
// for the persister and not yet durable are under MaxPersistQueueBytes.
// At the limit the loop keeps stepping messages, ticks and proposals (into
// the core's own limits) until a write completes.
func (l *loop) canTakeReady() bool {
	return l.persistBytes < l.n.cfg.MaxPersistQueueBytes
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

// isOurs reports whether id names a proposal of this incarnation.
func (l *loop) isOurs(id proposalID) bool {
	return id.node == l.n.cfg.ID && id.epoch == l.n.epoch
}

// ourSeq reports whether data is an envelope proposed by this incarnation,
// and its sequence number.
func (l *loop) ourSeq(data []byte) (uint64, bool) {
	id, _, err := decodeEnvelope(data)
	if err != nil || !l.isOurs(id) {
		return 0, false
	}
	return id.seq, true
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

// serveReads answers the Ready's read states: at once if the state
// machine has reached the read index, else when it does
// (processApplied).
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

func (l *loop) resolveProposal(seq uint64, r proposalResult) { l.n.resolveProposal(seq, r) }

func (l *loop) resolveRead(id uint64, err error) {
	if w, ok := l.n.reads.take(id); ok {
		w.done <- err
	}
}
