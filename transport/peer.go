package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// peer is the sending side of one peer: two lanes (see lanes.go), each a
// bounded queue filled by Send and drained by its own goroutine over its
// own long-lived client stream on its own connection.
type peer struct {
	t       *GRPC
	id      uint64
	addr    string
	pc      *peerCounters
	hdr     batchHeader
	hdrSize int
	lanes   [numLanes]*laneSender

	// singleLane is set when the peer answered UrgentStream with
	// Unimplemented (a node from before the lanes): everything goes
	// over the bulk lane's Stream, which such a node understands, until
	// the bulk lane reconnects (the peer may have been upgraded).
	singleLane atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc

	// shared, when testHooks.sharedLaneConn is set, is the one connection
	// both lanes use (for the benchmark that compares the two layouts).
	sharedMu sync.Mutex
	shared   *grpc.ClientConn
	running  sync.WaitGroup // the lanes' goroutines
}

// laneSender is one lane of a peer: its queue and the goroutine (run)
// that drains it over one stream. Everything queued while a batch was
// being sent goes into the next batch, so batching adapts to load with no
// timer and no added latency when idle.
type laneSender struct {
	p        *peer
	lane     lane
	lc       *laneCounters
	maxLen   int
	maxBytes int

	mu      sync.Mutex
	queue   []queuedMsg
	bytes   int         // sum of queue[i].size
	spare   []queuedMsg // the previous batch's array, reused by take
	stopped bool

	wake chan struct{} // capacity 1: "the queue is not empty"

	// Owned by run.
	conn         *grpc.ClientConn
	stream       grpc.ClientStream
	streamCancel context.CancelFunc
	out          outBatch
	failing      bool // since the last failure, no stream has opened
	reopened     bool // a stream has been opened before
}

// maxSpareQueueCap bounds the queue array kept for reuse, so that one
// burst does not pin a large array for the life of the peer.
const maxSpareQueueCap = 1024

func (t *GRPC) newPeer(id uint64, addr string) *peer {
	p := &peer{
		t:    t,
		id:   id,
		addr: addr,
		pc:   t.counters.forPeer(id),
		hdr:  batchHeader{clusterID: t.cfg.ClusterID, from: t.nodeID(), to: id},
	}
	p.hdrSize = p.hdr.size()
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	for l := range numLanes {
		ls := &laneSender{
			p:    p,
			lane: l,
			lc:   p.pc.lanes[l],
			wake: make(chan struct{}, 1),
		}
		switch l {
		case laneUrgent:
			ls.maxLen, ls.maxBytes = t.cfg.UrgentQueueLen, t.cfg.UrgentQueueBytes
		default:
			ls.maxLen, ls.maxBytes = t.cfg.BulkQueueLen, t.cfg.BulkQueueBytes
		}
		p.lanes[l] = ls
	}
	return p
}

func (p *peer) start() {
	for _, l := range p.lanes {
		p.running.Add(1)
		p.t.wg.Go(func() {
			defer p.running.Done()
			l.run()
		})
	}
	if p.t.hooks.sharedLaneConn {
		p.t.wg.Go(func() {
			p.running.Wait()
			p.sharedMu.Lock()
			defer p.sharedMu.Unlock()
			if p.shared != nil {
				_ = p.shared.Close()
				p.shared = nil
			}
		})
	}
}

// stop ends the peer's goroutines and drops what is queued. The caller
// holds t.mu or is Close.
func (p *peer) stop() {
	for _, l := range p.lanes {
		l.mu.Lock()
		l.stopped = true
		n := len(l.queue)
		l.queue, l.spare, l.bytes = nil, nil, 0
		l.mu.Unlock()
		p.t.counters.drop(p.id, p.pc, l.lc, DropClosed, n)
	}
	p.cancel()
}

// enqueue queues q on its lane and returns "" or why it was dropped,
// and the lane's counters.
func (p *peer) enqueue(q *queuedMsg) (DropReason, *laneCounters) {
	l := laneOf(q.msg.Type, q.size)
	if l == laneUrgent && p.singleLane.Load() {
		l = laneBulk
	}
	return p.lanes[l].enqueue(q), p.lanes[l].lc
}

func (l *laneSender) enqueue(q *queuedMsg) DropReason {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return DropClosed
	}
	// maxBytes is at least the largest message the lane takes
	// (Config.validate), so an empty queue always has room.
	if len(l.queue) >= l.maxLen || l.bytes+q.size > l.maxBytes {
		l.mu.Unlock()
		return DropQueueFull
	}
	l.queue = append(l.queue, *q)
	l.bytes += q.size
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return ""
}

// queued returns the messages and bytes queued.
func (l *laneSender) queued() (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue), l.bytes
}

// take removes and returns everything queued.
func (l *laneSender) take() []queuedMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.queue
	l.queue, l.spare, l.bytes = l.spare[:0], nil, 0
	return b
}

// recycle returns a sent batch's array for reuse, after clearing it so
// that it does not keep entry data alive.
func (l *laneSender) recycle(b []queuedMsg) {
	if cap(b) > maxSpareQueueCap {
		return
	}
	clear(b)
	l.mu.Lock()
	if l.spare == nil && !l.stopped {
		l.spare = b[:0]
	}
	l.mu.Unlock()
}

func (l *laneSender) run() {
	p := l.p
	defer l.closeConn()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-l.wake:
		}
		for p.ctx.Err() == nil {
			batch := l.take()
			if len(batch) == 0 {
				break
			}
			l.send(batch)
			l.recycle(batch)
		}
	}
}

// send sends batch, split into gRPC messages of at most MaxMessageBytes,
// opening the stream first if needed. On failure the unsent rest is
// dropped and the peer reported unreachable (or, on the urgent lane of a
// peer without one, moved to the bulk lane); the next batch opens a new
// stream.
func (l *laneSender) send(batch []queuedMsg) {
	p := l.p
	if l.lane == laneUrgent && p.singleLane.Load() {
		// Queued before the peer turned out to have no urgent lane.
		l.divert(batch)
		return
	}
	if l.stream != nil && l.stream.Context().Err() != nil {
		// The peer ended the stream while we were idle (restart,
		// rejection, keepalive failure); learn why and start afresh.
		l.streamFailed(nil, nil)
		if l.lane == laneUrgent && p.singleLane.Load() {
			l.divert(batch)
			return
		}
	}
	if l.stream == nil {
		if err := l.openStream(); err != nil {
			l.fail(batch, DropUnreachable, err)
			return
		}
	}
	for len(batch) > 0 {
		n, size := l.split(batch)
		l.out = outBatch{hdr: p.hdr, msgs: batch[:n], size: size}
		err := l.stream.SendMsg(&l.out)
		l.out.msgs = nil
		if err != nil {
			l.streamFailed(err, batch)
			return
		}
		p.t.counters.sent(p.pc, l.lc, n, size)
		batch = batch[n:]
	}
}

// split returns how many leading messages of batch fit in one gRPC
// message, and that message's size. At least one always fits: Send drops
// messages too large to fit alone.
func (l *laneSender) split(batch []queuedMsg) (int, int) {
	size := l.p.hdrSize
	for i := range batch {
		s := framedMessageSize(batch[i].size)
		if i > 0 && size+s > l.p.t.cfg.MaxMessageBytes {
			return i, size
		}
		size += s
	}
	return len(batch), size
}

// dialConn returns the connection the lane sends on: its own, or the
// peer's shared one under testHooks.sharedLaneConn.
func (l *laneSender) dialConn() (*grpc.ClientConn, error) {
	p := l.p
	if !p.t.hooks.sharedLaneConn {
		return p.t.dial(p.addr)
	}
	p.sharedMu.Lock()
	defer p.sharedMu.Unlock()
	if p.shared == nil {
		conn, err := p.t.dial(p.addr)
		if err != nil {
			return nil, err
		}
		p.shared = conn
	}
	return p.shared, nil
}

func (l *laneSender) openStream() error {
	p := l.p
	if l.conn == nil {
		conn, err := l.dialConn()
		if err != nil {
			return err
		}
		l.conn = conn
	}
	ctx, cancel := context.WithCancel(p.ctx)
	var st grpc.ClientStream
	var err error
	if l.lane == laneUrgent {
		st, err = pb.NewRaftClient(l.conn).UrgentStream(ctx)
	} else {
		st, err = pb.NewRaftClient(l.conn).Stream(ctx)
	}
	if err != nil {
		cancel()
		return err
	}
	// Context commits the RPC attempt: from then on gRPC keeps no copy
	// of sent messages for a transparent retry, which could only
	// duplicate what Raft retransmits anyway.
	_ = st.Context()
	l.stream, l.streamCancel = st, cancel
	l.lc.streamOpened()
	if l.lane == laneBulk && l.reopened && p.singleLane.Swap(false) {
		// A new bulk stream may be to a restarted, upgraded peer: try the
		// urgent lane again (if the peer still lacks it, the next urgent
		// batch is diverted back here).
		p.t.logger().Debug("trying the urgent lane again", "peer", p.id)
	}
	l.reopened = true
	if l.failing {
		l.failing = false
		p.t.logger().Info("stream to peer re-established", "peer", p.id, "addr", p.addr, "lane", l.lane.String())
	} else {
		p.t.logger().Debug("stream to peer opened", "peer", p.id, "addr", p.addr, "lane", l.lane.String())
	}
	return nil
}

// streamFailed closes the stream after err (nil: it ended on its own)
// and disposes of batch, the messages not sent: diverted to the bulk lane
// if the peer turned out to have no urgent lane, else dropped and the
// peer reported.
func (l *laneSender) streamFailed(err error, batch []queuedMsg) {
	p := l.p
	if err == nil || errors.Is(err, io.EOF) {
		// SendMsg reports a stream ended by the peer as io.EOF; the
		// status it ended with comes from RecvMsg.
		err = l.stream.RecvMsg(new(pb.StreamResponse))
		if err == nil {
			err = errors.New("peer closed the stream")
		}
	}
	l.closeStream()
	if l.lane == laneUrgent && status.Code(err) == codes.Unimplemented {
		p.singleLane.Store(true)
		if p.t.limiter.allow(fmt.Sprintf("peer-%d-single-lane", p.id)) {
			p.t.logger().Info("peer has no urgent lane (an older version): sending everything over one stream",
				"peer", p.id, "addr", p.addr)
		}
		l.divert(batch)
		return
	}
	if len(batch) == 0 {
		return
	}
	reason := DropUnreachable
	if peerRemovedUs(err) {
		reason = DropRemoved
	} else {
		switch status.Code(err) {
		case codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument:
			reason = DropRejected
		}
	}
	l.fail(batch, reason, err)
}

// divert moves the messages of an urgent batch to the bulk lane, for a
// peer without an urgent lane.
func (l *laneSender) divert(batch []queuedMsg) {
	p := l.p
	bulk := p.lanes[laneBulk]
	dropped := map[DropReason]int{}
	for i := range batch {
		if reason := bulk.enqueue(&batch[i]); reason != "" {
			dropped[reason]++
		}
	}
	for reason, n := range dropped {
		p.t.counters.drop(p.id, p.pc, bulk.lc, reason, n)
		if reason != DropClosed {
			p.t.reports.add(p.id)
		}
	}
}

func (l *laneSender) closeStream() {
	if l.stream != nil {
		l.streamCancel()
		l.stream, l.streamCancel = nil, nil
	}
}

func (l *laneSender) closeConn() {
	l.closeStream()
	if l.conn != nil {
		if !l.p.t.hooks.sharedLaneConn {
			_ = l.conn.Close()
		}
		l.conn = nil
	}
}

// fail drops batch after a stream error and reports the peer.
func (l *laneSender) fail(batch []queuedMsg, reason DropReason, err error) {
	p := l.p
	if p.ctx.Err() != nil {
		// Closing or removed: not the peer's fault, nothing to report.
		p.t.counters.drop(p.id, p.pc, l.lc, DropClosed, len(batch))
		return
	}
	p.t.counters.drop(p.id, p.pc, l.lc, reason, len(batch))
	if reason == DropRemoved {
		// Not unreachable: the peer answered, and will go on refusing
		// this node, which only its handler can act on.
		p.t.notifyRemoved(p.id)
		if p.t.limiter.allow(fmt.Sprintf("peer-%d-%s", p.id, reason)) {
			p.t.logger().Warn("peer refuses this node: it was removed from the cluster", "peer", p.id, "addr", p.addr,
				"messages", len(batch), "err", err)
		}
		return
	}
	p.t.reports.add(p.id)
	l.failing = true
	if p.t.limiter.allow(fmt.Sprintf("peer-%d-%s-%s", p.id, l.lane, reason)) {
		level := p.t.logger().Warn
		if peerNotServing(err) {
			// The peer said it is stopping (a graceful stop of one
			// member, or of the whole cluster) or still starting:
			// expected, not a fault.
			level = p.t.logger().Info
		} else if reason == DropRejected {
			// A refusal is a configuration error that will not heal
			// by itself.
			level = p.t.logger().Error
		}
		level("dropping messages to peer", "peer", p.id, "addr", p.addr, "lane", l.lane.String(), "reason", string(reason),
			"messages", len(batch), "err", err)
	}
}

// peerShuttingDown reports whether err is the peer's own answer that it is
// closing (checkHeader during Close).
func peerShuttingDown(err error) bool { return unavailableWith(err, shuttingDownSuffix) }

// peerStarting reports whether err is the peer's own answer that it has
// no handler yet (SetHandler not called).
func peerStarting(err error) bool { return unavailableWith(err, startingSuffix) }

// peerNotServing: the peer is shutting down or starting.
func peerNotServing(err error) bool { return peerShuttingDown(err) || peerStarting(err) }

func unavailableWith(err error, suffix string) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && strings.HasSuffix(st.Message(), suffix)
}

// peerRemovedUs reports whether err is a peer's answer that this node was
// removed from the cluster (refuseRemoved).
func peerRemovedUs(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.PermissionDenied && strings.HasSuffix(st.Message(), removedSuffix)
}

// removedNotifier is the optional method of a handler that wants to know
// when a peer refuses this node as removed from the cluster.
type removedNotifier interface{ RemovedBy(peer uint64) }

// notifyRemoved tells the handler, if it cares, that peer refused this
// node as removed. It is called from the goroutine that saw the refusal
// (a peer's sender or SendSnapshot's caller), never under a lock.
func (t *GRPC) notifyRemoved(peer uint64) {
	if rn, ok := t.currentHandler().(removedNotifier); ok {
		rn.RemovedBy(peer)
	}
}
