package kv

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

// Protocol time in tests, as in the driver's own tests: a tick is 10 ms
// of manual-clock time, advanced every 4 ms of real time, so an election
// takes well under a second even under -race on a busy machine.
const (
	testTick          = 10 * time.Millisecond
	tickEvery         = 4 * time.Millisecond
	testElectionTicks = 10
	awaitTimeout      = 20 * time.Second
	testClusterID     = 0xC1
)

// await polls cond until it holds; nothing sleeps a fixed time hoping
// things happened.
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

// member is one node of a test cluster with its client-facing server.
type member struct {
	id         uint64
	dir        string      // the store's directory, kept across restarts
	log        *memlog.Log // the Raft log, kept across restarts
	store      *Store
	node       *driver.Node
	svc        *Service
	server     *grpc.Server
	lis        *bufconn.Listener
	conn       *grpc.ClientConn
	client     kvpb.KVClient
	health     healthpb.HealthClient
	stopHealth func()
	served     chan struct{}
}

// testCluster runs members on a drivertest network and manual clock,
// each serving the KV service over an in-memory gRPC connection.
type testCluster struct {
	t         *testing.T
	net       *drivertest.Network
	clock     *drivertest.Clock
	stopClock func()
	ids       []uint64
	members   map[uint64]*member
	limits    Limits
}

// newTestCluster starts the members in start (all of ids 1..size if
// none given) of a size-member cluster.
func newTestCluster(t *testing.T, size int, limits Limits, start ...uint64) *testCluster {
	t.Helper()
	c := &testCluster{t: t, net: drivertest.NewNetwork(), clock: drivertest.NewClock(),
		members: map[uint64]*member{}, limits: limits}
	for i := 1; i <= size; i++ {
		c.ids = append(c.ids, uint64(i))
	}
	if len(start) == 0 {
		start = c.ids
	}
	c.stopClock = c.clock.Run(testTick, tickEvery)
	t.Cleanup(c.close)
	for _, id := range start {
		c.start(id)
	}
	return c
}

func (c *testCluster) start(id uint64) *member {
	c.t.Helper()
	return c.startOn(id, c.t.TempDir(), memlog.New())
}

// startOn starts member id on the given store directory and Raft log;
// reusing a stopped member's is a restart (memlog keeps what was saved,
// the store reopens at its stored applied index).
func (c *testCluster) startOn(id uint64, dir string, log *memlog.Log) *member {
	t := c.t
	t.Helper()
	store, err := OpenStore(dir, Options{MemTableSize: 1 << 20, CacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	m := &member{id: id, dir: dir, log: log, store: store, served: make(chan struct{})}
	c.members[id] = m
	m.node, err = driver.Start(context.Background(), driver.Config{
		ID:               id,
		Peers:            peersOf(c.ids),
		Storage:          log,
		StateMachine:     store,
		NewTransport:     c.net.NewTransport(id),
		TickInterval:     testTick,
		Clock:            c.clock,
		MaxProposalBytes: c.limits.MaxProposalBytes(),
		TuneRaft: func(rc *core.Config) {
			rc.ElectionTicks = testElectionTicks
			rc.HeartbeatTicks = 1
		},
	})
	if err != nil {
		t.Fatalf("start node %d: %v", id, err)
	}
	m.svc, err = NewService(store, m.node, testClusterID, c.limits)
	if err != nil {
		t.Fatal(err)
	}
	m.server = grpc.NewServer(c.limits.ServerOptions()...)
	m.svc.Register(m.server)
	m.stopHealth = RegisterHealth(m.server, m.node)
	m.lis = bufconn.Listen(1 << 20)
	go func() {
		defer close(m.served)
		_ = m.server.Serve(m.lis)
	}()
	m.conn, err = grpc.NewClient("passthrough:///member-"+fmt.Sprint(id),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return m.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
	)
	if err != nil {
		t.Fatal(err)
	}
	m.client = kvpb.NewKVClient(m.conn)
	m.health = healthpb.NewHealthClient(m.conn)
	return m
}

// stop shuts member id down in the order a server does.
// peersOf lists ids as peers without addresses (the in-memory network
// routes by ID).
func peersOf(ids []uint64) []driver.Peer {
	peers := make([]driver.Peer, len(ids))
	for i, id := range ids {
		peers[i] = driver.Peer{ID: id}
	}
	return peers
}

func (c *testCluster) stop(id uint64) {
	m := c.members[id]
	if m == nil {
		return
	}
	delete(c.members, id)
	_ = m.conn.Close()
	m.stopHealth()
	m.server.Stop()
	<-m.served
	if err := m.node.Stop(); err != nil {
		c.t.Errorf("stop node %d: %v", id, err)
	}
	if err := m.store.Close(); err != nil {
		c.t.Errorf("close store %d: %v", id, err)
	}
}

func (c *testCluster) close() {
	for _, id := range c.ids {
		c.stop(id)
	}
	c.stopClock()
	c.net.Close()
}

// leader waits until every running member agrees on a leader.
func (c *testCluster) leader() uint64 {
	c.t.Helper()
	var lead uint64
	await(c.t, "a leader", func() bool {
		lead = 0
		for _, m := range c.members {
			if m.node.Status().Role == core.RoleLeader {
				lead = m.id
			}
		}
		if lead == 0 {
			return false
		}
		for _, m := range c.members {
			if l, _ := m.node.Leader(); l != lead {
				return false
			}
		}
		return true
	})
	return lead
}

func (c *testCluster) followers(lead uint64) []uint64 {
	var out []uint64
	for _, id := range c.ids {
		if id != lead && c.members[id] != nil {
			out = append(out, id)
		}
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
