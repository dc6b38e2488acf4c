package driver

import (
	"context"
	"io"

	"github.com/rafty-db/rafty/core"
)

// handler is the node's MessageHandler: the transport's way in. Every
// method returns quickly and never blocks on the loop: a transport
// receive goroutine must not stall because the node is busy fsyncing.
type handler struct{ n *Node }

var _ MessageHandler = handler{}

// HandleMessages queues msgs for the loop. The node takes ownership of the
// slice. When the inbox is full the batch is dropped and ErrInboxFull
// returned: Raft tolerates loss (it retransmits), and back-pressure that
// blocked the transport would also block heartbeats behind a burst of
// appends.
//
// MsgSnap is filtered out: a snapshot's metadata must only reach the core
// together with its data, through HandleSnapshot, or the core would
// believe in state the state machine does not have.
func (h handler) HandleMessages(_ context.Context, msgs []core.Message) error {
	n := h.n
	select {
	case <-n.loopDone:
		return ErrStopped
	default:
	}
	msgs = withoutSnapshots(msgs)
	if len(msgs) == 0 {
		return nil
	}
	select {
	case n.inbox <- msgs:
		return nil
	default:
		n.metrics.inboxDropped.Inc()
		return ErrInboxFull
	}
}

// withoutSnapshots returns msgs minus any MsgSnap, copying only when one
// is present.
func withoutSnapshots(msgs []core.Message) []core.Message {
	for i := range msgs {
		if msgs[i].Type != core.MsgSnap {
			continue
		}
		out := append([]core.Message(nil), msgs[:i]...)
		for _, m := range msgs[i+1:] {
			if m.Type != core.MsgSnap {
				out = append(out, m)
			}
		}
		return out
	}
	return msgs
}

// HandleSnapshot will install a snapshot received from the leader. The
// designed path (wired with log compaction):
//
//  1. here, on the transport's goroutine: restore the state machine from
//     data into a staging area (StateMachine.Restore), bounded by ctx;
//  2. hand msg to the loop, which Steps it; the core then returns
//     Ready.Snapshot, and the loop calls Storage.InstallSnapshot before
//     saving the Ready's entries (already implemented in loop.go), and
//     swaps the staged state in before applying anything after it;
//  3. return once the Ready carrying the snapshot is persisted, so the
//     transport acknowledges an installed snapshot.
//
// Until then it refuses, and the sender's core goes back to probing.
func (h handler) HandleSnapshot(_ context.Context, _ core.Message, _ io.Reader) error {
	return ErrSnapshotUnsupported
}

// ReportUnreachable records that a message to peer was dropped; the loop
// tells the core, which stops pipelining to that peer and probes.
func (h handler) ReportUnreachable(peer uint64) {
	n := h.n
	n.unreachableMu.Lock()
	n.unreachable[peer] = struct{}{}
	n.unreachableMu.Unlock()
	select {
	case n.unreachableNotify <- struct{}{}:
	default: // a wake-up is already pending; it will see this peer too
	}
}
