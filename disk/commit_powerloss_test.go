package disk

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/internal/powerloss"
)

var flagCommitPowerLossIters = flag.Int("disk.commit-powerloss-iters", 120,
	"schedules TestCommitMarkerPowerLoss runs (each: a workload on real files, a power cut by internal/powerloss, a recovery)")

// TestCommitMarkerPowerLoss: random Raft-like schedules of Save,
// WriteCommit, InstallSnapshot at a committed index and Compact, on real
// files under internal/powerloss, cut by a simulated power loss at a
// random file operation (or after the workload). The cut keeps, of what
// was not synced, any subset of pages and torn sectors, each holding any
// version written since the last sync: the marker (never synced after its
// creation) may be lost, kept, kept in an older version, or torn, in any
// order relative to the WAL's writes. After reopening: the WAL holds the
// state after some prefix of the operations that includes every one that
// returned durable, and the commit index is at most the last durable index
// and at least the commit of the last Save that returned, and explained by
// a value the marker held. Replay one schedule with -disk.seed=<seed>
// -disk.commit-powerloss-iters=1.
func TestCommitMarkerPowerLoss(t *testing.T) {
	iters := *flagCommitPowerLossIters
	base := *flagSeed
	if base == 0 {
		base = time.Now().UnixNano()
	}
	if testing.Short() || raceEnabled {
		iters = min(iters, 30)
	}
	t.Logf("seeds %d .. %d (replay one with: go test ./disk -run TestCommitMarkerPowerLoss -disk.seed=<seed> -disk.commit-powerloss-iters=1)",
		base, base+int64(iters)-1)
	root := t.TempDir()
	var sum struct{ mid, markerWon, markerLost int }
	for k := range iters {
		seed := base + int64(k)
		out, err := runCommitPowerLoss(filepath.Join(root, fmt.Sprint(k)), seed)
		if err != nil {
			t.Fatalf("seed %d: %v (replay: go test ./disk -run TestCommitMarkerPowerLoss -disk.seed=%d -disk.commit-powerloss-iters=1)", seed, err, seed)
		}
		if out.mid {
			sum.mid++
		}
		if out.markerWon {
			sum.markerWon++
		}
		if out.markerLost {
			sum.markerLost++
		}
	}
	t.Logf("%d schedules: %d cut during the workload; the marker set the commit in %d, a newer marker value was lost in %d",
		iters, sum.mid, sum.markerWon, sum.markerLost)
	if iters >= 100 && (sum.mid == 0 || sum.markerWon == 0 || sum.markerLost == 0) {
		t.Fatalf("some outcome never happened (%+v): the test exercised too little", sum)
	}
}

type commitPowerLossOutcome struct {
	mid        bool // the power went during the workload
	markerWon  bool // the recovered commit came from the marker, above the saved one
	markerLost bool // the recovered commit is below the last marker value written
}

func runCommitPowerLoss(root string, seed int64) (out commitPowerLossOutcome, err error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return out, err
	}
	defer os.RemoveAll(root)
	rng := rand.New(rand.NewPCG(uint64(seed), 0xc0417))
	journal := filepath.Join(root, "journal")
	pl, err := powerloss.New(vfs.Default, powerloss.Options{Journal: journal})
	if err != nil {
		return out, err
	}
	const nOps = 30
	cfs := &cutFS{FS: pl, cutAt: 1 + rng.IntN(nOps*3)}
	opts := testOptions()
	opts.FS = cfs
	opts.SegmentBytes = MinSegmentBytes
	opts.MaxRecordBytes = 1 << 10
	opts.MaxBatchBytes = 8 << 10
	opts.PreallocateBytes = int64(rng.IntN(2)) * MinPreallocateBytes
	dir := filepath.Join(root, "node")

	var m refLog
	states := []refLog{m.clone()}
	durable := 0
	markers := []uint64{0}
	s, err := Open(dir, opts)
	if err != nil {
		if !errors.Is(err, errPowerCut) {
			return out, fmt.Errorf("first Open: %w", err)
		}
		s = nil
	}
	// committed: what Raft would never truncate.
	committed := func() uint64 { return max(m.hs.Commit, m.marker, m.snap.Index) }
	for op := 0; s != nil && op < nOps; op++ {
		next := m.clone()
		var err error
		switch r := rng.IntN(10); {
		case r < 5: // Save: maybe a new term; entries appended or replacing an uncommitted suffix
			hs := m.hs
			if hs.Term == 0 || rng.IntN(4) == 0 {
				hs.Term++
				hs.Vote = uint64(1 + rng.IntN(3))
			}
			from := m.last() + 1
			if c := committed(); m.last() > c && rng.IntN(4) == 0 {
				from = c + 1 + rng.Uint64N(m.last()-c)
			}
			var ents []core.Entry
			for i := range uint64(rng.IntN(5)) {
				ents = append(ents, core.Entry{Index: from + i, Term: hs.Term, Data: powerLossRandom(rng, rng.IntN(300))})
			}
			next.save(core.HardState{}, ents)
			if last := next.last(); hs.Commit < last && rng.IntN(2) == 0 {
				hs.Commit += 1 + rng.Uint64N(last-hs.Commit)
			}
			next.save(hs, nil)
			err = s.Save(hs, ents)
		case r < 8: // WriteCommit: never synced
			if m.marker >= m.last() {
				continue
			}
			idx := m.marker + 1 + rng.Uint64N(m.last()-m.marker)
			markers = append(markers, idx)
			if err := s.WriteCommit(idx); err != nil {
				if !errors.Is(err, errPowerCut) {
					return out, fmt.Errorf("operation %d: WriteCommit(%d): %w", op, idx, err)
				}
				op = nOps
				continue
			}
			m.marker = idx
			continue
		default: // compaction: a snapshot marker at a committed index, then Compact
			c := min(committed(), m.last())
			if c <= m.snap.Index {
				continue
			}
			term, _ := m.term(c)
			meta := core.SnapshotMeta{Index: c, Term: term, Membership: core.Membership{Voters: []uint64{1, 2, 3}}}
			next.install(meta)
			if err = s.InstallSnapshot(meta); err == nil {
				m = next
				states = append(states, m.clone())
				durable = len(states) - 1
				next = m.clone()
				err = s.Compact(c)
				if err == nil {
					continue
				}
			}
		}
		if err != nil {
			if !errors.Is(err, errPowerCut) {
				return out, fmt.Errorf("operation %d: %w", op, err)
			}
			states = append(states, next) // may or may not have reached the disk
			break
		}
		m = next
		states = append(states, m.clone())
		durable = len(states) - 1
	}
	out.mid = cfs.cut()
	if s != nil {
		s.Close() // its writes and syncs fail: the power is off
	}
	if err := pl.Close(); err != nil {
		return out, err
	}
	mode := powerloss.CutRandom
	switch rng.IntN(10) {
	case 0:
		mode = powerloss.CutNothing
	case 1:
		mode = powerloss.CutEverything
	}
	if _, err := powerloss.Cut(journal, rng, mode); err != nil {
		return out, fmt.Errorf("powerloss.Cut: %w", err)
	}

	ropts := opts
	ropts.FS = vfs.Default
	r, err := Open(dir, ropts)
	if err != nil {
		return out, fmt.Errorf("power cut at operation %d: Open: %w", cfs.cutAt, err)
	}
	defer r.Close()
	hs, _, err := r.InitialState()
	if err != nil {
		return out, err
	}
	// No truncation below a commit in this workload: the floor is the
	// last durable state's commit, without the marker.
	floor := states[durable].clone()
	floor.marker = 0
	if hs.Commit < floor.commit() {
		return out, fmt.Errorf("recovered commit %d is below %d, the commit of the last durable Save", hs.Commit, floor.commit())
	}
	got, marker, err := matchRecovered(r, states, durable, markers, rng)
	if err != nil {
		return out, fmt.Errorf("power cut at operation %d (mode %d): %w", cfs.cutAt, mode, err)
	}
	saved := states[got].clone()
	saved.marker = 0
	out.markerWon = hs.Commit > saved.commit()
	out.markerLost = marker < m.marker && min(m.marker, saved.last()) > hs.Commit

	// The recovered Store keeps working: the marker too.
	last, _ := r.LastIndex()
	if err := r.WriteCommit(last); err != nil {
		return out, fmt.Errorf("WriteCommit after recovery: %w", err)
	}
	if err := r.Close(); err != nil {
		return out, err
	}
	r2, err := Open(dir, ropts)
	if err != nil {
		return out, fmt.Errorf("reopen after recovery: %w", err)
	}
	defer r2.Close()
	if c := reportedCommitErr(r2); c != last {
		return out, fmt.Errorf("commit %d after WriteCommit(%d) and a clean reopen", c, last)
	}
	return out, nil
}

func reportedCommitErr(s *Store) uint64 {
	hs, _, _ := s.InitialState()
	return hs.Commit
}

// cutFS passes operations through to a powerloss.FS until the cutAt-th
// mutating one, where the power goes: from then on every mutation fails
// with errPowerCut and never reaches the journal, so that Close syncs
// nothing and the journal lists exactly what was unsynced at the cut.
type cutFS struct {
	vfs.FS
	mu    sync.Mutex
	ops   int
	cutAt int
	dead  bool
}

// step counts a mutation; false once the power is off.
func (c *cutFS) step() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return errPowerCut
	}
	c.ops++
	if c.ops >= c.cutAt {
		c.dead = true
		return errPowerCut
	}
	return nil
}

// cut turns the power off now; it reports whether it was already off.
func (c *cutFS) cut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.dead
	c.dead = true
	return was
}

func (c *cutFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return &cutFile{File: f, fs: c}, nil
}

func (c *cutFS) Create(name string, cat vfs.DiskWriteCategory) (vfs.File, error) {
	if err := c.step(); err != nil {
		return nil, err
	}
	return c.wrap(c.FS.Create(name, cat))
}

func (c *cutFS) OpenReadWrite(name string, cat vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return c.wrap(c.FS.OpenReadWrite(name, cat, opts...))
}

func (c *cutFS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	return c.wrap(c.FS.Open(name, opts...))
}

func (c *cutFS) OpenDir(name string) (vfs.File, error) { return c.wrap(c.FS.OpenDir(name)) }

func (c *cutFS) Remove(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Remove(name)
}

func (c *cutFS) RemoveAll(name string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.RemoveAll(name)
}

func (c *cutFS) Rename(from, to string) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.Rename(from, to)
}

func (c *cutFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := c.step(); err != nil {
		return err
	}
	return c.FS.MkdirAll(dir, perm)
}

type cutFile struct {
	vfs.File
	fs *cutFS
}

func (f *cutFile) Write(b []byte) (int, error) {
	if err := f.fs.step(); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}

func (f *cutFile) WriteAt(b []byte, off int64) (int, error) {
	if err := f.fs.step(); err != nil {
		return 0, err
	}
	return f.File.WriteAt(b, off)
}

func (f *cutFile) Sync() error {
	if err := f.fs.step(); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *cutFile) SyncData() error {
	if err := f.fs.step(); err != nil {
		return err
	}
	return f.File.SyncData()
}

func (f *cutFile) SyncTo(n int64) (bool, error) {
	if err := f.fs.step(); err != nil {
		return false, err
	}
	return f.File.SyncTo(n)
}
