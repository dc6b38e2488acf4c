package workload

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
)

// The two systems the table compares, as Result.System spells them.
const (
	SystemRafty = "rafty"
	SystemEtcd  = "etcd"
)

// Summary is one system's figures at one workload point: medians over the
// rounds (NaN when there is nothing to take the median of).
type Summary struct {
	Rounds         int
	OpsPerSec      float64
	P50, P99, P999 float64 // milliseconds
	CPUPer1k       float64 // servers' CPU seconds per 1,000 operations
	Errors         map[string]int64
}

// Row is one workload point of the comparison.
type Row struct {
	Op          string
	Concurrency int
	ValueBytes  int
	Conns       int
	// Keys is the keyspace: results of different keyspaces are never
	// taken together (the label does not show it; a table is of one).
	Keys        int
	Rafty, Etcd Summary
}

// Ratio of the medians, Rafty / etcd, for each figure; NaN where a side is
// missing. For throughput above 1 favours Rafty, for latency and CPU below 1
// does.
func (r Row) Ratio() (opsPerSec, p50, p99, p999, cpu float64) {
	return ratio(r.Rafty.OpsPerSec, r.Etcd.OpsPerSec), ratio(r.Rafty.P50, r.Etcd.P50),
		ratio(r.Rafty.P99, r.Etcd.P99), ratio(r.Rafty.P999, r.Etcd.P999), ratio(r.Rafty.CPUPer1k, r.Etcd.CPUPer1k)
}

func ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return math.NaN()
	}
	return a / b
}

// Median returns the median of the values that are not NaN (the mean of
// the two middle ones for an even count), or NaN when there are none.
func Median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

type pointKey struct {
	op          string
	concurrency int
	valueBytes  int
	conns       int
	keys        int
}

// opOrder is the order of rows: writes first, then reads, then the rest.
func opOrder(op string) int {
	switch op {
	case OpPut:
		return 0
	case OpGet:
		return 1
	case OpSGet:
		return 2
	case OpTxn:
		return 3
	case OpMixed:
		return 4
	}
	return 5
}

// Summarize groups results by workload point (op, concurrency, value
// size, connections, keyspace) and system ("rafty" or "etcd", any case; others are
// ignored), taking medians over the rounds. Rows are ordered by keyspace
// (largest first), then op (put, get, sget, txn, mixed), then concurrency.
func Summarize(results []Result) []Row {
	type acc struct {
		ops, p50, p99, p999, cpu []float64
		errs                     map[string]int64
	}
	groups := map[pointKey]map[string]*acc{}
	for _, r := range results {
		sys := strings.ToLower(r.System)
		if sys != SystemRafty && sys != SystemEtcd {
			continue
		}
		k := pointKey{r.Op, r.Concurrency, r.ValueBytes, r.Conns, r.Keys}
		if groups[k] == nil {
			groups[k] = map[string]*acc{}
		}
		a := groups[k][sys]
		if a == nil {
			a = &acc{errs: map[string]int64{}}
			groups[k][sys] = a
		}
		a.ops = append(a.ops, r.OpsPerSec)
		a.p50 = append(a.p50, ms(r.P50))
		a.p99 = append(a.p99, ms(r.P99))
		a.p999 = append(a.p999, ms(r.P999))
		a.cpu = append(a.cpu, r.CPUPer1kOps())
		for kind, n := range r.Errors {
			a.errs[kind] += n
		}
	}
	summary := func(a *acc) Summary {
		if a == nil {
			nan := math.NaN()
			return Summary{OpsPerSec: nan, P50: nan, P99: nan, P999: nan, CPUPer1k: nan}
		}
		return Summary{
			Rounds:    len(a.ops),
			OpsPerSec: Median(a.ops),
			P50:       Median(a.p50),
			P99:       Median(a.p99),
			P999:      Median(a.p999),
			CPUPer1k:  Median(a.cpu),
			Errors:    a.errs,
		}
	}
	keys := slices.Collect(maps.Keys(groups))
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.keys != b.keys {
			return a.keys > b.keys
		}
		if opOrder(a.op) != opOrder(b.op) {
			return opOrder(a.op) < opOrder(b.op)
		}
		if a.op != b.op {
			return a.op < b.op
		}
		if a.valueBytes != b.valueBytes {
			return a.valueBytes < b.valueBytes
		}
		if a.conns != b.conns {
			return a.conns < b.conns
		}
		return a.concurrency < b.concurrency
	})
	rows := make([]Row, 0, len(keys))
	for _, k := range keys {
		rows = append(rows, Row{
			Op: k.op, Concurrency: k.concurrency, ValueBytes: k.valueBytes, Conns: k.conns, Keys: k.keys,
			Rafty: summary(groups[k][SystemRafty]),
			Etcd:  summary(groups[k][SystemEtcd]),
		})
	}
	return rows
}

// Label names the row's workload point, e.g. "put 256 B, C=16".
func (r Row) Label() string {
	var s string
	switch r.Op {
	case OpPut, OpTxn, OpMixed:
		s = fmt.Sprintf("%s %d B, C=%d", r.Op, r.ValueBytes, r.Concurrency)
	case OpGet:
		s = fmt.Sprintf("get (linearizable), C=%d", r.Concurrency)
	case OpSGet:
		s = fmt.Sprintf("get (serializable), C=%d", r.Concurrency)
	default:
		s = fmt.Sprintf("%s, C=%d", r.Op, r.Concurrency)
	}
	if r.Conns != 1 {
		s += fmt.Sprintf(", %d conns", r.Conns)
	}
	return s
}

// Table renders results as a markdown table comparing Rafty with etcd at
// each workload point: medians over rounds of throughput, p50, p99 and
// p99.9 latency and the servers' CPU seconds per 1,000 operations, each
// with the ratio Rafty/etcd of the medians, and the number of rounds.
// Errors, if any, are listed under the table. Results of one keyspace make
// one table: with several, rows of the same label would repeat.
func Table(results []Result) string {
	rows := Summarize(results)
	var b strings.Builder
	b.WriteString("| workload | Rafty ops/s | etcd ops/s | Rafty/etcd | Rafty p50 ms | etcd p50 ms | Rafty/etcd | " +
		"Rafty p99 ms | etcd p99 ms | Rafty/etcd | Rafty p99.9 ms | etcd p99.9 ms | Rafty/etcd | " +
		"Rafty CPU s/1k ops | etcd CPU s/1k ops | Rafty/etcd | rounds (Rafty/etcd) |\n")
	b.WriteString("| --- |" + strings.Repeat(" ---: |", 15) + " :---: |\n")
	var errLines []string
	for _, r := range rows {
		ro, r50, r99, r999, rc := r.Ratio()
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d |\n",
			r.Label(),
			fmtRate(r.Rafty.OpsPerSec), fmtRate(r.Etcd.OpsPerSec), fmtRatio(ro),
			fmtMS(r.Rafty.P50), fmtMS(r.Etcd.P50), fmtRatio(r50),
			fmtMS(r.Rafty.P99), fmtMS(r.Etcd.P99), fmtRatio(r99),
			fmtMS(r.Rafty.P999), fmtMS(r.Etcd.P999), fmtRatio(r999),
			fmtCPU(r.Rafty.CPUPer1k), fmtCPU(r.Etcd.CPUPer1k), fmtRatio(rc),
			r.Rafty.Rounds, r.Etcd.Rounds)
		for _, s := range []struct {
			name string
			sum  Summary
		}{{"Rafty", r.Rafty}, {"etcd", r.Etcd}} {
			if len(s.sum.Errors) == 0 {
				continue
			}
			kinds := slices.Collect(maps.Keys(s.sum.Errors))
			sort.Strings(kinds)
			var parts []string
			for _, k := range kinds {
				parts = append(parts, fmt.Sprintf("%s %d", k, s.sum.Errors[k]))
			}
			errLines = append(errLines, fmt.Sprintf("- %s, %s: %s", s.name, r.Label(), strings.Join(parts, ", ")))
		}
	}
	if len(errLines) > 0 {
		b.WriteString("\nFailed operations (summed over rounds):\n\n")
		b.WriteString(strings.Join(errLines, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

const dash = "–"

// fmtRate formats operations per second with thousands separators.
func fmtRate(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return thousands(int64(math.Round(x)))
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i, c := range []byte(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, c)
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// fmtMS formats milliseconds with about three significant digits.
func fmtMS(x float64) string {
	switch {
	case math.IsNaN(x):
		return dash
	case x < 10:
		return fmt.Sprintf("%.2f", x)
	case x < 100:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.0f", x)
	}
}

func fmtCPU(x float64) string {
	if math.IsNaN(x) {
		return dash
	}
	return fmt.Sprintf("%.3f", x)
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return dash
	}
	return fmt.Sprintf("%.2f×", x)
}
