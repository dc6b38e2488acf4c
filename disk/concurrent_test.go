package disk

import (
	"fmt"
	"sync"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestConcurrentSaves: several goroutines Save at once. Their Saves are
// merged into shared writes (fewer fdatasyncs than Saves), each Save's
// entries are visible when it returns, and after a reopen every entry is
// present, in order, with the data its writer gave it.
func TestConcurrentSaves(t *testing.T) {
	const writers, perWriter, batch = 8, 40, 3
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions())

	// Indices must be handed out in the order Saves are queued, so a
	// writer holds seqMu from choosing its indices until its Save is
	// queued (the hook), then waits for durability without it: that is
	// where Saves pile up behind an fsync and merge.
	var seqMu sync.Mutex
	next := uint64(1)
	s.testHookEnqueued = func() { seqMu.Unlock() }

	data := func(w, k int, i uint64) []byte { return []byte(fmt.Sprintf("w%d-k%d-i%d", w, k, i)) }
	want := make(map[uint64][]byte)
	var wantMu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perWriter {
				seqMu.Lock()
				lo := next
				next += batch
				ents := make([]core.Entry, batch)
				wantMu.Lock()
				for j := range ents {
					i := lo + uint64(j)
					ents[j] = core.Entry{Index: i, Term: 1, Data: data(w, k, i)}
					want[i] = ents[j].Data
				}
				wantMu.Unlock()
				if err := s.Save(core.HardState{Term: 1, Commit: lo}, ents); err != nil {
					errs <- err
					return
				}
				if last, _ := s.LastIndex(); last < lo+batch-1 {
					errs <- fmt.Errorf("Save of [%d, %d] returned but LastIndex is %d", lo, lo+batch-1, last)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Stats()
	const saves = writers * perWriter
	t.Logf("%d Saves in %d batches, %d fdatasyncs", st.Saves, st.Batches, st.Fsyncs)
	if st.Saves != saves {
		t.Fatalf("Stats.Saves = %d, want %d", st.Saves, saves)
	}
	if st.Fsyncs >= saves {
		t.Fatalf("%d fdatasyncs for %d concurrent Saves: nothing was merged", st.Fsyncs, saves)
	}
	// Rotations also sync the segment they seal (cutting its zero tail),
	// counted apart as SealSyncs.
	if st.Fsyncs-st.SealSyncs != st.Batches {
		t.Fatalf("%d fdatasyncs (%d sealing a segment) for %d batches, want one each",
			st.Fsyncs, st.SealSyncs, st.Batches)
	}
	mustClose(t, s)

	s = mustOpen(t, dir, testOptions())
	defer s.Close()
	last, _ := s.LastIndex()
	if last != saves*batch {
		t.Fatalf("LastIndex = %d after reopen, want %d", last, saves*batch)
	}
	got, err := s.Entries(1, last+1, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range got {
		if e.Index != uint64(k)+1 || string(e.Data) != string(want[e.Index]) {
			t.Fatalf("entry %d: index %d data %q, want %q", k+1, e.Index, e.Data, want[uint64(k)+1])
		}
	}
}

// TestConcurrentReadsDuringSaves runs readers against a Store while it
// writes, rotates and compacts; under -race this checks the locking, and
// every read must be consistent with some durable state.
func TestConcurrentReadsDuringSaves(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	defer s.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last < first {
					continue
				}
				ents, err := s.Entries(first, last+1, 4096)
				if err != nil {
					// A snapshot may have moved FirstIndex meanwhile.
					if f, _ := s.FirstIndex(); f > first {
						continue
					}
					errs <- err
					return
				}
				for k := range ents {
					if ents[k].Index != first+uint64(k) || string(ents[k].Data) != string(payload(ents[k].Index, 1, 100)) {
						errs <- fmt.Errorf("read entry %d wrong", ents[k].Index)
						return
					}
				}
			}
		}()
	}
	for i := uint64(1); i <= 300; i++ {
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 100))
		if i%50 == 0 {
			if err := s.InstallSnapshot(core.SnapshotMeta{Index: i - 20, Term: 1, Membership: core.Membership{Voters: []uint64{1}}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(i - 20); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
