package transport

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// Errors returned by the transport. Use errors.Is.
var (
	// ErrClosed: the transport has been closed.
	ErrClosed = errors.New("transport: closed")
	// ErrUnknownPeer: the destination is not a configured peer.
	ErrUnknownPeer = errors.New("transport: unknown peer")
	// ErrSnapshotChecksum: the snapshot data received does not match the
	// sender's CRC-32C or length. The receiver's handler reads it from the
	// snapshot reader instead of io.EOF; the sender gets it from
	// SendSnapshot.
	ErrSnapshotChecksum = errors.New("transport: snapshot checksum mismatch")
	// ErrSnapshotRejected: the receiver's HandleSnapshot returned an error;
	// its text follows in the message.
	ErrSnapshotRejected = errors.New("transport: snapshot rejected by receiver")
)

// GRPC is a driver.Transport over gRPC. Create it with New, Start it, and
// set the handler (in Config or with SetHandler) when the node exists;
// until then incoming Raft traffic is refused as "node is starting"
// (Unavailable) while the Cluster service (Probe, Join) is served already.
// Close releases everything. Returned from driver.Config.NewTransport, it
// is started and closed by the node (it implements driver.Starter), so
// the factory only calls New; a transport the application started itself
// (to answer Probe before the node starts) may be handed to the node too,
// since Start is idempotent. All methods are safe for concurrent use.
type GRPC struct {
	cfg       Config
	id        atomic.Uint64 // this node's ID: Config.NodeID, or SetNodeID's
	log       atomic.Pointer[slog.Logger]
	counters  *counters
	codec     codec
	lis       net.Listener
	srv       *grpc.Server
	dialOpts  []grpc.DialOption
	handler   atomic.Pointer[handlerRef]
	cluster   atomic.Pointer[clusterRef]
	closedFlg atomic.Bool

	// ctx is cancelled by Close: it stops peers, ends incoming message
	// streams and aborts outgoing snapshots.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex // guards state, peer changes and wg.Add against Close
	state     lifecycle
	stopWatch func() bool
	peers     atomic.Pointer[map[uint64]*peer] // copy-on-write; Send reads it without locking
	wg        sync.WaitGroup                   // every goroutine started

	order     [numLanes]sync.Map // per lane, sender ID -> *senderOrder
	reports   reporter
	limiter   logLimiter
	closeOnce sync.Once
	closeDone chan struct{}

	hooks testHooks
}

var (
	_ driver.Transport = (*GRPC)(nil)
	_ driver.Starter   = (*GRPC)(nil)
)

// handlerRef boxes the interface so it can live in an atomic.Pointer.
type handlerRef struct{ h driver.MessageHandler }

type lifecycle uint8

const (
	stateNew lifecycle = iota
	stateStarted
	stateClosed
)

// testHooks let tests inject faults that a correct peer never produces.
type testHooks struct {
	// snapshotTrailer, if set, rewrites the CRC and length a sender puts
	// in its snapshot trailer.
	snapshotTrailer func(crc uint32, total uint64) (uint32, uint64)
	// sharedLaneConn puts both lanes of a peer on one connection (two
	// HTTP/2 streams) instead of one connection each, for the benchmark
	// that compares the two (see doc.go, "Lanes").
	sharedLaneConn bool
}

// New validates cfg, opens the listener (unless cfg.Listener is given)
// and prepares the server and peers. Nothing is served or dialled before
// Start. If New fails, cfg.Listener is left open.
func New(cfg Config) (*GRPC, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	serverTLS, clientTLS, err := tlsConfigs(&cfg)
	if err != nil {
		return nil, err
	}
	lis := cfg.Listener
	if lis == nil {
		if lis, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("transport: listening on %s: %w", cfg.ListenAddr, err)
		}
	}
	ctrs, err := newCounters(cfg.Registerer)
	if err != nil {
		if cfg.Listener == nil {
			_ = lis.Close()
		}
		return nil, fmt.Errorf("transport: registering metrics: %w", err)
	}
	t := &GRPC{
		cfg:       cfg,
		counters:  ctrs,
		codec:     newCodec(),
		lis:       lis,
		closeDone: make(chan struct{}),
	}
	if err := ctrs.register(cfg.Registerer, newQueueCollector(t)); err != nil {
		if cfg.Listener == nil {
			_ = lis.Close()
		}
		return nil, fmt.Errorf("transport: registering metrics: %w", err)
	}
	t.id.Store(cfg.NodeID)
	t.log.Store(cfg.Logger.With("component", "transport", "node", cfg.NodeID))
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.reports.init()
	if cfg.Handler != nil {
		t.handler.Store(&handlerRef{cfg.Handler})
	}
	if cfg.Cluster != nil {
		t.cluster.Store(&clusterRef{cfg.Cluster})
	}
	t.srv = grpc.NewServer(t.serverOptions(serverTLS)...)
	pb.RegisterRaftServer(t.srv, &server{t: t})
	pb.RegisterClusterServer(t.srv, &clusterServer{t: t})
	t.dialOpts = t.dialOptions(clientTLS)

	peers := make(map[uint64]*peer, len(cfg.Peers))
	for _, p := range cfg.Peers {
		if p.ID != cfg.NodeID {
			peers[p.ID] = t.newPeer(p.ID, p.Addr)
		}
	}
	t.cfg.Peers = nil // the live set is t.peers
	t.peers.Store(&peers)
	return t, nil
}

func (t *GRPC) serverOptions(tlsConf *tls.Config) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(t.codec),
		grpc.MaxRecvMsgSize(t.cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(t.cfg.MaxMessageBytes),
		grpc.InitialWindowSize(int32(t.cfg.StreamWindowBytes)),
		grpc.InitialConnWindowSize(int32(2 * t.cfg.StreamWindowBytes)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    t.cfg.KeepaliveInterval,
			Timeout: t.cfg.KeepaliveTimeout,
		}),
		// Accept pings as often as any peer's allowed configuration can
		// send them; gRPC's default policy (5 min) would make the server
		// close connections of peers pinging every KeepaliveInterval.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             MinKeepaliveInterval / 2,
			PermitWithoutStream: true,
		}),
		// A connection that never completes its handshake (a port scan,
		// garbage) is dropped as fast as a peer is given to connect.
		grpc.ConnectionTimeout(t.cfg.DialTimeout),
	}
	if tlsConf != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
	}
	return opts
}

func (t *GRPC) dialOptions(tlsConf *tls.Config) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  t.cfg.ReconnectBaseDelay,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   t.cfg.ReconnectMaxDelay,
			},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                t.cfg.KeepaliveInterval,
			Timeout:             t.cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(t.codec),
			grpc.MaxCallSendMsgSize(t.cfg.MaxMessageBytes),
			grpc.MaxCallRecvMsgSize(t.cfg.MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(int32(t.cfg.StreamWindowBytes)),
		grpc.WithInitialConnWindowSize(int32(2 * t.cfg.StreamWindowBytes)),
		// Raft retransmits; a gRPC-level replay could only duplicate or
		// reorder, and would keep copies of sent batches in memory.
		grpc.WithDisableRetry(),
	}
}

// dial returns a client connection to addr. It does not connect: gRPC
// connects on the first RPC and reconnects with backoff after failures.
//
// A plain host:port goes through gRPC's passthrough resolver, so that the
// name is looked up by the dialer on every connection attempt. gRPC's DNS
// resolver would cache it and re-resolve at most every 30 s, keeping a
// restarted Kubernetes pod's old IP that long. Targets with an explicit
// scheme are used as given.
func (t *GRPC) dial(addr string) (*grpc.ClientConn, error) {
	if !hasScheme(addr) {
		addr = "passthrough:///" + addr
	}
	return grpc.NewClient(addr, t.dialOpts...)
}

func hasScheme(addr string) bool {
	return strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:")
}

// nodeID is this node's ID (0 while not known yet; see SetNodeID).
func (t *GRPC) nodeID() uint64 { return t.id.Load() }

// logger is the transport's logger, whose "node" attribute follows
// SetNodeID.
func (t *GRPC) logger() *slog.Logger { return t.log.Load() }

// SetNodeID sets this node's ID, for a node that learns it after the
// transport is built: one started with Config.NodeID 0 (an empty data
// directory that must join before it has an ID), or with a tentative ID
// that the bootstrap-or-join decision changed (a replacement joins under
// a new ID). It must be called before the handler is set, since a Raft
// node's identity cannot change under it; it fails after SetHandler (or
// with Config.Handler) unless id is already the node's ID, after Close,
// and for ID 0. Queued messages are dropped; every peer gets a new
// stream under the new ID, and a peer with the new ID itself is removed.
func (t *GRPC) SetNodeID(id uint64) error {
	if id == core.None {
		return errors.New("transport: SetNodeID(0): node IDs start at 1")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.state == stateClosed:
		return ErrClosed
	case id == t.nodeID():
		return nil
	case t.currentHandler() != nil:
		return fmt.Errorf("transport: SetNodeID(%d): the node ID is %d and a handler is set; a running node's ID cannot change", id, t.nodeID())
	}
	prev := t.nodeID()
	t.id.Store(id)
	t.log.Store(t.cfg.Logger.With("component", "transport", "node", id))
	old := *t.peers.Load()
	next := make(map[uint64]*peer, len(old))
	for pid, p := range old {
		if pid == id {
			continue
		}
		next[pid] = t.newPeer(pid, p.addr)
	}
	t.peers.Store(&next)
	for pid, p := range old {
		p.stop()
		if pid == id {
			t.counters.forgetPeer(pid)
		}
	}
	if t.state == stateStarted {
		for _, p := range next {
			p.start()
		}
	}
	t.logger().Info("node ID set", "previous", prev)
	return nil
}

// Addr returns the address the transport listens on (useful with port 0).
func (t *GRPC) Addr() net.Addr { return t.lis.Addr() }

// SetHandler sets the handler for incoming traffic, for when the driver
// is built after the transport. It may be called before or after Start;
// until it is, incoming messages and snapshots are refused with
// Unavailable "node N is starting" (senders retry, as Raft does anyway).
// A nil h is ignored.
func (t *GRPC) SetHandler(h driver.MessageHandler) {
	if h == nil {
		return
	}
	t.handler.Store(&handlerRef{h})
}

func (t *GRPC) currentHandler() driver.MessageHandler {
	if r := t.handler.Load(); r != nil {
		return r.h
	}
	return nil
}

// Start serves peers and starts sending, and returns at once. It needs no
// handler (see SetHandler). Start is idempotent: on a started transport
// it returns nil and does nothing, ctx included, so an application may
// start its transport early (to serve Probe while it decides whether to
// bootstrap or join) and still give it to a driver that starts it again.
// It fails with ErrClosed after Close. Cancelling the ctx of the first
// Start closes the transport as Close does (Close must still be called,
// or that ctx cancelled, to release it).
func (t *GRPC) Start(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.state {
	case stateClosed:
		return ErrClosed
	case stateStarted:
		return nil
	}
	t.state = stateStarted
	t.wg.Go(func() {
		if err := t.srv.Serve(t.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.logger().Error("serving peers failed", "addr", t.lis.Addr().String(), "err", err)
		}
	})
	t.wg.Go(t.runReporter)
	for _, p := range *t.peers.Load() {
		p.start()
	}
	t.stopWatch = context.AfterFunc(ctx, func() { _ = t.Close() })
	t.logger().Info("transport started", "addr", t.lis.Addr().String(), "cluster", t.cfg.ClusterID,
		"peers", len(*t.peers.Load()), "tls", t.tlsEnabled())
	return nil
}

func (t *GRPC) tlsEnabled() bool { return t.cfg.TLS != nil || t.cfg.TLSCertFile != "" }

// Close stops serving, ends every stream and connection, stops every
// goroutine the transport started and returns only when they are gone.
// In-flight incoming snapshot transfers get up to CloseTimeout to finish;
// everything else is cut at once, queued messages are dropped (not
// reported) and SendSnapshot calls in progress return ErrClosed. The
// metrics are unregistered, so that a new transport may register them.
// Close is idempotent; every call returns once the first has finished.
func (t *GRPC) Close() error {
	t.closeOnce.Do(func() {
		t.close()
		close(t.closeDone)
	})
	<-t.closeDone
	return nil
}

func (t *GRPC) close() {
	t.mu.Lock()
	started := t.state == stateStarted
	t.state = stateClosed
	t.closedFlg.Store(true)
	if t.stopWatch != nil {
		t.stopWatch()
	}
	empty := map[uint64]*peer{}
	peers := t.peers.Swap(&empty)
	t.mu.Unlock()

	t.cancel()
	for _, p := range *peers {
		p.stop()
	}
	if started {
		// GracefulStop refuses new streams and waits for running handlers:
		// message streams end at once (they watch t.ctx); snapshot
		// transfers get CloseTimeout before Stop cuts them off.
		stopped := make(chan struct{})
		go func() {
			t.srv.GracefulStop()
			close(stopped)
		}()
		timer := time.NewTimer(t.cfg.CloseTimeout)
		select {
		case <-stopped:
		case <-timer.C:
			t.logger().Warn("in-flight snapshot transfers did not finish in time; cutting them off", "timeout", t.cfg.CloseTimeout)
			t.srv.Stop()
			<-stopped
		}
		timer.Stop()
	} else {
		t.srv.Stop()
		_ = t.lis.Close()
	}
	t.wg.Wait()
	t.counters.unregister()
	t.logger().Info("transport closed")
}

// track registers a caller-goroutine operation (SendSnapshot) so that
// Close waits for it; it fails once Close has begun.
func (t *GRPC) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateClosed {
		return false
	}
	t.wg.Add(1)
	return true
}

// peer returns the peer with the given ID, or nil.
func (t *GRPC) peer(id uint64) *peer { return (*t.peers.Load())[id] }

// AddPeer adds a peer, or changes the address of an existing one (its
// queued messages are then dropped). Adding this node itself is an error.
func (t *GRPC) AddPeer(id uint64, addr string) error {
	if id == 0 || id == t.nodeID() {
		return fmt.Errorf("transport: AddPeer: invalid peer ID %d (this node is %d)", id, t.nodeID())
	}
	if err := checkPeerAddr(addr); err != nil {
		return fmt.Errorf("transport: AddPeer(%d): %w", id, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateClosed {
		return ErrClosed
	}
	old := *t.peers.Load()
	if p := old[id]; p != nil && p.addr == addr {
		return nil
	}
	for otherID, p := range old {
		if otherID != id && p.addr == addr {
			return fmt.Errorf("transport: AddPeer(%d): address %q already belongs to peer %d", id, addr, otherID)
		}
	}
	next := make(map[uint64]*peer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	p := t.newPeer(id, addr)
	next[id] = p
	t.peers.Store(&next)
	if prev := old[id]; prev != nil {
		prev.stop()
		t.logger().Info("peer address changed", "peer", id, "from", prev.addr, "to", addr)
	} else {
		t.logger().Info("peer added", "peer", id, "addr", addr)
	}
	if t.state == stateStarted {
		p.start()
	}
	return nil
}

// RemovePeer forgets a peer: its queued messages are dropped, its
// connection closed, and batches it sends are refused from then on.
// Removing an unknown peer does nothing.
func (t *GRPC) RemovePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.peers.Load()
	p := old[id]
	if p == nil {
		return
	}
	next := make(map[uint64]*peer, len(old))
	for k, v := range old {
		if k != id {
			next[k] = v
		}
	}
	t.peers.Store(&next)
	p.stop()
	t.counters.forgetPeer(id)
	t.logger().Info("peer removed", "peer", id, "addr", p.addr)
}

// SetPeers makes peers the transport's peer set, for a node whose
// membership changes (the driver calls it with every newly active
// configuration; see driver.PeerSetter). It is safe concurrently with
// Send and everything else:
//   - a new ID gets a queue and a connection (dialled on first use);
//   - an ID whose address changed gets a new queue and connection, the
//     old ones are stopped and their queued messages dropped;
//   - an ID no longer listed is stopped as RemovePeer does: its queue is
//     dropped, its connection closed, its goroutine ends, its metrics
//     series are deleted;
//   - this node's own ID, ID 0, and entries without a usable address are
//     skipped; for an ID already known, an empty or invalid address keeps
//     the known one (members configured by ID only carry no address in
//     the replicated configuration).
//
// Two IDs may share an address (a replacement member and the one it
// replaces, both under the same pod name, until the old one is removed).
// Calls after Close do nothing.
func (t *GRPC) SetPeers(peers []driver.Peer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == stateClosed {
		return
	}
	old := *t.peers.Load()
	want := make(map[uint64]string, len(peers))
	for _, p := range peers {
		if p.ID == core.None || p.ID == t.nodeID() {
			continue
		}
		addr := p.Addr
		if err := checkPeerAddr(addr); err != nil {
			if o := old[p.ID]; o != nil {
				addr = o.addr
			} else {
				if t.limiter.allow(fmt.Sprintf("set-peers-addr-%d", p.ID)) {
					t.logger().Warn("SetPeers: skipping a peer without a usable address", "peer", p.ID, "err", err)
				}
				continue
			}
		}
		want[p.ID] = addr
	}
	next := make(map[uint64]*peer, len(want))
	var started, stopped []*peer
	for id, addr := range want {
		o := old[id]
		if o != nil && o.addr == addr {
			next[id] = o
			continue
		}
		np := t.newPeer(id, addr)
		next[id] = np
		started = append(started, np)
		if o != nil {
			stopped = append(stopped, o)
			t.logger().Info("peer address changed", "peer", id, "from", o.addr, "to", addr)
		} else {
			t.logger().Info("peer added", "peer", id, "addr", addr)
		}
	}
	var removed []uint64
	for id, o := range old {
		if _, ok := want[id]; !ok {
			stopped = append(stopped, o)
			removed = append(removed, id)
		}
	}
	t.peers.Store(&next)
	for _, p := range stopped {
		p.stop()
	}
	for _, id := range removed {
		t.counters.forgetPeer(id)
		t.logger().Info("peer removed", "peer", id, "addr", old[id].addr)
	}
	if t.state == stateStarted {
		for _, p := range started {
			p.start()
		}
	}
}

// Peers returns the current peers (this node excluded), by ID.
func (t *GRPC) Peers() []driver.Peer {
	peers := *t.peers.Load()
	out := make([]driver.Peer, 0, len(peers))
	for id, p := range peers {
		out = append(out, driver.Peer{ID: id, Addr: p.addr})
	}
	slices.SortFunc(out, func(a, b driver.Peer) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Send queues msgs for their To nodes and returns at once; see
// driver.Transport. A message that cannot be queued is dropped, counted
// and its peer reported unreachable (asynchronously, from another
// goroutine, so a handler may call back into the transport). A zero From
// is filled in with NodeID.
func (t *GRPC) Send(msgs []core.Message) {
	if t.closedFlg.Load() {
		for i := range msgs {
			t.counters.drop(msgs[i].To, nil, nil, DropClosed, 1)
		}
		return
	}
	peers := *t.peers.Load()
	for i := range msgs {
		m := &msgs[i]
		p := peers[m.To]
		reason, lc := t.enqueue(p, m)
		if reason == "" {
			continue
		}
		var pc *peerCounters
		if p != nil {
			pc = p.pc
		}
		t.counters.drop(m.To, pc, lc, reason, 1)
		if reason != DropClosed {
			t.reports.add(m.To)
		}
	}
}

// enqueue queues one message and returns "" or why it was dropped, and
// the counters of the lane it was given, if any.
func (t *GRPC) enqueue(p *peer, m *core.Message) (DropReason, *laneCounters) {
	if p == nil {
		if t.limiter.allow(fmt.Sprintf("unknown-peer-%d", m.To)) {
			t.logger().Warn("dropping message to unknown peer", "to", m.To, "type", m.Type.String())
		}
		return DropUnknownPeer, nil
	}
	q := queuedMsg{msg: *m}
	if q.msg.From == core.None {
		q.msg.From = t.nodeID()
	}
	if err := t.checkSendable(&q.msg); err != nil {
		if t.limiter.allow("invalid-send") {
			t.logger().Error("dropping unsendable message", "msg", m.String(), "err", err)
		}
		return DropInvalid, nil
	}
	q.size = messageSize(&q.msg)
	if p.hdrSize+framedMessageSize(q.size) > t.cfg.MaxMessageBytes {
		if t.limiter.allow(fmt.Sprintf("too-large-%d", m.To)) {
			t.logger().Warn("dropping message larger than MaxMessageBytes", "to", m.To, "type", m.Type.String(),
				"bytes", q.size, "max_message_bytes", t.cfg.MaxMessageBytes)
		}
		return DropTooLarge, p.pc.lanes[laneOf(q.msg.Type, q.size)]
	}
	return p.enqueue(&q)
}

func (t *GRPC) checkSendable(m *core.Message) error {
	if m.From != t.nodeID() {
		return fmt.Errorf("%w: From is %d, this node is %d", core.ErrInvalidMessage, m.From, t.nodeID())
	}
	if m.Type == core.MsgSnap {
		return fmt.Errorf("%w: MsgSnap must be sent with SendSnapshot", core.ErrInvalidMessage)
	}
	if m.Snapshot != nil {
		return fmt.Errorf("%w: %v carries snapshot metadata", core.ErrInvalidMessage, m.Type)
	}
	return checkOutgoing(m)
}

// Stats returns the transport's counters.
func (t *GRPC) Stats() Stats {
	s := t.counters.stats()
	for id, p := range *t.peers.Load() {
		var ls [numLanes]LaneStats
		for i, l := range p.lanes {
			n, b := l.queued()
			ls[i] = l.lc.stats(n, b)
		}
		s.Peers[id] = p.pc.stats(p.addr, ls[laneUrgent].QueueLen+ls[laneBulk].QueueLen, ls[laneUrgent], ls[laneBulk])
	}
	return s
}

// reporter delivers ReportUnreachable calls from its own goroutine, so
// that Send never calls the handler (which may be the very loop calling
// Send) and repeated drops to one peer coalesce into one report.
type reporter struct {
	mu      sync.Mutex
	pending map[uint64]struct{}
	wake    chan struct{}
}

func (r *reporter) init() {
	r.pending = map[uint64]struct{}{}
	r.wake = make(chan struct{}, 1)
}

func (r *reporter) add(id uint64) {
	r.mu.Lock()
	r.pending[id] = struct{}{}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *reporter) take() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) == 0 {
		return nil
	}
	ids := make([]uint64, 0, len(r.pending))
	for id := range r.pending {
		ids = append(ids, id)
	}
	clear(r.pending)
	slices.Sort(ids)
	return ids
}

func (t *GRPC) runReporter() {
	for {
		for _, id := range t.reports.take() {
			if h := t.currentHandler(); h != nil {
				h.ReportUnreachable(id)
			}
		}
		select {
		case <-t.ctx.Done():
			return
		case <-t.reports.wake:
		}
	}
}

// logLimiter lets one log line per key through per logEvery, so that a
// misconfigured or dead peer does not flood the log at the tick rate.
type logLimiter struct {
	mu   sync.Mutex
	last map[string]time.Time
}

const logEvery = 10 * time.Second

func (l *logLimiter) allow(key string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	if t, ok := l.last[key]; ok && now.Sub(t) < logEvery {
		return false
	}
	l.last[key] = now
	return true
}
