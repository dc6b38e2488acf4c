package disk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Directory layout under the data directory given to Open.
const (
	walDirName    = "wal"
	snapDirName   = "snap"
	segmentSuffix = ".wal"
)

// segmentName is the file name of segment seq: 16 lower-case hex digits,
// so lexical order is numeric order.
func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentSuffix) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil && seq > 0
}

// segment describes one WAL file. Invariant: size is the end of the last
// complete batch written, which is durable; bytes past it are never read
// except by recovery. In the
// active segment they are zeros up to Store.zeroedTo (preallocated
// space); in a sealed segment they are zeros, or a torn tail that
// recovery cut, and the next segment's checkpoint records size.
type segment struct {
	seq   uint64
	path  string
	size  int64
	cpEnd int64 // end of the checkpoint record; size == cpEnd means no batch yet
}

// listSegments returns the sequence numbers of the segment files in dir,
// ascending, split at the last hole in the numbering: live holds the
// segments from the hole on, stale those before it.
//
// Compact removes old segments oldest first and then fsyncs the directory;
// under the crash model any subset of those removals may survive a power
// loss, so a hole can be the trace of an interrupted Compact, and the
// segments before it are ones Compact was deleting. Recovery replays only
// the live ones, whose first checkpoint describes everything before them,
// and still fails if an entry that is not covered by the snapshot was in
// a missing segment (the missingUpTo check), so a hole that lost live data
// is reported, never skipped.
func listSegments(fsys vfs.FS, dir string) (live, stale []uint64, err error) {
	names, err := fsys.List(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("disk: list segments: %w", err)
	}
	var seqs []uint64
	for _, name := range names {
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	for k := len(seqs) - 1; k > 0; k-- {
		if seqs[k] != seqs[k-1]+1 {
			return seqs[k:], seqs[:k], nil
		}
	}
	return seqs, nil, nil
}

// isDecodeErr reports whether err came from record framing rather than I/O:
// only those can be a torn tail.
func isDecodeErr(err error) bool {
	return errors.Is(err, errRecTruncated) || errors.Is(err, errRecTooLong) ||
		errors.Is(err, errRecChecksum) || errors.Is(err, errRecType)
}

// segmentReader reads records sequentially with a fixed-size buffer, for
// recovery. Memory is the buffer plus the largest payload, which is bounded
// by MaxRecordBytes and by the bytes left in the file before it is
// allocated.
type segmentReader struct {
	br         *bufio.Reader
	size       int64
	off        int64 // offset of the next record
	maxPayload int
	hdr        [recordHeaderSize]byte
	payload    []byte
}

const recoveryBufferBytes = 256 << 10

// reset points r at the start of f, keeping its buffers: one reader serves
// every segment of a recovery, so buffers are allocated once.
func (r *segmentReader) reset(f vfs.File, size int64, maxPayload int) {
	if r.br == nil || (r.br.Size() < recoveryBufferBytes && int64(r.br.Size()) < size) {
		// Small files (tests, fuzzing) need no big buffer.
		r.br = bufio.NewReaderSize(f, int(min(recoveryBufferBytes, max(size, 16))))
	}
	r.br.Reset(f)
	r.size, r.off, r.maxPayload = size, 0, maxPayload
}

// next reads the record at r.off, which must end at or before limit. It
// returns io.EOF when r.off == limit. The payload is valid until the next
// call. After an error the reader must not be used again.
func (r *segmentReader) next(limit int64) (recordType, []byte, error) {
	left := limit - r.off
	if left == 0 {
		return recInvalid, nil, io.EOF
	}
	if left < recordHeaderSize {
		return recInvalid, nil, errRecTruncated
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return recInvalid, nil, readErr(err)
	}
	n := binary.LittleEndian.Uint32(r.hdr[4:])
	if int64(n) > left-recordHeaderSize {
		if uint64(n) > uint64(r.maxPayload) {
			return recInvalid, nil, fmt.Errorf("%w: length %d > %d", errRecTooLong, n, r.maxPayload)
		}
		return recInvalid, nil, errRecTruncated
	}
	if uint64(n) > uint64(r.maxPayload) {
		return recInvalid, nil, r.overLimit(n)
	}
	if cap(r.payload) < int(n) {
		r.payload = make([]byte, n)
	}
	p := r.payload[:n]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return recInvalid, nil, readErr(err)
	}
	if err := checkRecord(r.hdr[:], p); err != nil {
		return recInvalid, nil, err
	}
	r.off += recordHeaderSize + int64(n)
	return recordType(r.hdr[8]), p, nil
}

// overLimit handles a length field above MaxRecordBytes that still fits in
// the file. If the CRC over the claimed length matches (streamed, never
// allocated), the record is genuine and the limit was lowered since it was
// written: a configuration error, never a torn tail to cut. Otherwise the
// length is damage.
func (r *segmentReader) overLimit(n uint32) error {
	h := crc32.New(crcTable)
	h.Write(r.hdr[4:])
	if _, err := io.CopyN(h, r.br, int64(n)); err != nil {
		return readErr(err)
	}
	if h.Sum32() != binary.LittleEndian.Uint32(r.hdr[:]) {
		return fmt.Errorf("%w: length %d > %d", errRecTooLong, n, r.maxPayload)
	}
	return fmt.Errorf("valid record with a %d-byte payload exceeds Options.MaxRecordBytes %d (was the limit lowered?): %w",
		n, r.maxPayload, ErrTooLarge)
}

// readErr turns a short read of bytes that Stat said exist into an I/O
// error rather than a torn record: the file changed under us or the device
// failed, neither of which recovery may "fix" by truncating.
func readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("disk: segment shorter than its size: %w", io.ErrUnexpectedEOF)
	}
	return err
}

// scanBatchHeaders calls fn with the offset and contents of every
// CRC-valid batch header record in [from, end) of r, testing every byte
// offset through a 1 MiB window. Recovery uses it only to find evidence
// that would turn a cut into a corruption error (see recovery.go), never
// to accept data: what it finds may lie inside a client's value.
func scanBatchHeaders(r io.ReaderAt, from, end int64, fn func(off int64, bh batchHeader)) error {
	const window = 1 << 20
	buf := make([]byte, min(window, max(end-from, 0)))
	for pos := from; pos+batchRecordBytes <= end; {
		n := int(min(int64(len(buf)), end-pos))
		if _, err := r.ReadAt(buf[:n], pos); err != nil && err != io.EOF {
			return readErr(err)
		}
		for k := 0; k+batchRecordBytes <= n; k++ {
			b := buf[k : k+batchRecordBytes]
			if recordType(b[8]) != recBatch || binary.LittleEndian.Uint32(b[4:]) != batchPayloadSize {
				continue
			}
			if crc32.Checksum(b[4:], crcTable) != binary.LittleEndian.Uint32(b) {
				continue
			}
			bh, _ := decodeBatch(b[recordHeaderSize:])
			fn(pos+int64(k), bh)
		}
		pos += int64(n - batchRecordBytes + 1)
	}
	return nil
}

// isZeroRange reports whether bytes [from, end) of r, which exist, are all
// zero. A short read is an error, as in readErr.
func isZeroRange(r io.ReaderAt, from, end int64) (bool, error) {
	buf := make([]byte, min(readWindowBytes, max(end-from, 0)))
	for pos := from; pos < end; {
		n := int(min(int64(len(buf)), end-pos))
		if _, err := r.ReadAt(buf[:n], pos); err != nil {
			return false, readErr(err)
		}
		if !bytes.Equal(buf[:n], zeroBuf[:n]) {
			return false, nil
		}
		pos += int64(n)
	}
	return true, nil
}

// recordAt reads records at arbitrary offsets of one segment for Entries,
// through a window buffer so that neighbouring records cost one pread.
type recordAt struct {
	r          io.ReaderAt
	path       string
	maxPayload int
	buf        []byte
	bufOff     int64
	n          int // valid bytes in buf
}

const readWindowBytes = 64 << 10

func (ra *recordAt) fill(off int64, need int) error {
	size := max(need, readWindowBytes)
	if cap(ra.buf) < size {
		ra.buf = make([]byte, size)
	}
	ra.buf = ra.buf[:size]
	n, err := ra.r.ReadAt(ra.buf, off)
	if n < need {
		if err == nil || err == io.EOF {
			return corruptf(ra.path, off, "indexed record extends past the end of the file")
		}
		return fmt.Errorf("disk: read %s at offset %d: %w", ra.path, off, err)
	}
	ra.bufOff, ra.n = off, n
	return nil
}

// read returns the verified record at off; the payload aliases the window.
func (ra *recordAt) read(off int64) (recordType, []byte, error) {
	if off < ra.bufOff || off+recordHeaderSize > ra.bufOff+int64(ra.n) {
		if err := ra.fill(off, recordHeaderSize); err != nil {
			return recInvalid, nil, err
		}
	}
	n := binary.LittleEndian.Uint32(ra.buf[off-ra.bufOff+4:])
	if uint64(n) > uint64(ra.maxPayload) {
		return recInvalid, nil, &CorruptionError{File: ra.path, Offset: off, Reason: "bad record", Err: errRecTooLong}
	}
	total := recordHeaderSize + int(n)
	if off+int64(total) > ra.bufOff+int64(ra.n) {
		if err := ra.fill(off, total); err != nil {
			return recInvalid, nil, err
		}
	}
	start := off - ra.bufOff
	typ, p, _, err := decodeRecord(ra.buf[start:start+int64(total)], ra.maxPayload)
	if err != nil {
		return recInvalid, nil, &CorruptionError{File: ra.path, Offset: off, Reason: "bad record", Err: err}
	}
	return typ, p, nil
}
