package powerloss

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

var flagSeed = flag.Uint64("powerloss.seed", 0, "TestCutModel: base seed (0: a random one, printed)")

// minode is the model of one file: what its last sync made durable and
// every content it had since.
type minode struct {
	id       int
	synced   []byte
	versions [][]byte // after each unsynced mutation; the last is current
	h        vfs.File
}

func (n *minode) current() []byte {
	if len(n.versions) == 0 {
		return n.synced
	}
	return n.versions[len(n.versions)-1]
}

// modelRun drives an FS with random operations on a few files of one
// directory and keeps the model of what a power cut may leave.
type modelRun struct {
	t    *testing.T
	rng  *rand.Rand
	fs   *FS
	dir  string
	next int
	ns   map[string]*minode // the directory now
	// states are the directory's possible durable states: [0] as of its
	// last sync, [k] after the first k directory operations since.
	states []map[string]*minode
	log    []string
}

func (m *modelRun) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
}

func (m *modelRun) dirOp() {
	m.states = append(m.states, maps(m.ns))
}

func maps(ns map[string]*minode) map[string]*minode {
	out := make(map[string]*minode, len(ns))
	for k, v := range ns {
		out[k] = v
	}
	return out
}

func (m *modelRun) name() string { return fmt.Sprintf("f%d", m.rng.IntN(5)) }

func (m *modelRun) mutate(n *minode, f func([]byte) []byte) {
	n.versions = append(n.versions, f(bytes.Clone(n.current())))
}

func (m *modelRun) step() {
	t := m.t
	names := make([]string, 0, len(m.ns))
	for k := range m.ns {
		names = append(names, k)
	}
	sort.Strings(names)
	pick := func() (string, *minode) {
		if len(names) == 0 {
			return "", nil
		}
		k := names[m.rng.IntN(len(names))]
		return k, m.ns[k]
	}
	switch op := m.rng.IntN(10); op {
	case 0: // create (replacing)
		k := m.name()
		if old := m.ns[k]; old != nil {
			old.h.Close()
		}
		h, err := m.fs.Create(filepath.Join(m.dir, k), vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		m.next++
		m.ns[k] = &minode{id: m.next, h: h}
		m.dirOp()
		m.logf("create %s (#%d)", k, m.next)
	case 1, 2, 3: // write somewhere
		k, n := pick()
		if n == nil {
			return
		}
		size := len(n.current())
		off := m.rng.IntN(size + 3000)
		data := make([]byte, 1+m.rng.IntN(9000))
		for i := range data {
			data[i] = byte(1 + m.rng.IntN(255))
		}
		if _, err := n.h.WriteAt(data, int64(off)); err != nil {
			t.Fatal(err)
		}
		m.mutate(n, func(b []byte) []byte {
			if len(b) < off+len(data) {
				b = append(b, make([]byte, off+len(data)-len(b))...)
			}
			copy(b[off:], data)
			return b
		})
		m.logf("write %s [%d,%d)", k, off, off+len(data))
	case 4, 5: // sync a file
		k, n := pick()
		if n == nil {
			return
		}
		if err := n.h.Sync(); err != nil {
			t.Fatal(err)
		}
		n.synced, n.versions = bytes.Clone(n.current()), nil
		m.logf("sync %s", k)
	case 6: // sync the directory
		d, err := m.fs.OpenDir(m.dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
		m.states = []map[string]*minode{maps(m.ns)}
		m.logf("sync dir")
	case 7: // rename over
		k, n := pick()
		to := m.name()
		if n == nil || to == k {
			return
		}
		if err := m.fs.Rename(filepath.Join(m.dir, k), filepath.Join(m.dir, to)); err != nil {
			t.Fatal(err)
		}
		if old := m.ns[to]; old != nil {
			old.h.Close()
		}
		delete(m.ns, k)
		m.ns[to] = n
		m.dirOp()
		m.logf("rename %s %s", k, to)
	case 8: // remove
		k, n := pick()
		if n == nil {
			return
		}
		if err := m.fs.Remove(filepath.Join(m.dir, k)); err != nil {
			t.Fatal(err)
		}
		n.h.Close()
		delete(m.ns, k)
		m.dirOp()
		m.logf("remove %s", k)
	case 9: // truncate
		k, n := pick()
		if n == nil {
			return
		}
		size := m.rng.IntN(len(n.current()) + 2000)
		if err := n.h.(interface{ Truncate(int64) error }).Truncate(int64(size)); err != nil {
			t.Fatal(err)
		}
		m.mutate(n, func(b []byte) []byte {
			if size <= len(b) {
				return b[:size]
			}
			return append(b, make([]byte, size-len(b))...)
		})
		m.logf("truncate %s %d", k, size)
	}
}

// sectorOf returns b's sector at off, zero-padded.
func sectorOf(b []byte, off int) []byte {
	s := make([]byte, SectorBytes)
	if off < len(b) {
		copy(s, b[off:])
	}
	return s
}

// check verifies the directory after a cut against the model: its names
// are one of the possible durable states, and every file in it holds,
// sector by sector, one of the versions its file had since its last sync.
func (m *modelRun) check(mode CutMode) error {
	des, err := os.ReadDir(m.dir)
	if err != nil {
		return err
	}
	var onDisk []string
	for _, de := range des {
		onDisk = append(onDisk, de.Name())
	}
	sort.Strings(onDisk)
	// Several states may hold the same names (with other files behind
	// them): the result must fit one of them.
	var firstErr error
	for k, st := range m.states {
		names := make([]string, 0, len(st))
		for n := range st {
			names = append(names, n)
		}
		sort.Strings(names)
		if !slices.Equal(names, onDisk) {
			continue
		}
		switch {
		case mode == CutNothing && k != 0:
			continue
		case mode == CutEverything && k != len(m.states)-1:
			continue
		}
		err := m.checkFiles(st, mode)
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("directory state %d: %w", k, err)
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("directory holds %v, not one of the %d possible states (mode %d)", onDisk, len(m.states), mode)
	}
	return firstErr
}

// checkFiles checks every file of a directory state.
func (m *modelRun) checkFiles(state map[string]*minode, mode CutMode) error {
	for name, n := range state {
		got, err := os.ReadFile(filepath.Join(m.dir, name))
		if err != nil {
			return err
		}
		switch mode {
		case CutNothing:
			if !bytes.Equal(got, n.synced) {
				return fmt.Errorf("%s (#%d): %d bytes, want its synced %d bytes exactly", name, n.id, len(got), len(n.synced))
			}
			continue
		case CutEverything:
			if !bytes.Equal(got, n.current()) {
				return fmt.Errorf("%s (#%d): %d bytes, want its current %d bytes exactly", name, n.id, len(got), len(n.current()))
			}
			continue
		}
		all := append([][]byte{n.synced}, n.versions...)
		lo, hi := len(n.synced), len(n.synced)
		for _, v := range all {
			lo, hi = min(lo, len(v)), max(hi, len(v))
		}
		if len(got) < lo || len(got) > hi {
			return fmt.Errorf("%s (#%d): size %d outside [%d, %d]", name, n.id, len(got), lo, hi)
		}
		for off := 0; off < len(got); off += SectorBytes {
			// The sector at the end is compared as far as the file
			// goes: a size change may have reached the disk without
			// the data written before it.
			l := min(SectorBytes, len(got)-off)
			s := got[off : off+l]
			if !slices.ContainsFunc(all, func(v []byte) bool { return bytes.Equal(sectorOf(v, off)[:l], s) }) {
				return fmt.Errorf("%s (#%d): the sector at %d matches none of its %d versions since the last sync", name, n.id, off, len(all))
			}
		}
	}
	return nil
}

// TestCutModel runs random operations through an FS, cuts the power, and
// checks the result against the model: everything synced is intact, and
// nothing appears that no version had. Replay a failure with
// -powerloss.seed.
func TestCutModel(t *testing.T) {
	base := *flagSeed
	if base == 0 {
		base = uint64(time.Now().UnixNano() % 1e9)
	}
	t.Logf("base seed %d (replay: go test ./internal/powerloss -run TestCutModel -powerloss.seed=%d)", base, base)
	rounds := 120
	if testing.Short() {
		rounds = 50
	}
	for i := range rounds {
		seed := base + uint64(i)
		mode := []CutMode{CutRandom, CutRandom, CutNothing, CutEverything}[i%4]
		if err := runModel(t, seed, mode); err != nil {
			t.Fatalf("seed %d (base %d, round %d), mode %d: %v", seed, base, i, mode, err)
		}
	}
}

func runModel(t *testing.T, seed uint64, mode CutMode) error {
	root := t.TempDir()
	dir := filepath.Join(root, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	journal := filepath.Join(root, "journal")
	fs, err := New(vfs.Default, Options{Journal: journal})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	m := &modelRun{t: t, rng: rng, fs: fs, dir: dir, ns: map[string]*minode{}, states: []map[string]*minode{{}}}
	steps := 5 + rng.IntN(60)
	// Half of the runs restart halfway (kill -9 without a power cut): a
	// new FS takes the journal over.
	restartAt := -1
	if rng.IntN(2) == 0 {
		restartAt = rng.IntN(steps)
	}
	for s := range steps {
		if s == restartAt {
			reopened, err := New(vfs.Default, Options{Journal: journal})
			if err != nil {
				return err
			}
			m.fs = reopened
			for k, n := range m.ns {
				n.h.Close()
				h, err := m.fs.OpenReadWrite(filepath.Join(dir, k), vfs.WriteCategoryUnspecified)
				if err != nil {
					return err
				}
				n.h = h
			}
			m.logf("restart")
		}
		m.step()
	}
	for _, n := range m.ns {
		n.h.Close()
	}
	fs.Close()
	m.fs.Close()
	rep, err := Cut(journal, rand.New(rand.NewPCG(seed, 8)), mode)
	if err != nil {
		return err
	}
	if err := m.check(mode); err != nil {
		return fmt.Errorf("%v\ncut: %v\noperations:\n  %s", err, rep, joinLines(m.log))
	}
	if _, err := os.Stat(journal); !os.IsNotExist(err) {
		return fmt.Errorf("the journal is still there after the cut (%v)", err)
	}
	return nil
}

func joinLines(ls []string) string {
	var b bytes.Buffer
	for i, l := range ls {
		if i > 0 {
			b.WriteString("\n  ")
		}
		b.WriteString(l)
	}
	return b.String()
}
