package disk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// checkZeroTail fails unless the active segment's file runs past the
// logical end to want with zeros, and the Store's zeroedTo agrees.
func checkZeroTail(t *testing.T, s *Store, want int64) {
	t.Helper()
	seq, end := s.activeEnd()
	path := filepath.Join(s.walDir, segmentName(seq))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != want || end > want || !allZero(data[end:]) {
		t.Fatalf("segment %d: file of %d bytes, logical end %d, zero tail %v; want a file of %d bytes with zeros after the end",
			seq, len(data), end, end <= int64(len(data)) && allZero(data[end:]), want)
	}
	s.wmu.Lock()
	z := s.zeroedTo
	s.wmu.Unlock()
	if z != want {
		t.Fatalf("zeroedTo is %d, the file is %d bytes", z, want)
	}
}

// TestPreallocatedSegment: Saves land in a file extended with zeros in
// whole chunks (clamped to SegmentBytes), one zero-fill write per chunk
// crossed, and still exactly one write and one fdatasync per Save.
func TestPreallocatedSegment(t *testing.T) {
	t.Run("default chunk", func(t *testing.T) {
		opts := testOptions()
		opts.SegmentBytes = 4 * DefaultPreallocateBytes
		opts.PreallocateBytes = DefaultPreallocateBytes
		s := mustOpen(t, t.TempDir(), opts)
		defer s.Close()
		for i := uint64(1); i <= 5; i++ {
			mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 100))
		}
		checkZeroTail(t, s, DefaultPreallocateBytes)
		if st := s.Stats(); st.ZeroFills != 1 || st.Fsyncs != 5 || st.Batches != 5 {
			t.Fatalf("5 small Saves: %d zero fills, %d fdatasyncs, %d writes; want 1, 5, 5", st.ZeroFills, st.Fsyncs, st.Batches)
		}
	})
	t.Run("chunk boundaries", func(t *testing.T) {
		opts := testOptions()
		const chunk = 2 * MinPreallocateBytes
		opts.PreallocateBytes = chunk
		opts.SegmentBytes = 5*chunk + 1000 // not a multiple: the last chunk is clamped
		s := mustOpen(t, t.TempDir(), opts)
		defer s.Close()
		var m refLog
		_, zeroedTo := s.activeEnd()
		checkZeroTail(t, s, zeroedTo) // nothing preallocated before the first batch
		for i := uint64(1); s.Stats().Segments == 1; i++ {
			before := s.Stats()
			_, prevEnd := s.activeEnd()
			e := mkEnts(i, i+1, 1, 700)
			mustSave(t, s, core.HardState{Term: 1, Commit: i - 1}, e)
			m.save(core.HardState{Term: 1, Commit: i - 1}, e)
			after := s.Stats()
			if after.Segments > 1 {
				break
			}
			_, end := s.activeEnd()
			want := min((end+chunk-1)/chunk*chunk, opts.SegmentBytes)
			checkZeroTail(t, s, want)
			fills := uint64(0)
			if end > zeroedTo {
				fills = 1 // the batch ran past the zero-filled space
			}
			zeroedTo = want
			if after.ZeroFills-before.ZeroFills != fills || after.Fsyncs-before.Fsyncs != 1 || after.Batches-before.Batches != 1 {
				t.Fatalf("Save %d (%d..%d): %d zero fills, %d fdatasyncs, %d writes; want %d, 1, 1", i, prevEnd, end,
					after.ZeroFills-before.ZeroFills, after.Fsyncs-before.Fsyncs, after.Batches-before.Batches, fills)
			}
		}
		if st := s.Stats(); st.ZeroFills < 5 {
			t.Fatalf("only %d zero fills over a segment of %d chunks", st.ZeroFills, opts.SegmentBytes/chunk)
		}
		if err := verifyStore(s, &m, rand.New(rand.NewPCG(1, 1))); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPreallocatedBigBatch: a batch of a quarter chunk or more is written
// without zero fill (the file then ends at the batch); a smaller one that
// runs past the zeroed space fills again.
func TestPreallocatedBigBatch(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	opts.PreallocateBytes = 4 * MinPreallocateBytes
	opts.MaxRecordBytes = 64 << 10
	opts.MaxBatchBytes = 1 << 20
	s := mustOpen(t, t.TempDir(), opts)
	defer s.Close()
	quarter := int(opts.PreallocateBytes / bigBatchFillDivisor)
	const overhead = batchRecordBytes + recordHeaderSize + EntryOverheadBytes // one entry, no hard state
	roundUp := func(n int64) int64 {
		return (n + opts.PreallocateBytes - 1) / opts.PreallocateBytes * opts.PreallocateBytes
	}
	steps := []struct {
		batch  int  // bytes of the batch
		filled bool // whether it is followed by a zero fill
		tail   bool // whether the file then runs past it to a chunk boundary
	}{
		{100, true, true},
		{int(opts.PreallocateBytes) + 1000, false, false}, // larger than a chunk: ends the file
		{quarter, false, false},                           // exactly a quarter, past the zeroed space
		{quarter - 1, true, true},
		{200, false, true}, // inside the zeroed space: nothing to fill
	}
	for i, st := range steps {
		before := s.Stats()
		mustSave(t, s, core.HardState{}, []core.Entry{{Index: uint64(i + 1), Term: 1, Data: make([]byte, st.batch-overhead)}})
		_, end := s.activeEnd()
		want := end
		if st.tail {
			want = roundUp(end)
		}
		checkZeroTail(t, s, want)
		if got := s.Stats().ZeroFills - before.ZeroFills; got != map[bool]uint64{false: 0, true: 1}[st.filled] {
			t.Fatalf("step %d: batch of %d bytes (a quarter chunk is %d): %d zero fills, want filled=%v", i, st.batch, quarter, got, st.filled)
		}
		if got := s.Stats().BytesWritten - before.BytesWritten; got != uint64(st.batch) {
			t.Fatalf("step %d: wrote a %d-byte batch, want %d", i, got, st.batch)
		}
	}
}

// TestPreallocationOff: PreallocateBytes 0 keeps the file exactly as long
// as the log.
func TestPreallocationOff(t *testing.T) {
	opts := testOptions()
	opts.PreallocateBytes = 0
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	defer s.Close()
	for i := uint64(1); i <= 5; i++ {
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 100))
		_, end := s.activeEnd()
		checkZeroTail(t, s, end)
	}
	if st := s.Stats(); st.ZeroFills != 0 || st.Fsyncs != 5 {
		t.Fatalf("%d zero fills, %d fdatasyncs; want 0, 5", st.ZeroFills, st.Fsyncs)
	}
}

// copyDir copies the files of a data directory, as a crash would leave them
// if the Store had been killed at this point (page cache included).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dst, walDirName), 0o755); err != nil {
		t.Fatal(err)
	}
	des, err := os.ReadDir(filepath.Join(src, walDirName))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		copyFile(t, filepath.Join(src, walDirName, de.Name()), filepath.Join(dst, walDirName, de.Name()))
	}
	return dst
}

// TestPreallocatedReopen: a zero tail left by a clean Close or by a crash
// is recovered silently (no torn-tail warning, a Debug line at most) with
// every Save intact, and the reopened Store preallocates again.
func TestPreallocatedReopen(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	opts.PreallocateBytes = 64 << 10
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	var m refLog
	for i := uint64(1); i <= 20; i++ {
		hs := core.HardState{Term: 1, Vote: 1, Commit: i - 1}
		e := mkEnts(i, i+1, 1, 50)
		mustSave(t, s, hs, e)
		m.save(hs, e)
	}
	// A commit-only batch that no fdatasync covered (as
	// SaveCommitUnsynced wrote them before issue 15) survives a process
	// crash too (it is in the page cache, which copyDir reads).
	hs := core.HardState{Term: 1, Vote: 1, Commit: 20}
	s.legacyUnsyncedCommit(t, hs)
	m.save(hs, nil)
	_, end := s.activeEnd()
	checkZeroTail(t, s, opts.PreallocateBytes)
	crashed := copyDir(t, dir)
	mustClose(t, s)
	if got := fileSize(t, segPath(dir, 1)); got != opts.PreallocateBytes {
		t.Fatalf("after Close the segment is %d bytes, want the preallocated %d", got, opts.PreallocateBytes)
	}

	for name, d := range map[string]string{"clean close": dir, "crash": crashed} {
		t.Run(name, func(t *testing.T) {
			var logs logCapture
			o := opts
			o.Logger = logs.logger()
			s := mustOpen(t, d, o)
			defer s.Close()
			if err := verifyStore(s, &m, rand.New(rand.NewPCG(2, 2))); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "preallocated zero tail") ||
				!strings.Contains(logs.String(), fmt.Sprintf("offset=%d", end)) {
				t.Fatalf("recovery log: %q; want only the Debug line about the zero tail at %d", logs.String(), end)
			}
			// Recovery keeps the zero tail and writes on into it.
			checkZeroTail(t, s, opts.PreallocateBytes)
			e := mkEnts(21, 22, 1, 50)
			mustSave(t, s, core.HardState{}, e)
			checkZeroTail(t, s, opts.PreallocateBytes)
			want := m.clone()
			want.save(core.HardState{}, e)
			mustClose(t, s)
			s2 := mustOpen(t, d, o)
			defer s2.Close()
			if err := verifyStore(s2, &want, rand.New(rand.NewPCG(3, 3))); err != nil {
				t.Fatalf("after a Save and another reopen: %v", err)
			}
		})
	}
}

// TestPreallocatedTornBatch: a torn final batch inside the preallocated
// space — some nonzero bytes, then zeros — is cut with the torn-tail
// warning, and every earlier Save survives.
func TestPreallocatedTornBatch(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	opts.PreallocateBytes = 64 << 10
	src := t.TempDir()
	s := mustOpen(t, src, opts)
	var m refLog
	for i := uint64(1); i <= 10; i++ {
		e := mkEnts(i, i+1, 1, 60)
		mustSave(t, s, core.HardState{Term: 1}, e)
		m.save(core.HardState{Term: 1}, e)
	}
	_, good := s.activeEnd()
	mustSave(t, s, core.HardState{}, mkEnts(11, 14, 1, 300)) // the batch to tear
	_, end := s.activeEnd()
	mustClose(t, s)
	data, err := os.ReadFile(segPath(src, 1))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != opts.PreallocateBytes {
		t.Fatalf("segment is %d bytes, want %d", len(data), opts.PreallocateBytes)
	}
	torn := map[string]func(img []byte){
		// The batch's first bytes reached the disk, the rest did not.
		"prefix of the batch": func(img []byte) { clear(img[good+(end-good)/2 : end]) },
		"header only":         func(img []byte) { clear(img[good+batchRecordBytes : end]) },
		"header lost":         func(img []byte) { clear(img[good : good+batchRecordBytes]) },
		"last byte only":      func(img []byte) { clear(img[good : end-1]) },
		"garbage":             func(img []byte) { copy(img[good:], []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3}); clear(img[good+7 : end]) },
		"a page of garbage far into the tail": func(img []byte) {
			clear(img[good:end])
			for k := range 4096 {
				img[int64(len(img))-8192+int64(k)] = byte(k)
			}
		},
		"one nonzero byte at the end of the file": func(img []byte) {
			clear(img[good:end])
			img[len(img)-1] = 1
		},
	}
	for name, tear := range torn {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, walDirName), 0o755)
			img := append([]byte(nil), data...)
			tear(img)
			if err := os.WriteFile(segPath(dir, 1), img, 0o644); err != nil {
				t.Fatal(err)
			}
			var logs logCapture
			o := opts
			o.Logger = logs.logger()
			s := mustOpen(t, dir, o)
			defer s.Close()
			if err := verifyStore(s, &m, rand.New(rand.NewPCG(4, 4))); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "cutting torn WAL tail") || !strings.Contains(logs.String(), fmt.Sprintf("offset=%d", good)) {
				t.Fatalf("the torn batch was not reported at offset %d: %q", good, logs.String())
			}
			if end, n := s.segEnd(1), s.Stats().Segments; end != good || n != 2 {
				t.Fatalf("segment 1 ends at %d after recovery, %d segments; want %d, 2", end, n, good)
			}
		})
	}
}

// TestPreallocatedSealedSegment: a segment sealed by a rotation keeps its
// zero tail, past the log end that the next segment's checkpoint records;
// recovery reads the log to exactly that end, ignores what follows, and
// reports a log shorter than recorded as corruption naming the file.
func TestPreallocatedSealedSegment(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = 3 * MinPreallocateBytes
	opts.PreallocateBytes = 2 * MinPreallocateBytes // the last chunk is clamped
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	var m refLog
	for i := uint64(1); s.Stats().Segments < 3; i++ {
		e := mkEnts(i, i+1, 1, 500)
		mustSave(t, s, core.HardState{Term: 1}, e)
		m.save(core.HardState{Term: 1}, e)
	}
	s.mu.RLock()
	sealed := []segment{*s.segs[0], *s.segs[1]}
	s.mu.RUnlock()
	if st := s.Stats(); st.SealSyncs != 2 {
		t.Fatalf("2 rotations, %d sealing fdatasyncs (one per new checkpoint)", st.SealSyncs)
	}
	mustClose(t, s)
	for _, seg := range sealed {
		img, err := os.ReadFile(seg.path)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(img)) <= seg.size || !allZero(img[seg.size:]) {
			t.Fatalf("sealed segment %d is %d bytes, its log ends at %d: want a zero tail", seg.seq, len(img), seg.size)
		}
	}
	// Bytes past the recorded end are not read, whatever they are.
	f, err := os.OpenFile(sealed[0].path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(forgedBatchHeaders(100)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = mustOpen(t, dir, opts)
	if err := verifyStore(s, &m, rand.New(rand.NewPCG(5, 5))); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	// A sealed segment cut short of its recorded end is corruption.
	if err := os.Truncate(sealed[0].path, sealed[0].size-1); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, opts)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != sealed[0].path {
		t.Fatalf("sealed segment cut short: Open = %v; want a *CorruptionError naming %s", err, sealed[0].path)
	}
}

// TestCrashDuringSeal: the states a crash can leave while a rotation seals
// the active segment and starts the next, in the order rotate documents:
// the sealed segment keeps its zero tail; the next one may be missing,
// empty, hold its checkpoint only, or its first batch.
func TestCrashDuringSeal(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = 3 * MinPreallocateBytes
	opts.PreallocateBytes = MinPreallocateBytes
	src := t.TempDir()
	s := mustOpen(t, src, opts)
	var m refLog
	var before refLog // the state before the Save that rotated
	var zeroTail []byte
	for i := uint64(1); s.Stats().Segments < 2; i++ {
		before = m.clone()
		if seq, end := s.activeEnd(); seq == 1 {
			// Keep what segment 1 looked like with its zero tail.
			img, err := os.ReadFile(segPath(src, 1))
			if err != nil {
				t.Fatal(err)
			}
			zeroTail = img[end:]
		}
		e := mkEnts(i, i+1, 1, 500)
		mustSave(t, s, core.HardState{Term: 1}, e)
		m.save(core.HardState{Term: 1}, e)
	}
	mustClose(t, s)
	if len(zeroTail) == 0 || !allZero(zeroTail) {
		t.Fatalf("segment 1 had a zero tail of %d bytes before rotating", len(zeroTail))
	}
	sealed, err := os.ReadFile(segPath(src, 1))
	if err != nil {
		t.Fatal(err)
	}
	next, err := os.ReadFile(segPath(src, 2))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		seg1, seg2 []byte // seg2 nil: not created
		want       *refLog
	}{
		{"longer zero tail, next not created", append(append([]byte(nil), sealed...), zeroTail...), nil, &before},
		{"next not created", sealed, nil, &before},
		{"next created empty", sealed, []byte{}, &before},
		{"next with its checkpoint only", sealed, next[:checkpointRecordBytes(&checkpoint{})], &before},
		{"next with a zero tail", sealed, append(append([]byte(nil), next...), make([]byte, 100)...), &m},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.MkdirAll(filepath.Join(dir, walDirName), 0o755)
			if err := os.WriteFile(segPath(dir, 1), c.seg1, 0o644); err != nil {
				t.Fatal(err)
			}
			if c.seg2 != nil {
				if err := os.WriteFile(segPath(dir, 2), c.seg2, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			s := mustOpen(t, dir, opts)
			if err := verifyStore(s, c.want, rand.New(rand.NewPCG(6, 6))); err != nil {
				t.Fatal(err)
			}
			// The Store keeps working across the next rotation.
			want := c.want.clone()
			for i := want.last() + 1; s.Stats().Segments < 3; i++ {
				e := mkEnts(i, i+1, 1, 500)
				mustSave(t, s, core.HardState{Term: 1}, e)
				want.save(core.HardState{Term: 1}, e)
			}
			mustClose(t, s)
			s = mustOpen(t, dir, opts)
			defer s.Close()
			if err := verifyStore(s, &want, rand.New(rand.NewPCG(7, 7))); err != nil {
				t.Fatalf("after more Saves and a reopen: %v", err)
			}
		})
	}
}
