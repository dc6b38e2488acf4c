package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

func peerIDs(tr *GRPC) []uint64 {
	var ids []uint64
	for _, p := range tr.Peers() {
		ids = append(ids, p.ID)
	}
	return ids
}

// TestSetPeers: SetPeers adds, re-addresses and removes peers; a removed
// peer's goroutines and connections end (goleak), and sends to it are
// dropped as to an unknown peer.
func TestSetPeers(t *testing.T) {
	base := goleak.IgnoreCurrent()
	lis1, lis2, lis3 := listen(t), listen(t), listen(t)
	rec1, rec2, rec3 := newRecorder(), newRecorder(), newRecorder()
	n1, err := New(testConfig(1, lis1, nil, rec1))
	must(t, err)
	must(t, n1.Start(context.Background()))
	accept := func(c Config) Config { c.AcceptUnknownSenders = true; return c }
	n2, err := New(accept(testConfig(2, lis2, nil, rec2)))
	must(t, err)
	must(t, n2.Start(context.Background()))
	n3, err := New(accept(testConfig(3, lis3, nil, rec3)))
	must(t, err)
	must(t, n3.Start(context.Background()))
	addr2, addr3 := lis2.Addr().String(), lis3.Addr().String()

	// Node 1 learns of 2 (and of itself, skipped, and of ID 0 and a
	// member without an address, skipped too).
	n1.SetPeers([]driver.Peer{{ID: 1, Addr: lis1.Addr().String()}, {ID: 2, Addr: addr2}, {ID: 0, Addr: "x:1"}, {ID: 9}})
	expectf(t, slices.Equal(peerIDs(n1), []uint64{2}), "peers %v", peerIDs(n1))
	n1.Send([]core.Message{heartbeat(1, 2, 1), heartbeat(1, 3, 1)})
	waitFor(t, "delivery to 2", func() bool { return rec2.count() == 1 })
	expectf(t, n1.Stats().Dropped[DropUnknownPeer] == 1, "drops %v", n1.Stats().Dropped)

	// Then of 3 too; 2 is kept as it is (its stream stays open).
	n1.SetPeers([]driver.Peer{{ID: 2, Addr: addr2}, {ID: 3, Addr: addr3}})
	expectf(t, slices.Equal(peerIDs(n1), []uint64{2, 3}), "peers %v", peerIDs(n1))
	n1.Send([]core.Message{heartbeat(1, 2, 2), heartbeat(1, 3, 2)})
	waitFor(t, "delivery to 2 and 3", func() bool { return rec2.count() == 2 && rec3.count() == 1 })

	// 2 is removed: its sender goroutine and connection end.
	n1.SetPeers([]driver.Peer{{ID: 3, Addr: addr3}})
	expectf(t, slices.Equal(peerIDs(n1), []uint64{3}), "peers %v", peerIDs(n1))
	_, has2 := n1.Stats().Peers[2]
	expectf(t, !has2, "stats still list peer 2")
	n1.Send([]core.Message{heartbeat(1, 2, 3)})
	expectf(t, n1.Stats().Dropped[DropUnknownPeer] == 2, "drops %v", n1.Stats().Dropped)
	must(t, n2.Close())
	// What is left: the three transports' servers and reporters, node
	// 1's sender to 3 and its connection, node 3's stream from 1. Node 2
	// is closed and node 1's senders to it must be gone: no goroutine of
	// laneSender.run may remain but peer 3's two lanes.
	waitFor(t, "peer 2's sender to end", func() bool { return countGoroutines("transport.(*laneSender).run") == 2 })

	// 3 moves to a new address (a restarted pod with a new IP): node 1
	// reconnects there. An empty address keeps the known one.
	must(t, n3.Close())
	lis3b := listen(t)
	rec3b := newRecorder()
	n3b, err := New(accept(testConfig(3, lis3b, nil, rec3b)))
	must(t, err)
	must(t, n3b.Start(context.Background()))
	n1.SetPeers([]driver.Peer{{ID: 3, Addr: lis3b.Addr().String()}})
	n1.SetPeers([]driver.Peer{{ID: 3}})
	expectf(t, n1.Peers()[0].Addr == lis3b.Addr().String(), "peer 3 at %s", n1.Peers()[0].Addr)
	waitFor(t, "delivery at the new address", func() bool {
		n1.Send([]core.Message{heartbeat(1, 3, 9)})
		return rec3b.count() > 0
	})

	must(t, n1.Close())
	must(t, n3b.Close())
	n1.SetPeers([]driver.Peer{{ID: 2, Addr: addr2}}) // after Close: nothing
	goleak.VerifyNone(t, base)
}

// stacks returns every goroutine's stack.
func stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// countGoroutines counts goroutines whose stack mentions fn.
func countGoroutines(fn string) int {
	n := 0
	for _, g := range strings.Split(stacks(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// TestSetPeersConcurrentWithSend: SetPeers racing with Send and Stats
// neither panics nor leaks (run under -race).
func TestSetPeersConcurrentWithSend(t *testing.T) {
	nodes := newCluster(t, 3, func(c *Config) { c.AcceptUnknownSenders = true })
	a := nodes[0]
	all := []driver.Peer{{ID: 2, Addr: nodes[1].tr.Addr().String()}, {ID: 3, Addr: nodes[2].tr.Addr().String()}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				a.tr.Send([]core.Message{heartbeat(1, 2, seq), heartbeat(1, 3, seq)})
				_ = a.tr.Stats()
			}
		})
	}
	for i := range 200 {
		switch i % 3 {
		case 0:
			a.tr.SetPeers(all)
		case 1:
			a.tr.SetPeers(all[:1])
		case 2:
			a.tr.SetPeers(nil)
		}
	}
	a.tr.SetPeers(all)
	close(stop)
	wg.Wait()
	before := nodes[2].rec.count()
	waitFor(t, "delivery after the churn", func() bool {
		a.tr.Send([]core.Message{heartbeat(1, 3, 1e6)})
		return nodes[2].rec.count() > before
	})
}

// TestHandlerSetLater: a transport started without a handler serves (the
// Cluster service, here Probe), refuses Raft traffic as "starting"
// (Unavailable, not counted as a refusal nor logged as a fault by the
// sender), and takes it once SetHandler is called.
func TestHandlerSetLater(t *testing.T) {
	lis := listen(t)
	cfg := testConfig(2, lis, nil, nil)
	cfg.Handler = nil
	cfg.AcceptUnknownSenders = true
	cfg.Cluster = &fakeCluster{probe: ProbeInfo{NodeID: 0}}
	b, err := New(cfg)
	must(t, err)
	must(t, b.Start(context.Background()))
	t.Cleanup(func() { _ = b.Close() })
	must(t, b.Start(context.Background())) // idempotent

	info, err := ProbePeer(context.Background(), lis.Addr().String(), DialOptions{ClusterID: testCluster})
	must(t, err)
	expectf(t, info.NodeID == 0 && info.ClusterID == testCluster, "probe %+v", info)

	m := heartbeat(1, 2, 1)
	err = sendRaw(t, b, &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{toPBMessage(&m)}})
	expectf(t, status.Code(err) == codes.Unavailable && peerStarting(err) && peerNotServing(err), "before SetHandler: %v", err)
	expectf(t, b.Stats().RejectedTotal() == 0, "rejections %v", b.Stats().Rejected)
	err = snapshotStatusOf(b)
	expectf(t, peerStarting(err), "snapshot before SetHandler: %v", err)

	rec := newRecorder()
	b.SetHandler(rec)
	b.SetHandler(nil) // ignored
	a := startNode(t, testConfig(1, listen(t), []driver.Peer{{ID: 2, Addr: lis.Addr().String()}}, newRecorder()))
	waitFor(t, "delivery once the handler is set", func() bool {
		a.Send([]core.Message{heartbeat(1, 2, 2)})
		return rec.count() > 0
	})
}

// snapshotStatusOf sends a snapshot to tr from a fresh transport and
// returns the status the transfer ends with.
func snapshotStatusOf(tr *GRPC) error {
	a, err := New(Config{ClusterID: testCluster, NodeID: 1, ListenAddr: "127.0.0.1:0",
		Peers: []driver.Peer{{ID: tr.cfg.NodeID, Addr: tr.Addr().String()}}, Handler: newRecorder()})
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Start(context.Background()); err != nil {
		return err
	}
	err = a.SendSnapshot(context.Background(), snapMsg(1, tr.cfg.NodeID), strings.NewReader("data"))
	var st interface{ GRPCStatus() *status.Status }
	if errors.As(err, &st) {
		return st.GRPCStatus().Err()
	}
	return err
}

// removedHandler refuses everything as from a removed member, and records
// RemovedBy calls.
type removedHandler struct {
	*recorder
	refuse    atomic.Bool
	removedBy sync.Map // peer -> *atomic.Int64
}

func (h *removedHandler) HandleMessages(ctx context.Context, msgs []core.Message) error {
	if h.refuse.Load() {
		return fmt.Errorf("driver: message from node %d: %w", msgs[0].From, core.ErrRemoved)
	}
	return h.recorder.HandleMessages(ctx, msgs)
}

func (h *removedHandler) HandleSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	if h.refuse.Load() {
		return fmt.Errorf("driver: snapshot from node %d: %w", msg.From, core.ErrRemoved)
	}
	return h.recorder.HandleSnapshot(ctx, msg, data)
}

func (h *removedHandler) RemovedBy(peer uint64) {
	v, _ := h.removedBy.LoadOrStore(peer, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (h *removedHandler) removedCount(peer uint64) int64 {
	if v, ok := h.removedBy.Load(peer); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// TestRemovedByPeer: a handler refusing a sender with core.ErrRemoved
// makes the server answer the distinct "removed" status; the sender counts
// the drop as DropRemoved (not unreachable) and calls its handler's
// RemovedBy, for message streams and snapshots alike.
func TestRemovedByPeer(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	hA := &removedHandler{recorder: newRecorder()}
	hB := &removedHandler{recorder: newRecorder()}
	hB.refuse.Store(true)
	cfgA := testConfig(1, lisA, []driver.Peer{{ID: 2, Addr: lisB.Addr().String()}}, nil)
	cfgA.Handler = hA
	cfgB := testConfig(2, lisB, []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}}, nil)
	cfgB.Handler = hB
	a, b := startNode(t, cfgA), startNode(t, cfgB)

	waitFor(t, "RemovedBy(2)", func() bool {
		a.Send([]core.Message{heartbeat(1, 2, 1)})
		return hA.removedCount(2) > 0
	})
	expectf(t, a.Stats().Dropped[DropRemoved] > 0, "sender drops %v", a.Stats().Dropped)
	expectf(t, b.Stats().Rejected[RejectRemovedSender] > 0, "receiver rejections %v", b.Stats().Rejected)
	expectf(t, hA.unreachableCount(2) == 0, "a removal is not unreachability: %d reports", hA.unreachableCount(2))

	err := a.SendSnapshot(context.Background(), snapMsg(1, 2), strings.NewReader("state"))
	expectf(t, errors.Is(err, core.ErrRemoved), "SendSnapshot: %v", err)
	expectf(t, hA.removedCount(2) >= 2, "RemovedBy after the snapshot: %d", hA.removedCount(2))

	// The status is recognised as such, and nothing else is.
	expectf(t, peerRemovedUs(b.refuseRemoved(1, core.ErrRemoved)), "refuseRemoved not recognised")
	expectf(t, !peerRemovedUs(status.Error(codes.PermissionDenied, "unknown sender")), "an unknown-sender refusal taken for a removal")

	// Once b stops refusing, traffic flows again.
	hB.refuse.Store(false)
	waitFor(t, "delivery after the refusal ends", func() bool {
		a.Send([]core.Message{heartbeat(1, 2, 2)})
		return hB.count() > 0
	})
}

// TestAcceptUnknownSenders: with the option, a node that knows nobody (a
// joiner) takes batches and snapshots from the leader; without it they
// are refused as before. The sender itself must still not be the
// receiver.
func TestAcceptUnknownSenders(t *testing.T) {
	lisB := listen(t)
	recB := newRecorder()
	cfgB := testConfig(2, lisB, nil, recB)
	cfgB.AcceptUnknownSenders = true
	b := startNode(t, cfgB)
	a := startNode(t, testConfig(1, listen(t), []driver.Peer{{ID: 2, Addr: lisB.Addr().String()}}, newRecorder()))
	a.Send([]core.Message{heartbeat(1, 2, 1)})
	waitFor(t, "delivery from an unknown sender", func() bool { return recB.count() == 1 })
	must(t, a.SendSnapshot(context.Background(), snapMsg(1, 2), strings.NewReader("state")))
	expectf(t, b.Stats().MessagesReceived == 1 && b.Stats().SnapshotsReceived == 1, "stats %+v", b.Stats())
	err := sendRaw(t, b, &pb.Batch{ClusterId: testCluster, From: 2, To: 2})
	expectf(t, status.Code(err) == codes.PermissionDenied, "a batch claiming the receiver's ID: %v", err)
	err = sendRaw(t, b, &pb.Batch{ClusterId: testCluster + 1, From: 5, To: 2})
	expectf(t, status.Code(err) == codes.FailedPrecondition, "a batch of another cluster: %v", err)
}

// fakeCluster is a ClusterHandler with canned answers.
type fakeCluster struct {
	probe    ProbeInfo
	join     func(JoinRequest) (JoinResponse, error)
	lastJoin atomic.Pointer[JoinRequest]
}

func (f *fakeCluster) Probe(context.Context) (ProbeInfo, error) { return f.probe, nil }

func (f *fakeCluster) Join(_ context.Context, req JoinRequest) (JoinResponse, error) {
	f.lastJoin.Store(&req)
	return f.join(req)
}

func clusterMembership() core.Membership {
	return core.Membership{
		Voters: []uint64{1, 2, 3}, Learners: []uint64{4},
		Members: []core.MemberInfo{
			{ID: 1, Name: "rafty-0", PeerAddr: "rafty-0.rafty:7000", ClientAddr: "rafty-0.rafty:8000"},
			{ID: 4, Name: "rafty-3", PeerAddr: "rafty-3.rafty:7000", AutoPromote: true, Incarnation: 99},
		},
		HighestID: 4,
	}
}

// TestClusterService: Probe and Join through ProbePeer and JoinPeer, the
// cluster ID check, request validation and size limit, error mapping,
// and Unimplemented without a handler.
func TestClusterService(t *testing.T) {
	m := clusterMembership()
	fc := &fakeCluster{
		probe: ProbeInfo{NodeID: 1, Term: 5, Commit: 40, LeaderID: 2, Membership: m},
		join: func(req JoinRequest) (JoinResponse, error) {
			switch req.Name {
			case "reused":
				return JoinResponse{}, fmt.Errorf("adding: %w", core.ErrIDReused)
			case "no-leader":
				return JoinResponse{}, core.ErrNoLeader
			case "status":
				return JoinResponse{}, status.Error(codes.FailedPrecondition, "not the leader; leader is 2")
			}
			mi, _ := m.Info(4)
			return JoinResponse{Member: mi, Membership: m}, nil
		},
	}
	lis := listen(t)
	cfg := testConfig(1, lis, nil, newRecorder())
	cfg.Cluster = fc
	tr := startNode(t, cfg)
	addr := lis.Addr().String()
	opts := DialOptions{ClusterID: testCluster, Timeout: 5 * time.Second}
	ctx := context.Background()

	info, err := ProbePeer(ctx, addr, opts)
	must(t, err)
	want := fc.probe
	want.ClusterID = testCluster
	expectf(t, fmt.Sprint(info) == fmt.Sprint(want), "probe %+v, want %+v", info, want)

	req := JoinRequest{Name: "rafty-3", PeerAddr: "rafty-3.rafty:7000", ClientAddr: "rafty-3.rafty:8000", Incarnation: 99, Hops: 1}
	resp, err := JoinPeer(ctx, addr, req, opts)
	must(t, err)
	expectf(t, resp.Member.ID == 4 && resp.Member.Name == "rafty-3" && resp.Member.AutoPromote && resp.Membership.HighestID == 4,
		"join %+v", resp)
	expectf(t, *fc.lastJoin.Load() == req, "handler got %+v, want %+v", *fc.lastJoin.Load(), req)

	// Another cluster.
	before := tr.Stats().Rejected[RejectClusterMismatch]
	_, err = ProbePeer(ctx, addr, DialOptions{ClusterID: testCluster + 1})
	expectf(t, errors.Is(err, ErrClusterMismatch), "probe of another cluster: %v", err)
	_, err = JoinPeer(ctx, addr, req, DialOptions{ClusterID: testCluster + 1})
	expectf(t, errors.Is(err, ErrClusterMismatch), "join of another cluster: %v", err)
	expectf(t, tr.Stats().Rejected[RejectClusterMismatch] == before+2, "rejections %v", tr.Stats().Rejected)

	// Errors of the handler.
	for name, code := range map[string]codes.Code{"reused": codes.AlreadyExists, "no-leader": codes.Unavailable, "status": codes.FailedPrecondition} {
		r := req
		r.Name = name
		_, err := JoinPeer(ctx, addr, r, opts)
		expectf(t, status.Code(err) == code, "%s: %v, want %v", name, err, code)
	}

	// Requests the server refuses before the handler: bypass the client
	// helper's own validation with a plain client.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	cc := pb.NewClusterClient(conn)
	for name, r := range map[string]*pb.JoinRequest{
		"too many hops":  {ClusterId: testCluster, Name: "x", PeerAddr: "x:1", Hops: MaxJoinHops + 1},
		"no name":        {ClusterId: testCluster, PeerAddr: "x:1"},
		"bad address":    {ClusterId: testCluster, Name: "x", PeerAddr: "nope"},
		"long name":      {ClusterId: testCluster, Name: strings.Repeat("n", core.MaxMemberFieldBytes+1), PeerAddr: "x:1"},
		"invalid UTF-8":  {ClusterId: testCluster, Name: "\xff", PeerAddr: "x:1"},
		"oversized body": {ClusterId: testCluster, Name: "x", PeerAddr: "x:1", ClientAddr: strings.Repeat("c", MaxClusterRequestBytes)},
	} {
		_, err := cc.Join(ctx, r)
		expectf(t, err != nil && status.Code(err) != codes.OK, "%s accepted", name)
		// Protobuf itself refuses invalid UTF-8 in a string field, and
		// the oversized body before it is decoded.
		if name == "oversized body" {
			// gRPC reports a codec refusal as Internal; the message
			// says what happened.
			expectf(t, strings.Contains(err.Error(), fmt.Sprintf("at most %d", MaxClusterRequestBytes)), "oversized: %v", err)
		}
		if name != "oversized body" && name != "invalid UTF-8" {
			expectf(t, status.Code(err) == codes.InvalidArgument, "%s: %v", name, err)
		}
	}
	_, err = JoinPeer(ctx, addr, JoinRequest{PeerAddr: "x:1"}, opts)
	expectf(t, err != nil, "JoinPeer without a name")

	// No handler: Unimplemented.
	lis2 := listen(t)
	startNode(t, testConfig(2, lis2, nil, newRecorder()))
	_, err = ProbePeer(ctx, lis2.Addr().String(), opts)
	expectf(t, status.Code(err) == codes.Unimplemented, "probe without a handler: %v", err)
	// Nobody listening: a bounded failure.
	dead := listen(t)
	deadAddr := dead.Addr().String()
	must(t, dead.Close())
	start := time.Now()
	_, err = ProbePeer(ctx, deadAddr, DialOptions{ClusterID: testCluster, Timeout: time.Second})
	expectf(t, err != nil && time.Since(start) < waitTimeout, "probe of a closed port: %v after %v", err, time.Since(start))
}

// TestClusterServiceTLS: ProbePeer with the same TLS files as the
// transport.
func TestClusterServiceTLS(t *testing.T) {
	ca := newTestCA(t, "rafty-ca")
	lis := listen(t)
	cfg := testConfig(1, lis, nil, newRecorder())
	cfg.Cluster = &fakeCluster{probe: ProbeInfo{NodeID: 1, Membership: clusterMembership()}}
	tlsFiles(t, &cfg, ca, "node-1")
	startNode(t, cfg)
	opts := DialOptions{ClusterID: testCluster, TLSCertFile: cfg.TLSCertFile, TLSKeyFile: cfg.TLSKeyFile, TLSCAFile: cfg.TLSCAFile}
	info, err := ProbePeer(context.Background(), lis.Addr().String(), opts)
	must(t, err)
	expectf(t, info.NodeID == 1 && len(info.Membership.Members) == 2, "probe %+v", info)
	// Without TLS the server refuses the connection.
	_, err = ProbePeer(context.Background(), lis.Addr().String(), DialOptions{ClusterID: testCluster, Timeout: 2 * time.Second})
	expectf(t, err != nil, "plaintext probe of a TLS transport succeeded")
	_, err = ProbePeer(context.Background(), lis.Addr().String(), DialOptions{ClusterID: testCluster, TLSCertFile: cfg.TLSCertFile})
	expectf(t, err != nil, "partial TLS options accepted")
}

// TestSetNodeID: a transport built before its node has an ID (Config.NodeID
// 0) serves Probe, refuses Raft traffic as "starting", and takes its ID
// with SetNodeID before the handler; then traffic flows both ways under
// the new ID. The ID cannot change once a handler is set.
func TestSetNodeID(t *testing.T) {
	lisB := listen(t)
	cfgB := testConfig(0, lisB, nil, nil)
	cfgB.Handler = nil
	cfgB.AcceptUnknownSenders = true
	cfgB.Cluster = &fakeCluster{}
	recA := newRecorder()
	a := startNode(t, testConfig(1, listen(t), []driver.Peer{{ID: 5, Addr: lisB.Addr().String()}}, recA))
	b := startNode(t, cfgB)
	b.SetPeers([]driver.Peer{{ID: 1, Addr: a.Addr().String()}})

	info, err := ProbePeer(context.Background(), lisB.Addr().String(), DialOptions{ClusterID: testCluster})
	must(t, err)
	expectf(t, info.NodeID == 0, "probe %+v", info)
	m := heartbeat(1, 5, 1)
	err = sendRaw(t, b, &pb.Batch{ClusterId: testCluster, From: 1, To: 5, Messages: []*pb.Message{toPBMessage(&m)}})
	expectf(t, peerStarting(err), "traffic before the ID: %v", err)

	expectf(t, b.SetNodeID(0) != nil, "SetNodeID(0) accepted")
	must(t, b.SetNodeID(4)) // a tentative ID, then the real one
	must(t, b.SetNodeID(5))
	expectf(t, slices.Equal(peerIDs(b), []uint64{1}), "peers %v", peerIDs(b))
	recB := newRecorder()
	b.SetHandler(recB)
	waitFor(t, "delivery to the new ID", func() bool {
		a.Send([]core.Message{heartbeat(1, 5, 2)})
		return recB.count() > 0
	})
	waitFor(t, "delivery from the new ID", func() bool {
		b.Send([]core.Message{heartbeat(5, 1, 1)})
		return recA.count() > 0
	})
	must(t, b.SetNodeID(5))
	expectf(t, b.SetNodeID(6) != nil, "SetNodeID under a handler accepted")
	must(t, b.Close())
	expectf(t, errors.Is(b.SetNodeID(7), ErrClosed), "SetNodeID after Close")
}
