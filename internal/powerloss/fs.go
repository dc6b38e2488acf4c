package powerloss

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// DefaultMaxUndoBytes is the default of Options.MaxUndoBytes.
const DefaultMaxUndoBytes = 256 << 20

// compactSlackBytes is how much larger than twice its live records the
// journal may grow before a sync rewrites it with only those.
const compactSlackBytes = 4 << 20

// ErrUndoLimit is returned by a mutation that would make the journal's
// live records exceed Options.MaxUndoBytes: that much data would be
// unsynced at once.
var ErrUndoLimit = errors.New("powerloss: unsynced data over the undo journal's limit (Options.MaxUndoBytes)")

// Options configure an FS.
type Options struct {
	// Journal is the undo journal's path. It must be outside the
	// directories the FS writes to (a power cut leaves it alone), and on
	// the same file system as them (removed and replaced files are kept
	// as hard links in Journal+".graves" until their removal is durable).
	// Required.
	Journal string
	// MaxUndoBytes bounds the journal's live records: the old bytes of
	// ranges overwritten since their file's last sync (appended bytes
	// cost nothing) plus about 100 bytes per mutation. A mutation beyond
	// it fails with ErrUndoLimit. The journal file stays below
	// 2*MaxUndoBytes + 4 MiB (it is rewritten on a sync past that). 0
	// means DefaultMaxUndoBytes.
	MaxUndoBytes int64
}

// FS is a vfs.FS over another one (vfs.Default in kvnode) that journals
// how to undo every mutation not yet made durable by a sync. See the
// package documentation.
type FS struct {
	inner   vfs.FS
	journal string
	graves  string
	maxUndo int64

	mu      sync.Mutex // held across a mutation and its record, so records are in mutation order
	j       *os.File
	jsize   int64
	live    liveSet
	nextSeq uint64
	handles map[string]map[*file]struct{} // open handles by path, to follow renames
	failed  error                         // sticky: the journal could not be written
}

// liveRec is what is kept in memory of a live record: enough to decide
// when it is durable and to copy it when the journal is rewritten (and,
// for Cut, the record itself).
type liveRec struct {
	seq      uint64
	data     bool // a file data record: dropped by a sync of the file
	dev, ino uint64
	dirs     map[string]bool // a directory record: the directories still to sync
	grave    string
	off, len int64 // in the journal
	rec      *record
}

// liveSet is the journal's live records, in sequence order. The FS keeps
// it up to date as it journals; New and Cut rebuild it from the journal by
// replaying the markers, with the same code.
type liveSet struct {
	recs  []*liveRec
	bytes int64
}

func (ls *liveSet) add(lr *liveRec) {
	ls.recs = append(ls.recs, lr)
	ls.bytes += lr.len
}

// filter keeps the records keep says to keep.
func (ls *liveSet) filter(keep func(*liveRec) bool) {
	kept := ls.recs[:0]
	for _, lr := range ls.recs {
		if keep(lr) {
			kept = append(kept, lr)
		} else {
			ls.bytes -= lr.len
		}
	}
	clear(ls.recs[len(kept):])
	ls.recs = kept
}

// synced drops what a sync that started before sequence start made
// durable: data records of file (dev, ino), or with dir != "" the
// directory records of dir whose directories are now all synced. It
// returns the graves of the dropped records.
func (ls *liveSet) synced(start, dev, ino uint64, dir string) (graves []string) {
	ls.filter(func(lr *liveRec) bool {
		if lr.seq >= start {
			return true
		}
		if dir == "" {
			return !(lr.data && lr.dev == dev && lr.ino == ino)
		}
		if lr.data || !lr.dirs[dir] {
			return true
		}
		delete(lr.dirs, dir)
		if len(lr.dirs) > 0 {
			return true
		}
		if lr.grave != "" {
			graves = append(graves, lr.grave)
		}
		return false
	})
	return graves
}

// dead drops the data records before start of file (dev, ino), which is
// durably gone.
func (ls *liveSet) dead(start, dev, ino uint64) {
	ls.filter(func(lr *liveRec) bool { return !(lr.seq < start && lr.data && lr.dev == dev && lr.ino == ino) })
}

// replay applies a journal entry: an undo record joins the set, a marker
// drops what it says.
func (ls *liveSet) replay(e journalEntry) {
	r := e.rec
	switch r.kind {
	case recSynced:
		dir := ""
		if r.isDir {
			dir = r.path
		}
		ls.synced(r.off, r.dev, r.ino, dir)
	case recDead:
		ls.dead(r.off, r.dev, r.ino)
	default:
		lr := newLiveRec(r)
		lr.off, lr.len, lr.rec = e.off, e.len, r
		ls.add(lr)
	}
}

var _ vfs.FS = (*FS)(nil)

// New returns an FS over inner journaling to opts.Journal. An existing
// journal (a previous process killed with the page cache kept) is taken
// over: what it lists is still unsynced.
func New(inner vfs.FS, opts Options) (*FS, error) {
	if opts.Journal == "" {
		return nil, errors.New("powerloss: Options.Journal is required")
	}
	if opts.MaxUndoBytes < 0 {
		return nil, fmt.Errorf("powerloss: Options.MaxUndoBytes %d is negative", opts.MaxUndoBytes)
	}
	if opts.MaxUndoBytes == 0 {
		opts.MaxUndoBytes = DefaultMaxUndoBytes
	}
	jpath, err := filepath.Abs(opts.Journal)
	if err != nil {
		return nil, err
	}
	f := &FS{inner: inner, journal: jpath, graves: jpath + ".graves", maxUndo: opts.MaxUndoBytes,
		handles: map[string]map[*file]struct{}{}, nextSeq: 1}
	if err := os.MkdirAll(f.graves, 0o700); err != nil {
		return nil, fmt.Errorf("powerloss: %w", err)
	}
	entries, valid, err := readJournal(jpath)
	if err != nil {
		return nil, err
	}
	j, err := os.OpenFile(jpath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("powerloss: %w", err)
	}
	if valid == 0 {
		valid = int64(len(journalMagic))
		err = j.Truncate(0)
		if err == nil {
			_, err = j.WriteAt([]byte(journalMagic), 0)
		}
	} else {
		err = j.Truncate(valid) // drop a torn last record
	}
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("powerloss: %w", err)
	}
	f.j, f.jsize = j, valid
	for _, e := range entries {
		f.live.replay(e)
		f.nextSeq = e.rec.seq + 1
	}
	referenced := map[string]bool{}
	for _, lr := range f.live.recs {
		lr.rec = nil // only Cut needs the records
		if lr.grave != "" {
			referenced[lr.grave] = true
		}
	}
	// Graves made for a mutation whose record the kill cut short.
	if des, err := os.ReadDir(f.graves); err == nil {
		for _, de := range des {
			if p := filepath.Join(f.graves, de.Name()); !referenced[p] {
				_ = os.Remove(p)
			}
		}
	}
	return f, nil
}

func newLiveRec(r *record) *liveRec {
	lr := &liveRec{seq: r.seq, data: r.isData(), dev: r.dev, ino: r.ino, grave: r.grave}
	if !lr.data {
		lr.dirs = map[string]bool{}
		switch r.kind {
		case recRename:
			lr.dirs[filepath.Dir(r.path)] = true
			lr.dirs[filepath.Dir(r.to)] = true
		case recLink:
			lr.dirs[filepath.Dir(r.to)] = true
		default:
			lr.dirs[filepath.Dir(r.path)] = true
		}
	}
	return lr
}

// Close closes the journal. Open files must be closed first.
func (f *FS) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.j.Close()
}

// LiveBytes returns the size of the journal's live records.
func (f *FS) LiveBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live.bytes
}

// JournalBytes returns the journal file's size.
func (f *FS) JournalBytes() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jsize
}

// appendRec writes r to the journal (f.mu held), before its mutation.
func (f *FS) appendRec(r *record) error {
	if f.failed != nil {
		return f.failed
	}
	r.seq = f.nextSeq
	b := r.marshal()
	if int64(len(b)) > maxRecordBytes+8 {
		return fmt.Errorf("powerloss: a %s record of %d bytes is over the limit", r.kind, len(b))
	}
	if !r.isMarker() && f.live.bytes+int64(len(b)) > f.maxUndo {
		return fmt.Errorf("%w: %d live bytes, limit %d", ErrUndoLimit, f.live.bytes, f.maxUndo)
	}
	if _, err := f.j.WriteAt(b, f.jsize); err != nil {
		// The journal no longer matches the files: refuse every
		// further mutation rather than leave one unjournaled.
		f.failed = fmt.Errorf("powerloss: writing the journal %s: %w", f.journal, err)
		return f.failed
	}
	f.nextSeq++
	f.live.replay(journalEntry{rec: r, off: f.jsize, len: int64(len(b))})
	if n := len(f.live.recs); n > 0 && f.live.recs[n-1].rec == r {
		f.live.recs[n-1].rec = nil
	}
	f.jsize += int64(len(b))
	return nil
}

// dropSynced journals that a sync that started when nextSeq was start
// succeeded, and drops the records it made durable: data records of
// (dev, ino), or with dir != "" the directory records of dir whose
// directories are now all synced. A file whose last name was a dropped
// grave is durably gone: a dead marker drops its data records too (its
// inode number may be reused).
func (f *FS) dropSynced(start, dev, ino uint64, dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failed != nil {
		return // nothing is dropped: the records stay live, which is safe
	}
	m := &record{kind: recSynced, off: start, dev: dev, ino: ino}
	if dir != "" {
		m = &record{kind: recSynced, off: start, path: dir, isDir: true}
	}
	graves := f.live.synced(start, dev, ino, dir)
	// The marker goes first in the journal; the set was updated by
	// synced above, so appendRec's replay of it finds nothing more.
	if err := f.appendRec(m); err != nil {
		return
	}
	for _, g := range graves {
		if st, err := os.Lstat(g); err == nil && links(st) == 1 {
			if gdev, gino, err := identity(st); err == nil {
				if err := f.appendRec(&record{kind: recDead, off: f.nextSeq, dev: gdev, ino: gino}); err != nil {
					return
				}
			}
		}
		_ = os.Remove(g)
	}
	if f.jsize > 2*f.live.bytes+compactSlackBytes {
		if err := f.compact(); err != nil {
			f.failed = err
		}
	}
}

// compact rewrites the journal with its live records only (f.mu held).
// The new journal replaces the old one by rename, so a kill at any point
// leaves one of the two whole.
func (f *FS) compact() error {
	tmp := f.journal + ".tmp"
	nj, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("powerloss: compacting the journal: %w", err)
	}
	fail := func(err error) error {
		nj.Close()
		os.Remove(tmp)
		return fmt.Errorf("powerloss: compacting the journal: %w", err)
	}
	if _, err := nj.Write([]byte(journalMagic)); err != nil {
		return fail(err)
	}
	off := int64(len(journalMagic))
	offs := make([]int64, len(f.live.recs))
	for i, lr := range f.live.recs {
		if _, err := io.Copy(nj, io.NewSectionReader(f.j, lr.off, lr.len)); err != nil {
			return fail(err)
		}
		offs[i] = off
		off += lr.len
	}
	if err := os.Rename(tmp, f.journal); err != nil {
		return fail(err)
	}
	f.j.Close()
	f.j, f.jsize = nj, off
	for i, lr := range f.live.recs {
		lr.off = offs[i]
	}
	return nil
}

// abs makes a path absolute: the journal is replayed by another process.
func abs(name string) (string, error) {
	p, err := filepath.Abs(name)
	if err != nil {
		return "", fmt.Errorf("powerloss: %w", err)
	}
	return p, nil
}

// bury keeps the file at path (about to be removed or replaced) as a
// grave: a hard link, or a copy where links are not possible.
func (f *FS) bury(path string) (string, error) {
	g := filepath.Join(f.graves, "g"+strconv.FormatUint(f.nextSeq, 10))
	_ = os.Remove(g)
	if err := os.Link(path, g); err == nil {
		return g, nil
	}
	if err := copyFile(path, g); err != nil {
		return "", fmt.Errorf("powerloss: keeping %s before replacing it: %w", path, err)
	}
	return g, nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// isRegular reports whether path names a regular file (following no
// error: a missing path is not one).
func isRegular(path string) bool {
	st, err := os.Lstat(path)
	return err == nil && st.Mode().IsRegular()
}

func (f *FS) track(h *file) {
	if f.handles[h.path] == nil {
		f.handles[h.path] = map[*file]struct{}{}
	}
	f.handles[h.path][h] = struct{}{}
}

func (f *FS) untrack(h *file) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.handles[h.path], h)
	if len(f.handles[h.path]) == 0 {
		delete(f.handles, h.path)
	}
}

// wrap makes h the FS's handle of inner file vf at path (f.mu held).
func (f *FS) wrap(vf vfs.File, path string) (*file, error) {
	st, err := vf.Stat()
	if err != nil {
		vf.Close()
		return nil, err
	}
	h := &file{fs: f, f: vf, path: path, dir: st.IsDir()}
	if !h.dir {
		if h.dev, h.ino, err = identity(st); err != nil {
			vf.Close()
			return nil, err
		}
	}
	f.track(h)
	return h, nil
}

// Create implements vfs.FS: a file replaced by the new one is kept until
// the directory is synced.
func (f *FS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	path, err := abs(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, err := os.Lstat(path); err == nil && !st.Mode().IsRegular() {
		return nil, &os.PathError{Op: "create", Path: path, Err: syscall.EISDIR}
	}
	r := &record{kind: recCreate, path: path}
	if isRegular(path) {
		if r.grave, err = f.bury(path); err != nil {
			return nil, err
		}
	}
	if err := f.appendRec(r); err != nil {
		return nil, err
	}
	vf, err := f.inner.Create(name, category)
	if err != nil {
		return nil, err
	}
	return f.wrap(vf, path)
}

// OpenReadWrite implements vfs.FS.
func (f *FS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	path, err := abs(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := f.appendRec(&record{kind: recCreate, path: path}); err != nil {
			return nil, err
		}
	}
	vf, err := f.inner.OpenReadWrite(name, category, opts...)
	if err != nil {
		return nil, err
	}
	return f.wrap(vf, path)
}

// Open implements vfs.FS. Nothing is written through a read-only handle,
// but its Sync makes the file (or directory) durable as any other.
func (f *FS) Open(name string, opts ...vfs.OpenOption) (vfs.File, error) {
	path, err := abs(name)
	if err != nil {
		return nil, err
	}
	vf, err := f.inner.Open(name, opts...)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wrap(vf, path)
}

// OpenDir implements vfs.FS: the handle's Sync makes the directory's
// entries durable.
func (f *FS) OpenDir(name string) (vfs.File, error) {
	path, err := abs(name)
	if err != nil {
		return nil, err
	}
	vf, err := f.inner.OpenDir(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wrap(vf, path)
}

// Link implements vfs.FS.
func (f *FS) Link(oldname, newname string) error {
	from, err := abs(oldname)
	if err != nil {
		return err
	}
	to, err := abs(newname)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := os.Lstat(to); err == nil {
		return f.inner.Link(oldname, newname) // fails: nothing to undo
	}
	if err := f.appendRec(&record{kind: recLink, path: from, to: to}); err != nil {
		return err
	}
	return f.inner.Link(oldname, newname)
}

// Remove implements vfs.FS: a removed file is kept until the directory is
// synced.
func (f *FS) Remove(name string) error {
	path, err := abs(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removeLocked(name, path)
}

func (f *FS) removeLocked(name, path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return f.inner.Remove(name) // the inner FS's error for a missing file
	}
	r := &record{kind: recRemove, path: path, isDir: st.IsDir()}
	if st.Mode().IsRegular() {
		if r.grave, err = f.bury(path); err != nil {
			return err
		}
	}
	if err := f.appendRec(r); err != nil {
		return err
	}
	return f.inner.Remove(name)
}

// RemoveAll implements vfs.FS, one journaled Remove at a time, children
// first.
func (f *FS) RemoveAll(name string) error {
	path, err := abs(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.removeAllLocked(path)
}

func (f *FS) removeAllLocked(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.IsDir() {
		names, err := f.inner.List(path)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := f.removeAllLocked(filepath.Join(path, n)); err != nil {
				return err
			}
		}
	}
	return f.removeLocked(path, path)
}

// Rename implements vfs.FS: a file replaced at newname is kept until the
// directories are synced; open handles of oldname follow the file.
func (f *FS) Rename(oldname, newname string) error {
	from, err := abs(oldname)
	if err != nil {
		return err
	}
	to, err := abs(newname)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := os.Lstat(from); err != nil {
		return f.inner.Rename(oldname, newname) // fails: nothing to undo
	}
	r := &record{kind: recRename, path: from, to: to}
	if isRegular(to) && from != to {
		if r.grave, err = f.bury(to); err != nil {
			return err
		}
	}
	if err := f.appendRec(r); err != nil {
		return err
	}
	if err := f.inner.Rename(oldname, newname); err != nil {
		return err
	}
	if hs := f.handles[from]; len(hs) > 0 && from != to {
		delete(f.handles, from)
		for h := range hs {
			h.path = to
			f.track(h)
		}
	}
	return nil
}

// ReuseForWrite implements vfs.FS as a rename and an open.
func (f *FS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if err := f.Rename(oldname, newname); err != nil {
		return nil, err
	}
	return f.OpenReadWrite(newname, category)
}

// MkdirAll implements vfs.FS, journaling each directory it creates.
func (f *FS) MkdirAll(dir string, perm os.FileMode) error {
	path, err := abs(dir)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var missing []string
	for d := path; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := f.appendRec(&record{kind: recMkdir, path: missing[i]}); err != nil {
			return err
		}
	}
	return f.inner.MkdirAll(dir, perm)
}

// Lock implements vfs.FS. The lock file is not journaled: it holds no
// data and is created again when missing.
func (f *FS) Lock(name string) (io.Closer, error) { return f.inner.Lock(name) }

// List implements vfs.FS.
func (f *FS) List(dir string) ([]string, error) { return f.inner.List(dir) }

// Stat implements vfs.FS.
func (f *FS) Stat(name string) (vfs.FileInfo, error) { return f.inner.Stat(name) }

// PathBase implements vfs.FS.
func (f *FS) PathBase(path string) string { return f.inner.PathBase(path) }

// PathJoin implements vfs.FS.
func (f *FS) PathJoin(elem ...string) string { return f.inner.PathJoin(elem...) }

// PathDir implements vfs.FS.
func (f *FS) PathDir(path string) string { return f.inner.PathDir(path) }

// GetDiskUsage implements vfs.FS.
func (f *FS) GetDiskUsage(path string) (vfs.DiskUsage, error) { return f.inner.GetDiskUsage(path) }

// Unwrap implements vfs.FS. It returns nil: code that unwraps file
// systems must not reach the inner one and write around the journal.
func (f *FS) Unwrap() vfs.FS { return nil }

// file is a handle of the FS. Its position is tracked here because a
// Write's offset must be known before the write, to journal the bytes it
// overwrites.
type file struct {
	fs       *FS
	f        vfs.File
	path     string // guarded by fs.mu; follows renames
	dir      bool
	dev, ino uint64

	posMu sync.Mutex
	pos   int64
}

var _ vfs.File = (*file)(nil)

func (h *file) Close() error {
	h.fs.untrack(h)
	return h.f.Close()
}

func (h *file) Read(p []byte) (int, error) {
	h.posMu.Lock()
	defer h.posMu.Unlock()
	n, err := h.f.Read(p)
	h.pos += int64(n)
	return n, err
}

func (h *file) ReadAt(p []byte, off int64) (int, error) { return h.f.ReadAt(p, off) }

func (h *file) Write(p []byte) (int, error) {
	h.posMu.Lock()
	defer h.posMu.Unlock()
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.journalWrite(h.pos, int64(len(p))); err != nil {
		return 0, err
	}
	n, err := h.f.Write(p)
	h.pos += int64(n)
	return n, err
}

func (h *file) WriteAt(p []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.journalWrite(off, int64(len(p))); err != nil {
		return 0, err
	}
	return h.f.WriteAt(p, off)
}

// journalWrite journals a write of n bytes at off (fs.mu held), in
// chunks of at most writeChunkBytes.
func (h *file) journalWrite(off, n int64) error {
	if n == 0 {
		return nil
	}
	if off < 0 {
		return fmt.Errorf("powerloss: negative offset %d", off)
	}
	st, err := h.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	for done := int64(0); done < n; {
		c := min(n-done, writeChunkBytes)
		at := off + done
		// A chunk after the first finds the file extended to its start
		// by the one before.
		before := size
		if done > 0 {
			before = max(size, at)
		}
		r := &record{kind: recWrite, dev: h.dev, ino: h.ino, path: h.path, off: uint64(at), n: uint64(c), oldSize: uint64(before)}
		if at < size {
			r.old = make([]byte, min(c, size-at))
			if _, err := h.f.ReadAt(r.old, at); err != nil {
				return fmt.Errorf("powerloss: reading %s at %d before overwriting it: %w", h.path, at, err)
			}
		}
		if err := h.fs.appendRec(r); err != nil {
			return err
		}
		done += c
	}
	return nil
}

// Truncate sets the file's size (the operating system's files have it;
// vfs.File does not require it), journaling the bytes it cuts off.
func (h *file) Truncate(size int64) error {
	t, ok := h.f.(interface{ Truncate(int64) error })
	if !ok {
		return fmt.Errorf("powerloss: %s: the inner file system's files cannot be truncated", h.path)
	}
	if size < 0 {
		return fmt.Errorf("powerloss: negative size %d", size)
	}
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	st, err := h.f.Stat()
	if err != nil {
		return err
	}
	old := st.Size()
	r := &record{kind: recTruncate, dev: h.dev, ino: h.ino, path: h.path, off: uint64(size), oldSize: uint64(old)}
	if size < old {
		if old-size > maxTruncateUndoBytes {
			return fmt.Errorf("powerloss: %s: truncating %d bytes, more than the journal keeps (%d)", h.path, old-size, maxTruncateUndoBytes)
		}
		r.old = make([]byte, old-size)
		if _, err := h.f.ReadAt(r.old, size); err != nil {
			return fmt.Errorf("powerloss: reading %s at %d before truncating it: %w", h.path, size, err)
		}
	}
	if err := h.fs.appendRec(r); err != nil {
		return err
	}
	return t.Truncate(size)
}

func (h *file) Preallocate(offset, length int64) error { return h.f.Preallocate(offset, length) }
func (h *file) Stat() (vfs.FileInfo, error)            { return h.f.Stat() }
func (h *file) Prefetch(offset, length int64) error    { return h.f.Prefetch(offset, length) }

// Fd implements vfs.File. It hides the descriptor: a caller that synced
// it directly would make data durable without the journal knowing.
func (h *file) Fd() uintptr { return vfs.InvalidFd }

func (h *file) Sync() error     { return h.synced(h.f.Sync) }
func (h *file) SyncData() error { return h.synced(h.f.SyncData) }

func (h *file) SyncTo(length int64) (bool, error) {
	var full bool
	err := h.synced(func() error {
		var err error
		full, err = h.f.SyncTo(length)
		if err == nil && !full {
			err = errNotFull
		}
		return err
	})
	if errors.Is(err, errNotFull) {
		return false, nil
	}
	return full, err
}

var errNotFull = errors.New("not a full sync")

// synced runs a sync and, once it succeeded, drops the records it made
// durable: those journaled before it started.
func (h *file) synced(sync func() error) error {
	h.fs.mu.Lock()
	start := h.fs.nextSeq
	dir := ""
	if h.dir {
		dir = h.path
	}
	h.fs.mu.Unlock()
	if err := sync(); err != nil {
		return err
	}
	h.fs.dropSynced(start, h.dev, h.ino, dir)
	return nil
}
