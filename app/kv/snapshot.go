package kv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/rafty-db/rafty/driver"
)

// Snapshot format (version 1). A stream, written and read record by
// record, so neither side ever holds the whole snapshot in memory:
//
//	header   "RFTYKVS1" | applied index (8 bytes, big-endian)
//	records  uvarint len(key) | key | uvarint len(value) | value
//	         one per user key, in strictly increasing key order; key is
//	         the user key (never empty), value the stored value (mod index
//	         header + bytes, see keys.go)
//	end      0x00 (a zero key length)
//	trailer  record count (8 bytes, big-endian)
//	         | CRC-32C (Castagnoli) of every byte above (4 bytes, big-endian)
//
// Restore accepts exactly this: a stream that is truncated, has trailing
// bytes, a wrong count or checksum, unordered or empty keys, or values
// without a valid header is rejected before the store is touched.

var snapshotMagic = []byte("RFTYKVS1")

const (
	snapshotHeaderLen = 16
	// maxSnapshotField bounds one key or value in a snapshot. Reading
	// grows the buffer only as data actually arrives, so a corrupt length
	// costs no memory; the bound only rejects absurd ones early.
	maxSnapshotField = 1 << 30
	// spool buffer sizes: the writer's must exceed the reader's, so that
	// bufio.Writer always copies what the tee hands it and never passes
	// the reader's buffer to vfs.File.Write (which may modify its input).
	spoolReadBuf  = 64 << 10
	spoolWriteBuf = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot captures the store's state at its applied index and returns a
// source that streams it in the format above: it implements
// driver.StateMachine.Snapshot. Capturing is a Pebble snapshot, O(1); the
// source reads it later, from any goroutine, while Apply (and even
// Restore) go on. Close the source when done; Close on the Store closes
// any still open (a later WriteTo then fails with ErrClosed).
func (s *Store) Snapshot() (driver.SnapshotSource, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	if s.srcClosed {
		return nil, ErrClosed
	}
	snap := s.db.NewSnapshot()
	applied, err := readApplied(snap)
	if err != nil {
		_ = snap.Close()
		return nil, err
	}
	src := &snapshotSource{s: s, snap: snap, applied: applied}
	s.sources[src] = struct{}{}
	return src, nil
}

// WriteSnapshot writes the store's state as of its applied index to w, in
// the format above (Snapshot, WriteTo, Close): a consistent backup of the
// state machine alone. driver.Node.Backup adds the Raft metadata a restore
// needs.
func (s *Store) WriteSnapshot(w io.Writer) error {
	src, err := s.Snapshot()
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = src.WriteTo(w)
	return err
}

// snapshotSource streams a captured Pebble snapshot.
type snapshotSource struct {
	s       *Store
	snap    *pebble.Snapshot // nil once closed
	applied uint64
}

// Applied returns the applied index the source captured.
func (src *snapshotSource) Applied() uint64 { return src.applied }

// WriteTo implements io.WriterTo: it writes the snapshot to w.
func (src *snapshotSource) WriteTo(w io.Writer) (int64, error) {
	s := src.s
	// srcMu (shared) keeps Close from closing the database under the
	// iterator; s.mu is not held, so Restore need not wait for a stream.
	s.srcMu.RLock()
	defer s.srcMu.RUnlock()
	if src.snap == nil || s.srcClosed {
		return 0, ErrClosed
	}
	cw := &countingWriter{w: w}
	sw := newSnapshotWriter(cw, src.applied)
	if err := scanUser(src.snap, sw.add); err != nil {
		return cw.n, fmt.Errorf("kv: writing snapshot: %w", err)
	}
	if err := sw.finish(); err != nil {
		return cw.n, fmt.Errorf("kv: writing snapshot: %w", err)
	}
	return cw.n, nil
}

// Close releases the Pebble snapshot. Idempotent.
func (src *snapshotSource) Close() error {
	s := src.s
	s.srcMu.Lock()
	defer s.srcMu.Unlock()
	if src.snap == nil {
		return nil
	}
	err := src.snap.Close()
	src.snap = nil
	delete(s.sources, src)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readApplied reads the applied index stored in r (0 if none).
func readApplied(r pebble.Reader) (uint64, error) {
	v, closer, err := r.Get(appliedKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("kv: reading applied index: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("kv: stored applied index is %d bytes, want 8: database damaged", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// scanUser calls fn for every user key, in order, with the user key and
// the stored value (both valid only during the call).
func scanUser(r pebble.Reader, fn func(key, stored []byte) error) error {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: userLower, UpperBound: userUpper})
	if err != nil {
		return fmt.Errorf("opening iterator: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("reading value: %w", err)
		}
		if err := fn(userKeyOf(it.Key()), v); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// snapshotWriter encodes a snapshot onto a buffered writer, checksumming
// every byte.
type snapshotWriter struct {
	w     *bufio.Writer
	crc   uint32
	count uint64
	err   error
	tmp   [binary.MaxVarintLen64]byte
}

func newSnapshotWriter(w io.Writer, applied uint64) *snapshotWriter {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 256<<10)}
	var hdr [snapshotHeaderLen]byte
	copy(hdr[:], snapshotMagic)
	binary.BigEndian.PutUint64(hdr[8:], applied)
	sw.write(hdr[:])
	return sw
}

func (sw *snapshotWriter) write(p []byte) {
	if sw.err != nil {
		return
	}
	sw.crc = crc32.Update(sw.crc, castagnoli, p)
	_, sw.err = sw.w.Write(p)
}

func (sw *snapshotWriter) add(key, stored []byte) error {
	sw.write(sw.tmp[:binary.PutUvarint(sw.tmp[:], uint64(len(key)))])
	sw.write(key)
	sw.write(sw.tmp[:binary.PutUvarint(sw.tmp[:], uint64(len(stored)))])
	sw.write(stored)
	sw.count++
	return sw.err
}

func (sw *snapshotWriter) finish() error {
	sw.write([]byte{0})
	var tail [12]byte
	binary.BigEndian.PutUint64(tail[:8], sw.count)
	sw.write(tail[:8])
	binary.BigEndian.PutUint32(tail[8:], sw.crc)
	if sw.err == nil {
		_, sw.err = sw.w.Write(tail[8:]) // the checksum does not cover itself
	}
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	return sw.err
}

// snapshotReader decodes and verifies a snapshot, record by record.
type snapshotReader struct {
	r       *bufio.Reader
	crc     uint32
	applied uint64
	count   uint64
	done    bool
	// key and prev alternate as the current and previous key, to check
	// ordering without allocating.
	key, prev, val []byte
}

func newSnapshotReader(r io.Reader) (*snapshotReader, error) {
	sr := &snapshotReader{r: bufio.NewReaderSize(r, spoolReadBuf)}
	var hdr [snapshotHeaderLen]byte
	if err := sr.readFull(hdr[:]); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	if !bytes.Equal(hdr[:8], snapshotMagic) {
		return nil, fmt.Errorf("not a kv snapshot (magic %q)", hdr[:8])
	}
	sr.applied = binary.BigEndian.Uint64(hdr[8:])
	return sr, nil
}

func (sr *snapshotReader) readFull(p []byte) error {
	if _, err := io.ReadFull(sr.r, p); err != nil {
		return unexpectedEOF(err)
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, p)
	return nil
}

func (sr *snapshotReader) uvarint() (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := sr.r.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		sr.crc = crc32.Update(sr.crc, castagnoli, []byte{b})
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, errors.New("length overflows 64 bits")
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, errors.New("length overflows 64 bits")
}

// readField reads a length-prefixed field into dst (reused), growing it
// only as bytes arrive.
func (sr *snapshotReader) readField(dst []byte, what string) ([]byte, error) {
	n, err := sr.uvarint()
	if err != nil {
		return nil, fmt.Errorf("record %d: %s length: %w", sr.count, what, err)
	}
	if n > maxSnapshotField {
		return nil, fmt.Errorf("record %d: %s length %d exceeds %d", sr.count, what, n, maxSnapshotField)
	}
	dst = dst[:0]
	for n > 0 {
		chunk := int(min(n, 1<<20))
		dst = slices.Grow(dst, chunk)
		if err := sr.readFull(dst[len(dst) : len(dst)+chunk]); err != nil {
			return nil, fmt.Errorf("record %d: %s: %w", sr.count, what, err)
		}
		dst = dst[:len(dst)+chunk]
		n -= uint64(chunk)
	}
	return dst, nil
}

// next returns the next record (valid until the following call), or
// ok=false once the end marker has been read and the trailer verified.
func (sr *snapshotReader) next() (key, stored []byte, ok bool, err error) {
	if sr.done {
		return nil, nil, false, nil
	}
	sr.prev, sr.key = sr.key, sr.prev
	if sr.key, err = sr.readField(sr.key, "key"); err != nil {
		return nil, nil, false, err
	}
	if len(sr.key) == 0 {
		return nil, nil, false, sr.trailer()
	}
	if sr.count > 0 && bytes.Compare(sr.key, sr.prev) <= 0 {
		return nil, nil, false, fmt.Errorf("record %d: key %q does not follow %q", sr.count, trunc(sr.key), trunc(sr.prev))
	}
	if sr.val, err = sr.readField(sr.val, "value"); err != nil {
		return nil, nil, false, err
	}
	if _, _, err := decodeValue(sr.val); err != nil {
		return nil, nil, false, fmt.Errorf("record %d: %w", sr.count, err)
	}
	sr.count++
	return sr.key, sr.val, true, nil
}

func (sr *snapshotReader) trailer() error {
	var cnt [8]byte
	if err := sr.readFull(cnt[:]); err != nil {
		return fmt.Errorf("trailer: %w", err)
	}
	want := sr.crc
	var sum [4]byte
	if _, err := io.ReadFull(sr.r, sum[:]); err != nil {
		return fmt.Errorf("trailer checksum: %w", unexpectedEOF(err))
	}
	if got := binary.BigEndian.Uint64(cnt[:]); got != sr.count {
		return fmt.Errorf("trailer counts %d records, stream held %d", got, sr.count)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("checksum mismatch: trailer says %08x, data hashes to %08x", got, want)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		if err == nil {
			return errors.New("trailing bytes after the snapshot")
		}
		return fmt.Errorf("after trailer: %w", err)
	}
	sr.done = true
	return nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Restore replaces the store's entire state with a snapshot written by
// Snapshot (possibly on another member) and sets the applied index to the
// snapshot's.
//
// The stream is first spooled to a file in the store's directory while
// being verified (framing, order, count, checksum); a bad snapshot is
// rejected with the store unchanged. Then the verified file is installed
// while readers wait: its keys are written into one sstable, the user
// keyspace is cleared, Pebble ingests the table, and a synced batch
// records the applied index (see install). A crash during installation is
// completed by the next OpenStore, from the same file. Memory use is
// bounded by the sstable writer's block buffers, whatever the snapshot's
// size.
func (s *Store) Restore(r io.Reader) error {
	s.mu.RLock()
	err := s.usable()
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	if err := s.spool(r); err != nil {
		return fmt.Errorf("kv: restore: snapshot rejected, state unchanged: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.installSpool(); err != nil {
		// The keyspace may be half replaced: refuse to serve it. The
		// verified snapshot stays on disk and OpenStore installs it.
		s.failed = fmt.Errorf("kv: store unusable until reopened: %w", err)
		return err
	}
	return nil
}

// spool copies r to restoreFile, verifying it on the way, and makes the
// file durable. The file appears under its final name only once complete
// and verified (written as restoreTempFile, then renamed).
func (s *Store) spool(r io.Reader) (err error) {
	tmp := s.fs.PathJoin(s.dir, restoreTempFile)
	f, err := s.fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
		}
		if err != nil {
			_ = s.fs.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, spoolWriteBuf)
	sr, err := newSnapshotReader(io.TeeReader(r, bw))
	if err != nil {
		return err
	}
	for {
		_, _, ok, err := sr.next()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return fmt.Errorf("closing %s: %w", tmp, cerr)
	}
	if err := s.fs.Rename(tmp, s.fs.PathJoin(s.dir, restoreFile)); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}
	return syncDir(s.fs, s.dir)
}

// installSpool replaces the store's contents with restoreFile's and then
// removes the file. The caller holds mu exclusively (or is OpenStore).
// Idempotent: it can be rerun after a crash at any point.
func (s *Store) installSpool() error {
	name := s.fs.PathJoin(s.dir, restoreFile)
	f, err := s.fs.Open(name)
	if err != nil {
		return fmt.Errorf("kv: restore: opening %s: %w", name, err)
	}
	applied, err := s.install(f)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("kv: restore: closing %s: %w", name, cerr)
	}
	if err != nil {
		return err
	}
	// The state is durable (install synced it); the file is no longer
	// needed to finish the restore.
	if err := s.fs.Remove(name); err != nil {
		return fmt.Errorf("kv: restore: removing %s: %w", name, err)
	}
	s.applied.Store(applied)
	s.log.Info("restored snapshot", "applied", applied)
	return nil
}

// install replaces the user keyspace with the snapshot read from f and
// returns its applied index. The keys go into one sstable that Pebble
// ingests (links into the LSM) instead of through batches, its WAL and
// memtable flushes: a joining member writes the data once, which is most of
// what a catch-up by snapshot costs it (issue 14's learner-join figure).
// A range deletion committed first clears the old keys; the ingested table
// gets a later sequence number, so its keys survive it. Idempotent: after a
// crash anywhere, recover reruns it from restoreFile.
func (s *Store) install(f io.Reader) (uint64, error) {
	sr, err := newSnapshotReader(f)
	if err != nil {
		return 0, fmt.Errorf("kv: restore: %w", err)
	}
	table := s.fs.PathJoin(s.dir, restoreTableFile)
	keys, err := s.writeRestoreTable(sr, table)
	if err != nil {
		_ = s.fs.Remove(table)
		return 0, err
	}
	clear := s.db.NewBatch()
	err = clear.DeleteRange(userLower, userUpper, nil)
	if err == nil {
		err = clear.Commit(pebble.NoSync)
	}
	_ = clear.Close()
	if err != nil {
		_ = s.fs.Remove(table)
		return 0, fmt.Errorf("kv: restore: clearing keyspace: %w", err)
	}
	if keys > 0 {
		if err := s.db.Ingest(context.Background(), []string{table}); err != nil {
			_ = s.fs.Remove(table)
			return 0, fmt.Errorf("kv: restore: ingesting %s: %w", table, err)
		}
	}
	// Ingestion linked the table into the LSM (or the snapshot was
	// empty); the name here is no longer needed.
	if err := s.fs.Remove(table); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("kv: restore: removing %s: %w", table, err)
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], sr.applied)
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }()
	if err := b.Set(appliedKey, idx[:], nil); err != nil {
		return 0, fmt.Errorf("kv: restore: recording applied index: %w", err)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("kv: restore: committing: %w", err)
	}
	if s.opts.DisableWAL {
		// Without a WAL, Sync above promised nothing: flush.
		if err := s.db.Flush(); err != nil {
			return 0, fmt.Errorf("kv: restore: flushing: %w", err)
		}
	}
	return sr.applied, nil
}

// writeRestoreTable writes every key of sr, in the snapshot's (verified,
// ascending) order, into a synced sstable at path, and returns how many.
func (s *Store) writeRestoreTable(sr *snapshotReader, path string) (int, error) {
	f, err := s.fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return 0, fmt.Errorf("kv: restore: creating %s: %w", path, err)
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: s.db.FormatMajorVersion().MaxTableFormat(),
	})
	n := 0
	var pk []byte
	for {
		key, stored, ok, err := sr.next()
		if err != nil {
			_ = w.Close()
			return 0, fmt.Errorf("kv: restore: %w", err)
		}
		if !ok {
			break
		}
		pk = appendUserKey(pk[:0], key)
		if err := w.Set(pk, stored); err != nil {
			_ = w.Close()
			return 0, fmt.Errorf("kv: restore: writing %s: %w", path, err)
		}
		n++
	}
	// Close finishes the table and syncs it (Ingest requires a synced
	// file).
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("kv: restore: finishing %s: %w", path, err)
	}
	return n, nil
}
