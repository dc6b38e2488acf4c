package driver

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/rafty-db/rafty/core"
)

// handler is the node's MessageHandler: the transport's way in. Every
// method returns quickly and never blocks on the loop: a transport
// receive goroutine must not stall because the node is busy fsyncing.
type handler struct{ n *Node }

var _ MessageHandler = handler{}

// HandleMessages queues msgs for the loop. The node takes ownership of the
// slice. When the inbox is full the batch is dropped and ErrInboxFull
// returned: Raft tolerates loss (it retransmits), and back-pressure that
// blocked the transport would also block heartbeats behind a burst of
// appends.
//
// MsgSnap is filtered out: a snapshot's metadata must only reach the core
// together with its data, through HandleSnapshot, or the core would
// believe in state the state machine does not have.
func (h handler) HandleMessages(_ context.Context, msgs []core.Message) error {
	n := h.n
	select {
	case <-n.loopDone:
		return ErrStopped
	default:
	}
	msgs = withoutSnapshots(msgs)
	if len(msgs) == 0 {
		return nil
	}
	if err := n.refuseRemoved(msgs); err != nil {
		return err
	}
	select {
	case n.inbox <- msgs:
		return nil
	default:
		n.metrics.inboxDropped.Inc()
		n.refuseDropped(msgs)
		return ErrInboxFull
	}
}

// refuseDropped answers the forwarded proposals in a batch dropped with
// the inbox full, so that their proposers fail them at once with
// ErrLeaderBusy instead of waiting for their contexts: a proposal, unlike
// the other messages, is not retransmitted by Raft. None of them reached
// the core, so "dropped" is exact. The answer goes straight to the
// transport (Send may be called from any goroutine), as the loop is
// evidently busy.
func (n *Node) refuseDropped(msgs []core.Message) {
	if !n.transportSet.Load() {
		return
	}
	var out []core.Message
	term := n.status.Load().Term
	for i := range msgs {
		m := &msgs[i]
		if m.Type != core.MsgProp || len(m.Entries) == 0 {
			continue
		}
		n.metrics.forwardedDropped.Add(float64(len(m.Entries)))
		out = append(out, core.Message{Type: core.MsgPropResp, From: n.cfg.ID, To: m.From, Term: term,
			Reject: true, Context: rejectLeaderBusy, Entries: m.Entries})
	}
	if len(out) > 0 {
		n.transport.Send(out)
	}
}

// withoutSnapshots returns msgs minus any MsgSnap, copying only when one
// is present.
func withoutSnapshots(msgs []core.Message) []core.Message {
	for i := range msgs {
		if msgs[i].Type != core.MsgSnap {
			continue
		}
		out := append([]core.Message(nil), msgs[:i]...)
		for _, m := range msgs[i+1:] {
			if m.Type != core.MsgSnap {
				out = append(out, m)
			}
		}
		return out
	}
	return msgs
}

// HandleSnapshot receives a snapshot from the leader and installs it
// (Raft paper §7). On the transport's goroutine:
//
//  1. If the snapshot ends at or below this node's commit index, there is
//     nothing to install: the MsgSnap goes to the core, which acknowledges
//     its commit index, and ErrSnapshotNotNeeded is returned without
//     reading the data.
//  2. Otherwise, one transfer at a time, the data is written to a
//     temporary snapshot file (SnapshotStore.CreateSnapshot), resuming a
//     transfer of the same snapshot from the same sender that was
//     interrupted (if data is a SnapshotResumer), read to io.EOF (so the
//     transport has verified the sender's checksum) and synced.
//  3. The loop Steps the MsgSnap. If the core accepts it, the next Ready
//     carries it as Ready.Snapshot and the loop installs it before
//     anything else in that Ready (installSnapshot): it commits the file,
//     restores the state machine from it, records it in the log
//     (Storage.InstallSnapshot, then Compact), and only then sends the
//     acknowledgement. If the core does not need it, the file is
//     discarded.
//  4. It returns nil once that Ready is handled, so the sender learns the
//     outcome.
//
// A transfer interrupted in step 2 (network failure, sender stopped) keeps
// its temporary file, in memory only, for resuming; a damaged one
// (ErrSnapshotCorrupt) is discarded. A crash at any step leaves a
// consistent node: before step 3 commits the file nothing changed (a
// temporary file is removed when the store reopens), and from then on
// Start completes the installation (see snapshot.go).
func (h handler) HandleSnapshot(ctx context.Context, msg core.Message, data io.Reader) (err error) {
	n := h.n
	select {
	case <-n.loopDone:
		return ErrStopped
	default:
	}
	if n.snaps == nil {
		return ErrSnapshotUnsupported
	}
	if msg.Type != core.MsgSnap || msg.Snapshot == nil || msg.Snapshot.Index == 0 || msg.To != n.cfg.ID {
		return fmt.Errorf("%w: HandleSnapshot given %v", core.ErrInvalidMessage, msg)
	}
	if err := n.refuseRemoved([]core.Message{msg}); err != nil {
		return err
	}
	defer func() {
		if err != nil && !errors.Is(err, ErrSnapshotNotNeeded) && !errors.Is(err, ErrStopped) {
			n.metrics.snapRecvFailures.Inc()
			n.snapStats.recvFailures.Add(1)
			n.log.Warn("snapshot not installed", "from", msg.From, "index", msg.Snapshot.Index, "err", err)
		}
	}()
	meta := *msg.Snapshot
	if meta.Index <= n.Status().Commit {
		// Commit only grows, so the core will not want the data either.
		if err := n.requestInstall(ctx, &installRequest{msg: msg, done: make(chan error, 1)}); err != nil {
			return err
		}
		return fmt.Errorf("%w (snapshot %d, commit %d)", ErrSnapshotNotNeeded, meta.Index, n.Status().Commit)
	}

	// One transfer at a time.
	select {
	case n.recvSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopDone:
		return ErrStopped
	}
	defer func() { <-n.recvSem }()

	p, err := n.openPartial(msg, data)
	if err != nil {
		return err
	}
	if err := n.hook(stepBeforeWrite); err != nil {
		n.abandonPartial(p)
		return err
	}
	if err := n.receive(p, data); err != nil {
		if errors.Is(err, ErrSnapshotCorrupt) || p.failed || p.n == p.startedAt {
			// Damaged, or no progress: start over next time.
			n.abandonPartial(p)
		} else {
			n.keepPartial(p)
		}
		return err
	}
	if err := p.w.Sync(); err != nil {
		n.abandonPartial(p)
		return fmt.Errorf("driver: syncing received snapshot: %w", err)
	}
	if err := n.hook(stepAfterTempWrite); err != nil {
		n.abandonPartial(p)
		return err
	}
	// The loop owns the writer from here.
	return n.requestInstall(ctx, &installRequest{msg: msg, w: p.w, size: p.n, done: make(chan error, 1)})
}

// installRequest asks the loop to Step a received MsgSnap; w holds its
// data (synced, not committed), or is nil when the data is not needed.
type installRequest struct {
	msg  core.Message
	w    SnapshotWriter
	size uint64
	done chan error // buffered; the loop answers exactly once
}

// requestInstall hands req to the loop and waits for its answer. If the
// loop stops first, req.w is aborted here (the loop aborts what it took).
func (n *Node) requestInstall(ctx context.Context, req *installRequest) error {
	select {
	case n.installc <- req:
	case <-ctx.Done():
		if req.w != nil {
			_ = req.w.Abort()
		}
		return ctx.Err()
	case <-n.loopDone:
		if req.w != nil {
			_ = req.w.Abort()
		}
		return ErrStopped
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		// The loop finishes the install anyway; the sender will retry and
		// find it not needed.
		return ctx.Err()
	case <-n.loopDone:
		select {
		case err := <-req.done:
			return err
		default:
			return ErrStopped
		}
	}
}

// partialSnapshot is a received snapshot's temporary file, kept between
// transfers so that an interrupted one can resume.
type partialSnapshot struct {
	from      uint64
	meta      core.SnapshotMeta
	w         SnapshotWriter
	n         uint64 // bytes written
	crc       uint32 // CRC-32C of those bytes
	startedAt uint64 // n when the current transfer began
	failed    bool   // a write failed: the file cannot be continued
	touched   time.Time
}

// maxPartialAge is how long an interrupted transfer's data is kept for
// resuming.
const maxPartialAge = 10 * time.Minute

// openPartial returns where to write msg's data: the interrupted transfer
// of the same snapshot from the same sender, resumed (if data allows), or
// a new temporary file.
func (n *Node) openPartial(msg core.Message, data io.Reader) (*partialSnapshot, error) {
	meta := *msg.Snapshot
	n.partialMu.Lock()
	p := n.partial
	n.partial = nil
	n.partialMu.Unlock()
	if p != nil {
		r, ok := data.(SnapshotResumer)
		same := p.from == msg.From && p.meta.Index == meta.Index && p.meta.Term == meta.Term
		if same && ok && time.Since(p.touched) < maxPartialAge && r.ResumeAt(p.n, p.crc) == nil {
			n.metrics.snapResumes.Inc()
			n.snapStats.resumed.Add(1)
			n.log.Info("resuming an interrupted snapshot transfer", "from", msg.From, "index", meta.Index, "offset", p.n)
			p.startedAt = p.n
			return p, nil
		}
		_ = p.w.Abort()
	}
	w, err := n.snaps.CreateSnapshot(meta)
	if err != nil {
		return nil, fmt.Errorf("driver: creating snapshot file: %w", err)
	}
	return &partialSnapshot{from: msg.From, meta: meta, w: w}, nil
}

// receive copies data into p until io.EOF.
func (n *Node) receive(p *partialSnapshot, data io.Reader) error {
	buf := make([]byte, 256<<10)
	midStream := false
	for {
		k, rerr := data.Read(buf)
		if k > 0 {
			if _, err := p.w.Write(buf[:k]); err != nil {
				p.failed = true
				return fmt.Errorf("driver: writing received snapshot: %w", err)
			}
			p.n += uint64(k)
			p.crc = crc32.Update(p.crc, castagnoli, buf[:k])
			n.metrics.snapRecvBytes.Add(float64(k))
			if !midStream {
				midStream = true
				if err := n.hook(stepMidStream); err != nil {
					p.failed = true
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("driver: receiving snapshot: %w", rerr)
		}
	}
}

// keepPartial keeps p for a later transfer to resume.
func (n *Node) keepPartial(p *partialSnapshot) {
	p.touched = time.Now()
	n.partialMu.Lock()
	defer n.partialMu.Unlock()
	if n.partialClosed {
		_ = p.w.Abort()
		return
	}
	if old := n.partial; old != nil {
		_ = old.w.Abort()
	}
	n.partial = p
}

func (n *Node) abandonPartial(p *partialSnapshot) { _ = p.w.Abort() }

// closePartial discards a kept partial transfer; later ones are discarded
// at once. Called at shutdown.
func (n *Node) closePartial() {
	n.partialMu.Lock()
	defer n.partialMu.Unlock()
	n.partialClosed = true
	if n.partial != nil {
		_ = n.partial.w.Abort()
		n.partial = nil
	}
}

// castagnoli is the CRC-32C table, the checksum transports use for
// snapshot data (SnapshotResumer).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Steps of installing a received snapshot, at which tests crash the node
// (Config.hook).
const (
	stepBeforeWrite     = "before-write"      // temporary file created, nothing written
	stepMidStream       = "mid-stream"        // first data written
	stepAfterTempWrite  = "after-temp-write"  // all data written and synced, not committed
	stepAfterCommit     = "after-commit"      // snapshot file committed, state machine untouched
	stepAfterRestore    = "after-restore"     // state machine restored, log not yet
	stepAfterLogInstall = "after-log-install" // log records the snapshot, not yet acknowledged
)

// hook runs the test hook for step, if any. An error from it crashes the
// node: the loop stops as on a storage failure, leaving the files as they
// are at this step.
func (n *Node) hook(step string) error {
	if n.cfg.hook == nil {
		return nil
	}
	err := n.cfg.hook(step)
	if err != nil {
		select {
		case n.failc <- fmt.Errorf("driver: crashed at snapshot step %s: %w", step, err):
		default:
		}
	}
	return err
}

// ReportUnreachable records that a message to peer was dropped; the loop
// tells the core, which stops pipelining to that peer and probes.
func (h handler) ReportUnreachable(peer uint64) {
	n := h.n
	n.unreachableMu.Lock()
	n.unreachable[peer] = struct{}{}
	n.unreachableMu.Unlock()
	select {
	case n.unreachableNotify <- struct{}{}:
	default: // a wake-up is already pending; it will see this peer too
	}
}
