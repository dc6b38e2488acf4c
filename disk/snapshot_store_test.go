package disk

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func snapMeta(index, term uint64) core.SnapshotMeta {
	return core.SnapshotMeta{Index: index, Term: term, Membership: core.Membership{
		Voters: []uint64{1, 2, 3}, OutgoingVoters: []uint64{1, 2}, Learners: []uint64{7},
	}}
}

// snapData is deterministic snapshot content of n bytes.
func snapData(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func writeSnapshot(t *testing.T, ss *SnapshotStore, meta core.SnapshotMeta, data []byte) {
	t.Helper()
	w, err := ss.Create(meta)
	if err != nil {
		t.Fatal(err)
	}
	// Stream in uneven pieces, as a network copy would.
	if _, err := io.CopyBuffer(w, bytes.NewReader(data), make([]byte, 7777)); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func readLatest(t *testing.T, ss *SnapshotStore) (core.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := ss.OpenLatest()
	if err != nil {
		t.Fatalf("OpenLatest: %v", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read snapshot: %v", err)
	}
	return meta, data
}

func snapFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestSnapshotRoundTrip(t *testing.T) {
	ss, err := OpenSnapshotStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ss.OpenLatest(); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("empty store: %v, want ErrNoSnapshot", err)
	}
	for _, n := range []int{0, 1, 3 << 20} { // empty, tiny, larger than every buffer
		meta := snapMeta(uint64(10+n), 2)
		data := snapData(uint64(n), n)
		writeSnapshot(t, ss, meta, data)
		got, gotData := readLatest(t, ss)
		if !sameSnapshot(got, meta) || !bytes.Equal(gotData, data) {
			t.Fatalf("n=%d: read back %+v and %d bytes", n, got, len(gotData))
		}
	}
}

// TestSnapshotTornNewestFallsBack: a damaged newest snapshot (torn,
// truncated, a flipped bit in header or data) is skipped for the older
// one, and the skip is logged.
func TestSnapshotTornNewestFallsBack(t *testing.T) {
	damage := map[string]func([]byte) []byte{
		"truncated":        func(b []byte) []byte { return b[:len(b)-100] },
		"torn to header":   func(b []byte) []byte { return b[:40] },
		"empty":            func(b []byte) []byte { return nil },
		"data bit flipped": func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
		"header flipped":   func(b []byte) []byte { b[20] ^= 0x10; return b },
		"trailer flipped":  func(b []byte) []byte { b[len(b)-2] ^= 1; return b },
		"magic":            func(b []byte) []byte { b[0] = 'X'; return b },
		"huge header len":  func(b []byte) []byte { b[15] = 0xff; return b },
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var logs logCapture
			ss, err := OpenSnapshotStore(dir, logs.logger())
			if err != nil {
				t.Fatal(err)
			}
			old, oldData := snapMeta(100, 3), snapData(1, 50000)
			writeSnapshot(t, ss, old, oldData)
			writeSnapshot(t, ss, snapMeta(200, 4), snapData(2, 50000))
			newest := filepath.Join(dir, snapName(200, 4))
			b, err := os.ReadFile(newest)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(newest, fn(b), 0o644); err != nil {
				t.Fatal(err)
			}
			meta, data := readLatest(t, ss)
			if !sameSnapshot(meta, old) || !bytes.Equal(data, oldData) {
				t.Fatalf("got snapshot %d/%d, want the older 100/3", meta.Index, meta.Term)
			}
			if !strings.Contains(logs.String(), "skipping damaged snapshot") || !strings.Contains(logs.String(), newest) {
				t.Fatalf("skip not logged: %q", logs.String())
			}
			// A new snapshot replaces the damaged one in retention.
			writeSnapshot(t, ss, snapMeta(300, 4), snapData(3, 10))
			if names := snapFiles(t, dir); len(names) != 2 || names[0] != snapName(100, 3) || names[1] != snapName(300, 4) {
				t.Fatalf("after the next snapshot: %v, want the valid older and the new one", names)
			}
		})
	}
}

// TestSnapshotAllDamaged: with every snapshot damaged, OpenLatest fails
// with a corruption error instead of claiming there is no snapshot.
func TestSnapshotAllDamaged(t *testing.T) {
	dir := t.TempDir()
	ss, _ := OpenSnapshotStore(dir, nil)
	writeSnapshot(t, ss, snapMeta(5, 1), snapData(1, 100))
	path := filepath.Join(dir, snapName(5, 1))
	b, _ := os.ReadFile(path)
	b[len(b)-20] ^= 1
	os.WriteFile(path, b, 0o644)
	_, _, err := ss.OpenLatest()
	if errors.Is(err, ErrNoSnapshot) || !isCorrupt(err) || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenLatest: %v; want a corruption error naming %s", err, path)
	}
}

// TestSnapshotReaderDetectsLateDamage: damage after OpenLatest verified the
// file surfaces as a read error at the end, not as io.EOF.
func TestSnapshotReaderDetectsLateDamage(t *testing.T) {
	dir := t.TempDir()
	ss, _ := OpenSnapshotStore(dir, nil)
	writeSnapshot(t, ss, snapMeta(5, 1), snapData(1, 1<<20))
	_, rc, err := ss.OpenLatest()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, _ := os.OpenFile(filepath.Join(dir, snapName(5, 1)), os.O_RDWR, 0)
	f.WriteAt([]byte{0x55, 0xaa}, 600<<10)
	f.Close()
	if _, err := io.ReadAll(rc); !isCorrupt(err) {
		t.Fatalf("reading damaged data: %v, want a corruption error", err)
	}
}

func TestSnapshotRetentionKeepsTwo(t *testing.T) {
	dir := t.TempDir()
	ss, _ := OpenSnapshotStore(dir, nil)
	for i := uint64(1); i <= 5; i++ {
		writeSnapshot(t, ss, snapMeta(i*10, 1), snapData(i, 1000))
		want := min(int(i), 2)
		if names := snapFiles(t, dir); len(names) != want {
			t.Fatalf("after %d snapshots: %v, want %d files", i, names, want)
		}
	}
	if names := snapFiles(t, dir); names[0] != snapName(40, 1) || names[1] != snapName(50, 1) {
		t.Fatalf("kept %v, want the two newest", names)
	}
	// Same index and term again replaces the file in place.
	writeSnapshot(t, ss, snapMeta(50, 1), snapData(9, 10))
	if _, data := readLatest(t, ss); !bytes.Equal(data, snapData(9, 10)) {
		t.Fatal("rewriting snapshot 50/1 did not replace it")
	}
	if _, err := ss.Create(snapMeta(20, 1)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Create older than the newest: %v, want ErrInvalidArgument", err)
	}
}

// TestSnapshotAbortAndLeftovers: Abort leaves nothing behind, and a
// temporary file left by a crash is removed (and logged) on open.
func TestSnapshotAbortAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	ss, _ := OpenSnapshotStore(dir, nil)
	w, err := ss.Create(snapMeta(5, 1))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	if names := snapFiles(t, dir); len(names) != 0 {
		t.Fatalf("after Abort: %v", names)
	}
	// A crash mid-write leaves a temporary file.
	w, _ = ss.Create(snapMeta(6, 1))
	w.Write([]byte("partial"))
	w.bw.Flush()
	var logs logCapture
	if _, err := OpenSnapshotStore(dir, logs.logger()); err != nil {
		t.Fatal(err)
	}
	w.f.Close()
	if names := snapFiles(t, dir); len(names) != 0 {
		t.Fatalf("leftover not removed: %v", names)
	}
	if !strings.Contains(logs.String(), "removing unfinished snapshot") {
		t.Fatalf("removal not logged: %q", logs.String())
	}
}

// TestStoreSnapshots: the Store's snapshot store lives in dir/snap, and a
// snapshot plus InstallSnapshot survive a reopen together.
func TestStoreSnapshots(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions())
	meta := snapMeta(42, 3)
	writeSnapshot(t, s.Snapshots(), meta, []byte("state"))
	if err := s.InstallSnapshot(meta); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	s = mustOpen(t, dir, testOptions())
	defer s.Close()
	if s.Snapshots().Dir() != filepath.Join(dir, snapDirName) {
		t.Fatalf("snapshot dir %s", s.Snapshots().Dir())
	}
	got, data := readLatest(t, s.Snapshots())
	_, installed, _ := s.InitialState()
	if !sameSnapshot(got, meta) || !sameSnapshot(installed, meta) || string(data) != "state" {
		t.Fatalf("after reopen: file %+v, installed %+v", got, installed)
	}
}

func TestSnapshotOpenAndList(t *testing.T) {
	ss, err := OpenSnapshotStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if metas, err := ss.ListSnapshots(); err != nil || len(metas) != 0 {
		t.Fatalf("empty store lists %v, %v", metas, err)
	}
	if _, _, err := ss.OpenSnapshot(5, 1); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("OpenSnapshot of a missing snapshot: %v", err)
	}
	d1, d2 := snapData(1, 100<<10), snapData(2, 50<<10)
	writeSnapshot(t, ss, snapMeta(10, 1), d1)
	// CreateSnapshot (the driver's view), with Sync before Commit.
	w, err := ss.CreateSnapshot(snapMeta(20, 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(d2); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if metas, _ := ss.ListSnapshots(); len(metas) != 1 {
		t.Fatalf("a synced but uncommitted snapshot is listed: %v", metas)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	metas, err := ss.ListSnapshots()
	if err != nil || len(metas) != 2 || metas[0].Index != 20 || metas[1].Index != 10 {
		t.Fatalf("ListSnapshots: %v, %v", metas, err)
	}
	if want := snapMeta(20, 2); !slices.Equal(metas[0].Membership.Learners, want.Membership.Learners) {
		t.Fatalf("membership %+v", metas[0].Membership)
	}
	meta, rc, err := ss.OpenSnapshot(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || meta.Index != 10 || !bytes.Equal(got, d1) {
		t.Fatalf("OpenSnapshot(10, 1): meta %d, %d bytes, %v", meta.Index, len(got), err)
	}

	// Damaged data: OpenSnapshot does not read it through first, its
	// reader fails at the end instead of returning io.EOF.
	path := filepath.Join(ss.Dir(), snapName(10, 1))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0xff
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, rc, err = ss.OpenSnapshot(10, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading damaged data: %v", err)
	}
	// Damaged framing: left out of the list.
	raw[20] ^= 0xff
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if metas, err := ss.ListSnapshots(); err != nil || len(metas) != 1 || metas[0].Index != 20 {
		t.Fatalf("ListSnapshots with a damaged header: %v, %v", metas, err)
	}
}
