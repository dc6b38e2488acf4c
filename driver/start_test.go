package driver_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
	"github.com/rafty-db/rafty/transport"
)

// starterTransport is an in-memory transport that, like transport.GRPC,
// must be started. It records Start and Close.
type starterTransport struct {
	driver.Transport
	startErr error
	starts   atomic.Int32
	startCtx context.Context
	closed   atomic.Bool
}

func (s *starterTransport) Start(ctx context.Context) error {
	s.starts.Add(1)
	s.startCtx = ctx
	return s.startErr
}

func (s *starterTransport) Close() error {
	s.closed.Store(true)
	return s.Transport.Close()
}

// singleNode is a valid one-node configuration on nw whose transport is st.
func singleNode(nw *drivertest.Network, store driver.Storage, st *starterTransport) driver.Config {
	return driver.Config{
		ID: 1, Peers: idPeers(1), Storage: store, StateMachine: &testSM{},
		TickInterval: 10 * time.Millisecond, Logger: testLogger(),
		NewTransport: func(h driver.MessageHandler) (driver.Transport, error) {
			inner, err := nw.NewTransport(1)(h)
			st.Transport = inner
			return st, err
		},
	}
}

// listenLoopback opens a listener on a free loopback port, closed at the
// end of the test unless a transport closed it first.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

type ctxKey struct{}

// TestStartStartsNodeOwnedTransport: a transport returned by NewTransport
// that implements Starter is started once, by Start, with a context that
// carries Start's values but is never cancelled (the node closes the
// transport itself, after its loop).
func TestStartStartsNodeOwnedTransport(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	st := &starterTransport{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	n, err := driver.Start(ctx, singleNode(nw, newStallStore(), st))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.starts.Load(); got != 1 {
		t.Fatalf("transport started %d times by Start, want 1", got)
	}
	if st.startCtx.Value(ctxKey{}) != "v" || st.startCtx.Done() != nil {
		t.Fatalf("transport started with a context that lacks Start's values or can be cancelled")
	}
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Propose(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if !st.closed.Load() || st.starts.Load() != 1 {
		t.Fatalf("after Stop: closed %v, starts %d", st.closed.Load(), st.starts.Load())
	}
}

// TestStartFailsWhenTransportCannotStart: a transport that fails to start
// fails Start at once, naming the cause; the transport is closed, the
// metrics are unregistered and the storage is left to the caller.
func TestStartFailsWhenTransportCannotStart(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	store := newStallStore()
	reg := prometheus.NewRegistry()
	st := &starterTransport{startErr: errors.New("port 7000 in use")}
	cfg := singleNode(nw, store, st)
	cfg.Registerer = reg
	_, err := driver.Start(context.Background(), cfg)
	want := "driver: starting the transport NewTransport returned (the node starts it; NewTransport must only build it): port 7000 in use"
	if err == nil || err.Error() != want {
		t.Fatalf("Start error = %v, want %q", err, want)
	}
	if !st.closed.Load() || store.closes.Load() != 0 {
		t.Fatalf("after a failed Start: transport closed %v, storage closes %d (want true, 0)", st.closed.Load(), store.closes.Load())
	}
	// The same registry takes a new node: the failed one unregistered.
	ok := &starterTransport{}
	cfg = singleNode(nw, store, ok)
	cfg.Registerer = reg
	n, err := driver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStartWithGRPCTransport: transport.GRPC returned by NewTransport is
// started by the node, so a cluster forms without the embedder starting
// anything; a factory that already started it does no harm.
func TestStartWithGRPCTransport(t *testing.T) {
	var peers []driver.Peer
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= 3; id++ {
		lns[id] = listenLoopback(t)
		peers = append(peers, driver.Peer{ID: id, Addr: lns[id].Addr().String()})
	}
	config := func(id uint64, factory func(transport.Config) (driver.Transport, error)) driver.Config {
		return driver.Config{
			ID: id, Peers: peers, Storage: newStallStore(), StateMachine: &testSM{}, Logger: testLogger(),
			TickInterval: realTick, TuneRaft: func(rc *core.Config) { rc.ElectionTicks = 10 },
			NewTransport: func(h driver.MessageHandler) (driver.Transport, error) {
				return factory(transport.Config{ClusterID: realClusterID, NodeID: id, Listener: lns[id], Peers: peers, Handler: h, Logger: testLogger()})
			},
		}
	}
	build := func(tc transport.Config) (driver.Transport, error) { return transport.New(tc) }

	// A factory that starts the transport itself is harmless:
	// transport.GRPC's Start is idempotent (it may run before the driver,
	// serving the peer-port Cluster service while a node decides whether
	// to join). It uses a listener of its own.
	startedTwice := func(tc transport.Config) (driver.Transport, error) {
		tc.Listener = listenLoopback(t)
		tr, err := transport.New(tc)
		if err != nil {
			return nil, err
		}
		return tr, tr.Start(context.Background())
	}
	early, err := driver.Start(context.Background(), config(1, startedTwice))
	if err != nil {
		t.Fatalf("Start with a transport started by its factory: %v", err)
	}
	if err := early.Stop(); err != nil {
		t.Fatal(err)
	}

	var nodes []*driver.Node
	for id := uint64(1); id <= 3; id++ {
		n, err := driver.Start(context.Background(), config(id, build))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
	defer cancel()
	lead, err := nodes[0].WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	follower := nodes[0]
	if lead == 1 {
		follower = nodes[1]
	}
	for {
		_, err := follower.Propose(ctx, []byte("over gRPC"))
		if !errors.Is(err, driver.ErrProposalDropped) { // a leader change: not applied, retry
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
}

// TestStartWithDoneContext: a context that is already done fails Start
// at once and starts nothing.
func TestStartWithDoneContext(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	store := newStallStore()
	st := &starterTransport{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := driver.Start(ctx, singleNode(nw, store, st))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not starting node 1") {
		t.Fatalf("Start with a cancelled context: err = %v", err)
	}
	if st.Transport != nil || store.closes.Load() != 0 {
		t.Fatal("a Start refused for its context built a transport or closed the storage")
	}
}

// TestStartContextBoundsNodeLifetime: cancelling the context given to
// Start stops the node as Stop does.
func TestStartContextBoundsNodeLifetime(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	store := newStallStore()
	st := &starterTransport{}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := driver.Start(ctx, singleNode(nw, store, st))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Propose(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	cancel()
	awaitChan(t, "the node to stop after its context ended", n.Done())
	if _, err := n.Propose(context.Background(), []byte("y")); !errors.Is(err, driver.ErrStopped) {
		t.Fatalf("Propose after the context ended: %v, want ErrStopped", err)
	}
	if n.Err() != nil || !st.closed.Load() || store.closes.Load() != 1 {
		t.Fatalf("after the context ended: Err %v, transport closed %v, storage closes %d", n.Err(), st.closed.Load(), store.closes.Load())
	}
}

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// find returns the records whose message starts with prefix.
func (l *logRecords) find(prefix string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.recs {
		if strings.HasPrefix(r.Message, prefix) {
			out = append(out, r)
		}
	}
	return out
}

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// TestNilLoggerWarnsWhenNoLeader: the situation of the old README
// snippet — an embedder-owned gRPC transport nobody started, and no
// Logger — is no longer silent: a warning reaches slog.Default() after
// ten election timeouts, while Info lines stay out of it.
func TestNilLoggerWarnsWhenNoLeader(t *testing.T) {
	recs := &logRecords{}
	prev := slog.Default()
	slog.SetDefault(slog.New(recs))
	defer slog.SetDefault(prev)

	peers := []driver.Peer{{ID: 1, Addr: "127.0.0.1:1"}, {ID: 2, Addr: "127.0.0.1:2"}, {ID: 3, Addr: "127.0.0.1:3"}}
	tr, err := transport.New(transport.Config{ClusterID: realClusterID, NodeID: 1, Listener: listenLoopback(t), Peers: peers})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	n, err := driver.Start(context.Background(), driver.Config{
		ID: 1, Peers: peers, Storage: newStallStore(), StateMachine: &testSM{}, Transport: tr,
		TickInterval: 5 * time.Millisecond, TuneRaft: func(rc *core.Config) { rc.ElectionTicks = 5 },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	await(t, "a no-leader warning", func() bool { return len(recs.find("no leader known")) > 0 })
	w := recs.find("no leader known")[0]
	if w.Level != slog.LevelWarn || !strings.Contains(w.Message, "the transport was started") ||
		attr(w, "for").Duration() < 10*25*time.Millisecond {
		t.Fatalf("warning: %v %q for=%v", w.Level, w.Message, attr(w, "for"))
	}
	if len(recs.find("node started")) != 0 {
		t.Fatal("an Info line reached slog.Default() with a nil Logger")
	}
}

// TestNoLeaderWarningBacksOffAndClears: warnings come after 10 election
// timeouts without a leader, then after 20 more, 40 more...; once the
// missing members start and a leader is elected, the node says so.
func TestNoLeaderWarningBacksOffAndClears(t *testing.T) {
	recs := &logRecords{}
	nw := drivertest.NewNetwork()
	defer nw.Close()
	clock := drivertest.NewClock()
	const tick, electionTicks = 10 * time.Millisecond, 10
	timeout := electionTicks * tick
	stopClock := clock.Run(5*tick, time.Millisecond)
	defer stopClock()
	config := func(id uint64) driver.Config {
		return driver.Config{
			ID: id, Peers: idPeers(1, 2, 3), Storage: newStallStore(), StateMachine: &testSM{},
			NewTransport: nw.NewTransport(id), Clock: clock, TickInterval: tick, Logger: slog.New(recs),
			TuneRaft: func(rc *core.Config) { rc.ElectionTicks = electionTicks },
		}
	}
	n1, err := driver.Start(context.Background(), config(1))
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Stop()
	await(t, "three no-leader warnings", func() bool { return len(recs.find("no leader known")) >= 3 })
	ws := recs.find("no leader known")
	for i, min := range []time.Duration{10 * timeout, 30 * timeout, 70 * timeout} {
		if got := attr(ws[i], "for").Duration(); got < min {
			t.Fatalf("warning %d after %v without a leader, want at least %v", i+1, got, min)
		}
	}
	for _, id := range []uint64{2, 3} {
		n, err := driver.Start(context.Background(), config(id))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
	}
	await(t, "the node to report a leader again", func() bool { return len(recs.find("leader known again")) > 0 })
}
