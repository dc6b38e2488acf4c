package disk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func TestSaveReadReopen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions())
	var m refLog
	rng := rand.New(rand.NewPCG(1, 2))
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("empty store: %v", err)
	}
	steps := []struct {
		hs   core.HardState
		ents []core.Entry
	}{
		{core.HardState{Term: 1, Vote: 1}, nil},
		{core.HardState{Term: 1, Vote: 1, Commit: 2}, mkEnts(1, 4, 1, 10)},
		{core.HardState{}, mkEnts(4, 40, 1, 300)},                            // spills out of the cache
		{core.HardState{Term: 2, Vote: 3, Commit: 20}, mkEnts(30, 35, 2, 5)}, // overwrite a suffix
		{core.HardState{}, mkEnts(35, 36, 2, 0)},
	}
	for k, st := range steps {
		mustSave(t, s, st.hs, st.ents)
		m.save(st.hs, st.ents)
		if err := verifyStore(s, &m, rng); err != nil {
			t.Fatalf("after step %d: %v", k, err)
		}
	}
	mustClose(t, s)
	s = mustOpen(t, dir, testOptions())
	defer s.Close()
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("after reopen: %v", err)
	}
}

// TestOneFdatasyncPerSave: with one caller, every Save (including one that
// starts a new segment) costs exactly one batch write and one fdatasync; a
// Save with nothing new costs none. With preallocation a rotation also
// zero-fill write extends each segment (whose chunk here is clamped to the
// small SegmentBytes, so once per segment). A rotation costs one more
// fdatasync: the new segment's checkpoint is durable before its first
// batch is written.
func TestOneFdatasyncPerSave(t *testing.T) {
	for _, prealloc := range []int64{DefaultPreallocateBytes, 0} {
		t.Run(fmt.Sprintf("prealloc=%d", prealloc), func(t *testing.T) {
			opts := testOptions()
			opts.SegmentBytes = MinSegmentBytes
			opts.PreallocateBytes = prealloc
			s := mustOpen(t, t.TempDir(), opts)
			defer s.Close()
			base := s.Stats()
			const n = 50
			for i := uint64(1); i <= n; i++ {
				before := s.Stats()
				mustSave(t, s, core.HardState{Term: 1, Commit: i - 1}, mkEnts(i, i+1, 1, 256))
				after := s.Stats()
				rotated := after.Segments != before.Segments
				want := uint64(1)
				if rotated {
					want = 2 // the new segment's checkpoint, then the batch
				}
				if got := after.Fsyncs - before.Fsyncs; got != want || after.SealSyncs-before.SealSyncs != want-1 {
					t.Fatalf("Save %d (rotated: %v): %d fdatasyncs, %d sealing; want %d, %d",
						i, rotated, got, after.SealSyncs-before.SealSyncs, want, want-1)
				}
			}
			mustSave(t, s, core.HardState{}, nil)                       // nothing
			mustSave(t, s, core.HardState{Term: 1, Commit: n - 1}, nil) // unchanged hard state
			st := s.Stats()
			rotations := uint64(st.Segments - 1)
			wantSeals, wantFills := rotations, uint64(0)
			if prealloc > 0 {
				wantFills = uint64(st.Segments)
			}
			if st.Saves-base.Saves != n || st.Fsyncs-base.Fsyncs != n+wantSeals || st.Batches-base.Batches != n {
				t.Fatalf("%d Saves: %d fdatasyncs, %d writes; want %d and %d",
					n, st.Fsyncs-base.Fsyncs, st.Batches-base.Batches, n+wantSeals, n)
			}
			if st.SealSyncs != wantSeals || st.ZeroFills != wantFills {
				t.Fatalf("%d rotations: %d sealing fdatasyncs, %d zero fills; want %d and %d",
					rotations, st.SealSyncs, st.ZeroFills, wantSeals, wantFills)
			}
			if st.Segments < 3 || st.DirSyncs-base.DirSyncs != rotations {
				t.Fatalf("%d segments, %d directory syncs: want one per new segment", st.Segments, st.DirSyncs-base.DirSyncs)
			}
		})
	}
}

func TestSaveRejects(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	defer s.Close()
	mustSave(t, s, core.HardState{}, mkEnts(1, 5, 1, 1))
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: 2, Term: 1}); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]core.Entry{
		"gap":            mkEnts(6, 7, 1, 1),
		"not contiguous": {{Index: 5, Term: 1}, {Index: 7, Term: 1}},
		"at snapshot":    mkEnts(2, 4, 1, 1),
	}
	for name, ents := range cases {
		if err := s.Save(core.HardState{}, ents); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if last, _ := s.LastIndex(); last != 4 {
		t.Fatalf("rejected Saves changed the log: last %d", last)
	}
}

func TestInstallSnapshotAndCompact(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	var m refLog
	rng := rand.New(rand.NewPCG(3, 4))
	ents := mkEnts(1, 101, 1, 200)
	for i := range ents {
		mustSave(t, s, core.HardState{Term: 1, Commit: uint64(i)}, ents[i:i+1])
		m.save(core.HardState{Term: 1, Commit: uint64(i)}, ents[i:i+1])
	}
	segs := s.Stats().Segments

	// Matching snapshot: the suffix stays.
	meta := snapMeta(60, 1)
	if err := s.InstallSnapshot(meta); err != nil {
		t.Fatal(err)
	}
	m.install(meta)
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatal(err)
	}
	if err := s.InstallSnapshot(meta); err != nil { // idempotent
		t.Fatalf("reinstalling the same snapshot: %v", err)
	}
	for _, bad := range []core.SnapshotMeta{snapMeta(50, 1), snapMeta(60, 2), {}} {
		if err := s.InstallSnapshot(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("InstallSnapshot(%d/%d): %v, want ErrInvalidArgument", bad.Index, bad.Term, err)
		}
	}
	if err := s.Compact(61); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Compact above the snapshot: %v", err)
	}
	if err := s.Compact(60); err != nil {
		t.Fatal(err)
	}
	if after := s.Stats().Segments; after >= segs {
		t.Fatalf("Compact kept all %d segments", after)
	}
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("after Compact: %v", err)
	}
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("after Compact and reopen: %v", err)
	}

	// Conflicting snapshot beyond the log: everything goes.
	meta = snapMeta(150, 3)
	if err := s.InstallSnapshot(meta); err != nil {
		t.Fatal(err)
	}
	m.install(meta)
	if err := s.Compact(150); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Segments != 1 || st.FirstIndex != 151 || st.LastIndex != 150 {
		t.Fatalf("after a full reset: %+v", st)
	}
	next := mkEnts(151, 153, 3, 10)
	mustSave(t, s, core.HardState{Term: 3}, next)
	m.save(core.HardState{Term: 3}, next)
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	defer s.Close()
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("after reset and reopen: %v", err)
	}
}

func TestClosedStore(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	mustSave(t, s, core.HardState{}, mkEnts(1, 2, 1, 1))
	mustClose(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{
		"Save":            s.Save(core.HardState{}, mkEnts(2, 3, 1, 1)),
		"InstallSnapshot": s.InstallSnapshot(snapMeta(1, 1)),
		"Compact":         s.Compact(0),
	}
	_, checks["Entries"] = s.Entries(1, 2, 10)
	_, checks["Term"] = s.Term(1)
	_, checks["FirstIndex"] = s.FirstIndex()
	_, checks["LastIndex"] = s.LastIndex()
	_, _, checks["InitialState"] = s.InitialState()
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestEntriesNotAliased: what Entries returns is not changed by later
// writes that supersede those entries.
func TestEntriesNotAliased(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	defer s.Close()
	mustSave(t, s, core.HardState{}, mkEnts(1, 4, 1, 8))
	got, _ := s.Entries(1, 4, 1<<20)
	mustSave(t, s, core.HardState{}, mkEnts(2, 4, 2, 8))
	if err := checkEntries(got, mkEnts(1, 4, 1, 8)); err != nil {
		t.Fatalf("earlier result changed: %v", err)
	}
}

// TestWriteFailureIsSticky: after a failed write the Store refuses every
// later write (the kernel may have dropped the data a retry would claim),
// while reads of what was durable keep working.
func TestWriteFailureIsSticky(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	mustSave(t, s, core.HardState{Term: 1}, mkEnts(1, 3, 1, 10))
	s.active.Close() // the next pwrite fails
	if err := s.Save(core.HardState{}, mkEnts(3, 4, 1, 10)); !errors.Is(err, ErrFailed) {
		t.Fatalf("Save on a broken file: %v, want ErrFailed", err)
	}
	if err := s.Save(core.HardState{Term: 2}, nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("Save after a failure: %v, want ErrFailed", err)
	}
	if err := s.InstallSnapshot(snapMeta(1, 1)); !errors.Is(err, ErrFailed) {
		t.Fatalf("InstallSnapshot after a failure: %v, want ErrFailed", err)
	}
	if last, _ := s.LastIndex(); last != 2 {
		t.Fatalf("LastIndex %d after a failed Save, want 2", last)
	}
	if got, err := s.Entries(1, 3, 1<<20); err != nil || len(got) != 2 {
		t.Fatalf("reads after a failure: %d entries, %v", len(got), err)
	}
	s.Close()
}
