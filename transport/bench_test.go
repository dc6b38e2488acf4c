package transport

import (
	"context"
	"io"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// countingHandler counts messages and wakes a waiter after each batch.
type countingHandler struct {
	n        atomic.Int64
	progress chan struct{}
}

func (h *countingHandler) HandleMessages(_ context.Context, msgs []core.Message) error {
	h.n.Add(int64(len(msgs)))
	select {
	case h.progress <- struct{}{}:
	default:
	}
	return nil
}

func (h *countingHandler) HandleSnapshot(context.Context, core.Message, io.Reader) error { return nil }
func (h *countingHandler) ReportUnreachable(uint64)                                      {}

// BenchmarkSendReceive measures the whole path over loopback gRPC: Send
// of a batch of 64 MsgApp (one 256-byte entry each) on one transport,
// through encoding, HTTP/2 and decoding, to HandleMessages on the other.
// allocs/op counts both sides, per batch of 64; allocs/msg divides by 64.
//
// "pipelined" keeps up to 16384 messages in flight, so the transport
// coalesces many Send calls into each RPC (throughput); "lockstep" waits
// for each batch to arrive before sending the next, so every Send is one
// RPC (per-batch cost and latency).
func BenchmarkSendReceive(b *testing.B) {
	b.Run("pipelined", func(b *testing.B) { benchSendReceive(b, 16<<10) })
	b.Run("lockstep", func(b *testing.B) { benchSendReceive(b, 0) })
}

func benchSendReceive(b *testing.B, inFlight int64) {
	recv := &countingHandler{progress: make(chan struct{}, 1)}
	lisA, lisB := listen(b), listen(b)
	peers := []driver.Peer{{ID: 1, Addr: lisA.Addr().String()}, {ID: 2, Addr: lisB.Addr().String()}}
	cfgA := testConfig(1, lisA, peers, newRecorder())
	cfgA.BulkQueueLen = 1 << 16
	cfgB := testConfig(2, lisB, peers, newRecorder())
	cfgB.Handler = recv
	a := startNode(b, cfgA)
	startNode(b, cfgB)

	msgs := benchMessages(1, 2)
	// Warm up the connection and stream.
	a.Send(msgs)
	for recv.n.Load() < int64(len(msgs)) {
		<-recv.progress
	}
	recv.n.Store(0)
	batchesBefore := a.Stats().BatchesSent

	b.SetBytes(int64(len(encodeBatch(batchHeader{testCluster, 1, 2}, msgs))))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	sent := int64(0)
	for range b.N {
		for sent-recv.n.Load() > inFlight {
			<-recv.progress
		}
		a.Send(msgs)
		sent += int64(len(msgs))
	}
	for recv.n.Load() < sent {
		<-recv.progress
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	if d := a.Stats().DroppedTotal(); d != 0 {
		b.Fatalf("%d messages dropped", d)
	}
	b.ReportMetric(float64(sent)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(sent), "allocs/msg")
	b.ReportMetric(float64(a.Stats().BatchesSent-batchesBefore)/float64(b.N), "rpcs/op")
}
