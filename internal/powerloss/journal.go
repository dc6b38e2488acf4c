package powerloss

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The undo journal is a plain file: a magic header, then records framed
// as [u32 payload length][u32 CRC-32C of the payload][payload]. A record
// is appended with one write before the mutation it undoes is made, so
// after kill -9 (page cache kept) every mutation that happened has its
// record; the last record may be torn (a write cut short by the kill),
// and then its mutation never started. Anything else that does not parse
// is corruption and is reported with its offset.

const journalMagic = "RAFTYPL1"

// Limits of one record. Writes are journaled in chunks of writeChunkBytes
// so no record holds more than that of old data, except a truncation,
// which holds the bytes it cuts off, at most maxTruncateUndoBytes.
const (
	writeChunkBytes      = 1 << 20
	maxTruncateUndoBytes = 64 << 20
	maxPathBytes         = 4096
	maxRecordBytes       = maxTruncateUndoBytes + 4*maxPathBytes + 256
)

type recKind uint8

const (
	recWrite    recKind = 1 + iota // bytes written in a file; undo restores old bytes and size
	recTruncate                    // a file's size set; undo restores size and the bytes cut off
	recCreate                      // a file created (replacing the one in grave, if any)
	recRemove                      // a file (its content in grave) or an empty directory removed
	recRename                      // from renamed to to (replacing the file in grave, if any)
	recLink                        // to made a hard link of from
	recMkdir                       // a directory created
	recSynced                      // marker: a sync made the records before seq off durable (of file dev/ino, or of directory path)
	recDead                        // marker: file dev/ino is durably gone; its data records before seq off no longer matter
)

func (k recKind) String() string {
	switch k {
	case recWrite:
		return "write"
	case recTruncate:
		return "truncate"
	case recCreate:
		return "create"
	case recRemove:
		return "remove"
	case recRename:
		return "rename"
	case recLink:
		return "link"
	case recMkdir:
		return "mkdir"
	case recSynced:
		return "synced"
	case recDead:
		return "dead"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// record is one undo record. Which fields are used depends on kind.
type record struct {
	kind recKind
	seq  uint64
	// File data records (write, truncate): the file's identity, which
	// survives renames and restarts, and its path when written.
	dev, ino uint64
	path     string // write, truncate, create, remove, mkdir; rename's and link's source
	to       string // rename's and link's target
	grave    string // a hard link (or copy) of a replaced or removed file; "" if none
	isDir    bool   // remove: the path was an (empty) directory
	off      uint64 // write: where; truncate: the new size
	n        uint64 // write: how many bytes were written
	oldSize  uint64 // write, truncate: the file's size before
	old      []byte // write: the bytes [off, min(off+n, oldSize)) before; truncate: [off, oldSize)
}

// isMarker reports whether r is a marker rather than an undo record.
func (r *record) isMarker() bool { return r.kind == recSynced || r.kind == recDead }

// isData reports whether r undoes file contents (as opposed to directory
// entries).
func (r *record) isData() bool { return r.kind == recWrite || r.kind == recTruncate }

func (r *record) marshal() []byte {
	b := make([]byte, 8, 8+64+len(r.path)+len(r.to)+len(r.grave)+len(r.old))
	b = append(b, byte(r.kind))
	b = binary.LittleEndian.AppendUint64(b, r.seq)
	b = binary.LittleEndian.AppendUint64(b, r.dev)
	b = binary.LittleEndian.AppendUint64(b, r.ino)
	b = binary.LittleEndian.AppendUint64(b, r.off)
	b = binary.LittleEndian.AppendUint64(b, r.n)
	b = binary.LittleEndian.AppendUint64(b, r.oldSize)
	flag := byte(0)
	if r.isDir {
		flag = 1
	}
	b = append(b, flag)
	for _, s := range []string{r.path, r.to, r.grave} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.old)))
	b = append(b, r.old...)
	payload := b[8:]
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, crcTable))
	return b
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errBadRecord = errors.New("malformed record")

func unmarshal(p []byte) (*record, error) {
	const fixed = 1 + 6*8 + 1
	if len(p) < fixed {
		return nil, errBadRecord
	}
	r := &record{kind: recKind(p[0])}
	if r.kind < recWrite || r.kind > recDead {
		return nil, fmt.Errorf("%w: unknown kind %d", errBadRecord, p[0])
	}
	u := func(i int) uint64 { return binary.LittleEndian.Uint64(p[1+8*i:]) }
	r.seq, r.dev, r.ino, r.off, r.n, r.oldSize = u(0), u(1), u(2), u(3), u(4), u(5)
	switch p[fixed-1] {
	case 0:
	case 1:
		r.isDir = true
	default:
		return nil, fmt.Errorf("%w: bad flags", errBadRecord)
	}
	p = p[fixed:]
	field := func(limit uint64) ([]byte, error) {
		l, k := binary.Uvarint(p)
		if k <= 0 || l > limit || l > uint64(len(p)-k) {
			return nil, fmt.Errorf("%w: bad field length", errBadRecord)
		}
		f := p[k : k+int(l)]
		p = p[k+int(l):]
		return f, nil
	}
	for _, s := range []*string{&r.path, &r.to, &r.grave} {
		f, err := field(maxPathBytes)
		if err != nil {
			return nil, err
		}
		*s = string(f)
	}
	old, err := field(maxTruncateUndoBytes)
	if err != nil {
		return nil, err
	}
	r.old = append([]byte(nil), old...)
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(p))
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return r, nil
}

// validate checks a decoded record's fields against each other, so that
// replaying it cannot overflow or write outside what it describes.
func (r *record) validate() error {
	bad := func(what string) error { return fmt.Errorf("%w: %s record: %s", errBadRecord, r.kind, what) }
	if r.isMarker() {
		if r.off > r.seq || (r.isDir && r.path == "") {
			return bad("bad marker")
		}
		return nil
	}
	if r.path == "" {
		return bad("empty path")
	}
	switch r.kind {
	case recWrite:
		if r.n == 0 || r.n > writeChunkBytes || r.off > 1<<62 {
			return bad("write length or offset out of range")
		}
		want := uint64(0)
		if r.off < r.oldSize {
			want = min(r.n, r.oldSize-r.off)
		}
		if uint64(len(r.old)) != want {
			return bad("old bytes do not match the range")
		}
	case recTruncate:
		if r.oldSize > 1<<62 || r.off > 1<<62 {
			return bad("size out of range")
		}
		want := uint64(0)
		if r.off < r.oldSize {
			want = r.oldSize - r.off
		}
		if uint64(len(r.old)) != want {
			return bad("old bytes do not match the sizes")
		}
	case recRename, recLink:
		if r.to == "" {
			return bad("empty target")
		}
	}
	return nil
}

// journalEntry is a parsed record and where it is in the journal.
type journalEntry struct {
	rec      *record
	off, len int64
}

// readJournal parses the journal at path. It returns the records and the
// length of the valid prefix: a torn last record is left out. A missing
// journal has no records.
func readJournal(path string) ([]journalEntry, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	if size == 0 {
		return nil, 0, nil
	}
	magic := make([]byte, len(journalMagic))
	if _, err := io.ReadFull(f, magic); err != nil {
		if size < int64(len(journalMagic)) {
			return nil, 0, nil // torn header: nothing was journaled
		}
		return nil, 0, fmt.Errorf("powerloss: journal %s: %w", path, err)
	}
	if string(magic) != journalMagic {
		return nil, 0, fmt.Errorf("powerloss: journal %s: bad magic at offset 0", path)
	}
	var out []journalEntry
	off := int64(len(journalMagic))
	var hdr [8]byte
	for off < size {
		if size-off < 8 {
			return out, off, nil // torn header
		}
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return nil, 0, fmt.Errorf("powerloss: journal %s at offset %d: %w", path, off, err)
		}
		l := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if l > maxRecordBytes {
			return nil, 0, fmt.Errorf("powerloss: journal %s at offset %d: record length %d over the limit %d", path, off, l, maxRecordBytes)
		}
		if off+8+l > size {
			return out, off, nil // torn payload
		}
		p := make([]byte, l)
		if _, err := f.ReadAt(p, off+8); err != nil {
			return nil, 0, fmt.Errorf("powerloss: journal %s at offset %d: %w", path, off, err)
		}
		if crc32.Checksum(p, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			if off+8+l == size {
				return out, off, nil // a torn last record
			}
			return nil, 0, fmt.Errorf("powerloss: journal %s: checksum mismatch in the record at offset %d", path, off)
		}
		r, err := unmarshal(p)
		if err != nil {
			return nil, 0, fmt.Errorf("powerloss: journal %s at offset %d: %w", path, off, err)
		}
		if len(out) > 0 && r.seq <= out[len(out)-1].rec.seq {
			return nil, 0, fmt.Errorf("powerloss: journal %s at offset %d: sequence %d after %d", path, off, r.seq, out[len(out)-1].rec.seq)
		}
		out = append(out, journalEntry{rec: r, off: off, len: 8 + l})
		off += 8 + l
	}
	return out, off, nil
}
