package powerloss

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Sector and page sizes of the crash model: a page is written back
// whole or not at all, unless the write is torn, and then each sector of
// it is.
const (
	SectorBytes = 512
	PageBytes   = 4096
)

// CutMode says what a power cut keeps of what was not synced.
type CutMode int

const (
	// CutRandom keeps a random part: each file is cut in pages or
	// (torn) sectors, and each page or sector holds the data of a random
	// one of the writes to it since the file's last sync, or what it
	// held at that sync; truncations are kept or undone at random;
	// directory operations up to a random point of their order.
	CutRandom CutMode = iota
	// CutNothing keeps nothing unsynced: every journaled mutation is
	// undone.
	CutNothing
	// CutEverything keeps everything (a kill -9 without power loss):
	// the journal is only discarded.
	CutEverything
)

// CutReport says what a power cut did.
type CutReport struct {
	Records            int // journal records found
	DataKept           int // write and truncate records kept whole
	DataPartial        int // write records kept in part (pages or sectors)
	DataUndone         int // write and truncate records undone whole
	DirKept, DirUndone int // directory records kept, undone
	BytesUndone        int64
}

func (r CutReport) String() string {
	return fmt.Sprintf("%d unsynced mutations: data kept %d, partly %d, undone %d (%d bytes); directory operations kept %d, undone %d",
		r.Records, r.DataKept, r.DataPartial, r.DataUndone, r.BytesUndone, r.DirKept, r.DirUndone)
}

// Cut turns the files an FS journaled to journal into what a power cut
// could have left of them, then removes the journal and its graves. The
// process that wrote through the FS must be gone (killed), and nothing
// else may touch the files meanwhile. rng draws what is kept; mode may
// ask for none or all of it instead.
//
// Records are undone newest first, so each one finds its file as it was
// just after its mutation, except for what later kept records changed;
// paths follow the renames that are kept.
func Cut(journal string, rng *rand.Rand, mode CutMode) (CutReport, error) {
	jpath, err := filepath.Abs(journal)
	if err != nil {
		return CutReport{}, err
	}
	entries, _, err := readJournal(jpath)
	if err != nil {
		return CutReport{}, err
	}
	var ls liveSet
	for _, e := range entries {
		ls.replay(e)
	}
	rep := CutReport{Records: len(ls.recs)}
	c := &cutter{rng: rng, mode: mode, alias: map[string]string{}, files: map[[2]uint64]*fileCut{}, rep: &rep}
	c.roots = roots(ls.recs)
	// Directory operations survive as a prefix of their order (journaled
	// file systems commit metadata in order): those after dirCut are
	// undone.
	var dirRecs int
	for _, lr := range ls.recs {
		if !lr.data {
			dirRecs++
		}
	}
	dirCut := dirRecs
	switch mode {
	case CutRandom:
		dirCut = rng.IntN(dirRecs + 1)
	case CutNothing:
		dirCut = 0
	}
	dirIdx := dirRecs
	for i := len(ls.recs) - 1; i >= 0; i-- {
		r := ls.recs[i].rec
		if r.isData() {
			if err := c.data(r); err != nil {
				return rep, fmt.Errorf("powerloss: undoing record %d (%s of %s): %w", r.seq, r.kind, r.path, err)
			}
			continue
		}
		dirIdx--
		if err := c.dir(r, dirIdx >= dirCut); err != nil {
			return rep, fmt.Errorf("powerloss: undoing record %d (%s of %s): %w", r.seq, r.kind, r.path, err)
		}
	}
	if err := c.finish(); err != nil {
		return rep, fmt.Errorf("powerloss: setting file sizes: %w", err)
	}
	if err := os.RemoveAll(jpath + ".graves"); err != nil {
		return rep, err
	}
	if err := os.Remove(jpath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return rep, err
	}
	return rep, nil
}

type cutter struct {
	rng  *rand.Rand
	mode CutMode
	// alias maps a path as older records name it to where that file is
	// now ("" once it is gone), after the renames and removals kept.
	alias map[string]string
	// files is how each file (by device and inode) is cut.
	files map[[2]uint64]*fileCut
	// roots are the directories walked to find a file a record names
	// by an old path (moved by a rename since made durable); index is
	// what the last walk found, nil once a directory record is undone.
	roots []string
	index map[[2]uint64]string
	rep   *CutReport
}

func (c *cutter) resolve(p string) string {
	for range 1000 {
		q, ok := c.alias[p]
		if !ok || q == p {
			return p
		}
		if q == "" {
			return ""
		}
		p = q
	}
	return "" // a cycle cannot come from a valid journal; treat as gone
}

// data undoes (all, part or none of) a write or truncate record.
func (c *cutter) data(r *record) error {
	f, err := c.open(r)
	if err != nil || f == nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	id := [2]uint64{r.dev, r.ino}
	fc := c.files[id]
	if fc == nil {
		// Each file is cut in whole pages or, torn, in sectors.
		fc = &fileCut{unit: PageBytes, frozen: map[int64]bool{}, cutFrom: math.MaxInt64}
		if c.mode == CutRandom && c.rng.IntN(2) == 0 {
			fc.unit = SectorBytes
		}
		c.files[id] = fc
	}
	// keep is the chance that a granule this record wrote reached the
	// disk (given that no later write to it did).
	keep := 0.0
	switch c.mode {
	case CutEverything:
		keep = 1
	case CutRandom:
		keep = []float64{0, 0.5, 1}[c.rng.IntN(3)]
	}
	off, end := int64(r.off), int64(r.off+r.n)
	after := max(int64(r.oldSize), end) // the size this mutation left
	fc.before, fc.last = int64(r.oldSize), r
	if r.kind == recTruncate {
		off, end, after = int64(r.off), int64(r.oldSize), int64(r.off) // a shrink cut off [off, end)
		if c.chance(keep) {
			c.rep.DataKept++
			fc.keptAfter(after)
			// What older mutations wrote past the new size is gone,
			// and the granule the new end falls in holds what it held
			// just after the truncation (it was written back whole).
			fc.cutFrom = min(fc.cutFrom, after)
			if g := after / fc.unit * fc.unit; g < after {
				fc.frozen[g] = true
			}
			return nil
		}
		c.rep.DataUndone++
	}
	kept, undone := false, false
	var undoneBytes int64
	for g := off / fc.unit * fc.unit; g < end; g += fc.unit {
		if fc.frozen[g] || g >= fc.cutFrom {
			continue // a later write to this granule reached the disk
		}
		if r.kind == recWrite && c.chance(keep) {
			// The granule was written back after this write and
			// before any later one: it holds this version.
			fc.frozen[g] = true
			kept = true
			continue
		}
		undone = true
		from, to := max(g, off), min(g+fc.unit, end, fc.cutFrom)
		if r.kind == recWrite {
			to = min(to, max(size, off)) // nothing to restore past the end
		}
		if from >= to {
			continue
		}
		buf := make([]byte, to-from)
		if oldEnd := off + int64(len(r.old)); from < oldEnd {
			copy(buf, r.old[from-off:min(to, oldEnd)-off])
		}
		undoneBytes += to - from
		if _, err := f.WriteAt(buf, from); err != nil {
			return err
		}
	}
	c.rep.BytesUndone += undoneBytes
	if r.kind == recWrite {
		switch {
		case kept && undone:
			c.rep.DataPartial++
		case undone:
			c.rep.DataUndone++
		default:
			c.rep.DataKept++
		}
		if kept {
			fc.keptAfter(after)
		}
	}
	return nil
}

// fileCut is how a cut treats one file.
type fileCut struct {
	unit   int64          // PageBytes or SectorBytes
	frozen map[int64]bool // granules (by offset) that keep what they hold now
	// cutFrom is the lowest size a kept truncation set: older data
	// beyond it is gone whatever happened to it.
	cutFrom int64
	// The file's size after the cut is the size left by the newest
	// mutation of which anything was kept, or if none, its size before
	// the oldest one (as of its last sync).
	sized  bool
	size   int64
	before int64
	last   *record // the oldest record seen, to find the file again
}

func (fc *fileCut) keptAfter(size int64) {
	if !fc.sized {
		fc.sized, fc.size = true, size
	}
}

// finish sets every file's size.
func (c *cutter) finish() error {
	for _, fc := range c.files {
		want := fc.before
		if fc.sized {
			want = fc.size
		}
		f, err := c.open(fc.last)
		if err != nil || f == nil {
			if err != nil {
				return err
			}
			continue
		}
		err = f.Truncate(want)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// open opens the file a data record is about, found by its device and
// inode: at the path the record names (after the renames kept) or, if a
// rename since made durable moved it, by a walk of the directories the
// journal names. It returns nil if the file is gone.
func (c *cutter) open(r *record) (*os.File, error) {
	id := [2]uint64{r.dev, r.ino}
	try := func(p string) *os.File {
		if p == "" {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil
		}
		if st, err := f.Stat(); err == nil {
			if dev, ino, err := identity(st); err == nil && [2]uint64{dev, ino} == id {
				return f
			}
		}
		f.Close()
		return nil
	}
	if f := try(c.resolve(r.path)); f != nil {
		return f, nil
	}
	if c.index == nil {
		c.index = map[[2]uint64]string{}
		for _, root := range c.roots {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				if info, err := d.Info(); err == nil {
					if dev, ino, err := identity(info); err == nil {
						c.index[[2]uint64{dev, ino}] = p
					}
				}
				return nil
			})
		}
	}
	if p, ok := c.index[id]; ok {
		return try(p), nil
	}
	return nil, nil
}

// roots returns the directories to walk for files: the parents of those
// the records name, without any inside another.
func roots(recs []*liveRec) []string {
	var dirs []string
	for _, lr := range recs {
		for _, p := range []string{lr.rec.path, lr.rec.to} {
			if p != "" {
				dirs = append(dirs, filepath.Dir(filepath.Dir(p)))
			}
		}
	}
	slices.Sort(dirs)
	var out []string
	for _, d := range slices.Compact(dirs) {
		if len(out) > 0 && (out[len(out)-1] == d || strings.HasPrefix(d, out[len(out)-1]+string(filepath.Separator))) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// chance returns true with probability p, drawing only when it must (the
// modes that keep nothing or everything have no rng).
func (c *cutter) chance(p float64) bool {
	if p <= 0 || p >= 1 {
		return p >= 1
	}
	return c.rng.Float64() < p
}

// dir keeps or undoes a directory record.
func (c *cutter) dir(r *record, undo bool) error {
	if !undo {
		c.rep.DirKept++
		switch r.kind {
		case recRename:
			// Older records' oldname is now wherever newname went;
			// their newname was the replaced file, gone.
			c.alias[r.path] = c.resolve(r.to)
			c.alias[r.to] = ""
		case recCreate, recRemove, recLink:
			// Older records of this name were of a file now gone.
			if r.kind == recLink {
				c.alias[r.to] = ""
			} else {
				c.alias[r.path] = ""
			}
		}
		return nil
	}
	c.rep.DirUndone++
	c.index = nil
	switch r.kind {
	case recMkdir:
		if err := os.RemoveAll(r.path); err != nil {
			return err
		}
	case recCreate:
		if c.resolve(r.path) == r.path {
			if err := removeFile(r.path); err != nil {
				return err
			}
		}
		if err := unbury(r.grave, r.path); err != nil {
			return err
		}
	case recRemove:
		if r.isDir {
			if err := os.Mkdir(r.path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		} else if err := unbury(r.grave, r.path); err != nil {
			return err
		}
	case recRename:
		if c.resolve(r.to) != r.to {
			return nil // moved on by a later rename that survives: keep this one
		}
		if _, err := os.Lstat(r.to); err == nil {
			if _, err := os.Lstat(r.path); errors.Is(err, fs.ErrNotExist) {
				if err := os.Rename(r.to, r.path); err != nil {
					return err
				}
			}
		}
		if err := unbury(r.grave, r.to); err != nil {
			return err
		}
	case recLink:
		if err := removeFile(r.to); err != nil {
			return err
		}
	}
	// Older records of these names find their files where they were.
	delete(c.alias, r.path)
	if r.to != "" {
		delete(c.alias, r.to)
	}
	return nil
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// unbury puts a grave back at path, if there is one and path is free.
func unbury(grave, path string) error {
	if grave == "" {
		return nil
	}
	if _, err := os.Lstat(grave); err != nil {
		return nil // the mutation it was made for never happened
	}
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	return os.Rename(grave, path)
}
