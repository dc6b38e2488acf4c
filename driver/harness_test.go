package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Protocol time in tests: one tick is testTick of manual-clock time, and
// the clock advances one tick every tickEvery of real time, so an
// election timeout (testElectionTicks) takes 40-80 ms of real time:
// quick, yet long enough that a busy -race run does not depose healthy
// leaders all the time.
const (
	testTick          = 10 * time.Millisecond
	tickEvery         = 4 * time.Millisecond
	testElectionTicks = 10
	// awaitTimeout bounds every wait for a condition (real time).
	awaitTimeout = 20 * time.Second
)

// await polls cond until it holds, failing the test after awaitTimeout.
// Polling a condition is how tests synchronise with the cluster's
// goroutines; nothing sleeps a fixed time hoping things happened.
func await(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", awaitTimeout, what)
		}
		<-tk.C
	}
}

// testSM is a state machine that records every command it applies. Its
// result for a command is the command's log index. It can keep its
// applied index "durably" across a restart (durable), like a Pebble state
// machine would, or start from scratch like an in-memory one.
type testSM struct {
	mu       sync.Mutex
	durable  bool
	applied  uint64
	cmds     []driver.Command // copies, in apply order
	failWith error
}

func (s *testSM) Applied() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied, nil
}

func (s *testSM) Apply(cmds []driver.Command) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWith != nil {
		return nil, s.failWith
	}
	res := make([]any, len(cmds))
	for i, c := range cmds {
		if c.Index <= s.applied {
			return nil, fmt.Errorf("testSM: command %d re-applied (applied %d)", c.Index, s.applied)
		}
		s.applied = c.Index
		s.cmds = append(s.cmds, driver.Command{Index: c.Index, Data: slices.Clone(c.Data)})
		res[i] = c.Index
	}
	return res, nil
}

func (s *testSM) Snapshot() (driver.SnapshotSource, error) {
	return nil, errors.New("testSM: no snapshots")
}
func (s *testSM) Restore(io.Reader) error { return errors.New("testSM: no snapshots") }

// reopen simulates the state machine after a restart.
func (s *testSM) reopen() *testSM {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.durable {
		return &testSM{}
	}
	return &testSM{durable: true, applied: s.applied, cmds: slices.Clone(s.cmds)}
}

// data returns the applied commands as strings, in order.
func (s *testSM) data() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.cmds))
	for i, c := range s.cmds {
		out[i] = string(c.Data)
	}
	return out
}

// at returns the command applied at index, if any.
func (s *testSM) at(index uint64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cmds {
		if c.Index == index {
			return string(c.Data), true
		}
	}
	return "", false
}

func (s *testSM) has(cmd string) bool { return slices.Contains(s.data(), cmd) }

// stallStore wraps a memlog: Stall makes Save block until released, and
// it counts Saves, saved entries and Closes. memlog is durable on Save, so
// reopening a node with the same memlog is a crash-restart.
type stallStore struct {
	*memlog.Log
	mu      sync.Mutex
	gate    chan struct{}
	entered chan struct{}
	// only, when set, restricts the gate to Saves for which it is true
	// (see stallOn).
	only    func(ents []core.Entry) bool
	saves   atomic.Int64
	entries atomic.Int64
	// maxEntries is the largest number of entries one Save wrote.
	maxEntries atomic.Int64
	closes     atomic.Int64
}

var _ driver.Storage = (*stallStore)(nil)

func newStallStore() *stallStore {
	return &stallStore{Log: memlog.New(), entered: make(chan struct{}, 1)}
}

func (s *stallStore) Save(hs core.HardState, ents []core.Entry) error {
	s.mu.Lock()
	gate := s.gate
	if s.only != nil && !s.only(ents) {
		gate = nil
	}
	s.mu.Unlock()
	if gate != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-gate
	}
	s.saves.Add(1)
	s.entries.Add(int64(len(ents)))
	for {
		m := s.maxEntries.Load()
		if int64(len(ents)) <= m || s.maxEntries.CompareAndSwap(m, int64(len(ents))) {
			break
		}
	}
	return s.Log.Save(hs, ents)
}

func (s *stallStore) Close() error {
	s.closes.Add(1)
	return s.Log.Close()
}

// stall makes every Save block until the returned release is called.
func (s *stallStore) stall() (release func()) { return s.stallIf(nil) }

// stallIf is stall restricted to the Saves for which only (if non-nil)
// is true.
func (s *stallStore) stallIf(only func(ents []core.Entry) bool) (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gate := make(chan struct{})
	s.gate = gate
	s.only = only
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.gate == gate {
				s.gate = nil
			}
			s.mu.Unlock()
			close(gate)
		})
	}
}

// stallOn is stall for only the Saves that write an entry whose command
// is cmd: other writes (a commit-only write, a heartbeat's term) pass, so
// a test knows which write blocked.
func (s *stallStore) stallOn(cmd string) (release func()) {
	return s.stallIf(func(ents []core.Entry) bool {
		for _, e := range ents {
			if len(e.Data) >= driver.EnvelopeOverhead && string(e.Data[driver.EnvelopeOverhead:]) == cmd {
				return true
			}
		}
		return false
	})
}

// cluster is an in-process cluster on a drivertest.Network and a shared
// manual clock that runs in the background.
type cluster struct {
	t         testing.TB
	net       *drivertest.Network
	clock     *drivertest.Clock
	stopClock func()
	ids       []uint64
	stores    map[uint64]*stallStore
	sms       map[uint64]*testSM
	nodes     map[uint64]*driver.Node
	// cancels cancel the context each node was started with.
	cancels map[uint64]context.CancelFunc
	// tune adjusts every node's core config; cfg adjusts driver configs.
	tune func(*core.Config)
	cfg  func(*driver.Config)
	// perNode adjusts one node's driver config (applied after cfg).
	perNode map[uint64]func(*driver.Config)
	// bootstrap are the IDs of the bootstrap members (Config.Peers);
	// nodes added later join (Config.Join) with them as hints.
	bootstrap []uint64
	joiners   map[uint64]bool
	// named gives every peer the name "n<ID>".
	named bool
}

type clusterOpt func(*cluster)

func withTune(f func(*core.Config)) clusterOpt { return func(c *cluster) { c.tune = f } }
func withConfig(f func(*driver.Config)) clusterOpt {
	return func(c *cluster) { c.cfg = f }
}

// durableSMs makes state machines keep their applied index across
// restarts.
func durableSMs() clusterOpt {
	return func(c *cluster) {
		for _, sm := range c.sms {
			sm.durable = true
		}
	}
}

func newCluster(t testing.TB, size int, opts ...clusterOpt) *cluster {
	t.Helper()
	c := &cluster{
		t: t, net: drivertest.NewNetwork(), clock: drivertest.NewClock(),
		stores: map[uint64]*stallStore{}, sms: map[uint64]*testSM{}, nodes: map[uint64]*driver.Node{},
		cancels: map[uint64]context.CancelFunc{}, perNode: map[uint64]func(*driver.Config){},
		joiners: map[uint64]bool{},
	}
	for i := 1; i <= size; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.stores[id] = newStallStore()
		c.sms[id] = &testSM{}
	}
	c.bootstrap = slices.Clone(c.ids)
	for _, o := range opts {
		o(c)
	}
	c.stopClock = c.clock.Run(testTick, tickEvery)
	t.Cleanup(c.close)
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

func testLogger() *slog.Logger {
	if os.Getenv("RAFTY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler) // nil would mean warnings to stderr
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (c *cluster) config(id uint64) driver.Config {
	peers := idPeers(c.bootstrap...)
	if c.named {
		for i := range peers {
			peers[i].Name = fmt.Sprintf("n%d", peers[i].ID)
		}
	}
	cfg := driver.Config{
		ID:           id,
		Peers:        peers,
		Join:         c.joiners[id],
		Storage:      c.stores[id],
		StateMachine: c.sms[id],
		NewTransport: c.net.NewTransport(id),
		TickInterval: testTick,
		Clock:        c.clock,
		Logger:       testLogger(),
		TuneRaft: func(rc *core.Config) {
			rc.ElectionTicks = testElectionTicks
			rc.HeartbeatTicks = 1
			if c.tune != nil {
				c.tune(rc)
			}
		},
	}
	if c.cfg != nil {
		c.cfg(&cfg)
	}
	if f := c.perNode[id]; f != nil {
		f(&cfg)
	}
	return cfg
}

func (c *cluster) start(id uint64) *driver.Node {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := driver.Start(ctx, c.config(id))
	if err != nil {
		cancel()
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id] = n
	c.cancels[id] = cancel
	return n
}

func (c *cluster) stop(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	if n == nil {
		return
	}
	if err := n.Stop(); err != nil {
		c.t.Errorf("stop node %d: %v", id, err)
	}
	c.cancels[id]()
	delete(c.nodes, id)
}

// restart stops node id (if running) and starts it again on the same log,
// with its state machine reopened (see testSM.reopen).
func (c *cluster) restart(id uint64) *driver.Node {
	c.t.Helper()
	c.stop(id)
	c.sms[id] = c.sms[id].reopen()
	return c.start(id)
}

func (c *cluster) close() {
	for _, s := range c.stores {
		s.mu.Lock()
		if s.gate != nil {
			close(s.gate)
			s.gate = nil
		}
		s.mu.Unlock()
	}
	for _, id := range c.ids {
		c.stop(id)
	}
	c.stopClock()
	c.net.Close()
}

func (c *cluster) running() []uint64 {
	var ids []uint64
	for _, id := range c.ids {
		if c.nodes[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// leaderOf returns the leader among ids once one of them is leader and
// every other node in ids follows it.
func (c *cluster) leaderOf(ids ...uint64) uint64 {
	c.t.Helper()
	var lead uint64
	await(c.t, fmt.Sprintf("a leader agreed on by %v", ids), func() bool {
		lead = 0
		for _, id := range ids {
			st := c.nodes[id].Status()
			if st.Role == core.RoleLeader {
				lead = id
			}
		}
		if lead == 0 {
			return false
		}
		for _, id := range ids {
			if l, _ := c.nodes[id].Leader(); l != lead {
				return false
			}
		}
		return true
	})
	return lead
}

// leader waits for a leader agreed on by every running node.
func (c *cluster) leader() uint64 { return c.leaderOf(c.running()...) }

// followers returns the running nodes other than lead.
func (c *cluster) followers(lead uint64) []uint64 {
	var out []uint64
	for _, id := range c.running() {
		if id != lead {
			out = append(out, id)
		}
	}
	return out
}

// retryable reports errors after which a test may simply try again:
// the proposal was certainly not applied.
func retryable(err error) bool {
	return errors.Is(err, driver.ErrProposalDropped) || errors.Is(err, driver.ErrBusy)
}

// propose proposes cmd on node id until it succeeds, retrying dropped
// proposals (leader changes during the test), and returns its index.
func (c *cluster) propose(id uint64, cmd string) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.nodes[id].Propose(ctx, []byte(cmd))
		cancel()
		if err == nil {
			return res.(uint64)
		}
		if !retryable(err) || time.Now().After(deadline) {
			c.t.Fatalf("propose %q on node %d: %v", cmd, id, err)
		}
		wctx, wcancel := context.WithTimeout(context.Background(), awaitTimeout)
		_, _ = c.nodes[id].WaitLeader(wctx)
		wcancel()
	}
}

// read runs a Read barrier on node id, retrying retryable failures.
func (c *cluster) read(id uint64) {
	c.t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.nodes[id].Read(ctx)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, driver.ErrStopped) || time.Now().After(deadline) {
			c.t.Fatalf("read on node %d: %v", id, err)
		}
		wctx, wcancel := context.WithTimeout(context.Background(), awaitTimeout)
		_, _ = c.nodes[id].WaitLeader(wctx)
		wcancel()
	}
}

// awaitConverged waits until every running node's state machine applied
// exactly the same commands in the same order and holds all of want.
func (c *cluster) awaitConverged(want ...string) {
	c.t.Helper()
	await(c.t, "state machines to converge", func() bool {
		ids := c.running()
		ref := c.sms[ids[0]].data()
		for _, w := range want {
			if !slices.Contains(ref, w) {
				return false
			}
		}
		for _, id := range ids[1:] {
			if !slices.Equal(ref, c.sms[id].data()) {
				return false
			}
		}
		return true
	})
}

func (c *cluster) dump() string {
	var b strings.Builder
	for _, id := range c.ids {
		if n := c.nodes[id]; n != nil {
			st := n.Status()
			fmt.Fprintf(&b, "node %d: %s term=%d lead=%d commit=%d applied=%d last=%d\n",
				id, st.Role, st.Term, st.Leader, st.Commit, st.Applied, st.LastIndex)
		}
	}
	return b.String()
}
