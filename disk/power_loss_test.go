package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestWALPowerLossUnsyncedBatchLost reproduces issue 13 item 1: a
// SaveCommitUnsynced batch (written before issue 15; see
// legacyUnsyncedCommit) whose pages never reached the disk, followed
// by a Save whose pages did but whose fdatasync never completed (the
// power went first). Nothing after the last completed Save was reported
// durable, so Open must cut both batches and succeed.
func TestWALPowerLossUnsyncedBatchLost(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	s := mustOpen(t, dir, opts)
	var m refLog
	hs := core.HardState{Term: 1, Vote: 1}
	mustSave(t, s, hs, mkEnts(1, 4, 1, 100))
	m.save(hs, mkEnts(1, 4, 1, 100))
	durable := m.clone()
	_, unsyncedAt := s.activeEnd()
	s.legacyUnsyncedCommit(t, core.HardState{Term: 1, Vote: 1, Commit: 3})
	_, savedAt := s.activeEnd()
	mustSave(t, s, core.HardState{}, mkEnts(4, 5, 1, 100))
	_, end := s.activeEnd()
	mustClose(t, s)

	for _, lost := range []struct {
		name     string
		from, to int64
	}{
		{"unsynced batch missing", unsyncedAt, savedAt},
		{"unsynced batch's first sector missing", unsyncedAt, unsyncedAt + 1},
		{"both batches' last bytes missing", end - 1, end},
	} {
		t.Run(lost.name, func(t *testing.T) {
			d := copyDir(t, dir)
			zeroRange(t, segPath(d, 1), lost.from, lost.to)
			s, err := Open(d, opts)
			if err != nil {
				t.Fatalf("Open after a power loss that kept a later batch's header: %v", err)
			}
			defer s.Close()
			want := durable
			if lost.from >= savedAt {
				want.hs.Commit = 3 // the unsynced batch arrived whole
			}
			if err := verifyStore(s, &want, rand.New(rand.NewPCG(1, 1))); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestWALPowerLossForgedHeaderInValue reproduces issue 13 item 2: a client
// value that holds a well-formed batch header, in the last batch, must not
// turn a torn tail into "corruption".
func TestWALPowerLossForgedHeaderInValue(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	s := mustOpen(t, dir, opts)
	var m refLog
	mustSave(t, s, core.HardState{Term: 1}, mkEnts(1, 3, 1, 50))
	m.save(core.HardState{Term: 1}, mkEnts(1, 3, 1, 50))
	// The batches written so far are 1 (Open's first) .. 2; this Save is
	// batch 3, and its value forges batch 4.
	s.wmu.Lock()
	next := s.nextBatchSeq
	s.wmu.Unlock()
	value := make([]byte, 200)
	copy(value[60:], forgedBatchHeaders(next+1))
	value[len(value)-1] = 0xab // so that losing the last byte tears the batch
	mustSave(t, s, core.HardState{}, []core.Entry{{Index: 3, Term: 1, Data: value}})
	_, end := s.activeEnd()
	mustClose(t, s)
	d := copyDir(t, dir)
	zeroRange(t, segPath(d, 1), end-1, end) // the last byte never arrived
	s, err := Open(d, opts)
	if err != nil {
		t.Fatalf("Open of a torn tail whose value holds a forged header: %v", err)
	}
	defer s.Close()
	if err := verifyStore(s, &m, rand.New(rand.NewPCG(1, 1))); err != nil {
		t.Fatal(err)
	}
}

// zeroRange overwrites bytes [from, to) of path with zeros.
func zeroRange(t *testing.T, path string, from, to int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clear(b[from:to])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// forgedBatchHeaders returns what a client could put in a value to pose
// as the batch header of the given sequence number: a well-formed header
// record in the current format (with a salt it can only guess, and a
// synced end that would make any cut look like damage), then one in the
// format before issue 13 (25 bytes, no salt).
func forgedBatchHeaders(seq uint64) []byte {
	b := make([]byte, batchRecordBytes)
	putBatchRecord(b, batchHeader{seq: seq, salt: rand.Uint64(), syncedEnd: 1 << 40})
	v1 := make([]byte, recordHeaderSize+16)
	binary.LittleEndian.PutUint64(v1[recordHeaderSize:], seq)
	binary.LittleEndian.PutUint32(v1[4:], 16)
	v1[8] = byte(recBatch)
	binary.LittleEndian.PutUint32(v1, crc32.Checksum(v1[4:], crcTable))
	return append(b, v1...)
}

// TestWALPowerLossSyncedDamageReported: damage inside the fsynced region
// is corruption, reported with the file and the offset of the damaged
// record, even in the last segment and even in a batch that was written
// unsynced (SaveCommitUnsynced, before issue 15) and then covered by a later Save's
// fdatasync; damage to the last batch, which nothing proves synced, is cut.
func TestWALPowerLossSyncedDamageReported(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = 1 << 20
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 1, Vote: 1}, mkEnts(1, 4, 1, 100))
	_, unsynced := s.activeEnd()
	s.legacyUnsyncedCommit(t, core.HardState{Term: 1, Vote: 1, Commit: 2})
	_, synced := s.activeEnd()
	mustSave(t, s, core.HardState{}, mkEnts(4, 5, 1, 100))
	_, lastStart := s.activeEnd()
	mustSave(t, s, core.HardState{}, mkEnts(5, 6, 1, 100))
	mustClose(t, s)
	path := segPath(dir, 1)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		at      int64 // byte to flip
		wantOff int64 // offset the error must name; -1: a cut, no error
	}{
		{"unsynced batch's record, synced later", unsynced + batchRecordBytes + recordHeaderSize + 3, unsynced + batchRecordBytes},
		{"unsynced batch's header, synced later", unsynced + 12, unsynced},
		{"a synced Save's header", synced + 2, synced},
		{"a synced Save's entry data", synced + batchRecordBytes + 60, synced + batchRecordBytes},
		{"the last batch", lastStart + batchRecordBytes + 60, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.MkdirAll(filepath.Join(d, walDirName), 0o700); err != nil {
				t.Fatal(err)
			}
			img := bytes.Clone(data)
			img[c.at] ^= 0x10
			if err := os.WriteFile(segPath(d, 1), img, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(d, opts)
			if c.wantOff < 0 {
				if err != nil {
					t.Fatalf("Open with the last batch damaged: %v, want it cut", err)
				}
				defer s.Close()
				if last, _ := s.LastIndex(); last != 4 {
					t.Fatalf("last index %d after cutting the last batch, want 4", last)
				}
				return
			}
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded on damaged synced data")
			}
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.File != segPath(d, 1) || ce.Offset != c.wantOff ||
				!strings.Contains(err.Error(), fmt.Sprintf("offset %d", c.wantOff)) {
				t.Fatalf("Open: %v; want a *CorruptionError naming %s at offset %d", err, segPath(d, 1), c.wantOff)
			}
		})
	}
}

// TestWALOldFormatRefused: a directory written in WAL format version 1
// (before issue 13) is refused with ErrFormatVersion naming the file.
func TestWALOldFormatRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	// A version-1 checkpoint: version, segment seq, next batch seq, last
	// index, hard state, an empty snapshot meta.
	buf, start := beginRecord(nil)
	buf = binary.LittleEndian.AppendUint32(buf, 1)
	buf = binary.LittleEndian.AppendUint64(buf, 1)
	buf = binary.LittleEndian.AppendUint64(buf, 1)
	buf = binary.LittleEndian.AppendUint64(buf, 0)
	buf = appendHardState(buf, core.HardState{Term: 3})
	buf = appendLegacySnapshotMeta(buf, core.SnapshotMeta{})
	buf = endRecord(buf, start, recCheckpoint)
	if err := os.WriteFile(segPath(dir, 1), buf, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, testOptions())
	if !errors.Is(err, ErrFormatVersion) || !strings.Contains(err.Error(), segPath(dir, 1)) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("Open of a version-1 WAL: %v; want ErrFormatVersion naming %s", err, segPath(dir, 1))
	}
}

// TestWALPowerLossCompactHole: Compact removes old segments oldest first
// and then fsyncs the directory; a power loss before that fsync may keep
// any subset of the removals, leaving a hole in the numbering. Recovery
// finishes the Compact (removes the segments before the hole) when the
// segments after it hold every live entry, and keeps every file and fails
// when they do not.
func TestWALPowerLossCompactHole(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	s := mustOpen(t, dir, opts)
	var m refLog
	for i := uint64(1); s.Stats().Segments < 5; i++ {
		e := mkEnts(i, i+1, 1, 500)
		mustSave(t, s, core.HardState{Term: 1}, e)
		m.save(core.HardState{Term: 1}, e)
	}
	meta := core.SnapshotMeta{Index: m.last() - 1, Term: 1, Membership: core.Membership{Voters: []uint64{1}}}
	if err := s.InstallSnapshot(meta); err != nil {
		t.Fatal(err)
	}
	m.install(meta)
	seg1, err := os.ReadFile(segPath(dir, 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(meta.Index); err != nil {
		t.Fatal(err)
	}
	if n := s.Stats().Segments; n > 2 {
		t.Fatalf("%d segments after Compact, want at most 2", n)
	}
	mustClose(t, s)
	// Segment 1's removal did not survive; 2's did: a hole at 2.
	if err := os.WriteFile(segPath(dir, 1), seg1, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logCapture
	o := opts
	o.Logger = logs.logger()
	s = mustOpen(t, dir, o)
	if err := verifyStore(s, &m, rand.New(rand.NewPCG(8, 8))); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	if _, err := os.Stat(segPath(dir, 1)); !errors.Is(err, os.ErrNotExist) || !strings.Contains(logs.String(), "interrupted Compact") {
		t.Fatalf("segment 1 after recovery: %v; log %q; want it removed and logged", err, logs.String())
	}
}
