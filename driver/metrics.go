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
//	rafty_driver_save_duration_seconds      histogram  Storage.Save (the fsync) per Ready
//	rafty_driver_apply_duration_seconds     histogram  StateMachine.Apply per Ready
//	rafty_driver_save_entries               histogram  entries written per Save (Ready batch size)
//	rafty_driver_proposals_per_batch        histogram  local proposals handed to the core together
//	rafty_driver_inbox_dropped_total        counter    inbound batches dropped, inbox full
//	rafty_driver_invalid_messages_total     counter    inbound messages the core rejected as invalid
type metrics struct {
	proposeSeconds    prometheus.Histogram
	saveSeconds       prometheus.Histogram
	applySeconds      prometheus.Histogram
	saveEntries       prometheus.Histogram
	proposalsPerBatch prometheus.Histogram
	inboxDropped      prometheus.Counter
	invalidMessages   prometheus.Counter

	reg        prometheus.Registerer
	registered []prometheus.Collector
}

// latencyBuckets span 50 µs to ~3 s: an in-memory fsync to a stalled disk.
var latencyBuckets = prometheus.ExponentialBuckets(50e-6, 2, 17)

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
	m := &metrics{
		proposeSeconds:    h("propose_duration_seconds", "Time from Propose to its result, for successful proposals.", latencyBuckets),
		saveSeconds:       h("save_duration_seconds", "Time spent in Storage.Save (durable write) per Ready.", latencyBuckets),
		applySeconds:      h("apply_duration_seconds", "Time spent in StateMachine.Apply per Ready.", latencyBuckets),
		saveEntries:       h("save_entries", "Log entries written per Storage.Save.", countBuckets),
		proposalsPerBatch: h("proposals_per_batch", "Local proposals handed to the core in one batch.", countBuckets),
		inboxDropped:      c("inbox_dropped_total", "Inbound message batches dropped because the inbox was full."),
		invalidMessages:   c("invalid_messages_total", "Inbound messages the core rejected as invalid."),
		reg:               reg,
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{
		m.proposeSeconds, m.saveSeconds, m.applySeconds, m.saveEntries,
		m.proposalsPerBatch, m.inboxDropped, m.invalidMessages,
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
