package transport

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DropReason says why an outgoing message was dropped. Every drop is also
// reported to the handler through ReportUnreachable (except DropClosed).
type DropReason string

// Drop reasons, used as keys of Stats.Dropped and as the "reason" label.
const (
	// DropQueueFull: the message's lane to the peer was full: it held
	// its Config limit of messages (BulkQueueLen, UrgentQueueLen) or the
	// message would have taken it past its limit of bytes
	// (BulkQueueBytes, UrgentQueueBytes).
	DropQueueFull DropReason = "queue_full"
	// DropUnknownPeer: the message's To is not a configured peer.
	DropUnknownPeer DropReason = "unknown_peer"
	// DropTooLarge: the message alone exceeds MaxMessageBytes.
	DropTooLarge DropReason = "too_large"
	// DropInvalid: the message cannot be sent (unknown type, From not
	// this node, or a MsgSnap, which must go through SendSnapshot).
	DropInvalid DropReason = "invalid"
	// DropUnreachable: no stream to the peer could be opened, or it broke
	// while the message was being sent.
	DropUnreachable DropReason = "unreachable"
	// DropRejected: the peer refused the stream (wrong cluster, unknown
	// sender, ...); see the transport's logs for its status.
	DropRejected DropReason = "rejected"
	// DropClosed: the transport was closed, or the peer removed, with the
	// message still queued or after Close.
	DropClosed DropReason = "closed"
	// DropRemoved: the peer refused the stream because this node was
	// removed from the cluster (the handler's RemovedBy is called).
	DropRemoved DropReason = "removed"
)

// RejectReason says why an incoming batch or snapshot was refused.
type RejectReason string

// Reject reasons, used as keys of Stats.Rejected and as the "reason"
// label.
const (
	// RejectClusterMismatch: the batch carries another cluster ID
	// (status FailedPrecondition).
	RejectClusterMismatch RejectReason = "cluster_mismatch"
	// RejectWrongReceiver: the batch or one of its messages is addressed
	// to another node (status FailedPrecondition).
	RejectWrongReceiver RejectReason = "wrong_receiver"
	// RejectUnknownSender: the sender is not a configured peer (status
	// PermissionDenied).
	RejectUnknownSender RejectReason = "unknown_sender"
	// RejectSenderMismatch: a batch's sender differs from the stream's
	// first sender, or a message's From from its batch's (status
	// PermissionDenied).
	RejectSenderMismatch RejectReason = "sender_mismatch"
	// RejectMalformed: the bytes are not a well-formed frame (status
	// InvalidArgument).
	RejectMalformed RejectReason = "malformed"
	// RejectRemovedSender: the handler refused the sender's traffic
	// because the sender was removed from the cluster (an error wrapping
	// core.ErrRemoved; status PermissionDenied ending in removedSuffix,
	// which the sender recognises).
	RejectRemovedSender RejectReason = "removed_sender"
)

// Stats is a snapshot of the transport's counters since New.
type Stats struct {
	// MessagesSent counts messages handed to gRPC (not necessarily
	// delivered).
	MessagesSent uint64
	// BatchesSent counts gRPC messages (batches) sent; MessagesSent /
	// BatchesSent is the average batch.
	BatchesSent uint64
	// BytesSent counts encoded batch bytes handed to gRPC.
	BytesSent uint64
	// MessagesReceived counts accepted messages handed to the handler.
	MessagesReceived uint64
	// BatchesReceived counts accepted batches.
	BatchesReceived uint64
	// BytesReceived counts encoded bytes of accepted batches.
	BytesReceived uint64
	// Dropped counts dropped outgoing messages by reason.
	Dropped map[DropReason]uint64
	// Rejected counts refused incoming batches and snapshot transfers by
	// reason.
	Rejected map[RejectReason]uint64
	// InvalidMessages counts received messages left out of a batch
	// because they failed validation (for example an unknown type).
	InvalidMessages uint64
	// SnapshotsSent counts outgoing transfers that succeeded.
	SnapshotsSent uint64
	// SnapshotsReceived counts incoming transfers that succeeded.
	SnapshotsReceived uint64
	// SnapshotBytesSent counts snapshot data bytes sent.
	SnapshotBytesSent uint64
	// SnapshotBytesReceived counts snapshot data bytes received.
	SnapshotBytesReceived uint64
	// Peers holds per-peer counters of current peers.
	Peers map[uint64]PeerStats
}

// PeerStats holds the counters of one peer.
type PeerStats struct {
	// Addr is the peer's configured address.
	Addr string
	// QueueLen is the number of messages waiting in its send queues
	// (both lanes).
	QueueLen int
	// MessagesSent, BatchesSent and BytesSent: as in Stats, to this peer.
	MessagesSent uint64
	// BatchesSent: see MessagesSent.
	BatchesSent uint64
	// BytesSent: see MessagesSent.
	BytesSent uint64
	// MessagesReceived and BytesReceived: as in Stats, from this peer.
	MessagesReceived uint64
	// BytesReceived: see MessagesReceived.
	BytesReceived uint64
	// MessagesDropped counts messages to this peer dropped, any reason.
	MessagesDropped uint64
	// Urgent and Bulk are the counters of each lane (see doc.go,
	// "Lanes"). Drops that happen before a message has a lane (an invalid
	// message) count in MessagesDropped only.
	Urgent LaneStats
	// Bulk: see Urgent.
	Bulk LaneStats
}

// LaneStats holds the counters of one lane to one peer.
type LaneStats struct {
	// QueueLen and QueueBytes are the messages waiting in the lane's
	// queue and their encoded size.
	QueueLen int
	// QueueBytes: see QueueLen.
	QueueBytes int
	// MessagesSent, BatchesSent and BytesSent: as in PeerStats, on this
	// lane.
	MessagesSent uint64
	// BatchesSent: see MessagesSent.
	BatchesSent uint64
	// BytesSent: see MessagesSent.
	BytesSent uint64
	// MessagesDropped counts messages dropped from this lane, any reason.
	MessagesDropped uint64
	// StreamsOpened counts the lane's streams opened: 1 after the first
	// message, one more per reconnection.
	StreamsOpened uint64
}

// DroppedTotal sums Dropped over all reasons.
func (s Stats) DroppedTotal() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// RejectedTotal sums Rejected over all reasons.
func (s Stats) RejectedTotal() uint64 {
	var n uint64
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// counters holds the atomics behind Stats and the Prometheus collectors
// mirroring them.
type counters struct {
	msgsSent, batchesSent, bytesSent       atomic.Uint64
	msgsRecv, batchesRecv, bytesRecv       atomic.Uint64
	invalid                                atomic.Uint64
	snapsSent, snapsRecv                   atomic.Uint64
	snapBytesSent, snapBytesRecv           atomic.Uint64
	dropped                                sync.Map // DropReason -> *atomic.Uint64
	rejected                               sync.Map // RejectReason -> *atomic.Uint64
	promMsgsSent, promBytesSent            *prometheus.CounterVec
	promBatchesSent                        *prometheus.CounterVec
	promMsgsRecv, promBytesRecv            *prometheus.CounterVec
	promDropped, promRejected, promInvalid *prometheus.CounterVec
	promSnapBytesSent, promSnapBytesRecv   *prometheus.CounterVec
	promSnaps                              *prometheus.CounterVec
	promLaneMsgsSent, promLaneBytesSent    *prometheus.CounterVec
	promLaneDropped, promLaneStreams       *prometheus.CounterVec
	reg                                    prometheus.Registerer
	registered                             []prometheus.Collector
}

func newCounters(reg prometheus.Registerer) (*counters, error) {
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rafty", Subsystem: "transport", Name: name, Help: help,
		}, labels)
	}
	c := &counters{
		promMsgsSent:      vec("messages_sent_total", "Raft messages handed to gRPC, by peer.", "peer"),
		promBytesSent:     vec("bytes_sent_total", "Encoded batch bytes handed to gRPC, by peer.", "peer"),
		promBatchesSent:   vec("batches_sent_total", "Batches (gRPC messages) sent, by peer.", "peer"),
		promMsgsRecv:      vec("messages_received_total", "Raft messages received and accepted, by peer.", "peer"),
		promBytesRecv:     vec("bytes_received_total", "Encoded batch bytes received and accepted, by peer.", "peer"),
		promDropped:       vec("messages_dropped_total", "Outgoing Raft messages dropped, by peer and reason.", "peer", "reason"),
		promRejected:      vec("batches_rejected_total", "Incoming batches and snapshot transfers refused, by reason.", "reason"),
		promInvalid:       vec("messages_invalid_total", "Received messages discarded because they failed validation, by peer.", "peer"),
		promSnapBytesSent: vec("snapshot_bytes_sent_total", "Snapshot data bytes sent, by peer.", "peer"),
		promSnapBytesRecv: vec("snapshot_bytes_received_total", "Snapshot data bytes received, by peer.", "peer"),
		promSnaps:         vec("snapshots_total", "Snapshot transfers that succeeded, by peer and direction.", "peer", "direction"),
		promLaneMsgsSent:  vec("lane_messages_sent_total", "Raft messages handed to gRPC, by peer and lane (urgent, bulk).", "peer", "lane"),
		promLaneBytesSent: vec("lane_bytes_sent_total", "Encoded batch bytes handed to gRPC, by peer and lane.", "peer", "lane"),
		promLaneDropped:   vec("lane_messages_dropped_total", "Outgoing Raft messages dropped, by peer and lane (reasons: messages_dropped_total).", "peer", "lane"),
		promLaneStreams:   vec("lane_streams_opened_total", "Message streams opened, by peer and lane: one more per reconnection.", "peer", "lane"),
	}
	// Every reason's series exists from the start, at 0, so an alert on
	// its rate sees 0 rather than no data.
	for _, r := range rejectReasons {
		c.promRejected.WithLabelValues(string(r))
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{
			c.promMsgsSent, c.promBytesSent, c.promBatchesSent, c.promMsgsRecv, c.promBytesRecv,
			c.promDropped, c.promRejected, c.promInvalid, c.promSnapBytesSent, c.promSnapBytesRecv, c.promSnaps,
			c.promLaneMsgsSent, c.promLaneBytesSent, c.promLaneDropped, c.promLaneStreams,
		} {
			if err := c.register(reg, col); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// register registers col with reg, and on failure unregisters everything
// registered so far.
func (c *counters) register(reg prometheus.Registerer, col prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	if err := reg.Register(col); err != nil {
		c.unregister()
		return err
	}
	c.reg = reg
	c.registered = append(c.registered, col)
	return nil
}

// unregister removes the collectors newCounters registered.
func (c *counters) unregister() {
	for _, col := range c.registered {
		c.reg.Unregister(col)
	}
	c.registered = nil
}

// peerCounters are one peer's counters, with its Prometheus children
// resolved once so that the hot path does no label lookups.
type peerCounters struct {
	msgsSent, batchesSent, bytesSent atomic.Uint64
	msgsRecv, bytesRecv              atomic.Uint64
	dropped                          atomic.Uint64

	promMsgsSent, promBytesSent, promBatchesSent prometheus.Counter
	promMsgsRecv, promBytesRecv                  prometheus.Counter

	lanes [numLanes]*laneCounters
}

// laneCounters are one lane's counters to one peer.
type laneCounters struct {
	msgsSent, batchesSent, bytesSent atomic.Uint64
	dropped, streams                 atomic.Uint64

	promMsgsSent, promBytesSent, promDropped, promStreams prometheus.Counter
}

func (lc *laneCounters) streamOpened() {
	lc.streams.Add(1)
	lc.promStreams.Inc()
}

func (lc *laneCounters) stats(queueLen, queueBytes int) LaneStats {
	return LaneStats{
		QueueLen:        queueLen,
		QueueBytes:      queueBytes,
		MessagesSent:    lc.msgsSent.Load(),
		BatchesSent:     lc.batchesSent.Load(),
		BytesSent:       lc.bytesSent.Load(),
		MessagesDropped: lc.dropped.Load(),
		StreamsOpened:   lc.streams.Load(),
	}
}

// rejectReasons are every RejectReason, pre-initialised at 0.
var rejectReasons = []RejectReason{RejectClusterMismatch, RejectWrongReceiver, RejectUnknownSender, RejectSenderMismatch, RejectMalformed, RejectRemovedSender}

// peerDropReasons are the DropReasons that can befall a configured peer
// (DropUnknownPeer cannot), pre-initialised at 0 for each.
var peerDropReasons = []DropReason{DropQueueFull, DropTooLarge, DropInvalid, DropUnreachable, DropRejected, DropClosed, DropRemoved}

func (c *counters) forPeer(id uint64) *peerCounters {
	l := peerLabel(id)
	// A configured peer's series exist from the start, at 0: dashboards
	// and alerts then see 0 drops rather than no data (forgetPeer deletes
	// them all again).
	for _, r := range peerDropReasons {
		c.promDropped.WithLabelValues(l, string(r))
	}
	c.promInvalid.WithLabelValues(l)
	c.promSnapBytesSent.WithLabelValues(l)
	c.promSnapBytesRecv.WithLabelValues(l)
	c.promSnaps.WithLabelValues(l, "sent")
	c.promSnaps.WithLabelValues(l, "received")
	pc := &peerCounters{
		promMsgsSent:    c.promMsgsSent.WithLabelValues(l),
		promBytesSent:   c.promBytesSent.WithLabelValues(l),
		promBatchesSent: c.promBatchesSent.WithLabelValues(l),
		promMsgsRecv:    c.promMsgsRecv.WithLabelValues(l),
		promBytesRecv:   c.promBytesRecv.WithLabelValues(l),
	}
	for ln := range numLanes {
		name := ln.String()
		pc.lanes[ln] = &laneCounters{
			promMsgsSent:  c.promLaneMsgsSent.WithLabelValues(l, name),
			promBytesSent: c.promLaneBytesSent.WithLabelValues(l, name),
			promDropped:   c.promLaneDropped.WithLabelValues(l, name),
			promStreams:   c.promLaneStreams.WithLabelValues(l, name),
		}
	}
	return pc
}

// forgetPeer removes a removed peer's Prometheus series.
func (c *counters) forgetPeer(id uint64) {
	l := prometheus.Labels{"peer": peerLabel(id)}
	for _, v := range []*prometheus.CounterVec{
		c.promMsgsSent, c.promBytesSent, c.promBatchesSent, c.promMsgsRecv, c.promBytesRecv,
		c.promDropped, c.promInvalid, c.promSnapBytesSent, c.promSnapBytesRecv, c.promSnaps,
		c.promLaneMsgsSent, c.promLaneBytesSent, c.promLaneDropped, c.promLaneStreams,
	} {
		v.DeletePartialMatch(l)
	}
}

func peerLabel(id uint64) string { return strconv.FormatUint(id, 10) }

func (c *counters) sent(pc *peerCounters, lc *laneCounters, msgs, bytes int) {
	c.msgsSent.Add(uint64(msgs))
	c.batchesSent.Add(1)
	c.bytesSent.Add(uint64(bytes))
	pc.msgsSent.Add(uint64(msgs))
	pc.batchesSent.Add(1)
	pc.bytesSent.Add(uint64(bytes))
	pc.promMsgsSent.Add(float64(msgs))
	pc.promBatchesSent.Inc()
	pc.promBytesSent.Add(float64(bytes))
	lc.msgsSent.Add(uint64(msgs))
	lc.batchesSent.Add(1)
	lc.bytesSent.Add(uint64(bytes))
	lc.promMsgsSent.Add(float64(msgs))
	lc.promBytesSent.Add(float64(bytes))
}

// received counts an accepted batch; pc is nil for a sender that is not
// a peer (Config.AcceptUnknownSenders), counted in the totals only.
func (c *counters) received(pc *peerCounters, msgs, bytes int) {
	c.msgsRecv.Add(uint64(msgs))
	c.batchesRecv.Add(1)
	c.bytesRecv.Add(uint64(bytes))
	if pc == nil {
		return
	}
	pc.msgsRecv.Add(uint64(msgs))
	pc.bytesRecv.Add(uint64(bytes))
	pc.promMsgsRecv.Add(float64(msgs))
	pc.promBytesRecv.Add(float64(bytes))
}

// drop counts n messages to peer dropped for reason; pc may be nil (the
// peer is unknown), lc too (the message had no lane yet).
func (c *counters) drop(peer uint64, pc *peerCounters, lc *laneCounters, reason DropReason, n int) {
	if n == 0 {
		return
	}
	counterFor(&c.dropped, reason).Add(uint64(n))
	if pc != nil {
		pc.dropped.Add(uint64(n))
	}
	if lc != nil {
		lc.dropped.Add(uint64(n))
		lc.promDropped.Add(float64(n))
	}
	c.promDropped.WithLabelValues(peerLabel(peer), string(reason)).Add(float64(n))
}

func (c *counters) reject(reason RejectReason) {
	counterFor(&c.rejected, reason).Add(1)
	c.promRejected.WithLabelValues(string(reason)).Inc()
}

func (c *counters) invalidMessages(peer uint64, n int) {
	c.invalid.Add(uint64(n))
	c.promInvalid.WithLabelValues(peerLabel(peer)).Add(float64(n))
}

func (c *counters) snapshotBytes(peer uint64, sent bool, n int) {
	if sent {
		c.snapBytesSent.Add(uint64(n))
		c.promSnapBytesSent.WithLabelValues(peerLabel(peer)).Add(float64(n))
	} else {
		c.snapBytesRecv.Add(uint64(n))
		c.promSnapBytesRecv.WithLabelValues(peerLabel(peer)).Add(float64(n))
	}
}

func (c *counters) snapshotDone(peer uint64, sent bool) {
	dir := "received"
	if sent {
		c.snapsSent.Add(1)
		dir = "sent"
	} else {
		c.snapsRecv.Add(1)
	}
	c.promSnaps.WithLabelValues(peerLabel(peer), dir).Inc()
}

func counterFor[K comparable](m *sync.Map, k K) *atomic.Uint64 {
	if v, ok := m.Load(k); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := m.LoadOrStore(k, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

func (c *counters) stats() Stats {
	s := Stats{
		MessagesSent:          c.msgsSent.Load(),
		BatchesSent:           c.batchesSent.Load(),
		BytesSent:             c.bytesSent.Load(),
		MessagesReceived:      c.msgsRecv.Load(),
		BatchesReceived:       c.batchesRecv.Load(),
		BytesReceived:         c.bytesRecv.Load(),
		InvalidMessages:       c.invalid.Load(),
		SnapshotsSent:         c.snapsSent.Load(),
		SnapshotsReceived:     c.snapsRecv.Load(),
		SnapshotBytesSent:     c.snapBytesSent.Load(),
		SnapshotBytesReceived: c.snapBytesRecv.Load(),
		Dropped:               map[DropReason]uint64{},
		Rejected:              map[RejectReason]uint64{},
		Peers:                 map[uint64]PeerStats{},
	}
	c.dropped.Range(func(k, v any) bool {
		s.Dropped[k.(DropReason)] = v.(*atomic.Uint64).Load()
		return true
	})
	c.rejected.Range(func(k, v any) bool {
		s.Rejected[k.(RejectReason)] = v.(*atomic.Uint64).Load()
		return true
	})
	return s
}

func (pc *peerCounters) stats(addr string, queueLen int, urgent, bulk LaneStats) PeerStats {
	return PeerStats{
		Urgent:           urgent,
		Bulk:             bulk,
		Addr:             addr,
		QueueLen:         queueLen,
		MessagesSent:     pc.msgsSent.Load(),
		BatchesSent:      pc.batchesSent.Load(),
		BytesSent:        pc.bytesSent.Load(),
		MessagesReceived: pc.msgsRecv.Load(),
		BytesReceived:    pc.bytesRecv.Load(),
		MessagesDropped:  pc.dropped.Load(),
	}
}

// queueCollector exports each lane's queue depth, read from the queues
// at scrape time so that the hot path updates no gauge.
type queueCollector struct {
	t           *GRPC
	msgs, bytes *prometheus.Desc
}

func newQueueCollector(t *GRPC) *queueCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("rafty", "transport", name), help, []string{"peer", "lane"}, nil)
	}
	return &queueCollector{
		t:     t,
		msgs:  desc("lane_queued_messages", "Messages waiting in a peer's lane queue, by peer and lane (urgent, bulk)."),
		bytes: desc("lane_queued_bytes", "Encoded bytes of the messages waiting in a peer's lane queue, by peer and lane."),
	}
}

// Describe implements prometheus.Collector.
func (qc *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- qc.msgs
	ch <- qc.bytes
}

// Collect implements prometheus.Collector.
func (qc *queueCollector) Collect(ch chan<- prometheus.Metric) {
	peers := qc.t.peers.Load()
	if peers == nil {
		return // scraped while New runs
	}
	for id, p := range *peers {
		for _, l := range p.lanes {
			n, b := l.queued()
			ch <- prometheus.MustNewConstMetric(qc.msgs, prometheus.GaugeValue, float64(n), peerLabel(id), l.lane.String())
			ch <- prometheus.MustNewConstMetric(qc.bytes, prometheus.GaugeValue, float64(b), peerLabel(id), l.lane.String())
		}
	}
}
