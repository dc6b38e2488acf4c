package disk

import (
	"errors"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestSaveCommitUnsynced: a commit-only hard state is written without an
// fdatasync, read back at once, refused if term or vote changed, made
// durable by Close, and synced before its segment is sealed.
func TestSaveCommitUnsynced(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: 0}, mkEnts(1, 4, 2, 100))
	base := s.Stats()

	if err := s.SaveCommitUnsynced(core.HardState{Term: 2, Vote: 1, Commit: 3}); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Fsyncs != base.Fsyncs || st.Batches != base.Batches+1 {
		t.Fatalf("unsynced commit: %d fdatasyncs and %d writes, want 0 and 1",
			st.Fsyncs-base.Fsyncs, st.Batches-base.Batches)
	}
	if hs, _, _ := s.InitialState(); hs.Commit != 3 {
		t.Fatalf("InitialState commit %d after the unsynced write, want 3", hs.Commit)
	}
	for _, bad := range []core.HardState{{Term: 3, Vote: 1, Commit: 3}, {Term: 2, Vote: 2, Commit: 3}} {
		if err := s.SaveCommitUnsynced(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("SaveCommitUnsynced(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}

	// Fill the segment with unsynced commits followed by a Save that
	// rotates: the sealed segment is synced once before the rotation,
	// the new one once for its batch.
	var i uint64 = 4
	for ; s.Stats().Segments == 1; i++ {
		before := s.Stats()
		if err := s.SaveCommitUnsynced(core.HardState{Term: 2, Vote: 1, Commit: 3}); err != nil {
			t.Fatal(err)
		}
		mustSave(t, s, core.HardState{}, mkEnts(i, i+1, 2, 2000))
		after := s.Stats()
		if after.Segments > 1 {
			if got := after.Fsyncs - before.Fsyncs; got != 3 {
				t.Fatalf("rotation after an unsynced write: %d fdatasyncs, want 3 (seal the old segment, the new checkpoint, the batch)", got)
			}
			break
		}
		if got := after.Fsyncs - before.Fsyncs; got != 1 {
			t.Fatalf("Save after an unsynced write: %d fdatasyncs, want 1", got)
		}
		// Distinct commits so every unsynced call writes a record.
		if err := s.SaveCommitUnsynced(core.HardState{Term: 2, Vote: 1, Commit: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveCommitUnsynced(core.HardState{Term: 2, Vote: 1, Commit: i}); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	s = mustOpen(t, dir, opts)
	defer s.Close()
	hs, _, err := s.InitialState()
	if err != nil {
		t.Fatal(err)
	}
	if want := (core.HardState{Term: 2, Vote: 1, Commit: i}); hs != want {
		t.Fatalf("after reopen: hard state %+v, want %+v", hs, want)
	}
}

// TestSaveAfterUnsyncedCommit: a synced Save of the very hard state a
// SaveCommitUnsynced wrote makes it durable (it is written again, under an
// fdatasync), rather than returning at once because nothing changed.
func TestSaveAfterUnsyncedCommit(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	defer s.Close()
	mustSave(t, s, core.HardState{Term: 1, Vote: 1}, mkEnts(1, 3, 1, 10))
	hs := core.HardState{Term: 1, Vote: 1, Commit: 2}
	if err := s.SaveCommitUnsynced(hs); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	mustSave(t, s, hs, nil)
	if got := s.Stats().Fsyncs - before.Fsyncs; got != 1 {
		t.Fatalf("Save of the unsynced hard state: %d fdatasyncs, want 1", got)
	}
	before = s.Stats()
	mustSave(t, s, hs, nil) // now durable: nothing to do
	if got := s.Stats().Batches - before.Batches; got != 0 {
		t.Fatalf("Save of a durable hard state: %d writes, want 0", got)
	}
}
