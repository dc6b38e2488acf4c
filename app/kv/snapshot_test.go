package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// fill writes n keys with values of about size bytes (some much larger),
// in batches, from index first; it returns the next free index.
func fill(t testing.TB, s *Store, prefix string, n, size int, first uint64) uint64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	var batch []*kvpb.Command
	idx := first
	for i := range n {
		v := make([]byte, size)
		if i%97 == 0 {
			v = make([]byte, 64<<10)
		}
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		batch = append(batch, &kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.PutRequest{
			Key: fmt.Appendf(nil, "%s%06d", prefix, i), Value: v}}})
		if len(batch) == 128 || i == n-1 {
			apply(t, s, idx, batch...)
			idx += uint64(len(batch))
			batch = batch[:0]
		}
	}
	return idx
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := openStore(t, Options{})
	next := fill(t, src, "key/", 3000, 1000, 1) // ~5 MB
	apply(t, src, next, delCmd(&kvpb.DeleteRequest{Key: []byte("key/000100"), RangeEnd: []byte("key/000200")}))
	want := dump(t, src)
	wantHash := mustHash(t, src)

	// The destination holds other data, which must disappear.
	dst := openStore(t, Options{})
	fill(t, dst, "other/", 50, 10, 1)

	// Stream through a pipe: neither side sees the whole snapshot at once.
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := src.WriteSnapshot(pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	if err := dst.Restore(pr); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if a := mustApplied(t, dst); a != next {
		t.Fatalf("applied after restore %d, want %d", a, next)
	}
	if got := dump(t, dst); !maps.Equal(got, want) {
		t.Fatalf("restored state differs: %d keys, want %d", len(got), len(want))
	}
	if h := mustHash(t, dst); h != wantHash {
		t.Fatalf("hash after restore %+v, want %+v", h, wantHash)
	}
	if wantHash.Keys != uint64(len(want)) || wantHash.Index != next {
		t.Fatalf("hash %+v for %d keys at %d", wantHash, len(want), next)
	}
	assertNoRestoreFiles(t, dst)

	// The restored store keeps working, and the state survives a reopen.
	apply(t, dst, next+1, putCmd("after", "restore"))
	if a := mustApplied(t, dst); a != next+1 {
		t.Fatalf("applied %d", a)
	}
}

func assertNoRestoreFiles(t *testing.T, s *Store) {
	t.Helper()
	for _, name := range []string{restoreFile, restoreTempFile} {
		if _, err := os.Stat(filepath.Join(s.dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind (%v)", name, err)
		}
	}
}

func snapshotBytes(t *testing.T, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return buf.Bytes()
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	src := openStore(t, Options{})
	apply(t, src, 1, putCmd("a", "1"), putCmd("b", "2"), putCmd("c", "3"))
	good := snapshotBytes(t, src)
	empty := snapshotBytes(t, openStore(t, Options{}))

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	// A snapshot whose records are out of order but correctly summed.
	reordered := func() []byte {
		var buf bytes.Buffer
		sw := newSnapshotWriter(&buf, 9)
		v := make([]byte, valueHeaderLen)
		putValueHeader(v, 1)
		_ = sw.add([]byte("b"), v)
		_ = sw.add([]byte("a"), v)
		_ = sw.finish()
		return buf.Bytes()
	}()
	badValue := func() []byte {
		var buf bytes.Buffer
		sw := newSnapshotWriter(&buf, 9)
		_ = sw.add([]byte("a"), []byte("no header"))
		_ = sw.finish()
		return buf.Bytes()
	}()
	hugeLen := append(bytes.Clone(good[:snapshotHeaderLen]), 0xff, 0xff, 0xff, 0xff, 0x0f)

	tests := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty stream", nil, "header"},
		{"bad magic", flip(0), "not a kv snapshot"},
		{"truncated header", good[:10], "header"},
		{"truncated records", good[:len(good)/2], "unexpected EOF"},
		{"truncated trailer", good[:len(good)-2], "unexpected EOF"},
		{"flipped value byte", flip(snapshotHeaderLen + 5), "checksum"},
		{"flipped applied index", flip(9), "checksum"},
		{"flipped checksum", flip(len(good) - 1), "checksum"},
		{"wrong count", flip(len(good) - 5), "counts"},
		{"trailing bytes", append(bytes.Clone(good), 0), "trailing"},
		{"unordered keys", reordered, "does not follow"},
		{"value without header", badValue, "malformed header"},
		{"absurd length", hugeLen, "exceeds"},
	}
	dst := openStore(t, Options{})
	apply(t, dst, 1, putCmd("keep", "me"))
	before, beforeHash := dump(t, dst), mustHash(t, dst)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := dst.Restore(bytes.NewReader(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "state unchanged") {
				t.Fatalf("Restore: %v, want an error mentioning %q", err, tc.msg)
			}
			if got := dump(t, dst); !maps.Equal(got, before) {
				t.Fatalf("state changed to %v", got)
			}
			if h := mustHash(t, dst); h != beforeHash {
				t.Fatalf("hash changed")
			}
			assertNoRestoreFiles(t, dst)
		})
	}
	// An empty snapshot is valid: it clears the store.
	if err := dst.Restore(bytes.NewReader(empty)); err != nil {
		t.Fatalf("restoring an empty snapshot: %v", err)
	}
	if n := len(dump(t, dst)); n != 0 || mustApplied(t, dst) != 0 {
		t.Fatalf("after empty restore: %d keys, applied %d", n, mustApplied(t, dst))
	}
}

// TestRestoreCompletesAfterCrash: a verified snapshot left in place by a
// crash during installation is installed by the next OpenStore.
func TestRestoreCompletesAfterCrash(t *testing.T) {
	src := openStore(t, Options{})
	next := fill(t, src, "k", 200, 100, 1)
	data := snapshotBytes(t, src)
	want := dump(t, src)

	dir := t.TempDir()
	s, err := OpenStore(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, 1, putCmd("old", "data"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What spool leaves once verification succeeded, plus a stale
	// half-received one.
	if err := os.WriteFile(filepath.Join(dir, restoreFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, restoreTempFile), data[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStoreIn(t, dir, Options{})
	if a := mustApplied(t, s); a != next-1 {
		t.Fatalf("applied %d, want %d", a, next-1)
	}
	if got := dump(t, s); !maps.Equal(got, want) {
		t.Fatalf("state after completed restore differs")
	}
	assertNoRestoreFiles(t, s)
}

func TestHash(t *testing.T) {
	a, b := openStore(t, Options{}), openStore(t, Options{})
	cmds := []*kvpb.Command{putCmd("x", "1"), putCmd("y", "2")}
	apply(t, a, 1, cmds...)
	apply(t, b, 1, cmds...)
	ha, hb := mustHash(t, a), mustHash(t, b)
	if ha != hb || ha.Keys != 2 || ha.Index != 2 {
		t.Fatalf("equal stores hash %+v and %+v", ha, hb)
	}
	// Same keys and values, different mod index: different hash.
	c := openStore(t, Options{})
	apply(t, c, 1, putCmd("y", "2"), putCmd("x", "1"))
	if hc := mustHash(t, c); hc.Hash == ha.Hash {
		t.Fatal("hash ignores mod indexes")
	}
	apply(t, b, 3, putCmd("x", "other"))
	if hb := mustHash(t, b); hb.Hash == ha.Hash {
		t.Fatal("hash ignores values")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Hash(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with cancelled context: %v", err)
	}
}

func TestClosedStoreFailsCleanly(t *testing.T) {
	s, err := OpenStore(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{}
	_, checks["Sync"] = s.Sync()
	_, checks["DiskSize"] = s.DiskSize()
	_, checks["Hash"] = s.Hash(context.Background())
	_, checks["Snapshot"] = s.Snapshot()
	checks["WriteSnapshot"] = s.WriteSnapshot(io.Discard)
	checks["Restore"] = s.Restore(bytes.NewReader(nil))
	_, checks["get"] = s.get([]byte("a"))
	_, checks["rangeLocal"] = s.rangeLocal(&rangeOp{prefix: true}, 100)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	if _, err := OpenStore(t.TempDir(), Options{CacheSize: -1, MaxResultBytes: -1}); err == nil ||
		!strings.Contains(err.Error(), "CacheSize") || !strings.Contains(err.Error(), "MaxResultBytes") {
		t.Fatalf("bad options: %v", err)
	}
}

// TestRestoreIsAtomicForReaders: readers running during a Restore that
// spans several Pebble batches see the old state or the new one, never a
// mix (the install holds the store exclusively).
func TestRestoreIsAtomicForReaders(t *testing.T) {
	src := openStore(t, Options{})
	fill(t, src, "new/", 1000, 8<<10, 1) // 8 MB: a table of many blocks
	data := snapshotBytes(t, src)

	dst := openStore(t, Options{})
	fill(t, dst, "old/", 1000, 8, 1)
	stop := make(chan struct{})
	errc := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					errc <- nil
					return
				default:
				}
				r, err := dst.rangeLocal(&rangeOp{prefix: true, countOnly: true}, 0)
				if err != nil {
					errc <- err
					return
				}
				if r.Count != 1000 {
					errc <- fmt.Errorf("reader saw %d keys", r.Count)
					return
				}
			}
		}()
	}
	err := dst.Restore(bytes.NewReader(data))
	close(stop)
	for range 2 {
		if rerr := <-errc; rerr != nil {
			t.Error(rerr)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(dump(t, dst)); len(got) != 1000 || !strings.HasPrefix(got[0], "new/") {
		t.Fatalf("after restore: %d keys, first %q", len(got), got[0])
	}
}

// A snapshot source is a point-in-time view: applying (and restoring)
// after Snapshot returned does not change what it streams. Close on the
// store closes sources still open.
func TestSnapshotSourceIsPointInTime(t *testing.T) {
	s := openStore(t, Options{})
	next := fill(t, s, "key/", 200, 100, 1)
	want := snapshotBytes(t, s)
	src, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, next, putCmd("key/000001", "changed"), putCmd("new", "key"))
	// Restore replaces everything while the source is open.
	other := openStore(t, Options{})
	fill(t, other, "other/", 10, 10, 1)
	if err := s.Restore(bytes.NewReader(snapshotBytes(t, other))); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := src.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("the source streamed %d bytes differing from the state when it was captured", n)
	}
	if a := src.(interface{ Applied() uint64 }).Applied(); a != next-1 {
		t.Fatalf("source applied %d, want %d", a, next-1)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	open, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close with an open source: %v", err)
	}
	if _, err := open.WriteTo(io.Discard); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteTo after the store closed: %v", err)
	}
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
}
