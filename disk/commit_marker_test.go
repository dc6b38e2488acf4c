package disk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

func commitPath(dir string) string { return filepath.Join(dir, walDirName, commitFileName) }

func mustWriteCommit(t testing.TB, s *Store, index uint64) {
	t.Helper()
	if err := s.WriteCommit(index); err != nil {
		t.Fatalf("WriteCommit(%d): %v", index, err)
	}
}

func reportedCommit(t testing.TB, s *Store) uint64 {
	t.Helper()
	hs, _, err := s.InitialState()
	if err != nil {
		t.Fatal(err)
	}
	return hs.Commit
}

// TestWriteCommitRoundTrip: WriteCommit is one pwrite and no fdatasync,
// reported by InitialState at once as the larger of it and the saved
// commit; lower indexes are ignored (also after a reopen), indexes past
// the log refused; the value survives Close and a kill -9.
func TestWriteCommitRoundTrip(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := mustOpen(t, dir, opts)
	hs := core.HardState{Term: 2, Vote: 1, Commit: 2}
	mustSave(t, s, hs, mkEnts(1, 11, 2, 10))
	base := s.Stats()
	mustWriteCommit(t, s, 5)
	if st := s.Stats(); st.Fsyncs != base.Fsyncs || st.Batches != base.Batches || st.CommitWrites != base.CommitWrites+1 {
		t.Fatalf("WriteCommit: %d WAL fdatasyncs, %d WAL writes, %d marker writes; want 0, 0, 1",
			st.Fsyncs-base.Fsyncs, st.Batches-base.Batches, st.CommitWrites-base.CommitWrites)
	}
	if got := reportedCommit(t, s); got != 5 {
		t.Fatalf("commit %d after WriteCommit(5), want 5", got)
	}
	for _, low := range []uint64{0, 3, 5} {
		mustWriteCommit(t, s, low)
		if got := reportedCommit(t, s); got != 5 {
			t.Fatalf("commit %d after WriteCommit(%d), want 5 (non-decreasing)", got, low)
		}
	}
	if st := s.Stats(); st.CommitWrites != base.CommitWrites+1 {
		t.Fatalf("%d marker writes for ignored indexes", st.CommitWrites-base.CommitWrites-1)
	}
	if err := s.WriteCommit(11); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WriteCommit past the last index: %v, want ErrInvalidArgument", err)
	}
	mustWriteCommit(t, s, 8)
	mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: 9}, nil)
	if got := reportedCommit(t, s); got != 9 {
		t.Fatalf("commit %d after a Save of commit 9 over the marker's 8, want 9", got)
	}
	mustSave(t, s, core.HardState{Term: 3, Vote: 1, Commit: 9}, mkEnts(11, 13, 3, 10))
	mustWriteCommit(t, s, 12)
	crashed := copyDir(t, dir) // kill -9: the page cache keeps the pwrite
	mustClose(t, s)
	if err := s.WriteCommit(12); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteCommit after Close: %v, want ErrClosed", err)
	}

	for name, d := range map[string]string{"clean close": dir, "kill -9": crashed} {
		t.Run(name, func(t *testing.T) {
			var logs logCapture
			o := opts
			o.Logger = logs.logger()
			s := mustOpen(t, d, o)
			defer s.Close()
			if hs, _, _ := s.InitialState(); hs != (core.HardState{Term: 3, Vote: 1, Commit: 12}) {
				t.Fatalf("after reopen: hard state %+v, want term 3, vote 1, commit 12", hs)
			}
			if strings.Contains(logs.String(), "level=WARN") {
				t.Fatalf("warnings reopening a sound marker: %s", logs.String())
			}
			mustWriteCommit(t, s, 10) // below the recorded 12: ignored
			if got := reportedCommit(t, s); got != 12 {
				t.Fatalf("commit %d after a lower WriteCommit on the reopened Store, want 12", got)
			}
		})
	}
}

// writeCommitSlot writes a raw record into slot k of the marker file.
func writeCommitSlot(t *testing.T, dir string, k int, rec []byte) {
	t.Helper()
	f, err := os.OpenFile(commitPath(dir), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(rec, int64(k*commitSlotBytes)); err != nil {
		t.Fatal(err)
	}
}

// commitRecord returns a slot record with the given fields and a valid CRC.
func commitRecord(magic string, version uint32, index uint64) []byte {
	var b [commitRecordBytes]byte
	copy(b[0:8], magic)
	binary.LittleEndian.PutUint32(b[8:12], version)
	binary.LittleEndian.PutUint64(b[16:24], index)
	binary.LittleEndian.PutUint32(b[24:28], crc32.Checksum(b[0:24], crcTable))
	return b[:]
}

// markerDir returns a closed Store's directory whose log holds entries
// 1..10 with saved commit 2, and whose marker holds 4 in slot 0 and 6 in
// slot 1.
func markerDir(t *testing.T, opts Options) string {
	t.Helper()
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 1, Vote: 1, Commit: 2}, mkEnts(1, 11, 1, 10))
	mustWriteCommit(t, s, 4) // slot 0 (creation wrote both with 0)
	mustWriteCommit(t, s, 6) // slot 1
	mustClose(t, s)
	return dir
}

// TestCommitMarkerDamaged: a damaged slot (any byte of its record flipped,
// a bad magic or version under a valid CRC, a file cut short, empty or
// missing) is ignored with a warning naming the file and the slot's
// offset, never an error: the other slot or the WAL's commit stands. The
// corrected marker is rewritten durably, so the next Open is silent.
func TestCommitMarkerDamaged(t *testing.T) {
	opts := testOptions()
	clean := markerDir(t, opts)
	img, err := os.ReadFile(commitPath(clean))
	if err != nil {
		t.Fatal(err)
	}
	if len(img) != commitFileBytes {
		t.Fatalf("marker file of %d bytes, want %d", len(img), commitFileBytes)
	}
	type damage struct {
		name     string
		file     []byte // nil: no file
		want     uint64 // commit reported
		warnOffs []int  // slots reported damaged
	}
	var cases []damage
	for k, other := range []uint64{6, 4} {
		for b := range commitRecordBytes {
			d := damage{name: fmt.Sprintf("slot %d byte %d", k, b), file: append([]byte(nil), img...), want: other, warnOffs: []int{k * commitSlotBytes}}
			d.file[k*commitSlotBytes+b] ^= 0x40
			if b >= 28 { // padding after the CRC: not part of the record
				d.want, d.warnOffs = 6, nil
			}
			cases = append(cases, d)
		}
	}
	withRecord := func(k int, rec []byte) []byte {
		f := append([]byte(nil), img...)
		copy(f[k*commitSlotBytes:], rec)
		return f
	}
	cases = append(cases,
		damage{"bad magic, valid CRC", withRecord(1, commitRecord("RFTYCMIX", commitVersion, 9)), 4, []int{commitSlotBytes}},
		damage{"version 0, valid CRC", withRecord(1, commitRecord(commitMagic, 0, 9)), 4, []int{commitSlotBytes}},
		damage{"cut inside slot 1", img[:commitSlotBytes+10], 4, []int{commitSlotBytes}},
		damage{"cut before slot 1", img[:100], 4, []int{commitSlotBytes}},
		damage{"cut inside slot 0", img[:20], 2, []int{0, commitSlotBytes}},
		damage{"empty", []byte{}, 2, []int{0, commitSlotBytes}},
		damage{"zeros", make([]byte, commitFileBytes), 2, []int{0, commitSlotBytes}},
		damage{"missing", nil, 2, nil},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, clean)
			path := commitPath(dir)
			if c.file == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, c.file, 0o600); err != nil {
				t.Fatal(err)
			}
			var logs logCapture
			o := opts
			o.Logger = logs.logger()
			s, err := Open(dir, o)
			if err != nil {
				t.Fatalf("Open with a damaged marker: %v, want it ignored", err)
			}
			if got := reportedCommit(t, s); got != c.want {
				t.Errorf("commit %d, want %d", got, c.want)
			}
			warns := strings.Count(logs.String(), "damaged commit marker slot")
			if warns != len(c.warnOffs) {
				t.Errorf("%d warnings about damaged slots, want %d: %s", warns, len(c.warnOffs), logs.String())
			}
			for _, off := range c.warnOffs {
				if !strings.Contains(logs.String(), fmt.Sprintf("file=%s offset=%d", path, off)) {
					t.Errorf("no warning naming %s at offset %d: %s", path, off, logs.String())
				}
			}
			mustWriteCommit(t, s, 7)
			mustClose(t, s)
			logs = logCapture{}
			s = mustOpen(t, dir, o)
			defer s.Close()
			if got := reportedCommit(t, s); got != 7 {
				t.Errorf("commit %d after WriteCommit(7) and reopen, want 7", got)
			}
			if strings.Contains(logs.String(), "level=WARN") {
				t.Errorf("the repaired marker still draws warnings: %s", logs.String())
			}
		})
	}
}

// TestCommitMarkerFutureVersion: a slot with a valid CRC and a format
// version from a newer build fails Open with ErrFormatVersion naming the
// file and offset (a newer build may mean something else by it).
func TestCommitMarkerFutureVersion(t *testing.T) {
	opts := testOptions()
	clean := markerDir(t, opts)
	for k := range commitSlots {
		dir := copyDir(t, clean)
		writeCommitSlot(t, dir, k, commitRecord(commitMagic, commitVersion+1, 5))
		s, err := Open(dir, opts)
		if err == nil {
			s.Close()
			t.Fatalf("slot %d: Open of a marker from the future succeeded", k)
		}
		if want := fmt.Sprintf("%s at offset %d", commitPath(dir), k*commitSlotBytes); !errors.Is(err, ErrFormatVersion) || !strings.Contains(err.Error(), want) {
			t.Fatalf("slot %d: Open: %v; want ErrFormatVersion naming %q", k, err, want)
		}
	}
}

// TestCommitMarkerClamped: a marker past the last durable index (never
// written by a correct caller, but a file is not trusted) is clamped, with
// a warning naming the file, and rewritten durably: entries appended later
// do not make its old claim true.
func TestCommitMarkerClamped(t *testing.T) {
	opts := testOptions()
	dir := markerDir(t, opts)
	writeCommitSlot(t, dir, 0, commitRecord(commitMagic, commitVersion, 50))
	var logs logCapture
	o := opts
	o.Logger = logs.logger()
	s := mustOpen(t, dir, o)
	if got := reportedCommit(t, s); got != 10 {
		t.Fatalf("commit %d with a marker of 50 over a log ending at 10, want 10", got)
	}
	if !strings.Contains(logs.String(), "past the last durable entry") || !strings.Contains(logs.String(), "file="+commitPath(dir)) {
		t.Fatalf("no warning naming %s: %s", commitPath(dir), logs.String())
	}
	mustSave(t, s, core.HardState{}, mkEnts(11, 21, 1, 10))
	if got := reportedCommit(t, s); got != 10 {
		t.Fatalf("commit %d after appending to 20, want 10 (the clamped marker)", got)
	}
	mustClose(t, s)
	logs = logCapture{}
	s = mustOpen(t, dir, o)
	defer s.Close()
	if got := reportedCommit(t, s); got != 10 || strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("after reopen: commit %d (want 10), log %s", got, logs.String())
	}
}

// TestCommitMarkerSnapshot: the reported commit is never below the
// snapshot index, whatever the marker and the saved commit say, through
// InstallSnapshot inside and past the log, Compact and reopens.
func TestCommitMarkerSnapshot(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 1, Vote: 1, Commit: 2}, mkEnts(1, 41, 1, 500))
	mustWriteCommit(t, s, 5)
	members := core.Membership{Voters: []uint64{1, 2, 3}}
	check := func(step string, want uint64) {
		t.Helper()
		if got := reportedCommit(t, s); got != want {
			t.Fatalf("%s: commit %d, want %d", step, got, want)
		}
	}
	check("marker 5", 5)
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: 30, Term: 1, Membership: members}); err != nil {
		t.Fatal(err)
	}
	check("snapshot 30 inside the log", 30)
	mustWriteCommit(t, s, 35)
	check("marker 35", 35)
	if err := s.Compact(30); err != nil {
		t.Fatal(err)
	}
	check("Compact(30)", 35)
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	check("reopen", 35)
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: 60, Term: 2, Membership: members}); err != nil {
		t.Fatal(err)
	}
	check("snapshot 60 past the log", 60)
	if err := s.Compact(60); err != nil {
		t.Fatal(err)
	}
	mustWriteCommit(t, s, 50) // below the snapshot, above the marker: written, not reported
	check("marker 50 under snapshot 60", 60)
	mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: 60}, mkEnts(61, 66, 2, 10))
	mustWriteCommit(t, s, 64)
	check("marker 64", 64)
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	defer s.Close()
	check("reopen", 64)
	if _, snap, _ := s.InitialState(); snap.Index != 60 {
		t.Fatalf("snapshot %d after reopen, want 60", snap.Index)
	}
}

// gateFS is a vfs.FS on memory whose WAL segment fdatasyncs can be held:
// once armed, the next one reports on entered and waits for release.
// Writes to the commit marker can be made to fail.
type gateFS struct {
	*vfs.MemFS
	armed       atomic.Bool
	entered     chan struct{}
	release     chan struct{}
	failCommits atomic.Bool
}

func newGateFS() *gateFS {
	return &gateFS{MemFS: vfs.NewMem(), entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := g.MemFS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return &gateFile{File: f, fs: g, path: name}, nil
}

func (g *gateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := g.MemFS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	return &gateFile{File: f, fs: g, path: name}, nil
}

type gateFile struct {
	vfs.File
	fs   *gateFS
	path string
}

var errInjected = errors.New("injected write failure")

func (f *gateFile) WriteAt(b []byte, off int64) (int, error) {
	if strings.HasSuffix(f.path, commitFileName) && f.fs.failCommits.Load() {
		return 0, errInjected
	}
	return f.File.WriteAt(b, off)
}

func (f *gateFile) SyncData() error {
	if strings.HasSuffix(f.path, ".wal") && f.fs.armed.CompareAndSwap(true, false) {
		f.fs.entered <- struct{}{}
		<-f.fs.release
	}
	return f.File.SyncData()
}

// TestWriteCommitDuringSave: WriteCommit completes while a Save is inside
// its fdatasync (held by gateFS), and is reported at once; the Save's
// entries are not durable yet, so a commit covering them is refused. The
// proof is by order, not time: the Save cannot return before the test
// releases its fdatasync, which it does only after WriteCommit returned.
func TestWriteCommitDuringSave(t *testing.T) {
	g := newGateFS()
	opts := testOptions()
	opts.FS = g
	s := mustOpen(t, "/node", opts)
	defer s.Close()
	mustSave(t, s, core.HardState{Term: 1, Vote: 1}, mkEnts(1, 6, 1, 10))

	g.armed.Store(true)
	saved := make(chan error, 1)
	go func() { saved <- s.Save(core.HardState{Term: 1, Vote: 1, Commit: 3}, mkEnts(6, 9, 1, 10)) }()
	<-g.entered // the Save holds the write token, inside fdatasync

	mustWriteCommit(t, s, 5)
	if got := reportedCommit(t, s); got != 5 {
		t.Fatalf("commit %d after WriteCommit(5) during a Save, want 5", got)
	}
	if err := s.WriteCommit(7); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WriteCommit(7) while entry 7's Save is syncing: %v, want ErrInvalidArgument", err)
	}
	select {
	case err := <-saved:
		t.Fatalf("the Save returned (%v) before its fdatasync was released", err)
	default:
	}
	close(g.release)
	if err := <-saved; err != nil {
		t.Fatal(err)
	}
	mustWriteCommit(t, s, 8)
	if got := reportedCommit(t, s); got != 8 {
		t.Fatalf("commit %d, want 8", got)
	}
}

// TestWriteCommitFailure: a failed marker write is returned wrapping
// ErrFailed and sticks (a later write might otherwise report a marker the
// kernel dropped); the WAL goes on.
func TestWriteCommitFailure(t *testing.T) {
	g := newGateFS()
	opts := testOptions()
	opts.FS = g
	s := mustOpen(t, "/node", opts)
	defer s.Close()
	mustSave(t, s, core.HardState{Term: 1, Vote: 1}, mkEnts(1, 6, 1, 10))
	g.failCommits.Store(true)
	if err := s.WriteCommit(3); !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
		t.Fatalf("WriteCommit with a failing write: %v, want ErrFailed wrapping the cause", err)
	}
	g.failCommits.Store(false)
	if err := s.WriteCommit(4); !errors.Is(err, ErrFailed) {
		t.Fatalf("WriteCommit after a failure: %v, want the sticky ErrFailed", err)
	}
	if got := reportedCommit(t, s); got != 0 {
		t.Fatalf("commit %d after failed marker writes, want 0", got)
	}
	mustSave(t, s, core.HardState{Term: 1, Vote: 1, Commit: 5}, mkEnts(6, 7, 1, 10))
	if got := reportedCommit(t, s); got != 5 {
		t.Fatalf("commit %d after a Save, want 5", got)
	}
}

// TestWriteCommitConcurrent: WriteCommit from one goroutine while another
// Saves (the asynchronous driver's loop and persister) and a third reads
// InitialState: the reported commit never goes down and ends at the last
// index written (run under -race).
func TestWriteCommitConcurrent(t *testing.T) {
	s := mustOpen(t, t.TempDir(), testOptions())
	defer s.Close()
	const n = 200
	mustSave(t, s, core.HardState{Term: 1}, mkEnts(1, 2, 1, 10))
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	done := make(chan struct{})
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := uint64(2); i <= n; i++ {
			if err := s.Save(core.HardState{}, mkEnts(i, i+1, 1, 10)); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		defer close(done)
		for {
			last, err := s.LastIndex()
			if err == nil {
				err = s.WriteCommit(last)
			}
			if err != nil {
				errs <- err
				return
			}
			if last == n {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		var prev uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			hs, _, err := s.InitialState()
			if err != nil {
				errs <- err
				return
			}
			if hs.Commit < prev {
				errs <- fmt.Errorf("commit went down from %d to %d", prev, hs.Commit)
				return
			}
			prev = hs.Commit
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := reportedCommit(t, s); got != n {
		t.Fatalf("commit %d, want %d", got, n)
	}
}

// FuzzDecodeCommitRecord: decoding any bytes never panics, and whatever
// it accepts re-encodes to the same record.
func FuzzDecodeCommitRecord(f *testing.F) {
	var b [commitRecordBytes]byte
	encodeCommitRecord(&b, 12345)
	f.Add(b[:])
	f.Add(commitRecord(commitMagic, commitVersion+1, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		idx, err := decodeCommitRecord(p)
		if err != nil {
			return
		}
		var re [commitRecordBytes]byte
		encodeCommitRecord(&re, idx)
		if string(re[:28]) != string(p[:28]) {
			t.Fatalf("accepted %x, which encodes as %x", p[:28], re[:28])
		}
	})
}

// TestCommitMarkerCreatedDurably: Open creates the marker durably (file
// and directory entry synced), so a power loss right after Open leaves a
// valid marker; WriteCommit never syncs it, so a power loss keeps its
// value or the previous one per slot, never a damaged file; Close syncs
// it.
func TestCommitMarkerCreatedDurably(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts := testOptions()
	opts.FS = mem
	const dir = "/node"
	s := mustOpen(t, dir, opts)
	defer s.Close()
	mustSave(t, s, core.HardState{Term: 1, Vote: 1, Commit: 1}, mkEnts(1, 6, 1, 10))
	reopen := func(img *vfs.MemFS) (uint64, string) {
		t.Helper()
		// Survived as created, not made again by this Open.
		if fi, err := img.Stat(commitPath(dir)); err != nil || fi.Size() != commitFileBytes {
			t.Fatalf("after a power loss the marker file is %v, %v; want %d bytes", fi, err, commitFileBytes)
		}
		var logs logCapture
		o := opts
		o.FS = img
		o.Logger = logs.logger()
		r := mustOpen(t, dir, o)
		defer r.Close()
		return reportedCommit(t, r), logs.String()
	}
	for _, keep := range []int{0, 100} {
		c, logs := reopen(mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: keep, RNG: rand.New(rand.NewPCG(1, 2))}))
		if c != 1 || strings.Contains(logs, "commit marker") {
			t.Fatalf("power loss (keep %d%%) after Open: commit %d, log %q; want 1 and a sound marker", keep, c, logs)
		}
	}
	mustWriteCommit(t, s, 4)
	for keep, want := range map[int]uint64{0: 1, 100: 4} {
		c, logs := reopen(mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: keep, RNG: rand.New(rand.NewPCG(1, 2))}))
		if c != want || strings.Contains(logs, "commit marker") {
			t.Fatalf("power loss (keep %d%%) after WriteCommit(4): commit %d, log %q; want %d and a sound marker", keep, c, logs, want)
		}
	}
	mustClose(t, s)
	if c, logs := reopen(mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0, RNG: rand.New(rand.NewPCG(1, 2))})); c != 4 || strings.Contains(logs, "commit marker") {
		t.Fatalf("power loss after Close: commit %d, log %q; want 4", c, logs)
	}
}
