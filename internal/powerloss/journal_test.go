package powerloss

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// newTestFS returns an FS journaling to a fresh journal, and a data
// directory for it.
func newTestFS(t *testing.T, opts Options) (*FS, string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	opts.Journal = filepath.Join(root, "journal")
	fs, err := New(vfs.Default, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs, dir
}

// TestUndoLimit: unsynced overwrites beyond MaxUndoBytes are refused
// with ErrUndoLimit, and a sync makes room again.
func TestUndoLimit(t *testing.T) {
	fs, dir := newTestFS(t, Options{MaxUndoBytes: 64 << 10})
	f, err := fs.Create(filepath.Join(dir, "f"), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 16<<10)
	if _, err := f.WriteAt(page, 0); err != nil { // an append: costs a header only
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 8 { // overwrites keep 16 KiB of old bytes each
		if _, lastErr = f.WriteAt(page, 0); lastErr != nil {
			break
		}
	}
	if !errors.Is(lastErr, ErrUndoLimit) {
		t.Fatalf("8 unsynced 16 KiB overwrites under a 64 KiB limit: %v, want ErrUndoLimit", lastErr)
	}
	if fs.LiveBytes() > 64<<10 {
		t.Fatalf("live journal bytes %d over the 64 KiB limit", fs.LiveBytes())
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(page, 0); err != nil {
		t.Fatalf("an overwrite after a sync: %v", err)
	}
}

// TestJournalCompacts: a sync rewrites the journal once it exceeds twice
// its live records plus 4 MiB, so syncing writers keep it small.
func TestJournalCompacts(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	f, err := fs.Create(filepath.Join(dir, "f"), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for i := range 100 { // 25 MiB of overwrites, each synced
		if _, err := f.WriteAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		if j, live := fs.JournalBytes(), fs.LiveBytes(); j > 2*live+compactSlackBytes+int64(len(buf))+4096 {
			t.Fatalf("after %d synced overwrites the journal is %d bytes with %d live", i+1, j, live)
		}
	}
	d, err := fs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil { // the file's creation
		t.Fatal(err)
	}
	if live := fs.LiveBytes(); live != 0 {
		t.Fatalf("%d live bytes after a sync of the only file and its directory", live)
	}
}

// TestJournalTornAndCorrupt: a torn last record (a kill in the middle of
// its write) is dropped, by New and by Cut; a bad record before the end
// is corruption, reported with its offset.
func TestJournalTornAndCorrupt(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	path := filepath.Join(dir, "f")
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := f.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	fs.Close()
	entries, valid, err := readJournal(fs.journal)
	if err != nil || len(entries) != 4 { // a create, three writes
		t.Fatalf("journal: %d records, %v; want 4", len(entries), err)
	}
	full, err := os.ReadFile(fs.journal)
	if err != nil {
		t.Fatal(err)
	}
	if valid != int64(len(full)) {
		t.Fatalf("valid prefix %d of %d bytes", valid, len(full))
	}
	last := entries[3]
	// Torn: the last record cut short.
	if err := os.WriteFile(fs.journal, full[:last.off+last.len-3], 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := New(vfs.Default, Options{Journal: fs.journal})
	if err != nil {
		t.Fatalf("New on a torn journal: %v", err)
	}
	if n := len(again.live.recs); n != 3 {
		t.Fatalf("New on a torn journal kept %d records, want 3", n)
	}
	again.Close()
	// Corrupt: a flipped byte in the second record, with more after it.
	bad := append([]byte(nil), full...)
	bad[entries[1].off+12] ^= 0xff
	if err := os.WriteFile(fs.journal, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Cut(fs.journal, nil, CutNothing)
	want := "offset " + strconv.FormatInt(entries[1].off, 10)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Cut on a corrupt journal: %v, want an error naming %q", err, want)
	}
	// Hostile lengths: a record claiming more than the limit.
	huge := append([]byte(nil), full[:entries[1].off]...)
	huge = append(huge, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0)
	if err := os.WriteFile(fs.journal, huge, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readJournal(fs.journal); err == nil || !strings.Contains(err.Error(), "over the limit") {
		t.Fatalf("a record length over the limit: %v", err)
	}
}

// FuzzUnmarshal: a journal record from the disk never panics the decoder,
// and what decodes passes validation.
func FuzzUnmarshal(f *testing.F) {
	f.Add((&record{kind: recWrite, path: "/a", off: 3, n: 2, oldSize: 4, old: []byte{1}}).marshal()[8:])
	f.Add((&record{kind: recRename, path: "/a", to: "/b", grave: "/g"}).marshal()[8:])
	f.Add((&record{kind: recSynced, seq: 9, off: 5, path: "/d", isDir: true}).marshal()[8:])
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := unmarshal(p)
		if err == nil {
			if verr := r.validate(); verr != nil {
				t.Fatalf("decoded an invalid record: %v", verr)
			}
		}
	})
}

// TestFailedMutationsNotJournaled: a rename of a missing file, a link onto
// an existing name and a create over a directory fail without a record,
// so a cut cannot "undo" what never happened (moving or removing files
// that were not touched).
func TestFailedMutationsNotJournaled(t *testing.T) {
	fs, dir := newTestFS(t, Options{})
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := fs.JournalBytes()
	if err := fs.Rename(filepath.Join(dir, "missing"), a); err == nil {
		t.Fatal("rename of a missing file succeeded")
	}
	if err := fs.Link(a, b); err == nil {
		t.Fatal("link onto an existing name succeeded")
	}
	if _, err := fs.Create(dir, vfs.WriteCategoryUnspecified); err == nil {
		t.Fatal("create over a directory succeeded")
	}
	if after := fs.JournalBytes(); after != before {
		t.Fatalf("failed mutations journaled %d bytes", after-before)
	}
	fs.Close()
	if _, err := Cut(fs.journal, nil, CutNothing); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, b} {
		if got, err := os.ReadFile(p); err != nil || string(got) != p {
			t.Fatalf("%s after the cut: %q, %v", p, got, err)
		}
	}
}
