package workload

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBucketRoundTrip(t *testing.T) {
	// Every value lies inside its own bucket, buckets are contiguous and
	// their width is under 1/128 of their lower bound.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		v := rng.Int64N(1 << rng.IntN(63))
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d = [%d, %d] too wide", i, lo, hi)
		}
	}
	for i := 1; i < numBuckets; i++ {
		_, prevHi := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("gap between buckets %d and %d: %d, %d", i-1, i, prevHi, lo)
		}
	}
	if i := bucketOf(math.MaxInt64); i >= numBuckets {
		t.Fatalf("max value bucket %d out of range", i)
	}
}

func TestHistogramPercentiles(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram not zero")
	}
	// 1..10000 µs, each once: the q-quantile is q*10000 µs.
	vals := make([]time.Duration, 10_000)
	for i := range vals {
		vals[i] = time.Duration(i+1) * time.Microsecond
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(vals), func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	for _, v := range vals {
		h.Record(v)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5000 * time.Microsecond},
		{0.9, 9000 * time.Microsecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10000 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 1.0/subCount {
			t.Errorf("q%v = %v, want %v ± 0.8%%", tc.q, got, tc.want)
		}
	}
	if h.Min() != time.Microsecond || h.Max() != 10*time.Millisecond {
		t.Errorf("min %v max %v", h.Min(), h.Max())
	}
	if h.Mean() != 5000500*time.Nanosecond {
		t.Errorf("mean %v", h.Mean())
	}

	// Small values are exact; a single value is reported as itself.
	var s Histogram
	for v := range 100 {
		s.Record(time.Duration(v))
	}
	if s.Quantile(0.5) != 49 || s.Quantile(0.99) != 98 || s.Quantile(1) != 99 {
		t.Errorf("exact range: p50 %d p99 %d p100 %d", s.Quantile(0.5), s.Quantile(0.99), s.Quantile(1))
	}
	var one Histogram
	one.Record(1234567 * time.Nanosecond)
	if one.Quantile(0.5) != 1234567 || one.Quantile(0.999) != 1234567 {
		t.Errorf("single value: %v", one.Quantile(0.5))
	}

	// A bimodal distribution: 99 % at 1 ms, 1 % at 100 ms.
	var b Histogram
	for i := range 1000 {
		if i%100 == 0 {
			b.Record(100 * time.Millisecond)
		} else {
			b.Record(time.Millisecond)
		}
	}
	if p := b.Quantile(0.99); p < 990*time.Microsecond || p > 1010*time.Microsecond {
		t.Errorf("bimodal p99 %v, want ~1ms", p)
	}
	if p := b.Quantile(0.999); p < 99*time.Millisecond || p > 101*time.Millisecond {
		t.Errorf("bimodal p99.9 %v, want ~100ms", p)
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 5000 {
		v := time.Duration(rng.Int64N(int64(50 * time.Millisecond)))
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("q%v: merged %v, whole %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Min() != all.Min() || a.Max() != all.Max() || a.Mean() != all.Mean() {
		t.Error("merged count/min/max/mean differ")
	}
}

func TestPickerDeterministic(t *testing.T) {
	spec := DefaultSpec()
	spec.Op = OpMixed
	spec.Concurrency = 4
	spec.Keys = 1000
	spec.Seed = 42
	seq := func(s Spec, w int) []Op {
		p := NewPicker(s, w)
		ops := make([]Op, 2000)
		for i := range ops {
			ops[i] = p.Next()
		}
		return ops
	}
	eq := func(a, b []Op) bool {
		return slices.EqualFunc(a, b, func(x, y Op) bool {
			return x.Kind == y.Kind && x.Key == y.Key && string(x.Value) == string(y.Value) && x.Worker == y.Worker
		})
	}
	a, b := seq(spec, 1), seq(spec, 1)
	if !eq(a, b) {
		t.Fatal("same seed and worker gave different sequences")
	}
	if eq(a, seq(spec, 2)) {
		t.Fatal("workers 1 and 2 gave the same sequence")
	}
	other := spec
	other.Seed = 43
	if eq(a, seq(other, 1)) {
		t.Fatal("seeds 42 and 43 gave the same sequence")
	}
	// The mix is honoured: 30/50/10/10 within a few percent over 20k ops.
	p := NewPicker(spec, 0)
	counts := map[string]int{}
	for range 20_000 {
		op := p.Next()
		counts[op.Kind]++
		if !strings.HasPrefix(op.Key, "key-") || len(op.Key) != 12 {
			t.Fatalf("bad key %q", op.Key)
		}
		if (op.Kind == OpPut || op.Kind == OpTxn) != (len(op.Value) == spec.ValueBytes) {
			t.Fatalf("%s with %d-byte value", op.Kind, len(op.Value))
		}
	}
	for k, w := range spec.Mix {
		got := float64(counts[k]) / 20_000
		if math.Abs(got-float64(w)/100) > 0.02 {
			t.Errorf("%s share %.3f, want %.2f", k, got, float64(w)/100)
		}
	}
	// A single-kind spec only issues that kind; keys stay in range and
	// large keyspaces (formatted on the fly) agree with the table.
	single := spec
	single.Op = OpSGet
	ps := NewPicker(single, 3)
	for range 1000 {
		if op := ps.Next(); op.Kind != OpSGet || op.Value != nil || op.Key > KeyName(999) {
			t.Fatalf("unexpected op %+v", op)
		}
	}
	// Keys formatted on the fly (large keyspaces) equal the precomputed ones.
	pt, pf := newPicker(spec, 2, keyTable(spec.Keys)), newPicker(spec, 2, nil)
	for range 1000 {
		if a, b := pt.Next(), pf.Next(); a.Key != b.Key || a.Kind != b.Kind {
			t.Fatalf("table %+v, formatted %+v", a, b)
		}
	}
	big := spec
	big.Keys = maxPrecomputedKeys + 1
	if NewPicker(big, 0).names != nil {
		t.Fatal("large keyspace must not be precomputed")
	}
}

func TestPrefillCoversKeys(t *testing.T) {
	spec := DefaultSpec()
	spec.Concurrency = 7
	spec.Keys = 100
	seen := map[string]int{}
	for w := range spec.Concurrency {
		p := NewPicker(spec, w)
		for {
			op, ok := p.NextPrefill()
			if !ok {
				break
			}
			seen[op.Key]++
		}
	}
	if len(seen) != 100 {
		t.Fatalf("prefill wrote %d distinct keys, want 100", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("key %s written %d times", k, n)
		}
	}
}

func TestSpecFlagsAndValidate(t *testing.T) {
	spec := DefaultSpec()
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	spec.RegisterFlags(fs)
	err := fs.Parse([]string{"--op", "mixed", "--concurrency", "8", "--conns", "2", "--value-bytes", "64",
		"--keys", "50", "--warmup", "0s", "--duration", "3s", "--mix", "put=1,txn=3", "--seed", "9", "--prefill"})
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{Op: OpMixed, Concurrency: 8, Conns: 2, ValueBytes: 64, Keys: 50, Duration: 3 * time.Second,
		Mix: map[string]int{OpPut: 1, OpTxn: 3}, Seed: 9, Prefill: true}
	if spec.Op != want.Op || spec.Concurrency != want.Concurrency || spec.Conns != want.Conns ||
		spec.ValueBytes != want.ValueBytes || spec.Keys != want.Keys || spec.Warmup != 0 ||
		spec.Duration != want.Duration || FormatMix(spec.Mix) != "put=1,txn=3" || spec.Seed != 9 || !spec.Prefill {
		t.Fatalf("parsed %+v", spec)
	}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mut  func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Op = "scan" }, "--op"},
		{func(s *Spec) { s.Concurrency = 0 }, "--concurrency"},
		{func(s *Spec) { s.Conns = 9 }, "--conns"},
		{func(s *Spec) { s.Keys = 0 }, "--keys"},
		{func(s *Spec) { s.ValueBytes = -1 }, "--value-bytes"},
		{func(s *Spec) { s.Duration = 0 }, "--duration"},
		{func(s *Spec) { s.Warmup = -1 }, "--warmup"},
		{func(s *Spec) { s.Mix = map[string]int{"put": 0} }, "--mix"},
	} {
		s := spec
		tc.mut(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want error naming %s, got %v", tc.want, err)
		}
	}
	for _, bad := range []string{"put", "put=x", "scan=1", "put=1,put=2", "put=-1,get=2", ""} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// Field 2 may contain spaces and parentheses.
	stat := "1234 (my (odd) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 8 0 100 0 0\n"
	got, err := parseStatCPU([]byte(stat))
	if err != nil || got != 3.25 {
		t.Fatalf("parseStatCPU = %v, %v; want 3.25", got, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
	if s, err := SelfCPUSeconds(); err != nil || s < 0 {
		t.Errorf("SelfCPUSeconds = %v, %v", s, err)
	}
	if pids, err := ParsePids("1, 22,333"); err != nil || !slices.Equal(pids, []int{1, 22, 333}) {
		t.Errorf("ParsePids = %v, %v", pids, err)
	}
	if _, err := ParsePids("1,x"); err == nil {
		t.Error("ParsePids accepted x")
	}
}

func TestRunClosedLoop(t *testing.T) {
	spec := DefaultSpec()
	spec.Op = OpMixed
	spec.Mix = map[string]int{OpPut: 1, OpGet: 1}
	spec.Concurrency = 4
	spec.Keys = 20
	spec.Warmup = 200 * time.Millisecond
	spec.Duration = 500 * time.Millisecond
	spec.Prefill = true
	var (
		mu        sync.Mutex
		prefilled = map[string]bool{}
		inflight  = map[int]bool{}
	)
	boom := errors.New("boom")
	var n int
	do := func(ctx context.Context, op Op) error {
		mu.Lock()
		if inflight[op.Worker] {
			mu.Unlock()
			t.Error("two operations in flight on one worker")
			return nil
		}
		inflight[op.Worker] = true
		n++
		fail := n%10 == 0
		if op.Kind == OpPut {
			prefilled[op.Key] = true
		}
		mu.Unlock()
		select {
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
		}
		mu.Lock()
		inflight[op.Worker] = false
		mu.Unlock()
		if fail {
			return boom
		}
		return ctx.Err()
	}
	var progress strings.Builder
	var pmu sync.Mutex
	res := Run(context.Background(), spec, do,
		WithClassifier(func(err error) string {
			if errors.Is(err, boom) {
				return "boom"
			}
			return ""
		}),
		WithProgress(writerFunc(func(p []byte) (int, error) {
			pmu.Lock()
			defer pmu.Unlock()
			return progress.Write(p)
		}), "test"),
		WithCPUPids([]int{1}))
	if len(prefilled) != 20 {
		t.Errorf("prefill wrote %d keys", len(prefilled))
	}
	if res.Ops < 100 || res.Seconds != 0.5 || math.Abs(res.OpsPerSec-float64(res.Ops)/0.5) > 1e-9 {
		t.Errorf("ops %d seconds %v rate %v", res.Ops, res.Seconds, res.OpsPerSec)
	}
	if res.Errors["boom"] == 0 || len(res.Errors) != 1 {
		t.Errorf("errors %v", res.Errors)
	}
	if res.OpsByKind[OpPut]+res.OpsByKind[OpGet] != res.Ops || res.OpsByKind[OpPut] == 0 || res.OpsByKind[OpGet] == 0 {
		t.Errorf("by kind %v, ops %d", res.OpsByKind, res.Ops)
	}
	if res.P50 < time.Millisecond || res.P50 > 50*time.Millisecond || res.P999 < res.P50 || res.Max < res.P999 {
		t.Errorf("latency p50 %v p99.9 %v max %v", res.P50, res.P999, res.Max)
	}
	if len(res.CPUPids) != 1 || res.CPUSeconds < 0 || res.Interrupted {
		t.Errorf("cpu pids %v seconds %v interrupted %v", res.CPUPids, res.CPUSeconds, res.Interrupted)
	}
	pmu.Lock()
	if !strings.Contains(progress.String(), "test prefill") || !strings.Contains(progress.String(), "ops/s") {
		t.Errorf("progress output %q", progress.String())
	}
	pmu.Unlock()

	// Cancelling the context ends the run early and marks it.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	spec.Prefill = false
	spec.Duration = time.Hour
	start := time.Now()
	res = Run(ctx, spec, func(ctx context.Context, op Op) error { return nil })
	if time.Since(start) > 5*time.Second || !res.Interrupted || res.Seconds <= 0 || res.Seconds > 1 {
		t.Errorf("interrupted run: %v, interrupted %v, seconds %v", time.Since(start), res.Interrupted, res.Seconds)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestResultJSON(t *testing.T) {
	r := Result{System: "etcd", Version: "etcd 3.7.3", Op: OpPut, Concurrency: 16, Conns: 1, ValueBytes: 256,
		Keys: 10000, Seed: 1, Warmup: 2 * time.Second, Ops: 43000, Seconds: 10, OpsPerSec: 4300,
		P50: 3500 * time.Microsecond, P90: 5 * time.Millisecond, P99: 9250 * time.Microsecond,
		P999: 20 * time.Millisecond, Mean: 3700 * time.Microsecond, Max: 40 * time.Millisecond,
		CPUSeconds: 12.5, CPUPids: []int{10, 11, 12}, StartedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"system": "etcd", "op": "put", "p50_ms": 3.5, "p99_ms": 9.25,
		"p999_ms": 20.0, "warmup_seconds": 2.0, "ops_per_sec": 4300.0, "cpu_seconds": 12.5} {
		if m[k] != want {
			t.Errorf("json %s = %v, want %v", k, m[k], want)
		}
	}
	if e, ok := m["errors"].(map[string]any); !ok || len(e) != 0 {
		t.Errorf("errors = %v, want {}", m["errors"])
	}
	for _, k := range []string{"P50", "Warmup"} {
		if _, ok := m[k]; ok {
			t.Errorf("json has Go field name %s", k)
		}
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.P50 != r.P50 || back.P99 != r.P99 || back.Warmup != r.Warmup || back.Max != r.Max ||
		back.OpsPerSec != r.OpsPerSec || !slices.Equal(back.CPUPids, r.CPUPids) || !back.StartedAt.Equal(r.StartedAt) {
		t.Errorf("round trip: %+v", back)
	}
	if got := back.CPUPer1kOps(); math.Abs(got-12.5/43) > 1e-12 {
		t.Errorf("CPU per 1k ops %v", got)
	}
}

func TestMedian(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{nan, 7, 1, nan, 4}, 4},
	} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Median([]float64{nan})) {
		t.Error("median of nothing is not NaN")
	}
}

// res is a result whose p99.9 is twice its p99.
func res(sys, op string, c int, rate float64, p50, p99 time.Duration, cpu float64, ops int64) Result {
	return Result{System: sys, Op: op, Concurrency: c, Conns: 1, ValueBytes: 256, Keys: 100_000, OpsPerSec: rate,
		Ops: ops, Seconds: 10, P50: p50, P99: p99, P999: 2 * p99, CPUSeconds: cpu, CPUPids: []int{1, 2, 3}}
}

func TestSummarizeAndTable(t *testing.T) {
	ms := time.Millisecond
	results := []Result{
		// put C=16: etcd rounds 4000, 4400, 4300 -> median 4300; Rafty 8000, 9000 -> 8500.
		res("etcd", OpPut, 16, 4000, 3*ms, 9*ms, 4, 40000),
		res("etcd", OpPut, 16, 4400, 4*ms, 10*ms, 4.4, 44000),
		res("etcd", OpPut, 16, 4300, 5*ms, 12*ms, 8.6, 43000),
		res("Rafty", OpPut, 16, 8000, 2*ms, 4*ms, 4, 80000),
		res("rafty", OpPut, 16, 9000, 2*ms, 6*ms, 4.5, 90000),
		// get C=16: etcd only.
		res("etcd", OpGet, 16, 11500, 1*ms, 3*ms, 2.3, 115000),
		// put C=1 sorts before put C=16; sget after get.
		res("etcd", OpSGet, 128, 20000, 6*ms, 15*ms, 0, 200000),
		res("etcd", OpPut, 1, 950, ms, 3*ms, 1.9, 9500),
		// Other systems are ignored.
		res("zookeeper", OpPut, 16, 1, ms, ms, 0, 1),
	}
	results[len(results)-3].CPUPids = nil // CPU not measured: no CPU figure
	results[1].Errors = map[string]int64{"timeout": 2}
	rows := Summarize(results)
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	var labels []string
	for _, r := range rows {
		labels = append(labels, r.Label())
	}
	if want := []string{"put 256 B, C=1", "put 256 B, C=16", "get (linearizable), C=16", "get (serializable), C=128"}; !slices.Equal(labels, want) {
		t.Fatalf("labels %q, want %q", labels, want)
	}
	put := rows[1]
	if put.Etcd.Rounds != 3 || put.Rafty.Rounds != 2 {
		t.Fatalf("rounds %d/%d", put.Rafty.Rounds, put.Etcd.Rounds)
	}
	if put.Etcd.OpsPerSec != 4300 || put.Rafty.OpsPerSec != 8500 || put.Etcd.P50 != 4 || put.Etcd.P99 != 10 || put.Rafty.P99 != 5 {
		t.Fatalf("medians %+v %+v", put.Rafty, put.Etcd)
	}
	// CPU per 1k ops per round: etcd 0.1, 0.1, 0.2 -> 0.1; Rafty 0.05, 0.05 -> 0.05.
	if math.Abs(put.Etcd.CPUPer1k-0.1) > 1e-12 || math.Abs(put.Rafty.CPUPer1k-0.05) > 1e-12 {
		t.Fatalf("cpu per 1k %v %v", put.Rafty.CPUPer1k, put.Etcd.CPUPer1k)
	}
	if put.Etcd.P999 != 20 || put.Rafty.P999 != 10 {
		t.Fatalf("p99.9 medians %v %v", put.Rafty.P999, put.Etcd.P999)
	}
	ro, r50, r99, r999, rc := put.Ratio()
	if math.Abs(ro-8500.0/4300) > 1e-12 || r50 != 0.5 || r99 != 0.5 || r999 != 0.5 || math.Abs(rc-0.5) > 1e-12 {
		t.Fatalf("ratios %v %v %v %v %v", ro, r50, r99, r999, rc)
	}
	if ro, _, _, _, _ := rows[2].Ratio(); !math.IsNaN(ro) {
		t.Fatalf("ratio with a missing side = %v", ro)
	}
	if !math.IsNaN(rows[3].Etcd.CPUPer1k) {
		t.Fatalf("unmeasured CPU gave %v", rows[3].Etcd.CPUPer1k)
	}

	table := Table(results)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	for _, want := range []string{
		"| workload | Rafty ops/s | etcd ops/s | Rafty/etcd | Rafty p50 ms | etcd p50 ms | Rafty/etcd | Rafty p99 ms | etcd p99 ms | Rafty/etcd | " +
			"Rafty p99.9 ms | etcd p99.9 ms | Rafty/etcd | Rafty CPU s/1k ops | etcd CPU s/1k ops | Rafty/etcd | rounds (Rafty/etcd) |",
		"| put 256 B, C=16 | 8,500 | 4,300 | 1.98× | 2.00 | 4.00 | 0.50× | 5.00 | 10.0 | 0.50× | 10.0 | 20.0 | 0.50× | 0.050 | 0.100 | 0.50× | 2/3 |",
		"| get (linearizable), C=16 | – | 11,500 | – | – | 1.00 | – | – | 3.00 | – | – | 6.00 | – | – | 0.020 | – | 0/1 |",
		"| get (serializable), C=128 | – | 20,000 | – | – | 6.00 | – | – | 15.0 | – | – | 30.0 | – | – | – | – | 0/1 |",
		"- etcd, put 256 B, C=16: timeout 2",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("table lacks line\n%s\ngot:\n%s", want, table)
		}
	}
	// Header and separator have as many columns as the rows.
	cols := strings.Count(lines[0], "|")
	for _, l := range lines[:6] {
		if strings.Count(l, "|") != cols {
			t.Errorf("column count %d != %d in %q", strings.Count(l, "|"), cols, l)
		}
	}
}

func TestThousands(t *testing.T) {
	got := []string{thousands(0), thousands(999), thousands(1000), thousands(1234567), thousands(-4300)}
	want := []string{"0", "999", "1,000", "1,234,567", "-4,300"}
	if !slices.Equal(got, want) {
		t.Errorf("thousands %q, want %q", got, want)
	}
}

// TestSummarizeKeyspaces: results of different keyspaces are separate
// rows, the largest keyspace first.
func TestSummarizeKeyspaces(t *testing.T) {
	small := res("etcd", OpPut, 16, 5000, time.Millisecond, 2*time.Millisecond, 1, 50000)
	small.Keys = 10_000
	big := res("etcd", OpPut, 16, 3000, time.Millisecond, 2*time.Millisecond, 1, 30000)
	rows := Summarize([]Result{small, big})
	if len(rows) != 2 || rows[0].Keys != 100_000 || rows[0].Etcd.OpsPerSec != 3000 || rows[1].Keys != 10_000 || rows[1].Etcd.Rounds != 1 {
		t.Fatalf("rows %+v", rows)
	}
}

// TestPreload: every key written once by the workers with the values a
// prefill uses, failures counted by kind, then it returns (no window).
func TestPreload(t *testing.T) {
	spec := DefaultSpec()
	spec.Op = OpGet // a preload writes whatever the spec's op
	spec.Concurrency = 8
	spec.Keys = 1000
	spec.Duration = time.Hour // unused: there is no window
	var (
		mu      sync.Mutex
		written = map[string][]byte{}
	)
	boom := errors.New("boom")
	do := func(ctx context.Context, op Op) error {
		if op.Kind != OpPut {
			t.Errorf("preload issued %s", op.Kind)
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := written[op.Key]; dup {
			t.Errorf("%s written twice", op.Key)
		}
		written[op.Key] = slices.Clone(op.Value)
		if op.Key == KeyName(7) {
			return boom
		}
		return nil
	}
	start := time.Now()
	res := Preload(context.Background(), spec, do, WithClassifier(func(error) string { return "boom" }), WithCPUPids([]int{1}))
	if time.Since(start) > 30*time.Second {
		t.Fatalf("preload took %v", time.Since(start))
	}
	if len(written) != 1000 || res.Ops != 999 || res.Errors["boom"] != 1 || res.Op != OpPut || !res.Prefill || res.Interrupted {
		t.Fatalf("%d keys written; result %+v", len(written), res)
	}
	if res.Seconds <= 0 || res.OpsPerSec <= 0 || len(res.CPUPids) != 1 {
		t.Errorf("seconds %v rate %v cpu pids %v", res.Seconds, res.OpsPerSec, res.CPUPids)
	}
	// The values are the workers' own, as in a run's prefill: key i by
	// worker i mod C.
	for i := range 1000 {
		want := NewPicker(spec, i%spec.Concurrency).value
		if got := written[KeyName(i)]; string(got) != string(want) {
			t.Fatalf("key %d: value of another worker", i)
		}
	}
	// Cancelled: stops early and says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if res := Preload(ctx, spec, do); !res.Interrupted || res.Ops != 0 {
		t.Errorf("cancelled preload: %+v", res)
	}
}
