package disk

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// activeEnd returns the active segment and its durable size.
func (s *Store) activeEnd() (uint64, int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	seg := s.segs[len(s.segs)-1]
	return seg.seq, seg.size
}

// savePoint is what was reported durable after one Save.
type savePoint struct {
	end   int64 // durable size of the (single) segment
	state refLog
}

// crashOptions: one segment for the whole crash log, preallocated in
// small chunks so that the file holds a zero tail worth cutting into.
func crashOptions() Options {
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	opts.PreallocateBytes = MinPreallocateBytes
	return opts
}

// buildCrashLog writes a log of varied Saves into one segment and returns
// the segment's bytes (with its zero tail) and the state after each Save.
func buildCrashLog(t *testing.T, dir string) ([]byte, []savePoint) {
	opts := crashOptions()
	s := mustOpen(t, dir, opts)
	var m refLog
	_, end := s.activeEnd()
	points := []savePoint{{end: end, state: m.clone()}}
	save := func(hs core.HardState, ents []core.Entry) {
		mustSave(t, s, hs, ents)
		m.save(hs, ents)
		_, end := s.activeEnd()
		points = append(points, savePoint{end: end, state: m.clone()})
	}
	save(core.HardState{Term: 1, Vote: 1}, mkEnts(1, 6, 1, 40))
	for i := uint64(6); i < 12; i++ {
		save(core.HardState{}, mkEnts(i, i+1, 1, int(i)*3))
	}
	save(core.HardState{Term: 2, Vote: 2, Commit: 5}, nil)
	save(core.HardState{Term: 2, Vote: 2, Commit: 7}, mkEnts(9, 12, 2, 25)) // overwrite 9..11
	save(core.HardState{}, mkEnts(12, 16, 2, 0))                            // empty payloads
	save(core.HardState{Term: 3, Commit: 12}, mkEnts(16, 17, 3, 100))
	save(core.HardState{}, mkEnts(14, 15, 3, 10)) // overwrite suffix with one entry
	// Copied before Close, as a crash would leave it (Close changes
	// nothing on disk either; TestPreallocatedReopen checks that).
	data, err := os.ReadFile(segPath(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	end = points[len(points)-1].end
	if int64(len(data))%opts.PreallocateBytes != 0 || int64(len(data)) <= end || !allZero(data[end:]) {
		t.Fatalf("segment is %d bytes, last Save ended at %d: want a zero tail up to a multiple of %d",
			len(data), end, opts.PreallocateBytes)
	}
	return data, points
}

func allZero(b []byte) bool { return !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// TestCrashCutEveryOffset simulates a crash during the last writes: the
// segment is cut at every byte offset of its last Saves and the start of
// its preallocated zero tail, then at a stride through the rest of the
// tail (and, separately, cut and then zero-filled back to full length, as
// a file system may leave it). Every Save that ended before the cut must
// be recovered exactly; no partial Save may appear. The cut is logged as a
// torn tail exactly when a nonzero byte was cut: zeros after the last
// intact Save are preallocated space.
func TestCrashCutEveryOffset(t *testing.T) {
	data, points := buildCrashLog(t, t.TempDir())
	opts := crashOptions()
	from := points[len(points)-6].end
	logEnd := points[len(points)-1].end
	var cuts []int64
	for cut := from; cut <= logEnd+2*recordHeaderSize; cut++ {
		cuts = append(cuts, cut)
	}
	for cut := logEnd + 2*recordHeaderSize + 1; cut < int64(len(data)); cut += 97 {
		cuts = append(cuts, cut)
	}
	cuts = append(cuts, int64(len(data))-1, int64(len(data)))
	var truncations, zeroTails int
	for _, zeroFill := range []bool{false, true} {
		for _, cut := range cuts {
			name := fmt.Sprintf("cut=%d/zero=%v", cut, zeroFill)
			img := bytes.Clone(data[:cut])
			if zeroFill {
				img = append(img, make([]byte, int64(len(data))-cut)...)
			}
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, walDirName), 0o755)
			if err := os.WriteFile(segPath(dir, 1), img, 0o644); err != nil {
				t.Fatal(err)
			}
			// The expected state: the last Save whose bytes are all intact
			// (ended before the cut, or restored by the zero fill when its
			// last bytes were zeros anyway).
			k := 0
			for k+1 < len(points) && points[k+1].end <= int64(len(img)) &&
				bytes.Equal(img[:points[k+1].end], data[:points[k+1].end]) {
				k++
			}
			var logs logCapture
			opts.Logger = logs.logger()
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatalf("%s: Open: %v", name, err)
			}
			if err := verifyStore(s, &points[k].state, rand.New(rand.NewPCG(uint64(cut), 1))); err != nil {
				t.Fatalf("%s: want the state after Save %d: %v", name, k, err)
			}
			torn := !allZero(img[points[k].end:])
			// A torn tail seals segment 1 at the last intact Save and
			// starts segment 2; zeros after it are written over in place.
			wantSegs := 1
			if torn {
				wantSegs = 2
			}
			if end, n := s.segEnd(1), s.Stats().Segments; end != points[k].end || n != wantSegs {
				t.Fatalf("%s: segment 1 ends at %d after recovery, %d segments; want %d, %d", name, end, n, points[k].end, wantSegs)
			}
			mustClose(t, s)
			if torn != strings.Contains(logs.String(), "cutting torn WAL tail") {
				t.Fatalf("%s: torn=%v but log says %q", name, torn, logs.String())
			}
			switch {
			case torn:
				truncations++
			case int64(len(img)) > points[k].end:
				zeroTails++
			}
		}
	}
	if truncations == 0 || zeroTails == 0 {
		t.Fatalf("%d torn tails, %d zero tails cut: the test exercised too little", truncations, zeroTails)
	}
}

// TestCrashDuringRotation: a crash right after a new segment was created
// leaves it empty or with a torn checkpoint; recovery removes it and the
// previous segment stays active.
func TestCrashDuringRotation(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	var m refLog
	for i := uint64(1); s.Stats().Segments < 2; i++ {
		e := mkEnts(i, i+1, 1, 200)
		mustSave(t, s, core.HardState{Term: 1}, e)
		m.save(core.HardState{Term: 1}, e)
	}
	seq, end := s.activeEnd()
	mustClose(t, s)
	full, err := os.ReadFile(segPath(dir, seq))
	if err != nil {
		t.Fatal(err)
	}
	// Recreate the state just before the rotating write completed: the
	// new segment holds a prefix of its checkpoint + first batch.
	for _, cut := range []int64{0, 1, recordHeaderSize, end / 2, end - 1} {
		d := t.TempDir()
		os.MkdirAll(filepath.Join(d, walDirName), 0o755)
		copyFile(t, segPath(dir, seq-1), segPath(d, seq-1))
		if err := os.WriteFile(segPath(d, seq), full[:cut], 0o644); err != nil {
			t.Fatal(err)
		}
		// Expected: everything but the last Save (it went to the new segment).
		want := m.clone()
		want.ents = want.ents[:len(want.ents)-1]
		s := mustOpen(t, d, opts)
		if err := verifyStore(s, &want, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		// The Store keeps working: the next Save rotates again.
		e := mkEnts(want.last()+1, want.last()+2, 1, 200)
		mustSave(t, s, core.HardState{}, e)
		want.save(core.HardState{}, e)
		mustClose(t, s)
		s = mustOpen(t, d, opts)
		if err := verifyStore(s, &want, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatalf("cut %d after reopen: %v", cut, err)
		}
		mustClose(t, s)
	}
}
