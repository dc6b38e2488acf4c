package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// peer is the sending side of one peer: a bounded queue filled by Send
// and one goroutine (run) that drains it over a long-lived client stream.
// Everything queued while a batch was being sent goes into the next
// batch, so batching adapts to load with no timer and no added latency
// when idle.
type peer struct {
	t       *GRPC
	id      uint64
	addr    string
	pc      *peerCounters
	hdr     batchHeader
	hdrSize int

	mu      sync.Mutex
	queue   []queuedMsg
	spare   []queuedMsg // the previous batch's array, reused by take
	stopped bool

	wake   chan struct{} // capacity 1: "the queue is not empty"
	ctx    context.Context
	cancel context.CancelFunc

	// Owned by run.
	conn         *grpc.ClientConn
	stream       grpc.ClientStream
	streamCancel context.CancelFunc
	out          outBatch
	failing      bool // since the last failure, no stream has opened
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
		wake: make(chan struct{}, 1),
	}
	p.hdrSize = p.hdr.size()
	p.ctx, p.cancel = context.WithCancel(t.ctx)
	return p
}

func (p *peer) start() { p.t.wg.Go(p.run) }

// stop ends the peer's goroutine and drops what is queued. The caller
// holds t.mu or is Close.
func (p *peer) stop() {
	p.mu.Lock()
	p.stopped = true
	n := len(p.queue)
	p.queue, p.spare = nil, nil
	p.mu.Unlock()
	p.t.counters.drop(p.id, p.pc, DropClosed, n)
	p.cancel()
}

func (p *peer) enqueue(q *queuedMsg) DropReason {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return DropClosed
	}
	if len(p.queue) >= p.t.cfg.SendQueueLen {
		p.mu.Unlock()
		return DropQueueFull
	}
	p.queue = append(p.queue, *q)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return ""
}

func (p *peer) queueLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// take removes and returns everything queued.
func (p *peer) take() []queuedMsg {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.queue
	p.queue, p.spare = p.spare[:0], nil
	return b
}

// recycle returns a sent batch's array for reuse, after clearing it so
// that it does not keep entry data alive.
func (p *peer) recycle(b []queuedMsg) {
	if cap(b) > maxSpareQueueCap {
		return
	}
	clear(b)
	p.mu.Lock()
	if p.spare == nil && !p.stopped {
		p.spare = b[:0]
	}
	p.mu.Unlock()
}

func (p *peer) run() {
	defer p.closeConn()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.wake:
		}
		for p.ctx.Err() == nil {
			batch := p.take()
			if len(batch) == 0 {
				break
			}
			p.send(batch)
			p.recycle(batch)
		}
	}
}

// send sends batch, split into gRPC messages of at most MaxMessageBytes,
// opening the stream first if needed. On failure the unsent rest is
// dropped and the peer reported unreachable; the next batch opens a new
// stream.
func (p *peer) send(batch []queuedMsg) {
	if p.stream != nil && p.stream.Context().Err() != nil {
		// The peer ended the stream while we were idle (restart,
		// rejection, keepalive failure); learn why and start afresh.
		p.streamFailed(nil)
	}
	if p.stream == nil {
		if err := p.openStream(); err != nil {
			p.fail(batch, DropUnreachable, err)
			return
		}
	}
	for len(batch) > 0 {
		n, size := p.split(batch)
		p.out = outBatch{hdr: p.hdr, msgs: batch[:n], size: size}
		err := p.stream.SendMsg(&p.out)
		p.out.msgs = nil
		if err != nil {
			reason, err := p.streamFailed(err)
			p.fail(batch, reason, err)
			return
		}
		p.t.counters.sent(p.pc, n, size)
		batch = batch[n:]
	}
}

// split returns how many leading messages of batch fit in one gRPC
// message, and that message's size. At least one always fits: Send drops
// messages too large to fit alone.
func (p *peer) split(batch []queuedMsg) (int, int) {
	size := p.hdrSize
	for i := range batch {
		s := framedMessageSize(batch[i].size)
		if i > 0 && size+s > p.t.cfg.MaxMessageBytes {
			return i, size
		}
		size += s
	}
	return len(batch), size
}

func (p *peer) openStream() error {
	if p.conn == nil {
		conn, err := p.t.dial(p.addr)
		if err != nil {
			return err
		}
		p.conn = conn
	}
	ctx, cancel := context.WithCancel(p.ctx)
	st, err := pb.NewRaftClient(p.conn).Stream(ctx)
	if err != nil {
		cancel()
		return err
	}
	// Context commits the RPC attempt: from then on gRPC keeps no copy
	// of sent messages for a transparent retry, which could only
	// duplicate what Raft retransmits anyway.
	_ = st.Context()
	p.stream, p.streamCancel = st, cancel
	if p.failing {
		p.failing = false
		p.t.logger().Info("stream to peer re-established", "peer", p.id, "addr", p.addr)
	} else {
		p.t.logger().Debug("stream to peer opened", "peer", p.id, "addr", p.addr)
	}
	return nil
}

// streamFailed closes the stream after err (nil: it ended on its own)
// and returns the drop reason and the peer's status.
func (p *peer) streamFailed(err error) (DropReason, error) {
	if err == nil || errors.Is(err, io.EOF) {
		// SendMsg reports a stream ended by the peer as io.EOF; the
		// status it ended with comes from RecvMsg.
		err = p.stream.RecvMsg(new(pb.StreamResponse))
		if err == nil {
			err = errors.New("peer closed the stream")
		}
	}
	p.closeStream()
	if peerRemovedUs(err) {
		return DropRemoved, err
	}
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument:
		return DropRejected, err
	}
	return DropUnreachable, err
}

func (p *peer) closeStream() {
	if p.stream != nil {
		p.streamCancel()
		p.stream, p.streamCancel = nil, nil
	}
}

func (p *peer) closeConn() {
	p.closeStream()
	if p.conn != nil {
		_ = p.conn.Close()
		p.conn = nil
	}
}

// fail drops batch after a stream error and reports the peer.
func (p *peer) fail(batch []queuedMsg, reason DropReason, err error) {
	if p.ctx.Err() != nil {
		// Closing or removed: not the peer's fault, nothing to report.
		p.t.counters.drop(p.id, p.pc, DropClosed, len(batch))
		return
	}
	p.t.counters.drop(p.id, p.pc, reason, len(batch))
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
	p.failing = true
	if p.t.limiter.allow(fmt.Sprintf("peer-%d-%s", p.id, reason)) {
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
		level("dropping messages to peer", "peer", p.id, "addr", p.addr, "reason", string(reason),
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
