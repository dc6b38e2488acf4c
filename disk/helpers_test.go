package disk

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// testOptions are small limits so that tests cross segment and cache
// boundaries quickly.
func testOptions() Options {
	o := DefaultOptions()
	o.SegmentBytes = 16 << 10
	o.MaxRecordBytes = 4 << 10
	o.MaxBatchBytes = 64 << 10
	o.CacheBytes = 4 << 10
	return o
}

func mustOpen(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func mustClose(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func mustSave(t testing.TB, s *Store, hs core.HardState, ents []core.Entry) {
	t.Helper()
	if err := s.Save(hs, ents); err != nil {
		t.Fatalf("Save(%+v, %d entries from %d): %v", hs, len(ents), firstIndex(ents), err)
	}
}

func firstIndex(ents []core.Entry) uint64 {
	if len(ents) == 0 {
		return 0
	}
	return ents[0].Index
}

// payload is deterministic data for entry (index, term) of length n.
func payload(index, term uint64, n int) []byte {
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(index*31 + term*7 + uint64(i))
	}
	return b
}

// mkEnts returns entries [lo, hi) of the given term with n-byte payloads.
func mkEnts(lo, hi, term uint64, n int) []core.Entry {
	var out []core.Entry
	for i := lo; i < hi; i++ {
		out = append(out, core.Entry{Index: i, Term: term, Data: payload(i, term, n)})
	}
	return out
}

func segPath(dir string, seq uint64) string {
	return filepath.Join(dir, walDirName, segmentName(seq))
}

// logCapture is a slog handler target that tests can inspect.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func (c *logCapture) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(c, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// checkEntries compares two entry lists field by field.
func checkEntries(got, want []core.Entry) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
			return fmt.Errorf("entry %d: got %d/%d/%v/%d bytes, want %d/%d/%v/%d bytes",
				i, g.Index, g.Term, g.Type, len(g.Data), w.Index, w.Term, w.Type, len(w.Data))
		}
	}
	return nil
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func isCorrupt(err error) bool {
	var ce *CorruptionError
	return errors.As(err, &ce) && errors.Is(err, ErrCorrupt)
}

// segEnd returns the logical end (the end of the last batch) of segment
// seq, or -1 if the Store has no such segment.
func (s *Store) segEnd(seq uint64) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if seg := s.segment(seq); seg != nil {
		return seg.size
	}
	return -1
}

func isLocked(err error) bool { return errors.Is(err, ErrLocked) }
