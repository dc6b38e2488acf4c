package driver

import (
	"fmt"
	"sync"
	"time"

	"github.com/rafty-db/rafty/core"
)

// The persister: step 2 of core.Ready's asynchronous contract, off the
// loop.
//
// The loop queues one persistBatch per Ready that asks for anything to be
// persisted or acknowledged (queuePersist) and goes on stepping messages,
// ticks and proposals. The persister goroutine takes everything queued at
// once and merges it into one Storage.Save (one write, one fsync): the
// hard state is the last non-zero one, and entries are spliced where a
// later batch starts at or below the end of the earlier ones (a new
// leader's entries replacing an uncommitted suffix), exactly as Storage
// would apply the Saves one after the other. Whatever the loop queues
// while that fsync runs goes into the next Save: group commit, with no
// timer. Once the Save returns, the persister sends each batch's
// MessagesAfterPersist, in order, and posts the batches to the loop
// (persistDone), which calls core.Node.AckPersisted for each, in order.
//
// Memory is bounded by Config.MaxPersistQueueBytes: the loop takes no
// Ready while the bytes queued and not yet acknowledged reach it (see
// loop.canTakeReady), so a slow disk throttles the core's appends, and
// with them proposals, at the core's own limits.
//
// A write error is fatal, as it always was: the persister stops, and the
// loop stops the node with the error when it collects the failed batch.

// persistBatch is one Ready's persist step.
type persistBatch struct {
	hs   core.HardState
	ents []core.Entry
	msgs []core.Message
	ack  core.PersistAck
	// bytes is what the batch counts against MaxPersistQueueBytes.
	bytes int64
	// durable, when non-nil, is closed once the batch is durable: the
	// applier waits for it when the commit index to write before applying
	// went through this Save (no CommitWriter).
	durable chan struct{}
	// deferred are MessagesAfterPersist the persister leaves to the loop
	// (a MsgSnap, which travels on a stream of its own: snapsend.go).
	deferred []core.Message
	// err is set on the batch whose Save failed.
	err error
}

// Fixed costs counted per batch and per message against
// MaxPersistQueueBytes, so that batches without entries (acknowledgements
// only) are bounded too.
const (
	persistBatchOverhead   = 256
	persistMessageOverhead = 128
)

func newPersistBatch(hs core.HardState, ents []core.Entry, msgs []core.Message, ack core.PersistAck) *persistBatch {
	b := &persistBatch{hs: hs, ents: ents, msgs: msgs, ack: ack}
	b.bytes = persistBatchOverhead + int64(len(msgs))*persistMessageOverhead
	for i := range ents {
		b.bytes += int64(ents[i].Size())
	}
	return b
}

// persister owns the goroutine that writes persist batches.
type persister struct {
	n *Node

	mu     sync.Mutex
	queue  []*persistBatch // waiting for the next Save
	done   []*persistBatch // written (or failed), not yet collected by the loop
	failed bool            // a Save failed: nothing more is written

	wake chan struct{} // cap 1: the queue is not empty
	// notify (cap 1) tells the loop that done is not empty.
	notify chan struct{}

	// scratch for merging, owned by the goroutine.
	merged []core.Entry
}

func newPersister(n *Node) *persister {
	return &persister{n: n, wake: make(chan struct{}, 1), notify: make(chan struct{}, 1)}
}

// push queues b. Loop goroutine only.
func (p *persister) push(b *persistBatch) {
	p.mu.Lock()
	p.queue = append(p.queue, b)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// collect returns the batches written since the last call, in order.
func (p *persister) collect(out []*persistBatch) []*persistBatch {
	p.mu.Lock()
	out = append(out, p.done...)
	clear(p.done)
	p.done = p.done[:0]
	p.mu.Unlock()
	return out
}

// run writes batches until the node stops. Batches still queued then are
// dropped: nothing was acknowledged for them, so Raft loses nothing.
func (p *persister) run() {
	n := p.n
	var bs []*persistBatch
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			if len(p.queue) == 0 || p.failed || n.ctx.Err() != nil {
				p.mu.Unlock()
				break
			}
			bs = append(bs[:0], p.queue...)
			clear(p.queue)
			p.queue = p.queue[:0]
			p.mu.Unlock()

			err := p.write(bs)

			p.mu.Lock()
			if err != nil {
				p.failed = true
			}
			p.done = append(p.done, bs...)
			p.mu.Unlock()
			clear(bs)
			select {
			case p.notify <- struct{}{}:
			default:
			}
		}
	}
}

// write merges bs into as few Saves as the log allows (one, unless a
// batch's entries do not follow the earlier ones, which the core never
// hands out), then sends the batches' messages in order. On an error the
// first batch of the failed Save carries it and nothing after it is sent.
func (p *persister) write(bs []*persistBatch) error {
	n := p.n
	for lo := 0; lo < len(bs); {
		hs, ents, hi := p.merge(bs[lo:])
		hi += lo
		if !hs.IsZero() || len(ents) > 0 {
			start := time.Now()
			err := n.timeWrite(&n.diskWriteStart, func() error { return n.cfg.Storage.Save(hs, ents) })
			if err != nil {
				// On the group's first batch, so that the loop
				// acknowledges nothing of it.
				bs[lo].err = fmt.Errorf("driver: saving hard state and %d entries: %w", len(ents), err)
				return err
			}
			n.metrics.saveSeconds.Observe(time.Since(start).Seconds())
			n.metrics.saveEntries.Observe(float64(len(ents)))
			n.metrics.batchesPerSave.Observe(float64(hi - lo))
		}
		clear(p.merged)
		p.merged = p.merged[:0]
		for _, b := range bs[lo:hi] {
			p.sendAfterPersist(b)
			if b.durable != nil {
				close(b.durable)
			}
		}
		lo = hi
	}
	return nil
}

// merge folds the longest prefix of bs that forms one Save and returns
// its hard state, entries and length. The entries alias a batch's when
// only one batch has any; otherwise they are copied into p.merged (the
// core's slices must not be modified).
func (p *persister) merge(bs []*persistBatch) (core.HardState, []core.Entry, int) {
	var hs core.HardState
	var ents []core.Entry
	own := false
	for i, b := range bs {
		if len(b.ents) > 0 && len(ents) > 0 {
			first, base := b.ents[0].Index, ents[0].Index
			switch {
			case first > ents[len(ents)-1].Index+1:
				// A gap: not one Save. Write what came before first.
				return hs, ents, i
			case first <= base:
				// Replaces everything accumulated.
				ents, own = b.ents, false
			default:
				if !own {
					p.merged = append(p.merged[:0], ents...)
					own = true
				}
				p.merged = append(p.merged[:first-base], b.ents...)
				ents = p.merged
			}
		} else if len(b.ents) > 0 {
			ents = b.ents
		}
		if !b.hs.IsZero() {
			hs = b.hs
		}
	}
	return hs, ents, len(bs)
}

// sendAfterPersist sends b's MessagesAfterPersist, now that what they
// acknowledge is durable. A MsgSnap (never expected here) is left to the
// loop, which streams snapshots.
func (p *persister) sendAfterPersist(b *persistBatch) {
	msgs := b.msgs
	for i := range msgs {
		if msgs[i].Type == core.MsgSnap {
			b.deferred = msgs
			return
		}
	}
	if len(msgs) > 0 {
		p.n.transport.Send(msgs)
	}
}
