package disk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rafty-db/rafty/core"
)

// BenchmarkRawFdatasync measures what the disk itself allows: one writer
// appending 4 KiB and calling fdatasync, the ceiling for batch-1 Saves.
func BenchmarkRawFdatasync(b *testing.B) {
	f, err := vfs.Default.Create(filepath.Join(b.TempDir(), "raw"), vfs.WriteCategoryUnspecified)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := syncData(f, "raw"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fsyncs/s")
}

// BenchmarkSave measures sequential Saves of 256-byte entries in batches of
// 1, 16, 256 and 4,096 with the default options: one op is one Save.
func BenchmarkSave(b *testing.B) {
	for _, batch := range []int{1, 16, 256, 4096} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := mustOpen(b, b.TempDir(), DefaultOptions())
			defer s.Close()
			ents := make([]core.Entry, batch)
			for k := range ents {
				ents[k] = core.Entry{Term: 1, Data: make([]byte, 256)}
			}
			next := uint64(1)
			before := s.Stats()
			b.SetBytes(int64(batch * 256))
			b.ResetTimer()
			for range b.N {
				for k := range ents {
					ents[k].Index = next + uint64(k)
				}
				next += uint64(batch)
				if err := s.Save(core.HardState{}, ents); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			st := s.Stats()
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "saves/s")
			b.ReportMetric(float64(b.N*batch)/secs, "entries/s")
			b.ReportMetric(float64(st.Fsyncs-before.Fsyncs)/float64(b.N), "fsyncs/op")
		})
	}
}

// BenchmarkSaveVsRaw interleaves the two measurements the batch-1 target
// compares — a raw 4 KiB append+fdatasync and a batch-1 Save of one
// 256-byte entry — so that both see the same disk and the same load from
// other processes; it reports each rate and save-to-raw ratio (target
// >= 0.9).
func BenchmarkSaveVsRaw(b *testing.B) {
	dir := b.TempDir()
	f, err := vfs.Default.Create(filepath.Join(dir, "raw"), vfs.WriteCategoryUnspecified)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := mustOpen(b, filepath.Join(dir, "store"), DefaultOptions())
	defer s.Close()
	raw := make([]byte, 4096)
	e := []core.Entry{{Term: 1, Data: make([]byte, 256)}}
	var rawTime, saveTime time.Duration
	before := s.Stats()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, err := f.Write(raw); err != nil {
			b.Fatal(err)
		}
		if err := syncData(f, "raw"); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		e[0].Index = uint64(i) + 1
		if err := s.Save(core.HardState{}, e); err != nil {
			b.Fatal(err)
		}
		saveTime += time.Since(t1)
		rawTime += t1.Sub(t0)
	}
	b.StopTimer()
	rawRate := float64(b.N) / rawTime.Seconds()
	saveRate := float64(b.N) / saveTime.Seconds()
	b.ReportMetric(rawRate, "raw-fsyncs/s")
	b.ReportMetric(saveRate, "saves/s")
	b.ReportMetric(saveRate/rawRate, "save/raw")
	b.ReportMetric(float64(s.Stats().Fsyncs-before.Fsyncs)/float64(b.N), "fsyncs/save")
}

// BenchmarkSaveConcurrent: 8 goroutines Saving one 256-byte entry each at
// a time. Group commit shows as fsyncs/op well below 1.
func BenchmarkSaveConcurrent(b *testing.B) {
	const writers = 8
	s := mustOpen(b, b.TempDir(), DefaultOptions())
	defer s.Close()
	var seqMu sync.Mutex // orders index choice with queueing, as in TestConcurrentSaves
	next := uint64(1)
	s.testHookEnqueued = func() { seqMu.Unlock() }
	before := s.Stats()
	b.SetBytes(256)
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / writers
	for w := range writers {
		n := per
		if w == 0 {
			n += b.N % writers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, 256)
			for range n {
				seqMu.Lock()
				e := []core.Entry{{Index: next, Term: 1, Data: data}}
				next++
				if err := s.Save(core.HardState{}, e); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
	b.ReportMetric(float64(st.Fsyncs-before.Fsyncs)/float64(b.N), "fsyncs/op")
}

// BenchmarkSavePrealloc compares batch-1 Saves (one 256-byte entry) with
// preallocation off and on, for one Store and for three Stores in separate
// directories saving at once, as the three nodes of a cluster on one disk
// do. One op is one Save on every Store; it reports the total Save rate,
// the median and 99th-percentile Save latency, and fdatasyncs per Save.
// Without preallocation every fdatasync also commits the file's new size,
// which on ext4 is a journal commit the Stores contend on.
func BenchmarkSavePrealloc(b *testing.B) {
	for _, stores := range []int{1, 3} {
		for _, prealloc := range []int64{0, DefaultPreallocateBytes} {
			name := "off"
			if prealloc > 0 {
				name = "on"
			}
			b.Run(fmt.Sprintf("stores=%d/prealloc=%s", stores, name), func(b *testing.B) {
				benchSaveStores(b, stores, prealloc)
			})
		}
	}
}

func benchSaveStores(b *testing.B, stores int, prealloc int64) {
	opts := DefaultOptions()
	opts.PreallocateBytes = prealloc
	ss := make([]*Store, stores)
	for k := range ss {
		ss[k] = mustOpen(b, filepath.Join(b.TempDir(), fmt.Sprint(k)), opts)
		defer ss[k].Close()
	}
	lat := make([][]time.Duration, stores)
	var wg sync.WaitGroup
	b.SetBytes(int64(256 * stores))
	b.ResetTimer()
	for k, s := range ss {
		lat[k] = make([]time.Duration, 0, b.N)
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := []core.Entry{{Term: 1, Data: make([]byte, 256)}}
			for i := range b.N {
				e[0].Index = uint64(i) + 1
				t0 := time.Now()
				if err := s.Save(core.HardState{}, e); err != nil {
					b.Error(err)
					return
				}
				lat[k] = append(lat[k], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	var all []time.Duration
	var fsyncs uint64
	for k, s := range ss {
		all = append(all, lat[k]...)
		fsyncs += s.Stats().Fsyncs
	}
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "saves/s")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(fsyncs)/float64(len(all)), "fsyncs/save")
}

// recoveryLogs caches the logs BenchmarkRecovery builds, by size, for the
// life of the test binary (removed by TestMain).
var recoveryLogs struct {
	sync.Mutex
	dirs map[int]string
}

func cleanupRecoveryLogs() {
	recoveryLogs.Lock()
	defer recoveryLogs.Unlock()
	for _, d := range recoveryLogs.dirs {
		os.RemoveAll(d)
	}
}

func recoveryLog(b *testing.B, mib int) string {
	recoveryLogs.Lock()
	defer recoveryLogs.Unlock()
	if d, ok := recoveryLogs.dirs[mib]; ok {
		return d
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("disk-recovery-%dmib-", mib))
	if err != nil {
		b.Fatal(err)
	}
	s := mustOpen(b, dir, DefaultOptions())
	ents := make([]core.Entry, 1024)
	for k := range ents {
		ents[k] = core.Entry{Term: 1, Data: make([]byte, 256)}
	}
	next := uint64(1)
	for s.Stats().BytesWritten < uint64(mib)<<20 {
		for k := range ents {
			ents[k].Index = next + uint64(k)
		}
		next += uint64(len(ents))
		mustSave(b, s, core.HardState{Term: 1, Commit: next - 1}, ents)
	}
	mustClose(b, s)
	if recoveryLogs.dirs == nil {
		recoveryLogs.dirs = map[int]string{}
	}
	recoveryLogs.dirs[mib] = dir
	return dir
}

// BenchmarkRecovery measures Open of a log of -disk.recovery-mib MiB of
// 256-byte entries: time, and heap growth during recovery (peak sampled
// every millisecond, and what stays: the index). Payloads are never held,
// so the peak minus the index does not depend on the log's size.
func BenchmarkRecovery(b *testing.B) {
	mib := *flagRecoveryMiB
	dir := recoveryLog(b, mib)
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(fmt.Sprintf("%s/log=%dMiB", name, mib), func(b *testing.B) {
			var peak, retained, index uint64
			var entries uint64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if cold && !dropPageCache(b, dir) {
					b.Skip("cannot evict files from the page cache on this platform")
				}
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base := ms.HeapAlloc
				stop := make(chan struct{})
				done := make(chan uint64)
				go func() { done <- sampleHeapPeak(stop) }()
				b.StartTimer()
				s := mustOpen(b, dir, DefaultOptions())
				b.StopTimer()
				close(stop)
				p := <-done
				runtime.GC()
				runtime.ReadMemStats(&ms)
				st := s.Stats()
				peak = max(peak, p-min(p, base))
				retained = ms.HeapAlloc - min(ms.HeapAlloc, base)
				index, entries = uint64(st.IndexBytes), st.LastIndex
				mustClose(b, s)
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "open-ms")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
			b.ReportMetric(float64(index)/float64(max(entries, 1)), "index-B/entry")
			b.ReportMetric(float64(entries), "entries")
		})
	}
}

// sampleHeapPeak polls HeapAlloc until stop closes and returns the maximum.
func sampleHeapPeak(stop <-chan struct{}) uint64 {
	var ms runtime.MemStats
	var peak uint64
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
		select {
		case <-stop:
			runtime.ReadMemStats(&ms)
			return max(peak, ms.HeapAlloc)
		case <-t.C:
		}
	}
}

// benchCommitStore returns a Store on the operating system's file system
// whose log ends at a huge index (a snapshot marker past an empty log), so
// that a benchmark can WriteCommit b.N increasing indexes without first
// writing b.N entries.
func benchCommitStore(b *testing.B) (*Store, uint64) {
	s := mustOpen(b, b.TempDir(), DefaultOptions())
	const top = 1 << 40
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: top, Term: 1, Membership: core.Membership{Voters: []uint64{1}}}); err != nil {
		b.Fatal(err)
	}
	return s, top
}

// BenchmarkWriteCommit measures WriteCommit alone: one pwrite of one slot
// of the marker file, no fsync (ns/op, and the p99 and maximum latency of
// single calls).
func BenchmarkWriteCommit(b *testing.B) {
	s, _ := benchCommitStore(b)
	defer s.Close()
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := s.WriteCommit(uint64(i) + 1); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// reportLatencies reports the p99 and maximum of single-call latencies.
func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		b.ReportMetric(float64(lat[n*99/100].Nanoseconds()), "p99-ns")
		b.ReportMetric(float64(lat[n-1].Nanoseconds()), "max-ns")
	}
}

// BenchmarkWriteCommitDuringSave measures WriteCommit while another
// goroutine Saves batches of 16 256-byte entries back to back, so that a
// write and fdatasync of the WAL are in flight nearly all the time (the
// asynchronous driver: the loop writes the commit index while the
// persister syncs). WriteCommit never waits for them: its latency stays
// that of a pwrite, not of an fdatasync. Reports ns/op, the p99 and max
// latency of single calls, and the Saves completed meanwhile.
func BenchmarkWriteCommitDuringSave(b *testing.B) {
	s, top := benchCommitStore(b)
	defer s.Close()
	stop := make(chan struct{})
	var saves int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ents := make([]core.Entry, 16)
		for k := range ents {
			ents[k] = core.Entry{Term: 1, Data: make([]byte, 256)}
		}
		next := top + 1
		for {
			select {
			case <-stop:
				return
			default:
			}
			for k := range ents {
				ents[k].Index = next + uint64(k)
			}
			next += uint64(len(ents))
			if err := s.Save(core.HardState{}, ents); err != nil {
				b.Error(err)
				return
			}
			saves++
		}
	}()
	lat := make([]time.Duration, 0, min(b.N, 1<<20))
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := s.WriteCommit(uint64(i) + 1); err != nil {
			b.Fatal(err)
		}
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	reportLatencies(b, lat)
	b.ReportMetric(float64(saves), "saves")
}
