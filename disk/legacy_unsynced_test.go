package disk

import (
	"math/rand/v2"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// legacyUnsyncedCommit writes hs as SaveCommitUnsynced did before issue
// 15: a WAL batch holding only the hard state, written without an
// fdatasync (the next Save's covers it). Nothing writes such batches any
// more, but WAL format 3 directories written before may hold them, so
// recovery must keep reading them; the tests build them with this.
func (s *Store) legacyUnsyncedCommit(t testing.TB, hs core.HardState) {
	t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.beginExclusive()
	defer s.endExclusive()
	if err := s.writable(); err != nil {
		t.Fatal(err)
	}
	b := newBatch(hardStateRecordBytes)
	b.buf = appendHardStateRecord(b.buf, hs)
	b.count, b.hs, b.hasHS = 1, hs, true
	seg := s.segs[len(s.segs)-1]
	chain := putBatchRecord(b.buf, batchHeader{
		seq:       s.nextBatchSeq,
		salt:      s.salt,
		syncedEnd: uint64(s.syncedEnd),
		bodyLen:   uint32(len(b.buf) - batchRecordBytes),
		count:     b.count,
		prev:      s.chain,
	})
	base := seg.size
	end := base + int64(len(b.buf))
	if err := writeBatchBytes(s.active, seg.path, b.buf, base, 0, false); err != nil {
		t.Fatal(err)
	}
	s.chain = chain
	s.zeroedTo = max(s.zeroedTo, end)
	s.nextBatchSeq++
	s.qHS = hs
	s.mu.Lock()
	defer s.mu.Unlock()
	seg.size = end
	if err := s.applyBatch(b, seg.seq, base); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyUnsyncedCommitBatchRead: a WAL written before issue 15, with
// commit-only batches that SaveCommitUnsynced wrote without an fdatasync
// (covered by a later Save's, or by none at a kill -9), reopens with
// those hard states, keeps working across a rotation, and reopens again.
func TestLegacyUnsyncedCommitBatchRead(t *testing.T) {
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes
	dir := t.TempDir()
	s := mustOpen(t, dir, opts)
	var m refLog
	hs := core.HardState{Term: 2, Vote: 1}
	mustSave(t, s, hs, mkEnts(1, 4, 2, 100))
	m.save(hs, mkEnts(1, 4, 2, 100))
	s.legacyUnsyncedCommit(t, core.HardState{Term: 2, Vote: 1, Commit: 2})
	mustSave(t, s, core.HardState{}, mkEnts(4, 6, 2, 100)) // covers it
	m.save(core.HardState{Term: 2, Vote: 1, Commit: 2}, mkEnts(4, 6, 2, 100))
	s.legacyUnsyncedCommit(t, core.HardState{Term: 2, Vote: 1, Commit: 5}) // covered by nothing
	m.save(core.HardState{Term: 2, Vote: 1, Commit: 5}, nil)
	crashed := copyDir(t, dir) // a kill -9: the page cache kept it
	mustClose(t, s)

	for name, d := range map[string]string{"clean close": dir, "kill -9": crashed} {
		t.Run(name, func(t *testing.T) {
			s := mustOpen(t, d, opts)
			if err := verifyStore(s, &m, rand.New(rand.NewPCG(5, 5))); err != nil {
				t.Fatal(err)
			}
			// Write on until the segment holding the old batches is
			// sealed; then everything reopens intact.
			want := m.clone()
			for i := want.last() + 1; s.Stats().Segments == 1; i++ {
				e := mkEnts(i, i+1, 2, 2000)
				mustSave(t, s, core.HardState{}, e)
				want.save(core.HardState{}, e)
			}
			mustClose(t, s)
			s = mustOpen(t, d, opts)
			defer s.Close()
			if err := verifyStore(s, &want, rand.New(rand.NewPCG(6, 6))); err != nil {
				t.Fatal(err)
			}
		})
	}
}
