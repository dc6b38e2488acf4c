package driver

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's instruments. They always exist (observing an
// unregistered collector is cheap), and are registered only when
// Config.Registerer is set.
//
// Exported names:
//
//	rafty_driver_propose_duration_seconds   histogram  Propose call to result, successful proposals
//	rafty_driver_save_duration_seconds      histogram  Storage.Save (the fsync) per merged Save of the persister
//	rafty_driver_apply_duration_seconds     histogram  StateMachine.Apply per Ready's batch
//	rafty_driver_save_entries               histogram  entries written per merged Save (entries per fsync)
//	rafty_driver_save_batches               histogram  Readies' persist batches merged into one Save (group commit)
//	rafty_driver_persist_queue_bytes        gauge      bytes queued for the persister, not yet durable (MaxPersistQueueBytes)
//	rafty_driver_apply_queue_bytes          gauge      committed entry bytes handed to the applier, not yet applied (MaxApplyQueueBytes)
//	rafty_driver_proposals_per_batch        histogram  local proposals handed to the core together
//	rafty_driver_inbox_dropped_total        counter    inbound batches dropped, inbox full
//	rafty_driver_invalid_messages_total     counter    inbound messages the core rejected as invalid
//	rafty_driver_commit_writes_total        counter    commit indexes written before applying through CommitWriter (no fsync)
//	rafty_driver_commit_saves_total         counter    commit indexes written before applying by a synced Save (Storage without CommitWriter)
//	rafty_driver_undecodable_entries_total  counter    committed entries whose envelope does not decode, applied as failed no-ops
//	rafty_driver_invalid_proposals_total    counter    forwarded proposal entries refused as malformed (ErrInvalidProposal)
//	rafty_driver_forwarded_dropped_total    counter    forwarded proposal entries dropped with the inbox full and answered (ErrLeaderBusy)
//	rafty_driver_disk_stalled               gauge      1 while a Storage write has been in flight longer than DiskStallTimeout
//	rafty_driver_disk_stalls_total          counter    Storage writes that exceeded DiskStallTimeout
//	rafty_driver_stall_handovers_total      counter    leadership hand-overs asked for because of a stalled disk
//	rafty_driver_removed_senders_total      counter    inbound batches refused because their sender was removed from the cluster
//
// Snapshots and compaction (with Config.Snapshots):
//
//	rafty_driver_snapshots_total                   counter    local snapshots taken (durable)
//	rafty_driver_snapshot_failures_total           counter    local snapshots that failed
//	rafty_driver_snapshot_duration_seconds         histogram  capture to durable, per local snapshot
//	rafty_driver_snapshot_size_bytes               gauge      data bytes of the latest local snapshot
//	rafty_driver_snapshot_index                    gauge      index of the latest snapshot (local or installed)
//	rafty_driver_compacted_index                   gauge      the log holds no entry at or below this index
//	rafty_driver_compactions_total                 counter    log compactions
//	rafty_driver_snapshot_sends_total              counter    snapshots sent to followers and installed there
//	rafty_driver_snapshot_send_failures_total      counter    outgoing transfers that failed (retried with backoff)
//	rafty_driver_snapshot_send_duration_seconds    histogram  outgoing transfer, open to the follower's acknowledgement
//	rafty_driver_snapshot_sent_bytes_total         counter    snapshot data bytes read for followers
//	rafty_driver_snapshots_installed_total         counter    snapshots received from the leader and installed
//	rafty_driver_snapshot_receive_failures_total   counter    incoming transfers that failed
//	rafty_driver_snapshot_received_bytes_total     counter    snapshot data bytes received
//	rafty_driver_snapshot_resumes_total            counter    incoming transfers that resumed an interrupted one
//	rafty_driver_snapshot_install_duration_seconds histogram  restore of the state machine and log, per installed snapshot
type metrics struct {
	proposeSeconds    prometheus.Histogram
	saveSeconds       prometheus.Histogram
	applySeconds      prometheus.Histogram
	saveEntries       prometheus.Histogram
	proposalsPerBatch prometheus.Histogram
	inboxDropped      prometheus.Counter
	invalidMessages   prometheus.Counter
	batchesPerSave    prometheus.Histogram
	persistQueueBytes prometheus.Gauge
	applyQueueBytes   prometheus.Gauge
	commitWrites      prometheus.Counter
	commitSaves       prometheus.Counter

	undecodableEntries prometheus.Counter
	removedSenders     prometheus.Counter
	invalidProposals   prometheus.Counter
	forwardedDropped   prometheus.Counter
	diskStalled        prometheus.Gauge
	diskStalls         prometheus.Counter
	stallHandovers     prometheus.Counter

	snapshots          prometheus.Counter
	snapshotFailures   prometheus.Counter
	snapshotSeconds    prometheus.Histogram
	snapshotSize       prometheus.Gauge
	snapshotIndex      prometheus.Gauge
	compactedIndex     prometheus.Gauge
	compactions        prometheus.Counter
	snapSends          prometheus.Counter
	snapSendFailures   prometheus.Counter
	snapSendSeconds    prometheus.Histogram
	snapSentBytes      prometheus.Counter
	snapInstalls       prometheus.Counter
	snapRecvFailures   prometheus.Counter
	snapRecvBytes      prometheus.Counter
	snapResumes        prometheus.Counter
	snapInstallSeconds prometheus.Histogram

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

// latencyBuckets span 50 µs to ~3 s: an in-memory fsync to a stalled disk.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 17)

// slowBuckets span 1 ms to ~17 min: snapshots of any size.
var slowBuckets = prometheus.ExponentialBuckets(1e-3, 2, 21)

// countBuckets span 1 to 4096 items per batch.
var countBuckets = prometheus.ExponentialBuckets(1, 2, 13)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rafty", Subsystem: "driver", Name: name, Help: help, Buckets: buckets,
		})
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rafty", Subsystem: "driver", Name: name, Help: help,
		})
	}
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "rafty", Subsystem: "driver", Name: name, Help: help,
		})
	}
	m := &metrics{
		proposeSeconds:    h("propose_duration_seconds", "Time from Propose to its result, for successful proposals.", latencyBuckets),
		saveSeconds:       h("save_duration_seconds", "Time spent in Storage.Save (durable write) per merged Save.", latencyBuckets),
		applySeconds:      h("apply_duration_seconds", "Time spent in StateMachine.Apply per batch.", latencyBuckets),
		saveEntries:       h("save_entries", "Log entries written per Storage.Save (entries per fsync).", countBuckets),
		batchesPerSave:    h("save_batches", "Persist batches (one per Ready) merged into one Storage.Save.", countBuckets),
		persistQueueBytes: g("persist_queue_bytes", "Bytes queued for the persister and not yet durable."),
		applyQueueBytes:   g("apply_queue_bytes", "Bytes of committed entries handed to the applier and not yet applied."),
		proposalsPerBatch: h("proposals_per_batch", "Local proposals handed to the core in one batch.", countBuckets),
		inboxDropped:      c("inbox_dropped_total", "Inbound message batches dropped because the inbox was full."),
		invalidMessages:   c("invalid_messages_total", "Inbound messages the core rejected as invalid."),
		commitWrites:      c("commit_writes_total", "Commit indexes written through CommitWriter before applying (no fsync; not in save_duration_seconds)."),
		commitSaves:       c("commit_saves_total", "Commit indexes written before applying by a synced Save, for lack of CommitWriter."),
		reg:               reg,

		undecodableEntries: c("undecodable_entries_total", "Committed entries whose proposal envelope does not decode, applied as failed no-ops."),
		removedSenders:     c("removed_senders_total", "Inbound batches refused because their sender was removed from the cluster."),
		invalidProposals:   c("invalid_proposals_total", "Forwarded proposal entries refused as malformed."),
		forwardedDropped:   c("forwarded_dropped_total", "Forwarded proposal entries dropped because the inbox was full, and answered at once."),
		diskStalled:        g("disk_stalled", "1 while a Storage write has been in flight for longer than DiskStallTimeout."),
		diskStalls:         c("disk_stalls_total", "Storage writes that took longer than DiskStallTimeout."),
		stallHandovers:     c("stall_handovers_total", "Leadership hand-overs asked for because of a stalled disk."),

		snapshots:          c("snapshots_total", "Local snapshots taken and made durable."),
		snapshotFailures:   c("snapshot_failures_total", "Local snapshots that failed."),
		snapshotSeconds:    h("snapshot_duration_seconds", "Time from capturing a local snapshot to its being durable.", slowBuckets),
		snapshotSize:       g("snapshot_size_bytes", "Data bytes of the latest local snapshot."),
		snapshotIndex:      g("snapshot_index", "Log index of the latest snapshot, taken locally or installed."),
		compactedIndex:     g("compacted_index", "The log holds no entry at or below this index."),
		compactions:        c("compactions_total", "Log compactions."),
		snapSends:          c("snapshot_sends_total", "Snapshots sent to followers and installed there."),
		snapSendFailures:   c("snapshot_send_failures_total", "Outgoing snapshot transfers that failed (retried with backoff)."),
		snapSendSeconds:    h("snapshot_send_duration_seconds", "Outgoing snapshot transfers, from opening the snapshot to the follower's acknowledgement.", slowBuckets),
		snapSentBytes:      c("snapshot_sent_bytes_total", "Snapshot data bytes read for followers."),
		snapInstalls:       c("snapshots_installed_total", "Snapshots received from the leader and installed."),
		snapRecvFailures:   c("snapshot_receive_failures_total", "Incoming snapshot transfers that failed."),
		snapRecvBytes:      c("snapshot_received_bytes_total", "Snapshot data bytes received."),
		snapResumes:        c("snapshot_resumes_total", "Incoming snapshot transfers that resumed an interrupted one."),
		snapInstallSeconds: h("snapshot_install_duration_seconds", "Time to restore the state machine and the log from a received snapshot.", slowBuckets),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{
		m.proposeSeconds, m.saveSeconds, m.applySeconds, m.saveEntries,
		m.proposalsPerBatch, m.inboxDropped, m.invalidMessages, m.batchesPerSave, m.persistQueueBytes,
		m.applyQueueBytes, m.commitWrites, m.commitSaves,
		m.snapshots, m.snapshotFailures, m.snapshotSeconds, m.snapshotSize, m.snapshotIndex,
		m.compactedIndex, m.compactions, m.snapSends, m.snapSendFailures, m.snapSendSeconds,
		m.snapSentBytes, m.snapInstalls, m.snapRecvFailures, m.snapRecvBytes, m.snapResumes,
		m.snapInstallSeconds,
		m.undecodableEntries, m.removedSenders, m.invalidProposals, m.forwardedDropped, m.diskStalled, m.diskStalls, m.stallHandovers,
	} {
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, errors.Join(errors.New("driver: registering metrics (wrap the Registerer with a per-node label?)"), err)
		}
		m.registered = append(m.registered, col)
	}
	return m, nil
}

// unregister removes what newMetrics registered, so a node can be
// restarted in the same process with the same Registerer.
func (m *metrics) unregister() {
	for _, col := range m.registered {
		m.reg.Unregister(col)
	}
	m.registered = nil
}
