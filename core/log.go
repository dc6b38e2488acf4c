package core

import (
	"errors"
	"fmt"
)

// raftLog is the node's view of the log: the durable part read through a
// LogReader, followed by unstable entries not yet acknowledged durable.
//
//	index:   first ... stableLast | unstableOffset ... lastIndex
//	source:  LogReader            | unstable (in memory)
//
// Invariants:
//   - unstable[i].Index == unstableOffset+i, contiguous.
//   - unstableOffset <= stableLast+1. Stored entries at or above
//     unstableOffset are superseded (a conflicting suffix the core truncated)
//     and are never read.
//   - While pendingSnap is set the stored log is superseded entirely: the
//     log is the snapshot followed by unstable, until the snapshot is
//     acknowledged durable.
//   - handedOut >= unstableOffset-1: entries up to handedOut were given to
//     the driver to persist; truncation at or below it lowers it so the
//     replacement is handed out again.
//   - applied <= applying <= committed <= lastIndex().
//   - With async set (Config.AsyncStorageWrites): applying <=
//     persistedIndex() whenever committed entries are handed out (the
//     state machine never runs ahead of the local durable log), and
//     applyingBytes is the sum of applyingBatches, the committed entries
//     handed out and not yet acknowledged applied.
//   - A slice of unstable handed out (in a Ready or a message) is never
//     written again: truncation copies (see appendEntries).
type raftLog struct {
	stable LogReader
	// stableLast is the last index the LogReader holds, tracked here
	// because it only changes through the driver's acknowledgements.
	stableLast uint64

	unstable       []Entry
	unstableOffset uint64
	handedOut      uint64

	// pendingSnap is a snapshot accepted from a leader, not yet durable.
	pendingSnap     *SnapshotMeta
	snapHandedOut   bool
	lastSnapIndex   uint64 // index of the latest known snapshot (0 if none)
	lastSnapTerm    uint64
	committed       uint64
	applying        uint64 // committed entries handed out for applying
	applied         uint64 // committed entries acknowledged applied
	maxApplyingSize uint64 // committed bytes per Ready

	// async: Config.AsyncStorageWrites. Committed entries are then handed
	// out only up to persistedIndex(), and at most maxApplyingBytes of
	// them may await AckApplied (applyingBatches, one per Ready, oldest
	// first; bounded because nothing is handed out past the limit).
	async            bool
	maxApplyingBytes uint64
	applyingBytes    uint64
	applyingBatches  []applyingBatch
}

// applyingBatch is one Ready's committed entries awaiting AckApplied.
type applyingBatch struct {
	last  uint64
	bytes uint64
}

func newRaftLog(stable LogReader, snap SnapshotMeta, maxApplyingSize uint64) (*raftLog, error) {
	last, err := stable.LastIndex()
	if err != nil {
		return nil, &StorageError{Err: err}
	}
	first, err := stable.FirstIndex()
	if err != nil {
		return nil, &StorageError{Err: err}
	}
	if first == 0 || first > last+1 {
		return nil, &StorageError{Err: fmt.Errorf("log bounds inconsistent: first %d, last %d", first, last)}
	}
	l := &raftLog{
		stable:          stable,
		stableLast:      last,
		unstableOffset:  last + 1,
		handedOut:       last,
		lastSnapIndex:   snap.Index,
		lastSnapTerm:    snap.Term,
		committed:       first - 1,
		applying:        first - 1,
		applied:         first - 1,
		maxApplyingSize: maxApplyingSize,
	}
	return l, nil
}

func (l *raftLog) lastIndex() uint64 {
	if n := len(l.unstable); n > 0 {
		return l.unstable[n-1].Index
	}
	if l.pendingSnap != nil {
		return l.pendingSnap.Index
	}
	return l.unstableOffset - 1
}

// firstIndex returns the first index whose entry may be read.
func (l *raftLog) firstIndex() (uint64, error) {
	if l.pendingSnap != nil {
		return l.pendingSnap.Index + 1, nil
	}
	first, err := l.stable.FirstIndex()
	if err != nil {
		return 0, &StorageError{Err: err}
	}
	return min(first, l.unstableOffset), nil
}

func (l *raftLog) lastTerm() (uint64, error) { return l.term(l.lastIndex()) }

// term returns the term of entry i. It returns ErrCompacted or
// ErrUnavailable (unwrapped) for indexes outside the log, and a
// *StorageError for anything else.
func (l *raftLog) term(i uint64) (uint64, error) {
	if i > l.lastIndex() {
		return 0, ErrUnavailable
	}
	if i >= l.unstableOffset && len(l.unstable) > 0 {
		return l.unstable[i-l.unstableOffset].Term, nil
	}
	if l.pendingSnap != nil {
		switch {
		case i == l.pendingSnap.Index:
			return l.pendingSnap.Term, nil
		case i < l.pendingSnap.Index:
			return 0, ErrCompacted
		}
	}
	if i == 0 {
		return 0, nil
	}
	if i == l.lastSnapIndex {
		return l.lastSnapTerm, nil
	}
	t, err := l.stable.Term(i)
	if err != nil && !errors.Is(err, ErrCompacted) && !errors.Is(err, ErrUnavailable) {
		return 0, &StorageError{Err: err}
	}
	if errors.Is(err, ErrCompacted) {
		return 0, ErrCompacted
	}
	if errors.Is(err, ErrUnavailable) {
		return 0, ErrUnavailable
	}
	return t, nil
}

// matchTerm reports whether entry i exists with term t.
func (l *raftLog) matchTerm(i, t uint64) bool {
	lt, err := l.term(i)
	return err == nil && lt == t
}

// isUpToDate implements the election restriction (paper §5.4.1): a log
// ending in (lastIdx, lastTerm) is at least as up-to-date as ours.
func (l *raftLog) isUpToDate(lastIdx, lastTerm uint64) (bool, error) {
	ourTerm, err := l.lastTerm()
	if err != nil {
		return false, err
	}
	return lastTerm > ourTerm || (lastTerm == ourTerm && lastIdx >= l.lastIndex()), nil
}

// entries returns entries [lo, hi) limited to maxBytes (at least one).
func (l *raftLog) entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if hi > l.lastIndex()+1 {
		return nil, fmt.Errorf("entries [%d, %d) past last index %d: %w", lo, hi, l.lastIndex(), ErrUnavailable)
	}
	first, err := l.firstIndex()
	if err != nil {
		return nil, err
	}
	if lo < first {
		return nil, ErrCompacted
	}
	var out []Entry
	if lo < l.unstableOffset {
		stableHi := min(hi, l.unstableOffset)
		ents, err := l.stable.Entries(lo, stableHi, maxBytes)
		switch {
		case errors.Is(err, ErrCompacted):
			return nil, ErrCompacted
		case err != nil:
			return nil, &StorageError{Err: err}
		case len(ents) == 0:
			return nil, &StorageError{Err: fmt.Errorf("storage returned no entries for [%d, %d)", lo, stableHi)}
		case ents[0].Index != lo:
			return nil, &StorageError{Err: fmt.Errorf("storage returned entry %d for [%d, %d)", ents[0].Index, lo, stableHi)}
		}
		if uint64(len(ents)) < stableHi-lo || stableHi == hi {
			return ents, nil // byte limit reached, or the range was all stable
		}
		out = ents
	}
	from := max(lo, l.unstableOffset)
	us := l.unstable[from-l.unstableOffset : hi-l.unstableOffset]
	if out == nil {
		return limitSize(us, maxBytes), nil
	}
	// Copy into a fresh slice: appending to the storage's slice could
	// write into memory it still owns.
	size := entriesSize(out)
	combined := make([]Entry, len(out), len(out)+len(us))
	copy(combined, out)
	for i := range us {
		size += us[i].Size()
		if size > maxBytes {
			break
		}
		combined = append(combined, us[i])
	}
	return combined, nil
}

// limitSize returns the longest prefix of ents within maxBytes, and at
// least one entry.
func limitSize(ents []Entry, maxBytes uint64) []Entry {
	if len(ents) == 0 {
		return ents
	}
	size := ents[0].Size()
	for i := 1; i < len(ents); i++ {
		size += ents[i].Size()
		if size > maxBytes {
			return ents[:i]
		}
	}
	return ents
}

// append adds entries that directly follow lastIndex (leader path).
func (l *raftLog) append(ents ...Entry) {
	if len(l.unstable) == 0 && l.pendingSnap == nil {
		l.unstableOffset = l.lastIndex() + 1
	}
	l.unstable = append(l.unstable, ents...)
}

// truncateAndAppend stores ents, replacing every entry at or above
// ents[0].Index (follower path, after conflict detection).
func (l *raftLog) truncateAndAppend(ents []Entry) {
	after := ents[0].Index
	switch {
	case after == l.lastIndex()+1:
		l.append(ents...)
		return
	case after <= l.unstableOffset:
		// Replaces all unstable entries and possibly stored ones too:
		// start a new slice so handed-out slices stay intact.
		l.unstableOffset = after
		l.unstable = append([]Entry(nil), ents...)
	default:
		keep := l.unstable[:after-l.unstableOffset]
		// Full slice expression forces a copy: never write into an
		// array that a Ready or message may still reference.
		l.unstable = append(keep[:len(keep):len(keep)], ents...)
	}
	if l.handedOut >= after {
		l.handedOut = after - 1
	}
}

// findConflict returns the index of the first entry of ents whose term
// differs from ours (or which we lack), or 0 if all match.
func (l *raftLog) findConflict(ents []Entry) (uint64, error) {
	for i := range ents {
		t, err := l.term(ents[i].Index)
		if err != nil {
			var se *StorageError
			if errors.As(err, &se) {
				return 0, err
			}
			return ents[i].Index, nil
		}
		if t != ents[i].Term {
			return ents[i].Index, nil
		}
	}
	return 0, nil
}

// findConflictByTerm returns the largest index <= idx whose term is <= t,
// with that term. It lets both sides of a rejected append skip whole terms
// (fast backoff): see replication.go for a worked example. The search
// stops at the first available index.
func (l *raftLog) findConflictByTerm(idx, t uint64) (uint64, uint64, error) {
	idx = min(idx, l.lastIndex())
	for {
		lt, err := l.term(idx)
		if errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
			return idx, 0, nil
		}
		if err != nil {
			return 0, 0, err
		}
		if lt <= t || idx == 0 {
			return idx, lt, nil
		}
		idx--
	}
}

// commitTo raises the commit index; it never lowers it.
func (l *raftLog) commitTo(i uint64) {
	if i > l.committed {
		l.committed = min(i, l.lastIndex())
	}
}

// hasUnpersisted reports whether entries or a snapshot await handing out.
func (l *raftLog) hasUnpersisted() bool {
	if l.pendingSnap != nil && !l.snapHandedOut {
		return true
	}
	return len(l.unstable) > 0 && l.handedOut < l.lastIndex()
}

// takeUnpersisted returns the entries not yet handed out for persisting.
func (l *raftLog) takeUnpersisted() []Entry {
	if len(l.unstable) == 0 || l.handedOut >= l.lastIndex() {
		return nil
	}
	from := max(l.handedOut+1, l.unstableOffset)
	ents := l.unstable[from-l.unstableOffset:]
	l.handedOut = l.lastIndex()
	return ents
}

// stableTo records that entries up to (i, t) are durable. If the entry at
// i changed since it was handed out, the acknowledgement is for a
// superseded entry and only the prefix before the change is kept stable.
func (l *raftLog) stableTo(i, t uint64) {
	if i > l.stableLast || i >= l.unstableOffset {
		// The Save replaced everything stored from the batch's first
		// index, so stored entries now end at i.
		l.stableLast = i
	}
	if len(l.unstable) == 0 || i < l.unstableOffset {
		return
	}
	if i > l.lastIndex() || l.unstable[i-l.unstableOffset].Term != t {
		return // superseded after being handed out; it will be resent
	}
	n := i + 1 - l.unstableOffset
	l.unstable = l.unstable[n:]
	if len(l.unstable) == 0 {
		l.unstable = nil
	}
	l.unstableOffset = i + 1
	l.stableLast = i
	// A truncation after the hand-out may have lowered handedOut below
	// entries that turned out identical (same index and term: the same
	// entry, by Log Matching); they are durable now, not to hand out.
	l.handedOut = max(l.handedOut, i)
}

// persistedIndex is the last index that is both durable and current.
func (l *raftLog) persistedIndex() uint64 {
	if l.pendingSnap != nil {
		return 0
	}
	return min(l.stableLast, l.unstableOffset-1)
}

// restore replaces the log with a snapshot (paper §7, follower side).
func (l *raftLog) restore(meta SnapshotMeta) {
	m := meta
	m.Membership = meta.Membership.Clone()
	l.pendingSnap = &m
	l.snapHandedOut = false
	l.unstable = nil
	l.unstableOffset = meta.Index + 1
	l.handedOut = meta.Index
	l.committed = meta.Index
	// Entries at or below the snapshot will never be applied one by one.
	l.applying = meta.Index
}

// snapshotStable records that the pending snapshot is installed.
func (l *raftLog) snapshotStable(index uint64) {
	if l.pendingSnap == nil || l.pendingSnap.Index != index {
		return
	}
	l.lastSnapIndex, l.lastSnapTerm = l.pendingSnap.Index, l.pendingSnap.Term
	l.stableLast = index
	l.applied = max(l.applied, index)
	l.releaseApplying()
	l.pendingSnap = nil
	l.snapHandedOut = false
}

// commitLimit is the last committed index that may be handed out for
// applying: in async mode never past the local durable log, so the state
// machine never holds an entry this node could lose in a crash (a
// follower may learn a commit index before its own copy is durable).
func (l *raftLog) commitLimit() uint64 {
	if l.async {
		return min(l.committed, l.persistedIndex())
	}
	return l.committed
}

// hasNextCommitted reports whether committed entries can be handed out
// now. In async mode entries blocked behind persistence or
// maxApplyingBytes do not count, so HasReady does not spin on them.
func (l *raftLog) hasNextCommitted() bool {
	if l.pendingSnap != nil || l.applying >= l.commitLimit() {
		return false
	}
	return !l.async || len(l.applyingBatches) == 0 || l.applyingBytes < l.maxApplyingBytes
}

// takeCommitted hands out the next committed entries, at most
// maxApplyingSize bytes (at least one entry); in async mode also at most
// what is left of maxApplyingBytes (at least one entry when nothing is
// outstanding), and only up to commitLimit.
func (l *raftLog) takeCommitted() ([]Entry, error) {
	if !l.hasNextCommitted() {
		return nil, nil
	}
	maxBytes := l.maxApplyingSize
	if l.async && l.applyingBytes < l.maxApplyingBytes {
		maxBytes = min(maxBytes, l.maxApplyingBytes-l.applyingBytes)
	}
	ents, err := l.entries(l.applying+1, l.commitLimit()+1, maxBytes)
	if err != nil {
		if errors.Is(err, ErrCompacted) {
			// Only a snapshot can compact past unapplied entries; the
			// driver must have restored it. Treat as a storage failure.
			return nil, &StorageError{Err: fmt.Errorf("committed entries from %d are compacted before being applied", l.applying+1)}
		}
		return nil, err
	}
	if len(ents) > 0 {
		l.applying = ents[len(ents)-1].Index
		if l.async {
			size := entriesSize(ents)
			l.applyingBytes += size
			l.applyingBatches = append(l.applyingBatches, applyingBatch{last: l.applying, bytes: size})
		}
	}
	return ents, nil
}

// appliedTo records (sync mode, from Advance) that the state machine
// applied up to i.
func (l *raftLog) appliedTo(i uint64) {
	if i > l.applied && i <= l.applying {
		l.applied = i
	}
}

// ackApplied records (async mode, AckApplied) that the state machine
// applied every committed entry up to i. i past what was handed out is an
// error; at or below applied it is stale (a snapshot installed meanwhile
// already covered it) and ignored.
func (l *raftLog) ackApplied(i uint64) error {
	// applying may include a snapshot accepted but not yet installed
	// (restore); its index is not the applier's to acknowledge.
	handed := l.applied
	if k := len(l.applyingBatches); k > 0 {
		handed = l.applyingBatches[k-1].last
	}
	if i > handed {
		return fmt.Errorf("%w: AckApplied(%d) past the last committed entry handed out (%d)", ErrInvalidAck, i, handed)
	}
	if i > l.applied {
		l.applied = i
		l.releaseApplying()
	}
	return nil
}

// releaseApplying frees the applying batches that applied now covers.
func (l *raftLog) releaseApplying() {
	n := 0
	for n < len(l.applyingBatches) && l.applyingBatches[n].last <= l.applied {
		l.applyingBytes -= l.applyingBatches[n].bytes
		n++
	}
	if n == 0 {
		return
	}
	l.applyingBatches = l.applyingBatches[n:]
	if len(l.applyingBatches) == 0 {
		// Drop the old array so the queue does not pin it.
		l.applyingBatches = nil
		l.applyingBytes = 0
	}
}
