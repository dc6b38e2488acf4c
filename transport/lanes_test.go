package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// perLane splits msgs by the lane they travel on, keeping their order:
// the transport orders each lane, not the two together.
func perLane(msgs []core.Message) (urgent, bulk []core.Message) {
	for _, m := range msgs {
		if laneOf(m.Type, messageSize(&m)) == laneUrgent {
			urgent = append(urgent, m)
		} else {
			bulk = append(bulk, m)
		}
	}
	return urgent, bulk
}

// heartbeatBenchVariants are the layouts BenchmarkHeartbeatUnderBulk
// compares: each lane on its own connection (what the transport does),
// and both lanes as two HTTP/2 streams of one connection.
var heartbeatBenchVariants = []struct {
	name string
	mod  func(*GRPC)
}{
	{"lanes=2/conns=2", func(*GRPC) {}},
	{"lanes=2/conns=1", func(t *GRPC) { t.hooks.sharedLaneConn = true }},
}

// TestEveryMessageTypeHasALane: each core message type is decided in
// urgentType, so that a type added to the core must be placed too.
func TestEveryMessageTypeHasALane(t *testing.T) {
	n := 1
	for !strings.HasPrefix(core.MessageType(n).String(), "MessageType(") {
		n++
	}
	expectf(t, len(urgentType) == n, "urgentType decides %d types, the core has %d", len(urgentType), n)
	for typ := core.MessageType(1); int(typ) < n; typ++ {
		t.Logf("%-18v %v", typ, laneOf(typ, 0))
	}
	urgent := []core.MessageType{core.MsgHeartbeat, core.MsgHeartbeatResp, core.MsgVote, core.MsgVoteResp,
		core.MsgPreVote, core.MsgPreVoteResp, core.MsgReadIndex, core.MsgReadIndexResp, core.MsgTimeoutNow,
		core.MsgTransferLeader, core.MsgPropResp}
	for _, typ := range urgent {
		expectf(t, laneOf(typ, 64) == laneUrgent, "%v is not urgent", typ)
		expectf(t, laneOf(typ, MaxUrgentMessageBytes) == laneUrgent, "%v of MaxUrgentMessageBytes is not urgent", typ)
		expectf(t, laneOf(typ, MaxUrgentMessageBytes+1) == laneBulk, "%v above MaxUrgentMessageBytes is not bulk", typ)
	}
	for _, typ := range []core.MessageType{core.MsgApp, core.MsgAppResp, core.MsgProp} {
		expectf(t, laneOf(typ, 64) == laneBulk, "%v is not bulk", typ)
	}
	// A refusal of large forwarded proposals travels bulk.
	big := core.Message{Type: core.MsgPropResp, From: 1, To: 2, Entries: []core.Entry{{Data: make([]byte, MaxUrgentMessageBytes)}}}
	expectf(t, laneOf(big.Type, messageSize(&big)) == laneBulk, "a large MsgPropResp is urgent")
}

// appGate is a handler whose deliveries of appends block until released:
// a follower slow to take appends, so that the bulk lane to it saturates
// (its handler, then its stream's flow-control window, then the sender's
// queue fill up).
type appGate struct {
	*recorder
	release chan struct{}
	appsIn  atomic.Int64 // MsgApps whose delivery has begun
}

func (g *appGate) HandleMessages(ctx context.Context, msgs []core.Message) error {
	if slices.ContainsFunc(msgs, func(m core.Message) bool { return m.Type == core.MsgApp }) {
		g.appsIn.Add(int64(len(msgs)))
		select {
		case <-g.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.recorder.HandleMessages(ctx, msgs)
}

// TestHeartbeatsOvertakeSaturatedBulkLane: with the follower's handler
// stuck on the first append and many more (16 MiB, beyond every window)
// queued behind it, heartbeats and a vote still arrive, before any append
// has been delivered; once the follower takes appends again, all of
// them arrive, in order. With one lane the heartbeats would wait for
// every append queued before them.
func TestHeartbeatsOvertakeSaturatedBulkLane(t *testing.T) {
	gate := &appGate{recorder: newRecorder(), release: make(chan struct{})}
	lisA, lisB := listen(t), listen(t)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	a := startNode(t, testConfig(1, lisA, peers, newRecorder()))
	cfgB := testConfig(2, lisB, peers, nil)
	cfgB.Handler = gate
	startNode(t, cfgB)
	var released sync.Once
	release := func() { released.Do(func() { close(gate.release) }) }
	t.Cleanup(release)

	const apps = 256
	payload := make([]byte, 64<<10)
	for i := range apps {
		a.Send([]core.Message{app(1, 2, uint64(i*10), payload)})
	}
	waitFor(t, "the first append to reach the follower's handler", func() bool { return gate.appsIn.Load() > 0 })
	const hbs = 10
	for seq := uint64(1); seq <= hbs; seq++ {
		a.Send([]core.Message{heartbeat(1, 2, seq)})
	}
	a.Send([]core.Message{{Type: core.MsgVote, To: 2, Term: 4, Index: 7, LogTerm: 3}})
	waitFor(t, "heartbeats and vote", func() bool { return gate.count() == hbs+1 })
	urgent, bulk := perLane(gate.received())
	expectf(t, len(bulk) == 0, "%d appends delivered before the heartbeats", len(bulk))
	for i, m := range urgent[:hbs] {
		expectf(t, m.Type == core.MsgHeartbeat && m.Context == uint64(i+1), "urgent message %d is %v", i, m)
	}
	expectf(t, urgent[hbs].Type == core.MsgVote, "last urgent message %v", urgent[hbs])
	s := a.Stats().Peers[2]
	// The bulk lane is stuck: not everything could be handed to gRPC (the
	// rest is queued or in the lane goroutine's hands, blocked on flow
	// control).
	expectf(t, s.Bulk.MessagesSent < apps, "all %d appends handed to gRPC: the bulk lane was not saturated", apps)
	t.Logf("while the follower was stuck: %d appends handed to gRPC, %d still queued (%d bytes)", s.Bulk.MessagesSent, s.Bulk.QueueLen, s.Bulk.QueueBytes)

	release()
	waitFor(t, "every append", func() bool { return gate.count() == hbs+1+apps })
	_, bulk = perLane(gate.received())
	for i, m := range bulk {
		expectf(t, m.Type == core.MsgApp && m.Index == uint64(i*10), "append %d is %v", i, m)
	}
	expectf(t, a.Stats().DroppedTotal() == 0, "drops %v", a.Stats().Dropped)
}

// gaugeValue returns the value of a gathered gauge with the given labels.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	must(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v gathered", name, labels)
	return 0
}

// TestLaneLimits fills each lane of a transport that is not started (so
// nothing drains the queues) to its limits, in messages and in bytes:
// each lane holds exactly its limit, drops the next message (counted for
// its lane, queue_full, and reported unreachable once the transport
// runs), and a full lane does not stop the other from taking messages.
func TestLaneLimits(t *testing.T) {
	const (
		urgentLen  = 8
		maxMsg     = 64 << 10
		bulkBytes  = maxMsg // the smallest allowed
		bulkLen    = 1000   // the byte limit binds first
		urgentSize = 2 << 10
	)
	reg := prometheus.NewRegistry()
	down := listen(t)
	downAddr := down.Addr().String()
	must(t, down.Close())
	rec := newRecorder()
	cfg := testConfig(1, listen(t), []driver.Peer{{ID: 2, Addr: downAddr}}, rec)
	cfg.UrgentQueueLen = urgentLen
	cfg.MaxMessageBytes = maxMsg
	cfg.BulkQueueBytes = bulkBytes
	cfg.BulkQueueLen = bulkLen
	cfg.Registerer = reg
	tr, err := New(cfg)
	must(t, err)
	t.Cleanup(func() { _ = tr.Close() })

	// Urgent lane: its message limit.
	for seq := uint64(1); seq <= urgentLen+3; seq++ {
		tr.Send([]core.Message{heartbeat(1, 2, seq)})
	}
	s := tr.Stats().Peers[2]
	expectf(t, s.Urgent.QueueLen == urgentLen, "urgent queue %d, want %d", s.Urgent.QueueLen, urgentLen)
	expectf(t, s.Urgent.MessagesDropped == 3, "urgent drops %d, want 3", s.Urgent.MessagesDropped)
	expectf(t, s.Bulk.QueueLen == 0 && s.Bulk.MessagesDropped == 0, "bulk touched: %+v", s.Bulk)

	// Bulk lane: its byte limit, with the urgent lane full.
	payload := make([]byte, 10<<10)
	m := app(1, 2, 1000, payload) // indexes 1000 to 1010 encode in as many bytes
	size := messageSize(&m)
	fit := bulkBytes / size
	for i := range fit + 2 {
		tr.Send([]core.Message{app(1, 2, uint64(1000+i), payload)})
	}
	s = tr.Stats().Peers[2]
	expectf(t, s.Bulk.QueueLen == fit, "bulk queue %d, want %d (%d bytes each, limit %d)", s.Bulk.QueueLen, fit, size, bulkBytes)
	expectf(t, s.Bulk.QueueBytes == fit*size && s.Bulk.QueueBytes <= bulkBytes, "bulk queue bytes %d", s.Bulk.QueueBytes)
	expectf(t, s.Bulk.MessagesDropped == 2, "bulk drops %d, want 2", s.Bulk.MessagesDropped)
	// A smaller message still fits in what is left of the bytes, and the
	// exact remainder is usable.
	left := bulkBytes - s.Bulk.QueueBytes
	small := core.Message{Type: core.MsgAppResp, From: 1, To: 2, Term: 3, Index: 1}
	expectf(t, messageSize(&small) <= left, "test setup: %d bytes left, a response takes %d", left, messageSize(&small))
	tr.Send([]core.Message{small})
	s = tr.Stats().Peers[2]
	expectf(t, s.Bulk.QueueLen == fit+1 && s.Bulk.MessagesDropped == 2, "after a small message: %+v", s.Bulk)

	// Urgent lane: its byte limit (with a limit of messages far above).
	cfg2 := testConfig(1, listen(t), []driver.Peer{{ID: 2, Addr: downAddr}}, newRecorder())
	cfg2.UrgentQueueBytes = MaxUrgentMessageBytes
	tr2, err := New(cfg2)
	must(t, err)
	t.Cleanup(func() { _ = tr2.Close() })
	refusal := func(n int) core.Message {
		return core.Message{Type: core.MsgPropResp, From: 1, To: 2, Reject: true, Entries: []core.Entry{{Data: make([]byte, n)}}}
	}
	r := refusal(urgentSize)
	rs := messageSize(&r)
	expectf(t, laneOf(r.Type, rs) == laneUrgent, "test setup: a %d-byte refusal is not urgent", rs)
	tr2.Send([]core.Message{r, r, r})
	s2 := tr2.Stats().Peers[2]
	want := MaxUrgentMessageBytes / rs
	expectf(t, s2.Urgent.QueueLen == want && s2.Urgent.MessagesDropped == uint64(3-want), "urgent by bytes: %+v (each %d)", s2.Urgent, rs)

	// Per-lane metrics.
	lbl := func(lane string) map[string]string { return map[string]string{"peer": "2", "lane": lane} }
	expectf(t, gaugeValue(t, reg, "rafty_transport_lane_queued_messages", lbl(LaneUrgent)) == urgentLen, "urgent queue gauge")
	expectf(t, gaugeValue(t, reg, "rafty_transport_lane_queued_messages", lbl(LaneBulk)) == float64(fit+1), "bulk queue gauge")
	expectf(t, gaugeValue(t, reg, "rafty_transport_lane_queued_bytes", lbl(LaneBulk)) == float64(s.Bulk.QueueBytes), "bulk bytes gauge")
	expectf(t, gaugeValue(t, reg, "rafty_transport_lane_messages_dropped_total", lbl(LaneUrgent)) == 3, "urgent drops counter")
	expectf(t, gaugeValue(t, reg, "rafty_transport_lane_messages_dropped_total", lbl(LaneBulk)) == 2, "bulk drops counter")
	expectf(t, tr.Stats().Dropped[DropQueueFull] == 5, "queue_full drops %v", tr.Stats().Dropped)

	// The drops are reported once the transport runs (its reporter
	// delivers them).
	must(t, tr.Start(context.Background()))
	waitFor(t, "ReportUnreachable", func() bool { return rec.unreachableCount(2) > 0 })
}

// failOn is a handler that fails the batch holding a heartbeat with
// Context failCtx, which ends that stream (status Unavailable).
type failOn struct {
	*recorder
	failCtx uint64
	failed  atomic.Int64
}

func (f *failOn) HandleMessages(ctx context.Context, msgs []core.Message) error {
	for _, m := range msgs {
		if m.Type == core.MsgHeartbeat && m.Context == f.failCtx {
			f.failed.Add(1)
			return errors.New("handler failed")
		}
	}
	return f.recorder.HandleMessages(ctx, msgs)
}

// TestOneLaneReconnects: when the urgent lane's stream breaks, that lane
// alone reconnects; the bulk lane keeps its stream, and both keep
// delivering.
func TestOneLaneReconnects(t *testing.T) {
	const failCtx = 1000
	h := &failOn{recorder: newRecorder(), failCtx: failCtx}
	lisA, lisB := listen(t), listen(t)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	a := startNode(t, testConfig(1, lisA, peers, newRecorder()))
	cfgB := testConfig(2, lisB, peers, nil)
	cfgB.Handler = h
	startNode(t, cfgB)

	a.Send([]core.Message{app(1, 2, 1, []byte("a")), heartbeat(1, 2, 1)})
	waitFor(t, "both lanes deliver", func() bool { return h.count() == 2 })
	s := a.Stats().Peers[2]
	expectf(t, s.Urgent.StreamsOpened == 1 && s.Bulk.StreamsOpened == 1, "streams opened: urgent %d, bulk %d", s.Urgent.StreamsOpened, s.Bulk.StreamsOpened)

	// The receiver fails the urgent stream.
	a.Send([]core.Message{heartbeat(1, 2, failCtx)})
	waitFor(t, "the failing batch", func() bool { return h.failed.Load() == 1 })
	// Heartbeats sent until one arrives on a new stream: the first ones
	// may still go to the broken stream and be lost, as Raft allows.
	seq := uint64(failCtx)
	delivered := func() bool {
		for _, m := range h.received() {
			if m.Type == core.MsgHeartbeat && m.Context > failCtx {
				return true
			}
		}
		return false
	}
	waitFor(t, "urgent lane back", func() bool {
		if delivered() {
			return true
		}
		seq++
		a.Send([]core.Message{heartbeat(1, 2, seq)})
		return false
	})
	a.Send([]core.Message{app(1, 2, 2, []byte("b"))})
	waitFor(t, "bulk still delivers", func() bool {
		_, bulk := perLane(h.received())
		return len(bulk) == 2
	})
	s = a.Stats().Peers[2]
	expectf(t, s.Urgent.StreamsOpened == 2, "urgent streams opened %d, want 2", s.Urgent.StreamsOpened)
	expectf(t, s.Bulk.StreamsOpened == 1, "bulk streams opened %d, want 1: the bulk lane reconnected too", s.Bulk.StreamsOpened)
	expectf(t, s.Bulk.MessagesDropped == 0, "bulk drops %d", s.Bulk.MessagesDropped)
	_, bulk := perLane(h.received())
	expectf(t, bulk[0].Index == 1 && bulk[1].Index == 2, "bulk order %v", bulk)
}

// TestPeerWithoutUrgentLane: a peer from before the lanes serves Stream
// but not UrgentStream. The sender finds out (Unimplemented), sends
// everything over Stream from then on, and the peer gets every urgent
// message in order after the first one or two sent to the urgent lane.
func TestPeerWithoutUrgentLane(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	a := startNode(t, testConfig(1, lisA, peers, newRecorder()))
	// Node 2 is a transport whose server only has the old service.
	rec := newRecorder()
	b, err := New(testConfig(2, listen(t), peers, rec))
	must(t, err)
	t.Cleanup(func() { _ = b.Close() })
	old := pb.Raft_ServiceDesc
	old.Streams = slices.DeleteFunc(slices.Clone(old.Streams), func(d grpc.StreamDesc) bool { return d.StreamName == "UrgentStream" })
	srv := grpc.NewServer(grpc.ForceServerCodecV2(b.codec))
	srv.RegisterService(&old, &server{t: b})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lisB)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})

	// Heartbeats until one arrives: the first go to the urgent lane and
	// are lost or diverted.
	seq := uint64(0)
	waitFor(t, "a heartbeat through the old stream", func() bool {
		if rec.count() > 0 {
			return true
		}
		seq++
		a.Send([]core.Message{heartbeat(1, 2, seq)})
		return false
	})
	p := a.peer(2)
	expectf(t, p.singleLane.Load(), "the peer is not marked as single-lane")
	// Heartbeats sent before may still be on their way (diverted); the
	// ones that follow travel with the appends, in Send order.
	for i := uint64(1); i <= 100; i++ {
		a.Send([]core.Message{heartbeat(1, 2, seq+i), app(1, 2, seq+i, []byte("x"))})
	}
	last := func(m core.Message) bool { return m.Type == core.MsgApp && m.Index == seq+100 }
	waitFor(t, "the last append", func() bool { return slices.ContainsFunc(rec.received(), last) })
	got := slices.DeleteFunc(rec.received(), func(m core.Message) bool { return m.Type == core.MsgHeartbeat && m.Context <= seq })
	expectf(t, len(got) == 200, "%d messages after the first heartbeat, want 200", len(got))
	for i, m := range got {
		want := seq + uint64(i/2) + 1
		expectf(t, (m.Type == core.MsgHeartbeat) == (i%2 == 0) && m.Context == want || m.Type == core.MsgApp && m.Index == want,
			"message %d is %v: one stream must keep Send order", i, m)
	}
	s := a.Stats().Peers[2]
	expectf(t, s.Urgent.StreamsOpened == 1, "urgent streams opened %d: the sender kept retrying the urgent lane", s.Urgent.StreamsOpened)
	expectf(t, s.Bulk.MessagesDropped == 0, "bulk drops %d", s.Bulk.MessagesDropped)
}

// rawUrgentStream opens an urgent-lane stream to tr with the stock
// generated client, as rawStream does a bulk one.
func rawUrgentStream(t *testing.T, tr *GRPC) pb.Raft_UrgentStreamClient {
	t.Helper()
	conn, err := grpc.NewClient(tr.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	st, err := pb.NewRaftClient(conn).UrgentStream(ctx)
	must(t, err)
	return st
}

// TestLanesAreOrderedApart: a sender's urgent and bulk streams deliver
// side by side, neither superseding the other (each lane has its own
// order); a second stream of one lane still supersedes the first.
func TestLanesAreOrderedApart(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1]
	batch := func(seq uint64) *pb.Batch {
		m := heartbeat(1, 2, seq)
		return &pb.Batch{ClusterId: testCluster, From: 1, To: 2, Messages: []*pb.Message{toPBMessage(&m)}}
	}
	bulk := rawStream(t, b.tr)
	urgent := rawUrgentStream(t, b.tr)
	must(t, bulk.Send(batch(1)))
	waitFor(t, "bulk delivers", func() bool { return b.rec.count() == 1 })
	must(t, urgent.Send(batch(2)))
	waitFor(t, "urgent delivers", func() bool { return b.rec.count() == 2 })
	must(t, bulk.Send(batch(3)))
	waitFor(t, "bulk delivers again", func() bool { return b.rec.count() == 3 })
	must(t, urgent.Send(batch(4)))
	waitFor(t, "urgent delivers again", func() bool { return b.rec.count() == 4 })

	newer := rawUrgentStream(t, b.tr)
	must(t, newer.Send(batch(5)))
	waitFor(t, "the newer urgent stream delivers", func() bool { return b.rec.count() == 5 })
	_ = urgent.Send(batch(6))
	_, err := urgent.CloseAndRecv()
	expectf(t, status.Code(err) == codes.Aborted, "old urgent stream ended with %v", err)
	must(t, bulk.Send(batch(7)))
	waitFor(t, "bulk unaffected", func() bool { return b.rec.count() == 6 })
	var seqs []uint64
	for _, m := range b.rec.received() {
		seqs = append(seqs, m.Context)
	}
	expectf(t, slices.Equal(seqs, []uint64{1, 2, 3, 4, 5, 7}), "delivered %v", seqs)
}

// TestUrgentStreamChecksLikeStream: the urgent lane's RPC refuses what
// Stream refuses (it is the same receive loop).
func TestUrgentStreamChecksLikeStream(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1]
	for _, tc := range []struct {
		name  string
		batch *pb.Batch
		code  codes.Code
	}{
		{"other cluster", &pb.Batch{ClusterId: testCluster + 1, From: 1, To: 2}, codes.FailedPrecondition},
		{"unknown sender", &pb.Batch{ClusterId: testCluster, From: 9, To: 2}, codes.PermissionDenied},
		{"wrong receiver", &pb.Batch{ClusterId: testCluster, From: 1, To: 3}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := rawUrgentStream(t, b.tr)
			if err := st.Send(tc.batch); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			_, err := st.CloseAndRecv()
			expectf(t, status.Code(err) == tc.code, "status %v, want %v", err, tc.code)
		})
	}
}

// TestSharedLaneConnCloses: the layout the benchmark compares with (both
// lanes on one connection) delivers on both lanes and leaves nothing
// behind when closed (TestMain checks for leaked goroutines).
func TestSharedLaneConnCloses(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	a, err := New(testConfig(1, lisA, peers, newRecorder()))
	must(t, err)
	a.hooks.sharedLaneConn = true
	must(t, a.Start(context.Background()))
	t.Cleanup(func() { _ = a.Close() })
	rec := newRecorder()
	startNode(t, testConfig(2, lisB, peers, rec))
	a.Send([]core.Message{app(1, 2, 1, []byte("x")), heartbeat(1, 2, 1)})
	waitFor(t, "both lanes deliver", func() bool { return rec.count() == 2 })
	p := a.peer(2)
	p.sharedMu.Lock()
	shared := p.shared
	p.sharedMu.Unlock()
	expectf(t, shared != nil && p.lanes[laneUrgent].lc.streams.Load() == 1 && p.lanes[laneBulk].lc.streams.Load() == 1, "lanes not on a shared connection")
	must(t, a.Close())
}

// TestBulkLaneReconnectsAlone: when the bulk lane's stream breaks, the
// urgent lane keeps its stream.
func TestBulkLaneReconnectsAlone(t *testing.T) {
	h := &failOnApp{recorder: newRecorder(), failIndex: 1000}
	lisA, lisB := listen(t), listen(t)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	a := startNode(t, testConfig(1, lisA, peers, newRecorder()))
	cfgB := testConfig(2, lisB, peers, nil)
	cfgB.Handler = h
	startNode(t, cfgB)

	a.Send([]core.Message{app(1, 2, 1, []byte("a")), heartbeat(1, 2, 1)})
	waitFor(t, "both lanes deliver", func() bool { return h.count() == 2 })
	a.Send([]core.Message{app(1, 2, h.failIndex, []byte("boom"))})
	waitFor(t, "the failing batch", func() bool { return h.failed.Load() == 1 })
	idx := uint64(2)
	waitFor(t, "bulk lane back", func() bool {
		_, bulk := perLane(h.received())
		if len(bulk) > 1 {
			return true
		}
		a.Send([]core.Message{app(1, 2, idx, []byte("b"))})
		idx++
		return false
	})
	a.Send([]core.Message{heartbeat(1, 2, 2)})
	waitFor(t, "urgent still delivers", func() bool {
		urgent, _ := perLane(h.received())
		return len(urgent) == 2
	})
	s := a.Stats().Peers[2]
	expectf(t, s.Bulk.StreamsOpened == 2, "bulk streams opened %d, want 2", s.Bulk.StreamsOpened)
	expectf(t, s.Urgent.StreamsOpened == 1, "urgent streams opened %d, want 1: the urgent lane reconnected too", s.Urgent.StreamsOpened)
	expectf(t, s.Urgent.MessagesDropped == 0, "urgent drops %d", s.Urgent.MessagesDropped)
}

// failOnApp fails the batch holding a MsgApp at failIndex.
type failOnApp struct {
	*recorder
	failIndex uint64
	failed    atomic.Int64
}

func (f *failOnApp) HandleMessages(ctx context.Context, msgs []core.Message) error {
	for _, m := range msgs {
		if m.Type == core.MsgApp && m.Index == f.failIndex {
			f.failed.Add(1)
			return errors.New("handler failed")
		}
	}
	return f.recorder.HandleMessages(ctx, msgs)
}

// TestUpgradedPeerGetsUrgentLaneAgain: a peer without the urgent lane is
// replaced at the same address by one with it (a rolling upgrade). Once
// the bulk lane reconnects, the sender tries the urgent lane again and
// uses it.
func TestUpgradedPeerGetsUrgentLaneAgain(t *testing.T) {
	lisA, lisB := listen(t), listen(t)
	addrB := lisB.Addr().String()
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: addrB}}
	a := startNode(t, testConfig(1, lisA, peers, newRecorder()))
	rec := newRecorder()
	b, err := New(testConfig(2, listen(t), peers, rec))
	must(t, err)
	t.Cleanup(func() { _ = b.Close() })
	old := pb.Raft_ServiceDesc
	old.Streams = slices.DeleteFunc(slices.Clone(old.Streams), func(d grpc.StreamDesc) bool { return d.StreamName == "UrgentStream" })
	srv := grpc.NewServer(grpc.ForceServerCodecV2(b.codec))
	srv.RegisterService(&old, &server{t: b})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lisB)
	}()
	seq := uint64(0)
	waitFor(t, "a heartbeat through the old stream", func() bool {
		if rec.count() > 0 {
			return true
		}
		seq++
		a.Send([]core.Message{heartbeat(1, 2, seq)})
		return false
	})
	p := a.peer(2)
	expectf(t, p.singleLane.Load(), "the peer is not marked as single-lane")
	srv.Stop()
	<-served
	must(t, b.Close())

	// The upgraded peer, at the same address.
	lisB2, err := net.Listen("tcp", addrB)
	must(t, err)
	rec2 := newRecorder()
	startNode(t, testConfig(2, lisB2, peers, rec2))
	urgentSent := a.Stats().Peers[2].Urgent.MessagesSent
	waitFor(t, "heartbeats over the urgent lane again", func() bool {
		if !p.singleLane.Load() && a.Stats().Peers[2].Urgent.MessagesSent > urgentSent && rec2.count() > 0 {
			return true
		}
		seq++
		a.Send([]core.Message{heartbeat(1, 2, seq)})
		return false
	})
	expectf(t, a.Stats().Peers[2].Urgent.StreamsOpened == 2, "urgent streams opened %d, want 2", a.Stats().Peers[2].Urgent.StreamsOpened)
}
