package disk

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// Recovery replays the segments in order with a fixed read buffer, keeping
// only the index (never payloads) plus the records of one batch at a time.
//
// What counts as a torn tail: a group-commit batch is written with one
// pwrite and synced before the next is written, so only the final batch of
// the last segment can be incomplete after a crash, and its pages may have
// reached the disk in any order, with zeros or garbage in between or
// after. Damage (a bad CRC, length or type) is therefore a torn tail when
// it lies in the last segment and no valid batch header with a later
// sequence number exists anywhere after the start of the damaged batch:
// then nothing was written after that batch, so it was never synced and no
// caller was told it was durable. A valid batch header whose body extends
// past the end of the file is torn for the same reason.
//
// The whole incomplete batch is cut, so a Save is all-or-nothing after a
// crash. Any other damage is a *CorruptionError naming the file and offset.
//
// Preallocated space is not damage: the active segment's file runs past
// its last batch with zero bytes (Options.PreallocateBytes), and a crash
// can leave any part of that zero fill, or zeros where the pages of an
// unsynced final batch never arrived. So when every byte from a batch
// boundary of the last segment to its end is zero, recovery cuts them as
// it cuts a torn tail, but logs that only at Debug level: no batch, and no
// part of one, is there. A batch with any nonzero byte is torn (or
// corrupt) exactly as above, whether zeros follow it or not. A zero tail
// in any other segment is corruption: a segment is cut to its logical size
// and synced before its successor is created (see sealActive).

// replayer rebuilds a logState from the segment files.
type replayer struct {
	fs           vfs.FS
	maxPayload   int
	st           logState
	nextBatchSeq uint64
	// missingUpTo: entries up to here were written to segments that
	// Compact deleted. They must all be covered by the snapshot when
	// replay ends, or data is missing.
	missingUpTo uint64
	segs        []*segment
	// One batch of staged records, reused: applied only once the whole
	// batch has been read and verified.
	stagedEnts []stagedEntry
	stagedOps  []stagedOp
	rd         segmentReader // reused for every segment
}

type stagedEntry struct {
	index, term uint64
	off         uint32
}

// stagedOp is a hard state or snapshot marker; it applies after the first
// nEnts staged entries of its batch.
type stagedOp struct {
	nEnts int
	off   int64
	hs    *core.HardState
	mk    *snapshotMarker
}

// tornTail says what to cut from the last segment.
type tornTail struct {
	seg    *segment
	off    int64 // cut point; 0 means the segment has no valid checkpoint
	size   int64 // file size before cutting
	reason error
	// zeros: everything from off on is zero, preallocated space rather
	// than a torn write (never set with off == 0).
	zeros bool
}

// recover rebuilds the Store's state from its WAL directory and leaves the
// last segment open for appending. Called once, from Open.
func (s *Store) recover() error {
	seqs, err := listSegments(s.fs, s.walDir)
	if err != nil {
		return err
	}
	r := &replayer{fs: s.fs, maxPayload: s.opts.MaxRecordBytes}
	var torn *tornTail
	for k, seq := range seqs {
		seg := &segment{seq: seq, path: filepath.Join(s.walDir, segmentName(seq))}
		t, err := r.replaySegment(seg, k == 0, k == len(seqs)-1)
		if err != nil {
			return err
		}
		torn = t
		if t == nil || t.off > 0 {
			r.segs = append(r.segs, seg)
		}
	}
	if torn != nil {
		if err := s.cutTornTail(torn, len(seqs)); err != nil {
			return err
		}
	}
	if len(r.segs) > 0 && r.missingUpTo > r.st.snap.Index {
		return corruptf(r.segs[0].path, 0,
			"entries %d through %d were in deleted segments but no snapshot covers them (snapshot index %d)",
			r.st.snap.Index+1, r.missingUpTo, r.st.snap.Index)
	}
	s.st = r.st
	s.segs = r.segs
	s.nextBatchSeq = r.nextBatchSeq
	if len(s.segs) == 0 {
		return s.createFirstSegment()
	}
	last := s.segs[len(s.segs)-1]
	f, err := s.fs.OpenReadWrite(last.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("disk: open active segment: %w", err)
	}
	s.active = f
	// Replay read up to the end of the file, or cut what followed the
	// last batch, so the file holds no zero tail yet; the writer extends
	// it again (the zeroedTo invariant starts out trivially true).
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("disk: stat active segment: %w", err)
	}
	if fi.Size() != last.size {
		return fmt.Errorf("disk: active segment %s is %d bytes after recovery, its log ends at %d (bug)",
			last.path, fi.Size(), last.size)
	}
	s.zeroedTo = last.size
	return nil
}

// cutTornTail truncates the last segment at the torn point, or removes it
// when even its checkpoint is torn, and says so in the log.
func (s *Store) cutTornTail(t *tornTail, nsegs int) error {
	if t.zeros {
		s.logger.Debug("disk: cutting preallocated zero tail of the WAL",
			"file", t.seg.path, "offset", t.off, "bytes_cut", t.size-t.off)
	} else {
		s.logger.Warn("disk: truncating torn WAL tail",
			"file", t.seg.path, "offset", t.off, "bytes_cut", t.size-t.off, "reason", t.reason.Error())
	}
	if t.off == 0 {
		if nsegs > 1 || t.seg.seq == 1 {
			if err := s.fs.Remove(t.seg.path); err != nil {
				return fmt.Errorf("disk: remove torn segment: %w", err)
			}
			return syncDir(s.fs, s.walDir)
		}
		// The only segment left after compaction cannot be a torn new
		// segment: its predecessor would still exist.
		return &CorruptionError{File: t.seg.path, Offset: 0, Reason: "no valid checkpoint in the only segment", Err: t.reason}
	}
	f, err := s.fs.OpenReadWrite(t.seg.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("disk: open torn segment: %w", err)
	}
	defer f.Close()
	if err := truncateFile(f, t.seg.path, t.off); err != nil {
		return fmt.Errorf("disk: truncate torn segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("disk: sync truncated segment: %w", err)
	}
	return nil
}

// createFirstSegment starts an empty WAL (or one whose only, torn, segment
// was removed).
func (s *Store) createFirstSegment() error {
	if s.nextBatchSeq == 0 {
		s.nextBatchSeq = 1
	}
	seg, f, buf, err := s.createSegment(1, nil)
	if err != nil {
		return err
	}
	if err := writeBatchBytes(f, seg.path, buf, 0, 0, true); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(s.fs, s.walDir); err != nil {
		f.Close()
		return err
	}
	seg.size = int64(len(buf))
	s.segs = []*segment{seg}
	s.active = f
	s.zeroedTo = seg.size // no zero fill until the first batch
	return nil
}

// replaySegment applies seg's records. It returns a tornTail when seg is
// the last segment and ends in a torn write.
func (r *replayer) replaySegment(seg *segment, isFirst, isLast bool) (*tornTail, error) {
	f, err := r.fs.Open(seg.path)
	if err != nil {
		return nil, fmt.Errorf("disk: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("disk: stat segment: %w", err)
	}
	size := fi.Size()
	bad := func(off int64, reason string, err error) error {
		return &CorruptionError{File: seg.path, Offset: off, Reason: reason, Err: err}
	}
	// The index stores offsets as uint32; no segment this package writes
	// comes near that (SegmentBytes + MaxBatchBytes <= 2 GiB).
	if size > math.MaxUint32 {
		return nil, bad(0, fmt.Sprintf("segment of %d bytes is larger than any this package writes", size), nil)
	}
	rd := &r.rd
	rd.reset(f, size, r.maxPayload)
	// isTorn decides whether damage at off (a batch boundary) is the torn
	// final write: nothing synced after it can exist.
	isTorn := func(off int64) (bool, error) {
		if !isLast {
			return false, nil
		}
		// The damaged batch had seq nextBatchSeq; a successor would have
		// a larger one.
		_, found, err := findBatchHeader(f, off+1, size, r.nextBatchSeq+1)
		if err != nil {
			return false, fmt.Errorf("disk: scan %s for later batches: %w", seg.path, err)
		}
		return !found, nil
	}

	// The checkpoint.
	typ, p, err := rd.next(size)
	if err == io.EOF {
		err = errRecTruncated // an empty file: a segment whose creation did not finish
	}
	if err != nil {
		if !isDecodeErr(err) {
			return nil, fmt.Errorf("disk: read %s at offset 0: %w", seg.path, err)
		}
		if torn, terr := isTorn(0); terr != nil || torn {
			return &tornTail{seg: seg, off: 0, size: size, reason: err}, terr
		}
		return nil, bad(0, "bad segment checkpoint", err)
	}
	if typ != recCheckpoint {
		return nil, bad(0, fmt.Sprintf("first record is a %s record, want a checkpoint", typ), nil)
	}
	cp, err := decodeCheckpoint(p)
	if err != nil {
		return nil, bad(0, "bad segment checkpoint", err)
	}
	if err := r.checkpoint(seg, &cp, isFirst); err != nil {
		return nil, bad(0, err.Error(), nil)
	}
	seg.cpEnd = rd.off
	seg.size = rd.off

	for {
		batchOff := rd.off
		typ, p, err := rd.next(size)
		if err == io.EOF {
			break
		}
		if err != nil {
			if !isDecodeErr(err) {
				return nil, fmt.Errorf("disk: read %s at offset %d: %w", seg.path, batchOff, err)
			}
			// An all-zero header can only start preallocated space (a
			// record's type is never zero); checking the rest of the
			// file tells it from a torn batch whose header is lost.
			if isLast {
				zeros, zerr := isZeroRange(f, batchOff, size)
				if zerr != nil {
					return nil, fmt.Errorf("disk: read %s at offset %d: %w", seg.path, batchOff, zerr)
				}
				if zeros {
					return &tornTail{seg: seg, off: batchOff, size: size, zeros: true}, nil
				}
			}
			if torn, terr := isTorn(batchOff); terr != nil || torn {
				return &tornTail{seg: seg, off: batchOff, size: size, reason: err}, terr
			}
			return nil, bad(batchOff, "bad batch header", err)
		}
		if typ != recBatch {
			return nil, bad(batchOff, fmt.Sprintf("found a %s record where a batch header belongs", typ), nil)
		}
		bh, err := decodeBatch(p)
		if err != nil {
			return nil, bad(batchOff, "bad batch header", err)
		}
		if bh.seq != r.nextBatchSeq {
			return nil, bad(batchOff, fmt.Sprintf("batch sequence %d, want %d (a batch is missing or repeated)", bh.seq, r.nextBatchSeq), nil)
		}
		bodyEnd := rd.off + int64(bh.bodyLen)
		if bodyEnd > size {
			if isLast {
				return &tornTail{seg: seg, off: batchOff, size: size,
					reason: fmt.Errorf("batch of %d bytes extends past the end of the file", bh.bodyLen)}, nil
			}
			return nil, bad(batchOff, fmt.Sprintf("batch of %d bytes extends past the end of the file", bh.bodyLen), nil)
		}
		if err := r.readBatch(rd, seg, bh, bodyEnd); err != nil {
			var ce *CorruptionError
			if errors.As(err, &ce) && isDecodeErr(ce.Err) {
				if torn, terr := isTorn(batchOff); terr != nil || torn {
					return &tornTail{seg: seg, off: batchOff, size: size, reason: err}, terr
				}
			}
			return nil, err
		}
		if err := r.applyStaged(seg); err != nil {
			return nil, err
		}
		r.nextBatchSeq++
		seg.size = rd.off
	}
	if !isLast {
		r.st.locs.seal(seg.seq)
	}
	return nil, nil
}

// checkpoint starts the replay from the first segment's checkpoint, or
// checks a later one against the state replayed so far.
func (r *replayer) checkpoint(seg *segment, cp *checkpoint, isFirst bool) error {
	if cp.segSeq != seg.seq {
		return fmt.Errorf("checkpoint names segment %d", cp.segSeq)
	}
	if isFirst {
		r.st = logState{hs: cp.hs, snap: cp.snap, last: cp.last}
		r.missingUpTo = cp.last
		r.nextBatchSeq = cp.nextBatchSeq
		if cp.last < cp.snap.Index {
			return fmt.Errorf("checkpoint last index %d is below its snapshot index %d", cp.last, cp.snap.Index)
		}
		return nil
	}
	switch {
	case cp.nextBatchSeq != r.nextBatchSeq:
		return fmt.Errorf("checkpoint expects batch %d, the previous segment ends before batch %d", cp.nextBatchSeq, r.nextBatchSeq)
	case cp.last != r.st.last:
		return fmt.Errorf("checkpoint last index %d, the previous segments end at %d", cp.last, r.st.last)
	case cp.hs != r.st.hs:
		return fmt.Errorf("checkpoint hard state %+v, the previous segments say %+v", cp.hs, r.st.hs)
	case !sameSnapshot(cp.snap, r.st.snap):
		return fmt.Errorf("checkpoint snapshot %d/%d, the previous segments say %d/%d",
			cp.snap.Index, cp.snap.Term, r.st.snap.Index, r.st.snap.Term)
	}
	return nil
}

func sameSnapshot(a, b core.SnapshotMeta) bool {
	return a.Index == b.Index && a.Term == b.Term &&
		slices.Equal(a.Membership.Voters, b.Membership.Voters) &&
		slices.Equal(a.Membership.OutgoingVoters, b.Membership.OutgoingVoters) &&
		slices.Equal(a.Membership.Learners, b.Membership.Learners)
}

// readBatch reads and verifies the body of one batch into the stage.
func (r *replayer) readBatch(rd *segmentReader, seg *segment, bh batchHeader, bodyEnd int64) error {
	r.stagedEnts = r.stagedEnts[:0]
	clear(r.stagedOps)
	r.stagedOps = r.stagedOps[:0]
	for k := uint32(0); k < bh.count; k++ {
		off := rd.off
		typ, p, err := rd.next(bodyEnd)
		if err == io.EOF {
			return corruptf(seg.path, off, "batch holds %d records, its header says %d", k, bh.count)
		}
		if err != nil {
			if isDecodeErr(err) {
				return &CorruptionError{File: seg.path, Offset: off, Reason: "bad record", Err: err}
			}
			return fmt.Errorf("disk: read %s at offset %d: %w", seg.path, off, err)
		}
		switch typ {
		case recEntry:
			e, err := decodeEntry(p)
			if err != nil {
				return &CorruptionError{File: seg.path, Offset: off, Reason: "bad entry", Err: err}
			}
			r.stagedEnts = append(r.stagedEnts, stagedEntry{index: e.Index, term: e.Term, off: uint32(off)})
		case recHardState:
			hs, err := decodeHardState(p)
			if err != nil {
				return &CorruptionError{File: seg.path, Offset: off, Reason: "bad hard state", Err: err}
			}
			r.stagedOps = append(r.stagedOps, stagedOp{nEnts: len(r.stagedEnts), off: off, hs: &hs})
		case recSnapshot:
			mk, err := decodeSnapshotMarker(p)
			if err != nil {
				return &CorruptionError{File: seg.path, Offset: off, Reason: "bad snapshot marker", Err: err}
			}
			r.stagedOps = append(r.stagedOps, stagedOp{nEnts: len(r.stagedEnts), off: off, mk: &mk})
		default:
			return corruptf(seg.path, off, "a %s record inside a batch", typ)
		}
	}
	if rd.off != bodyEnd {
		return corruptf(seg.path, rd.off, "batch records end %d bytes before the batch does", bodyEnd-rd.off)
	}
	return nil
}

// applyStaged applies a verified batch, with the same transitions as live
// writes.
func (r *replayer) applyStaged(seg *segment) error {
	n := 0
	applyEnts := func(upTo int) error {
		for ; n < upTo; n++ {
			e := &r.stagedEnts[n]
			if err := r.st.applyEntry(e.index, e.term, seg.seq, e.off); err != nil {
				return corruptf(seg.path, int64(e.off), "%v", err)
			}
			if e.index <= r.missingUpTo {
				r.missingUpTo = e.index - 1
			}
		}
		return nil
	}
	for i := range r.stagedOps {
		op := &r.stagedOps[i]
		if err := applyEnts(op.nEnts); err != nil {
			return err
		}
		if op.hs != nil {
			r.st.hs = *op.hs
		}
		if op.mk != nil {
			if err := r.st.applySnapshot(*op.mk); err != nil {
				return corruptf(seg.path, op.off, "%v", err)
			}
			if !op.mk.keep {
				r.missingUpTo = min(r.missingUpTo, op.mk.meta.Index)
			}
		}
	}
	return applyEnts(len(r.stagedEnts))
}
