package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DoFunc performs one operation against the system under test. It is
// called concurrently from Concurrency goroutines. ctx is cancelled when
// the run ends; an error returned after that is not counted.
type DoFunc func(ctx context.Context, op Op) error

// Shared error kinds. A system's classifier maps its errors onto these
// where they apply (gRPC status codes use their snake_case names:
// "unavailable", "deadline_exceeded", "resource_exhausted", ...) and may
// add its own (etcd: "no_leader", "too_many_requests", ...).
const (
	ErrKindTimeout  = "timeout"  // the client's own per-operation deadline passed
	ErrKindCanceled = "canceled" // the operation's context was cancelled
	ErrKindOther    = "other"    // anything not otherwise classified
)

// DefaultClassify maps context errors to ErrKindTimeout and
// ErrKindCanceled and anything else to ErrKindOther.
func DefaultClassify(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrKindTimeout
	case errors.Is(err, context.Canceled):
		return ErrKindCanceled
	default:
		return ErrKindOther
	}
}

// Option adjusts a Run.
type Option func(*runConfig)

type runConfig struct {
	classify func(error) string
	progress io.Writer
	label    string
	pids     []int
}

// WithClassifier sets the function naming the kind of a failed operation
// (default DefaultClassify). An empty name counts as ErrKindOther.
func WithClassifier(f func(error) string) Option {
	return func(c *runConfig) {
		if f != nil {
			c.classify = f
		}
	}
}

// WithProgress prints a progress line to w every second, starting with
// label (e.g. "etcd put c=16").
func WithProgress(w io.Writer, label string) Option {
	return func(c *runConfig) { c.progress, c.label = w, label }
}

// WithCPUPids makes Run measure the CPU time of the processes pids (the
// cluster's servers) over the measured window into Result.CPUSeconds.
func WithCPUPids(pids []int) Option {
	return func(c *runConfig) { c.pids = slices.Clone(pids) }
}

// worker is one closed-loop client's private state; nothing in it is
// shared until the run is over.
type worker struct {
	hist   Histogram
	ops    int64
	byKind [4]int64 // parallel to Kinds
	errs   map[string]int64
}

// Run drives spec against do: Concurrency goroutines in a closed loop,
// an optional prefill, a warm-up that is not recorded and a measured
// window of spec.Duration (see the package documentation). It returns
// when the window has closed and every goroutine has returned, or early
// when ctx is cancelled (Result.Interrupted). spec must be valid
// (Validate); Run panics otherwise. The caller fills Result.System and
// Result.Version.
func Run(ctx context.Context, spec Spec, do DoFunc, opts ...Option) Result {
	if err := spec.Validate(); err != nil {
		panic("workload.Run: " + err.Error())
	}
	cfg := runConfig{classify: DefaultClassify}
	for _, o := range opts {
		o(&cfg)
	}
	res := Result{
		Op:          spec.Op,
		Concurrency: spec.Concurrency,
		Conns:       spec.Conns,
		ValueBytes:  spec.ValueBytes,
		Keys:        spec.Keys,
		Seed:        spec.Seed,
		Prefill:     spec.Prefill,
		Warmup:      spec.Warmup,
		Errors:      map[string]int64{},
		CPUPids:     cfg.pids,
		StartedAt:   time.Now().UTC().Truncate(time.Millisecond),
	}
	if spec.Op == OpMixed {
		res.Mix = maps.Clone(spec.Mix)
	}

	names := keyTable(spec.Keys)
	pickers := make([]*Picker, spec.Concurrency)
	for w := range pickers {
		pickers[w] = newPicker(spec, w, names)
	}

	var (
		done   atomic.Int64 // operations finished, any phase, success or not
		failed atomic.Int64 // of which failed
	)
	// progress prints one line: the phase and where in it, the operations
	// finished in the last second, in the phase so far, and failures.
	progress := func(phase, where string, last, cur int64) {
		if cfg.progress == nil {
			return
		}
		fmt.Fprintf(cfg.progress, "%s %-7s %-11s %8d ops/s  done %d  errors %d\n",
			cfg.label, phase, where, cur-last, cur, failed.Load())
	}
	elapsed := func(d, total time.Duration) string {
		return fmt.Sprintf("%.0fs/%.0fs", d.Seconds(), total.Seconds())
	}

	if spec.Prefill {
		if _, errs := prefill(ctx, spec, pickers, do, cfg, &done, &failed, progress); len(errs) > 0 {
			res.Warnings = append(res.Warnings, "prefill: failed writes: "+formatCounts(errs))
		}
		if ctx.Err() != nil {
			res.Interrupted = true
			return res
		}
	}

	opCtx, cancelOps := context.WithCancel(ctx)
	defer cancelOps()
	start := time.Now()
	warmEnd := start.Add(spec.Warmup)
	end := warmEnd.Add(spec.Duration)
	// cutoff is when recording stops: end, or earlier on interruption.
	var cutoff atomic.Pointer[time.Time]
	cutoff.Store(&end)

	workers := make([]worker, spec.Concurrency)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker, p *Picker) {
			defer wg.Done()
			w.errs = map[string]int64{}
			for opCtx.Err() == nil {
				op := p.Next()
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := do(opCtx, op)
				t1 := time.Now()
				done.Add(1)
				if err != nil {
					failed.Add(1)
				}
				if t0.Before(warmEnd) || t1.After(*cutoff.Load()) {
					continue // warm-up, or straddles the end of the window
				}
				if err != nil {
					if opCtx.Err() != nil {
						return // cancelled at the end: not the system's fault
					}
					kind := cfg.classify(err)
					if kind == "" {
						kind = ErrKindOther
					}
					w.errs[kind]++
					continue
				}
				w.hist.Record(t1.Sub(t0))
				w.ops++
				w.byKind[slices.Index(Kinds, op.Kind)]++
			}
		}(&workers[i], pickers[i])
	}

	// The controller: progress lines, CPU samples at the window's edges,
	// cancellation at its end.
	var (
		cpu0, self0 float64
		cpuErr      error
		measuring   = spec.Warmup == 0
	)
	sample := func() (float64, float64) {
		var c float64
		if len(cfg.pids) > 0 && cpuErr == nil {
			c, cpuErr = ProcCPUSeconds(cfg.pids)
		}
		s, _ := SelfCPUSeconds()
		return c, s
	}
	if measuring {
		cpu0, self0 = sample()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	warmTimer := time.NewTimer(time.Until(warmEnd))
	defer warmTimer.Stop()
	endTimer := time.NewTimer(time.Until(end))
	defer endTimer.Stop()
	var last int64
loop:
	for {
		select {
		case <-warmTimer.C:
			if !measuring {
				measuring = true
				cpu0, self0 = sample()
			}
		case <-endTimer.C:
			break loop
		case <-tick.C:
			now := time.Now()
			cur := done.Load()
			if now.Before(warmEnd) {
				progress("warmup", elapsed(now.Sub(start), spec.Warmup), last, cur)
			} else {
				progress("run", elapsed(now.Sub(warmEnd), spec.Duration), last, cur)
			}
			last = cur
		case <-ctx.Done():
			now := time.Now()
			cutoff.Store(&now)
			res.Interrupted = true
			break loop
		}
	}
	stop := time.Now()
	res.LoadAvg1, _ = LoadAvg1()
	if stop.After(end) {
		stop = end
	}
	if measuring {
		cpu1, self1 := sample()
		// Clock ticks are 10 ms: round off float noise.
		res.CPUSeconds = math.Round((cpu1-cpu0)*1000) / 1000
		res.ClientCPUSeconds = math.Round((self1-self0)*1000) / 1000
		if cpuErr != nil {
			res.Warnings = append(res.Warnings, "cpu: "+cpuErr.Error())
			res.CPUPids = nil
		}
	} else {
		res.CPUPids = nil
	}
	cancelOps()
	wg.Wait()

	var hist Histogram
	byKind := map[string]int64{}
	for i := range workers {
		w := &workers[i]
		hist.Merge(&w.hist)
		res.Ops += w.ops
		for k, n := range w.errs {
			res.Errors[k] += n
		}
		for j, n := range w.byKind {
			if n > 0 {
				byKind[Kinds[j]] += n
			}
		}
	}
	if spec.Op == OpMixed {
		res.OpsByKind = byKind
	}
	if stop.After(warmEnd) {
		res.Seconds = stop.Sub(warmEnd).Seconds()
	}
	if !res.Interrupted {
		res.Seconds = spec.Duration.Seconds()
	}
	if res.Seconds > 0 {
		res.OpsPerSec = float64(res.Ops) / res.Seconds
	}
	res.P50 = hist.Quantile(0.50)
	res.P90 = hist.Quantile(0.90)
	res.P99 = hist.Quantile(0.99)
	res.P999 = hist.Quantile(0.999)
	res.Mean = hist.Mean()
	res.Max = hist.Max()
	if cfg.progress != nil {
		fmt.Fprintf(cfg.progress, "%s done    %.1fs window: %.0f ops/s, p50 %.2f ms, p99 %.2f ms, errors %d\n",
			cfg.label, res.Seconds, res.OpsPerSec, ms(res.P50), ms(res.P99), sumErrors(res.Errors))
	}
	return res
}

// prefill writes every key once with the run's workers and returns how
// many writes succeeded and the failed ones by kind.
func prefill(ctx context.Context, spec Spec, pickers []*Picker, do DoFunc, cfg runConfig,
	done, failed *atomic.Int64, progress func(phase, where string, last, cur int64)) (int64, map[string]int64) {
	var (
		mu   sync.Mutex
		errs = map[string]int64{}
		wg   sync.WaitGroup
	)
	for _, p := range pickers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				op, ok := p.NextPrefill()
				if !ok {
					return
				}
				err := do(ctx, op)
				done.Add(1)
				if err != nil && ctx.Err() == nil {
					failed.Add(1)
					mu.Lock()
					errs[cfg.classify(err)]++
					mu.Unlock()
				}
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	for {
		select {
		case <-finished:
			written := done.Load() - failed.Load()
			if cfg.progress != nil {
				fmt.Fprintf(cfg.progress, "%s prefill done: %d keys written, %d failed\n", cfg.label, written, failed.Load())
			}
			// Progress counters restart for the timed phases.
			done.Store(0)
			failed.Store(0)
			return written, errs
		case <-tick.C:
			cur := done.Load()
			progress("prefill", fmt.Sprintf("%d/%d", cur, spec.Keys), last, cur)
			last = cur
		}
	}
}

// formatCounts writes counts by kind as "kind n, kind n", kinds sorted.
func formatCounts(m map[string]int64) string {
	kinds := slices.Collect(maps.Keys(m))
	sort.Strings(kinds)
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// Preload writes every key once, exactly as Spec.Prefill does before a
// run (the same workers, keys and values), and returns when it is done:
// no warm-up and no measured window. It is how a comparison fills the
// keyspace of a fresh cluster before its first measured point, the same
// way for both systems. In the result, Op is "put" and Prefill true; Ops
// counts the keys written, Seconds the time the preload took (OpsPerSec
// follows), Errors the failed writes by kind, CPUSeconds the servers' CPU
// over the preload when WithCPUPids is given; latencies are not recorded.
// spec must be valid (Validate); Preload panics otherwise.
func Preload(ctx context.Context, spec Spec, do DoFunc, opts ...Option) Result {
	if err := spec.Validate(); err != nil {
		panic("workload.Preload: " + err.Error())
	}
	cfg := runConfig{classify: DefaultClassify}
	for _, o := range opts {
		o(&cfg)
	}
	res := Result{
		Op:          OpPut,
		Concurrency: spec.Concurrency,
		Conns:       spec.Conns,
		ValueBytes:  spec.ValueBytes,
		Keys:        spec.Keys,
		Seed:        spec.Seed,
		Prefill:     true,
		CPUPids:     cfg.pids,
		StartedAt:   time.Now().UTC().Truncate(time.Millisecond),
	}
	names := keyTable(spec.Keys)
	pickers := make([]*Picker, spec.Concurrency)
	for w := range pickers {
		pickers[w] = newPicker(spec, w, names)
	}
	var done, failed atomic.Int64
	progress := func(phase, where string, last, cur int64) {
		if cfg.progress != nil {
			fmt.Fprintf(cfg.progress, "%s %-7s %-11s %8d ops/s  done %d  errors %d\n",
				cfg.label, phase, where, cur-last, cur, failed.Load())
		}
	}
	var cpu0 float64
	var cpuErr error
	if len(cfg.pids) > 0 {
		cpu0, cpuErr = ProcCPUSeconds(cfg.pids)
	}
	start := time.Now()
	written, errs := prefill(ctx, spec, pickers, do, cfg, &done, &failed, progress)
	res.Seconds = time.Since(start).Seconds()
	if len(cfg.pids) > 0 && cpuErr == nil {
		var cpu1 float64
		if cpu1, cpuErr = ProcCPUSeconds(cfg.pids); cpuErr == nil {
			res.CPUSeconds = math.Round((cpu1-cpu0)*1000) / 1000
		}
	}
	if cpuErr != nil {
		res.Warnings = append(res.Warnings, "cpu: "+cpuErr.Error())
		res.CPUPids = nil
	}
	res.LoadAvg1, _ = LoadAvg1()
	res.Ops = written
	res.Errors = errs
	if res.Seconds > 0 {
		res.OpsPerSec = float64(written) / res.Seconds
	}
	res.Interrupted = ctx.Err() != nil
	return res
}

func sumErrors(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
