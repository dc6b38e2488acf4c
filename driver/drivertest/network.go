package drivertest

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// DefaultLinkQueue is the number of message batches a link buffers before
// Send starts dropping (and reporting the peer unreachable).
const DefaultLinkQueue = 4096

// Network is an in-memory network. Nodes join it with NewTransport (as a
// driver.Config.NewTransport) or Join. Each ordered pair of nodes has its
// own FIFO link served by one goroutine, so delivery between a pair is in
// order; a cut link or the drop filter loses messages, as a real network
// would, and the sender is told the peer is unreachable.
//
// Messages are delivered by reference, except that each message's Entries
// slice is copied, so no two nodes ever share a slice they might append
// to. Entry data is shared and must be treated as read-only, which the
// core and driver do.
type Network struct {
	mu        sync.Mutex
	endpoints map[uint64]*Endpoint
	cut       map[[2]uint64]bool
	drop      func(core.Message) bool
	queueLen  int
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{
		endpoints: map[uint64]*Endpoint{},
		cut:       map[[2]uint64]bool{},
		queueLen:  DefaultLinkQueue,
	}
}

// NewTransport returns a driver.Config.NewTransport that joins node id to
// the network. The node owns (and closes) the endpoint.
func (nw *Network) NewTransport(id uint64) func(driver.MessageHandler) (driver.Transport, error) {
	return func(h driver.MessageHandler) (driver.Transport, error) { return nw.Join(id, h), nil }
}

// Join connects node id, delivering its inbound messages to h. A previous
// endpoint for id (a node that restarted) stops receiving.
func (nw *Network) Join(id uint64, h driver.MessageHandler) *Endpoint {
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{nw: nw, id: id, h: h, links: map[uint64]*link{}, ctx: ctx, cancel: cancel}
	nw.mu.Lock()
	nw.endpoints[id] = e
	nw.mu.Unlock()
	return e
}

// Cut stops delivery between a and b, both ways.
func (nw *Network) Cut(a, b uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[[2]uint64{a, b}] = true
	nw.cut[[2]uint64{b, a}] = true
}

// CutOneWay stops delivery from a to b only.
func (nw *Network) CutOneWay(from, to uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[[2]uint64{from, to}] = true
}

// Isolate cuts id off from every node in others.
func (nw *Network) Isolate(id uint64, others ...uint64) {
	for _, o := range others {
		if o != id {
			nw.Cut(id, o)
		}
	}
}

// Heal restores delivery between a and b, both ways.
func (nw *Network) Heal(a, b uint64) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	delete(nw.cut, [2]uint64{a, b})
	delete(nw.cut, [2]uint64{b, a})
}

// HealAll removes every cut.
func (nw *Network) HealAll() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.cut)
}

// SetDrop installs a filter: messages for which drop returns true are
// lost. nil removes it. drop is called from link goroutines with the
// network's lock held: it must be quick and must not call the Network.
func (nw *Network) SetDrop(drop func(core.Message) bool) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.drop = drop
}

// Close closes every endpoint still joined.
func (nw *Network) Close() {
	nw.mu.Lock()
	eps := make([]*Endpoint, 0, len(nw.endpoints))
	for _, e := range nw.endpoints {
		eps = append(eps, e)
	}
	nw.mu.Unlock()
	for _, e := range eps {
		e.Close()
	}
}

// route decides what of batch from->to is delivered, and to whom.
func (nw *Network) route(from, to uint64, batch []core.Message) (*Endpoint, []core.Message) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	dst := nw.endpoints[to]
	if dst == nil || nw.cut[[2]uint64{from, to}] {
		return nil, nil
	}
	if nw.drop != nil {
		kept := batch[:0:0]
		for _, m := range batch {
			if !nw.drop(m) {
				kept = append(kept, m)
			}
		}
		batch = kept
	}
	return dst, batch
}

// Endpoint is one node's attachment to a Network; it implements
// driver.Transport.
type Endpoint struct {
	nw     *Network
	id     uint64
	h      driver.MessageHandler
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	links  map[uint64]*link
	closed bool
	wg     sync.WaitGroup

	// recvMu orders inbound deliveries before Close: once Close holds it
	// and sets recvClosed, the handler receives nothing more.
	recvMu     sync.RWMutex
	recvClosed bool

	// peers is what the node last passed to SetPeers; peerSets counts the
	// calls.
	peersMu  sync.Mutex
	peers    []driver.Peer
	peerSets int
}

var (
	_ driver.Transport  = (*Endpoint)(nil)
	_ driver.PeerSetter = (*Endpoint)(nil)
)

// SetPeers records the node's peer list (driver.PeerSetter). The network
// routes by ID, so it changes nothing else.
func (e *Endpoint) SetPeers(peers []driver.Peer) {
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	e.peers = slices.Clone(peers)
	e.peerSets++
}

// Peers returns the list last passed to SetPeers and how many times it
// was called.
func (e *Endpoint) Peers() ([]driver.Peer, int) {
	e.peersMu.Lock()
	defer e.peersMu.Unlock()
	return slices.Clone(e.peers), e.peerSets
}

// Endpoint returns the endpoint node id joined with last, or nil.
func (nw *Network) Endpoint(id uint64) *Endpoint {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.endpoints[id]
}

type link struct {
	to uint64
	q  chan []core.Message
}

// Send queues msgs on their links; it never blocks. A full link drops the
// batch and reports the peer unreachable.
func (e *Endpoint) Send(msgs []core.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	for len(msgs) > 0 {
		// Group consecutive messages to the same peer into one batch.
		to := msgs[0].To
		n := 1
		for n < len(msgs) && msgs[n].To == to {
			n++
		}
		batch := make([]core.Message, n)
		for i, m := range msgs[:n] {
			m.Entries = slices.Clone(m.Entries)
			batch[i] = m
		}
		msgs = msgs[n:]
		l := e.linkTo(to)
		select {
		case l.q <- batch:
		default:
			e.h.ReportUnreachable(to)
		}
	}
}

// linkTo returns the link to peer to, starting its goroutine on first use.
// e.mu is held.
func (e *Endpoint) linkTo(to uint64) *link {
	l := e.links[to]
	if l != nil {
		return l
	}
	e.nw.mu.Lock()
	qlen := e.nw.queueLen
	e.nw.mu.Unlock()
	l = &link{to: to, q: make(chan []core.Message, qlen)}
	e.links[to] = l
	e.wg.Add(1)
	go e.serve(l)
	return l
}

// serve delivers l's batches in order until the endpoint closes.
func (e *Endpoint) serve(l *link) {
	defer e.wg.Done()
	for batch := range l.q {
		if e.ctx.Err() != nil {
			continue // closing: drop what is left
		}
		dst, kept := e.nw.route(e.id, l.to, batch)
		if dst == nil {
			e.h.ReportUnreachable(l.to)
			continue
		}
		ok, err := dst.receive(e.ctx, kept)
		if !ok {
			e.h.ReportUnreachable(l.to)
		}
		// As transport.GRPC does: a receiver that refuses us because we
		// were removed tells our handler.
		if rb, isRB := e.h.(driver.RemovedNotifier); isRB && errors.Is(err, core.ErrRemoved) {
			rb.RemovedBy(l.to)
		}
	}
}

// receive hands batch to e's handler unless e is closed. Errors from the
// handler (inbox full, node stopped) mean the batch was dropped, which
// Raft recovers from by retransmission.
func (e *Endpoint) receive(ctx context.Context, batch []core.Message) (bool, error) {
	e.recvMu.RLock()
	defer e.recvMu.RUnlock()
	if e.recvClosed {
		return false, nil
	}
	if len(batch) > 0 {
		return true, e.h.HandleMessages(ctx, batch)
	}
	return true, nil
}

// SendSnapshot streams data to msg.To's handler, from the calling
// goroutine, and returns nil once the handler returned nil having read the
// data to io.EOF. It fails if the destination is unknown, the link is cut
// (also mid-transfer: the next read fails, as a broken connection would) or
// the drop filter drops msg. The handler's reader implements
// driver.SnapshotResumer: resuming skips the bytes the receiver holds, and
// the reader then checks, in place of io.EOF, that the receiver's checksum
// (continued from the one it gave) matches the sender's whole data, failing
// with an error wrapping driver.ErrSnapshotCorrupt otherwise.
func (e *Endpoint) SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	if msg.From == core.None {
		msg.From = e.id
	}
	if msg.Type != core.MsgSnap || msg.Snapshot == nil {
		return fmt.Errorf("%w: SendSnapshot needs a MsgSnap, got %v", core.ErrInvalidMessage, msg)
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return errors.New("drivertest: endpoint closed")
	}
	dst, kept := e.nw.route(e.id, msg.To, []core.Message{msg})
	if dst == nil || len(kept) == 0 {
		e.h.ReportUnreachable(msg.To)
		return fmt.Errorf("drivertest: snapshot to %d: unreachable", msg.To)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.ctx, cancel)()
	defer context.AfterFunc(dst.ctx, cancel)()
	r := &snapshotReader{ctx: ctx, nw: e.nw, from: e.id, to: msg.To, r: data}
	if err := dst.h.HandleSnapshot(ctx, msg, r); err != nil {
		return fmt.Errorf("drivertest: snapshot to %d: %w", msg.To, err)
	}
	if !r.eof {
		return fmt.Errorf("drivertest: snapshot to %d: the handler returned before reading the whole snapshot", msg.To)
	}
	return nil
}

// snapshotReader is the receiving handler's view of a snapshot stream.
type snapshotReader struct {
	ctx      context.Context
	nw       *Network
	from, to uint64
	r        io.Reader
	started  bool
	sent     uint32 // CRC-32C of every byte of the sender's data read so far
	recv     uint32 // the receiver's CRC-32C: its resumed prefix, then what it read
	eof      bool
}

var _ driver.SnapshotResumer = (*snapshotReader)(nil)

func (r *snapshotReader) ResumeAt(offset uint64, crc uint32) error {
	if r.started {
		return errors.New("drivertest: ResumeAt after Read")
	}
	r.started = true
	buf := make([]byte, 32<<10)
	for left := offset; left > 0; {
		k, err := r.r.Read(buf[:min(uint64(len(buf)), left)])
		r.sent = crc32.Update(r.sent, castagnoli, buf[:k])
		left -= uint64(k)
		if err == io.EOF && left > 0 {
			return fmt.Errorf("drivertest: cannot resume at %d: the snapshot is shorter", offset)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	r.recv = crc
	return nil
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	r.started = true
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.nw.isCut(r.from, r.to) {
		return 0, fmt.Errorf("drivertest: link %d->%d cut during a snapshot transfer", r.from, r.to)
	}
	n, err := r.r.Read(p)
	r.sent = crc32.Update(r.sent, castagnoli, p[:n])
	r.recv = crc32.Update(r.recv, castagnoli, p[:n])
	if err == io.EOF {
		if r.sent != r.recv {
			return n, fmt.Errorf("drivertest: snapshot checksum mismatch: %w", driver.ErrSnapshotCorrupt)
		}
		r.eof = true
	}
	return n, err
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// isCut reports whether delivery from -> to is cut.
func (nw *Network) isCut(from, to uint64) bool {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.cut[[2]uint64{from, to}]
}

// Close stops the endpoint's goroutines and detaches it from the network.
// Batches still queued are dropped. It is idempotent.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for _, l := range e.links {
		close(l.q)
	}
	e.mu.Unlock()
	e.cancel()
	e.recvMu.Lock()
	e.recvClosed = true
	e.recvMu.Unlock()
	e.nw.mu.Lock()
	if e.nw.endpoints[e.id] == e {
		delete(e.nw.endpoints, e.id)
	}
	e.nw.mu.Unlock()
	e.wg.Wait()
	return nil
}
