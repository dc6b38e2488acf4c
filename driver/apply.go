package driver

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
)

// The applier: step 3 of core.Ready's asynchronous contract, off the loop.
//
// The loop hands each Ready's committed entries to the applier as one
// applyBatch (handOut), having done on the loop everything that must
// happen at hand-out time: decoding each entry's envelope once (the one
// parser, decodeEnvelope), telling which commands this incarnation's
// callers wait for, failing our proposals another entry displaced (the
// ours map), and applying membership entries to the tracked configuration
// and settling their waiters (the core activates a configuration when it
// hands its entry out, so the driver's copy follows it there; membership
// entries never reach the StateMachine). The applier calls
// StateMachine.Apply, batch after batch in index order, resolves the
// waiting Propose calls with the results itself (the registry is safe for
// concurrent use), publishes the applied index (applier.applied) and
// wakes the loop (coalesced), which then calls core.Node.AckApplied,
// serves the reads parked on that index and publishes the status.
//
// A slow Apply thus delays neither heartbeats nor appends: the loop keeps
// running, and the core stops handing out committed entries once
// Config.MaxApplyQueueBytes of them (core.Config.MaxApplyingBytes) are
// handed out and not yet applied.
//
// Ordering: an entry reaches the applier only once the core says so,
// i.e. after it is durable locally (CommittedEntries never pass the
// acknowledged persisted index) and after the commit index covering it
// was written (Ready.CommitToWrite: written by the loop through
// CommitWriter before the hand-out, or, without it, by a Save the applier
// waits for: applyBatch.durable).

// applyBatch is one Ready's committed entries, prepared by the loop.
type applyBatch struct {
	cmds []Command
	// owners[i] is the sequence number of our Propose call waiting for
	// cmds[i], 0 if none.
	owners []uint64
	// last is the index applied once the batch is done (no-ops and
	// membership entries included).
	last uint64
	// bytes is the batch's share of the apply queue gauge.
	bytes int64
	// durable, when non-nil, is closed once the Save carrying the commit
	// index to write before applying is durable (no CommitWriter).
	durable chan struct{}
}

// applier owns the goroutine that applies committed commands.
type applier struct {
	n *Node

	mu    sync.Mutex
	queue []*applyBatch
	err   error // the state machine failed: nothing more is applied

	wake chan struct{} // cap 1: the queue is not empty
	// notify (cap 1) tells the loop that applied moved or err is set.
	notify chan struct{}
	// applied is the index of the last entry applied (batch.last).
	applied atomic.Uint64
}

func newApplier(n *Node, applied uint64) *applier {
	a := &applier{n: n, wake: make(chan struct{}, 1), notify: make(chan struct{}, 1)}
	a.applied.Store(applied)
	return a
}

// push queues b. Loop goroutine only.
func (a *applier) push(b *applyBatch) {
	a.mu.Lock()
	a.queue = append(a.queue, b)
	a.mu.Unlock()
	a.n.metrics.applyQueueBytes.Add(float64(b.bytes))
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// failure returns the state machine's error, once it failed.
func (a *applier) failure() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *applier) signal() {
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// run applies batches until the node stops or the state machine fails.
// Batches still queued when the node stops are not applied: their
// entries are committed and durable, so the next Start re-applies them,
// and their waiters fail with the node (shutdown).
func (a *applier) run() {
	n := a.n
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-a.wake:
		}
		for {
			a.mu.Lock()
			if len(a.queue) == 0 || n.ctx.Err() != nil {
				a.mu.Unlock()
				break
			}
			b := a.queue[0]
			a.queue[0] = nil
			a.queue = a.queue[1:]
			a.mu.Unlock()
			if err := a.apply(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
				a.signal()
				return
			}
		}
	}
}

// apply applies one batch and resolves its waiters.
func (a *applier) apply(b *applyBatch) error {
	n := a.n
	if b.durable != nil {
		select {
		case <-b.durable:
		case <-n.ctx.Done():
			return nil // not applied; run sees the stop
		}
	}
	if len(b.cmds) > 0 {
		start := time.Now()
		results, err := n.cfg.StateMachine.Apply(b.cmds)
		n.metrics.applySeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			return fmt.Errorf("driver: state machine Apply (indexes %d..%d): %w", b.cmds[0].Index, b.cmds[len(b.cmds)-1].Index, err)
		}
		if len(results) != len(b.cmds) {
			return fmt.Errorf("driver: state machine Apply returned %d results for %d commands", len(results), len(b.cmds))
		}
		for i, owner := range b.owners {
			if owner != 0 {
				n.resolveProposal(owner, proposalResult{value: results[i]})
			}
		}
	}
	a.applied.Store(b.last)
	n.metrics.applyQueueBytes.Sub(float64(b.bytes))
	a.signal()
	return nil
}

// handOut prepares a Ready's committed entries for the applier (see
// above) and queues them. durable is the Save to wait for before
// applying, nil if none.
func (l *loop) handOut(ents []core.Entry, durable chan struct{}) error {
	if len(ents) == 0 {
		return nil
	}
	// Snapshot policy and byte margin (snapshot.go) count entries when
	// they are handed out: they are applied in order from then on.
	l.recordApplied(ents)
	b := &applyBatch{durable: durable}
	for i := range ents {
		e := &ents[i]
		if e.Index != l.handedOut+1 {
			return fmt.Errorf("driver: committed entry %d does not follow the last handed-out index %d", e.Index, l.handedOut)
		}
		l.handedOut = e.Index
		b.bytes += int64(e.Size())
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
			if l.isOurs(id) {
				owner = id.seq
			}
			b.cmds = append(b.cmds, Command{Index: e.Index, Data: cmd})
			b.owners = append(b.owners, owner)
		}
		if e.Type != core.EntryConfChange {
			l.resolveConfWaiters(e, nil)
		}
		if seq, ok := l.ours[e.Index]; ok {
			delete(l.ours, e.Index)
			if seq != owner {
				l.n.resolveProposal(seq, proposalResult{err: &DroppedError{Reason: fmt.Errorf(
					"%w: another entry was committed at index %d, where this proposal had been appended",
					core.ErrStepDown, e.Index)}})
			}
		}
	}
	b.last = l.handedOut
	l.applier.push(b)
	return nil
}

// processApplied takes in the applier's progress: AckApplied, the reads
// parked on the indexes now applied, Start's wait for re-applying, and a
// fresh status. Loop goroutine only, never between Ready and Advance.
// A returned error (the state machine failed) is fatal.
func (l *loop) processApplied() error {
	if err := l.applier.failure(); err != nil {
		return err
	}
	if a := l.applier.applied.Load(); a > l.applied {
		l.applied = a
	}
	if l.applied <= l.ackedApplied {
		return nil
	}
	l.ackedApplied = l.applied
	if err := l.rn.AckApplied(l.applied); err != nil {
		return err
	}
	l.serveParked()
	l.noteReapplied()
	// The snapshot policy looks at l.applied on every iteration
	// (maybeSnapshot).
	l.n.publishStatus(l.rn.Status())
	return nil
}

// serveParked answers the reads whose read index is now applied.
func (l *loop) serveParked() {
	l.ready = l.parked.popReady(l.applied, l.ready[:0])
	for _, id := range l.ready {
		l.resolveRead(id, nil)
	}
}

// noteReapplied releases Start once everything committed at start has
// been applied (see Start).
func (l *loop) noteReapplied() {
	if l.reapplyAt != 0 && l.applied >= l.reapplyAt {
		l.reapplyAt = 0
		close(l.n.reapplied)
	}
}

// drainApplier waits until the applier has applied everything handed out
// (or failed, or the node stops), and moves l.applied there. It calls
// nothing on the core, so it may run between Ready and Advance.
func (l *loop) drainApplier() error {
	for {
		if err := l.applier.failure(); err != nil {
			return err
		}
		if a := l.applier.applied.Load(); a >= l.handedOut {
			l.applied = max(l.applied, a)
			// The loop's select may have missed a notification taken
			// here: have it look (processApplied acknowledges).
			l.applier.signal()
			return nil
		}
		select {
		case <-l.applier.notify:
		case <-l.n.ctx.Done():
			return ErrStopped
		}
	}
}

// withStateMachine runs fn with exclusive use of the state machine,
// ordered after every committed entry handed to the applier so far: for
// capturing a snapshot (StateMachine.Snapshot) and restoring one
// (Restore), which must see the state at a known applied index and must
// not run concurrently with Apply. Loop goroutine only; it blocks the
// loop until the applier has drained, so callers keep fn short except
// for installs, which are rare.
//
// The applier stays idle while fn runs: only the loop hands it work.
func (l *loop) withStateMachine(fn func(sm StateMachine) error) error {
	if err := l.drainApplier(); err != nil {
		return err
	}
	return fn(l.n.cfg.StateMachine)
}

// resolveProposal answers our Propose call seq with r, unless its caller
// already gave up. Safe from any goroutine: the registry decides who
// resolves a waiter (waiters.go).
func (n *Node) resolveProposal(seq uint64, r proposalResult) {
	if w, ok := n.props.take(seq); ok {
		w.done <- r
	}
}
