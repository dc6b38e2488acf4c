package driver_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/driver"
)

// BenchmarkPropose measures Propose on the leader of a 3-node in-process
// cluster with 256-byte commands, at 1, 16 and 128 concurrent proposers,
// with production timing (100 ms tick, heartbeat every tick, election
// timeout 5-10 ticks):
//
//   - memnet: drivertest.Network and memlog (no fsync): the driver's and
//     core's own cost;
//   - disk+grpc: disk.Store with real fdatasync in a temporary directory,
//     and transport.GRPC on loopback.
//
// Reported: props/s (throughput), p50-µs and p99-µs (Propose latency),
// saves/s (Storage.Save calls on the leader per second: each is one
// fdatasync on disk.Store) and props/save (proposals per leader Save:
// the batching factor).
//
//	go test -run '^$' -bench BenchmarkPropose -benchtime 5000x ./driver/
func BenchmarkPropose(b *testing.B) {
	b.Run("memnet", func(b *testing.B) {
		c := newCluster(b, 3, withConfig(func(cfg *driver.Config) {
			cfg.Clock = nil // wall clock, production timing
			cfg.TickInterval = 0
			cfg.TuneRaft = nil
		}))
		lead := c.leader()
		node := c.nodes[lead]
		saves := func() int64 { return c.stores[lead].saves.Load() }
		runProposeBench(b, node, saves)
	})
	b.Run("disk+grpc", func(b *testing.B) {
		rc := newRealCluster(b, 3, driver.DefaultTickInterval, nil)
		lead := rc.asCluster().leader()
		node := rc.nodes[lead]
		saves := func() int64 { return rc.stores[lead].saves.Load() }
		runProposeBench(b, node, saves)
	})
}

func runProposeBench(b *testing.B, node *driver.Node, saves func() int64) {
	for _, conc := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("C=%d", conc), func(b *testing.B) {
			cmd := make([]byte, 256)
			lat := make([]time.Duration, b.N)
			var next, failed atomic.Int64
			var wg sync.WaitGroup
			saves0 := saves()
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						t0 := time.Now()
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := node.Propose(ctx, cmd)
						cancel()
						lat[i] = time.Since(t0)
						if err != nil {
							failed.Add(1)
							if !errors.Is(err, driver.ErrProposalDropped) && !errors.Is(err, driver.ErrOutcomeUnknown) {
								b.Error(err)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Logf("%d of %d proposals failed (leader change during the run)", f, b.N)
			}
			n := int64(b.N)
			s := saves() - saves0
			slices.Sort(lat)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "props/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(s)/elapsed.Seconds(), "saves/s")
			if s > 0 {
				b.ReportMetric(float64(n)/float64(s), "props/save")
			}
		})
	}
}
