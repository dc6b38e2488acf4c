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

// region names a byte of a batch (relative to the batch's start) to damage,
// and the record whose offset the error must name.
type region struct {
	name   string
	at     int // byte offset within the batch
	recOff int // offset within the batch of the record the error names
}

// batchRegions covers every part of a batch holding one entry record with
// a payload of n bytes: the batch header's CRC, length, type and payload,
// then the entry record's.
func batchRegions(n int) []region {
	e := batchRecordBytes // the entry record starts after the batch header
	return []region{
		{"batch CRC", 1, 0},
		{"batch length (low)", 4, 0},
		{"batch length (high)", 7, 0},
		{"batch type", 8, 0},
		{"batch payload (seq)", recordHeaderSize, 0},
		{"batch payload (count)", batchRecordBytes - 1, 0},
		{"entry CRC", e + 2, e},
		{"entry length (low)", e + 4, e},
		{"entry length (high)", e + 7, e},
		{"entry type", e + 8, e},
		{"entry payload (index)", e + recordHeaderSize, e},
		{"entry payload (term)", e + recordHeaderSize + 8, e},
		{"entry payload (data)", e + recordHeaderSize + EntryOverheadBytes + n/2, e},
		{"entry payload (last byte)", e + recordHeaderSize + EntryOverheadBytes + n - 1, e},
	}
}

// TestCorruptionMiddleAndTail flips one bit in each region of a batch in
// the middle of the log (Open must fail naming the file and the record's
// offset) and of the last batch (Open must cut it and keep the rest).
func TestCorruptionMiddleAndTail(t *testing.T) {
	const n = 40
	src := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	s := mustOpen(t, src, opts)
	var ends []int64 // ends[i]: durable size after Save of entry i+1
	var m refLog
	for i := uint64(1); i <= 20; i++ {
		e := mkEnts(i, i+1, 1, n)
		mustSave(t, s, core.HardState{}, e)
		m.save(core.HardState{}, e)
		_, end := s.activeEnd()
		ends = append(ends, end)
	}
	mustClose(t, s)
	data, err := os.ReadFile(segPath(src, 1))
	if err != nil {
		t.Fatal(err)
	}
	middle := ends[9] // batch of entry 11
	tail := ends[len(ends)-2]
	for _, r := range batchRegions(n) {
		for _, bit := range []byte{0x01, 0x80} {
			t.Run(fmt.Sprintf("middle/%s/bit%#x", r.name, bit), func(t *testing.T) {
				dir := damaged(t, data, middle+int64(r.at), bit)
				_, err := Open(dir, opts)
				if err == nil {
					t.Fatal("Open succeeded on a log damaged in the middle")
				}
				if !isCorrupt(err) {
					t.Fatalf("error %v is not a *CorruptionError", err)
				}
				path := segPath(dir, 1)
				off := fmt.Sprintf("offset %d:", middle+int64(r.recOff))
				if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, off) {
					t.Fatalf("error %q does not name %s and %q", msg, path, off)
				}
				var ce *CorruptionError
				errors.As(err, &ce)
				if ce.File != path || ce.Offset != middle+int64(r.recOff) {
					t.Fatalf("CorruptionError names %s at %d", ce.File, ce.Offset)
				}
			})
			t.Run(fmt.Sprintf("tail/%s/bit%#x", r.name, bit), func(t *testing.T) {
				dir := damaged(t, data, tail+int64(r.at), bit)
				var logs logCapture
				o := opts
				o.Logger = logs.logger()
				s, err := Open(dir, o)
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer s.Close()
				want := m.clone()
				want.ents = want.ents[:len(want.ents)-1]
				if err := verifyStore(s, &want, rand.New(rand.NewPCG(1, 1))); err != nil {
					t.Fatal(err)
				}
				// The torn segment is sealed at its last valid batch and a
				// new one continues the log.
				if end, n := s.segEnd(1), s.Stats().Segments; end != tail || n != 2 {
					t.Fatalf("segment 1 ends at %d after recovery, %d segments; want %d, 2", end, n, tail)
				}
				if !strings.Contains(logs.String(), "cutting torn WAL tail") || !strings.Contains(logs.String(), fmt.Sprintf("offset=%d", tail)) {
					t.Fatalf("the cut was not logged with its offset: %q", logs.String())
				}
			})
		}
	}
}

// damaged writes data with one bit flipped at off as the only segment of
// a new data directory.
func damaged(t *testing.T, data []byte, off int64, bit byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o755); err != nil {
		t.Fatal(err)
	}
	img := append([]byte(nil), data...)
	img[off] ^= bit
	if err := os.WriteFile(segPath(dir, 1), img, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCorruptionSealedSegment: damage to the log of a segment that is not
// the last is never a torn tail, and the error names that segment.
func TestCorruptionSealedSegment(t *testing.T) {
	src := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, src, opts)
	for i := uint64(1); s.Stats().Segments < 3; i++ {
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 100))
	}
	end := s.segEnd(1)
	mustClose(t, s)
	first := segPath(src, 1)
	data, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off int64) []byte { b := append([]byte(nil), data...); b[off] ^= 4; return b }
	cases := map[string][]byte{
		"last log byte flipped":  flip(end - 1),
		"first batch flipped":    flip(int64(checkpointRecordBytes(&checkpoint{})) + 12),
		"truncated into the log": data[:end-3],
		"checkpoint flipped":     flip(recordHeaderSize + 2),
	}
	for name, img := range cases {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(first, img, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(src, opts)
			if err == nil {
				s.Close()
			}
			if !isCorrupt(err) || !strings.Contains(err.Error(), first) {
				t.Fatalf("Open: %v; want a corruption error naming %s", err, first)
			}
		})
	}
	// A missing segment in the middle that held live entries: the
	// entries are reported missing, and no file is removed.
	if err := os.WriteFile(first, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(segPath(src, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(src, opts); !isCorrupt(err) || !strings.Contains(err.Error(), "deleted segments") {
		t.Fatalf("Open with segment 2 missing: %v", err)
	}
	if _, err := os.Stat(first); err != nil {
		t.Fatalf("segment 1 after a failed Open: %v", err)
	}
}

// TestCorruptionDetectedOnRead: damage that happens after Open is caught by
// the CRC check of Entries, not returned as data.
func TestCorruptionDetectedOnRead(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.CacheBytes = 0
	s := mustOpen(t, dir, opts)
	defer s.Close()
	mustSave(t, s, core.HardState{}, mkEnts(1, 4, 1, 50))
	_, end := s.activeEnd()
	f, err := os.OpenFile(segPath(dir, 1), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, end-10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := s.Entries(1, 3, 1<<20); err != nil {
		t.Fatalf("undamaged entries: %v", err)
	}
	if _, err := s.Entries(1, 4, 1<<20); !isCorrupt(err) {
		t.Fatalf("Entries over a damaged record: %v, want a corruption error", err)
	}
}

// TestCorruptionMissingCompactedEntries: if segments holding live entries
// are deleted behind the Store's back, recovery notices the hole instead
// of serving a log with a gap.
func TestCorruptionMissingCompactedEntries(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	for i := uint64(1); s.Stats().Segments < 4; i++ {
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 200))
	}
	mustClose(t, s)
	for _, seq := range []uint64{1, 2} {
		if err := os.Remove(segPath(dir, seq)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Open(dir, opts)
	if !isCorrupt(err) || !strings.Contains(err.Error(), "deleted segments") {
		t.Fatalf("Open: %v; want a corruption error about deleted segments", err)
	}
}
