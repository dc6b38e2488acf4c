package disk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// Recovery replays the segments in order with a fixed read buffer, keeping
// only the index (never payloads) plus the records of one batch at a time.
// It returns the longest valid prefix of the log, and that prefix contains
// everything that was fsynced. The argument, under the crash model of
// doc.go (after a power loss, any subset of the 512-byte sectors written
// since a file's last completed fdatasync may survive, the rest keep their
// old contents; directory entries survive once the directory is synced):
//
// What is valid. A batch is accepted only where the log continues: at the
// offset where the previous batch ended, with a header whose CRC holds,
// whose salt is the segment's (a random value from its checkpoint, never
// shown to clients), whose seq is the next one, and whose prev field is
// the CRC of the previous header (of the checkpoint, for the first batch);
// and with every record of its body intact. Nothing is ever accepted that
// was found by scanning data bytes, so a client value holding a
// well-formed header (issue 13 item 2) is only data.
//
// Why the prefix holds everything fsynced. Bytes in a file are only ever
// written once: batches are appended into space that holds zeros (a fresh
// file, or the zero fill ahead of the log), and recovery never writes over
// a cut tail; it starts a new segment instead (below). So every sector of
// a segment holds either what was written there or zeros. Let d be the
// point up to which the active segment had been fdatasynced at the power
// cut; d is always the end of a batch. Every byte before d is intact, so
// the walk accepts every batch before d, whatever happened after it: the
// batches in flight (since issue 15 at most one, being synced; in a WAL
// written before, also commit-only batches that SaveCommitUnsynced wrote
// without a sync, one of which could be lost while a later Save's header
// arrived, issue 13 item 1) may be missing or torn in any pattern, and the walk simply stops at the first one that is not
// whole. Sealed segments were made durable before their successor was
// created, so they are whole.
//
// Telling damage from a torn tail. If the walk of the last segment stops
// before d, synced bytes changed: bit rot, not a power cut, and Open must
// fail rather than drop them. Recovery cannot know d, but every batch
// header records syncedEnd, the durable frontier when it was written
// (written only after the fsync that made it so, so the claim is true of
// any header that reached the disk), and d >= syncedEnd of every such
// header. So when the walk stops at A with nonzero bytes after it,
// recovery looks at every header in the rest of the file that carries the
// segment's salt (scanning byte offsets: the salt, unknown to clients,
// keeps values from posing as one; used only to refuse, never to accept);
// if any claims syncedEnd > A, the batch at A had been synced and the
// damage is reported as a *CorruptionError with file and offset.
// Otherwise the tail is not provably synced and is cut. Damage to the very
// last synced batch, with no header after it, is indistinguishable from a
// torn write and is cut too: no evidence of its fsync exists.
//
// Headers left over from a cut tail carry a syncedEnd no greater than the
// cut point (the frontier at that crash was behind the cut), so they never
// make a later recovery refuse.
//
// Cutting. A tail of zeros after the last batch (preallocated space, or
// pages of an unsynced batch none of which arrived) is left in place and
// writing continues after the last batch: logged at Debug. Anything else
// is a torn tail: logged as a warning, the segment is synced and sealed at
// its last valid batch, and a new segment starts, whose checkpoint records
// where the log of the cut segment ends. Nothing is truncated or
// overwritten, so no old bytes are ever confused with new ones.
//
// A segment whose checkpoint is damaged: the checkpoint is made durable
// before any batch is written to the file (startSegment), so if the file
// holds no valid batch header at all, this is a creation that never
// completed and the file is removed (only the last segment, and only if
// it is not the only one left after compaction); if it holds one, the
// checkpoint had been synced and the damage is corruption.

// replayer rebuilds a logState from the segment files.
type replayer struct {
	fs           vfs.FS
	maxPayload   int
	st           logState
	nextBatchSeq uint64
	chain        uint32 // chain value after the last accepted batch
	// missingUpTo: entries up to here were written to segments that
	// Compact deleted. They must all be covered by the snapshot when
	// replay ends, or data is missing.
	missingUpTo uint64
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

// segmentStart is a segment's decoded checkpoint.
type segmentStart struct {
	seg   *segment
	cp    checkpoint
	chain uint32 // the checkpoint record's CRC: the chain value before batch one
}

// tailEnd says how the last segment's log ended.
type tailEnd struct {
	fileSize int64
	// torn: nonzero bytes follow the last valid batch (reason says why
	// they are not a batch); otherwise only zeros do, if anything.
	torn   bool
	reason error
}

// recover rebuilds the Store's state from its WAL directory and leaves the
// last segment open for appending. Called once, from Open.
func (s *Store) recover() error {
	seqs, stale, err := listSegments(s.fs, s.walDir)
	if err != nil {
		return err
	}
	r := &replayer{fs: s.fs, maxPayload: s.opts.MaxRecordBytes}
	starts := make([]segmentStart, 0, len(seqs))
	for k, seq := range seqs {
		seg := &segment{seq: seq, path: filepath.Join(s.walDir, segmentName(seq))}
		isLast := k == len(seqs)-1
		st, tornCreation, err := r.readCheckpoint(seg, isLast)
		if err != nil {
			return err
		}
		if tornCreation {
			if err := s.removeTornSegment(seg, len(seqs)); err != nil {
				return err
			}
			break
		}
		starts = append(starts, st)
	}
	var tail tailEnd
	for k := range starts {
		var next *checkpoint
		if k+1 < len(starts) {
			next = &starts[k+1].cp
		}
		if tail, err = r.replaySegment(&starts[k], k == 0, next); err != nil {
			return err
		}
	}
	if len(starts) > 0 && r.missingUpTo > r.st.snap.Index {
		return corruptf(starts[0].seg.path, 0,
			"entries %d through %d were in deleted segments but no snapshot covers them (snapshot index %d)",
			r.st.snap.Index+1, r.missingUpTo, r.st.snap.Index)
	}
	// Only once the live segments proved complete: nothing else may
	// decide to delete a segment.
	if len(stale) > 0 {
		// Finish the Compact that left them (see listSegments).
		for _, seq := range stale {
			path := filepath.Join(s.walDir, segmentName(seq))
			s.logger.Warn("disk: removing a WAL segment an interrupted Compact left before a missing one",
				"file", path, "next_segment", segmentName(seqs[0]))
			if err := s.fs.Remove(path); err != nil {
				return fmt.Errorf("disk: remove compacted segment: %w", err)
			}
		}
		if err := syncDir(s.fs, s.walDir); err != nil {
			return err
		}
	}
	s.st = r.st
	s.nextBatchSeq = r.nextBatchSeq
	if len(starts) == 0 {
		if s.nextBatchSeq == 0 {
			s.nextBatchSeq = 1
		}
		return s.startSegment(1, 0, 0)
	}
	for i := range starts {
		s.segs = append(s.segs, starts[i].seg)
	}
	last := starts[len(starts)-1]
	f, err := s.fs.OpenReadWrite(last.seg.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("disk: open active segment: %w", err)
	}
	s.active = f
	// After kill -9 (the page cache survived, but maybe not on the
	// device) the replayed prefix may not be durable yet; the batch
	// headers written from now on claim it is (syncedEnd), so make it so.
	if err := syncData(f, last.seg.path); err != nil {
		return err
	}
	if err := syncDir(s.fs, s.walDir); err != nil {
		return err
	}
	s.salt, s.chain, s.syncedEnd = last.cp.salt, r.chain, last.seg.size
	if !tail.torn && last.cp.legacy() {
		// A segment of WAL format 2 (before issue 14): seal it where its
		// log ends and write on in a segment of the current format, so
		// that no segment mixes the two.
		s.logger.Info("disk: upgrading the WAL format: new writes go to a new segment",
			"file", last.seg.path, "from_version", checkpointVersionLegacy, "to_version", checkpointVersion)
		return s.startSegment(last.seg.seq+1, last.seg.size, r.chain)
	}
	if !tail.torn {
		if tail.fileSize > last.seg.size {
			s.logger.Debug("disk: the WAL ends in a preallocated zero tail",
				"file", last.seg.path, "offset", last.seg.size, "zero_bytes", tail.fileSize-last.seg.size)
		}
		// Everything past the log is zero: write on from its end.
		s.zeroedTo = tail.fileSize
		return nil
	}
	s.logger.Warn("disk: cutting torn WAL tail",
		"file", last.seg.path, "offset", last.seg.size, "bytes_cut", tail.fileSize-last.seg.size,
		"reason", tail.reason.Error())
	// Seal the segment at its last valid batch and go on in a new one:
	// the torn bytes stay where they are, past the end the new
	// checkpoint records, and are never read again.
	s.zeroedTo = last.seg.size
	return s.startSegment(last.seg.seq+1, last.seg.size, r.chain)
}

// removeTornSegment removes the last segment, whose creation never
// completed, and says so in the log.
func (s *Store) removeTornSegment(seg *segment, nsegs int) error {
	if nsegs == 1 && seg.seq != 1 {
		// The only segment left after compaction cannot be a torn new
		// segment: its predecessor would still exist.
		return corruptf(seg.path, 0, "no valid checkpoint in the only segment")
	}
	s.logger.Warn("disk: removing a WAL segment whose creation did not complete", "file", seg.path)
	if err := s.fs.Remove(seg.path); err != nil {
		return fmt.Errorf("disk: remove torn segment: %w", err)
	}
	return syncDir(s.fs, s.walDir)
}

// readCheckpoint decodes seg's checkpoint. For the last segment it reports
// tornCreation instead of an error when the checkpoint is damaged and no
// batch header exists in the file (see the comment at the top).
func (r *replayer) readCheckpoint(seg *segment, isLast bool) (segmentStart, bool, error) {
	f, err := r.fs.Open(seg.path)
	if err != nil {
		return segmentStart{}, false, fmt.Errorf("disk: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segmentStart{}, false, fmt.Errorf("disk: stat segment: %w", err)
	}
	size := fi.Size()
	rd := &r.rd
	rd.reset(f, size, r.maxPayload)
	typ, p, err := rd.next(size)
	if err == io.EOF {
		err = errRecTruncated // an empty file: a segment whose creation did not finish
	}
	if err != nil {
		if !isDecodeErr(err) {
			return segmentStart{}, false, fmt.Errorf("disk: read %s at offset 0: %w", seg.path, err)
		}
		if isLast {
			found := false
			if serr := scanBatchHeaders(f, 0, size, func(int64, batchHeader) { found = true }); serr != nil {
				return segmentStart{}, false, fmt.Errorf("disk: scan %s for batches: %w", seg.path, serr)
			}
			if !found {
				return segmentStart{}, true, nil
			}
		}
		return segmentStart{}, false, &CorruptionError{File: seg.path, Offset: 0, Reason: "bad segment checkpoint", Err: err}
	}
	if typ != recCheckpoint {
		return segmentStart{}, false, corruptf(seg.path, 0, "first record is a %s record, want a checkpoint", typ)
	}
	cp, err := decodeCheckpoint(p)
	if errors.Is(err, errFormatVersion) {
		return segmentStart{}, false, fmt.Errorf("disk: %s: %v: the format changed so that recovery after a power loss is sound (issue 13); "+
			"move the data directory aside and let the node catch up from its peers, or restore a backup: %w", seg.path, err, ErrFormatVersion)
	}
	if err != nil {
		return segmentStart{}, false, &CorruptionError{File: seg.path, Offset: 0, Reason: "bad segment checkpoint", Err: err}
	}
	if cp.segSeq != seg.seq {
		return segmentStart{}, false, corruptf(seg.path, 0, "checkpoint names segment %d", cp.segSeq)
	}
	seg.cpEnd, seg.size = rd.off, rd.off
	return segmentStart{seg: seg, cp: cp, chain: crcOf(rd.hdr[:])}, false, nil
}

// replaySegment applies the batches of one segment. next is the checkpoint
// of the segment after it, nil for the last one: a sealed segment's log
// must run exactly to next.prevEnd and end in next.prevChain; the last
// segment's log runs as far as valid batches continue it (see the comment
// at the top for where it may stop).
func (r *replayer) replaySegment(start *segmentStart, isFirst bool, next *checkpoint) (tailEnd, error) {
	seg, cp := start.seg, &start.cp
	bad := func(off int64, reason string, err error) error {
		return &CorruptionError{File: seg.path, Offset: off, Reason: reason, Err: err}
	}
	if err := r.checkpoint(seg, cp, isFirst); err != nil {
		return tailEnd{}, bad(0, err.Error(), nil)
	}
	f, err := r.fs.Open(seg.path)
	if err != nil {
		return tailEnd{}, fmt.Errorf("disk: open segment: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return tailEnd{}, fmt.Errorf("disk: stat segment: %w", err)
	}
	size := fi.Size()
	// The index stores offsets as uint32; no segment this package writes
	// comes near that (SegmentBytes + MaxBatchBytes <= 2 GiB).
	if size > math.MaxUint32 {
		return tailEnd{}, bad(0, fmt.Sprintf("segment of %d bytes is larger than any this package writes", size), nil)
	}
	limit := size
	if next != nil {
		if next.prevEnd < uint64(seg.cpEnd) || next.prevEnd > uint64(size) {
			return tailEnd{}, bad(min(size, int64(min(next.prevEnd, math.MaxInt64))), fmt.Sprintf(
				"the next segment's checkpoint says this segment's log ends at offset %d; the file holds %d bytes", next.prevEnd, size), nil)
		}
		limit = int64(next.prevEnd)
	}
	rd := &r.rd
	rd.reset(f, size, r.maxPayload)
	if _, _, err := rd.next(size); err != nil { // the checkpoint, read before
		return tailEnd{}, fmt.Errorf("disk: reread %s at offset 0: %w", seg.path, readErr(err))
	}
	r.chain = start.chain
	for rd.off < limit {
		batchOff := rd.off
		brk, err := r.replayBatch(rd, seg, cp.salt, limit)
		if err != nil {
			return tailEnd{}, err
		}
		if brk == nil {
			continue
		}
		// The log stops at batchOff.
		if next != nil {
			return tailEnd{}, brk // a sealed segment is whole
		}
		zeros, err := isZeroRange(f, batchOff, size)
		if err != nil {
			return tailEnd{}, fmt.Errorf("disk: read %s at offset %d: %w", seg.path, batchOff, err)
		}
		if zeros {
			return tailEnd{fileSize: size}, nil
		}
		var syncedTo uint64
		var at int64
		err = scanBatchHeaders(f, batchOff, size, func(off int64, bh batchHeader) {
			if bh.salt == cp.salt && bh.seq >= r.nextBatchSeq && bh.syncedEnd > syncedTo {
				syncedTo, at = bh.syncedEnd, off
			}
		})
		if err != nil {
			return tailEnd{}, fmt.Errorf("disk: scan %s for later batches: %w", seg.path, err)
		}
		if syncedTo > uint64(batchOff) {
			brk.Reason += fmt.Sprintf(" (in synced data: the batch header at offset %d records the file synced to offset %d)", at, syncedTo)
			return tailEnd{}, brk
		}
		return tailEnd{fileSize: size, torn: true, reason: brk}, nil
	}
	if next != nil {
		if r.chain != next.prevChain {
			return tailEnd{}, bad(limit, fmt.Sprintf("the log ends in chain value %#08x, the next segment's checkpoint says %#08x", r.chain, next.prevChain), nil)
		}
		r.st.locs.seal(seg.seq)
	}
	return tailEnd{fileSize: size}, nil
}

// replayBatch reads, verifies and applies the batch at rd.off, which ends
// at or before limit. It returns a non-nil *CorruptionError as brk when
// the bytes there are not a batch that continues the log (a torn tail, if
// in the last segment and not synced), and err for failures that can
// never be a torn write: I/O errors, and CRC-valid records whose contents
// are wrong.
func (r *replayer) replayBatch(rd *segmentReader, seg *segment, salt uint64, limit int64) (brk *CorruptionError, err error) {
	batchOff := rd.off
	notBatch := func(reason string, err error) (*CorruptionError, error) {
		return &CorruptionError{File: seg.path, Offset: batchOff, Reason: reason, Err: err}, nil
	}
	typ, p, err := rd.next(limit)
	if err != nil {
		if !isDecodeErr(err) {
			return nil, fmt.Errorf("disk: read %s at offset %d: %w", seg.path, batchOff, err)
		}
		return notBatch("bad batch header", err)
	}
	if typ != recBatch {
		return notBatch(fmt.Sprintf("found a %s record where a batch header belongs", typ), nil)
	}
	bh, err := decodeBatch(p)
	if err != nil {
		return notBatch("bad batch header", err)
	}
	switch {
	case bh.salt != salt:
		return notBatch(fmt.Sprintf("batch header salt %#016x is not the segment's %#016x", bh.salt, salt), nil)
	case bh.seq != r.nextBatchSeq:
		return notBatch(fmt.Sprintf("batch sequence %d, want %d (a batch is missing or repeated)", bh.seq, r.nextBatchSeq), nil)
	case bh.prev != r.chain:
		return notBatch(fmt.Sprintf("batch header names the previous header %#08x, the previous header is %#08x", bh.prev, r.chain), nil)
	case bh.syncedEnd > uint64(batchOff):
		return notBatch(fmt.Sprintf("batch header claims the file synced to offset %d, past its own start", bh.syncedEnd), nil)
	}
	chain := crcOf(rd.hdr[:])
	bodyEnd := rd.off + int64(bh.bodyLen)
	if bodyEnd > limit {
		return notBatch(fmt.Sprintf("batch of %d bytes extends past the end of the log at %d", bh.bodyLen, limit), nil)
	}
	if err := r.readBatch(rd, seg, bh, bodyEnd); err != nil {
		var ce *CorruptionError
		if errors.As(err, &ce) && isDecodeErr(ce.Err) {
			return ce, nil // a record torn or damaged by its bytes
		}
		return nil, err
	}
	if err := r.applyStaged(seg); err != nil {
		return nil, err
	}
	r.chain = chain
	r.nextBatchSeq++
	seg.size = rd.off
	return nil, nil
}

// crcOf returns the CRC field of a record header.
func crcOf(hdr []byte) uint32 {
	return uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24
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

// sameSnapshot compares two snapshot metadata by their encoding, so that
// member infos and HighestID count too (a legacy record decodes to a
// membership without them, which encodes like one that has none).
func sameSnapshot(a, b core.SnapshotMeta) bool {
	return a.Index == b.Index && a.Term == b.Term &&
		bytes.Equal(a.Membership.Marshal(), b.Membership.Marshal())
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
		case recSnapshot, recSnapshotV3:
			mk, err := decodeSnapshotMarker(typ, p)
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
