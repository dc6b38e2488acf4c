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
//   - The driver calls Save from one goroutine of its own (the persister,
//     which already merges the writes of consecutive Readies into one
//     Save), while its loop goroutine reads through the LogReader methods
//     and may call InstallSnapshot, Compact and CommitWriter.WriteCommit;
//     so every method must be safe for concurrent use. A reader never
//     asks for entries a Save in flight replaces. Save may also be called
//     from several goroutines at once (concurrent calls may be merged into
//     one write and one fsync).
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
	//
	// The driver calls it in two ways: with a snapshot received from the
	// leader (its data already restored into the state machine), and, for
	// log compaction, with the position (index, term, membership) of the
	// compaction point, which lies a margin below the index the state
	// machine holds durably (Syncer.Sync's, or the latest local
	// snapshot's without a Syncer) and matches the log there, so the
	// entries after it are kept. InitialState then reports that point,
	// never a snapshot beyond it: the driver alone keeps track of
	// snapshots with data (SnapshotStore).
	InstallSnapshot(meta core.SnapshotMeta) error

	// Compact allows every entry at or below index to be discarded. index
	// must not exceed the index last passed to InstallSnapshot. Term(index) remains
	// answerable. Durable on return.
	Compact(index uint64) error

	// Close releases files and locks. The Storage is unusable afterwards.
	Close() error
}

// CommitWriter is an optional Storage extension (disk.Store implements
// it) that records a commit index without an fsync and without waiting
// for any Save in flight: the write survives a crash of the process (it
// is in the kernel), not necessarily a power loss. InitialState reports
// the highest commit index recorded by Save or WriteCommit, capped at the
// last durable entry and at least the snapshot index (FirstIndex-1).
//
// The driver writes Ready.CommitToWrite through it, from its loop
// goroutine, before handing the committed entries to its applier (the
// core's apply-ordering rule: a restarted node re-applies everything it
// had exposed to reads). The core never asks for an index past the
// entries acknowledged durable (AckPersisted), so a correct driver never
// writes one past LastIndex; disk.Store refuses that with an error. An
// error is fatal to the node (disk.Store's is sticky; its WAL is not
// affected). Without the extension that write is a Save of a hard state,
// which costs an fsync queued behind the WAL's, and the entries wait for
// it before they are applied (see driver/ready.go writeCommit).
//
// A power loss can take the unsynced commit index and the state machine's
// unsynced writes back to the last fsync, never acknowledged writes,
// which are fsynced on a quorum before they are acknowledged. An
// application that serves local (serializable) reads must therefore not
// serve them after a restart until one Read barrier has succeeded, or they
// may go back in time; app/kv's service does exactly that.
type CommitWriter interface {
	// WriteCommit records index as committed. Indexes written are
	// non-decreasing; a lower one than recorded is ignored.
	WriteCommit(index uint64) error
}

// SnapshotStore keeps snapshots: metadata plus the state machine's data as
// a file, written and read as streams so that no snapshot is ever held in
// memory. disk.SnapshotStore implements it (disk.Store.Snapshots()).
// Setting Config.Snapshots turns on snapshots and log compaction (see
// snapshot.go); without it the log grows forever and a follower that needs
// compacted entries cannot be caught up.
//
// Contract:
//   - A snapshot becomes visible (to OpenSnapshot, OpenLatest,
//     ListSnapshots) only when Commit returns, atomically and durably; a
//     crash before that leaves nothing behind. Abort discards it.
//   - Readers verify a checksum of the data: a reader fails instead of
//     returning io.EOF when the data is damaged.
//   - It keeps at least the newest committed snapshot; it may delete older
//     ones once a newer one is committed.
//   - Safe for concurrent use; writers and readers are used from one
//     goroutine each.
type SnapshotStore interface {
	// CreateSnapshot starts writing the data of the snapshot meta.
	CreateSnapshot(meta core.SnapshotMeta) (SnapshotWriter, error)
	// OpenSnapshot opens the snapshot with this index and term, with its
	// metadata.
	OpenSnapshot(index, term uint64) (core.SnapshotMeta, io.ReadCloser, error)
	// OpenLatest opens the newest snapshot whose data is intact.
	OpenLatest() (core.SnapshotMeta, io.ReadCloser, error)
	// ListSnapshots returns the metadata of the stored snapshots, newest
	// (highest index) first. It is cheap: data is not read.
	ListSnapshots() ([]core.SnapshotMeta, error)
}

// SnapshotWriter streams one snapshot's data into a SnapshotStore. Sync
// makes what was written durable without publishing it (so that Commit is
// quick); Commit publishes it; Abort discards it. After Commit or Abort the
// writer is finished; Abort after Commit does nothing.
//
// It is an alias of an interface type literal, so an implementation outside
// this package (disk.SnapshotStore.CreateSnapshot returns the identical
// disk.SnapshotSink) needs no import of package driver.
type SnapshotWriter = interface {
	io.Writer
	Sync() error
	Commit() error
	Abort() error
}

// Transport moves messages between peers. transport.GRPC implements it.
//
// Contract:
//   - Send never blocks on the network. A message that cannot be queued
//     (peer queue full, peer unknown) is dropped and the peer reported
//     through MessageHandler.ReportUnreachable; Raft retransmits.
//   - Any message may be lost (a full queue, a reconnect), and messages
//     to one peer may be reordered: the core tolerates both, as any
//     network's. A transport may keep some order (transport.GRPC keeps
//     Send order within each of its two lanes per peer, so that
//     heartbeats and votes never wait behind appends, and none between
//     the lanes); the driver relies on none.
//   - The Message slices handed to Send are never modified afterwards by
//     the caller; the transport must not modify them either.
//   - Send may be called from several goroutines at once: besides the
//     loop, the persister sends MessagesAfterPersist once their write is
//     durable (persist.go), the handler answers forwarded proposals it drops and the disk
//     watchdog asks a follower to take over (ordering between those
//     callers does not matter).
type Transport interface {
	// Send queues msgs for delivery to their To nodes.
	Send(msgs []core.Message)
	// SendSnapshot streams a snapshot to msg.To: msg is the core's MsgSnap,
	// data the snapshot's data. It returns once the receiver has installed
	// it, or with an error; it returns when ctx ends. Memory use must not
	// depend on the snapshot's size. A transport that supports resuming
	// hands the receiver a reader implementing SnapshotResumer and skips
	// the data the receiver already holds.
	SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error
	// Close stops every goroutine and connection the transport started.
	Close() error
}

// Starter is implemented by a Transport that neither serves nor sends
// until it is started (transport.GRPC). Start starts a node-owned
// transport (Config.NewTransport) that implements it, after the node can
// take traffic; an embedder-owned one (Config.Transport) is the
// embedder's to start.
type Starter interface {
	// Start begins serving peers and sending, and returns at once. ctx
	// carries values only; it is never cancelled, since the node closes
	// its transport itself, in order, when it stops.
	Start(ctx context.Context) error
}

// MessageHandler receives what the transport reads from peers. The driver
// implements it.
type MessageHandler interface {
	// HandleMessages delivers a batch received from a peer. It must return
	// quickly; it is called from the transport's receive goroutines. The
	// handler takes ownership of msgs. The driver's handler never blocks:
	// when its inbox is full it drops the batch and returns ErrInboxFull,
	// and after the node stopped it returns ErrStopped; in both cases
	// Raft retransmits, so the transport just counts the error. A batch
	// from a member the node's configuration says was removed is refused
	// with an error wrapping core.ErrRemoved; the transport should then
	// tell the sender (see RemovedNotifier).
	HandleMessages(ctx context.Context, msgs []core.Message) error
	// HandleSnapshot receives a snapshot stream. It must read data to
	// io.EOF before installing (the transport verifies the checksum only
	// then; a damaged transfer fails the read with an error wrapping
	// ErrSnapshotCorrupt) and return when ctx is cancelled. It returns once
	// the snapshot is installed (or failed); the transport reports the
	// result to the sender. If data implements SnapshotResumer, the
	// handler may resume an earlier, interrupted transfer of the same
	// snapshot from the same sender. The driver's handler returns
	// ErrSnapshotUnsupported when Config.Snapshots is nil (see handler.go).
	HandleSnapshot(ctx context.Context, msg core.Message, data io.Reader) error
	// ReportUnreachable tells the driver a message to peer was dropped.
	// It may be called from any goroutine, asynchronously, with several
	// drops to one peer merged into one call; it must not block.
	ReportUnreachable(peer uint64)
}

// PeerSetter is implemented by a Transport whose peers can change while it
// runs (transport.GRPC.SetPeers). The node calls SetPeers at start and
// whenever the active configuration changes, from its loop goroutine,
// with every member it can name an address for (the member's replicated
// PeerAddr, else its Config.Peers entry), this node included, plus the
// Config.Peers entries of IDs that are not members and were never
// removed (a joiner's hints, before it learns the configuration). A peer
// left out (a removed member) must no longer be sent to. With a transport
// that routes by ID (addresses all empty) members are listed without one.
type PeerSetter interface {
	SetPeers(peers []Peer)
}

// RemovedNotifier is implemented by the driver's MessageHandler. When a
// peer's handler refuses a batch with an error wrapping core.ErrRemoved
// (the peer's configuration says the sender was removed from the
// cluster), the sending transport tells its own handler, so that the
// removed node reports Status.Removed instead of retrying forever.
type RemovedNotifier interface {
	// RemovedBy reports that peer refused our messages because we were
	// removed. It must not block.
	RemovedBy(peer uint64)
}

// SnapshotResumer is implemented by the data reader a Transport passes to
// MessageHandler.HandleSnapshot when the transfer can resume where an
// interrupted one stopped, instead of starting over.
type SnapshotResumer interface {
	// ResumeAt, called before the first Read, tells the sender that the
	// handler already holds the first offset bytes of the data, whose
	// CRC-32C (Castagnoli) is crc; the reader then yields the data from
	// offset on. The transport's end-to-end check still covers every
	// byte: the receiver's checksum continues from crc and must match the
	// sender's checksum of its whole data. It fails (and the handler must
	// start over) if the sender cannot resume or data was already read.
	ResumeAt(offset uint64, crc uint32) error
}
