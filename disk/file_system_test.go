package disk

import (
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// TestFileModes: everything the Store creates is private to its owner:
// data files (segments, snapshots, the lock) 0600, directories 0700.
func TestFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows has no Unix permission bits to check")
	}
	dir := filepath.Join(t.TempDir(), "node")
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	for i := uint64(1); s.Stats().Segments < 2; i++ {
		mustSave(t, s, core.HardState{Term: 1}, mkEnts(i, i+1, 1, 300))
	}
	w, err := s.Snapshots().Create(core.SnapshotMeta{Index: 1, Term: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	var files, dirs int
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(filePerm)
		if d.IsDir() {
			want = dirPerm
			dirs++
		} else {
			files++
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", path, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// node, wal, snap; LOCK, two segments, the commit marker, one
	// snapshot.
	if dirs != 3 || files != 5 {
		t.Fatalf("walked %d directories and %d files, want 3 and 5", dirs, files)
	}
}

// TestOptionsFS: with Options.FS set, every file goes through it (the
// operating system's file system sees nothing), and the Store recovers
// from what it wrote there.
func TestOptionsFS(t *testing.T) {
	mem := vfs.NewMem()
	opts := testOptions()
	opts.FS = mem
	opts.SegmentBytes = MinSegmentBytes
	opts.PreallocateBytes = 0
	const dir = "/data/node"
	s := mustOpen(t, dir, opts)
	var m refLog
	for i := uint64(1); s.Stats().Segments < 3; i++ {
		e := mkEnts(i, i+1, 1, 300)
		mustSave(t, s, core.HardState{Term: 1, Commit: i - 1}, e)
		m.save(core.HardState{Term: 1, Commit: i - 1}, e)
	}
	if _, err := Open(dir, opts); !isLocked(err) {
		t.Fatalf("second Open on the same file system: %v, want ErrLocked", err)
	}
	// The same path in another file system is another directory.
	other := opts
	other.FS = vfs.NewMem()
	mustClose(t, mustOpen(t, dir, other))
	mustClose(t, s)
	names, err := mem.List(filepath.Join(dir, walDirName))
	if err != nil || len(names) != 4 || !slices.Contains(names, commitFileName) {
		t.Fatalf("files in the WAL directory (3 segments and the commit marker): %v, %v", names, err)
	}
	s = mustOpen(t, dir, opts)
	defer s.Close()
	if err := verifyStore(s, &m, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
}
