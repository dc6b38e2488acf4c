// Package memlog is an in-memory implementation of the core's LogReader
// with the write side the driver uses (Save, InstallSnapshot, Compact). It
// backs core's unit tests and the deterministic simulator; "durable" here
// means "saved", and a simulated crash keeps exactly what was saved.
//
// It is safe for concurrent use.
package memlog

import (
	"fmt"
	"slices"
	"sync"

	"github.com/rafty-db/rafty/core"
)

// Log is an in-memory log. The zero value is not usable; call New.
//
// Invariant: ents[0] is a sentinel holding the snapshot (or compaction)
// point's index and term; ents[i].Index == ents[0].Index + i.
type Log struct {
	mu   sync.Mutex
	hs   core.HardState
	snap core.SnapshotMeta
	ents []core.Entry
	// Saves counts Save calls, for tests.
	saves int
}

// New returns an empty log.
func New() *Log {
	return &Log{ents: make([]core.Entry, 1)}
}

// InitialState implements core.LogReader.
func (l *Log) InitialState() (core.HardState, core.SnapshotMeta, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.snap
	s.Membership = l.snap.Membership.Clone()
	return l.hs, s, nil
}

// FirstIndex implements core.LogReader.
func (l *Log) FirstIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ents[0].Index + 1, nil
}

// LastIndex implements core.LogReader.
func (l *Log) LastIndex() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastIndex(), nil
}

func (l *Log) lastIndex() uint64 { return l.ents[0].Index + uint64(len(l.ents)) - 1 }

// Term implements core.LogReader.
func (l *Log) Term(i uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	off := l.ents[0].Index
	switch {
	case i < off:
		return 0, core.ErrCompacted
	case i > l.lastIndex():
		return 0, core.ErrUnavailable
	}
	return l.ents[i-off].Term, nil
}

// Entries implements core.LogReader.
func (l *Log) Entries(lo, hi, maxBytes uint64) ([]core.Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	off := l.ents[0].Index
	switch {
	case lo <= off:
		return nil, core.ErrCompacted
	case hi > l.lastIndex()+1:
		return nil, fmt.Errorf("memlog: entries [%d, %d) past last %d: %w", lo, hi, l.lastIndex(), core.ErrUnavailable)
	case lo >= hi:
		return nil, nil
	}
	ents := l.ents[lo-off : hi-off]
	size := ents[0].Size()
	for i := 1; i < len(ents); i++ {
		size += ents[i].Size()
		if size > maxBytes {
			ents = ents[:i]
			break
		}
	}
	// Return a capped slice so a caller's append can never write into
	// the log's array.
	return ents[:len(ents):len(ents)], nil
}

// Save stores hs (unless zero) and entries, replacing any stored suffix
// from entries[0].Index on.
func (l *Log) Save(hs core.HardState, entries []core.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.saves++
	if !hs.IsZero() {
		l.hs = hs
	}
	if len(entries) == 0 {
		return nil
	}
	off := l.ents[0].Index
	first := entries[0].Index
	switch {
	case first <= off:
		// Entries at or below the snapshot are already covered.
		skip := off + 1 - first
		if skip >= uint64(len(entries)) {
			return nil
		}
		entries = entries[skip:]
		first = entries[0].Index
	case first > l.lastIndex()+1:
		return fmt.Errorf("memlog: gap: saving %d after last %d", first, l.lastIndex())
	}
	if first == l.lastIndex()+1 {
		// Appending past the end writes only unused capacity, which no
		// slice returned by Entries (capped at its length) can see.
		l.ents = append(l.ents, entries...)
		return nil
	}
	// Replacing a suffix: copy, since readers may still hold slices of
	// the entries being replaced.
	l.ents = append(l.ents[:first-off:first-off], entries...)
	return nil
}

// InstallSnapshot resets the log to start after meta.
func (l *Log) InstallSnapshot(meta core.SnapshotMeta) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap = meta
	l.snap.Membership = meta.Membership.Clone()
	off := l.ents[0].Index
	if meta.Index <= l.lastIndex() && meta.Index >= off && l.ents[meta.Index-off].Term == meta.Term {
		// Keep the entries after the snapshot: they agree with it.
		l.ents = slices.Clone(l.ents[meta.Index-off:])
	} else {
		l.ents = make([]core.Entry, 1)
	}
	l.ents[0] = core.Entry{Index: meta.Index, Term: meta.Term}
	if l.hs.Commit < meta.Index {
		l.hs.Commit = meta.Index
	}
	return nil
}

// SetSnapshot records meta as the latest snapshot without touching
// entries, as the driver does after taking a local snapshot.
func (l *Log) SetSnapshot(meta core.SnapshotMeta) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap = meta
	l.snap.Membership = meta.Membership.Clone()
}

// Compact discards entries at or below index.
func (l *Log) Compact(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	off := l.ents[0].Index
	if index <= off {
		return nil
	}
	if index > l.lastIndex() {
		return fmt.Errorf("memlog: compact %d past last %d", index, l.lastIndex())
	}
	if index > l.snap.Index {
		return fmt.Errorf("memlog: compact %d past snapshot %d", index, l.snap.Index)
	}
	l.ents = slices.Clone(l.ents[index-off:])
	l.ents[0].Data = nil
	return nil
}

// Close implements the driver's Storage; it does nothing.
func (l *Log) Close() error { return nil }

// Saves returns how many times Save was called.
func (l *Log) Saves() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.saves
}

// Clone returns an independent copy, as a crash-restart of a node would
// find it on disk.
func (l *Log) Clone() *Log {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := &Log{hs: l.hs, snap: l.snap, ents: slices.Clone(l.ents)}
	c.snap.Membership = l.snap.Membership.Clone()
	return c
}

// AllEntries returns a copy of every stored entry, for invariant checks.
func (l *Log) AllEntries() []core.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ents[1:])
}
