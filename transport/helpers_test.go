package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait in these tests; generous for -race on a
// loaded 2-core machine, and never reached when things work.
const waitTimeout = 20 * time.Second

// waitFor polls cond until it holds, failing the test after waitTimeout.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// recorder is a driver.MessageHandler that records what it is given.
type recorder struct {
	mu          sync.Mutex
	msgs        []core.Message
	batches     int
	unreachable map[uint64]int
	// block, if non-nil, is received from before each batch is recorded.
	block chan struct{}
	// snapshot, if set, handles snapshots; the default drains the data.
	snapshot func(ctx context.Context, msg core.Message, data io.Reader) error
	// changed is signalled (without blocking) on every change.
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{unreachable: map[uint64]int{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) HandleMessages(ctx context.Context, msgs []core.Message) error {
	if r.block != nil {
		select {
		case <-r.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, msgs...)
	r.batches++
	r.mu.Unlock()
	r.signal()
	return nil
}

func (r *recorder) HandleSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	if r.snapshot != nil {
		return r.snapshot(ctx, msg, data)
	}
	_, err := io.Copy(io.Discard, data)
	return err
}

func (r *recorder) ReportUnreachable(peer uint64) {
	r.mu.Lock()
	r.unreachable[peer]++
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) received() []core.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]core.Message(nil), r.msgs...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func (r *recorder) unreachableCount(peer uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[peer]
}

// node is one transport under test with its handler.
type node struct {
	id  uint64
	tr  *GRPC
	rec *recorder
}

const testCluster = 7

// listen opens a loopback listener on a free port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// testConfig is a configuration tuned for fast tests.
func testConfig(id uint64, lis net.Listener, peers []driver.Peer, h *recorder) Config {
	return Config{
		ClusterID:          testCluster,
		NodeID:             id,
		Listener:           lis,
		Peers:              peers,
		Handler:            h,
		DialTimeout:        2 * time.Second,
		ReconnectBaseDelay: 20 * time.Millisecond,
		ReconnectMaxDelay:  200 * time.Millisecond,
		CloseTimeout:       2 * time.Second,
	}
}

// startNode creates and starts a transport, closed at test cleanup.
func startNode(t testing.TB, cfg Config) *GRPC {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// newCluster starts n transports (IDs 1..n) that know each other.
// mod, if non-nil, adjusts each configuration.
func newCluster(t testing.TB, n int, mod func(*Config)) []*node {
	t.Helper()
	lis := make([]net.Listener, n)
	var peers []driver.Peer
	for i := range lis {
		lis[i] = listen(t)
		peers = append(peers, driver.Peer{ID: uint64(i + 1), Addr: lis[i].Addr().String()})
	}
	nodes := make([]*node, n)
	for i := range nodes {
		id := uint64(i + 1)
		rec := newRecorder()
		cfg := testConfig(id, lis[i], peers, rec)
		if mod != nil {
			mod(&cfg)
		}
		nodes[i] = &node{id: id, tr: startNode(t, cfg), rec: rec}
	}
	return nodes
}

// app builds a MsgApp from -> to carrying one entry per payload.
func app(from, to, index uint64, payloads ...[]byte) core.Message {
	m := core.Message{Type: core.MsgApp, From: from, To: to, Term: 3, LogTerm: 3, Index: index, Commit: index}
	for i, p := range payloads {
		m.Entries = append(m.Entries, core.Entry{Index: index + 1 + uint64(i), Term: 3, Data: p})
	}
	return m
}

// heartbeat builds a numbered heartbeat; Context carries seq.
func heartbeat(from, to, seq uint64) core.Message {
	return core.Message{Type: core.MsgHeartbeat, From: from, To: to, Term: 2, Commit: seq, Context: seq}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func expectf(t testing.TB, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Fatalf(format, args...)
	}
}
