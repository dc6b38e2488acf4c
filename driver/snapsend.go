package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
)

// Sending snapshots. When a follower needs entries the leader compacted,
// the core switches it to snapshot state and emits a MsgSnap (Ready.
// Messages) naming the compaction point C, the only snapshot the core
// knows of. The loop picks the snapshot with data to send
// (loop.sendSnapshot), in this order:
//
//  1. the snapshot of the follower's last failed transfer, if the log
//     still follows it (index >= C), so the transfer can resume;
//  2. the latest stored snapshot, if the log still follows it;
//  3. the snapshot being written, if any (the follower waits for it);
//  4. a new one: the state machine captured now at its applied index A
//     >= C (through withStateMachine) and written into the SnapshotStore
//     in the background (snapshotter.go); the follower waits for it.
//
// A transfer goroutine then opens it and streams it with
// Transport.SendSnapshot, with the MsgSnap's metadata replaced by the
// snapshot's (its index, term and membership), and reports the outcome
// back to the loop, which tells the core (ReportSnapshot); the follower's
// acknowledgement of an index >= C completes the core's pending snapshot.
// Every transfer ends in a report, whatever happens (success, failure,
// SnapshotTimeout without progress, a failed capture), unless the node
// stops, so a follower never stays in snapshot state: on failure the core
// probes it again at its next heartbeat response and, if it still needs
// compacted entries, asks for a new transfer, which waits
// SnapshotRetryDelay, doubled per consecutive failure to that follower,
// before it starts. At most MaxSnapshotSends transfers run at once, one
// per follower.
//
// Two rules keep a slow transfer from chasing a moving target:
//   - While a transfer runs (or waits for its snapshot to be written), the
//     log is not compacted past the snapshot being sent, so once the
//     follower has installed it, it catches up from the log instead of
//     needing a newer snapshot (under heavy writes a large transfer could
//     otherwise never finish being useful).
//   - A retry sends the same snapshot as the failed attempt if it is still
//     stored and the log still follows it, so the follower can resume the
//     interrupted data.

// sendResult reports an outgoing transfer to the loop.
type sendResult struct {
	to   uint64
	meta core.SnapshotMeta // what was (being) sent; zero if nothing opened
	err  error
}

// errSnapshotStalled fails a transfer that made no progress for
// Config.SnapshotTimeout.
var errSnapshotStalled = errors.New("driver: snapshot transfer made no progress within SnapshotTimeout")

// sendSnapshot starts a transfer for the core's MsgSnap m (see above).
// Loop goroutine.
func (l *loop) sendSnapshot(m core.Message) {
	s, to := l.snap, m.To
	if s.store == nil {
		l.log.Warn("cannot send a snapshot: Config.Snapshots is not set; the follower needs compacted entries", "to", to)
		l.rn.ReportSnapshot(to, ErrSnapshotUnsupported)
		return
	}
	if _, busy := s.sending[to]; busy {
		// A transfer from an earlier term is still winding down.
		l.rn.ReportSnapshot(to, ErrSnapshotBusy)
		return
	}
	if p, ok := s.lastSent[to]; ok && p.Index >= s.compactIndex && p.Index > 0 {
		l.startSend(m, p, true)
		return
	}
	if s.latest.Index > 0 && s.latest.Index >= s.compactIndex {
		l.startSend(m, s.latest, false)
		return
	}
	if s.writing == nil || s.writing.meta.Index < s.compactIndex {
		if !s.retryAt.IsZero() && time.Now().Before(s.retryAt) {
			l.rn.ReportSnapshot(to, errors.New("driver: producing a snapshot keeps failing; retrying later"))
			return
		}
		l.cancelLocalSnapshot() // older than the log: useless
		if err := l.startWriting(); err != nil {
			l.snapshotFailed(err)
			s.sendFailures[to]++
			l.n.metrics.snapSendFailures.Inc()
			l.n.snapStats.sendFailures.Add(1)
			l.rn.ReportSnapshot(to, err)
			return
		}
		l.log.Info("producing a snapshot for a follower", "to", to, "index", s.writing.meta.Index,
			"compacted", s.compactIndex)
	}
	s.waiting[to] = m
	s.sending[to] = s.writing.meta.Index
}

// startSend starts the transfer of the stored snapshot meta for the
// MsgSnap m on a goroutine of its own; resume says it is the retry of a
// failed transfer of the same snapshot (verified before it is sent).
func (l *loop) startSend(m core.Message, meta core.SnapshotMeta, resume bool) {
	n, s := l.n, l.snap
	to := m.To
	s.sending[to] = meta.Index
	delay := retryDelay(n.cfg.SnapshotRetryDelay, s.sendFailures[to])
	store, sem := s.store, s.sendSem
	meta.Membership = meta.Membership.Clone()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		sent, err := n.streamSnapshot(store, sem, m, meta, resume, delay)
		select {
		case n.sendDone <- sendResult{to: to, meta: sent, err: err}:
		case <-n.ctx.Done():
		}
	}()
}

// sendGuard is the highest index compaction may reach while transfers
// run: the lowest snapshot index being sent (or max uint64).
func (l *loop) sendGuard() uint64 {
	g := ^uint64(0)
	for _, idx := range l.snap.sending {
		g = min(g, idx)
	}
	return g
}

// onSendDone reports a finished transfer to the core. Loop goroutine.
func (l *loop) onSendDone(r sendResult) {
	n, s := l.n, l.snap
	delete(s.sending, r.to)
	if errors.Is(r.err, errNotNeeded) {
		// Its acknowledgement tells the core where the follower is.
		delete(s.sendFailures, r.to)
		delete(s.lastSent, r.to)
		l.rn.ReportSnapshot(r.to, nil)
		return
	}
	if r.err != nil {
		s.sendFailures[r.to]++
		if r.meta.Index > 0 {
			s.lastSent[r.to] = r.meta
		}
		n.metrics.snapSendFailures.Inc()
		n.snapStats.sendFailures.Add(1)
		l.log.Warn("snapshot transfer failed; will retry", "to", r.to, "err", r.err,
			"consecutive_failures", s.sendFailures[r.to],
			"retry_after", retryDelay(n.cfg.SnapshotRetryDelay, s.sendFailures[r.to]))
	} else {
		delete(s.sendFailures, r.to)
		delete(s.lastSent, r.to)
		n.metrics.snapSends.Inc()
		n.snapStats.sent.Add(1)
	}
	l.rn.ReportSnapshot(r.to, r.err)
}

// streamSnapshot sends the stored snapshot meta for the MsgSnap m (with
// resume, only if it is still intact, else the latest), after waiting
// delay and for a transfer slot in sem. It returns the metadata of what it
// sent.
func (n *Node) streamSnapshot(store SnapshotStore, sem chan struct{}, m core.Message, want core.SnapshotMeta, resume bool, delay time.Duration) (core.SnapshotMeta, error) {
	ctx := n.ctx
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return core.SnapshotMeta{}, ctx.Err()
		}
	}
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return core.SnapshotMeta{}, ctx.Err()
	}
	defer func() { <-sem }()

	start := time.Now()
	meta, rc, err := n.openForSending(store, want, resume)
	if err != nil {
		return core.SnapshotMeta{}, err
	}
	defer rc.Close()
	if meta.Index != want.Index {
		// The one chosen is gone or damaged; the latest intact one is
		// the best there is.
		n.log.Info("sending another snapshot than the one chosen", "to", m.To,
			"chosen", want.Index, "sending", meta.Index)
	}
	msg := m
	msg.Snapshot = &meta

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	wd := time.AfterFunc(n.cfg.SnapshotTimeout, func() { cancel(errSnapshotStalled) })
	defer wd.Stop()
	pr := &progressReader{r: rc, onRead: func() { wd.Reset(n.cfg.SnapshotTimeout) }}
	n.log.Info("sending snapshot", "to", m.To, "index", meta.Index, "term", meta.Term)
	err = n.transport.SendSnapshot(ctx, msg, pr)
	n.metrics.snapSentBytes.Add(float64(pr.n.Load()))
	if err != nil && notNeeded(err) {
		n.log.Info("the follower did not need the snapshot", "to", m.To, "index", meta.Index)
		return meta, errNotNeeded
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), errSnapshotStalled) {
			err = fmt.Errorf("%w (%v): %w", errSnapshotStalled, n.cfg.SnapshotTimeout, err)
		}
		return meta, err
	}
	n.metrics.snapSendSeconds.Observe(time.Since(start).Seconds())
	n.log.Info("snapshot sent and installed", "to", m.To, "index", meta.Index,
		"bytes", pr.n.Load(), "duration", time.Since(start).Round(time.Millisecond))
	return meta, nil
}

// openForSending opens want: with resume only if it is still stored and
// intact (read through once to verify it, as OpenLatest does); failing
// that, the latest valid snapshot.
func (n *Node) openForSending(store SnapshotStore, want core.SnapshotMeta, resume bool) (core.SnapshotMeta, io.ReadCloser, error) {
	err := error(nil)
	if resume {
		err = verifySnapshot(store, want)
	}
	if err == nil {
		meta, rc, err := store.OpenSnapshot(want.Index, want.Term)
		if err == nil {
			return meta, rc, nil
		}
		n.log.Info("cannot open the snapshot chosen", "index", want.Index, "err", err)
	} else {
		n.log.Info("not retrying the same snapshot", "index", want.Index, "err", err)
	}
	meta, rc, err := store.OpenLatest()
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("driver: opening the latest snapshot: %w", err)
	}
	return meta, rc, nil
}

// verifySnapshot reads a stored snapshot through, so its reader's checksum
// is checked before it is sent.
func verifySnapshot(store SnapshotStore, meta core.SnapshotMeta) error {
	_, rc, err := store.OpenSnapshot(meta.Index, meta.Term)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// errNotNeeded reports a transfer the follower declined because its log
// already covers the snapshot: not a failure.
var errNotNeeded = errors.New("driver: snapshot not needed")

// notNeeded reports whether err is the follower's ErrSnapshotNotNeeded.
// Transports carry a receiver's error as text, so the text is compared.
func notNeeded(err error) bool {
	return errors.Is(err, ErrSnapshotNotNeeded) || strings.Contains(err.Error(), ErrSnapshotNotNeeded.Error())
}

// progressReader counts the bytes read and reports each read, which
// resets the transfer's stall watchdog.
type progressReader struct {
	r      io.Reader
	n      atomic.Int64
	onRead func()
}

func (p *progressReader) Read(b []byte) (int, error) {
	k, err := p.r.Read(b)
	if k > 0 {
		p.n.Add(int64(k))
		p.onRead()
	}
	return k, err
}
