package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

func TestConfigValidation(t *testing.T) {
	lis := listen(t)
	defer lis.Close()
	add := func(c *Config, id uint64, addr string) { c.Peers = append(c.Peers, driver.Peer{ID: id, Addr: addr}) }
	base := func() Config {
		return Config{ClusterID: 1, NodeID: 1, Listener: lis, Peers: []driver.Peer{{ID: 2, Addr: "rafty-1.rafty.default.svc.cluster.local:7000"}}}
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"self in peers is ignored", func(c *Config) { add(c, 1, "10.0.0.1:7000") }, ""},
		{"ip peer", func(c *Config) { add(c, 3, "10.0.0.3:7000") }, ""},
		{"dns scheme", func(c *Config) { add(c, 3, "dns:///rafty-2.rafty:7000") }, ""},
		{"cluster 0", func(c *Config) { c.ClusterID = 0 }, "ClusterID is 0"},
		{"node 0", func(c *Config) { c.NodeID = 0; c.Handler = newRecorder() }, "NodeID is 0"},
		{"no listener", func(c *Config) { c.Listener = nil }, "neither Listener nor ListenAddr"},
		{"both listeners", func(c *Config) { c.ListenAddr = "127.0.0.1:0" }, "both Listener and ListenAddr"},
		{"bad listen addr", func(c *Config) { c.Listener, c.ListenAddr = nil, "7000" }, `ListenAddr "7000" is not host:port`},
		{"peer 0", func(c *Config) { add(c, 0, "a:1") }, `Peers[1] (ID 0, "a:1"): ID 0 is reserved`},
		{"peer twice", func(c *Config) { add(c, 2, "a:1") }, `Peers[1] (ID 2, "a:1"): ID listed twice (also Peers[0])`},
		{"peer no port", func(c *Config) { add(c, 3, "rafty-2") }, `Peers[1] (ID 3): address "rafty-2" is not host:port`},
		{"peer empty host", func(c *Config) { add(c, 3, ":7000") }, "needs both a host and a port"},
		{"peer empty", func(c *Config) { add(c, 3, "") }, "Peers[1] (ID 3): empty address"},
		{"peer space", func(c *Config) { add(c, 3, "a b:1") }, `Peers[1] (ID 3, "a b:1"): address contains ' '`},
		{"peer too long", func(c *Config) { add(c, 3, strings.Repeat("a", driver.MaxPeerAddrBytes)+":1") }, "at most 512 (MaxPeerAddrBytes)"},
		{"shared address", func(c *Config) { add(c, 3, c.Peers[0].Addr) }, "Peers[1] (ID 3, \"rafty-1.rafty.default.svc.cluster.local:7000\"): address shared with Peers[0]"},
		{"negative bulk queue", func(c *Config) { c.BulkQueueLen = -1 }, "BulkQueueLen is -1"},
		{"negative urgent queue", func(c *Config) { c.UrgentQueueLen = -1 }, "UrgentQueueLen is -1"},
		{"bulk bytes below a message", func(c *Config) { c.BulkQueueBytes = DefaultMaxMessageBytes - 1 }, "BulkQueueBytes is 4194303; it must be at least MaxMessageBytes"},
		{"bulk bytes at a message", func(c *Config) { c.BulkQueueBytes = DefaultMaxMessageBytes }, ""},
		{"urgent bytes below a message", func(c *Config) { c.UrgentQueueBytes = MaxUrgentMessageBytes - 1 }, "UrgentQueueBytes is 4095"},
		{"urgent bytes at a message", func(c *Config) { c.UrgentQueueBytes = MaxUrgentMessageBytes }, ""},
		{"tiny messages", func(c *Config) { c.MaxMessageBytes = 100 }, "MaxMessageBytes is 100"},
		{"huge chunk", func(c *Config) { c.SnapshotChunkBytes = 2 << 20 }, "SnapshotChunkBytes is 2097152"},
		{"chunk over message", func(c *Config) { c.MaxMessageBytes, c.SnapshotChunkBytes = 64<<10, 64<<10 }, "does not fit in MaxMessageBytes"},
		{"small window", func(c *Config) { c.StreamWindowBytes = 1000 }, "StreamWindowBytes is 1000"},
		{"negative dial", func(c *Config) { c.DialTimeout = -time.Second }, "DialTimeout is -1s"},
		{"backoff order", func(c *Config) { c.ReconnectBaseDelay, c.ReconnectMaxDelay = time.Second, time.Millisecond }, "below ReconnectBaseDelay"},
		{"keepalive", func(c *Config) { c.KeepaliveInterval = time.Second }, "gRPC allows no less than 10s"},
		{"partial tls files", func(c *Config) { c.TLSCertFile = "cert.pem" }, "must be set together"},
		{"tls without client auth", func(c *Config) { c.TLS = &tls.Config{} }, "RequireAndVerifyClientCert"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.mod(&cfg)
			cfg = cfg.withDefaults()
			err := cfg.validate()
			if c.want == "" {
				must(t, err)
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
	// Several problems are reported at once.
	err := (&Config{BulkQueueLen: -1, Handler: newRecorder()}).validate()
	for _, want := range []string{"ClusterID", "NodeID", "Listener", "BulkQueueLen"} {
		expectf(t, err != nil && strings.Contains(err.Error(), want), "joined error %v lacks %s", err, want)
	}
}

func TestLifecycle(t *testing.T) {
	lis := listen(t)
	tr, err := New(Config{ClusterID: 1, NodeID: 1, Listener: lis})
	must(t, err)
	// Start needs no handler, and is idempotent.
	must(t, tr.Start(context.Background()))
	tr.SetHandler(newRecorder())
	must(t, tr.Start(context.Background()))
	must(t, tr.Close())
	must(t, tr.Close()) // idempotent
	expectf(t, errors.Is(tr.Start(context.Background()), ErrClosed), "Start after Close")
	expectf(t, errors.Is(tr.AddPeer(2, "127.0.0.1:1"), ErrClosed), "AddPeer after Close")
	tr.Send([]core.Message{heartbeat(1, 2, 1)}) // must not panic or block
	if _, err := net.Dial("tcp", lis.Addr().String()); err == nil {
		t.Fatal("listener still open after Close")
	}

	// Closing a transport that never started closes its listener too.
	lis2 := listen(t)
	tr2, err := New(Config{ClusterID: 1, NodeID: 1, Listener: lis2})
	must(t, err)
	must(t, tr2.Close())
	if _, err := net.Dial("tcp", lis2.Addr().String()); err == nil {
		t.Fatal("listener of unstarted transport still open after Close")
	}

	// Cancelling Start's context closes the transport.
	tr3, err := New(Config{ClusterID: 1, NodeID: 1, ListenAddr: "127.0.0.1:0", Handler: newRecorder()})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	must(t, tr3.Start(ctx))
	cancel()
	waitFor(t, "close on context cancel", func() bool { return tr3.closedFlg.Load() })
	must(t, tr3.Close())
}

func TestTwoNodesExchange(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]core.Message{app(1, 2, 10, []byte("x"), []byte("yz")), heartbeat(1, 2, 1)})
	b.tr.Send([]core.Message{{Type: core.MsgAppResp, To: 1, Term: 3, Index: 12}}) // From filled in
	waitFor(t, "b receives", func() bool { return b.rec.count() == 2 })
	waitFor(t, "a receives", func() bool { return a.rec.count() == 1 })
	// The heartbeat takes the urgent lane, the append the bulk one: each
	// arrives, in no particular order between them.
	gotUrgent, gotBulk := perLane(b.rec.received())
	equalMessages(t, gotUrgent, []core.Message{heartbeat(1, 2, 1)})
	equalMessages(t, gotBulk, []core.Message{app(1, 2, 10, []byte("x"), []byte("yz"))})
	equalMessages(t, a.rec.received(), []core.Message{{Type: core.MsgAppResp, From: 2, To: 1, Term: 3, Index: 12}})

	sa, sb := a.tr.Stats(), b.tr.Stats()
	expectf(t, sa.MessagesSent == 2 && sa.MessagesReceived == 1, "a stats %+v", sa)
	expectf(t, sb.MessagesReceived == 2 && sb.Peers[1].MessagesReceived == 2, "b stats %+v", sb)
	expectf(t, sa.Peers[2].Addr == b.tr.Addr().String(), "peer addr %q", sa.Peers[2].Addr)
	expectf(t, sa.DroppedTotal() == 0 && sb.RejectedTotal() == 0, "drops %v rejects %v", sa.Dropped, sb.Rejected)
}

func TestPeerAddressedByDNSName(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	_, portB, _ := net.SplitHostPort(lisB.Addr().String())
	recA, recB := newRecorder(), newRecorder()
	a := startNode(t, testConfig(1, lisA, []driver.Peer{{ID: 2, Addr: net.JoinHostPort("localhost", portB)}}, recA))
	startNode(t, testConfig(2, lisB, []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}}, recB))
	a.Send([]core.Message{heartbeat(1, 2, 1)})
	waitFor(t, "delivery by name", func() bool { return recB.count() == 1 })
}

// TestThreeNodesOrdering has every node send numbered messages to every
// other, in many small Send calls from several goroutines at once, and
// checks each receiver sees each sender's sequence complete and in order.
func TestThreeNodesOrdering(t *testing.T) {
	const perPeer = 2000
	nodes := newCluster(t, 3, nil)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			for seq := uint64(1); seq <= perPeer; seq++ {
				var msgs []core.Message
				for _, to := range nodes {
					if to.id != n.id {
						msgs = append(msgs, heartbeat(n.id, to.id, seq))
					}
				}
				n.tr.Send(msgs)
			}
		})
	}
	wg.Wait()
	for _, n := range nodes {
		waitFor(t, "all messages", func() bool { return n.rec.count() == 2*perPeer })
		next := map[uint64]uint64{}
		for _, m := range n.rec.received() {
			expectf(t, m.Context == next[m.From]+1, "node %d: from %d got seq %d after %d", n.id, m.From, m.Context, next[m.From])
			next[m.From] = m.Context
		}
	}
	for _, n := range nodes {
		s := n.tr.Stats()
		expectf(t, s.DroppedTotal() == 0, "node %d dropped %v", n.id, s.Dropped)
	}
}

func TestBatchesCoalesceUnderLoad(t *testing.T) {
	nodes := newCluster(t, 2, func(c *Config) { c.UrgentQueueLen = 20000 })
	a, b := nodes[0], nodes[1]
	const total = 10000
	for seq := uint64(1); seq <= total; seq++ {
		a.tr.Send([]core.Message{heartbeat(1, 2, seq)}) // one message per call
	}
	waitFor(t, "delivery", func() bool { return b.rec.count() == total })
	s := a.tr.Stats()
	expectf(t, s.MessagesSent == total, "sent %d", s.MessagesSent)
	expectf(t, s.BatchesSent < total/2, "%d batches for %d messages: no coalescing", s.BatchesSent, total)
	t.Logf("%d messages in %d batches (%.1f per batch)", total, s.BatchesSent, float64(total)/float64(s.BatchesSent))
	b.rec.mu.Lock()
	handled := b.rec.batches
	b.rec.mu.Unlock()
	expectf(t, handled == int(b.tr.Stats().BatchesReceived), "handler saw %d batches, stats say %d", handled, b.tr.Stats().BatchesReceived)
}

// blackHole accepts TCP connections and never answers: a peer that is
// "up" but never reads.
func blackHole(t *testing.T) net.Listener {
	lis := listen(t)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return lis
}

func TestFullQueueNeverBlocks(t *testing.T) {
	const queueLen, sends = 64, 640
	for _, tc := range []struct {
		name  string
		addr  func(t *testing.T) string
		check func(t *testing.T, s Stats)
	}{
		{"peer never reads", func(t *testing.T) string { return blackHole(t).Addr().String() },
			func(t *testing.T, s Stats) {
				// The sender is stuck connecting: at most one queue's worth
				// is in its hands and one is queued; the rest overflowed.
				expectf(t, s.Dropped[DropQueueFull] >= sends-2*queueLen, "queue-full drops %d", s.Dropped[DropQueueFull])
			}},
		{"peer down", func(t *testing.T) string {
			lis := listen(t)
			addr := lis.Addr().String()
			lis.Close()
			return addr
		}, func(t *testing.T, s Stats) {
			// Connection refused: every message is dropped, as overflow
			// or as unreachable, none delivered.
			expectf(t, s.MessagesSent == 0, "sent %d", s.MessagesSent)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			cfg := testConfig(1, listen(t), []driver.Peer{{ID: 2, Addr: tc.addr(t)}}, rec)
			cfg.UrgentQueueLen = queueLen // heartbeats take the urgent lane
			tr := startNode(t, cfg)

			done := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(done)
				for i := range sends {
					tr.Send([]core.Message{heartbeat(1, 2, uint64(i+1))})
				}
			}()
			select {
			case <-done:
			case <-time.After(waitTimeout):
				t.Fatal("Send blocked")
			}
			t.Logf("%d Sends took %v", sends, time.Since(start))
			tc.check(t, tr.Stats())
			waitFor(t, "ReportUnreachable", func() bool { return rec.unreachableCount(2) > 0 })
			if tc.name == "peer down" {
				waitFor(t, "all dropped", func() bool { return tr.Stats().Dropped[DropQueueFull]+tr.Stats().Dropped[DropUnreachable] == sends })
			}
			s := tr.Stats()
			expectf(t, s.Peers[2].MessagesDropped == s.DroppedTotal(), "peer drops %d, total %d", s.Peers[2].MessagesDropped, s.DroppedTotal())
		})
	}
}

func TestSlowReceiverDoesNotBlockSend(t *testing.T) {
	nodes := newCluster(t, 2, func(c *Config) { c.BulkQueueLen = 16 })
	a, b := nodes[0], nodes[1]
	b.rec.block = make(chan struct{}) // never closed: b's handler is stuck
	payload := make([]byte, 64<<10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 40 MiB: far more than flow-control windows and socket buffers
		// hold, so the sender's stream stalls and its queue overflows.
		for i := range 640 {
			a.tr.Send([]core.Message{app(1, 2, uint64(i), payload)})
		}
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Send blocked behind a stuck receiver")
	}
	expectf(t, a.tr.Stats().Dropped[DropQueueFull] > 0, "no drops: %v", a.tr.Stats().Dropped)
	waitFor(t, "report", func() bool { return a.rec.unreachableCount(2) > 0 })
}

// TestOrderAcrossStreams checks that once a sender's new stream has
// delivered, its old stream can deliver nothing more.
func TestOrderAcrossStreams(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1]
	batch := func(seq uint64) *pb.Batch {
		m := heartbeat(1, 2, seq)
		return &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{toPBMessage(&m)}}
	}
	old := rawStream(t, b.tr)
	must(t, old.Send(batch(1)))
	waitFor(t, "old stream delivers", func() bool { return b.rec.count() == 1 })
	newer := rawStream(t, b.tr)
	must(t, newer.Send(batch(2)))
	waitFor(t, "new stream delivers", func() bool { return b.rec.count() == 2 })
	_ = old.Send(batch(3))
	_, err := old.CloseAndRecv()
	expectf(t, status.Code(err) == codes.Aborted, "old stream ended with %v", err)
	must(t, newer.Send(batch(4)))
	waitFor(t, "new stream keeps delivering", func() bool { return b.rec.count() == 3 })
	var seqs []uint64
	for _, m := range b.rec.received() {
		seqs = append(seqs, m.Context)
	}
	expectf(t, slices.Equal(seqs, []uint64{1, 2, 4}), "delivered %v", seqs)
}

func TestUnknownPeerAndInvalidSendsDropped(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a := nodes[0]
	a.tr.Send([]core.Message{
		heartbeat(1, 9, 1),          // unknown peer
		heartbeat(3, 2, 1),          // From is not this node
		snapMsg(1, 2),               // MsgSnap must use SendSnapshot
		{Type: 200, From: 1, To: 2}, // unknown type
		{Type: core.MsgApp, To: 2, Entries: []core.Entry{{Index: 1, Type: 9}}}, // unknown entry type
	})
	s := a.tr.Stats()
	expectf(t, s.Dropped[DropUnknownPeer] == 1 && s.Dropped[DropInvalid] == 4, "drops %v", s.Dropped)
	waitFor(t, "reports", func() bool { return a.rec.unreachableCount(9) == 1 && a.rec.unreachableCount(2) >= 1 })
}

func TestReconnectAfterPeerRestart(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	addr := b.tr.Addr().String()
	a.tr.Send([]core.Message{heartbeat(1, 2, 1)})
	waitFor(t, "first delivery", func() bool { return b.rec.count() == 1 })

	must(t, b.tr.Close())
	// While b is down, sends fail and are reported.
	seq := uint64(1)
	waitFor(t, "drops while down", func() bool {
		seq++
		a.tr.Send([]core.Message{heartbeat(1, 2, seq)})
		return a.tr.Stats().Dropped[DropUnreachable] > 0 && a.rec.unreachableCount(2) > 0
	})

	// b comes back on the same address; delivery resumes.
	lis, err := net.Listen("tcp", addr)
	must(t, err)
	rec := newRecorder()
	startNode(t, testConfig(2, lis, []driver.Peer{{ID: 1, Addr: a.tr.Addr().String()}}, rec))
	waitFor(t, "delivery after restart", func() bool {
		seq++
		a.tr.Send([]core.Message{heartbeat(1, 2, seq)})
		return rec.count() > 0
	})
	// And what is delivered is still in order.
	msgs := rec.received()
	for i := 1; i < len(msgs); i++ {
		expectf(t, msgs[i].Context > msgs[i-1].Context, "out of order: %d after %d", msgs[i].Context, msgs[i-1].Context)
	}
}

// rawStream opens a message stream to tr with the stock generated client
// and codec, as a foreign (or malicious) peer would.
func rawStream(t *testing.T, tr *GRPC) pb.Raft_StreamClient {
	t.Helper()
	conn, err := grpc.NewClient(tr.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	st, err := pb.NewRaftClient(conn).Stream(ctx)
	must(t, err)
	return st
}

func emptyEntries(n int) []*pb.Entry {
	ents := make([]*pb.Entry, n)
	for i := range ents {
		ents[i] = &pb.Entry{}
	}
	return ents
}

// sendRaw sends batch and returns the status the server ends the stream
// with.
func sendRaw(t *testing.T, tr *GRPC, batch *pb.Batch) error {
	t.Helper()
	st := rawStream(t, tr)
	if err := st.Send(batch); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_, err := st.CloseAndRecv()
	return err
}

func TestRejections(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1]
	hb := func(from, to uint64) *pb.Message {
		m := heartbeat(from, to, 1)
		return toPBMessage(&m)
	}
	cases := []struct {
		name   string
		batch  *pb.Batch
		code   codes.Code
		reason RejectReason
		ids    []string // must all appear in the status message
	}{
		{"other cluster", &pb.Batch{ClusterId: 99, From: 1, To: 2, Messages: []*pb.Message{hb(1, 2)}},
			codes.FailedPrecondition, RejectClusterMismatch, []string{"cluster 99", "cluster 7"}},
		{"unknown sender", &pb.Batch{ClusterId: testCluster, From: 5, To: 2, Messages: []*pb.Message{hb(5, 2)}},
			codes.PermissionDenied, RejectUnknownSender, []string{"node 5", "node 2"}},
		{"sender claims to be receiver", &pb.Batch{ClusterId: testCluster, From: 2, To: 2},
			codes.PermissionDenied, RejectUnknownSender, []string{"node 2"}},
		{"wrong receiver", &pb.Batch{ClusterId: testCluster, From: 1, To: 3},
			codes.FailedPrecondition, RejectWrongReceiver, []string{"node 3", "node 2"}},
		{"message from another node", &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{hb(4, 2)}},
			codes.PermissionDenied, RejectSenderMismatch, []string{"node 4", "node 1"}},
		{"message to another node", &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{hb(1, 3)}},
			codes.FailedPrecondition, RejectWrongReceiver, []string{"node 3", "node 2"}},
		{"malformed", &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{{Entries: emptyEntries(100)}}},
			codes.InvalidArgument, RejectMalformed, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := b.tr.Stats().Rejected[c.reason]
			err := sendRaw(t, b.tr, c.batch)
			st := status.Convert(err)
			expectf(t, st.Code() == c.code, "status %v, want %v", err, c.code)
			for _, id := range c.ids {
				expectf(t, strings.Contains(st.Message(), id), "status %q does not name %q", st.Message(), id)
			}
			expectf(t, b.tr.Stats().Rejected[c.reason] == before+1, "rejected[%s] = %d", c.reason, b.tr.Stats().Rejected[c.reason])
		})
	}
	expectf(t, b.rec.count() == 0, "handler got %d messages", b.rec.count())

	// A second batch on a stream claiming another sender is refused.
	st := rawStream(t, b.tr)
	must(t, st.Send(&pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{hb(1, 2)}}))
	waitFor(t, "first batch", func() bool { return b.rec.count() == 1 })
	_ = st.Send(&pb.Batch{ClusterId: testCluster, From: 3, To: 2})
	_, err := st.CloseAndRecv()
	expectf(t, status.Code(err) == codes.PermissionDenied, "status %v", err)

	// An invalid message is discarded and counted; its neighbours arrive.
	bad := hb(1, 2)
	bad.Type = 77
	err = sendRaw(t, b.tr, &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{hb(1, 2), bad, hb(1, 2)}})
	must(t, err)
	waitFor(t, "valid neighbours", func() bool { return b.rec.count() == 3 })
	expectf(t, b.tr.Stats().InvalidMessages == 1, "invalid %d", b.tr.Stats().InvalidMessages)
}

func TestClusterMismatchBetweenTransports(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	recA, recB := newRecorder(), newRecorder()
	cfgA := testConfig(1, lisA, []driver.Peer{{ID: 2, Addr: lisB.Addr().String()}}, recA)
	cfgB := testConfig(2, lisB, []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}}, recB)
	cfgB.ClusterID = testCluster + 1
	a, b := startNode(t, cfgA), startNode(t, cfgB)
	waitFor(t, "rejection", func() bool {
		a.Send([]core.Message{heartbeat(1, 2, 1)})
		return b.Stats().Rejected[RejectClusterMismatch] > 0 && a.Stats().Dropped[DropRejected] > 0
	})
	expectf(t, recB.count() == 0, "b accepted %d messages", recB.count())
	waitFor(t, "report", func() bool { return recA.unreachableCount(2) > 0 })
}

func TestGarbageDoesNotCrashServer(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	junk := [][]byte{
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff\xff"),
		make([]byte, 100000),
	}
	for i := range 256 {
		junk[2][i] = byte(i * 7)
	}
	for _, j := range junk {
		c, err := net.Dial("tcp", b.tr.Addr().String())
		must(t, err)
		_, _ = c.Write(j)
		c.Close()
	}
	// Garbage inside a valid gRPC stream: a message that is not a Batch.
	conn, err := grpc.NewClient(b.tr.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	st, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ClientStreams: true}, "/rafty.transport.v1.Raft/Stream",
		grpc.ForceCodecV2(newCodec()))
	must(t, err)
	_ = st.SendMsg(&rawBatchForTest{b: []byte{0xff, 0xff, 0xff}})
	_ = st.CloseSend()
	err = st.RecvMsg(new(pb.StreamResponse))
	expectf(t, status.Code(err) == codes.InvalidArgument, "status %v", err)

	a.tr.Send([]core.Message{heartbeat(1, 2, 1)})
	waitFor(t, "delivery after garbage", func() bool { return b.rec.count() == 1 })
}

// rawBatchForTest sends arbitrary bytes through the codec.
type rawBatchForTest struct{ b []byte }

func (r *rawBatchForTest) wireSize() int              { return len(r.b) }
func (r *rawBatchForTest) appendWire(b []byte) []byte { return append(b, r.b...) }

func TestMaxMessageSize(t *testing.T) {
	const maxBytes = 16 << 10
	nodes := newCluster(t, 2, func(c *Config) { c.MaxMessageBytes = maxBytes })
	a, b := nodes[0], nodes[1]
	payload := make([]byte, 1000)
	var msgs []core.Message
	for i := range 100 { // ~100 KB in one Send: needs several gRPC messages
		msgs = append(msgs, app(1, 2, uint64(i*10), payload))
	}
	a.tr.Send(msgs)
	waitFor(t, "split batch delivered", func() bool { return b.rec.count() == len(msgs) })
	equalMessages(t, b.rec.received(), msgs)
	s := a.tr.Stats()
	expectf(t, s.BatchesSent >= 100*1000/maxBytes+1, "only %d batches", s.BatchesSent)
	expectf(t, s.BytesSent/s.BatchesSent <= maxBytes, "average batch %d bytes", s.BytesSent/s.BatchesSent)

	// One message that cannot fit alone is dropped and reported; the
	// messages around it still go.
	big := app(1, 2, 5000, make([]byte, maxBytes))
	a.tr.Send([]core.Message{heartbeat(1, 2, 1), big, heartbeat(1, 2, 2)})
	waitFor(t, "neighbours", func() bool { return b.rec.count() == len(msgs)+2 })
	expectf(t, a.tr.Stats().Dropped[DropTooLarge] == 1, "drops %v", a.tr.Stats().Dropped)
	waitFor(t, "report", func() bool { return a.rec.unreachableCount(2) == 1 })

	// The receiver refuses oversize messages from a peer whose limit is
	// higher.
	conn, err := grpc.NewClient(b.tr.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	st, err := pb.NewRaftClient(conn).Stream(context.Background())
	must(t, err)
	bigPB := toPBMessage(&big)
	_ = st.Send(&pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{bigPB}})
	_, err = st.CloseAndRecv()
	expectf(t, status.Code(err) == codes.ResourceExhausted, "status %v", err)
}

func TestAddRemovePeer(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	// A third node joins: both sides learn of each other.
	lis := listen(t)
	rec := newRecorder()
	c := startNode(t, testConfig(3, lis, []driver.Peer{{ID: 1, Addr: a.tr.Addr().String()}}, rec))
	a.tr.Send([]core.Message{heartbeat(1, 3, 1)})
	expectf(t, a.tr.Stats().Dropped[DropUnknownPeer] == 1, "send to unknown peer")
	must(t, a.tr.AddPeer(3, lis.Addr().String()))
	must(t, a.tr.AddPeer(3, lis.Addr().String())) // no-op
	a.tr.Send([]core.Message{heartbeat(1, 3, 2)})
	waitFor(t, "delivery to new peer", func() bool { return rec.count() == 1 })
	c.Send([]core.Message{heartbeat(3, 1, 1)})
	waitFor(t, "delivery from new peer", func() bool { return a.rec.count() == 1 })

	expectf(t, a.tr.AddPeer(1, "x:1") != nil, "AddPeer(self)")
	expectf(t, a.tr.AddPeer(4, lis.Addr().String()) != nil, "AddPeer with a taken address")
	expectf(t, a.tr.AddPeer(4, "nope") != nil, "AddPeer with a bad address")

	// Removed: a refuses its batches and drops sends to it.
	a.tr.RemovePeer(3)
	a.tr.RemovePeer(3) // no-op
	known := slices.ContainsFunc(a.tr.Peers(), func(p driver.Peer) bool { return p.ID == 3 })
	expectf(t, !known, "peer 3 still listed")
	before := a.tr.Stats().Rejected[RejectUnknownSender]
	waitFor(t, "refusal after removal", func() bool {
		c.Send([]core.Message{heartbeat(3, 1, 2)})
		return a.tr.Stats().Rejected[RejectUnknownSender] > before
	})
	a.tr.Send([]core.Message{heartbeat(1, 3, 3)})
	expectf(t, a.tr.Stats().Dropped[DropUnknownPeer] == 2, "drops %v", a.tr.Stats().Dropped)
	_ = b
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	nodes := newCluster(t, 2, func(c *Config) {
		if c.NodeID == 1 {
			c.Registerer = reg
		}
	})
	nodes[0].tr.Send([]core.Message{heartbeat(1, 2, 1), heartbeat(1, 9, 1)})
	waitFor(t, "delivery", func() bool { return nodes[1].rec.count() == 1 })
	nodes[1].tr.Send([]core.Message{heartbeat(2, 1, 1)})
	waitFor(t, "reply", func() bool { return nodes[0].rec.count() == 1 })
	expectf(t, counterValue(t, nodes[0].tr.counters.promMsgsSent.WithLabelValues("2")) == 1, "messages_sent_total")
	expectf(t, counterValue(t, nodes[0].tr.counters.promMsgsRecv.WithLabelValues("2")) == 1, "messages_received_total")
	expectf(t, counterValue(t, nodes[0].tr.counters.promDropped.WithLabelValues("9", string(DropUnknownPeer))) == 1, "messages_dropped_total")
	families, err := reg.Gather()
	must(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"rafty_transport_messages_sent_total", "rafty_transport_bytes_sent_total",
		"rafty_transport_messages_received_total", "rafty_transport_messages_dropped_total"} {
		expectf(t, names[want], "%s not gathered (have %v)", want, names)
	}
	// A second transport on the same registry is refused with a clear
	// error, leaving the first one's metrics in place.
	_, err = New(Config{ClusterID: 1, NodeID: 5, ListenAddr: "127.0.0.1:0", Registerer: reg})
	expectf(t, err != nil && strings.Contains(err.Error(), "registering metrics"), "err %v", err)
	families, err = reg.Gather()
	must(t, err)
	expectf(t, len(families) > 0, "first transport's metrics gone")
	// Once the first is closed, its metrics are gone and a successor can
	// register.
	must(t, nodes[0].tr.Close())
	families, err = reg.Gather()
	must(t, err)
	expectf(t, len(families) == 0, "%d metric families left after Close", len(families))
	tr, err := New(Config{ClusterID: 1, NodeID: 5, ListenAddr: "127.0.0.1:0", Registerer: reg})
	must(t, err)
	must(t, tr.Close())
}

func TestCloseWithTrafficInFlight(t *testing.T) {
	lis := make([]net.Listener, 3)
	var peers []driver.Peer
	for i := range lis {
		lis[i] = listen(t)
		peers = append(peers, driver.Peer{ID: uint64(i + 1), Addr: lis[i].Addr().String()})
	}
	var trs []*GRPC
	for i := range lis {
		rec := newRecorder()
		tr, err := New(testConfig(uint64(i+1), lis[i], peers, rec))
		must(t, err)
		must(t, tr.Start(context.Background()))
		trs = append(trs, tr)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, tr := range trs {
		from := uint64(i + 1)
		wg.Go(func() {
			payload := make([]byte, 512)
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				var msgs []core.Message
				for to := uint64(1); to <= 3; to++ {
					if to != from {
						msgs = append(msgs, app(from, to, seq, payload))
					}
				}
				tr.Send(msgs)
			}
		})
		// A snapshot in flight too, from a reader that never ends.
		wg.Go(func() {
			msg := snapMsg(from, from%3+1)
			_ = tr.SendSnapshot(context.Background(), msg, endless{})
		})
	}
	waitFor(t, "traffic", func() bool {
		for _, tr := range trs {
			if s := tr.Stats(); s.MessagesReceived < 100 || s.SnapshotBytesReceived == 0 {
				return false
			}
		}
		return true
	})
	for _, tr := range trs {
		must(t, tr.Close())
	}
	close(stop)
	wg.Wait()
	goleak.VerifyNone(t)
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	must(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// endless is a snapshot reader that never reaches EOF.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i)
	}
	return len(p), nil
}

// TestClosingIsNotAnUnknownSender: Close empties the peer set before the
// server stops, so a batch from a configured peer arriving meanwhile must
// be told the node is shutting down, not be refused (and logged, and
// counted) as coming from a stranger — what a graceful stop of a whole
// cluster used to log on every member.
func TestClosingIsNotAnUnknownSender(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1].tr
	must(t, b.Close())
	err := b.checkHeader(batchHeader{clusterID: testCluster, from: 1, to: 2}, 0)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("batch from a configured peer during close: %v, want Unavailable (shutting down)", err)
	}
	if n := b.Stats().Rejected[RejectUnknownSender]; n != 0 {
		t.Fatalf("counted %d unknown-sender rejections during close", n)
	}
	// A batch claiming the receiver's own ID is still refused as forged.
	err = b.checkHeader(batchHeader{clusterID: testCluster, from: 2, to: 2}, 0)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("batch claiming to be from the receiver during close: %v, want PermissionDenied", err)
	}
}

// TestPeerShuttingDownIsNotAFault: the answer of a peer that is closing
// (what checkHeader returns during Close), wrapped or not, is recognised,
// so the sender logs it at Info instead of warning on every graceful stop.
func TestPeerShuttingDownIsNotAFault(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1].tr
	must(t, b.Close())
	answer := b.checkHeader(batchHeader{clusterID: testCluster, from: 1, to: 2}, 0)
	for _, err := range []error{answer, fmt.Errorf("stream to peer 2: %w", answer)} {
		if !peerShuttingDown(err) {
			t.Errorf("%v: not recognised as a peer shutting down", err)
		}
	}
	for _, err := range []error{
		status.Error(codes.Unavailable, "connection refused"),
		status.Error(codes.PermissionDenied, "transport: node 2 is shutting down"),
		errors.New("transport: node 2 is shutting down"),
	} {
		if peerShuttingDown(err) {
			t.Errorf("%v: taken for a peer shutting down", err)
		}
	}
}
