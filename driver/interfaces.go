package driver

import (
	"context"
	"io"

	"github.com/rafty-db/rafty/core"
)

// Storage is the durable log and hard state the driver persists through.
// disk.Store implements it.
//
// Contract:
//   - Save returns only once hs and every entry are durable (fsync'd).
//     Entries are contiguous; entries[0].Index may be at or below
//     LastIndex()+1, in which case every stored entry at or above
//     entries[0].Index is replaced (the core truncates a conflicting suffix).
//     A zero hs means "unchanged"; an empty entries slice is allowed.
//   - Save may be called from several goroutines; concurrent calls may be
//     merged into one write and one fsync (group commit).
//   - After Save returns, the LogReader methods reflect it.
type Storage interface {
	core.LogReader

	// Save makes hs and entries durable; see the contract above.
	Save(hs core.HardState, entries []core.Entry) error

	// InstallSnapshot records that a snapshot described by meta has been
	// installed: every entry at or below meta.Index is discarded (and any
	// entry above it that conflicts), FirstIndex becomes meta.Index+1,
	// Term(meta.Index) returns meta.Term, and InitialState reports meta.
	// Durable on return.
	InstallSnapshot(meta core.SnapshotMeta) error

	// Compact allows every entry at or below index to be discarded. index
	// must not exceed the latest snapshot's index. Term(index) remains
	// answerable. Durable on return.
	Compact(index uint64) error

	// Close releases files and locks. The Storage is unusable afterwards.
	Close() error
}

// Transport moves messages between peers. transport.GRPC implements it.
//
// Contract:
//   - Send never blocks on the network. A message that cannot be queued
//     (peer queue full, peer unknown) is dropped and the peer reported
//     through MessageHandler.ReportUnreachable; Raft retransmits.
//   - Any message may be lost (a full queue, a reconnect); the messages to
//     one peer that are delivered arrive in the order Send was called.
//   - The Message slices handed to Send are never modified afterwards by
//     the caller; the transport must not modify them either.
type Transport interface {
	// Send queues msgs for delivery to their To nodes.
	Send(msgs []core.Message)
	// SendSnapshot streams a snapshot to msg.To: msg is the core's MsgSnap,
	// data the state machine's snapshot. It returns once the receiver has
	// installed it, or with an error.
	SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error
	// Close stops every goroutine and connection the transport started.
	Close() error
}

// MessageHandler receives what the transport reads from peers. The driver
// implements it.
type MessageHandler interface {
	// HandleMessages delivers a batch received from a peer. It must return
	// quickly; it is called from the transport's receive goroutines. The
	// handler takes ownership of msgs. The driver's handler never blocks:
	// when its inbox is full it drops the batch and returns ErrInboxFull,
	// and after the node stopped it returns ErrStopped; in both cases
	// Raft retransmits, so the transport just counts the error.
	HandleMessages(ctx context.Context, msgs []core.Message) error
	// HandleSnapshot receives a snapshot stream. It must read data to
	// io.EOF before installing (the transport verifies the checksum only
	// then) and return when ctx is cancelled. It returns once the snapshot
	// is installed (or failed); the transport reports the result to the
	// sender. The driver returns ErrSnapshotUnsupported until
	// snapshot transfer is wired with log compaction (see handler.go).
	HandleSnapshot(ctx context.Context, msg core.Message, data io.Reader) error
	// ReportUnreachable tells the driver a message to peer was dropped.
	// It may be called from any goroutine, asynchronously, with several
	// drops to one peer merged into one call; it must not block.
	ReportUnreachable(peer uint64)
}
