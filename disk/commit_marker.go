package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The commit marker: <dir>/wal/commit records the highest commit index
// the driver wrote with WriteCommit (driver.CommitWriter), apart from the
// WAL, so that recording it never waits for a WAL write or fdatasync in
// flight on another goroutine (the asynchronous driver writes it from its
// loop, before applying, while the persister syncs the WAL).
//
// File layout: two slots, at offsets 0 and commitSlotBytes (512: each in
// its own sector), each holding one record of commitRecordBytes:
//
//	[0:8]   magic "RFTYCMIT"
//	[8:12]  format version u32 (commitVersion)
//	[12:16] zero (reserved)
//	[16:24] commit index u64
//	[24:28] CRC-32C (Castagnoli) of bytes [0:24]
//	[28:32] zero
//
// little endian. The rest of the file is zeros. WriteCommit overwrites one
// slot in place with one pwrite, alternating between the two, and never
// syncs; the file and its directory entry are made durable once, when
// Open creates it. The value is the larger index of the valid slots.
//
// Why two slots: a pwrite of 32 bytes into one sector reaches the disk
// whole or not at all on devices with atomic sector writes (the crash
// model of doc.go), but not every device guarantees that. With one slot
// a torn overwrite would destroy the marker and recovery would fall back
// to the WAL's (older) commit index; with two, a torn write damages only
// the slot being written, and the other still holds the previous value,
// which is valid and at most one write older. The cost is nothing: still
// one pwrite of one sector per WriteCommit.
//
// Why it may be lost and that is safe: the marker is never synced after
// its creation, so after a power loss each slot holds any value written
// to it (or the one written at creation). Raft's safety never depends on
// the commit index being durable: a restarted node learns it again from
// the leader, and the driver restarts at max(stored commit, state
// machine's applied index). What recovery must guarantee is only that the
// marker never claims more than the log holds: InitialState clamps it to
// the last durable index (see reportedCommit), and a marker that claimed
// more at Open is logged and rewritten, durably, with the clamped value.
//
// No write path lowers the marker: Raft never truncates a committed entry
// and installs a snapshot only past the commit index, so an index once
// written stays covered by the log or the snapshot; the cap matters only
// for a file that claims more than the log holds.
//
// A slot with a bad magic, CRC or version is ignored with a warning
// naming the file and offset (never a failure that stops the node: the
// marker is an optimization of restart, not data); a slot with a valid
// CRC and a format version newer than this build's fails Open, since a
// newer build may give the record another meaning.
const (
	commitFileName    = "commit"
	commitMagic       = "RFTYCMIT"
	commitVersion     = 1
	commitRecordBytes = 32
	commitSlotBytes   = 512
	commitSlots       = 2
	commitFileBytes   = commitSlots * commitSlotBytes
)

// commitMarker is the open commit file. Its mutex is its own, never wmu:
// WriteCommit must not wait for a WAL write. Lock order: wmu, then
// commitMarker.mu, then Store.mu.
type commitMarker struct {
	mu     sync.Mutex
	f      vfs.File
	path   string
	index  uint64 // highest index recorded in a slot (mu)
	next   int    // slot the next write goes to (mu)
	dirty  bool   // written since the last sync: Close syncs it (mu)
	closed bool   // (mu)
	failed error  // sticky write failure, wraps ErrFailed (mu)
	buf    [commitRecordBytes]byte

	// recorded is index, readable without mu (by InitialState, under
	// Store.mu, which must not take mu).
	recorded atomic.Uint64
}

// encodeCommitRecord fills buf with the record of index.
func encodeCommitRecord(buf *[commitRecordBytes]byte, index uint64) {
	*buf = [commitRecordBytes]byte{}
	copy(buf[0:8], commitMagic)
	binary.LittleEndian.PutUint32(buf[8:12], commitVersion)
	binary.LittleEndian.PutUint64(buf[16:24], index)
	binary.LittleEndian.PutUint32(buf[24:28], crc32.Checksum(buf[0:24], crcTable))
}

// errCommitFuture: a valid commit record of a newer format.
var errCommitFuture = errors.New("commit marker format version")

// decodeCommitRecord returns the index a slot records. A damaged record
// returns an error saying why (to be logged and ignored); a valid record
// of a newer format returns an error wrapping errCommitFuture.
func decodeCommitRecord(p []byte) (uint64, error) {
	if len(p) < commitRecordBytes {
		return 0, fmt.Errorf("slot holds %d bytes, a record is %d (a creation that did not complete)", len(p), commitRecordBytes)
	}
	if !bytes.Equal(p[0:8], []byte(commitMagic)) {
		return 0, fmt.Errorf("bad magic %q", p[0:8])
	}
	if got, want := binary.LittleEndian.Uint32(p[24:28]), crc32.Checksum(p[0:24], crcTable); got != want {
		return 0, fmt.Errorf("bad CRC %#08x, the record's is %#08x", got, want)
	}
	switch v := binary.LittleEndian.Uint32(p[8:12]); {
	case v > commitVersion:
		return 0, fmt.Errorf("%w %d, this build reads version %d", errCommitFuture, v, commitVersion)
	case v != commitVersion:
		return 0, fmt.Errorf("format version %d does not exist", v)
	}
	return binary.LittleEndian.Uint64(p[16:24]), nil
}

// openCommitMarker opens or creates the commit file, once recovery has
// rebuilt the log state (the marker is checked against it). Called from
// Open only.
func (s *Store) openCommitMarker() error {
	c := &s.commit
	c.path = filepath.Join(s.walDir, commitFileName)
	// What the WAL alone recovered: the value a new or rewritten file
	// starts from, and the cap of what the marker may claim.
	walCommit := max(min(s.st.hs.Commit, s.st.last), s.st.snap.Index)
	// Stat first: OpenReadWrite creates a missing file, not durably.
	if _, err := s.fs.Stat(c.path); errors.Is(err, fs.ErrNotExist) {
		return s.createCommitMarker(walCommit)
	} else if err != nil {
		return fmt.Errorf("disk: open commit marker: %w", err)
	}
	f, err := s.fs.OpenReadWrite(c.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("disk: open commit marker: %w", err)
	}
	c.f = f
	var img [commitFileBytes]byte
	n, err := f.ReadAt(img[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("disk: read %s: %w", c.path, err)
	}
	var (
		marker  uint64
		best    = -1
		rewrite bool
	)
	for k := range commitSlots {
		off := k * commitSlotBytes
		idx, err := decodeCommitRecord(img[min(off, n):min(off+commitRecordBytes, n)])
		if errors.Is(err, errCommitFuture) {
			return fmt.Errorf("disk: %s at offset %d: %v: written by a newer build; run that build, "+
				"or move the file aside (the node then restarts from the WAL's commit index): %w", c.path, off, err, ErrFormatVersion)
		}
		if err != nil {
			s.logger.Warn("disk: ignoring a damaged commit marker slot", "file", c.path, "offset", off, "reason", err.Error())
			rewrite = true
			continue
		}
		if best < 0 || idx > marker {
			marker, best = idx, k
		}
	}
	if marker > s.st.last {
		s.logger.Warn("disk: the commit marker records an index past the last durable entry; clamping it",
			"file", c.path, "marker", marker, "last_index", s.st.last)
		marker = s.st.last
		rewrite = true
	}
	if rewrite {
		// Make the corrected value durable, so that a later recovery
		// never reads the damaged or excessive one again.
		marker = max(marker, walCommit)
		if err := c.writeAll(marker); err != nil {
			return err
		}
		if err := syncData(c.f, c.path); err != nil {
			return err
		}
		// A file torn at its creation may lack a durable directory
		// entry too.
		if err := syncDir(s.fs, s.walDir); err != nil {
			return err
		}
		best = 1 // both slots hold marker; write slot 0 next
	}
	c.index, c.next = marker, 1-max(best, 0)
	c.recorded.Store(marker)
	return nil
}

// createCommitMarker creates the commit file holding index in both slots,
// durably (file, then directory), before any WriteCommit.
func (s *Store) createCommitMarker(index uint64) error {
	c := &s.commit
	f, err := createFile(s.fs, c.path)
	if err != nil {
		return err
	}
	c.f = f
	if err := c.writeAll(index); err != nil {
		return err
	}
	if err := syncData(f, c.path); err != nil {
		return err
	}
	if err := syncDir(s.fs, s.walDir); err != nil {
		return err
	}
	c.index, c.next = index, 0
	c.recorded.Store(index)
	return nil
}

// writeAll writes the whole file with both slots holding index.
func (c *commitMarker) writeAll(index uint64) error {
	var img [commitFileBytes]byte
	encodeCommitRecord(&c.buf, index)
	for k := range commitSlots {
		copy(img[k*commitSlotBytes:], c.buf[:])
	}
	if _, err := c.f.WriteAt(img[:], 0); err != nil {
		return fmt.Errorf("disk: write %s: %w", c.path, err)
	}
	return nil
}

// WriteCommit records index as committed (driver.CommitWriter): one
// pwrite of one slot of the commit file, without an fdatasync and without
// waiting for any Save, InstallSnapshot or Compact in flight (it never
// takes the WAL's lock). The write survives a crash of the process (it is
// in the kernel), not necessarily a power loss: see the comment at the top
// of commit_marker.go for why that is safe. InitialState reports it at
// once (as max with the WAL's commit index and the snapshot index). The
// pwrite itself may still wait inside the kernel (on ext4, updating the
// file's mtime joins the journal's running transaction), never for the
// Store's locks or the WAL's fdatasync.
//
// Indexes are non-decreasing: one at or below the index already recorded
// is ignored. An index past LastIndex (an entry not durable yet) is
// refused with ErrInvalidArgument: the commit index written before
// applying must cover only durable entries. A failed write makes later
// WriteCommits fail too (wrapping ErrFailed); the WAL is unaffected.
func (s *Store) WriteCommit(index uint64) error {
	c := &s.commit
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.failed != nil:
		return c.failed
	case index <= c.index:
		return nil
	}
	// Store.mu is only ever held for in-memory work (never across a
	// write or sync), so this does not wait for the WAL either.
	s.mu.RLock()
	last := s.st.last
	s.mu.RUnlock()
	if index > last {
		return fmt.Errorf("disk: WriteCommit(%d): past the last durable index %d: %w", index, last, ErrInvalidArgument)
	}
	encodeCommitRecord(&c.buf, index)
	if _, err := c.f.WriteAt(c.buf[:], int64(c.next*commitSlotBytes)); err != nil {
		c.failed = fmt.Errorf("%w: disk: write %s: %w", ErrFailed, c.path, err)
		return c.failed
	}
	c.index, c.next, c.dirty = index, 1-c.next, true
	c.recorded.Store(index)
	s.stats.commitWrites.Add(1)
	return nil
}

// close syncs the marker if it was written since its last sync (a clean
// shutdown keeps it through a later power loss) and closes the file.
// Later WriteCommits fail with ErrClosed.
func (c *commitMarker) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.f == nil {
		return nil
	}
	var err error
	if c.dirty && c.failed == nil {
		err = syncData(c.f, c.path)
	}
	err = errors.Join(err, c.f.Close())
	c.f = nil
	return err
}

// reportedCommit is the commit index InitialState reports (Store.mu held):
// the larger of the WAL's hard-state commit and the marker, capped at the
// last durable index (it never claims an entry the log does not hold), and
// at least the snapshot index (a snapshot holds only committed state).
func (s *Store) reportedCommit() uint64 {
	return max(min(max(s.st.hs.Commit, s.commit.recorded.Load()), s.st.last), s.st.snap.Index)
}
