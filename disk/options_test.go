package disk

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func TestOptionsValidate(t *testing.T) {
	def := DefaultOptions()
	with := func(f func(*Options)) Options { o := def; f(&o); return o }
	cases := []struct {
		name string
		opts Options
		want []string // substrings of the error; none: valid
	}{
		{"defaults", def, nil},
		{"zero value", Options{}, []string{"SegmentBytes is 0", "MaxRecordBytes is 0", "MaxBatchBytes is 0"}},
		{"segment at min", with(func(o *Options) { o.SegmentBytes = MinSegmentBytes; o.MaxRecordBytes = MinRecordBytes }), nil},
		{"segment below min", with(func(o *Options) { o.SegmentBytes = MinSegmentBytes - 1 }), []string{"SegmentBytes is 4095"}},
		{"segment at max", with(func(o *Options) { o.SegmentBytes = MaxSegmentBytes }), nil},
		{"segment above max", with(func(o *Options) { o.SegmentBytes = MaxSegmentBytes + 1 }), []string{"SegmentBytes"}},
		{"record at min", with(func(o *Options) { o.MaxRecordBytes = MinRecordBytes }), nil},
		{"record below min", with(func(o *Options) { o.MaxRecordBytes = MinRecordBytes - 1 }), []string{"MaxRecordBytes is 255"}},
		{"record = segment", with(func(o *Options) { o.SegmentBytes = 1 << 20; o.MaxRecordBytes = 1 << 20; o.MaxBatchBytes = 2 << 20 }), nil},
		{"record > segment", with(func(o *Options) { o.SegmentBytes = 1 << 20; o.MaxRecordBytes = 1<<20 + 1 }), []string{"must not exceed SegmentBytes"}},
		{"batch at min", with(func(o *Options) { o.MaxBatchBytes = minBatchBytes(o.MaxRecordBytes) }), nil},
		{"batch below min", with(func(o *Options) { o.MaxBatchBytes = minBatchBytes(o.MaxRecordBytes) - 1 }), []string{"MaxBatchBytes"}},
		{"batch above max", with(func(o *Options) { o.MaxBatchBytes = MaxMaxBatchBytes + 1 }), []string{"MaxBatchBytes"}},
		{"cache off", with(func(o *Options) { o.CacheBytes = 0 }), nil},
		{"cache negative", with(func(o *Options) { o.CacheBytes = -1 }), []string{"CacheBytes is -1"}},
		{"prealloc off", with(func(o *Options) { o.PreallocateBytes = 0 }), nil},
		{"prealloc at min", with(func(o *Options) { o.PreallocateBytes = MinPreallocateBytes }), nil},
		{"prealloc below min", with(func(o *Options) { o.PreallocateBytes = MinPreallocateBytes - 1 }), []string{"PreallocateBytes is 4095"}},
		{"prealloc negative", with(func(o *Options) { o.PreallocateBytes = -MinPreallocateBytes }), []string{"PreallocateBytes is -4096"}},
		{"prealloc not page multiple", with(func(o *Options) { o.PreallocateBytes = 3*MinPreallocateBytes + 1 }), []string{"PreallocateBytes is 12289"}},
		{"prealloc at max", with(func(o *Options) { o.PreallocateBytes = MaxPreallocateBytes }), nil},
		{"prealloc above max", with(func(o *Options) { o.PreallocateBytes = MaxPreallocateBytes + MinPreallocateBytes }), []string{"PreallocateBytes"}},
		{"prealloc above segment", with(func(o *Options) { o.SegmentBytes = MinSegmentBytes; o.MaxRecordBytes = MinRecordBytes }), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.opts.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Validate: %v, want ErrInvalidArgument", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if _, err := Open(t.TempDir(), c.opts); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Open accepted invalid options: %v", err)
			}
		})
	}
}

// TestLimitMaxRecordBytes: an entry exactly at the limit is stored, one
// byte more is refused before anything is written.
func TestLimitMaxRecordBytes(t *testing.T) {
	opts := testOptions()
	s := mustOpen(t, t.TempDir(), opts)
	defer s.Close()
	maxData := opts.MaxRecordBytes - EntryOverheadBytes
	mustSave(t, s, core.HardState{}, mkEnts(1, 2, 1, maxData))
	before := s.Stats()
	err := s.Save(core.HardState{Term: 1}, []core.Entry{
		{Index: 2, Term: 1, Data: make([]byte, 10)},
		{Index: 3, Term: 1, Data: make([]byte, maxData+1)},
	})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxRecordBytes") {
		t.Fatalf("oversized entry: %v, want ErrTooLarge naming MaxRecordBytes", err)
	}
	if after := s.Stats(); after.LastIndex != 1 || after.BytesWritten != before.BytesWritten {
		t.Fatalf("a refused Save wrote something: %+v", after)
	}
	if got, _ := s.Entries(1, 2, 0); len(got) != 1 || len(got[0].Data) != maxData {
		t.Fatalf("entry at the limit read back as %d entries", len(got))
	}
}

// TestLimitMaxBatchBytes: a Save encoding to exactly MaxBatchBytes is
// written, one byte more is refused.
func TestLimitMaxBatchBytes(t *testing.T) {
	opts := testOptions()
	opts.MaxBatchBytes = minBatchBytes(opts.MaxRecordBytes) + 500
	s := mustOpen(t, t.TempDir(), opts)
	defer s.Close()
	// Batch header + hard state + two entry records == MaxBatchBytes (two,
	// because one would exceed MaxRecordBytes).
	n := opts.MaxBatchBytes - batchRecordBytes - recordHeaderSize - EntryOverheadBytes - hardStateRecordBytes
	half := (n - recordHeaderSize - EntryOverheadBytes) / 2
	rest := n - recordHeaderSize - EntryOverheadBytes - half
	exact := []core.Entry{{Index: 1, Term: 1, Data: make([]byte, half)}, {Index: 2, Term: 1, Data: make([]byte, rest)}}
	if err := s.Save(core.HardState{Term: 1}, exact); err != nil {
		t.Fatalf("Save of exactly MaxBatchBytes: %v", err)
	}
	if st := s.Stats(); st.BytesWritten != uint64(opts.MaxBatchBytes) || st.LastIndex != 2 {
		t.Fatalf("wrote %d bytes, want %d", st.BytesWritten, opts.MaxBatchBytes)
	}
	over := []core.Entry{{Index: 3, Term: 1, Data: make([]byte, half)}, {Index: 4, Term: 1, Data: make([]byte, rest+1)}}
	err := s.Save(core.HardState{Term: 2}, over)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxBatchBytes") {
		t.Fatalf("Save one byte over MaxBatchBytes: %v", err)
	}
}

// TestLimitCacheBytes: the cache holds exactly its budget, evicting the
// oldest entries beyond it, and evicted entries are read from disk.
func TestLimitCacheBytes(t *testing.T) {
	opts := testOptions()
	const dataLen = 100
	per := int64(dataLen) + 24 // core.Entry.Size
	opts.CacheBytes = 5 * per
	s := mustOpen(t, t.TempDir(), opts)
	defer s.Close()
	mustSave(t, s, core.HardState{}, mkEnts(1, 6, 1, dataLen))
	if st := s.Stats(); st.CacheEntries != 5 || st.CacheBytes != opts.CacheBytes {
		t.Fatalf("at the limit: %d entries, %d bytes cached; want 5, %d", st.CacheEntries, st.CacheBytes, opts.CacheBytes)
	}
	mustSave(t, s, core.HardState{}, mkEnts(6, 7, 1, dataLen))
	if st := s.Stats(); st.CacheEntries != 5 || st.CacheBytes != opts.CacheBytes {
		t.Fatalf("past the limit: %d entries, %d bytes cached", st.CacheEntries, st.CacheBytes)
	}
	if lo, _ := s.cache.bounds(); lo != 2 {
		t.Fatalf("cache starts at %d, want 2 (oldest evicted)", lo)
	}
	got, err := s.Entries(1, 7, 1<<20)
	if err != nil || checkEntries(got, mkEnts(1, 7, 1, dataLen)) != nil {
		t.Fatalf("Entries across disk and cache: %v", err)
	}
	// A single batch larger than the cache keeps only its newest part.
	mustSave(t, s, core.HardState{}, mkEnts(7, 20, 1, dataLen))
	if lo, hi := s.cache.bounds(); lo != 15 || hi != 20 {
		t.Fatalf("cache holds [%d, %d), want [15, 20)", lo, hi)
	}
}

// TestLimitSegmentBytes: a batch that fills the segment exactly stays in
// it; the next byte starts a new segment. A batch larger than a segment
// gets one of its own.
func TestLimitSegmentBytes(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	opts.MaxRecordBytes = 2048
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	defer s.Close()
	_, start := s.activeEnd()
	// Fill up to exactly SegmentBytes with entries of 1000 bytes and one
	// sized to land on the limit.
	const rec = batchRecordBytes + recordHeaderSize + EntryOverheadBytes
	i := uint64(1)
	for left := opts.SegmentBytes - start; left > 0; i++ {
		n := min(int(left)-rec, 1000)
		if int(left)-rec-n < rec { // the last one takes all that remains
			n = int(left) - rec
		}
		mustSave(t, s, core.HardState{}, mkEnts(i, i+1, 1, n))
		left -= int64(rec + n)
	}
	if seq, end := s.activeEnd(); seq != 1 || end != opts.SegmentBytes {
		t.Fatalf("after filling: segment %d at %d bytes, want segment 1 at exactly %d", seq, end, opts.SegmentBytes)
	}
	mustSave(t, s, core.HardState{}, mkEnts(i, i+1, 1, 0))
	if seq, _ := s.activeEnd(); seq != 2 {
		t.Fatalf("the next batch went to segment %d, want 2", seq)
	}
	i++
	// A batch bigger than a whole segment: alone in segment 3.
	big := mkEnts(i, i+4, 1, 1500)
	mustSave(t, s, core.HardState{}, big)
	seq, end := s.activeEnd()
	if seq != 3 || end <= opts.SegmentBytes {
		t.Fatalf("big batch: segment %d, %d bytes", seq, end)
	}
	for q := uint64(1); q <= 3; q++ {
		fi, err := os.Stat(segPath(dir, q))
		if err != nil {
			t.Fatal(err)
		}
		if q < 3 && fi.Size() > opts.SegmentBytes {
			t.Fatalf("segment %d is %d bytes, over SegmentBytes", q, fi.Size())
		}
	}
}

// TestLimitRecordLoweredAfterWrite: reopening with a MaxRecordBytes below
// a record on disk is a clear error, never a silent truncation, even for
// the last record.
func TestLimitRecordLoweredAfterWrite(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{}, mkEnts(1, 2, 1, 3000))
	mustClose(t, s)
	opts.MaxRecordBytes = 1024
	_, err := Open(dir, opts)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxRecordBytes") || !strings.Contains(err.Error(), segPath(dir, 1)) {
		t.Fatalf("Open with a lowered limit: %v", err)
	}
	opts.MaxRecordBytes = 4096
	s = mustOpen(t, dir, opts)
	defer s.Close()
	if last, _ := s.LastIndex(); last != 1 {
		t.Fatalf("entry lost: last index %d", last)
	}
}

// TestLimitCorruptLengthNoHugeAllocation: a length field claiming ~4 GiB
// in the middle of the log is an error found without allocating it.
func TestLimitCorruptLengthNoHugeAllocation(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := mustOpen(t, dir, opts)
	for i := uint64(1); i <= 3; i++ {
		mustSave(t, s, core.HardState{}, mkEnts(i, i+1, 1, 10))
	}
	mustClose(t, s)
	b, _ := os.ReadFile(segPath(dir, 1))
	// The checkpoint's length field: set to 0xfffffff0.
	b[4], b[5], b[6], b[7] = 0xf0, 0xff, 0xff, 0xff
	os.WriteFile(segPath(dir, 1), b, 0o644)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Open(dir, opts)
	runtime.ReadMemStats(&after)
	if !isCorrupt(err) || !strings.Contains(err.Error(), "offset 0") {
		t.Fatalf("Open: %v; want corruption at offset 0", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("Open allocated %d bytes for a corrupt length", alloc)
	}
}

// TestLimitPreallocateBytes: the smallest and the largest chunk both
// work: one zero-fill write extends the file by exactly one chunk (the
// largest one a segment large enough to hold it), and reopening keeps it.
func TestLimitPreallocateBytes(t *testing.T) {
	for _, chunk := range []int64{MinPreallocateBytes, MaxPreallocateBytes} {
		opts := testOptions()
		opts.SegmentBytes = MaxSegmentBytes
		opts.PreallocateBytes = chunk
		dir := t.TempDir()
		s := mustOpen(t, dir, opts)
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(1, 3, 1, 100))
		_, end := s.activeEnd()
		checkZeroTail(t, s, chunk)
		if st := s.Stats(); st.ZeroFills != 1 || st.Fsyncs != 1 {
			t.Fatalf("chunk %d: %d zero fills, %d fdatasyncs; want 1, 1", chunk, st.ZeroFills, st.Fsyncs)
		}
		mustClose(t, s)
		s = mustOpen(t, dir, opts)
		if last, _ := s.LastIndex(); last != 2 {
			t.Fatalf("chunk %d: last index %d after reopen", chunk, last)
		}
		if _, e := s.activeEnd(); e != end {
			t.Fatalf("chunk %d: log ends at %d after reopen, want %d", chunk, e, end)
		}
		checkZeroTail(t, s, chunk) // kept: written over by the next Saves
		mustClose(t, s)
	}
}
