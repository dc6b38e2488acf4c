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
// Messages). The loop hands it to a background goroutine
// (loop.sendSnapshot), which opens the latest snapshot file and streams it
// with Transport.SendSnapshot, then reports the outcome back to the loop,
// which tells the core (ReportSnapshot). Every transfer ends in a report,
// whatever happens (success, failure, SnapshotTimeout without progress),
// unless the node stops, so a follower never stays in snapshot state: on
// failure the core probes it again at its next heartbeat response and, if
// it still needs compacted entries, asks for a new transfer, which waits
// SnapshotRetryDelay, doubled per consecutive failure to that follower,
// before it starts. At most MaxSnapshotSends transfers run at once, one
// per follower.
//
// Two rules keep a slow transfer from chasing a moving target:
//   - While a transfer runs, the log is not compacted past the snapshot
//     being sent, so once the follower has installed it, it catches up from
//     the log instead of needing a newer snapshot (under heavy writes a
//     large transfer could otherwise never finish being useful).
//   - A retry sends the same snapshot as the failed attempt if it is still
//     stored and the log still follows it, so the follower can resume the
//     interrupted data; otherwise the latest.

// sendResult reports an outgoing transfer to the loop.
type sendResult struct {
	to   uint64
	meta core.SnapshotMeta // what was (being) sent; zero if nothing opened
	err  error
}

// errSnapshotStalled fails a transfer that made no progress for
// Config.SnapshotTimeout.
var errSnapshotStalled = errors.New("driver: snapshot transfer made no progress within SnapshotTimeout")

// sendSnapshot starts a transfer for the core's MsgSnap m. Loop goroutine.
func (l *loop) sendSnapshot(m core.Message) {
	n := l.n
	to := m.To
	if n.snaps == nil {
		l.log.Warn("cannot send a snapshot: Config.Snapshots is not set; the follower needs compacted entries", "to", to)
		l.rn.ReportSnapshot(to, ErrSnapshotUnsupported)
		return
	}
	if _, busy := l.sending[to]; busy {
		// A transfer from an earlier term is still winding down.
		l.rn.ReportSnapshot(to, ErrSnapshotBusy)
		return
	}
	var prev *core.SnapshotMeta
	guard := m.Snapshot.Index
	if p, ok := l.lastSent[to]; ok && p.Index >= l.compactIndex && p.Index > 0 {
		prev = &p
		guard = min(guard, p.Index)
	}
	l.sending[to] = guard
	delay := retryDelay(n.cfg.SnapshotRetryDelay, l.sendFailures[to])
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		meta, err := n.streamSnapshot(m, prev, delay)
		select {
		case n.sendDone <- sendResult{to: to, meta: meta, err: err}:
		case <-n.ctx.Done():
		}
	}()
}

// sendGuard is the highest index compaction may reach while transfers
// run: the lowest snapshot index being sent (or max uint64).
func (l *loop) sendGuard() uint64 {
	g := ^uint64(0)
	for _, idx := range l.sending {
		g = min(g, idx)
	}
	return g
}

// onSendDone reports a finished transfer to the core. Loop goroutine.
func (l *loop) onSendDone(r sendResult) {
	n := l.n
	delete(l.sending, r.to)
	if errors.Is(r.err, errNotNeeded) {
		// Its acknowledgement tells the core where the follower is.
		delete(l.sendFailures, r.to)
		delete(l.lastSent, r.to)
		l.rn.ReportSnapshot(r.to, nil)
		return
	}
	if r.err != nil {
		l.sendFailures[r.to]++
		if r.meta.Index > 0 {
			l.lastSent[r.to] = r.meta
		}
		n.metrics.snapSendFailures.Inc()
		n.snapStats.sendFailures.Add(1)
		l.log.Warn("snapshot transfer failed; will retry", "to", r.to, "err", r.err,
			"consecutive_failures", l.sendFailures[r.to],
			"retry_after", retryDelay(n.cfg.SnapshotRetryDelay, l.sendFailures[r.to]))
	} else {
		delete(l.sendFailures, r.to)
		delete(l.lastSent, r.to)
		n.metrics.snapSends.Inc()
		n.snapStats.sent.Add(1)
	}
	l.rn.ReportSnapshot(r.to, r.err)
}

// streamSnapshot sends a snapshot for the MsgSnap m (prev, if it is still
// intact, else the latest), after waiting delay and for a transfer slot.
// It returns the metadata of what it sent.
func (n *Node) streamSnapshot(m core.Message, prev *core.SnapshotMeta, delay time.Duration) (core.SnapshotMeta, error) {
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
	case n.sendSem <- struct{}{}:
	case <-ctx.Done():
		return core.SnapshotMeta{}, ctx.Err()
	}
	defer func() { <-n.sendSem }()

	start := time.Now()
	meta, rc, err := n.openForSending(prev)
	if err != nil {
		return core.SnapshotMeta{}, err
	}
	defer rc.Close()
	if meta.Index != m.Snapshot.Index {
		// A newer one is as good (the follower then acknowledges more);
		// an older one is the retry of an interrupted transfer, or the
		// newest is damaged.
		n.log.Info("sending another snapshot than the core named", "to", m.To,
			"named", m.Snapshot.Index, "sending", meta.Index)
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

// openForSending opens prev if it is still stored and intact (read
// through once to verify it, as OpenLatest does), else the latest valid
// snapshot.
func (n *Node) openForSending(prev *core.SnapshotMeta) (core.SnapshotMeta, io.ReadCloser, error) {
	if prev != nil {
		if err := n.verifySnapshot(*prev); err == nil {
			meta, rc, err := n.snaps.OpenSnapshot(prev.Index, prev.Term)
			if err == nil {
				return meta, rc, nil
			}
		} else {
			n.log.Info("not retrying the same snapshot", "index", prev.Index, "err", err)
		}
	}
	meta, rc, err := n.snaps.OpenLatest()
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("driver: opening the latest snapshot: %w", err)
	}
	return meta, rc, nil
}

// verifySnapshot reads a stored snapshot through, so its reader's checksum
// is checked before it is sent.
func (n *Node) verifySnapshot(meta core.SnapshotMeta) error {
	_, rc, err := n.snaps.OpenSnapshot(meta.Index, meta.Term)
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
