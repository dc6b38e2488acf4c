package driver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// faultyTransport wraps a node's transport to break its outgoing snapshot
// transfers: the first fail calls fail at once, the next cut calls
// deliver only cutAfter bytes and then break, as a lost connection would.
type faultyTransport struct {
	driver.Transport
	mu       sync.Mutex
	fail     int
	cut      int
	cutAfter int64
	// cutWait delays the break, so the receiver gets what was sent.
	cutWait time.Duration
	calls   atomic.Int64
}

// Start starts the wrapped transport: a wrapper must pass driver.Starter
// on, or the node cannot start what it wraps.
func (f *faultyTransport) Start(ctx context.Context) error {
	if s, ok := f.Transport.(driver.Starter); ok {
		return s.Start(ctx)
	}
	return nil
}

func (f *faultyTransport) SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	f.calls.Add(1)
	f.mu.Lock()
	fail, cut := f.fail > 0, f.fail == 0 && f.cut > 0
	if fail {
		f.fail--
	} else if cut {
		f.cut--
	}
	f.mu.Unlock()
	if fail {
		return errors.New("faultyTransport: peer unreachable")
	}
	if cut {
		data = &brokenReader{r: data, left: f.cutAfter, wait: f.cutWait}
	}
	return f.Transport.SendSnapshot(ctx, msg, data)
}

// brokenReader fails once left bytes were read, after waiting wait.
type brokenReader struct {
	r    io.Reader
	left int64
	wait time.Duration
}

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		time.Sleep(b.wait)
		return 0, errors.New("faultyTransport: connection lost mid-transfer")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func faulty(cfg *driver.Config, f *faultyTransport) {
	inner := cfg.NewTransport
	cfg.NewTransport = func(h driver.MessageHandler) (driver.Transport, error) {
		t, err := inner(h)
		if err != nil {
			return nil, err
		}
		f.Transport = t
		return f, nil
	}
}

// lagBehindSnapshot stops a follower, writes until the leader has
// compacted past it, and restarts it; it returns the follower's ID.
func lagBehindSnapshot(t *testing.T, c *kvCluster, lead uint64, writes, valueBytes int) uint64 {
	t.Helper()
	f := c.follower(lead)
	if err := c.stop(f); err != nil {
		t.Fatal(err)
	}
	c.puts(writes, writes, valueBytes, "lag")
	if st := c.node(lead).Status().Snapshots; st.CompactedIndex == 0 {
		t.Fatalf("the leader did not compact: %+v", st)
	}
	c.start(f)
	return f
}

// An interrupted transfer resumes where the follower's data stops instead
// of starting over, over the real gRPC transport.
func TestSnapshotTransferResumes(t *testing.T) {
	fts := map[uint64]*faultyTransport{}
	c := newKVCluster(t, 3, true, func(id uint64, cfg *driver.Config) {
		cfg.SnapshotEntries = 300
		cfg.CompactionMarginEntries = 50
		if fts[id] == nil {
			fts[id] = &faultyTransport{cut: 1, cutAfter: 1 << 20, cutWait: 500 * time.Millisecond}
		}
		faulty(cfg, fts[id])
	})
	lead := c.leader()
	f := lagBehindSnapshot(t, c, lead, 1500, 2048) // a ~3 MiB snapshot
	await(t, "the follower to install the snapshot", func() bool {
		return c.node(f).Status().Snapshots.Installed > 0
	})
	c.awaitConverged("resumed")
	fs := c.node(f).Status().Snapshots
	t.Logf("follower %d: %+v", f, fs)
	if fs.Resumed == 0 {
		t.Fatal("the second transfer started over instead of resuming")
	}
	// The nodes run on wall-clock ticks, so on a loaded machine leadership
	// can move after lead was read: the broken transfer's sender is
	// whichever node led then, and it must have counted the failure.
	var sendFailures uint64
	for _, id := range c.ids {
		if id == f {
			continue
		}
		ls := c.node(id).Status().Snapshots
		t.Logf("node %d (leader at first: %d): %+v; %d transfer attempts", id, lead, ls, fts[id].calls.Load())
		sendFailures += ls.SendFailures
	}
	if sendFailures == 0 {
		t.Fatal("the broken transfer was not counted as a failure by its sender")
	}
}

// Transfers that keep failing are reported and retried with backoff until
// one succeeds: the follower is never left in snapshot state.
func TestSnapshotTransferRetries(t *testing.T) {
	fts := map[uint64]*faultyTransport{}
	c := newKVCluster(t, 3, false, func(id uint64, cfg *driver.Config) {
		cfg.SnapshotEntries = 300
		cfg.CompactionMarginEntries = 50
		cfg.SnapshotRetryDelay = 10 * time.Millisecond
		if fts[id] == nil {
			fts[id] = &faultyTransport{fail: 3, cut: 1, cutAfter: 10 << 10}
		}
		faulty(cfg, fts[id])
	})
	lead := c.leader()
	f := lagBehindSnapshot(t, c, lead, 1000, 64)
	await(t, "the follower to install the snapshot", func() bool {
		return c.node(f).Status().Snapshots.Installed > 0
	})
	c.awaitConverged("retried")
	// Leadership can move under load (wall-clock ticks): count the
	// transfers of every sender. Each sender's transport fails its first
	// four, so whichever sent the snapshot that took failed four first.
	var total driver.SnapshotStatus
	for _, id := range c.ids {
		if id == f {
			continue
		}
		ls := c.node(id).Status().Snapshots
		t.Logf("node %d (leader at first: %d): %+v after %d attempts", id, lead, ls, fts[id].calls.Load())
		total.SendFailures += ls.SendFailures
		total.Sent += ls.Sent
	}
	if total.SendFailures < 4 || total.Sent == 0 {
		t.Fatalf("senders %+v: want at least 4 failed transfers, then a successful one", total)
	}
}

// A backup taken from a live node seeds a new cluster (offline restore):
// it starts at the backup's index with the same data, and takes writes.
func TestBackupRestore(t *testing.T) {
	c := newKVCluster(t, 3, false, nil)
	lead := c.leader()
	c.puts(2000, 500, 100, "data")
	h := c.awaitConverged("before-backup")
	var buf bytes.Buffer
	f := c.follower(lead)
	meta, err := c.node(f).Backup(context.Background(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of node %d: %d bytes at %d/%d, members %v", f, buf.Len(), meta.Term, meta.Index, meta.Membership.Voters)

	// A corrupt backup is refused before anything is written.
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)/2] ^= 1
	n2 := newKVClusterStopped(t, 3, false, nil)
	wal, st := n2.open(1)
	_, err = driver.RestoreBackup(bytes.NewReader(bad), driver.RestoreTarget{Storage: wal, Snapshots: wal.Snapshots(), StateMachine: st})
	if !errors.Is(err, driver.ErrBadBackup) {
		t.Fatalf("corrupt backup: %v", err)
	}
	wal.Close()
	st.Close()

	for _, id := range n2.ids {
		wal, st := n2.open(id)
		got, err := driver.RestoreBackup(bytes.NewReader(buf.Bytes()), driver.RestoreTarget{
			Storage: wal, Snapshots: wal.Snapshots(), StateMachine: st,
		})
		if err != nil {
			t.Fatalf("restore node %d: %v", id, err)
		}
		if got.Index != meta.Index {
			t.Fatalf("restored %d, backed up %d", got.Index, meta.Index)
		}
		// Restoring twice is refused.
		if _, err := driver.RestoreBackup(bytes.NewReader(buf.Bytes()), driver.RestoreTarget{
			Storage: wal, Snapshots: wal.Snapshots(), StateMachine: st,
		}); err == nil {
			t.Fatal("a second restore into the same directory was accepted")
		}
		wal.Close()
		st.Close()
	}
	for _, id := range n2.ids {
		n2.start(id)
	}
	n2.leader()
	for _, id := range n2.ids {
		got, err := n2.store(id).Hash(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if got.Hash != h.Hash || got.Keys != h.Keys {
			t.Fatalf("node %d restored %+v, the backup's cluster had %+v", id, got, h)
		}
		if st := n2.node(id).Status(); st.Commit < meta.Index {
			t.Fatalf("node %d starts at commit %d, below the backup's %d", id, st.Commit, meta.Index)
		}
	}
	n2.puts(100, 10, 10, "after-restore")
	n2.awaitConverged("after-restore")
}

// A node that joins for the first time (the cluster ran without it, and
// compacted its logs) catches up by snapshot.
func TestSnapshotNewNode(t *testing.T) {
	c := newKVClusterStopped(t, 3, false, func(_ uint64, cfg *driver.Config) {
		cfg.SnapshotEntries = 300
		cfg.CompactionMarginEntries = 50
	})
	c.start(1)
	c.start(2)
	c.leader()
	c.puts(1000, 200, 64, "data")
	c.start(3)
	await(t, "the new node to install a snapshot", func() bool {
		return c.node(3).Status().Snapshots.Installed > 0
	})
	h := c.awaitConverged("new-node")
	t.Logf("new node converged at %d (%d keys): %+v", h.Index, h.Keys, c.node(3).Status().Snapshots)
}
