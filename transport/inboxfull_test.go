package transport

import (
	"context"
	"sync"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// fullOnce is a handler whose inbox is full for the first batch: it
// refuses it with driver.ErrInboxFull and records the context of every
// delivery (the context of the stream it came on).
type fullOnce struct {
	*recorder
	mu      sync.Mutex
	refused bool
	ctxs    []context.Context
}

func (h *fullOnce) HandleMessages(ctx context.Context, msgs []core.Message) error {
	h.mu.Lock()
	h.ctxs = append(h.ctxs, ctx)
	first := !h.refused
	h.refused = true
	h.mu.Unlock()
	if first {
		return driver.ErrInboxFull
	}
	return h.recorder.HandleMessages(ctx, msgs)
}

func (h *fullOnce) deliveries() []context.Context {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]context.Context(nil), h.ctxs...)
}

// TestInboxFullKeepsStream: a batch the handler drops with ErrInboxFull
// does not end the peer's stream (the driver has answered what needs an
// answer, Raft retransmits the rest); the next batch arrives on the same
// stream. Ending it, as before, lost unseen whatever the sender had
// already written behind the dropped batch.
func TestInboxFullKeepsStream(t *testing.T) {
	h := &fullOnce{recorder: newRecorder()}
	nodes := newCluster(t, 2, func(cfg *Config) {
		if cfg.NodeID == 2 {
			cfg.Handler = h
		}
	})
	a := nodes[0]
	a.tr.Send([]core.Message{heartbeat(1, 2, 1)})
	waitFor(t, "the first batch to be refused", func() bool { return len(h.deliveries()) == 1 })
	a.tr.Send([]core.Message{heartbeat(1, 2, 2)})
	waitFor(t, "the second batch", func() bool { return h.recorder.count() == 1 })
	ctxs := h.deliveries()
	if len(ctxs) != 2 {
		t.Fatalf("%d deliveries, want 2", len(ctxs))
	}
	if ctxs[0] != ctxs[1] || ctxs[0].Err() != nil {
		t.Fatalf("the stream was replaced after ErrInboxFull (first stream's context: %v)", ctxs[0].Err())
	}
	equalMessages(t, h.recorder.received(), []core.Message{heartbeat(1, 2, 2)})
	if s := a.tr.Stats(); s.DroppedTotal() != 0 {
		t.Fatalf("sender dropped %v", s.Dropped)
	}
}
