package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// syncMapSM is a mapSM that is durable once synced, like app/kv.Store: Sync
// copies its state into durable (the "disk") and Applied reports the
// durable index, so a restart (restarted) resumes from the synced state
// without any snapshot. lag makes Sync report less than it made durable,
// to check that compaction never passes what Sync returned.
type syncMapSM struct {
	*mapSM
	lag uint64

	mu             sync.Mutex
	durableKV      map[string]string
	durableApplied uint64
	maxSynced      atomic.Uint64
}

func (s *syncMapSM) Applied() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durableApplied, nil
}

// Sync runs off the driver's loop, concurrently with Apply, as app/kv's
// does.
func (s *syncMapSM) Sync() (uint64, error) {
	s.mapSM.mu.Lock()
	kv, applied := maps.Clone(s.mapSM.kv), s.mapSM.applied
	s.mapSM.mu.Unlock()
	s.mu.Lock()
	s.durableKV, s.durableApplied = kv, applied
	s.mu.Unlock()
	idx := applied - min(applied, s.lag)
	for {
		old := s.maxSynced.Load()
		if idx <= old || s.maxSynced.CompareAndSwap(old, idx) {
			break
		}
	}
	return idx, nil
}

// restarted returns the state machine as a restart after a crash finds it:
// what was synced.
func (s *syncMapSM) restarted() *syncMapSM {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := newMapSM()
	m.kv, m.applied = maps.Clone(s.durableKV), s.durableApplied
	if m.kv == nil {
		m.kv = map[string]string{}
	}
	return &syncMapSM{mapSM: m, lag: s.lag, durableKV: maps.Clone(s.durableKV), durableApplied: s.durableApplied}
}

// restartSynced stops node id and starts it again on its storage with its
// state machine as synced.
func (c *snapCluster) restartSynced(id uint64) {
	c.t.Helper()
	c.stop(id)
	s := c.syncers[id].restarted()
	c.syncers[id], c.sms[id] = s, s.mapSM
	c.start(id)
}

// logSpan returns the entries node id's log holds.
func (c *snapCluster) logSpan(id uint64) (first, last uint64) {
	c.t.Helper()
	first, err := c.logs[id].FirstIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	last, err = c.logs[id].LastIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	return first, last
}

// With a Syncer state machine the log is compacted every SnapshotEntries
// entries to (a margin below) the synced index, without a snapshot being
// written, and stays bounded; a restart resumes from the synced state and
// the log after the compaction point, with no snapshot to restore.
func TestCompactionSyncerWritesNoSnapshot(t *testing.T) {
	const every, margin = 200, 50
	c := newSnapClusterSM(t, 3, true, func(cfg *driver.Config) {
		cfg.SnapshotEntries = every
		cfg.CompactionMarginEntries = margin
	})
	lead := c.leader()
	var maxSpan uint64
	for round := range 10 {
		c.write(lead, overwrites(300, 40, fmt.Sprint("r", round)))
		for _, id := range c.ids {
			first, last := c.logSpan(id)
			maxSpan = max(maxSpan, last-first+1)
		}
		lead = c.leader()
	}
	c.awaitSame(c.ids...)
	for _, id := range c.ids {
		st := c.nodes[id].Status()
		ss := st.Snapshots
		first, last := c.logSpan(id)
		t.Logf("node %d: applied %d, log %d..%d, snapshots %+v", id, st.Applied, first, last, ss)
		if ss.Compactions == 0 || ss.Synced == 0 || ss.CompactedIndex == 0 {
			t.Errorf("node %d did not compact: %+v", id, ss)
		}
		if ss.Taken != 0 || ss.BytesWritten != 0 || ss.Index != 0 {
			t.Errorf("node %d wrote a snapshot with no follower needing one: %+v", id, ss)
		}
		if metas, err := c.snaps[id].ListSnapshots(); err != nil || len(metas) != 0 {
			t.Errorf("node %d: snapshot store holds %v (%v)", id, metas, err)
		}
		if synced := c.syncers[id].maxSynced.Load(); ss.CompactedIndex > synced {
			t.Errorf("node %d compacted to %d, past the synced index %d", id, ss.CompactedIndex, synced)
		}
	}
	// The log holds at most the threshold plus the margin, plus what was
	// applied while a sync ran, plus a write batch.
	if maxSpan > 3*(every+margin) {
		t.Errorf("the log grew to %d entries (threshold %d, margin %d)", maxSpan, every, margin)
	}

	// Restart every node from its synced state: no snapshot to restore,
	// the log after the compaction point is replayed.
	for _, id := range c.ids {
		c.restartSynced(id)
	}
	lead = c.leader()
	c.write(lead, []string{"after=restart"})
	c.awaitSame(c.ids...)
	for _, id := range c.ids {
		if c.sms[id].restores != 0 {
			t.Errorf("node %d restored a snapshot", id)
		}
		if got := c.sms[id].get("after"); got != "restart" {
			t.Errorf("node %d: after=%q", id, got)
		}
	}
}

// gateTransport holds every outgoing snapshot transfer until open is
// closed.
type gateTransport struct {
	driver.Transport
	open    chan struct{}
	started atomic.Int64
}

// Start passes driver.Starter on to the wrapped transport.
func (g *gateTransport) Start(ctx context.Context) error {
	if s, ok := g.Transport.(driver.Starter); ok {
		return s.Start(ctx)
	}
	return nil
}

func (g *gateTransport) SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	g.started.Add(1)
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Transport.SendSnapshot(ctx, msg, data)
}

// A lagging follower of a Syncer cluster gets a snapshot produced on
// demand (the leader's store was empty) and catches up; while the
// transfer runs, the sender's log is not compacted past the snapshot
// being sent, and no node ever compacts past the index its Sync returned
// (which lags behind the applied index here).
func TestCompactionBelowSyncedAndSending(t *testing.T) {
	const every, margin, lag = 100, 20, 150
	open := make(chan struct{})
	gates := map[uint64]*gateTransport{}
	var gatesMu sync.Mutex
	c := newSnapClusterSM(t, 3, true, func(cfg *driver.Config) {
		cfg.SnapshotEntries = every
		cfg.CompactionMarginEntries = margin
		cfg.SnapshotTimeout = time.Minute
		inner := cfg.NewTransport
		id := cfg.ID
		cfg.NewTransport = func(h driver.MessageHandler) (driver.Transport, error) {
			tr, err := inner(h)
			if err != nil {
				return nil, err
			}
			g := &gateTransport{Transport: tr, open: open}
			gatesMu.Lock()
			gates[id] = g
			gatesMu.Unlock()
			return g, nil
		}
	})
	for _, s := range c.syncers {
		s.lag = lag
	}
	closed := false
	defer func() {
		if !closed {
			close(open)
		}
	}()
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
	c.write(lead, overwrites(600, 30, "b"))
	lead = c.leader()
	if st := c.nodes[lead].Status().Snapshots; st.CompactedIndex == 0 || st.Taken != 0 {
		t.Fatalf("leader %d: want compaction without a snapshot: %+v", lead, st)
	}
	for _, id := range c.ids {
		ss, synced := c.nodes[id].Status().Snapshots, c.syncers[id].maxSynced.Load()
		if id != f && ss.CompactedIndex+margin > synced {
			t.Fatalf("node %d compacted to %d, less than the margin %d below the synced index %d", id, ss.CompactedIndex, margin, synced)
		}
	}
	c.net.HealAll()
	blocked := func() []uint64 {
		gatesMu.Lock()
		defer gatesMu.Unlock()
		var ids []uint64
		for id, g := range gates {
			if g.started.Load() > 0 {
				ids = append(ids, id)
			}
		}
		return ids
	}
	await(t, "a snapshot transfer to start", func() bool { return len(blocked()) > 0 })
	// Writes go on while the transfer is held: syncs and compactions run,
	// but not past the snapshot being sent.
	c.write(c.leader(), overwrites(800, 30, "c"))
	for _, id := range blocked() {
		ss := c.nodes[id].Status().Snapshots
		t.Logf("sender %d while its transfer is held: %+v", id, ss)
		if ss.Index == 0 || ss.Taken == 0 || ss.BytesWritten == 0 {
			t.Fatalf("sender %d: no snapshot produced: %+v", id, ss)
		}
		if ss.CompactedIndex > ss.Index {
			t.Fatalf("sender %d compacted to %d, past the snapshot %d being sent", id, ss.CompactedIndex, ss.Index)
		}
	}
	close(open)
	closed = true
	await(t, "the follower to install a snapshot", func() bool {
		return c.nodes[f].Status().Snapshots.Installed > 0
	})
	c.write(c.leader(), []string{"after=heal"})
	c.awaitSame(c.ids...)
	if got := c.sms[f].get("after"); got != "heal" {
		t.Fatalf("follower: after=%q", got)
	}
	// Compaction resumes once the transfer is over.
	c.write(c.leader(), overwrites(300, 30, "d"))
	for _, id := range c.ids {
		ss := c.nodes[id].Status().Snapshots
		synced := c.syncers[id].maxSynced.Load()
		t.Logf("node %d: %+v, synced %d", id, ss, synced)
		if ss.CompactedIndex > synced && ss.CompactedIndex != ss.Index {
			// An installed snapshot moves the compaction point to its
			// index; anything else stays at or below what Sync returned.
			t.Errorf("node %d compacted to %d, past the synced index %d", id, ss.CompactedIndex, synced)
		}
	}
}

// A capture that fails when a follower needs a snapshot is reported as a
// failed transfer (the follower is never left waiting in snapshot state)
// and retried until one succeeds.
func TestSnapshotOnDemandCaptureFails(t *testing.T) {
	c := newSnapClusterSM(t, 3, true, func(cfg *driver.Config) {
		cfg.SnapshotEntries = 100
		cfg.CompactionMarginEntries = 20
	})
	lead := c.leader()
	c.write(lead, overwrites(20, 5, "a"))
	var f uint64
	for _, id := range c.ids {
		if id != lead {
			f = id
			break
		}
	}
	c.net.Isolate(f, c.ids...)
	c.write(lead, overwrites(400, 30, "b"))
	for _, id := range c.ids {
		if id != f {
			c.sms[id].failSnapshots.Store(2)
		}
	}
	c.net.HealAll()
	await(t, "the follower to install a snapshot after failed captures", func() bool {
		return c.nodes[f].Status().Snapshots.Installed > 0
	})
	c.write(c.leader(), []string{"after=heal"})
	c.awaitSame(c.ids...)
	var failures uint64
	for _, id := range c.ids {
		failures += c.nodes[id].Status().Snapshots.SendFailures
	}
	if failures == 0 {
		t.Fatal("the failed captures were not reported as failed transfers")
	}
}

var errSnapshotRefused = errors.New("test: snapshot refused")
