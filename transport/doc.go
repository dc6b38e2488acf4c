// Package transport moves Raft messages and snapshots between the nodes
// of a Rafty cluster over gRPC. GRPC implements driver.Transport and
// calls a driver.MessageHandler with what it receives.
//
// # Wiring
//
// New validates a Config and prepares everything; the handler (usually
// the driver) is given in Config.Handler or, when the driver is built
// after the transport, with SetHandler (until then Raft traffic is
// refused with Unavailable "node N is starting"); Start serves and sends,
// and is idempotent; Close stops everything. A GRPC returned from
// driver.Config.NewTransport is started and closed by the node (GRPC
// implements driver.Starter), so the factory only calls New; an
// application may also start the transport itself first, to serve the
// Cluster service while it decides whether to bootstrap or join, even
// before it knows its node ID (Config.NodeID 0, then SetNodeID before
// SetHandler).
// Config.Peers is the same []driver.Peer as driver.Config.Peers.
//
// # Membership changes
//
// SetPeers replaces the peer set (the driver calls it with every newly
// active configuration): new peers get a queue and a connection, changed
// addresses reconnect, removed peers' queues, goroutines and connections
// stop. AddPeer and RemovePeer change one peer. Config.AcceptUnknownSenders
// lets a node take traffic from members it does not know yet (a joiner, a
// member added by a change it has not applied). When the handler refuses
// a batch or snapshot with an error wrapping core.ErrRemoved, the server
// answers a distinct status, and the sending transport counts the drop as
// DropRemoved and calls RemovedBy(peer) on its handler if the handler has
// that method. The peer-port Cluster service (Probe, Join) is served
// through Config.Cluster (a ClusterHandler); ProbePeer and JoinPeer are
// its clients, with the same TLS files as the transport.
//
// # Guarantees
//
//   - Send never blocks on the network. Each peer has a queue of
//     Config.SendQueueLen messages drained by one goroutine over one
//     long-lived gRPC stream. Everything queued while a batch was being
//     sent goes into the next batch, so batches grow with load and an idle
//     message leaves at once.
//   - Per peer, messages are delivered in Send order, or not at all: a
//     message may be lost (queue full, peer down, stream broken), but no
//     later message overtakes an earlier one, and none is duplicated. Raft
//     tolerates loss and retransmits; the transport never retries. This
//     holds across reconnections too: once a sender's new stream has
//     delivered, nothing more is delivered from its old one.
//     HandleMessages is called for different peers concurrently, for one
//     peer never.
//   - Every dropped message is counted (Stats, metrics) and its peer is
//     reported through MessageHandler.ReportUnreachable. Reports are
//     delivered from a transport goroutine, never from inside Send, and
//     several drops to one peer may coalesce into one report.
//   - Every batch and snapshot carries the cluster ID and sender ID. A
//     receiver refuses traffic from another cluster or wrong receiver
//     (gRPC FailedPrecondition), from a sender that is not a configured
//     peer (unless Config.AcceptUnknownSenders) or that contradicts its
//     own stream (PermissionDenied), or that
//     is malformed (InvalidArgument), and counts it. Received data is
//     untrusted: a message that fails validation (unknown type, a log
//     entry with index 0 — only forwarded proposals carry unindexed
//     entries —, MsgSnap outside a snapshot transfer, ...) is discarded
//     and counted; decoding never panics.
//   - SendSnapshot returns nil only once the receiver's HandleSnapshot
//     returned nil, having read the data to io.EOF; the transport returns
//     io.EOF to the handler only after the CRC-32C and length in the
//     sender's trailer have matched, and an error (ErrSnapshotChecksum)
//     instead otherwise (also wrapping driver.ErrSnapshotCorrupt). Memory
//     use on both sides is a few chunks, whatever the snapshot's size.
//   - Snapshot transfers resume. The handler's reader is a
//     driver.SnapshotResumer: a handler holding the first bytes of the
//     same snapshot from an interrupted transfer tells the sender where to
//     resume (in the response headers, before any data flows), and the
//     sender checksums those bytes locally instead of sending them; the
//     trailer's checksum still covers all the data (see snapshot.go).
//   - Close returns only when every goroutine and connection the
//     transport started is gone.
//
// # Limits
//
// Config.MaxMessageBytes bounds every gRPC message in both directions:
// batches are split to fit, and a Raft message that cannot fit alone is
// dropped (DropTooLarge), so the core's own limit on append size must stay
// below it. All peers should use the same value. Snapshot data travels in
// frames of Config.SnapshotChunkBytes (at most 1 MiB) over a connection
// of its own. HTTP/2 flow-control windows are fixed at
// Config.StreamWindowBytes per stream, which bounds what a slow receiver
// can be made to buffer. Received entry data aliases the batch it arrived
// in, so a handler that keeps one entry keeps that batch's buffer.
//
// # Assumptions
//
// Peer addresses are host:port, with a DNS name (looked up again on every
// connection attempt, as Kubernetes pod IPs change on restart) or an IP.
// Connections are made on demand and re-made with gRPC's exponential
// backoff (Config.ReconnectBaseDelay to ReconnectMaxDelay); keepalive pings
// (Config.KeepaliveInterval, KeepaliveTimeout) notice a dead peer on an
// idle connection. With mutual TLS each node's certificate serves as both
// server and client certificate and must name the address peers dial;
// the transport does not map certificate identities to node IDs, so any
// holder of a certificate from the cluster CA can claim any node ID of
// the cluster. The handler's HandleMessages and ReportUnreachable must
// return quickly, and its HandleSnapshot must return once its context is
// cancelled, or Close cannot finish.
//
// The wire format is transportpb/transport.proto; the hot path encodes and
// decodes it by hand (convert.go) rather than through the generated
// structs, to avoid per-message and per-entry allocations.
package transport
