package driver

import (
	"fmt"
	"time"

	"github.com/rafty-db/rafty/core"
)

// The loop's side of receiving a snapshot (handler.go has the transport's
// side).

// stepInstall steps a received MsgSnap. The core either accepts it (the
// next Ready carries it: installSnapshot) or answers without it; either
// way finishInstall answers the handler after that Ready.
func (l *loop) stepInstall(req *installRequest) error {
	if err := l.rn.Step(req.msg); err != nil {
		if fatal := l.rn.Err(); fatal != nil {
			l.install = req
			l.finishInstall(ErrStopped)
			return fatal
		}
		l.n.metrics.invalidMessages.Inc()
		l.install = req
		l.finishInstall(fmt.Errorf("driver: the core refused the snapshot message: %w", err))
		return nil
	}
	l.install = req
	return nil
}

// finishInstall answers the pending install request with err, discarding
// its data if the install did not use it.
func (l *loop) finishInstall(err error) {
	req := l.install
	l.install = nil
	if req.w != nil {
		_ = req.w.Abort()
		req.w = nil
	}
	req.done <- err
}

// installSnapshot installs the snapshot the core accepted (Ready.Snapshot),
// before the rest of the Ready is persisted: commit the received file,
// replace the state machine's state with it, then make the log start after
// it (Storage.InstallSnapshot keeps the entries after it if the log agrees
// there, Raft §7), and drop the segments below. A crash between any two
// steps is completed by Start (recoverSnapshots). Errors are fatal: the
// core has moved on to the snapshot and cannot go back.
func (l *loop) installSnapshot(meta core.SnapshotMeta) error {
	n := l.n
	req := l.install
	if req == nil || req.w == nil || req.msg.Snapshot.Index != meta.Index || req.msg.Snapshot.Term != meta.Term {
		return fmt.Errorf("driver: the core installs snapshot %d/%d, whose data this node does not hold", meta.Term, meta.Index)
	}
	start := time.Now()
	w := req.w
	req.w = nil
	// A local snapshot still being written is older; stop it before the
	// state it reads is replaced.
	l.cancelLocalSnapshot()
	if err := w.Commit(); err != nil {
		_ = w.Abort()
		return fmt.Errorf("driver: committing received snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	if err := n.hook(stepAfterCommit); err != nil {
		return err
	}
	if err := restoreFrom(n.snaps, n.cfg.StateMachine, meta); err != nil {
		return err
	}
	if err := n.hook(stepAfterRestore); err != nil {
		return err
	}
	st := n.cfg.Storage
	if err := st.InstallSnapshot(meta); err != nil {
		return fmt.Errorf("driver: recording snapshot %d/%d in the log: %w", meta.Term, meta.Index, err)
	}
	if err := st.Compact(meta.Index); err != nil {
		return fmt.Errorf("driver: compacting the log to %d: %w", meta.Index, err)
	}
	if err := n.hook(stepAfterLogInstall); err != nil {
		return err
	}

	// Entries up to the snapshot will never be applied one by one.
	l.applied = meta.Index
	l.membership = meta.Membership.Clone()
	l.confVersion++
	l.confHist = append(l.confHist[:0], confPoint{index: meta.Index, m: l.membership})
	l.failConfWaitersUpTo(meta.Index)
	l.noteRemoved()
	l.installed(meta)
	for idx, seq := range l.ours {
		if idx <= meta.Index {
			delete(l.ours, idx)
			l.resolveProposal(seq, proposalResult{err: &OutcomeUnknownError{Cause: fmt.Errorf(
				"driver: the log up to index %d, where this proposal had been appended, was replaced by a snapshot", idx)}})
		}
	}
	l.ready = l.parked.popReady(l.applied, l.ready[:0])
	for _, id := range l.ready {
		l.resolveRead(id, nil)
	}
	d := time.Since(start)
	n.metrics.snapInstalls.Inc()
	n.metrics.snapInstallSeconds.Observe(d.Seconds())
	n.snapStats.installed.Add(1)
	l.log.Info("snapshot installed", "index", meta.Index, "term", meta.Term, "from", req.msg.From,
		"bytes", req.size, "duration", d.Round(time.Millisecond))
	return nil
}
