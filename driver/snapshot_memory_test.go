package driver_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/internal/proctest"
	"github.com/rafty-db/rafty/transport"
)

var snapshotBytesFlag = flag.Int64("rafty.snapshot.bytes", 16<<20,
	"state size TestSnapshotMemoryBounded transfers (1073741824 for the 1 GiB measurement)")

// blobSM is a state machine whose state is size bytes of deterministic
// pseudo-random data, generated as it streams: it makes snapshots of any
// size without holding them. Restore reads the whole stream and checks it.
type blobSM struct {
	size     int64
	mu       sync.Mutex
	applied  uint64
	restored atomic.Int64
}

func (s *blobSM) Applied() (uint64, error) { return 0, nil }

func (s *blobSM) Apply(cmds []driver.Command) ([]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := make([]any, len(cmds))
	for i, c := range cmds {
		s.applied = c.Index
		res[i] = c.Index
	}
	return res, nil
}

func (s *blobSM) Snapshot() (driver.SnapshotSource, error) { return blobSource{size: s.size}, nil }

type blobSource struct{ size int64 }

func blobData(size int64) io.Reader {
	var seed [32]byte
	return io.LimitReader(rand.NewChaCha8(seed), size)
}

func (b blobSource) WriteTo(w io.Writer) (int64, error) {
	return io.CopyBuffer(w, blobData(b.size), make([]byte, 256<<10))
}

func (blobSource) Close() error { return nil }

func (s *blobSM) Restore(r io.Reader) error {
	want := blobData(s.size)
	a, b := make([]byte, 256<<10), make([]byte, 256<<10)
	var n int64
	for {
		k, err := io.ReadFull(r, a)
		if k > 0 {
			if _, werr := io.ReadFull(want, b[:k]); werr != nil || string(a[:k]) != string(b[:k]) {
				return fmt.Errorf("blobSM: restored data differs at byte %d", n)
			}
			n += int64(k)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != s.size {
		return fmt.Errorf("blobSM: restored %d bytes, want %d", n, s.size)
	}
	s.restored.Add(1)
	return nil
}

// TestSnapshotMemoryBounded measures the resident memory of a snapshot
// transfer through the whole driver path, in one process: the leader
// streams its snapshot file (disk.SnapshotStore.OpenLatest, verified
// first) over gRPC; the follower writes it to a temporary snapshot file,
// syncs and commits it, and restores its state machine from it. The
// state is -rafty.snapshot.bytes of incompressible data (16 MiB by
// default; 1073741824 for the 1 GiB measurement):
//
//	go test ./driver -run TestSnapshotMemoryBounded -v -rafty.snapshot.bytes=1073741824
//
// The peak RSS (VmHWM, reset through /proc/self/clear_refs just before
// the follower restarts) must stay within 64 MiB of the RSS at that point.
func TestSnapshotMemoryBounded(t *testing.T) {
	if raceEnabled {
		t.Skip("a memory measurement; the race detector multiplies memory use")
	}
	size := *snapshotBytesFlag
	root := t.TempDir()
	ids := []uint64{1, 2, 3}
	addrs, lns := map[uint64]string{}, map[uint64]net.Listener{}
	for _, id := range ids {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[id], lns[id] = ln.Addr().String(), ln
	}
	sms := map[uint64]*blobSM{}
	nodes := map[uint64]*driver.Node{}
	start := func(id uint64) {
		dopts := disk.DefaultOptions()
		wal, err := disk.Open(filepath.Join(root, fmt.Sprint(id)), dopts)
		if err != nil {
			t.Fatal(err)
		}
		sms[id] = &blobSM{size: size}
		ln := lns[id] // bound in advance on the first start only
		delete(lns, id)
		cfg := driver.Config{
			ID: id, Peers: addrPeers(addrs), Storage: wal, Snapshots: wal.Snapshots(), StateMachine: sms[id],
			TickInterval: kvTick, Logger: testLogger(), SnapshotEntries: 100, CompactionMarginEntries: 10,
			TuneRaft: func(rc *core.Config) { rc.ElectionTicks = 10 },
			NewTransport: grpcTransport(id, addrs, ln, func(tc *transport.Config) {
				tc.SnapshotChunkBytes = transport.MaxSnapshotChunkBytes
			}),
		}
		n, err := driver.Start(context.Background(), cfg)
		if err != nil {
			wal.Close()
			t.Fatal(err)
		}
		nodes[id] = n
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Stop()
		}
		for _, ln := range lns {
			ln.Close()
		}
	})
	start(1)
	start(2)
	await(t, "a leader", func() bool {
		return nodes[1].Status().Role == core.RoleLeader || nodes[2].Status().Role == core.RoleLeader
	})
	lead := uint64(1)
	if nodes[2].Status().Role == core.RoleLeader {
		lead = 2
	}
	cmds := make([]string, 150)
	for i := range cmds {
		cmds[i] = fmt.Sprintf("c%d", i)
	}
	writeAll(t, nodes, lead, cmds)
	await(t, "both nodes to snapshot and compact", func() bool {
		return nodes[1].Status().Snapshots.CompactedIndex > 0 && nodes[2].Status().Snapshots.CompactedIndex > 0
	})

	var elapsed time.Duration
	idle, peak := proctest.PeakRSS(t, func() {
		began := time.Now()
		start(3)
		await(t, "node 3 to install the snapshot", func() bool {
			return nodes[3].Status().Snapshots.Installed > 0
		})
		elapsed = time.Since(began)
	})
	if sms[3].restored.Load() != 1 {
		t.Fatalf("node 3 restored %d times", sms[3].restored.Load())
	}
	growth := peak - idle
	t.Logf("%d MiB snapshot sent, received, committed and restored in %v: RSS before %.1f MiB, peak %.1f MiB, growth %.1f MiB (three nodes in this process)",
		size>>20, elapsed.Round(time.Millisecond), float64(idle)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20))
	fmt.Fprintf(os.Stderr, "DRIVER_RSS_RESULT size_mib=%d before_mib=%.1f peak_mib=%.1f growth_mib=%.1f seconds=%.1f\n",
		size>>20, float64(idle)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20), elapsed.Seconds())
	if growth >= 64<<20 {
		t.Fatalf("peak RSS grew by %d MiB during a %d MiB snapshot transfer", growth>>20, size>>20)
	}
}
