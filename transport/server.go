package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// server implements the Raft gRPC service: the receiving side.
type server struct {
	pb.UnimplementedRaftServer
	t *GRPC
}

// errSenderDone marks a message stream the sender closed cleanly.
var errSenderDone = errors.New("sender closed the stream")

// Stream receives one peer's batches on its bulk lane (or all of them,
// from a sender that predates the lanes).
func (s *server) Stream(ss pb.Raft_StreamServer) error {
	return s.t.serveStream(ss, laneBulk)
}

// UrgentStream receives one peer's batches on its urgent lane.
func (s *server) UrgentStream(ss pb.Raft_UrgentStreamServer) error {
	return s.t.serveStream(ss, laneUrgent)
}

// batchStream is the server side of Stream and UrgentStream.
type batchStream interface {
	SendAndClose(*pb.StreamResponse) error
	grpc.ServerStream
}

// serveStream receives the batches of one lane of one peer. The receive
// loop runs in its own goroutine so that Close can end the RPC at once
// even while the loop is blocked in RecvMsg (gRPC offers no other way to
// interrupt a server stream); returning from here ends the stream, which
// then unblocks the loop.
func (t *GRPC) serveStream(ss batchStream, l lane) error {
	done := make(chan error, 1)
	t.wg.Go(func() { done <- t.receiveBatches(ss, l) })
	select {
	case err := <-done:
		if errors.Is(err, errSenderDone) {
			return ss.SendAndClose(&pb.StreamResponse{})
		}
		return err
	case <-t.ctx.Done():
		return t.shuttingDown()
	}
}

// Snapshot receives one snapshot transfer; see snapshot.go.
func (s *server) Snapshot(ss pb.Raft_SnapshotServer) error {
	return s.t.receiveSnapshot(ss)
}

// receiveBatches is the receive loop of one message stream of lane l. It
// returns the status that ends the stream.
func (t *GRPC) receiveBatches(ss grpc.ServerStream, l lane) error {
	ctx := ss.Context()
	var sender uint64 // fixed by the first batch
	var gen uint64    // this stream's delivery generation, see senderOrder
	for {
		// A fresh buffer per batch: entry data handed to the handler
		// aliases it, and the handler may keep it.
		f := rawFrame{}
		if err := ss.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return errSenderDone
			}
			return err
		}
		sc, err := scanBatch(f.b)
		if err != nil {
			return t.reject(RejectMalformed, codes.InvalidArgument,
				"transport: node %d received a malformed batch (stream sender %d): %v", t.nodeID(), sender, err)
		}
		if err := t.checkHeader(sc.batchHeader, sender); err != nil {
			return err
		}
		if sender == 0 {
			sender = sc.from
		}
		b := sc.decode()
		var pc *peerCounters // nil for an accepted unknown sender
		if p := t.peer(sender); p != nil {
			pc = p.pc
		} else if !t.cfg.AcceptUnknownSenders {
			// checkHeader found it a moment ago; it was just removed.
			return t.reject(RejectUnknownSender, codes.PermissionDenied,
				"transport: node %d no longer knows sender node %d", t.nodeID(), sender)
		}
		for i := range b.msgs {
			m := &b.msgs[i]
			if m.From != sender {
				return t.reject(RejectSenderMismatch, codes.PermissionDenied,
					"transport: message from node %d in a batch from node %d (received by node %d)", m.From, sender, t.nodeID())
			}
			if m.To != t.nodeID() {
				return t.reject(RejectWrongReceiver, codes.FailedPrecondition,
					"transport: message for node %d reached node %d", m.To, t.nodeID())
			}
		}
		if b.invalid > 0 {
			t.counters.invalidMessages(sender, b.invalid)
			if t.limiter.allow(fmt.Sprintf("invalid-from-%d", sender)) {
				t.logger().Warn("discarded invalid messages", "peer", sender, "count", b.invalid, "first_err", b.firstInvalid)
			}
		}
		t.counters.received(pc, len(b.msgs), len(f.b))
		if len(b.msgs) == 0 {
			continue
		}
		if err := t.deliver(ctx, orderKey{sender, l}, &gen, b.msgs); err != nil {
			return err
		}
	}
}

// senderOrder keeps one sender's messages on one lane in order across
// streams. A sender has one stream per lane at a time, but when it
// replaces one (after a network failure, or a restart) the receiver may
// still be handling the old stream's last batch while the new one
// starts. Delivery under mu, with the newest stream's generation
// recorded, guarantees that once a new stream has delivered anything,
// the old one delivers nothing more. The two lanes are independent: a
// slow delivery on one never holds up the other.
type senderOrder struct {
	mu  sync.Mutex
	gen uint64 // generation of the newest stream that delivered
}

// orderKey names one lane of one sender.
type orderKey struct {
	sender uint64
	lane   lane
}

// MaxMessageBytes returns Config.MaxMessageBytes: the node splits the
// proposals it forwards to fit it (driver.MessageLimiter).
func (t *GRPC) MaxMessageBytes() int { return t.cfg.MaxMessageBytes }

var _ driver.MessageLimiter = (*GRPC)(nil)

// deliver hands msgs from one lane of a sender to the handler, in order
// with what that lane's other streams delivered. *gen is the stream's
// generation, 0 until its first delivery.
func (t *GRPC) deliver(ctx context.Context, key orderKey, gen *uint64, msgs []core.Message) error {
	sender := key.sender
	h := t.currentHandler()
	if h == nil {
		return t.starting()
	}
	// One map per lane, keyed by the sender's ID: an integer key below
	// 256 boxes without allocating, a struct key would not. Load first:
	// LoadOrStore would allocate a senderOrder on every batch.
	v, ok := t.order[key.lane].Load(sender)
	if !ok {
		v, _ = t.order[key.lane].LoadOrStore(sender, new(senderOrder))
	}
	o := v.(*senderOrder)
	o.mu.Lock()
	defer o.mu.Unlock()
	if *gen == 0 {
		o.gen++
		*gen = o.gen
	} else if o.gen != *gen {
		t.logger().Info("message stream superseded by a newer one", "peer", sender, "lane", key.lane.String())
		return status.Errorf(codes.Aborted, "transport: node %d has a newer stream from node %d", t.nodeID(), sender)
	}
	if err := h.HandleMessages(ctx, msgs); err != nil {
		if errors.Is(err, driver.ErrInboxFull) {
			// The handler dropped this batch and answered the forwarded
			// proposals in it; Raft retransmits the rest. Ending the
			// stream would lose, unanswered, whatever the sender had
			// already written behind the batch.
			if t.limiter.allow(fmt.Sprintf("inbox-full-%d", sender)) {
				t.logger().Warn("node's inbox full: dropped a batch from peer", "peer", sender, "messages", len(msgs))
			}
			return nil
		}
		if errors.Is(err, core.ErrRemoved) {
			return t.refuseRemoved(sender, err)
		}
		return status.Errorf(codes.Unavailable, "transport: node %d is not accepting messages: %v", t.nodeID(), err)
	}
	return nil
}

// checkHeader checks the identity a batch or snapshot header claims.
// streamSender is the sender already established on the stream, or 0.
// The cluster is checked first, so that cross-cluster traffic is reported
// as such rather than as an unknown sender.
func (t *GRPC) checkHeader(h batchHeader, streamSender uint64) error {
	if t.nodeID() == core.None {
		// No ID yet (SetNodeID): like a missing handler, not a refusal.
		return t.starting()
	}
	if h.clusterID != t.cfg.ClusterID {
		return t.reject(RejectClusterMismatch, codes.FailedPrecondition,
			"transport: cluster ID mismatch: sender node %d is in cluster %d, receiver node %d is in cluster %d",
			h.from, h.clusterID, t.nodeID(), t.cfg.ClusterID)
	}
	if streamSender != 0 && h.from != streamSender {
		return t.reject(RejectSenderMismatch, codes.PermissionDenied,
			"transport: batch from node %d on the stream of node %d (received by node %d)", h.from, streamSender, t.nodeID())
	}
	if t.peer(h.from) == nil && h.from != t.nodeID() && t.closedFlg.Load() {
		// Close empties the peer set before the server stops, so a batch
		// arriving meanwhile would look like one from a stranger (and be
		// logged as such on every graceful stop of a whole cluster).
		return t.shuttingDown()
	}
	if h.from == t.nodeID() || h.from == core.None || (t.peer(h.from) == nil && !t.cfg.AcceptUnknownSenders) {
		return t.reject(RejectUnknownSender, codes.PermissionDenied,
			"transport: unknown sender: node %d is not a peer of node %d (cluster %d)", h.from, t.nodeID(), t.cfg.ClusterID)
	}
	if h.to != t.nodeID() {
		return t.reject(RejectWrongReceiver, codes.FailedPrecondition,
			"transport: wrong receiver: node %d sent to node %d, but this is node %d", h.from, h.to, t.nodeID())
	}
	return nil
}

// reject counts and logs a refused batch or snapshot and returns the
// status that ends its stream.
func (t *GRPC) reject(reason RejectReason, code codes.Code, format string, args ...any) error {
	t.counters.reject(reason)
	msg := fmt.Sprintf(format, args...)
	if t.limiter.allow("reject-" + string(reason)) {
		t.logger().Warn("refused peer traffic", "reason", string(reason), "err", msg)
	}
	return status.Error(code, msg)
}

// shuttingDownSuffix ends the status a closing node answers peer traffic
// with; peerShuttingDown (peer.go) recognises it on the sending side.
const shuttingDownSuffix = "is shutting down"

// shuttingDown is the answer to peer traffic while this node closes: not
// a refusal, so not counted or warned about on either side.
func (t *GRPC) shuttingDown() error {
	return status.Errorf(codes.Unavailable, "transport: node %d %s", t.nodeID(), shuttingDownSuffix)
}

// startingSuffix ends the status a node answers Raft traffic with before
// it has a handler (SetHandler); peerNotServing (peer.go) recognises it.
const startingSuffix = "is starting"

// starting is the answer to Raft traffic before the handler is set: like
// shuttingDown, expected and transient, so not counted as a refusal.
func (t *GRPC) starting() error {
	return status.Errorf(codes.Unavailable, "transport: node %d %s", t.nodeID(), startingSuffix)
}

// removedSuffix ends the status a node answers a removed member's traffic
// with (its handler returned an error wrapping core.ErrRemoved);
// peerRemovedUs (peer.go) recognises it and tells the sender's handler.
const removedSuffix = "the sender was removed from the cluster"

// refuseRemoved counts and answers traffic from a removed member.
func (t *GRPC) refuseRemoved(sender uint64, herr error) error {
	t.counters.reject(RejectRemovedSender)
	if t.limiter.allow(fmt.Sprintf("removed-sender-%d", sender)) {
		t.logger().Info("refused traffic from a removed member", "peer", sender, "err", herr)
	}
	return status.Errorf(codes.PermissionDenied, "transport: node %d refuses node %d: %s", t.nodeID(), sender, removedSuffix)
}
