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
//   - Send never blocks on the network. Each peer has two lanes (see
//     Lanes below), each a bounded queue drained by its own goroutine
//     over its own long-lived gRPC stream. Everything queued while a batch
//     was being sent goes into the next batch, so batches grow with load
//     and an idle message leaves at once.
//   - Per peer and lane, messages are delivered in Send order, or not at
//     all: a message may be lost (queue full, peer down, stream broken),
//     but no later message of the lane overtakes an earlier one, and none
//     is duplicated. Across the two lanes there is no order: a heartbeat
//     sent after an append may arrive first. Raft tolerates loss and
//     reordering and retransmits; the transport never retries. The order
//     holds across reconnections too: once a sender's new stream of a
//     lane has delivered, nothing more is delivered from that lane's old
//     stream. HandleMessages is called concurrently for different peers
//     and for the two lanes of one peer, never for one lane of one peer.
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
// # Lanes
//
// A heartbeat, a vote or a read confirmation queued behind megabytes of
// appends would wait for all of them: the heartbeat's latency would be
// the backlog's size divided by the bandwidth, which shows in the tail of
// every linearizable read (the leader's read round waits for a quorum of
// heartbeat responses) and, under a heavy write load to a slow follower,
// can make it time out and start an election. So each peer has two
// lanes:
//
//   - urgent: MsgHeartbeat and its response, MsgVote, MsgPreVote and their
//     responses, MsgReadIndex and its response, MsgTimeoutNow,
//     MsgTransferLeader, and MsgPropResp up to MaxUrgentMessageBytes;
//     bounded by Config.UrgentQueueLen and UrgentQueueBytes; the
//     UrgentStream RPC.
//   - bulk: MsgApp, MsgAppResp, forwarded proposals (MsgProp), and any
//     message larger than MaxUrgentMessageBytes; bounded by
//     Config.BulkQueueLen and BulkQueueBytes; the Stream RPC.
//
// lanes.go gives the reason for each type. A full lane drops the
// message (DropQueueFull) and the peer is reported unreachable, as any
// drop; the other lane is unaffected. Stats (PeerStats.Urgent, .Bulk) and
// the rafty_transport_lane_* metrics count each lane: queue depth in
// messages and bytes, messages and bytes sent, drops, streams opened.
//
// Raft needs no order between the lanes, as it tolerates any reordering
// of the network (the core's simulator delivers messages in random order
// and checks safety and read linearizability): a heartbeat carries
// min(the follower's acknowledged match, commit) as the commit index, so
// overtaking the appends before it cannot make a follower commit entries
// it does not hold; MsgTimeoutNow is sent only once the target
// acknowledged the whole log; a ReadIndex answer makes the follower wait
// until it has applied the index, whichever lane brings the entries.
//
// Each lane has its own TCP connection, not only its own HTTP/2 stream.
// Separate streams on one connection have separate flow-control windows,
// and gRPC's connection window is replenished as data is read off the
// socket, so a slow receiver stalls only the bulk stream; but one
// connection is one ordered byte stream: the urgent frames still queue
// behind the bulk frames already in the sender's HTTP/2 write queue and in
// the kernel's socket buffer (megabytes when TCP autotunes it on a fast
// link), and behind any retransmission. Measured on loopback on a loaded
// 2-core machine (BenchmarkHeartbeatUnderBulk: 1 MiB appends, 16 in
// flight, a heartbeat every millisecond; medians of 6 runs), the
// heartbeat's median latency was 38 ms with one lane (16 appends
// delivered while it was in flight: the whole backlog), 1.3 ms with two
// streams on one connection, and 0.10 ms with two connections (no append
// delivered meanwhile at the median, 3 at p99). The cost is one more
// connection, handshake and keepalive per peer. A peer that predates the lanes
// answers UrgentStream with Unimplemented; the sender then sends
// everything over Stream (one lane, in order) until its bulk stream
// reconnects, when it tries the urgent lane again.
//
// Snapshots have a third connection of their own (SendSnapshot).
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
