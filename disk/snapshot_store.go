package disk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// Snapshot file layout (integers little endian):
//
//	0      "RFTYSNAP"                         magic, 8 bytes
//	8      uint32 version (2; 1 is still read)
//	12     uint32 h: header length
//	16     header: index u64, term u64, membership length u32, membership
//	       (core.Membership.Marshal); version 1: index u64, term u64,
//	       3 × (count u32, IDs u64), no names, addresses or HighestID
//	16+h   uint32 CRC-32C of bytes [8, 16+h)
//	20+h   data, n bytes
//	end-12 uint64 n, uint32 CRC-32C of the data
//
// A file is valid when the magic, version, header CRC, the name
// (<index>-<term>.snap, 16 hex digits each) matching the header, the size
// (20+h+n+12) and the data CRC all agree.
const (
	snapMagic         = "RFTYSNAP"
	snapVersion       = 2
	snapVersionLegacy = 1
	snapSuffix        = ".snap"
	snapTempPrefix    = "tmp-"
	snapPrefixBytes   = 16
	snapTrailerBytes  = 12
	snapRetainedFiles = 2 // the newest valid snapshot plus one older fallback

	// MaxSnapshotHeaderBytes bounds the metadata header of a snapshot file
	// (about 130,000 node IDs), so a corrupt length cannot cause a huge
	// allocation.
	MaxSnapshotHeaderBytes = 1 << 20
)

// SnapshotStore keeps state-machine snapshots as files in one directory:
// written under a temporary name, synced, renamed, and the directory synced,
// so a crash leaves either the old set or the new set. It keeps the newest
// snapshot and one older as a fallback in case the newest proves damaged.
// Data is streamed in and out; no snapshot is ever held in memory. Safe for
// concurrent use.
type SnapshotStore struct {
	fs     vfs.FS
	dir    string
	logger *slog.Logger

	mu      sync.Mutex
	corrupt map[string]bool // files OpenLatest found damaged
}

// OpenSnapshotStore opens (creating if needed) the snapshot directory dir
// on the operating system's file system and removes temporary files left
// by a crash. logger may be nil. It takes no lock: Store.Snapshots gives
// the one under the Store's directory lock.
func OpenSnapshotStore(dir string, logger *slog.Logger) (*SnapshotStore, error) {
	return OpenSnapshotStoreFS(vfs.Default, dir, logger)
}

// OpenSnapshotStoreFS is OpenSnapshotStore on the file system fsys (see
// Options.FS).
func OpenSnapshotStoreFS(fsys vfs.FS, dir string, logger *slog.Logger) (*SnapshotStore, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := mkdirDurable(fsys, dir); err != nil {
		return nil, err
	}
	names, err := fsys.List(dir)
	if err != nil {
		return nil, fmt.Errorf("disk: list snapshots: %w", err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, snapTempPrefix) {
			path := filepath.Join(dir, name)
			logger.Warn("disk: removing unfinished snapshot", "file", path)
			if err := fsys.Remove(path); err != nil {
				return nil, fmt.Errorf("disk: remove unfinished snapshot: %w", err)
			}
		}
	}
	return &SnapshotStore{fs: fsys, dir: dir, logger: logger, corrupt: map[string]bool{}}, nil
}

// Dir returns the snapshot directory.
func (ss *SnapshotStore) Dir() string { return ss.dir }

func snapName(index, term uint64) string {
	return fmt.Sprintf("%016x-%016x%s", index, term, snapSuffix)
}

func parseSnapName(name string) (index, term uint64, ok bool) {
	base, ok := strings.CutSuffix(name, snapSuffix)
	if !ok || len(base) != 33 || base[16] != '-' {
		return 0, 0, false
	}
	index, err1 := strconv.ParseUint(base[:16], 16, 64)
	term, err2 := strconv.ParseUint(base[17:], 16, 64)
	return index, term, err1 == nil && err2 == nil
}

// snapFile is a snapshot file found by name.
type snapFile struct {
	name        string
	index, term uint64
}

// list returns the snapshot files, newest (highest index, then term) first.
func (ss *SnapshotStore) list() ([]snapFile, error) {
	names, err := ss.fs.List(ss.dir)
	if err != nil {
		return nil, fmt.Errorf("disk: list snapshots: %w", err)
	}
	var out []snapFile
	for _, name := range names {
		if i, t, ok := parseSnapName(name); ok {
			out = append(out, snapFile{name, i, t})
		}
	}
	slices.SortFunc(out, func(a, b snapFile) int { return strings.Compare(b.name, a.name) })
	return out, nil
}

// Create starts writing a snapshot described by meta. Write the data, then
// Commit (or Abort). meta.Index must be > 0 and not below the newest stored
// snapshot.
func (ss *SnapshotStore) Create(meta core.SnapshotMeta) (*SnapshotWriter, error) {
	if meta.Index == 0 {
		return nil, fmt.Errorf("disk: snapshot index 0: %w", ErrInvalidArgument)
	}
	if err := checkSnapshotMeta(meta); err != nil {
		return nil, fmt.Errorf("disk: create snapshot: %w: %w", ErrInvalidArgument, err)
	}
	hlen := snapshotMetaBytes(meta)
	if hlen > MaxSnapshotHeaderBytes {
		return nil, fmt.Errorf("disk: snapshot header of %d bytes, over MaxSnapshotHeaderBytes %d: %w", hlen, MaxSnapshotHeaderBytes, ErrTooLarge)
	}
	files, err := ss.list()
	if err != nil {
		return nil, err
	}
	if len(files) > 0 && meta.Index < files[0].index {
		return nil, fmt.Errorf("disk: snapshot %d is older than the stored snapshot %d: %w", meta.Index, files[0].index, ErrInvalidArgument)
	}
	tmp := filepath.Join(ss.dir, fmt.Sprintf("%s%016x", snapTempPrefix, rand.Uint64()))
	f, err := createFile(ss.fs, tmp)
	if err != nil {
		return nil, fmt.Errorf("disk: create snapshot: %w", err)
	}
	version, body := uint32(snapVersion), appendSnapshotMeta(make([]byte, 0, hlen), meta)
	if writeLegacyForTest.Load() {
		version, body = snapVersionLegacy, appendLegacySnapshotMeta(nil, meta)
	}
	hdr := make([]byte, 0, snapPrefixBytes+len(body)+4)
	hdr = append(hdr, snapMagic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, version)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(body)))
	hdr = append(hdr, body...)
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.Checksum(hdr[8:], crcTable))
	w := &SnapshotWriter{ss: ss, f: f, path: tmp, meta: meta, bw: bufio.NewWriterSize(f, 256<<10), crc: crc32.New(crcTable)}
	if _, err := w.bw.Write(hdr); err != nil {
		w.Abort()
		return nil, fmt.Errorf("disk: write snapshot header: %w", err)
	}
	return w, nil
}

// SnapshotSink is the interface CreateSnapshot returns: a SnapshotWriter
// seen through its methods. It is a type literal (an alias, not a named
// type) so that it is identical to driver.SnapshotWriter, which lets
// SnapshotStore implement driver.SnapshotStore without disk importing the
// driver.
type SnapshotSink = interface {
	io.Writer
	Sync() error
	Commit() error
	Abort() error
}

// CreateSnapshot is Create returning the writer as a SnapshotSink; it is
// the method driver.SnapshotStore consumes.
func (ss *SnapshotStore) CreateSnapshot(meta core.SnapshotMeta) (SnapshotSink, error) {
	w, err := ss.Create(meta)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// SnapshotWriter streams one snapshot's data to a temporary file. It is not
// safe for concurrent use.
type SnapshotWriter struct {
	ss   *SnapshotStore
	f    vfs.File
	path string // the temporary file
	meta core.SnapshotMeta
	bw   *bufio.Writer
	crc  hash.Hash32
	n    uint64
	err  error // sticky
	done bool
}

// Write appends p to the snapshot data.
func (w *SnapshotWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, fmt.Errorf("disk: snapshot writer already finished: %w", ErrInvalidArgument)
	}
	if w.err != nil {
		return 0, w.err
	}
	// Copy through the buffer in pieces that fit: bufio hands a large
	// write straight to the file, and vfs.File.Write may modify what it is
	// given, which an io.Writer must never do to its caller's bytes.
	var n int
	for n < len(p) {
		if w.bw.Available() == 0 {
			if err := w.bw.Flush(); err != nil {
				w.err = fmt.Errorf("disk: write snapshot: %w", err)
				break
			}
		}
		k, _ := w.bw.Write(p[n : n+min(len(p)-n, w.bw.Available())])
		w.crc.Write(p[n : n+k])
		n += k
	}
	w.n += uint64(n)
	return n, w.err
}

// Sync writes buffered data to the temporary file and fsyncs it, so that a
// later Commit has little left to make durable (the trailer, the rename).
// The snapshot is still invisible, and a crash still discards it. Optional.
func (w *SnapshotWriter) Sync() error {
	if w.done {
		return fmt.Errorf("disk: snapshot writer already finished: %w", ErrInvalidArgument)
	}
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("disk: write snapshot: %w", err)
		return w.err
	}
	if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("disk: sync snapshot: %w", err)
		return w.err
	}
	return nil
}

// Commit writes the trailer, syncs the file, renames it into place, syncs
// the directory and then deletes all but the newest two snapshots. After
// Commit returns nil the snapshot survives a crash.
func (w *SnapshotWriter) Commit() error {
	if w.done {
		return fmt.Errorf("disk: snapshot writer already finished: %w", ErrInvalidArgument)
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	var tr [snapTrailerBytes]byte
	binary.LittleEndian.PutUint64(tr[0:], w.n)
	binary.LittleEndian.PutUint32(tr[8:], w.crc.Sum32())
	err := func() error {
		if _, err := w.bw.Write(tr[:]); err != nil {
			return err
		}
		if err := w.bw.Flush(); err != nil {
			return err
		}
		return w.f.Sync()
	}()
	if err != nil {
		w.Abort()
		return fmt.Errorf("disk: finish snapshot: %w", err)
	}
	w.done = true
	tmp := w.path
	if err := w.f.Close(); err != nil {
		ss := w.ss
		ss.fs.Remove(tmp)
		return fmt.Errorf("disk: close snapshot: %w", err)
	}
	ss := w.ss
	ss.mu.Lock()
	defer ss.mu.Unlock()
	name := snapName(w.meta.Index, w.meta.Term)
	if err := ss.fs.Rename(tmp, filepath.Join(ss.dir, name)); err != nil {
		ss.fs.Remove(tmp)
		return fmt.Errorf("disk: rename snapshot into place: %w", err)
	}
	if err := syncDir(ss.fs, ss.dir); err != nil {
		return err
	}
	delete(ss.corrupt, name)
	return ss.retain(name)
}

// retain deletes every snapshot but name (just committed) and the newest
// older one not known to be damaged.
func (ss *SnapshotStore) retain(name string) error {
	files, err := ss.list()
	if err != nil {
		return err
	}
	kept := 1
	var errs []error
	removed := false
	for _, f := range files {
		if f.name == name {
			continue
		}
		if f.name < name && kept < snapRetainedFiles && !ss.corrupt[f.name] {
			kept++
			continue
		}
		if f.name > name {
			continue // newer than the committed one: Create refuses that, leave it
		}
		if err := ss.fs.Remove(filepath.Join(ss.dir, f.name)); err != nil {
			errs = append(errs, fmt.Errorf("disk: remove old snapshot: %w", err))
			continue
		}
		delete(ss.corrupt, f.name)
		removed = true
	}
	if removed {
		errs = append(errs, syncDir(ss.fs, ss.dir))
	}
	return errors.Join(errs...)
}

// Abort discards the snapshot being written. It is safe after Commit or a
// previous Abort (then it does nothing).
func (w *SnapshotWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := w.ss.fs.Remove(w.path); err != nil {
		return fmt.Errorf("disk: abort snapshot: %w", err)
	}
	return nil
}

// OpenLatest returns the newest valid snapshot's metadata and a reader of
// its data. Each candidate is verified in full (streamed through its CRC)
// before it is returned; a damaged newer one is logged and skipped for the
// older one. The reader checks the CRC again as it streams and fails at the
// end instead of returning io.EOF if the data changed since. It returns
// ErrNoSnapshot if there is no snapshot file, and a *CorruptionError
// listing every file if there are snapshots but none is valid.
func (ss *SnapshotStore) OpenLatest() (core.SnapshotMeta, io.ReadCloser, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	files, err := ss.list()
	if err != nil {
		return core.SnapshotMeta{}, nil, err
	}
	if len(files) == 0 {
		return core.SnapshotMeta{}, nil, ErrNoSnapshot
	}
	var errs []error
	for _, sf := range files {
		path := filepath.Join(ss.dir, sf.name)
		meta, rc, err := ss.openSnapshotFile(path, sf)
		if err == nil {
			return meta, rc, nil
		}
		var ce *CorruptionError
		if !errors.As(err, &ce) {
			return core.SnapshotMeta{}, nil, err // I/O trouble: do not fall back silently
		}
		ss.corrupt[sf.name] = true
		ss.logger.Error("disk: skipping damaged snapshot", "file", path, "err", err)
		errs = append(errs, err)
	}
	return core.SnapshotMeta{}, nil, fmt.Errorf("disk: no valid snapshot in %s: %w", ss.dir, errors.Join(errs...))
}

// OpenSnapshot opens the snapshot with the given index and term. Unlike
// OpenLatest it does not read the file through first: the framing (magic,
// version, header CRC, name, length) is checked at once and the data CRC
// as the data streams, so the reader fails instead of returning io.EOF if
// the data is damaged. It returns ErrNoSnapshot if there is no such file.
func (ss *SnapshotStore) OpenSnapshot(index, term uint64) (core.SnapshotMeta, io.ReadCloser, error) {
	sf := snapFile{name: snapName(index, term), index: index, term: term}
	path := filepath.Join(ss.dir, sf.name)
	f, err := ss.fs.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return core.SnapshotMeta{}, nil, fmt.Errorf("disk: snapshot %d/%d: %w", term, index, ErrNoSnapshot)
	}
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("disk: open snapshot: %w", err)
	}
	meta, dataOff, n, crc, err := readSnapshotFraming(f, path, sf)
	if err != nil {
		f.Close()
		return core.SnapshotMeta{}, nil, err
	}
	return meta, newSnapshotReader(f, path, dataOff, n, crc), nil
}

// ListSnapshots returns the metadata of the stored snapshots, newest
// first. Each file's framing is checked (magic, version, header CRC, name,
// length) but not its data, which OpenLatest and the readers verify; a file
// with damaged framing is logged and left out.
func (ss *SnapshotStore) ListSnapshots() ([]core.SnapshotMeta, error) {
	files, err := ss.list()
	if err != nil {
		return nil, err
	}
	var out []core.SnapshotMeta
	for _, sf := range files {
		path := filepath.Join(ss.dir, sf.name)
		f, err := ss.fs.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("disk: open snapshot: %w", err)
		}
		meta, _, _, _, err := readSnapshotFraming(f, path, sf)
		f.Close()
		var ce *CorruptionError
		switch {
		case errors.As(err, &ce):
			ss.logger.Error("disk: skipping damaged snapshot", "file", path, "err", err)
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, meta)
	}
	return out, nil
}

// openSnapshotFile verifies the file and returns a reader of its data.
func (ss *SnapshotStore) openSnapshotFile(path string, sf snapFile) (core.SnapshotMeta, io.ReadCloser, error) {
	f, err := ss.fs.Open(path)
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("disk: open snapshot: %w", err)
	}
	meta, dataOff, n, crc, err := readSnapshotFraming(f, path, sf)
	if err == nil {
		// Full pass: a bit flip anywhere must be found before we commit
		// to this snapshot rather than the fallback.
		h := crc32.New(crcTable)
		if _, err = io.Copy(h, io.NewSectionReader(f, dataOff, int64(n))); err != nil {
			err = fmt.Errorf("disk: read snapshot %s: %w", path, err)
		} else if h.Sum32() != crc {
			err = corruptf(path, dataOff, "snapshot data CRC-32C mismatch (stored %#08x, computed %#08x)", crc, h.Sum32())
		}
	}
	if err != nil {
		f.Close()
		return core.SnapshotMeta{}, nil, err
	}
	return meta, newSnapshotReader(f, path, dataOff, n, crc), nil
}

func newSnapshotReader(f vfs.File, path string, dataOff int64, n uint64, crc uint32) *snapshotReader {
	return &snapshotReader{
		f:    f,
		r:    bufio.NewReaderSize(io.NewSectionReader(f, dataOff, int64(n)), 256<<10),
		left: n, want: crc, crc: crc32.New(crcTable), path: path, off: dataOff,
	}
}

// readSnapshotFraming checks everything but the data CRC and returns the
// metadata, the data's offset and length, and its stored CRC.
func readSnapshotFraming(f vfs.File, path string, sf snapFile) (core.SnapshotMeta, int64, uint64, uint32, error) {
	fail := func(off int64, format string, args ...any) (core.SnapshotMeta, int64, uint64, uint32, error) {
		return core.SnapshotMeta{}, 0, 0, 0, corruptf(path, off, format, args...)
	}
	fi, err := f.Stat()
	if err != nil {
		return core.SnapshotMeta{}, 0, 0, 0, fmt.Errorf("disk: stat snapshot: %w", err)
	}
	size := fi.Size()
	var pre [snapPrefixBytes]byte
	if size < snapPrefixBytes+4+snapTrailerBytes {
		return fail(0, "snapshot file of %d bytes is too short", size)
	}
	if _, err := f.ReadAt(pre[:], 0); err != nil {
		return core.SnapshotMeta{}, 0, 0, 0, fmt.Errorf("disk: read snapshot: %w", err)
	}
	if string(pre[:8]) != snapMagic {
		return fail(0, "not a snapshot file (bad magic)")
	}
	version := binary.LittleEndian.Uint32(pre[8:])
	if version != snapVersion && version != snapVersionLegacy {
		return fail(8, "snapshot format version %d, this build reads %d and %d", version, snapVersionLegacy, snapVersion)
	}
	hlen := binary.LittleEndian.Uint32(pre[12:])
	if hlen > MaxSnapshotHeaderBytes || int64(hlen) > size-snapPrefixBytes-4-snapTrailerBytes {
		return fail(12, "snapshot header length %d is impossible for a %d-byte file (limit %d)", hlen, size, MaxSnapshotHeaderBytes)
	}
	hdr := make([]byte, snapPrefixBytes+int(hlen)+4)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return core.SnapshotMeta{}, 0, 0, 0, fmt.Errorf("disk: read snapshot: %w", err)
	}
	hend := snapPrefixBytes + int(hlen)
	if crc32.Checksum(hdr[8:hend], crcTable) != binary.LittleEndian.Uint32(hdr[hend:]) {
		return fail(0, "snapshot header CRC-32C mismatch")
	}
	decode := decodeSnapshotMeta
	if version == snapVersionLegacy {
		decode = decodeLegacySnapshotMeta
	}
	meta, rest, err := decode(hdr[snapPrefixBytes:hend])
	if err == nil && len(rest) != 0 {
		err = fmt.Errorf("%d trailing bytes", len(rest))
	}
	if err != nil {
		return fail(snapPrefixBytes, "bad snapshot header: %v", err)
	}
	if meta.Index != sf.index || meta.Term != sf.term {
		return fail(snapPrefixBytes, "header says snapshot %d/%d, the name says %d/%d", meta.Index, meta.Term, sf.index, sf.term)
	}
	var tr [snapTrailerBytes]byte
	if _, err := f.ReadAt(tr[:], size-snapTrailerBytes); err != nil {
		return core.SnapshotMeta{}, 0, 0, 0, fmt.Errorf("disk: read snapshot: %w", err)
	}
	dataOff := int64(hend + 4)
	n := binary.LittleEndian.Uint64(tr[0:])
	if n != uint64(size-dataOff-snapTrailerBytes) {
		return fail(size-snapTrailerBytes, "trailer says %d data bytes, the file holds %d (torn or truncated)", n, size-dataOff-snapTrailerBytes)
	}
	return meta, dataOff, n, binary.LittleEndian.Uint32(tr[8:]), nil
}

// snapshotReader streams snapshot data and verifies its CRC at the end.
type snapshotReader struct {
	f     vfs.File
	r     io.Reader
	left  uint64
	crc   hash.Hash32
	want  uint32
	path  string
	off   int64
	final error
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	if r.final != nil {
		return 0, r.final
	}
	if r.left == 0 {
		r.final = io.EOF
		if r.crc.Sum32() != r.want {
			r.final = corruptf(r.path, r.off, "snapshot data CRC-32C mismatch while reading")
		}
		return 0, r.final
	}
	if uint64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.crc.Write(p[:n])
	r.left -= uint64(n)
	if err == io.EOF {
		if r.left > 0 {
			r.final = fmt.Errorf("disk: snapshot %s shrank while reading: %w", r.path, io.ErrUnexpectedEOF)
			return n, r.final
		}
		err = nil
	}
	return n, err
}

func (r *snapshotReader) Close() error { return r.f.Close() }
