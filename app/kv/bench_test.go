package kv

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

// BenchmarkApply measures the apply path: one Store.Apply call per
// iteration, of a batch of Put commands (16-byte keys, 256-byte values),
// on a real directory with default options. Commands are encoded
// beforehand, as the proposer does it; keys cycle through 1<<16 distinct
// ones. Reported: cmds/s, and allocs and bytes per command.
//
//	go test -run '^$' -bench BenchmarkApply -benchmem ./app/kv/
func BenchmarkApply(b *testing.B) {
	const distinct = 1 << 16
	value := make([]byte, 256)
	for i := range value {
		value[i] = byte(i)
	}
	encoded := make([][]byte, distinct)
	for i := range encoded {
		encoded[i] = encode(b, &kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.PutRequest{
			Key: fmt.Appendf(nil, "key-%012d", i), Value: value}}})
	}
	for _, size := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s := openStore(b, Options{})
			cmds := make([]driver.Command, size)
			next := 0
			index := uint64(0)
			var before, after runtime.MemStats
			b.ReportAllocs()
			b.SetBytes(int64(size * len(value)))
			runtime.ReadMemStats(&before)
			start := time.Now()
			b.ResetTimer()
			for range b.N {
				for j := range cmds {
					index++
					cmds[j] = driver.Command{Index: index, Data: encoded[next]}
					next = (next + 1) % distinct
				}
				if _, err := s.Apply(cmds); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			n := float64(b.N * size)
			b.ReportMetric(n/elapsed.Seconds(), "cmds/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/cmd")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/cmd")
		})
	}
}
