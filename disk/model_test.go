package disk

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
)

// refLog is the in-memory reference the Store is checked against: the
// obvious implementation of the driver.Storage contract.
type refLog struct {
	hs   core.HardState
	snap core.SnapshotMeta
	ents []core.Entry // indices snap.Index+1 .. last
	// marker is the commit index last recorded by WriteCommit.
	marker uint64
}

// commit is the commit index InitialState must report: the larger of the
// saved one and the marker, capped at the last index, and at least the
// snapshot index.
func (m *refLog) commit() uint64 {
	return max(min(max(m.hs.Commit, m.marker), m.last()), m.snap.Index)
}

// wantHS is the hard state InitialState must report.
func (m *refLog) wantHS() core.HardState {
	hs := m.hs
	hs.Commit = m.commit()
	return hs
}

func (m *refLog) last() uint64 { return m.snap.Index + uint64(len(m.ents)) }

func (m *refLog) clone() refLog {
	c := *m
	c.ents = slices.Clone(m.ents)
	c.snap.Membership = m.snap.Membership.Clone()
	return c
}

func (m *refLog) term(i uint64) (uint64, bool) {
	switch {
	case i == m.snap.Index:
		return m.snap.Term, true
	case i < m.snap.Index || i > m.last():
		return 0, false
	}
	return m.ents[i-m.snap.Index-1].Term, true
}

func (m *refLog) save(hs core.HardState, ents []core.Entry) {
	if !hs.IsZero() {
		m.hs = hs
	}
	if len(ents) == 0 {
		return
	}
	m.ents = append(m.ents[:ents[0].Index-m.snap.Index-1], ents...)
}

func (m *refLog) install(meta core.SnapshotMeta) {
	if t, ok := m.term(meta.Index); ok && t == meta.Term {
		m.ents = slices.Clone(m.ents[meta.Index-m.snap.Index:])
	} else {
		m.ents = nil
	}
	m.snap = meta
}

// verifyStore checks every LogReader answer of s against m.
func verifyStore(s *Store, m *refLog, rng *rand.Rand) error {
	hs, snap, err := s.InitialState()
	if err != nil {
		return fmt.Errorf("InitialState: %w", err)
	}
	if want := m.wantHS(); hs != want {
		return fmt.Errorf("hard state %+v, want %+v", hs, want)
	}
	if !sameSnapshot(snap, m.snap) {
		return fmt.Errorf("snapshot %+v, want %+v", snap, m.snap)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != m.snap.Index+1 || last != m.last() {
		return fmt.Errorf("range [%d, %d], want [%d, %d]", first, last, m.snap.Index+1, m.last())
	}
	for i := m.snap.Index; i <= m.last(); i++ {
		want, _ := m.term(i)
		if got, err := s.Term(i); err != nil || got != want {
			return fmt.Errorf("Term(%d) = %d, %v; want %d", i, got, err, want)
		}
	}
	if m.snap.Index > 0 {
		if _, err := s.Term(m.snap.Index - 1); !errors.Is(err, core.ErrCompacted) {
			return fmt.Errorf("Term below snapshot: %v, want ErrCompacted", err)
		}
	}
	if _, err := s.Term(m.last() + 1); !errors.Is(err, core.ErrUnavailable) {
		return fmt.Errorf("Term past last: %v, want ErrUnavailable", err)
	}
	all, err := s.Entries(first, last+1, 1<<62)
	if err != nil {
		return fmt.Errorf("Entries(all): %w", err)
	}
	if err := checkEntries(all, m.ents); err != nil {
		return fmt.Errorf("Entries(all): %w", err)
	}
	if _, err := s.Entries(first-1, last+1, 1<<62); first > 1 && !errors.Is(err, core.ErrCompacted) {
		return fmt.Errorf("Entries below first: %v, want ErrCompacted", err)
	}
	if _, err := s.Entries(first, last+2, 1<<62); !errors.Is(err, core.ErrUnavailable) {
		return fmt.Errorf("Entries past last: %v, want ErrUnavailable", err)
	}
	// Random ranges with byte limits: a prefix of the range, within the
	// limit unless it is a single entry, and never empty.
	for range 3 {
		if len(m.ents) == 0 {
			break
		}
		lo := first + rng.Uint64N(uint64(len(m.ents)))
		hi := lo + 1 + rng.Uint64N(last+1-lo)
		maxBytes := rng.Uint64N(2000)
		got, err := s.Entries(lo, hi, maxBytes)
		if err != nil {
			return fmt.Errorf("Entries(%d, %d, %d): %w", lo, hi, maxBytes, err)
		}
		if len(got) == 0 {
			return fmt.Errorf("Entries(%d, %d, %d) returned nothing", lo, hi, maxBytes)
		}
		want := m.ents[lo-first : hi-first]
		if err := checkEntries(got, want[:len(got)]); err != nil {
			return fmt.Errorf("Entries(%d, %d, %d): %w", lo, hi, maxBytes, err)
		}
		var size uint64
		for i := range got {
			size += got[i].Size()
		}
		if len(got) > 1 && size > maxBytes {
			return fmt.Errorf("Entries(%d, %d, %d): %d bytes over the limit", lo, hi, maxBytes, size)
		}
		if len(got) < len(want) && size+want[len(got)].Size() <= maxBytes {
			return fmt.Errorf("Entries(%d, %d, %d): stopped early at %d bytes", lo, hi, maxBytes, size)
		}
	}
	return nil
}

// TestModelRandomized drives the Store and refLog with the same random
// operations (append, overwrite a suffix, hard state, install snapshot,
// compact, reopen) and compares them after every step. Replay a failure
// with -disk.seed=<seed>.
func TestModelRandomized(t *testing.T) {
	seeds := []int64{*flagSeed}
	if *flagSeed == 0 {
		base := time.Now().UnixNano()
		seeds = []int64{base, base + 1, base + 2}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (replay with: go test ./disk -run TestModelRandomized -disk.seed=%d)", seed, seed)
			runModel(t, seed, 300)
		})
	}
}

func runModel(t *testing.T, seed int64, steps int) {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	dir := t.TempDir()
	opts := testOptions()
	opts.SegmentBytes = MinSegmentBytes // rotate often
	opts.MaxRecordBytes = 2048
	opts.CacheBytes = int64(rng.IntN(3000)) // 0 sometimes: no cache
	s := mustOpen(t, dir, opts)
	defer func() { s.Close() }()
	var m refLog
	term := uint64(1)
	var dropped, reopens, installs int
	for step := range steps {
		var op string
		switch r := rng.IntN(100); {
		case r < 50: // append, maybe overwriting a suffix, maybe with a hard state
			start := m.last() + 1
			if len(m.ents) > 0 && rng.IntN(4) == 0 {
				start = m.snap.Index + 1 + rng.Uint64N(uint64(len(m.ents)))
				term++
			}
			n := 1 + rng.IntN(8)
			var ents []core.Entry
			for i := range n {
				size := rng.IntN(300)
				if rng.IntN(20) == 0 {
					size = 1000 + rng.IntN(1000)
				}
				idx := start + uint64(i)
				ents = append(ents, core.Entry{Index: idx, Term: term, Type: core.EntryType(rng.IntN(2)), Data: payload(idx, term, size)})
			}
			var hs core.HardState
			if rng.IntN(2) == 0 {
				hs = core.HardState{Term: term, Vote: rng.Uint64N(4), Commit: rng.Uint64N(start + uint64(n))}
			}
			op = fmt.Sprintf("Save(%+v, [%d, %d] term %d)", hs, start, start+uint64(n)-1, term)
			if err := s.Save(hs, ents); err != nil {
				t.Fatalf("step %d %s: %v", step, op, err)
			}
			m.save(hs, ents)
		case r < 60: // hard state only
			term += uint64(rng.IntN(2))
			hs := core.HardState{Term: term, Vote: rng.Uint64N(4), Commit: rng.Uint64N(m.last() + 1)}
			op = fmt.Sprintf("Save(%+v)", hs)
			if err := s.Save(hs, nil); err != nil {
				t.Fatalf("step %d %s: %v", step, op, err)
			}
			m.save(hs, nil)
		case r < 72: // install a snapshot: matching (keeps the suffix) or not
			meta := core.SnapshotMeta{Membership: core.Membership{Voters: []uint64{1, 2, 3}[:1+rng.IntN(3)]}}
			if rng.IntN(5) == 0 {
				meta.Membership.Learners = []uint64{9}
			}
			switch {
			case len(m.ents) > 0 && rng.IntN(3) > 0:
				meta.Index = m.snap.Index + 1 + rng.Uint64N(uint64(len(m.ents)))
				meta.Term, _ = m.term(meta.Index)
				if rng.IntN(4) == 0 {
					term++
					meta.Term = term // conflicting: the log is discarded
				}
			default:
				meta.Index = m.last() + 1 + rng.Uint64N(5)
				term++
				meta.Term = term
			}
			op = fmt.Sprintf("InstallSnapshot(%d/%d)", meta.Index, meta.Term)
			if err := s.InstallSnapshot(meta); err != nil {
				t.Fatalf("step %d %s: %v", step, op, err)
			}
			m.install(meta)
			installs++
		case r < 82:
			idx := rng.Uint64N(m.snap.Index + 1)
			op = fmt.Sprintf("Compact(%d)", idx)
			before := s.Stats().Segments
			if err := s.Compact(idx); err != nil {
				t.Fatalf("step %d %s: %v", step, op, err)
			}
			after := s.Stats().Segments
			if after > before {
				t.Fatalf("step %d %s: segments grew from %d to %d", step, op, before, after)
			}
			dropped += before - after
		default:
			op = "reopen"
			reopens++
			mustClose(t, s)
			s = mustOpen(t, dir, opts)
		}
		if err := verifyStore(s, &m, rng); err != nil {
			t.Fatalf("seed %d step %d after %s: %v", seed, step, op, err)
		}
	}
	st := s.Stats()
	t.Logf("%d steps: %d installs, %d reopens, %d segments dropped; now %d segments, log [%d, %d], cache %d entries",
		steps, installs, reopens, dropped, st.Segments, st.FirstIndex, st.LastIndex, st.CacheEntries)
	// The end state survives a final reopen too.
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	if err := verifyStore(s, &m, rng); err != nil {
		t.Fatalf("seed %d after final reopen: %v", seed, err)
	}
}
