package driver

import (
	"container/heap"
	"sync"
	"sync/atomic"
)

// Waiter lifecycle (proposals):
//
//	Propose: register in the registry ──► queue on propc ──► wait
//	loop:    take from propc: CAS queued→proposed (skip if cancelled)
//	         ──► core.Propose ──► ... ──► apply / reject / drop / stop
//	resolver: registry.take(seq) ──► send one result on done
//
// Exactly one party resolves a waiter: whoever removes it from the
// registry. The applier removes it with the state machine's result; the
// loop when it has another answer (refusal, an entry displaced at its
// index, stop); Propose when its context ends first. The registry's mutex
// makes these goroutines safe with each other. The
// state word decides what a context expiry means: a waiter Propose
// cancels while still queued was never seen by the core (the error is the
// context's, plainly); one the loop already marked proposed may be
// committed later (ErrOutcomeUnknown). The CAS makes those two outcomes
// exclusive.
const (
	waiterQueued int32 = iota
	waiterProposed
	waiterCancelled
)

// proposalWaiter is one Propose call in flight.
type proposalWaiter struct {
	seq  uint64
	data []byte // envelope + command, handed to the core
	// state is waiterQueued until the loop proposes it or Propose gives
	// up on it (compare-and-swap, see above).
	state atomic.Int32
	// done receives the single result; buffered so the resolver never
	// blocks.
	done chan proposalResult
}

type proposalResult struct {
	value any
	err   error
}

// readWaiter is one Read call in flight.
type readWaiter struct {
	id   uint64
	done chan error // buffered, one send
}

// registry maps request IDs to waiters. It is shared by callers, the loop
// and the applier, hence the mutex; it is the single source of truth for "who is
// still waiting", so shutdown fails exactly the waiters it holds.
type registry[W any] struct {
	mu     sync.Mutex
	m      map[uint64]W
	closed bool
}

func newRegistry[W any]() *registry[W] { return &registry[W]{m: map[uint64]W{}} }

// add registers w under id; false once the registry is closed (the node
// stopped), in which case the caller must not wait.
func (r *registry[W]) add(id uint64, w W) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.m[id] = w
	return true
}

// take removes and returns the waiter for id; ok is false if someone else
// already took it. Whoever takes a waiter must resolve it.
func (r *registry[W]) take(id uint64) (w W, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok = r.m[id]
	if ok {
		delete(r.m, id)
	}
	return w, ok
}

// has reports whether id still waits.
func (r *registry[W]) has(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[id]
	return ok
}

// close refuses further adds and returns every remaining waiter, which
// the caller must resolve.
func (r *registry[W]) close() []W {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	out := make([]W, 0, len(r.m))
	for id, w := range r.m {
		out = append(out, w)
		delete(r.m, id)
	}
	return out
}

// readAtIndex is a read whose read index is known and which waits for the
// state machine to reach it.
type readAtIndex struct {
	index uint64
	id    uint64
}

// readHeap orders parked reads by index, so each apply releases a prefix.
// It is owned by the loop.
type readHeap []readAtIndex

func (h readHeap) Len() int           { return len(h) }
func (h readHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h readHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *readHeap) Push(x any)        { *h = append(*h, x.(readAtIndex)) }
func (h *readHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// push parks a read.
func (h *readHeap) push(r readAtIndex) { heap.Push(h, r) }

// popReady removes and returns the IDs of reads with index <= applied.
func (h *readHeap) popReady(applied uint64, out []uint64) []uint64 {
	for h.Len() > 0 && (*h)[0].index <= applied {
		out = append(out, heap.Pop(h).(readAtIndex).id)
	}
	return out
}
