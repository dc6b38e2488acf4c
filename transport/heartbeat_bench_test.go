package transport

import (
	"context"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// hbBenchHandler receives the benchmark's traffic: it counts appends and
// records each heartbeat's delivery latency (Context is its sequence
// number, sentAt[seq] its Send time in ns since start) and how many
// appends were delivered meanwhile (appsAt[seq] holds the count at Send,
// then the difference).
type hbBenchHandler struct {
	start     time.Time
	sentAt    []atomic.Int64
	latencies []atomic.Int64
	appsAt    []atomic.Int64
	hbs       atomic.Int64
	apps      atomic.Int64
	progress  chan struct{}
	// want heartbeats delivered close allDone (once want is set).
	want    atomic.Int64
	allDone chan struct{}
}

func (h *hbBenchHandler) HandleMessages(_ context.Context, msgs []core.Message) error {
	now := int64(time.Since(h.start))
	for i := range msgs {
		switch m := &msgs[i]; m.Type {
		case core.MsgHeartbeat:
			if seq := m.Context; seq < uint64(len(h.sentAt)) {
				h.latencies[seq].Store(now - h.sentAt[seq].Load())
				h.appsAt[seq].Store(h.apps.Load() - h.appsAt[seq].Load())
				if n := h.hbs.Add(1); n == h.want.Load() {
					close(h.allDone)
				}
			}
		case core.MsgApp:
			h.apps.Add(1)
		}
	}
	select {
	case h.progress <- struct{}{}:
	default:
	}
	return nil
}

func (h *hbBenchHandler) HandleSnapshot(context.Context, core.Message, io.Reader) error { return nil }
func (h *hbBenchHandler) ReportUnreachable(uint64)                                      {}

// BenchmarkHeartbeatUnderBulk measures how long a heartbeat takes from
// Send to the receiver's HandleMessages while the same peer's appends
// keep the network busy: one goroutine sends 1 MiB MsgApps, keeping
// hbBulkBacklog of them sent but not yet received, while heartbeats go
// out every hbInterval. One op is one heartbeat; p50/p99/p99.9 are its
// delivery latencies, MiB/s the appends' throughput meanwhile, and
// passed-p50/p99 the number of appends delivered while a heartbeat was
// in flight (a count, so it does not depend on how loaded the machine
// is: about the backlog when the heartbeat queues behind the appends,
// about 0 when it overtakes them). Run it with a fixed count, e.g.
// -benchtime=3000x.
func BenchmarkHeartbeatUnderBulk(b *testing.B) {
	for _, v := range heartbeatBenchVariants {
		b.Run(v.name, func(b *testing.B) { benchHeartbeatUnderBulk(b, v.mod) })
	}
}

const (
	hbBulkBacklog = 16 // 1 MiB appends sent and not yet received
	hbInterval    = time.Millisecond
)

func benchHeartbeatUnderBulk(b *testing.B, mod func(*GRPC)) {
	h := &hbBenchHandler{
		start:     time.Now(),
		sentAt:    make([]atomic.Int64, b.N+1),
		latencies: make([]atomic.Int64, b.N+1),
		appsAt:    make([]atomic.Int64, b.N+1),
		progress:  make(chan struct{}, 1),
		allDone:   make(chan struct{}),
	}
	lisA, lisB := listen(b), listen(b)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	cfgA := testConfig(1, lisA, peers, newRecorder())
	cfgB := testConfig(2, lisB, peers, newRecorder())
	cfgB.Handler = h
	start := func(cfg Config) *GRPC {
		tr, err := New(cfg)
		must(b, err)
		mod(tr)
		must(b, tr.Start(context.Background()))
		b.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	a := start(cfgA)
	start(cfgB)

	// Warm up both streams.
	payload := make([]byte, 1<<20)
	a.Send([]core.Message{app(1, 2, 1, payload), heartbeat(1, 2, 0)})
	for h.apps.Load() < 1 || h.hbs.Load() < 1 {
		<-h.progress
	}
	h.hbs.Store(0)
	h.want.Store(int64(b.N))

	stop := make(chan struct{})
	bulkDone := make(chan int64)
	go func() {
		sent := h.apps.Load()
		for {
			for sent-h.apps.Load() >= hbBulkBacklog {
				select {
				case <-stop:
					bulkDone <- sent
					return
				case <-h.progress:
				case <-time.After(time.Millisecond):
				}
			}
			select {
			case <-stop:
				bulkDone <- sent
				return
			default:
			}
			a.Send([]core.Message{app(1, 2, uint64(sent+1), payload)})
			sent++
		}
	}()
	// Let the bulk lane fill before the first heartbeat.
	for h.apps.Load() < 2*hbBulkBacklog {
		<-h.progress
	}
	appsBefore := h.apps.Load()
	b.ResetTimer()
	tick := time.NewTicker(hbInterval)
	for seq := 1; seq <= b.N; seq++ {
		<-tick.C
		h.appsAt[seq].Store(h.apps.Load())
		h.sentAt[seq].Store(int64(time.Since(h.start)))
		a.Send([]core.Message{heartbeat(1, 2, uint64(seq))})
	}
	tick.Stop()
	select {
	case <-h.allDone:
	case <-time.After(waitTimeout):
	}
	b.StopTimer()
	close(stop)
	<-bulkDone
	if got := h.hbs.Load(); got < int64(b.N) {
		b.Fatalf("%d of %d heartbeats delivered; drops %v", got, b.N, a.Stats().Dropped)
	}
	lat := make([]int64, 0, b.N)
	passed := make([]int64, 0, b.N)
	for seq := 1; seq <= b.N; seq++ {
		lat = append(lat, h.latencies[seq].Load())
		passed = append(passed, h.appsAt[seq].Load())
	}
	slices.Sort(lat)
	slices.Sort(passed)
	q := func(v []int64, p float64) float64 { return float64(v[int(p*float64(len(v)-1))]) }
	b.ReportMetric(q(lat, 0.50)/1e3, "p50-µs")
	b.ReportMetric(q(lat, 0.99)/1e3, "p99-µs")
	b.ReportMetric(q(lat, 0.999)/1e3, "p99.9-µs")
	b.ReportMetric(q(passed, 0.50), "passed-p50")
	b.ReportMetric(q(passed, 0.99), "passed-p99")
	b.ReportMetric(float64(h.apps.Load()-appsBefore)/b.Elapsed().Seconds(), "bulk-MiB/s")
	b.ReportMetric(0, "ns/op")
}
