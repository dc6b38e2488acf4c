package disk

import (
	"fmt"
	"sort"
	"unsafe"

	"github.com/rafty-db/rafty/core"
)

// The in-memory index maps every live log index to the segment and byte
// offset of its record, and to its term, without keeping payloads: 4 bytes
// per entry for the offset plus one 16-byte run per change of term.

// chunk locates a contiguous run of live entries that all sit in one
// segment. Invariant: a segment has at most one chunk, because the live
// version of entry i+1 is always written after the live version of entry i
// (writing i supersedes every stored entry >= i), so live entries are
// ordered by segment and, within one, by offset.
type chunk struct {
	seq   uint64   // segment sequence number
	first uint64   // log index of offs[0]
	offs  []uint32 // offs[k] = offset of the record of entry first+k
}

func (c *chunk) end() uint64 { return c.first + uint64(len(c.offs)) }

// locIndex is the ordered list of chunks. Invariant: chunks are contiguous
// (chunks[k].end() == chunks[k+1].first), non-empty, in segment order.
//
// Memory: only the last chunk grows. It starts on the spare array; when its
// segment is sealed it is copied to an exactly sized array and the spare
// taken back, so appends create no garbage once the spare has grown to one
// segment's entries, and sealed chunks carry no slack. This keeps recovery's
// peak heap at the index itself plus one segment's worth.
type locIndex struct {
	chunks []chunk
	spare  []uint32 // backing array for the next new chunk; nil while lent
}

// find returns the chunk holding index i, or nil.
func (x *locIndex) find(i uint64) *chunk {
	k := sort.Search(len(x.chunks), func(k int) bool { return x.chunks[k].end() > i })
	if k == len(x.chunks) || x.chunks[k].first > i {
		return nil
	}
	return &x.chunks[k]
}

// truncateFrom forgets every index >= i.
func (x *locIndex) truncateFrom(i uint64) {
	for len(x.chunks) > 0 {
		c := &x.chunks[len(x.chunks)-1]
		switch {
		case c.first >= i:
			x.chunks[len(x.chunks)-1] = chunk{}
			x.chunks = x.chunks[:len(x.chunks)-1]
			continue
		case c.end() > i:
			c.offs = c.offs[:i-c.first]
		}
		return
	}
}

// append records that entry i (== the current end) is at seq/off.
func (x *locIndex) append(i, seq uint64, off uint32) {
	if n := len(x.chunks); n > 0 {
		c := &x.chunks[n-1]
		if c.seq == seq && c.end() == i {
			c.offs = append(c.offs, off)
			return
		}
	}
	offs := append(x.spare[:0], off)
	x.spare = nil // lent to the new chunk until seal
	x.chunks = append(x.chunks, chunk{seq: seq, first: i, offs: offs})
}

// trimBefore forgets every index < i.
func (x *locIndex) trimBefore(i uint64) {
	k := 0
	for k < len(x.chunks) && x.chunks[k].end() <= i {
		k++
	}
	if k > 0 {
		x.chunks = append(x.chunks[:0], x.chunks[k:]...)
	}
	if len(x.chunks) > 0 && x.chunks[0].first < i {
		c := &x.chunks[0]
		c.offs = shrink(c.offs[i-c.first:])
		c.first = i
	}
}

// seal is called once segment seq will not be appended to again: its chunk
// moves to an exactly sized array and its growing array becomes the spare.
func (x *locIndex) seal(seq uint64) {
	if n := len(x.chunks); n > 0 && x.chunks[n-1].seq == seq {
		c := &x.chunks[n-1]
		old := c.offs
		c.offs = append(make([]uint32, 0, len(old)), old...)
		if cap(old) > cap(x.spare) {
			x.spare = old[:0]
		}
	}
}

// shrink copies s into an exactly sized array when a quarter or more of its
// backing array is unused.
func shrink(s []uint32) []uint32 {
	if cap(s)-len(s) < cap(s)/4 {
		return s
	}
	return append([]uint32(nil), s...)
}

// firstSeq returns the segment of the first live entry, and false when no
// entry is live.
func (x *locIndex) firstSeq() (uint64, bool) {
	if len(x.chunks) == 0 {
		return 0, false
	}
	return x.chunks[0].seq, true
}

func (x *locIndex) memBytes() int64 {
	n := int64(cap(x.chunks))*int64(unsafe.Sizeof(chunk{})) + int64(cap(x.spare))*4
	for i := range x.chunks {
		n += int64(cap(x.chunks[i].offs)) * 4
	}
	return n
}

// termRun says that entries from start up to the next run's start have term.
type termRun struct{ start, term uint64 }

// termIndex is the run-length encoded terms of the live entries. Terms
// change rarely, so this is tiny next to the offsets. Invariant: runs are
// ordered by start and adjacent runs have different terms.
type termIndex struct {
	runs []termRun
}

// at returns the term of i; the caller guarantees i is live.
func (t *termIndex) at(i uint64) uint64 {
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].start > i })
	return t.runs[k-1].term
}

func (t *termIndex) truncateFrom(i uint64) {
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].start >= i })
	t.runs = t.runs[:k]
}

func (t *termIndex) append(i, term uint64) {
	if n := len(t.runs); n > 0 && t.runs[n-1].term == term {
		return
	}
	t.runs = append(t.runs, termRun{i, term})
}

func (t *termIndex) trimBefore(i uint64) {
	k := sort.Search(len(t.runs), func(k int) bool { return t.runs[k].start > i })
	if k == 0 {
		return
	}
	t.runs = append(t.runs[:0], t.runs[k-1:]...)
	t.runs[0].start = max(t.runs[0].start, i)
}

// logState is the durable state as the index sees it. The same transition
// functions serve live writes and recovery, so replay reproduces exactly
// what the writes produced.
//
// Invariants: FirstIndex = snap.Index+1; every index in (snap.Index, last]
// has a location and a term (recovery establishes it before the Store is
// used; see replayer.missingUpTo).
type logState struct {
	hs    core.HardState
	snap  core.SnapshotMeta
	last  uint64
	locs  locIndex
	terms termIndex
}

func (s *logState) first() uint64 { return s.snap.Index + 1 }

// applyEntry records that entry i with term was written at seq/off. Writing
// i supersedes every stored entry >= i.
func (s *logState) applyEntry(i, term, seq uint64, off uint32) error {
	if i <= s.snap.Index {
		return fmt.Errorf("entry %d is at or below the snapshot index %d", i, s.snap.Index)
	}
	if i > s.last+1 {
		return fmt.Errorf("entry %d leaves a gap after the last index %d", i, s.last)
	}
	if i <= s.last {
		s.locs.truncateFrom(i)
		s.terms.truncateFrom(i)
	}
	s.locs.append(i, seq, off)
	s.terms.append(i, term)
	s.last = i
	return nil
}

// applySnapshot records an InstallSnapshot marker.
func (s *logState) applySnapshot(mk snapshotMarker) error {
	if mk.meta.Index < s.snap.Index {
		return fmt.Errorf("snapshot %d is older than the installed snapshot %d", mk.meta.Index, s.snap.Index)
	}
	if mk.keep {
		if mk.meta.Index > s.last {
			return fmt.Errorf("snapshot %d keeps the log but the last index is %d", mk.meta.Index, s.last)
		}
		s.locs.trimBefore(mk.meta.Index + 1)
		s.terms.trimBefore(mk.meta.Index + 1)
	} else {
		s.locs = locIndex{}
		s.terms = termIndex{}
		s.last = mk.meta.Index
	}
	s.snap = core.SnapshotMeta{Index: mk.meta.Index, Term: mk.meta.Term, Membership: mk.meta.Membership.Clone()}
	return nil
}

// term returns the term of i for snap.Index <= i <= last.
func (s *logState) term(i uint64) (uint64, error) {
	switch {
	case i < s.snap.Index:
		return 0, core.ErrCompacted
	case i == s.snap.Index:
		return s.snap.Term, nil
	case i > s.last:
		return 0, core.ErrUnavailable
	}
	return s.terms.at(i), nil
}
