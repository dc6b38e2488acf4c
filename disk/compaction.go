package disk

import (
	"errors"
	"fmt"

	"github.com/rafty-db/rafty/core"
)

// InstallSnapshot records that the snapshot described by meta is installed
// (its data lives in a SnapshotStore, written before this call). If the log
// holds meta.Index with meta.Term, the entries after it are kept (Raft
// §7); otherwise the whole log is discarded. Either way FirstIndex becomes
// meta.Index+1, Term(meta.Index) returns meta.Term and InitialState reports
// meta. A marker record is written and synced before it returns. Entries
// at or below meta.Index stay in their segments until Compact removes them.
func (s *Store) InstallSnapshot(meta core.SnapshotMeta) error {
	if meta.Index == 0 {
		return fmt.Errorf("disk: InstallSnapshot: snapshot index 0: %w", ErrInvalidArgument)
	}
	if err := checkSnapshotMeta(meta); err != nil {
		return fmt.Errorf("disk: InstallSnapshot: %w: %w", ErrInvalidArgument, err)
	}
	// The checkpoint that will repeat meta at the start of later segments
	// is the largest record holding it.
	if n := checkpointRecordBytes(&checkpoint{snap: meta}) - recordHeaderSize; n > s.opts.MaxRecordBytes {
		return fmt.Errorf("disk: InstallSnapshot: membership of %d nodes needs a %d-byte record, over Options.MaxRecordBytes %d: %w",
			len(meta.Membership.IDs()), n, s.opts.MaxRecordBytes, ErrTooLarge)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	s.beginExclusive()
	defer s.endExclusive()
	if err := s.writable(); err != nil {
		return err
	}

	// The queue is drained, so the durable state is the whole truth and
	// only this goroutine may change it.
	cur := s.st.snap
	switch {
	case meta.Index < cur.Index:
		return fmt.Errorf("disk: InstallSnapshot: snapshot %d/%d is older than the installed %d/%d: %w",
			meta.Index, meta.Term, cur.Index, cur.Term, ErrInvalidArgument)
	case meta.Index == cur.Index && meta.Term != cur.Term:
		return fmt.Errorf("disk: InstallSnapshot: snapshot %d has term %d, the installed one term %d: %w",
			meta.Index, meta.Term, cur.Term, ErrInvalidArgument)
	}
	t, err := s.st.term(meta.Index)
	keep := err == nil && t == meta.Term

	mk := &snapshotMarker{meta: meta, keep: keep, legacy: writeLegacyForTest.Load()}
	b := newBatch(snapshotRecordBytes(meta))
	b.buf = appendSnapshotRecord(b.buf, *mk)
	b.count = 1
	b.mk = mk
	if err := s.writeBatch(b); err != nil {
		err = fmt.Errorf("%w: %w", ErrFailed, err)
		s.failed = err
		return err
	}
	s.qLast, s.qSnapIndex = s.st.last, s.st.snap.Index
	return nil
}

// Compact lets the Store discard entries at or below index, which must not
// exceed the installed snapshot's index. It deletes, oldest first, every
// sealed segment that holds no live entry (entries at or below the
// snapshot are no longer live once InstallSnapshot returned), then syncs
// the directory. The active segment is never deleted. Term(snapshot index)
// stays answerable from the snapshot metadata, and every remaining segment
// starts with a checkpoint, so no state is lost with the deleted files.
func (s *Store) Compact(index uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	s.beginExclusive()
	defer s.endExclusive()
	if err := s.writable(); err != nil {
		return err
	}
	if index > s.st.snap.Index {
		return fmt.Errorf("disk: Compact(%d): above the snapshot index %d: %w", index, s.st.snap.Index, ErrInvalidArgument)
	}
	// Live entries sit in segments from firstLive on (log_index.go).
	limit := s.segs[len(s.segs)-1].seq // never the active segment
	if seq, ok := s.st.locs.firstSeq(); ok {
		limit = min(limit, seq)
	}
	var drop []*segment
	for _, seg := range s.segs {
		if seg.seq >= limit {
			break
		}
		drop = append(drop, seg)
	}
	if len(drop) == 0 {
		return nil
	}
	// Readers hold mu while reading a segment, so once the list no longer
	// names these files nobody can be reading them.
	s.mu.Lock()
	s.segs = append([]*segment(nil), s.segs[len(drop):]...)
	s.mu.Unlock()
	// Oldest first: a crash part-way leaves a contiguous suffix of
	// segments, which recovery accepts.
	var errs []error
	for _, seg := range drop {
		if err := s.fs.Remove(seg.path); err != nil {
			errs = append(errs, fmt.Errorf("disk: Compact: remove %w", err))
			break
		}
	}
	if err := syncDir(s.fs, s.walDir); err != nil {
		errs = append(errs, err)
	} else {
		s.stats.dirSyncs.Add(1)
	}
	return errors.Join(errs...)
}
