package disk

import (
	"crypto/rand"
	"encoding/binary"
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
//
// A commit index to record without waiting for an fdatasync goes to
// WriteCommit instead (commit_marker.go).
func (s *Store) Save(hs core.HardState, entries []core.Entry) error {
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

// writeBatch appends b to the WAL and makes it durable, then publishes
// it. Only the write-token holder calls it.
func (s *Store) writeBatch(b *batch) error {
	// Rotate when the batch would push a segment holding batches past
	// SegmentBytes. A batch is never split across segments.
	if seg := s.segs[len(s.segs)-1]; seg.size > seg.cpEnd && seg.size+int64(len(b.buf)) > s.opts.SegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	seg := s.segs[len(s.segs)-1]
	// The header claims what is already durable (syncedEnd) and names the
	// batch before it (prev): recovery.go relies on both.
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
	fillTo := s.fillEnd(len(b.buf), end, s.zeroedTo)
	if err := writeBatchBytes(s.active, seg.path, b.buf, base, fillTo, true); err != nil {
		return err
	}
	s.chain = chain
	s.stats.fsyncs.Add(1)
	s.syncedEnd = end
	if fillTo > end {
		s.stats.zeroFills.Add(1)
	}
	s.zeroedTo = max(s.zeroedTo, end, fillTo)
	s.stats.batches.Add(1)
	s.stats.bytes.Add(uint64(len(b.buf)))
	s.nextBatchSeq++

	// Publish.
	s.mu.Lock()
	defer s.mu.Unlock()
	seg.size = end
	return s.applyBatch(b, seg.seq, base)
}

// rotate seals the active segment and starts the next one. Sealing needs
// the segment durable up to its logical end, because the next segment's
// checkpoint records that end (and the chain value there) and recovery
// requires a sealed segment to hold exactly that log: every batch is
// fdatasynced before the next one is written, so it already is. (Before
// issue 15 a SaveCommitUnsynced batch could be pending here and was synced
// first; nothing writes the WAL without a sync any more.) The zero tail of
// a sealed segment stays in its file; it lies past the recorded end and is
// never read.
//
// Rotation order (each step durable before the next starts):
//
//  1. create the next segment, write its checkpoint, fdatasync it;
//  2. fsync the directory (startSegment);
//  3. only then is a batch written to it.
//
// A crash before step 2 completes leaves the old segment the last one (a
// new file whose checkpoint is torn, or that is missing from the
// directory, is removed or absent: no batch was ever written to it). A
// crash after it leaves a last segment with no batch or a torn tail.
func (s *Store) rotate() error {
	seg := s.segs[len(s.segs)-1]
	if err := s.startSegment(seg.seq+1, seg.size, s.chain); err != nil {
		return err
	}
	s.stats.fsyncs.Add(1)
	s.stats.sealSyncs.Add(1)
	s.stats.dirSyncs.Add(1)
	return nil
}

// startSegment creates segment seq, holding only its checkpoint (the
// state after every batch written so far, with a fresh random salt, and
// the end and chain value of the previous segment's log), makes it and its
// directory entry durable, and makes it the active segment. Only the
// write-token holder calls it, and no batch is in flight.
//
// The checkpoint is durable before any batch is written to the file, so
// recovery can tell a torn creation (nothing but checkpoint bytes in the
// file) from a damaged checkpoint in front of batches.
func (s *Store) startSegment(seq uint64, prevEnd int64, prevChain uint32) error {
	cp := checkpoint{
		segSeq:       seq,
		salt:         newSalt(),
		nextBatchSeq: s.nextBatchSeq,
		last:         s.st.last,
		hs:           s.st.hs,
		prevEnd:      uint64(prevEnd),
		prevChain:    prevChain,
		snap:         s.st.snap,
	}
	if writeLegacyForTest.Load() {
		cp.version = checkpointVersionLegacy
	}
	buf, chain := appendCheckpointRecord(make([]byte, 0, checkpointRecordBytes(&cp)), &cp)
	path := filepath.Join(s.walDir, segmentName(seq))
	f, err := createFile(s.fs, path)
	if err != nil {
		return fmt.Errorf("disk: create segment: %w", err)
	}
	if err := writeBatchBytes(f, path, buf, 0, 0, true); err != nil {
		f.Close()
		return err
	}
	if err := syncDir(s.fs, s.walDir); err != nil {
		f.Close()
		return err
	}
	size := int64(len(buf))
	newSeg := &segment{seq: seq, path: path, cpEnd: size, size: size}
	s.mu.Lock()
	if n := len(s.segs); n > 0 {
		s.st.locs.seal(s.segs[n-1].seq)
	}
	s.segs = append(s.segs, newSeg)
	old := s.active
	s.active = f
	s.mu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil {
			s.logger.Warn("disk: closing sealed segment", "file", s.segs[len(s.segs)-2].path, "err", err)
		}
	}
	s.salt, s.chain = cp.salt, chain
	s.syncedEnd, s.zeroedTo = size, size
	return nil
}

// newSalt returns a random nonzero segment salt. It comes from the
// operating system's generator and is never shown to clients, so a value
// cannot carry a header with the right salt except by a 2^-64 guess.
func newSalt() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:]) // never fails (crypto/rand)
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
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
