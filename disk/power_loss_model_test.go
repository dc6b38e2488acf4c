package disk

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

var flagPowerLossIters = flag.Int("disk.powerloss-iters", 1500,
	"schedules TestWALPowerLossModel runs (each: a random workload, a power cut, a recovery)")

// errPowerCut is what every write, sync, create, remove and rename returns
// once the simulated power is off.
var errPowerCut = errors.New("simulated power cut")

// powerLossFS is a vfs.FS on memory that simulates a power cut at a chosen
// mutating operation, under the crash model of doc.go. It keeps, for each
// file, what was written and what the last completed fsync covered; at the
// cut it builds the disk image a power loss could leave: every file holds
// what was synced, and each 512-byte sector written since then survives or
// not, independently, in any pattern (the file's size may or may not
// reach past the synced size); directory entries created or removed since
// the directory's last fsync may or may not be there (pebble's
// CrashClone). From the cut on every mutating operation fails.
type powerLossFS struct {
	*vfs.MemFS
	rng     *rand.Rand
	keepPct int // chance that an unsynced sector (or entry) survives

	mu       sync.Mutex
	files    map[string]*fileShadow
	removals map[string][]removal // by directory
	ops      int
	cutAt    int // the mutating operation at which the power goes (1-based)
	image    *vfs.MemFS
	cutInfo  string
}

type fileShadow struct{ cur, synced []byte }

// removal is a file removed since its directory's last fsync: at a power
// cut it is gone or back, each independently.
type removal struct{ path string }

const sectorBytes = 512

func newPowerLossFS(rng *rand.Rand, cutAt int) *powerLossFS {
	return &powerLossFS{MemFS: vfs.NewCrashableMem(), rng: rng, keepPct: rng.IntN(101),
		files: map[string]*fileShadow{}, removals: map[string][]removal{}, cutAt: cutAt}
}

// step counts a mutating operation and cuts the power at cutAt; after the
// cut it fails.
func (p *powerLossFS) step(what string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.image != nil {
		return errPowerCut
	}
	p.ops++
	if p.ops == p.cutAt {
		p.cutLocked(fmt.Sprintf("before operation %d (%s)", p.ops, what))
		return errPowerCut
	}
	return nil
}

// cutSoon moves the power cut to the n-th mutating operation from now,
// if it is still on.
func (p *powerLossFS) cutSoon(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.image == nil {
		p.cutAt = p.ops + n
	}
}

// cut cuts the power now, if it is still on.
func (p *powerLossFS) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.image == nil {
		p.cutLocked(fmt.Sprintf("after the workload (%d operations)", p.ops))
	}
}

func (p *powerLossFS) cutLocked(info string) {
	p.cutInfo = info
	img := p.MemFS.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: p.keepPct, RNG: p.rng})
	paths := make([]string, 0, len(p.files))
	for path := range p.files {
		paths = append(paths, path)
	}
	slices.Sort(paths) // map order must not change a replayed schedule
	for _, path := range paths {
		sh := p.files[path]
		if _, err := img.Stat(path); err != nil {
			continue // its directory entry did not survive
		}
		data := slices.Clone(sh.synced)
		for off := 0; off < len(sh.cur); off += sectorBytes {
			end := min(off+sectorBytes, len(sh.cur))
			if end <= len(sh.synced) && bytes.Equal(sh.cur[off:end], sh.synced[off:end]) {
				continue
			}
			if p.rng.IntN(100) >= p.keepPct {
				continue
			}
			if len(data) < end {
				data = append(data, make([]byte, end-len(data))...)
			}
			copy(data[off:end], sh.cur[off:end])
		}
		if len(data) < len(sh.cur) && p.rng.IntN(2) == 0 {
			data = append(data, make([]byte, len(sh.cur)-len(data))...) // the size got there, the data did not
		}
		f, err := img.Create(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			panic(err)
		}
		if _, err := f.Write(data); err != nil {
			panic(err)
		}
		f.Sync()
		f.Close()
	}
	// CrashClone brings back every removal not covered by a directory
	// fsync; the crash model lets any subset of them stand.
	dirs := make([]string, 0, len(p.removals))
	for dir := range p.removals {
		dirs = append(dirs, dir)
	}
	slices.Sort(dirs)
	for _, dir := range dirs {
		for _, rm := range p.removals[dir] {
			if p.rng.IntN(2) == 0 {
				img.Remove(rm.path)
			}
		}
	}
	p.image = img
}

func (p *powerLossFS) shadow(path string) *fileShadow {
	p.mu.Lock()
	defer p.mu.Unlock()
	sh := p.files[path]
	if sh == nil {
		sh = &fileShadow{}
		p.files[path] = sh
	}
	return sh
}

func (p *powerLossFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	if err := p.step("create " + name); err != nil {
		return nil, err
	}
	f, err := p.MemFS.Create(name, c)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.files[name] = &fileShadow{}
	p.mu.Unlock()
	return &powerLossFile{File: f, fs: p, path: name}, nil
}

func (p *powerLossFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.MemFS.OpenReadWrite(name, c, opts...)
	if err != nil {
		return nil, err
	}
	sh := p.shadow(name)
	if sh.cur == nil {
		// A file from before this FS tracked it: what is there is synced.
		data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
		if err != nil {
			return nil, err
		}
		sh.cur, sh.synced = data, slices.Clone(data)
	}
	return &powerLossFile{File: f, fs: p, path: name}, nil
}

func (p *powerLossFS) OpenDir(name string) (vfs.File, error) {
	d, err := p.MemFS.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &powerLossDir{File: d, fs: p, path: name}, nil
}

func (p *powerLossFS) Remove(name string) error {
	if err := p.step("remove " + name); err != nil {
		return err
	}
	p.mu.Lock()
	delete(p.files, name)
	dir := filepath.Dir(name)
	p.removals[dir] = append(p.removals[dir], removal{path: name})
	p.mu.Unlock()
	return p.MemFS.Remove(name)
}

func (p *powerLossFS) Rename(oldname, newname string) error {
	if err := p.step("rename " + oldname); err != nil {
		return err
	}
	p.mu.Lock()
	if sh := p.files[oldname]; sh != nil {
		p.files[newname] = sh
		delete(p.files, oldname)
	}
	p.mu.Unlock()
	return p.MemFS.Rename(oldname, newname)
}

func (p *powerLossFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := p.step("mkdir " + dir); err != nil {
		return err
	}
	return p.MemFS.MkdirAll(dir, perm)
}

type powerLossFile struct {
	vfs.File
	fs   *powerLossFS
	path string
}

func (f *powerLossFile) Write(b []byte) (int, error) {
	return 0, fmt.Errorf("powerLossFS: sequential writes are not modelled (%s)", f.path)
}

func (f *powerLossFile) WriteAt(b []byte, off int64) (int, error) {
	if err := f.fs.step(fmt.Sprintf("write %s at %d, %d bytes", f.path, off, len(b))); err != nil {
		return 0, err
	}
	sh := f.fs.shadow(f.path)
	if end := int(off) + len(b); end > len(sh.cur) {
		sh.cur = append(sh.cur, make([]byte, end-len(sh.cur))...)
	}
	copy(sh.cur[off:], b)
	return f.File.WriteAt(b, off)
}

func (f *powerLossFile) Sync() error     { return f.sync() }
func (f *powerLossFile) SyncData() error { return f.sync() }

func (f *powerLossFile) sync() error {
	if err := f.fs.step("fsync " + f.path); err != nil {
		return err
	}
	sh := f.fs.shadow(f.path)
	sh.synced = slices.Clone(sh.cur)
	return f.File.Sync()
}

type powerLossDir struct {
	vfs.File
	fs   *powerLossFS
	path string
}

func (d *powerLossDir) Sync() error {
	if err := d.fs.step("fsync directory " + d.path); err != nil {
		return err
	}
	d.fs.mu.Lock()
	delete(d.fs.removals, d.path)
	d.fs.mu.Unlock()
	return d.File.Sync()
}

// TestWALPowerLossModel: thousands of random schedules of Save,
// WriteCommit, InstallSnapshot and Compact (values include
// well-formed batch headers, current and old format), each cut by a
// simulated power loss at a random file operation (powerLossFS: unsynced
// sectors and directory entries survive in any pattern). Open must then
// succeed and return exactly the state after some prefix of the
// operations that includes every one that returned durable; the Store
// must keep working. Replay one schedule with -disk.seed=<seed>
// -disk.powerloss-iters=1; run more with a larger -disk.powerloss-iters.
func TestWALPowerLossModel(t *testing.T) {
	iters := *flagPowerLossIters
	base := *flagSeed
	if base == 0 {
		base = time.Now().UnixNano()
	}
	if testing.Short() || raceEnabled {
		iters = min(iters, 300) // the race detector makes each about ten times slower
	}
	t.Logf("seeds %d .. %d (replay one with: go test ./disk -run TestWALPowerLossModel -disk.seed=<seed> -disk.powerloss-iters=1)",
		base, base+int64(iters)-1)
	var sum powerLossOutcome
	for k := range iters {
		seed := base + int64(k)
		out, err := runPowerLossSchedule(seed)
		if err != nil {
			t.Fatalf("seed %d: %v (replay: go test ./disk -run TestWALPowerLossModel -disk.seed=%d -disk.powerloss-iters=1)", seed, err, seed)
		}
		sum.add(out)
	}
	t.Logf("%d power cuts: %d during the workload; recoveries lost %d unsynced writes in %d schedules, cut %d torn tails, finished %d interrupted Compacts, took the commit from the marker %d times",
		iters, sum.midWorkload, sum.lostWrites, sum.lossy, sum.tornTails, sum.compactHoles, sum.markerCommits)
	if iters >= 200 && (sum.tornTails == 0 || sum.lossy == 0 || sum.midWorkload == 0 || sum.markerCommits == 0) {
		t.Fatalf("some outcome never happened (%+v): the test exercised too little", sum)
	}
}

// powerLossOutcome counts what a schedule exercised.
type powerLossOutcome struct {
	midWorkload  int // the power went during the workload
	lossy        int // schedules whose recovery lost writes not yet durable
	lostWrites   int // such writes, in all
	tornTails    int // recoveries that cut a torn tail
	compactHoles int // recoveries that finished an interrupted Compact
	// markerCommits: recoveries whose commit index came from the
	// commit marker, above the saved one.
	markerCommits int
}

func (o *powerLossOutcome) add(x powerLossOutcome) {
	o.midWorkload += x.midWorkload
	o.lossy += x.lossy
	o.lostWrites += x.lostWrites
	o.tornTails += x.tornTails
	o.compactHoles += x.compactHoles
	o.markerCommits += x.markerCommits
}

// runPowerLossSchedule runs one schedule and says what it exercised.
func runPowerLossSchedule(seed int64) (out powerLossOutcome, err error) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x9017))
	// About 2.5 file operations per operation: the power goes during the
	// workload in most schedules, after it in the rest.
	const nOps = 32
	pfs := newPowerLossFS(rand.New(rand.NewPCG(uint64(seed), 0xc07)), 1+rng.IntN(nOps*3))
	opts := testOptions()
	opts.FS = pfs
	opts.SegmentBytes = MinSegmentBytes
	opts.MaxRecordBytes = 1 << 10
	opts.MaxBatchBytes = 8 << 10
	opts.CacheBytes = int64(rng.IntN(2)) << 12
	opts.PreallocateBytes = int64(rng.IntN(2)) * MinPreallocateBytes
	const dir = "/node"

	// states[j] is the state after the first j operations that write;
	// states[durable:] are the states recovery may return.
	var m refLog
	states := []refLog{m.clone()}
	durable := 0
	// markers: every value the commit marker file ever held (0 when
	// created). It is never synced, so after the cut each of its slots
	// holds one of them, whatever WAL state survived.
	markers := []uint64{0}
	s, err := Open(dir, opts)
	if err != nil {
		if !errors.Is(err, errPowerCut) {
			return out, fmt.Errorf("first Open: %w", err)
		}
		s = nil
	}
	for op := 0; s != nil && op < nOps; op++ {
		next := m.clone()
		var err error
		synced := true
		switch r := rng.IntN(10); {
		case r < 4: // Save: maybe a new term, entries appended or overwriting a suffix
			hs := m.hs
			if rng.IntN(3) == 0 {
				hs.Term++
				hs.Vote = uint64(1 + rng.IntN(3))
			}
			if hs.Commit < m.last() && rng.IntN(2) == 0 {
				hs.Commit += uint64(1 + rng.IntN(int(m.last()-hs.Commit)))
			}
			from := m.last() + 1
			if m.last() > m.snap.Index && rng.IntN(4) == 0 {
				from = m.snap.Index + 1 + rng.Uint64N(m.last()-m.snap.Index)
			}
			var ents []core.Entry
			for i := range uint64(rng.IntN(6)) {
				ents = append(ents, core.Entry{Index: from + i, Term: hs.Term, Data: powerLossValue(rng, states)})
			}
			if hs.Term == 0 {
				hs.Term = 1
				for i := range ents {
					ents[i].Term = 1
				}
			}
			next.save(hs, ents)
			err = s.Save(hs, ents)
		case r < 6: // a commit index for the marker file, never synced
			if m.marker >= m.last() {
				continue
			}
			idx := m.marker + 1 + rng.Uint64N(m.last()-m.marker)
			markers = append(markers, idx) // may reach the disk even if the call fails
			if err := s.WriteCommit(idx); err != nil {
				if !errors.Is(err, errPowerCut) {
					return out, fmt.Errorf("operation %d: WriteCommit(%d): %w", op, idx, err)
				}
				op = nOps // the power is off: stop
				continue
			}
			// Not a WAL state: the marker survives a power cut or not
			// independently of the WAL (see markers).
			m.marker = idx
			continue
		case r < 8: // InstallSnapshot: inside the log (keeps the rest) or past it
			idx := m.snap.Index + 1 + rng.Uint64N(m.last()-m.snap.Index+3)
			if rng.IntN(2) == 0 && m.last() > m.snap.Index+2 {
				idx = m.last() - 1 // near the end: whole segments become compactable
			}
			term, ok := m.term(idx)
			if !ok || rng.IntN(4) == 0 {
				term = m.hs.Term + 1
			}
			meta := core.SnapshotMeta{Index: idx, Term: term, Membership: core.Membership{Voters: []uint64{1, 2, 3}}}
			next.install(meta)
			err = s.InstallSnapshot(meta)
		default:
			if rng.IntN(2) == 0 {
				continue // let segments pile up, so that one Compact removes several
			}
			if rng.IntN(2) == 0 {
				pfs.cutSoon(2 + rng.IntN(4)) // often inside the Compact: a removal or the directory fsync
			}
			err = s.Compact(m.snap.Index)
			if err == nil {
				continue // no state change
			}
		}
		if err != nil {
			if !errors.Is(err, errPowerCut) {
				return out, fmt.Errorf("operation %d: %w", op, err)
			}
			// The write in flight may or may not have reached the disk.
			states = append(states, next)
			break
		}
		m = next
		states = append(states, m.clone())
		if synced {
			durable = len(states) - 1
		}
	}
	pfs.cut()
	if s != nil {
		s.Close() // fails after the cut; the image was taken before
	}

	var logs logCapture
	ropts := opts
	ropts.FS = pfs.image
	ropts.Logger = logs.logger()
	r, err := Open(dir, ropts)
	if err != nil {
		return out, fmt.Errorf("power cut %s: Open: %w", pfs.cutInfo, err)
	}
	defer r.Close()
	got, marker, err := matchRecovered(r, states, durable, markers, rng)
	if err != nil {
		return out, fmt.Errorf("power cut %s: %w", pfs.cutInfo, err)
	}
	// The recovered Store keeps working, and what it writes survives.
	want := states[got].clone()
	want.marker = min(marker, want.last()) // recovery clamps and rewrites it
	noMarker := states[got].clone()
	noMarker.marker = 0
	if want.commit() > noMarker.commit() {
		out.markerCommits = 1
	}
	hs := want.hs
	hs.Term++
	e := []core.Entry{{Index: want.last() + 1, Term: hs.Term, Data: []byte("after")}}
	if err := r.Save(hs, e); err != nil {
		return out, fmt.Errorf("Save after recovery: %w", err)
	}
	want.save(hs, e)
	if err := r.Close(); err != nil {
		return out, err
	}
	r2, err := Open(dir, ropts)
	if err != nil {
		return out, fmt.Errorf("reopen after recovery: %w", err)
	}
	defer r2.Close()
	if err := verifyStore(r2, &want, rng); err != nil {
		return out, fmt.Errorf("reopen after recovery: %w", err)
	}
	if !strings.HasPrefix(pfs.cutInfo, "after") {
		out.midWorkload = 1
	}
	if lost := len(states) - 1 - got; lost > 0 {
		out.lossy, out.lostWrites = 1, lost
	}
	if strings.Contains(logs.String(), "cutting torn WAL tail") {
		out.tornTails = 1
	}
	if strings.Contains(logs.String(), "interrupted Compact") {
		out.compactHoles = 1
	}
	return out, nil
}

// powerLossValue returns an entry's data: empty, random, or hostile (well-
// formed batch headers with sequence numbers the log is about to use).
func powerLossValue(rng *rand.Rand, states []refLog) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		v := forgedBatchHeaders(uint64(len(states) + rng.IntN(3)))
		return append(v, powerLossRandom(rng, rng.IntN(100))...)
	}
	return powerLossRandom(rng, 1+rng.IntN(600))
}

func powerLossRandom(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// matchRecovered finds which of the allowed states r recovered: the WAL
// state after one of states[durable:], with a commit index that the marker
// holding one of markers explains. It checks the commit bounds first: never
// above the last durable index, never below the commit of the last synced
// Save. It returns the state's position and the marker value.
func matchRecovered(r *Store, states []refLog, durable int, markers []uint64, rng *rand.Rand) (int, uint64, error) {
	hs, _, err := r.InitialState()
	if err != nil {
		return 0, 0, err
	}
	last, _ := r.LastIndex()
	if hs.Commit > last {
		return 0, 0, fmt.Errorf("recovered commit %d is past the last index %d", hs.Commit, last)
	}
	// The floor is the commit of the last durable write without the
	// marker (never durable), or lower if a later write that may have
	// survived cut the log below it (this workload truncates freely;
	// Raft never truncates committed entries).
	floor := uint64(math.MaxUint64)
	for j := durable; j < len(states); j++ {
		c := states[j].clone()
		c.marker = 0
		floor = min(floor, c.commit())
	}
	if hs.Commit < floor {
		return 0, 0, fmt.Errorf("recovered commit %d is below %d, the commit of the last durable write", hs.Commit, floor)
	}
	var mismatch error
	for j := len(states) - 1; j >= durable; j-- {
		cand := states[j].clone()
		found := false
		for _, v := range markers {
			if cand.marker = v; cand.commit() == hs.Commit {
				found = true
				break
			}
		}
		if !found {
			if mismatch == nil {
				mismatch = fmt.Errorf("commit %d: no marker value explains it (state %d: saved commit %d, snapshot %d, last %d)",
					hs.Commit, j, cand.hs.Commit, cand.snap.Index, cand.last())
			}
			continue
		}
		if err := verifyStore(r, &cand, rng); err != nil {
			if mismatch == nil {
				mismatch = err
			}
			continue
		}
		return j, cand.marker, nil
	}
	return 0, 0, fmt.Errorf("the recovered state is none of the %d allowed (states %d..%d; durable from %d); against the newest: %v",
		len(states)-durable, durable, len(states)-1, durable, mismatch)
}
