package drivertest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// ErrNoSnapshot is returned by SnapshotStore when the snapshot asked for
// does not exist.
var ErrNoSnapshot = errors.New("drivertest: no such snapshot")

// SnapshotStore is an in-memory driver.SnapshotStore: snapshots are byte
// slices, committed atomically; the newest two are kept. "Durable" means
// committed, and Clone gives what a restarted node would find. Safe for
// concurrent use.
type SnapshotStore struct {
	mu    sync.Mutex
	snaps []memSnapshot // ascending by index, then term
}

type memSnapshot struct {
	meta core.SnapshotMeta
	data []byte
}

var _ driver.SnapshotStore = (*SnapshotStore)(nil)

// NewSnapshotStore returns an empty store.
func NewSnapshotStore() *SnapshotStore { return &SnapshotStore{} }

// CreateSnapshot implements driver.SnapshotStore.
func (s *SnapshotStore) CreateSnapshot(meta core.SnapshotMeta) (driver.SnapshotWriter, error) {
	if meta.Index == 0 {
		return nil, errors.New("drivertest: snapshot index 0")
	}
	return &memWriter{s: s, meta: cloneMeta(meta)}, nil
}

// OpenSnapshot implements driver.SnapshotStore.
func (s *SnapshotStore) OpenSnapshot(index, term uint64) (core.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.snaps {
		if sn.meta.Index == index && sn.meta.Term == term {
			return cloneMeta(sn.meta), io.NopCloser(bytes.NewReader(sn.data)), nil
		}
	}
	return core.SnapshotMeta{}, nil, fmt.Errorf("%w: %d/%d", ErrNoSnapshot, term, index)
}

// OpenLatest implements driver.SnapshotStore.
func (s *SnapshotStore) OpenLatest() (core.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) == 0 {
		return core.SnapshotMeta{}, nil, ErrNoSnapshot
	}
	sn := s.snaps[len(s.snaps)-1]
	return cloneMeta(sn.meta), io.NopCloser(bytes.NewReader(sn.data)), nil
}

// ListSnapshots implements driver.SnapshotStore.
func (s *SnapshotStore) ListSnapshots() ([]core.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]core.SnapshotMeta, 0, len(s.snaps))
	for i := len(s.snaps) - 1; i >= 0; i-- {
		out = append(out, cloneMeta(s.snaps[i].meta))
	}
	return out, nil
}

// Clone returns an independent copy, as a restarted node would find it.
func (s *SnapshotStore) Clone() *SnapshotStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &SnapshotStore{snaps: slices.Clone(s.snaps)}
}

func (s *SnapshotStore) commit(meta core.SnapshotMeta, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.snaps, meta, func(a memSnapshot, m core.SnapshotMeta) int {
		switch {
		case a.meta.Index != m.Index:
			return cmpU64(a.meta.Index, m.Index)
		default:
			return cmpU64(a.meta.Term, m.Term)
		}
	})
	if i < len(s.snaps) && s.snaps[i].meta.Index == meta.Index && s.snaps[i].meta.Term == meta.Term {
		s.snaps[i] = memSnapshot{meta, data}
	} else {
		s.snaps = slices.Insert(s.snaps, i, memSnapshot{meta, data})
	}
	if len(s.snaps) > 2 {
		s.snaps = slices.Clone(s.snaps[len(s.snaps)-2:])
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cloneMeta(m core.SnapshotMeta) core.SnapshotMeta {
	m.Membership = m.Membership.Clone()
	return m
}

type memWriter struct {
	s    *SnapshotStore
	meta core.SnapshotMeta
	buf  bytes.Buffer
	done bool
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("drivertest: snapshot writer finished")
	}
	return w.buf.Write(p)
}

func (w *memWriter) Sync() error { return nil }

func (w *memWriter) Commit() error {
	if w.done {
		return errors.New("drivertest: snapshot writer finished")
	}
	w.done = true
	w.s.commit(w.meta, bytes.Clone(w.buf.Bytes()))
	return nil
}

func (w *memWriter) Abort() error {
	w.done = true
	return nil
}
