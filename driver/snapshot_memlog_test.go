package driver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

// mapSM is an in-memory key-value state machine with snapshots. A command
// is "key=value"; its result is the index. Applied is 0, so after a
// restart the driver restores it from the latest snapshot and replays the
// log tail.
type mapSM struct {
	mu       sync.Mutex
	kv       map[string]string
	applied  uint64 // last command applied or restored
	restores int
	// failSnapshots makes that many Snapshot calls fail.
	failSnapshots atomic.Int64
}

func newMapSM() *mapSM { return &mapSM{kv: map[string]string{}} }

func (s *mapSM) Applied() (uint64, error) { return 0, nil }

func (s *mapSM) Apply(cmds []driver.Command) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := make([]any, len(cmds))
	for i, c := range cmds {
		if c.Index <= s.applied {
			return nil, fmt.Errorf("mapSM: command %d re-applied (applied %d)", c.Index, s.applied)
		}
		k, v, _ := strings.Cut(string(c.Data), "=")
		s.kv[k] = v
		s.applied = c.Index
		res[i] = c.Index
	}
	return res, nil
}

func (s *mapSM) Snapshot() (driver.SnapshotSource, error) {
	if s.failSnapshots.Add(-1) >= 0 {
		return nil, errSnapshotRefused
	}
	s.failSnapshots.Store(0)
	s.mu.Lock()
	defer s.mu.Unlock()
	return mapSource{kv: maps.Clone(s.kv), applied: s.applied}, nil
}

type mapSource struct {
	kv      map[string]string
	applied uint64
}

// WriteTo encodes applied, then key/value pairs in key order, each a
// length-prefixed string.
func (m mapSource) WriteTo(w io.Writer) (int64, error) {
	var b []byte
	b = binary.AppendUvarint(b, m.applied)
	for _, k := range slices.Sorted(maps.Keys(m.kv)) {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(m.kv[k])))
		b = append(b, m.kv[k]...)
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (mapSource) Close() error { return nil }

func (s *mapSM) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	br := bytes.NewReader(data)
	applied, err := binary.ReadUvarint(br)
	if err != nil {
		return err
	}
	kv := map[string]string{}
	str := func() (string, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil {
			return "", err
		}
		b := make([]byte, n)
		_, err = io.ReadFull(br, b)
		return string(b), err
	}
	for br.Len() > 0 {
		k, err := str()
		if err != nil {
			return err
		}
		v, err := str()
		if err != nil {
			return err
		}
		kv[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv, s.applied = kv, applied
	s.restores++
	return nil
}

func (s *mapSM) hash() [32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var src mapSource
	src.kv = s.kv
	var buf bytes.Buffer
	_, _ = src.WriteTo(&buf)
	return sha256.Sum256(buf.Bytes())
}

func (s *mapSM) get(k string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kv[k]
}

// snapCluster is an in-memory cluster with snapshots on: memlog storage,
// drivertest snapshot stores, mapSM state machines, kept across restarts.
type snapCluster struct {
	t     testing.TB
	net   *drivertest.Network
	clock *drivertest.Clock
	ids   []uint64
	logs  map[uint64]*memlog.Log
	snaps map[uint64]*drivertest.SnapshotStore
	sms   map[uint64]*mapSM
	// syncers, if set for a node, is its state machine (sms then holds
	// its mapSM): a Syncer whose synced state survives restarts.
	syncers map[uint64]*syncMapSM
	nodes   map[uint64]*driver.Node
	tune    func(*driver.Config)
	stopClk func()
}

func newSnapCluster(t testing.TB, size int, tune func(*driver.Config)) *snapCluster {
	return newSnapClusterSM(t, size, false, tune)
}

// newSnapClusterSM is newSnapCluster with, if syncer, syncMapSM state
// machines (durable once synced, like app/kv) instead of in-memory ones.
func newSnapClusterSM(t testing.TB, size int, syncer bool, tune func(*driver.Config)) *snapCluster {
	c := &snapCluster{
		t: t, net: drivertest.NewNetwork(), clock: drivertest.NewClock(),
		logs: map[uint64]*memlog.Log{}, snaps: map[uint64]*drivertest.SnapshotStore{},
		sms: map[uint64]*mapSM{}, syncers: map[uint64]*syncMapSM{}, nodes: map[uint64]*driver.Node{}, tune: tune,
	}
	c.stopClk = c.clock.Run(testTick, tickEvery)
	for i := 1; i <= size; i++ {
		id := uint64(i)
		c.ids = append(c.ids, id)
		c.logs[id] = memlog.New()
		c.snaps[id] = drivertest.NewSnapshotStore()
		c.sms[id] = newMapSM()
		if syncer {
			c.syncers[id] = &syncMapSM{mapSM: c.sms[id]}
		}
	}
	t.Cleanup(c.close)
	for _, id := range c.ids {
		c.start(id)
	}
	return c
}

func (c *snapCluster) config(id uint64) driver.Config {
	var sm driver.StateMachine = c.sms[id]
	if s := c.syncers[id]; s != nil {
		sm = s
	}
	cfg := driver.Config{
		ID: id, Peers: idPeers(c.ids...), Storage: c.logs[id], StateMachine: sm, Snapshots: c.snaps[id],
		NewTransport: c.net.NewTransport(id), TickInterval: testTick, Clock: c.clock, Logger: testLogger(),
		SnapshotRetryDelay: 20 * time.Millisecond,
		TuneRaft:           func(rc *core.Config) { rc.ElectionTicks = testElectionTicks },
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

func (c *snapCluster) start(id uint64) {
	c.t.Helper()
	n, err := driver.Start(context.Background(), c.config(id))
	if err != nil {
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id] = n
}

func (c *snapCluster) stop(id uint64) {
	c.t.Helper()
	if n := c.nodes[id]; n != nil {
		if err := n.Stop(); err != nil && !errors.Is(err, driver.ErrStopped) {
			c.t.Errorf("stop node %d: %v", id, err)
		}
		delete(c.nodes, id)
	}
}

func (c *snapCluster) close() {
	for _, id := range c.ids {
		c.stop(id)
	}
	c.net.Close()
	c.stopClk()
}

func (c *snapCluster) leader() uint64 {
	c.t.Helper()
	var lead uint64
	await(c.t, "a leader", func() bool {
		for _, id := range c.ids {
			n := c.nodes[id]
			if n == nil {
				continue
			}
			if st := n.Status(); st.Role == core.RoleLeader {
				lead = id
				return true
			}
		}
		return false
	})
	return lead
}

// write proposes cmds on node id, with some concurrency, retrying
// refusals.
func (c *snapCluster) write(id uint64, cmds []string) {
	c.t.Helper()
	writeAll(c.t, c.nodes, id, cmds)
}

// writeAll proposes every command on nodes[id] (or whichever node leads
// when it is refused), 16 at a time.
func writeAll(t testing.TB, nodes map[uint64]*driver.Node, id uint64, cmds []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	sem := make(chan struct{}, 16)
	for _, cmd := range cmds {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for {
				_, err := nodes[id].Propose(ctx, []byte(cmd))
				if err == nil {
					return
				}
				if !errors.Is(err, driver.ErrProposalDropped) && !errors.Is(err, driver.ErrBusy) {
					select {
					case errc <- fmt.Errorf("propose %q: %w", cmd, err):
					default:
					}
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

func (c *snapCluster) awaitSame(ids ...uint64) {
	c.t.Helper()
	await(c.t, fmt.Sprintf("state machines %v to converge", ids), func() bool {
		h := c.sms[ids[0]].hash()
		for _, id := range ids[1:] {
			if c.sms[id].hash() != h {
				return false
			}
		}
		return true
	})
}

func overwrites(n, keys int, prefix string) []string {
	cmds := make([]string, n)
	for i := range cmds {
		cmds[i] = fmt.Sprintf("k%04d=%s%d", i%keys, prefix, i)
	}
	return cmds
}

// A follower that was partitioned away while the leader compacted its log
// catches up through a snapshot, then from the log; its state equals the
// leader's.
func TestSnapshotCatchUpInMemory(t *testing.T) {
	c := newSnapCluster(t, 3, func(cfg *driver.Config) {
		cfg.SnapshotEntries = 100
		cfg.CompactionMarginEntries = 20
	})
	lead := c.leader()
	c.write(lead, overwrites(50, 10, "a"))
	var f uint64
	for _, id := range c.ids {
		if id != lead {
			f = id
			break
		}
	}
	c.net.Isolate(f, c.ids...)
	c.write(lead, overwrites(500, 30, "b"))
	st := c.nodes[lead].Status().Snapshots
	if st.Taken == 0 || st.CompactedIndex == 0 {
		t.Fatalf("leader took no snapshot / did not compact: %+v", st)
	}
	c.net.HealAll()
	await(t, "the follower to install a snapshot", func() bool {
		return c.nodes[f].Status().Snapshots.Installed > 0
	})
	c.write(lead, []string{"after=heal"})
	c.awaitSame(c.ids...)
	if got := c.sms[f].get("after"); got != "heal" {
		t.Fatalf("follower: after=%q", got)
	}
	// The sender counts a transfer once its loop has processed the
	// result, which may be after the follower installed it; and
	// leadership may move meanwhile (an election under load). So await
	// a send by any node.
	await(t, "a node to count the snapshot it sent", func() bool {
		var sent uint64
		for _, id := range c.ids {
			sent += c.nodes[id].Status().Snapshots.Sent
		}
		return sent > 0
	})
	ls := c.nodes[lead].Status().Snapshots
	t.Logf("leader %+v; follower %+v", ls, c.nodes[f].Status().Snapshots)

	// A restart with an empty (in-memory) state machine restores from the
	// snapshot and replays the log tail.
	for _, id := range c.ids {
		c.stop(id)
		c.sms[id] = newMapSM()
		c.start(id)
	}
	lead = c.leader()
	c.write(lead, []string{"after=restart"})
	c.awaitSame(c.ids...)
	for _, id := range c.ids {
		if c.sms[id].restores == 0 {
			t.Errorf("node %d replayed without restoring a snapshot", id)
		}
		if got := c.sms[id].get("after"); got != "restart" {
			t.Errorf("node %d: after=%q", id, got)
		}
	}
}

// failReader fails the test if read: data that must not be needed.
type failReader struct{ t testing.TB }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("snapshot data read although not needed")
	return 0, io.ErrUnexpectedEOF
}

// A snapshot the follower's log already covers is refused without reading
// its data (the core acknowledges the follower's commit index instead); a
// malformed one is refused too.
func TestSnapshotNotNeeded(t *testing.T) {
	c := newSnapCluster(t, 3, nil)
	lead := c.leader()
	c.write(lead, overwrites(20, 5, "x"))
	c.awaitSame(c.ids...)
	var f uint64
	for _, id := range c.ids {
		if id != lead {
			f = id
		}
	}
	st := c.nodes[f].Status()
	msg := core.Message{Type: core.MsgSnap, From: lead, To: f, Term: st.Term,
		Snapshot: &core.SnapshotMeta{Index: 3, Term: st.Term, Membership: st.Membership}}
	err := c.nodes[f].Handler().HandleSnapshot(context.Background(), msg, failReader{t})
	if !errors.Is(err, driver.ErrSnapshotNotNeeded) {
		t.Fatalf("HandleSnapshot of a covered snapshot: %v", err)
	}
	err = c.nodes[f].Handler().HandleSnapshot(context.Background(), core.Message{Type: core.MsgApp, From: lead, To: f}, failReader{t})
	if !errors.Is(err, core.ErrInvalidMessage) {
		t.Fatalf("HandleSnapshot of a MsgApp: %v", err)
	}
	c.write(lead, []string{"still=fine"})
	c.awaitSame(c.ids...)
}
