package driver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/transport"
)

// countingStore counts Saves (each one fdatasync on disk.Store when
// called alone, which is how the loop calls it) and saved entries.
type countingStore struct {
	driver.Storage
	saves   atomic.Int64
	entries atomic.Int64
}

func (s *countingStore) Save(hs core.HardState, ents []core.Entry) error {
	s.saves.Add(1)
	s.entries.Add(int64(len(ents)))
	return s.Storage.Save(hs, ents)
}

// commitCountingStore keeps the wrapped Storage's CommitWriter extension
// visible, so that the driver writes commit indexes the way it would
// without the counting wrapper.
type commitCountingStore struct{ *countingStore }

func (s commitCountingStore) WriteCommit(index uint64) error {
	return s.Storage.(driver.CommitWriter).WriteCommit(index)
}

// storage returns s as the driver should see it.
func (s *countingStore) storage() driver.Storage {
	if _, ok := s.Storage.(driver.CommitWriter); ok {
		return commitCountingStore{s}
	}
	return s
}

// realCluster runs nodes on the real disk and gRPC transport packages:
// disk.Store in a temporary directory per node, transport.GRPC on
// 127.0.0.1 with a port chosen by the kernel (kept across restarts), and
// the wall clock.
type realCluster struct {
	t      testing.TB
	ids    []uint64
	dirs   map[uint64]string
	addrs  map[uint64]string
	lns    map[uint64]net.Listener // opened up front, handed to the first transport
	sms    map[uint64]*testSM
	stores map[uint64]*countingStore
	nodes  map[uint64]*driver.Node
	tick   time.Duration
	tune   func(*core.Config)
	// bootstrap, when set, are the IDs in Config.Peers (else every ID);
	// joiners start with Config.Join; dynamic sets the transports'
	// AcceptUnknownSenders, which membership changes need.
	bootstrap []uint64
	joiners   map[uint64]bool
	dynamic   bool
	cfg       func(*driver.Config)
}

const realClusterID = 0x7af7

// grpcTransport returns a Config.NewTransport for node id over real gRPC
// on loopback: serving on ln, a listener bound in advance so that every
// address is known before any node starts, or, with ln nil (a restart),
// listening on addrs[id] again. tune, if not nil, adjusts the transport
// configuration.
func grpcTransport(id uint64, addrs map[uint64]string, ln net.Listener, tune func(*transport.Config)) func(driver.MessageHandler) (driver.Transport, error) {
	return func(h driver.MessageHandler) (driver.Transport, error) {
		tc := transport.Config{ClusterID: realClusterID, NodeID: id, Peers: addrPeers(addrs), Handler: h, Logger: testLogger()}
		if ln != nil {
			tc.Listener = ln
		} else {
			tc.ListenAddr = addrs[id]
		}
		if tune != nil {
			tune(&tc)
		}
		tr, err := transport.New(tc)
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return nil, err
		}
		return tr, nil // the node starts it
	}
}

// realTick is the tick of integration clusters: with ElectionTicks 10 an
// election timeout is 200-400 ms, long enough that scheduling delays of a
// loaded machine under -race rarely depose a leader.
const realTick = 20 * time.Millisecond

func newRealCluster(t testing.TB, size int, tick time.Duration, tune func(*core.Config), opts ...func(*realCluster)) *realCluster {
	t.Helper()
	c := &realCluster{
		t: t, dirs: map[uint64]string{}, addrs: map[uint64]string{}, lns: map[uint64]net.Listener{},
		sms: map[uint64]*testSM{}, stores: map[uint64]*countingStore{}, nodes: map[uint64]*driver.Node{},
		tick: tick, tune: tune,
	}
	root := t.TempDir()
	for i := 1; i <= size; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.dirs[id] = filepath.Join(root, fmt.Sprintf("node%d", id))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.lns[id] = ln
		c.addrs[id] = ln.Addr().String()
		c.sms[id] = &testSM{}
	}
	t.Cleanup(c.close)
	for _, o := range opts {
		o(c)
	}
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

// addNode prepares node id (directory, listener, state machine) without
// starting it, as a joiner.
func (c *realCluster) addNode(id uint64) {
	c.t.Helper()
	c.ids = append(c.ids, id)
	c.dirs[id] = filepath.Join(c.t.TempDir(), fmt.Sprintf("node%d", id))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	c.lns[id] = ln
	c.addrs[id] = ln.Addr().String()
	c.sms[id] = &testSM{}
	c.joiners[id] = true
}

func (c *realCluster) start(id uint64) {
	c.t.Helper()
	st, err := disk.Open(c.dirs[id], disk.DefaultOptions())
	if err != nil {
		c.t.Fatalf("disk.Open node %d: %v", id, err)
	}
	cs := &countingStore{Storage: st}
	ln := c.lns[id]
	delete(c.lns, id)
	addrs := c.addrs
	if c.bootstrap != nil {
		addrs = map[uint64]string{}
		for _, b := range c.bootstrap {
			addrs[b] = c.addrs[b]
		}
	}
	var tuneT func(*transport.Config)
	if c.dynamic {
		tuneT = func(tc *transport.Config) { tc.AcceptUnknownSenders = true }
	}
	// The transport starts with the driver's peers; a restarted node
	// (no listener kept) listens on its own address again. The driver
	// gives the transport the replicated members (SetPeers) at start.
	trAddrs := addrs
	if ln == nil {
		trAddrs = c.addrs
	}
	cfg := driver.Config{
		ID:           id,
		Peers:        addrPeers(addrs),
		Join:         c.joiners[id],
		Storage:      cs.storage(),
		StateMachine: c.sms[id],
		TickInterval: c.tick,
		Logger:       testLogger(),
		TuneRaft:     c.tune,
		NewTransport: grpcTransport(id, trAddrs, ln, tuneT),
	}
	if c.cfg != nil {
		c.cfg(&cfg)
	}
	n, err := driver.Start(context.Background(), cfg)
	if err != nil {
		st.Close() // a failed Start leaves the storage to us
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id] = n
	c.stores[id] = cs
}

func (c *realCluster) stop(id uint64) {
	c.t.Helper()
	if n := c.nodes[id]; n != nil {
		if err := n.Stop(); err != nil {
			c.t.Errorf("stop node %d: %v", id, err)
		}
		delete(c.nodes, id)
	}
}

func (c *realCluster) close() {
	for _, id := range c.ids {
		c.stop(id)
	}
	for _, ln := range c.lns {
		ln.Close()
	}
}

func (c *realCluster) running() []uint64 {
	var ids []uint64
	for _, id := range c.ids {
		if c.nodes[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// asCluster adapts realCluster to the helpers written for the in-memory
// cluster (leader, propose, read, awaitConverged).
func (c *realCluster) asCluster() *cluster {
	return &cluster{t: c.t, ids: c.running(), nodes: c.nodes, sms: c.sms}
}

// TestIntegrationDiskAndGRPC runs a 3-node cluster on the real disk and
// transport packages: election, proposals, a follower read,
// leadership transfer, a follower restart that catches up from its disk
// log and the network, and a full-cluster restart that loses no
// acknowledged write.
func TestIntegrationDiskAndGRPC(t *testing.T) {
	rc := newRealCluster(t, 3, realTick, func(cfg *core.Config) {
		cfg.ElectionTicks = 10
	})
	c := rc.asCluster()
	lead := c.leader()

	acked := map[uint64]string{}
	for round := range 3 {
		cmd := fmt.Sprintf("r%d-leader", round)
		acked[c.propose(lead, cmd)] = cmd
	}
	f := c.followers(lead)[0]
	idx := c.propose(lead, "read-me")
	acked[idx] = "read-me"
	c.read(f)
	if got, _ := rc.sms[f].at(idx); got != "read-me" {
		t.Fatalf("follower %d read after the write: index %d = %q", f, idx, got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rc.nodes[lead].TransferLeadership(ctx, f); err != nil {
		t.Fatalf("transfer to %d: %v", f, err)
	}
	lead = c.leader()

	// A follower restarts on its disk log and catches up.
	other := c.followers(lead)[0]
	rc.stop(other) // disk.Open in start below also proves Stop closed the store
	for i := range 10 {
		cmd := fmt.Sprintf("while-down-%d", i)
		acked[c.propose(lead, cmd)] = cmd
	}
	// It keeps its (in-memory) state machine, as a durable one would be
	// kept: the driver resumes after its Applied index.
	rc.start(other)
	c = rc.asCluster()
	c.awaitConverged("while-down-9")

	// Stop everything and restart on the same directories with empty
	// state machines: every acknowledged write comes back from disk.
	for _, id := range rc.ids {
		rc.stop(id)
	}
	for _, id := range rc.ids {
		rc.sms[id] = &testSM{}
		rc.start(id)
	}
	c = rc.asCluster()
	lead = c.leader()
	c.propose(lead, "after-full-restart")
	c.awaitConverged("after-full-restart")
	for idx, cmd := range acked {
		for _, id := range rc.ids {
			if got, _ := rc.sms[id].at(idx); got != cmd {
				t.Fatalf("node %d after full restart: index %d = %q, acknowledged %q", id, idx, got, cmd)
			}
		}
	}
	saves := rc.stores[lead].saves.Load()
	t.Logf("leader %d: %d Saves, %d entries since restart", lead, saves, rc.stores[lead].entries.Load())
}

// TestIntegrationFollowerProposal: a proposal made on a follower is
// forwarded to the leader in a MsgProp whose entries have no index yet
// (Index 0: the leader assigns it, core/replication.go Propose), and its
// result comes back when the follower applies it. Refused forwarded
// proposals come back the same way (MsgPropResp). The transport must carry
// such entries.
func TestIntegrationFollowerProposal(t *testing.T) {
	rc := newRealCluster(t, 3, realTick, func(cfg *core.Config) {
		cfg.ElectionTicks = 10
	})
	c := rc.asCluster()
	lead := c.leader()
	for _, f := range c.followers(lead) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := rc.nodes[f].Propose(ctx, []byte(fmt.Sprintf("via-follower-%d", f)))
		cancel()
		if err != nil {
			t.Fatalf("proposal on follower %d: %v\n"+
				"(if the transport logs \"discarded invalid messages ... entry with index 0\", it rejects "+
				"MsgProp/MsgPropResp entries, which legitimately carry Index 0 until the leader appends them)", f, err)
		}
		idx := res.(uint64)
		if got, _ := rc.sms[f].at(idx); got != fmt.Sprintf("via-follower-%d", f) {
			t.Fatalf("follower %d: index %d = %q", f, idx, got)
		}
	}
	c.awaitConverged("via-follower-" + fmt.Sprint(c.followers(lead)[0]))
}

// recordingHandler records delivered messages, for
// TestTransportBugIndexZeroEntries.
type recordingHandler struct {
	mu   sync.Mutex
	msgs []core.Message
}

func (h *recordingHandler) HandleMessages(_ context.Context, msgs []core.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, msgs...)
	return nil
}
func (h *recordingHandler) HandleSnapshot(context.Context, core.Message, io.Reader) error {
	return driver.ErrSnapshotUnsupported
}
func (h *recordingHandler) ReportUnreachable(uint64) {}

func (h *recordingHandler) types() []core.MessageType {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ts []core.MessageType
	for _, m := range h.msgs {
		ts = append(ts, m.Type)
	}
	return ts
}

// TestTransportDeliversUnindexedProposals: transport.GRPC must deliver a
// MsgProp (and a MsgPropResp) whose entries have Index 0. The core forwards
// a follower's proposals that way (the leader assigns Index and Term) and
// returns refused ones the same way. The receiver once rejected them as
// "entry with index 0", so every proposal made on a follower was lost and
// ended at its deadline with ErrOutcomeUnknown; this is the regression test
// (the cluster-level form is TestIntegrationFollowerProposal).
func TestTransportDeliversUnindexedProposals(t *testing.T) {
	var lns [2]net.Listener
	addrs := map[uint64]string{}
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		addrs[uint64(i+1)] = ln.Addr().String()
	}
	recv := &recordingHandler{}
	var trs []*transport.GRPC
	for i, h := range []driver.MessageHandler{&recordingHandler{}, recv} {
		tr, err := transport.New(transport.Config{
			ClusterID: realClusterID, NodeID: uint64(i + 1), Peers: addrPeers(addrs), Handler: h, Listener: lns[i],
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		trs = append(trs, tr)
	}
	prop := []core.Entry{{Type: core.EntryNormal, Data: []byte("cmd")}}
	trs[0].Send([]core.Message{
		{Type: core.MsgProp, From: 1, To: 2, Entries: prop},
		{Type: core.MsgPropResp, From: 1, To: 2, Term: 1, Entries: prop, Reject: true, Context: 1},
	})
	// Both travel in lanes of their own (transport/lanes.go: MsgProp
	// bulk, a small MsgPropResp urgent), so each is awaited.
	for _, want := range []core.MessageType{core.MsgProp, core.MsgPropResp} {
		await(t, fmt.Sprintf("%v with Index-0 entries", want), func() bool { return slices.Contains(recv.types(), want) })
	}
}

// TestIntegrationMembershipOverGRPC: membership changes on the real disk
// and gRPC transport. A fourth node joins (Config.Join, the three
// bootstrap members as hints) with its address in the replicated
// configuration, which is how the members' transports learn to reach it
// (driver.PeerSetter); it is promoted automatically. A follower removed
// while down comes back, is refused by the others' handlers, and learns
// through its transport that it was removed (RemovedBy).
func TestIntegrationMembershipOverGRPC(t *testing.T) {
	rc := newRealCluster(t, 3, realTick, func(cfg *core.Config) { cfg.ElectionTicks = 10 }, func(c *realCluster) {
		c.bootstrap = slices.Clone(c.ids)
		c.joiners = map[uint64]bool{}
		c.dynamic = true
		c.cfg = func(cfg *driver.Config) {
			cfg.AutoPromoteStableFor = 20 * realTick
			cfg.AutoPromoteMaxLag = 10
		}
	})
	c := rc.asCluster()
	lead := c.leader()
	for i := range 10 {
		c.propose(lead, fmt.Sprintf("before-%d", i))
	}
	rc.addNode(4)
	ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
	defer cancel()
	mi, err := rc.nodes[lead].AddMember(ctx, core.MemberInfo{Name: "n4", PeerAddr: rc.addrs[4], Incarnation: 1}, driver.AddOptions{})
	if err != nil || mi.ID != 4 {
		t.Fatalf("AddMember: %+v, %v", mi, err)
	}
	rc.start(4)
	c = rc.asCluster()
	c.awaitMembership(c.ids, []uint64{1, 2, 3, 4}, nil)
	c.propose(4, "via-4")
	c.awaitConverged("before-0", "before-9", "via-4")

	lead = c.leader()
	var f uint64
	for _, id := range c.followers(lead) {
		if id != 4 {
			f = id
			break
		}
	}
	rc.stop(f)
	c = rc.asCluster()
	if err := rc.nodes[lead].RemoveMember(ctx, f); err != nil {
		t.Fatalf("RemoveMember(%d): %v", f, err)
	}
	rest := c.running()
	c.awaitMembership(rest, rest, nil)
	rc.sms[f] = &testSM{}
	rc.start(f)
	await(t, "the removed node to learn it was removed", func() bool { return rc.nodes[f].Status().Removed })
	c = &cluster{t: t, ids: rest, nodes: rc.nodes, sms: rc.sms}
	c.propose(c.leader(), "after")
	c.awaitConverged("via-4", "after")
}
