package disk

import (
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// Group commit, leader/follower style, with no background goroutine:
//
// Save validates and encodes its records into the newest queued batch (or
// a new one), then waits. Whenever no write is in flight, any waiting Save
// takes the oldest queued batch and becomes the leader for it: it releases
// wmu, writes the batch with one pwrite and one fdatasync, publishes the
// result to readers, and wakes everyone. Saves that arrive while a write is
// in flight pile into the next batch, so under load each fsync carries
// everything that accumulated during the previous one; with a single caller
// every Save is exactly one write and one fdatasync (plus, about once per
// Options.PreallocateBytes, a write of zeros extending the file, under the
// same fdatasync). A Save returns once the batch holding it is durable and
// visible through the LogReader methods.
//
// No goroutine is started, so there is nothing to stop: Close just waits for
// the queue to drain.

// batch is one future write: a batch header record followed by the records
// of one or more Saves.
type batch struct {
	buf   []byte // batchRecordBytes reserved for the header, then the body
	count uint32 // records in the body
	ents  []pendingEntry
	hs    core.HardState // last hard state saved in this batch
	hasHS bool
	mk    *snapshotMarker // InstallSnapshot batches carry only this
	// sync: some Save in the batch needs it durable, not just written
	// (SaveCommitUnsynced batches alone skip the fdatasync).
	sync bool

	done bool
	err  error
}

// pendingEntry locates an entry inside batch.buf until its segment offset
// is known.
type pendingEntry struct {
	index, term uint64
	typ         core.EntryType
	recOff      uint32 // record offset within buf
	dataOff     uint32
	dataLen     uint32
}

func newBatch(capHint int) *batch {
	return &batch{buf: make([]byte, batchRecordBytes, batchRecordBytes+capHint)}
}

// Save makes hs (unless zero, meaning unchanged) and entries durable; see
// driver.Storage for the contract. Entries must be contiguous and start
// after the snapshot index and at or below LastIndex()+1 (counting Saves
// still queued); writing index i supersedes every stored entry >= i. An
// entry whose record exceeds MaxRecordBytes, or a Save larger than
// MaxBatchBytes, fails with ErrTooLarge before anything is written.
func (s *Store) Save(hs core.HardState, entries []core.Entry) error {
	return s.save(hs, entries, true)
}

// SaveCommitUnsynced writes hs, a hard state that differs from the last
// one saved only in its commit index, to the WAL without waiting for an
// fdatasync: it survives a crash of the process (the bytes are in the
// kernel) but not necessarily a power loss, until the next Save's
// fdatasync covers it. Raft's safety never depends on the commit index
// being durable (a restarted node learns it again from the leader), so
// the driver uses this for commit-only advances instead of a full Save;
// see driver.UnsyncedCommitSaver. A hard state whose term or vote differs
// from the last one queued is refused with ErrInvalidArgument: those must
// be durable before any message that depends on them leaves.
func (s *Store) SaveCommitUnsynced(hs core.HardState) error {
	return s.save(hs, nil, false)
}

func (s *Store) save(hs core.HardState, entries []core.Entry, sync bool) error {
	size, err := s.checkSave(entries)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for s.exclusive && !s.closed {
		s.wcond.Wait()
	}
	if err := s.writable(); err != nil {
		return err
	}
	if !sync && (hs.Term != s.qHS.Term || hs.Vote != s.qHS.Vote) {
		return fmt.Errorf("disk: SaveCommitUnsynced: term/vote %d/%d differ from the saved %d/%d: %w",
			hs.Term, hs.Vote, s.qHS.Term, s.qHS.Vote, ErrInvalidArgument)
	}
	writeHS := !hs.IsZero() && hs != s.qHS
	if len(entries) == 0 && !writeHS {
		return nil // nothing new to make durable
	}
	if n := len(entries); n > 0 {
		first := entries[0].Index
		if first <= s.qSnapIndex {
			return fmt.Errorf("disk: Save: entry %d is at or below the snapshot index %d: %w",
				first, s.qSnapIndex, ErrInvalidArgument)
		}
		if first > s.qLast+1 {
			return fmt.Errorf("disk: Save: entry %d leaves a gap after the last index %d: %w",
				first, s.qLast, ErrInvalidArgument)
		}
	}
	if writeHS {
		size += hardStateRecordBytes
	}
	if batchRecordBytes+size > s.opts.MaxBatchBytes {
		return fmt.Errorf("disk: Save: %d entries encode to a %d-byte batch, over Options.MaxBatchBytes %d: %w",
			len(entries), batchRecordBytes+size, s.opts.MaxBatchBytes, ErrTooLarge)
	}

	// Join the newest queued batch if it has room, else start one.
	var b *batch
	if n := len(s.queue); n > 0 && s.queue[n-1].mk == nil && len(s.queue[n-1].buf)+size <= s.opts.MaxBatchBytes {
		b = s.queue[n-1]
	} else {
		b = newBatch(size)
		s.queue = append(s.queue, b)
	}
	b.sync = b.sync || sync
	// Hard state first: any prefix of a batch then pairs entries with a
	// term at least as new as theirs.
	if writeHS {
		b.buf = appendHardStateRecord(b.buf, hs)
		b.count++
		b.hs, b.hasHS = hs, true
		s.qHS = hs
	}
	for i := range entries {
		e := &entries[i]
		recOff := len(b.buf)
		b.buf = appendEntryRecord(b.buf, e)
		b.count++
		b.ents = append(b.ents, pendingEntry{
			index: e.Index, term: e.Term, typ: e.Type,
			recOff:  uint32(recOff),
			dataOff: uint32(len(b.buf) - len(e.Data)),
			dataLen: uint32(len(e.Data)),
		})
	}
	if n := len(entries); n > 0 {
		s.qLast = entries[n-1].Index
	}
	s.stats.saves.Add(1)
	if s.testHookEnqueued != nil {
		s.testHookEnqueued()
	}
	return s.waitLocked(b)
}

// checkSave validates what needs no lock and returns the encoded size of
// the entry records.
func (s *Store) checkSave(entries []core.Entry) (int, error) {
	size := batchRecordBytes
	for i := range entries {
		e := &entries[i]
		if i > 0 && e.Index != entries[i-1].Index+1 {
			return 0, fmt.Errorf("disk: Save: entries not contiguous: %d follows %d: %w",
				e.Index, entries[i-1].Index, ErrInvalidArgument)
		}
		if n := EntryOverheadBytes + len(e.Data); n > s.opts.MaxRecordBytes {
			return 0, fmt.Errorf("disk: Save: entry %d record payload is %d bytes, over Options.MaxRecordBytes %d: %w",
				e.Index, n, s.opts.MaxRecordBytes, ErrTooLarge)
		}
		size += entryRecordBytes(e)
	}
	return size - batchRecordBytes, nil
}

func (s *Store) writable() error {
	if s.closed {
		return ErrClosed
	}
	if s.failed != nil {
		return s.failed
	}
	return nil
}

// waitLocked waits, holding wmu, until b is durable, leading the writes of
// queued batches whenever nobody else is.
func (s *Store) waitLocked(b *batch) error {
	for !b.done {
		if !s.flushing && len(s.queue) > 0 {
			s.flushLocked()
			continue
		}
		s.wcond.Wait()
	}
	return b.err
}

// flushLocked writes the oldest queued batch. Called with wmu held and no
// write in flight; releases wmu during the I/O and holds it again on return.
func (s *Store) flushLocked() {
	b := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	if s.failed != nil {
		b.err, b.done = s.failed, true
		s.wcond.Broadcast()
		return
	}
	s.flushing = true
	s.wmu.Unlock()
	err := s.writeBatch(b)
	s.wmu.Lock()
	s.flushing = false
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrFailed, err)
		if s.failed == nil {
			s.failed = err
		}
	}
	b.err, b.done = err, true
	s.wcond.Broadcast()
}

// beginExclusive (wmu held) drains the queue and the in-flight write and
// keeps new Saves out until endExclusive, so the caller may write and
// change state with wmu held, knowing the queued state equals the durable
// state.
func (s *Store) beginExclusive() {
	for s.exclusive {
		s.wcond.Wait()
	}
	s.exclusive = true
	for s.flushing || len(s.queue) > 0 {
		if !s.flushing {
			s.flushLocked()
			continue
		}
		s.wcond.Wait()
	}
}

func (s *Store) endExclusive() {
	s.exclusive = false
	s.wcond.Broadcast()
}

// writeBatch appends b to the WAL and makes it durable, then publishes it.
// Only the write-token holder calls it.
func (s *Store) writeBatch(b *batch) error {
	putBatchRecord(b.buf, batchHeader{
		seq:     s.nextBatchSeq,
		bodyLen: uint32(len(b.buf) - batchRecordBytes),
		count:   b.count,
	})
	seg := s.segs[len(s.segs)-1]
	// base is where b lands; wbuf is what is written at writeOff, in a
	// file zero-filled up to zeroedTo.
	f, base, wbuf, writeOff, zeroedTo := s.active, seg.size, b.buf, seg.size, s.zeroedTo

	// Rotate when the batch would push a segment holding batches past
	// SegmentBytes. A batch is never split across segments.
	var newSeg *segment
	if seg.size > seg.cpEnd && seg.size+int64(len(b.buf)) > s.opts.SegmentBytes {
		if err := s.sealActive(seg); err != nil {
			return err
		}
		var err error
		newSeg, f, wbuf, err = s.createSegment(seg.seq+1, b.buf)
		if err != nil {
			return err
		}
		base, writeOff, zeroedTo = newSeg.cpEnd, 0, 0
	}
	end := writeOff + int64(len(wbuf))
	fillTo := s.fillEnd(len(b.buf), end, zeroedTo)
	// A new segment is always synced: its directory entry must be
	// durable before anything after it is, and syncing it once is cheap.
	synced := b.sync || newSeg != nil
	path := seg.path
	if newSeg != nil {
		path = newSeg.path
	}
	err := writeBatchBytes(f, path, wbuf, writeOff, fillTo, synced)
	if err == nil && newSeg != nil {
		// The new file's directory entry must be durable too before the
		// batch counts as durable.
		if err = syncDir(s.fs, s.walDir); err == nil {
			s.stats.dirSyncs.Add(1)
		}
	}
	if err != nil {
		if newSeg != nil {
			f.Close()
		}
		return err
	}
	s.unsynced = !synced
	if synced {
		s.stats.fsyncs.Add(1)
	}
	if fillTo > end {
		s.stats.zeroFills.Add(1)
	}
	s.zeroedTo = max(zeroedTo, end, fillTo)
	s.stats.batches.Add(1)
	s.stats.bytes.Add(uint64(len(wbuf)))
	s.nextBatchSeq++

	// Publish.
	s.mu.Lock()
	defer s.mu.Unlock()
	if newSeg != nil {
		s.st.locs.seal(seg.seq)
		old := s.active
		s.segs = append(s.segs, newSeg)
		s.active = f
		seg = newSeg
		if err := old.Close(); err != nil {
			s.logger.Warn("disk: closing sealed segment", "file", s.segs[len(s.segs)-2].path, "err", err)
		}
	}
	seg.size = base + int64(len(b.buf))
	return s.applyBatch(b, seg.seq, base)
}

// sealActive makes the active segment seg fit to be sealed by a rotation:
// recovery treats anything wrong in a segment that is not the last one,
// a short file or a zero tail alike, as corruption, so before the next
// segment can exist seg must be durable at exactly its logical size.
//
// Rotation order (each step durable before the next starts):
//
//  1. truncate seg's preallocated zero tail, if any;
//  2. fdatasync seg, if step 1 changed its size or a SaveCommitUnsynced
//     write is not yet synced (fdatasync commits a size change made by
//     ftruncate: fdatasync(2));
//  3. create the next segment and write its checkpoint and first batch
//     (zero-filling it as usual), fdatasync it;
//  4. fsync the directory; only then is the batch durable.
//
// A crash before step 2 completes leaves seg the last segment, with or
// without its zero tail: both recover (the tail is preallocated space). A
// crash after it leaves seg clean and sealed, and the next segment absent,
// or last with a torn or zero tail, which recovery cuts or removes.
func (s *Store) sealActive(seg *segment) error {
	cut := false
	if s.zeroedTo > seg.size {
		if err := truncateFile(s.active, seg.path, seg.size); err != nil {
			return fmt.Errorf("disk: cut the zero tail of segment %s before sealing it: %w", seg.path, err)
		}
		s.zeroedTo, cut = seg.size, true
	}
	if !cut && !s.unsynced {
		return nil
	}
	if err := syncData(s.active, seg.path); err != nil {
		return err
	}
	s.unsynced = false
	s.stats.fsyncs.Add(1)
	s.stats.sealSyncs.Add(1)
	return nil
}

// fillEnd returns how far to zero-fill the file after a batch of n bytes
// ending at end, in a file zero-filled up to zeroedTo: to the next multiple
// of PreallocateBytes, so that the file size (metadata an fdatasync must
// commit) changes about once per chunk rather than once per batch; but not
// past SegmentBytes, where the segment rotates and the tail would be cut
// again. A result <= end means no zero fill.
//
// A batch of at least 1/bigBatchFillDivisor of a chunk gets no zero fill:
// such Saves are bound by bandwidth, not by the metadata commit, and
// filling ahead of them would write most of the segment twice (measured:
// 1 MiB batches about 15% slower with the fill). A later small batch
// extends the file as usual.
func (s *Store) fillEnd(n int, end, zeroedTo int64) int64 {
	chunk := s.opts.PreallocateBytes
	if chunk == 0 || end <= zeroedTo || int64(n) >= chunk/bigBatchFillDivisor {
		return 0
	}
	return min((end+chunk-1)/chunk*chunk, max(end, s.opts.SegmentBytes))
}

// bigBatchFillDivisor: see fillEnd.
const bigBatchFillDivisor = 4

// zeroBuf is the source of zero fill; its pages are never written, so it
// costs no memory beyond the shared zero page.
var zeroBuf [1 << 20]byte

// writeBatchBytes writes buf at off with one pwrite, then, if fillTo lies
// past it, zero-fills the file from there to fillTo (one more pwrite per
// MiB), then, if sync, makes both (and every earlier unsynced write to f)
// durable with one fdatasync. The two writes need no order between them:
// until the fdatasync returns the batch is not durable, and recovery cuts
// whatever subset of their pages a crash leaves (zeros silently, anything
// else as a torn tail).
func writeBatchBytes(f vfs.File, path string, buf []byte, off, fillTo int64, sync bool) error {
	if _, err := f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("disk: write WAL: %w", err)
	}
	for pos := off + int64(len(buf)); pos < fillTo; {
		n := min(fillTo-pos, int64(len(zeroBuf)))
		if _, err := f.WriteAt(zeroBuf[:n], pos); err != nil {
			return fmt.Errorf("disk: zero-fill WAL: %w", err)
		}
		pos += n
	}
	if !sync {
		return nil
	}
	return syncData(f, path)
}

// applyBatch applies a durable batch to the index and the cache (mu held).
func (s *Store) applyBatch(b *batch, seq uint64, base int64) error {
	if b.hasHS {
		s.st.hs = b.hs
	}
	if b.mk != nil {
		if err := s.st.applySnapshot(*b.mk); err != nil {
			return fmt.Errorf("disk: apply snapshot marker (bug): %w", err)
		}
		if b.mk.keep {
			s.cache.trimBefore(b.mk.meta.Index + 1)
		} else {
			s.cache.reset()
		}
	}
	if len(b.ents) == 0 {
		return nil
	}
	var cached []core.Entry
	if s.cache.max > 0 {
		cached = make([]core.Entry, len(b.ents))
	}
	for k := range b.ents {
		pe := &b.ents[k]
		if err := s.st.applyEntry(pe.index, pe.term, seq, uint32(base)+pe.recOff); err != nil {
			return fmt.Errorf("disk: apply entry (bug): %w", err)
		}
		if cached != nil {
			var data []byte
			if pe.dataLen > 0 {
				end := pe.dataOff + pe.dataLen
				// Full slice expression: an append by a reader cannot
				// spill into the next record.
				data = b.buf[pe.dataOff:end:end]
			}
			cached[k] = core.Entry{Index: pe.index, Term: pe.term, Type: pe.typ, Data: data}
		}
	}
	s.cache.append(cached)
	return nil
}

// createSegment creates segment seq and returns it with the bytes to write
// at its start: its checkpoint (the state after every earlier record)
// followed by first. Only the write-token holder calls it.
func (s *Store) createSegment(seq uint64, first []byte) (*segment, vfs.File, []byte, error) {
	cp := checkpoint{
		segSeq:       seq,
		nextBatchSeq: s.nextBatchSeq,
		last:         s.st.last,
		hs:           s.st.hs,
		snap:         s.st.snap,
	}
	buf := make([]byte, 0, checkpointRecordBytes(&cp)+len(first))
	buf = appendCheckpointRecord(buf, &cp)
	cpEnd := int64(len(buf))
	buf = append(buf, first...)
	path := filepath.Join(s.walDir, segmentName(seq))
	f, err := createFile(s.fs, path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("disk: create segment: %w", err)
	}
	return &segment{seq: seq, path: path, cpEnd: cpEnd, size: cpEnd}, f, buf, nil
}
