package workload

import (
	"encoding/json"
	"math"
	"time"
)

// Result is the outcome of one run: what `etcdbench load --json` and
// `kvnode bench --json` print, one JSON object. Durations are float
// milliseconds in JSON (fields ending in _ms); see the README for the
// schema. Fields after Errors are optional for a producer; the table
// renderer needs System, Op, Concurrency, Ops, Seconds, OpsPerSec, the
// percentiles and, for the CPU column, CPUSeconds with CPUPids non-empty.
type Result struct {
	System  string `json:"system"`            // "rafty" or "etcd"
	Version string `json:"version,omitempty"` // e.g. "etcd 3.7.3", "rafty v0.1.0-abc123"

	// The Spec of the run.
	Op          string         `json:"op"`
	Concurrency int            `json:"concurrency"`
	Conns       int            `json:"conns"`
	ValueBytes  int            `json:"value_bytes"`
	Keys        int            `json:"keys"`
	Mix         map[string]int `json:"mix,omitempty"` // only for op "mixed"
	Seed        int64          `json:"seed"`
	Prefill     bool           `json:"prefill,omitempty"`
	Warmup      time.Duration  `json:"-"` // warmup_seconds
	LeaderOnly  bool           `json:"leader_only,omitempty"`

	// Measured window.
	Ops       int64            `json:"ops"`     // successful operations
	Seconds   float64          `json:"seconds"` // length of the window
	OpsPerSec float64          `json:"ops_per_sec"`
	OpsByKind map[string]int64 `json:"ops_by_kind,omitempty"` // only for op "mixed"

	P50, P90, P99, P999 time.Duration `json:"-"` // p50_ms ... p999_ms
	Mean, Max           time.Duration `json:"-"` // mean_ms, max_ms

	Errors map[string]int64 `json:"errors"` // failed operations by kind; {} when none

	// CPUSeconds is the servers' CPU time (user+system) over the measured
	// window, summed over CPUPids; meaningful only when CPUPids is
	// non-empty.
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPids    []int   `json:"cpu_pids,omitempty"`
	// ClientCPUSeconds is the load generator's own CPU time over the
	// window (it shares the machine with the servers).
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`

	// LoadAvg1 is the machine's 1-minute load average when the window
	// closed (/proc/loadavg): other work on a shared machine skews
	// results.
	LoadAvg1 float64 `json:"load_avg_1m,omitempty"`

	StartedAt   time.Time `json:"started_at"`
	Interrupted bool      `json:"interrupted,omitempty"` // stopped before the window ended
	Warnings    []string  `json:"warnings,omitempty"`
}

// CPUPer1kOps returns the servers' CPU seconds per 1,000 successful
// operations, or NaN when CPU was not measured or nothing succeeded.
func (r Result) CPUPer1kOps() float64 {
	if len(r.CPUPids) == 0 || r.Ops == 0 {
		return math.NaN()
	}
	return r.CPUSeconds / float64(r.Ops) * 1000
}

// resultJSON is Result's wire form: the embedded alias carries every
// field with a JSON name; durations travel as float milliseconds.
type resultJSON struct {
	resultAlias
	WarmupSeconds float64 `json:"warmup_seconds"`
	P50           float64 `json:"p50_ms"`
	P90           float64 `json:"p90_ms"`
	P99           float64 `json:"p99_ms"`
	P999          float64 `json:"p999_ms"`
	Mean          float64 `json:"mean_ms"`
	Max           float64 `json:"max_ms"`
}

type resultAlias Result

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fromMS(f float64) time.Duration { return time.Duration(math.Round(f * float64(time.Millisecond))) }

// MarshalJSON implements json.Marshaler.
func (r Result) MarshalJSON() ([]byte, error) {
	w := resultJSON{
		resultAlias:   resultAlias(r),
		WarmupSeconds: r.Warmup.Seconds(),
		P50:           ms(r.P50),
		P90:           ms(r.P90),
		P99:           ms(r.P99),
		P999:          ms(r.P999),
		Mean:          ms(r.Mean),
		Max:           ms(r.Max),
	}
	if w.Errors == nil {
		w.Errors = map[string]int64{}
	}
	return json.Marshal(w)
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *Result) UnmarshalJSON(b []byte) error {
	var w resultJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Result(w.resultAlias)
	r.Warmup = time.Duration(math.Round(w.WarmupSeconds * float64(time.Second)))
	r.P50, r.P90, r.P99, r.P999 = fromMS(w.P50), fromMS(w.P90), fromMS(w.P99), fromMS(w.P999)
	r.Mean, r.Max = fromMS(w.Mean), fromMS(w.Max)
	return nil
}
