package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
)

// The metrics a node exports on --metrics-listen, besides Go runtime and
// process metrics and what the driver (rafty_driver_*: proposal, save,
// i.e. write+fsync, and apply latency histograms) and the transport
// (rafty_transport_*: messages and bytes sent and received per peer)
// register themselves:
//
//	rafty_node_term                     gauge    current Raft term
//	rafty_node_role{role}               gauge    1 for the node's role, 0 for the others
//	rafty_node_is_leader                gauge    1 on the leader
//	rafty_node_leader_id                gauge    leader this node knows, 0 for none
//	rafty_node_leader_changes_total     counter  changes to a new known leader
//	rafty_node_commit_index             gauge    highest index known committed
//	rafty_node_applied_index            gauge    highest index applied to the state machine
//	rafty_node_last_index               gauge    last index of the local log
//	rafty_node_pending_proposals        gauge    Propose calls in flight on this node
//	rafty_node_pending_reads            gauge    linearizable reads in flight on this node
//	rafty_disk_*                        WAL counters (saves, fsyncs, bytes written, segments)
//	rafty_disk_filesystem_{avail,size}_bytes  free (to kvnode) and total bytes of the file
//	                                    system holding the WAL (Linux only)
//	rafty_kv_requests_total{method,code}        client RPCs by method and gRPC code
//	rafty_kv_request_duration_seconds{method}   client RPC latency
//	rafty_kv_proposals_total                    client writes (Put, Delete, Txn) proposed here
//	rafty_kv_proposal_failures_total{code}      those that failed, by gRPC code
//	rafty_kv_proposal_duration_seconds          their latency, failures included
//	rafty_pebble_disk_usage_bytes               bytes the Pebble store uses on disk
//	rafty_pebble_{memtable_bytes,memtables,l0_files,l0_sublevels,read_amplification,
//	  compaction_debt_bytes,compactions_total,flushes_total,block_cache_bytes,
//	  block_cache_hits_total,block_cache_misses_total}  Pebble engine statistics
//	rafty_kv_applied_index                      applied index recorded in Pebble

// newRegistry returns the registry every component of a node registers
// into: a private one (not the global default), so nothing registered by
// an imported package leaks into the node's metrics unnoticed.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// nodeRef holds the running node once it exists. The metrics endpoint
// starts before the node (so /healthz answers during a long WAL
// recovery), so everything reading the node goes through it.
type nodeRef struct {
	p atomic.Pointer[driver.Node]
}

func (r *nodeRef) load() *driver.Node     { return r.p.Load() }
func (r *nodeRef) store(n *driver.Node)   { r.p.Store(n) }
func (r *nodeRef) status() *driver.Status { return statusOf(r.load()) }

// statusOf returns n's status, or nil for no node.
func statusOf(n *driver.Node) *driver.Status {
	if n == nil {
		return nil
	}
	st := n.Status()
	return &st
}

// roles are the values of the rafty_node_role label.
var roles = []core.Role{core.RoleFollower, core.RolePreCandidate, core.RoleCandidate, core.RoleLeader}

// statusCollector turns driver.Status into gauges at scrape time: reading
// Status never waits for the node's loop, and sampling on scrape needs no
// polling goroutine and is never stale.
type statusCollector struct {
	node                                      *nodeRef
	term, role, isLeader, leaderID            *prometheus.Desc
	commit, applied, last, pendingP, pendingR *prometheus.Desc
	// refused counts messages the core refused, by reason; campaigns and
	// ignoredVotes count elections not started and votes not granted.
	refused, refusedCampaigns, ignoredVotes *prometheus.Desc
}

// refusedReasons are the label values of rafty_node_refused_messages_total,
// each a core.Counters field. out_of_range is a forged or corrupt term or
// index (core.MaxTerm, core.MaxIndex): any non-zero value deserves an
// operator's attention.
var refusedReasons = []struct {
	label string
	count func(core.Counters) uint64
}{
	{"invalid", func(c core.Counters) uint64 { return c.InvalidMessages }},
	{"unknown_sender", func(c core.Counters) uint64 { return c.UnknownSenders }},
	{"stale", func(c core.Counters) uint64 { return c.StaleMessages }},
	{"out_of_range", func(c core.Counters) uint64 { return c.OutOfRangeMessages }},
}

func newStatusCollector(node *nodeRef) *statusCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("rafty_node_"+name, help, labels, nil)
	}
	return &statusCollector{
		node:     node,
		term:     d("term", "Current Raft term."),
		role:     d("role", "1 for the node's current role, 0 for the others.", "role"),
		isLeader: d("is_leader", "1 if this node is the leader."),
		leaderID: d("leader_id", "ID of the leader this node knows, 0 for none."),
		commit:   d("commit_index", "Highest log index known to be committed."),
		applied:  d("applied_index", "Highest log index applied to the state machine."),
		last:     d("last_index", "Last index of the local log."),
		pendingP: d("pending_proposals", "Proposals in flight on this node."),
		pendingR: d("pending_reads", "Linearizable reads in flight on this node."),
		refused: d("refused_messages_total",
			"Peer messages the Raft core refused, by reason (out_of_range: a term or index past core.MaxTerm/MaxIndex, forged or corrupt).", "reason"),
		refusedCampaigns: d("refused_campaigns_total", "Elections not started because the term or log index reached its limit (core.MaxTerm, core.MaxIndex)."),
		ignoredVotes:     d("ignored_votes_total", "Vote requests ignored while a leader is known to be live (thesis 4.2.3)."),
	}
}

// Describe implements prometheus.Collector.
func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.role, c.isLeader, c.leaderID, c.commit, c.applied, c.last, c.pendingP, c.pendingR,
		c.refused, c.refusedCampaigns, c.ignoredVotes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector; before the node runs it
// reports nothing rather than zeros that would look like real state.
func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.node.status()
	if st == nil {
		return
	}
	g := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	g(c.term, st.Term)
	for _, r := range roles {
		g(c.role, b2u(st.Role == r), r.String())
	}
	g(c.isLeader, b2u(st.Role == core.RoleLeader))
	g(c.leaderID, st.Leader)
	g(c.commit, st.Commit)
	g(c.applied, st.Applied)
	g(c.last, st.LastIndex)
	g(c.pendingP, uint64(max(st.PendingProposals, 0)))
	g(c.pendingR, uint64(max(st.PendingReads, 0)))
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, r := range refusedReasons {
		counter(c.refused, r.count(st.Counters), r.label)
	}
	counter(c.refusedCampaigns, st.Counters.RefusedCampaigns)
	counter(c.ignoredVotes, st.Counters.IgnoredVotes)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// diskCollector exports the WAL's counters (disk.Store.Stats) at scrape
// time. The write and fsync latency histogram is the driver's
// rafty_driver_save_duration_seconds: one Save is one group-commit write
// and its fdatasync.
type diskCollector struct {
	store                                   *disk.Store
	saves, batches, fsyncs, dirSyncs, bytes *prometheus.Desc
	segments, cacheBytes, first, last       *prometheus.Desc
	fsAvail, fsSize                         *prometheus.Desc
}

func newDiskCollector(store *disk.Store) *diskCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("rafty_disk_"+name, help, nil, nil)
	}
	return &diskCollector{
		store:      store,
		saves:      d("saves_total", "Save calls that wrote something."),
		batches:    d("batches_total", "Group-commit writes (one write syscall each)."),
		fsyncs:     d("fsyncs_total", "fdatasync calls on WAL segments."),
		dirSyncs:   d("dir_syncs_total", "fsync calls on the WAL directory."),
		bytes:      d("bytes_written_total", "Bytes written to WAL segments."),
		segments:   d("segments", "WAL segment files in use."),
		cacheBytes: d("cache_bytes", "Bytes held by the recent-entry cache."),
		first:      d("first_index", "First log index held in the WAL."),
		last:       d("last_index", "Last log index held in the WAL."),
		fsAvail:    d("filesystem_avail_bytes", "Bytes available to kvnode on the file system holding the WAL (the data directory)."),
		fsSize:     d("filesystem_size_bytes", "Size in bytes of the file system holding the WAL (the data directory)."),
	}
}

// Describe implements prometheus.Collector.
func (c *diskCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.saves, c.batches, c.fsyncs, c.dirSyncs, c.bytes, c.segments, c.cacheBytes, c.first, c.last, c.fsAvail, c.fsSize} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *diskCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.store.Stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.saves, s.Saves)
	counter(c.batches, s.Batches)
	counter(c.fsyncs, s.Fsyncs)
	counter(c.dirSyncs, s.DirSyncs)
	counter(c.bytes, s.BytesWritten)
	gauge(c.segments, float64(s.Segments))
	gauge(c.cacheBytes, float64(s.CacheBytes))
	gauge(c.first, float64(s.FirstIndex))
	gauge(c.last, float64(s.LastIndex))
	// Free space is what a disk-space alert needs before Pebble or the
	// WAL fails a write; where it cannot be read it is left out.
	if avail, size, ok := filesystemSpace(c.store.Dir()); ok {
		gauge(c.fsAvail, float64(avail))
		gauge(c.fsSize, float64(size))
	}
}

// watchLeader counts leader changes until the node stops (the driver
// logs them). It follows the driver's change channel, closed on each
// change, so no change is missed by sampling; several in quick succession
// may be seen as one, which only undercounts flapping that fast.
func watchLeader(n *driver.Node, changes prometheus.Counter) {
	last, changed := n.Leader()
	if last != core.None {
		changes.Inc()
	}
	for {
		select {
		case <-changed:
		case <-n.Done():
			return
		}
		var lead uint64
		lead, changed = n.Leader()
		if lead != last && lead != core.None {
			changes.Inc()
		}
		last = lead
	}
}

// storeCollector exports the Pebble store's statistics and applied index
// at scrape time.
type storeCollector struct {
	store   *kv.Store
	applied *prometheus.Desc
	refused *prometheus.Desc
	pebble  []pebbleGauge
}

// pebbleGauge is one Pebble statistic exported as a metric.
type pebbleGauge struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(kv.PebbleStats) float64
}

func newStoreCollector(store *kv.Store) *storeCollector {
	g := func(name, help string, kind prometheus.ValueType, v func(kv.PebbleStats) float64) pebbleGauge {
		return pebbleGauge{desc: prometheus.NewDesc("rafty_pebble_"+name, help, nil, nil), kind: kind, value: v}
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	return &storeCollector{
		store:   store,
		applied: prometheus.NewDesc("rafty_kv_applied_index", "Applied index recorded by the key-value store.", nil, nil),
		refused: prometheus.NewDesc("rafty_kv_refused_commands_total", "Committed commands applied as failed no-ops: corrupt or breaking a rule.", nil, nil),
		pebble: []pebbleGauge{
			g("disk_usage_bytes", "Bytes the Pebble store uses on disk.", gauge, func(p kv.PebbleStats) float64 { return float64(p.DiskSpaceUsageBytes) }),
			g("memtable_bytes", "Bytes allocated by memtables.", gauge, func(p kv.PebbleStats) float64 { return float64(p.MemTableBytes) }),
			g("memtables", "Number of memtables.", gauge, func(p kv.PebbleStats) float64 { return float64(p.MemTableCount) }),
			g("l0_files", "Sstables in level 0.", gauge, func(p kv.PebbleStats) float64 { return float64(p.L0Files) }),
			g("l0_sublevels", "Sublevels in level 0.", gauge, func(p kv.PebbleStats) float64 { return float64(p.L0Sublevels) }),
			g("read_amplification", "Read amplification of the LSM.", gauge, func(p kv.PebbleStats) float64 { return float64(p.ReadAmplification) }),
			g("compaction_debt_bytes", "Estimated bytes compaction must rewrite to reach a stable LSM.", gauge, func(p kv.PebbleStats) float64 { return float64(p.CompactionDebtBytes) }),
			g("compactions_total", "Compactions run.", counter, func(p kv.PebbleStats) float64 { return float64(p.Compactions) }),
			g("flushes_total", "Memtable flushes run.", counter, func(p kv.PebbleStats) float64 { return float64(p.Flushes) }),
			g("block_cache_bytes", "Bytes in the block cache.", gauge, func(p kv.PebbleStats) float64 { return float64(p.BlockCacheBytes) }),
			g("block_cache_hits_total", "Block cache hits.", counter, func(p kv.PebbleStats) float64 { return float64(p.BlockCacheHits) }),
			g("block_cache_misses_total", "Block cache misses.", counter, func(p kv.PebbleStats) float64 { return float64(p.BlockCacheMisses) }),
		},
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.applied
	ch <- c.refused
	for _, g := range c.pebble {
		ch <- g.desc
	}
}

// Collect implements prometheus.Collector; a closed store (during a stop)
// reports its last applied index only.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	if st, err := c.store.PebbleStats(); err == nil {
		for _, g := range c.pebble {
			ch <- prometheus.MustNewConstMetric(g.desc, g.kind, g.value(st))
		}
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(c.store.RefusedCommands()))
	}
	ch <- prometheus.MustNewConstMetric(c.applied, prometheus.GaugeValue, float64(c.store.AppliedIndex()))
}

// requestMetrics instrument the client gRPC service: the interceptor
// counts every call by method and status code and times it, and counts
// writes (each one a Raft proposal) separately.
type requestMetrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	proposals prometheus.Counter
	failures  *prometheus.CounterVec
	proposeD  prometheus.Histogram
}

// writeMethods are the client RPCs that become Raft proposals.
var writeMethods = map[string]bool{"Put": true, "Delete": true, "Txn": true}

// requestBuckets span 100 µs (a local serializable read) to ~6.5 s (a
// write waiting out an election).
var requestBuckets = prometheus.ExponentialBuckets(100e-6, 2, 17)

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rafty_kv_requests_total", Help: "Client RPCs served, by method and gRPC status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rafty_kv_request_duration_seconds", Help: "Client RPC latency, by method.", Buckets: requestBuckets,
		}, []string{"method"}),
		proposals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rafty_kv_proposals_total", Help: "Writes (Put, Delete, Txn) this member proposed to Raft for clients.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rafty_kv_proposal_failures_total", Help: "Writes that failed, by gRPC status code (Unavailable: not applied; Aborted, DeadlineExceeded: outcome unknown).",
		}, []string{"code"}),
		proposeD: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rafty_kv_proposal_duration_seconds", Help: "Write latency from request to applied result, failures included.", Buckets: requestBuckets,
		}),
	}
	// The series an alert or the dashboard divides by exist from the
	// start, at 0, so that a quiet node shows 0 rather than no data.
	for _, method := range clientMethods {
		m.requests.WithLabelValues(method, codes.OK.String())
		m.duration.WithLabelValues(method)
	}
	for _, code := range proposalFailureCodes {
		m.failures.WithLabelValues(code.String())
	}
	reg.MustRegister(m.requests, m.duration, m.proposals, m.failures, m.proposeD)
	return m
}

// clientMethods are the KV service's request kinds, pre-initialised in
// rafty_kv_requests_total with code OK.
var clientMethods = []string{"Put", "Get", "Delete", "Range", "Txn", "Status"}

// proposalFailureCodes are the codes a failed write ends with, as the
// help of rafty_kv_proposal_failures_total explains them.
var proposalFailureCodes = []codes.Code{codes.Unavailable, codes.Aborted, codes.DeadlineExceeded}

// observe records one finished call.
func (m *requestMetrics) observe(fullMethod string, elapsed time.Duration, err error) {
	method := shortMethod(fullMethod)
	code := status.Code(err)
	m.duration.WithLabelValues(method).Observe(elapsed.Seconds())
	m.requests.WithLabelValues(method, code.String()).Inc()
	if writeMethods[method] {
		m.proposals.Inc()
		m.proposeD.Observe(elapsed.Seconds())
		if err != nil {
			m.failures.WithLabelValues(code.String()).Inc()
		}
	}
}

// unaryInterceptor records every unary client RPC.
func (m *requestMetrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.observe(info.FullMethod, time.Since(start), err)
	return resp, err
}

// streamInterceptor records every streaming client RPC (the health
// service's Watch streams).
func (m *requestMetrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.observe(info.FullMethod, time.Since(start), err)
	return err
}

// shortMethod turns "/rafty.kv.v1.KV/Put" into "Put": the service is
// always the same, and short labels read better on dashboards.
func shortMethod(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

// readiness answers /readyz: a node is ready to serve clients when it
// knows a leader and has applied everything it knows committed, and it
// stops being ready as soon as it begins a graceful stop, so load
// balancers drain it before it goes away.
type readiness struct {
	node     *nodeRef
	stopping atomic.Bool
	// removed: the node was removed from the cluster and this is
	// recorded in its data directory (recordRemoved).
	removed atomic.Bool
}

// check reports whether the node is ready, and why not.
func (r *readiness) check() (bool, string) {
	if r.stopping.Load() {
		return false, "shutting down"
	}
	if r.removed.Load() {
		return false, "removed from the cluster: this member is passive; restart it to join anew (its data is moved aside)"
	}
	return readinessOf(r.node.status())
}

// readinessOf is check's verdict on a node's status (nil: no node yet).
func readinessOf(st *driver.Status) (bool, string) {
	switch {
	case st == nil:
		return false, "starting"
	case st.Stopped:
		return false, "node stopped"
	case st.Removed:
		return false, "no longer a member of the cluster"
	case st.DiskStalled:
		return false, fmt.Sprintf("disk stalled: a write has not completed for %v", st.DiskWriteBlocked.Round(time.Millisecond))
	case st.Leader == core.None:
		return false, "no leader known"
	case st.Applied < st.Commit:
		return false, fmt.Sprintf("catching up: applied %d < commit %d", st.Applied, st.Commit)
	}
	return true, "ok: leader " + strconv.FormatUint(st.Leader, 10) + ", applied " + strconv.FormatUint(st.Applied, 10)
}

// newMetricsMux serves /metrics, /healthz (the process is up and serving
// HTTP) and /readyz (see readiness).
func newMetricsMux(reg *prometheus.Registry, ready *readiness, log *slog.Logger, enablePprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	if enablePprof {
		// The profiles make benchmark bottlenecks visible (make profile);
		// off by default because they expose the process's internals.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          reg,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready.check()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	return mux
}
