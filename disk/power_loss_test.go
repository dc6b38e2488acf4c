package disk

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestWALPowerLossUnsyncedBatchLost reproduces issue 13 item 1: a
// SaveCommitUnsynced batch whose pages never reached the disk, followed
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
	if err := s.SaveCommitUnsynced(core.HardState{Term: 1, Vote: 1, Commit: 3}); err != nil {
		t.Fatal(err)
	}
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
