package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rafty-db/rafty/bench/workload"
)

// chartTable is a fixed comparison table as workload.Table wrote it before
// the p99.9 columns (as docs/benchmarks.md may still hold): put at three
// concurrencies on both systems, linearizable get with etcd missing at
// C=128, and a txn row with no figures at all.
const chartTable = `Some text before.

| workload | Rafty ops/s | etcd ops/s | Rafty/etcd | Rafty p50 ms | etcd p50 ms | Rafty/etcd | Rafty p99 ms | etcd p99 ms | Rafty/etcd | Rafty CPU s/1k ops | etcd CPU s/1k ops | Rafty/etcd | rounds (Rafty/etcd) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |
| put 256 B, C=1 | 616 | 530 | 1.16× | 1.44 | 1.68 | 0.85× | 8.68 | 6.86 | 1.26× | 1.821 | 2.233 | 0.82× | 3/3 |
| put 256 B, C=16 | 3,413 | 1,976 | 1.73× | 3.99 | 7.36 | 0.54× | 15.2 | 19.2 | 0.79× | 0.339 | 0.640 | 0.53× | 3/3 |
| put 256 B, C=128 | 8,408 | 4,291 | 1.96× | 13.3 | 28.8 | 0.46× | 46.3 | 53.3 | 0.87× | 0.136 | 0.326 | 0.42× | 3/3 |
| get (linearizable), C=16 | 7,554 | 5,558 | 1.36× | 1.94 | 2.63 | 0.74× | 6.14 | 7.72 | 0.80× | 0.149 | 0.214 | 0.70× | 3/3 |
| get (linearizable), C=128 | 13,936 | – | – | 8.55 | – | – | 20.5 | – | – | 0.079 | – | – | 3/0 |
| txn 64 B, C=4 | – | – | – | – | – | – | – | – | – | – | – | – | 0/0 |

| workload | Rafty ops/s | etcd ops/s | a second table, ignored |
| get (serializable), C=16 | 1 | 1 | 1 |
`

func TestParseComparisonTable(t *testing.T) {
	rows, err := parseComparisonTable(strings.NewReader(chartTable))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 6: %+v", len(rows), rows)
	}
	r := rows[2]
	if r.Op != workload.OpPut || r.Concurrency != 128 || r.ValueBytes != 256 || r.Rafty.OpsPerSec != 8408 ||
		r.Etcd.OpsPerSec != 4291 || r.Rafty.P50 != 13.3 || r.Etcd.P99 != 53.3 {
		t.Errorf("row 3: %+v", r)
	}
	if r := rows[4]; r.Op != workload.OpGet || r.Concurrency != 128 || !math.IsNaN(r.Etcd.OpsPerSec) || r.Rafty.P99 != 20.5 {
		t.Errorf("row 5: %+v", r)
	}
	if !math.IsNaN(r.Rafty.P999) || !math.IsNaN(r.Etcd.P999) {
		t.Errorf("a table without p99.9 columns gave p99.9 %v/%v", r.Rafty.P999, r.Etcd.P999)
	}
	const header = "| workload | Rafty ops/s | etcd ops/s | Rafty/etcd | Rafty p50 ms | etcd p50 ms | Rafty/etcd | Rafty p99 ms | etcd p99 ms | Rafty/etcd |\n"
	for _, bad := range []string{
		"no table here\n",
		tableHeaderPrefix + " x |\n| --- |\n| put 256 B, C=1 | 1 | 2 |\n",                                                      // no latency columns
		header + "| put 256 B, C=1 | 1 | 2 |\n",                                                                                // too few cells
		header + "| scan, C=1 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |\n",                                                         // unknown workload
		header + "| put 256 B, C=1 | 1 | -5 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |\n",                                                   // negative figure
		header + "| put 256 B, C=1 | 1 | 2 | 3 | 4 | x | 6 | 7 | 8 | 9 |\n",                                                    // not a figure
		header + "| put 256 B, C=99999999999999999999 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |\n",                                 // overflow
		strings.Replace(header, "etcd p99 ms", "Rafty p50 ms", 1) + "| put 256 B, C=1 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 |\n", // a column twice
	} {
		if rows, err := parseComparisonTable(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error, rows %+v", bad, rows)
		}
	}
}

// TestParseTableWithP999 reads the table workload.Table writes today, with
// the p99.9 columns, straight from the renderer, and finds the p99.9 of
// each side in each point's tooltip.
func TestParseTableWithP999(t *testing.T) {
	res := func(sys string, c int, ops float64, p50, p99, p999 time.Duration) workload.Result {
		return workload.Result{System: sys, Op: workload.OpPut, Concurrency: c, Conns: 1, ValueBytes: 256, Keys: 100_000,
			Ops: int64(ops * 10), Seconds: 10, OpsPerSec: ops, P50: p50, P99: p99, P999: p999, Errors: map[string]int64{}}
	}
	ms := time.Millisecond
	results := []workload.Result{
		res("rafty", 16, 3000, 4*ms, 15*ms, 19900*time.Microsecond), res("etcd", 16, 2000, 7*ms, 19*ms, 16*ms),
		res("rafty", 128, 8400, 13*ms, 46*ms, 74*ms), res("etcd", 128, 4300, 29*ms, 53*ms, 50*ms),
	}
	rows, err := parseComparisonTable(strings.NewReader("Text.\n\n" + workload.Table(results) + "\nMore text.\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Rafty.P999 != 19.9 || rows[0].Etcd.P999 != 16 || rows[1].Rafty.P999 != 74 || rows[1].Etcd.P99 != 53 ||
		rows[1].Rafty.OpsPerSec != 8400 || rows[1].Etcd.P50 != 29 {
		t.Fatalf("rows %+v", rows)
	}
	svg, err := renderChart(rows, "t")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(svg, "<title>Rafty C=16: 3,000 ops/s, p50 4 ms, p99 15 ms, p99.9 19.9 ms</title>") {
		t.Errorf("no p99.9 in the tooltips:\n%s", svg)
	}
	// The chart drawn from the results themselves is the same picture.
	direct, err := renderChart(workload.Summarize(results), "t")
	if err != nil || direct != svg {
		t.Errorf("chart from results differs from the chart from their table (%v)", err)
	}
}

// svgDoc is the part of the SVG the test reads back.
type svgDoc struct {
	XMLName   xml.Name `xml:"svg"`
	Width     int      `xml:"width,attr"`
	Height    int      `xml:"height,attr"`
	Polylines []struct {
		Stroke string `xml:"stroke,attr"`
		Dash   string `xml:"stroke-dasharray,attr"`
		Points string `xml:"points,attr"`
	} `xml:"g>polyline"`
	Circles []struct {
		CX    float64 `xml:"cx,attr"`
		CY    float64 `xml:"cy,attr"`
		Title string  `xml:"title"`
	} `xml:"g>circle"`
	Texts []string `xml:"g>text"`
}

func TestRenderChart(t *testing.T) {
	rows, err := parseComparisonTable(strings.NewReader(chartTable))
	if err != nil {
		t.Fatal(err)
	}
	svg, err := renderChart(rows, "A & B <test>")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := renderChart(rows, "A & B <test>")
	if svg != again {
		t.Error("two renders of the same rows differ")
	}
	var doc svgDoc
	dec := xml.NewDecoder(strings.NewReader(svg))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("not well-formed XML: %v\n%s", err, svg)
	}
	if !strings.Contains(svg, "A &amp; B &lt;test&gt;") {
		t.Error("the title is not escaped")
	}
	// Panels: put (3 points each side), get (Rafty 2, etcd 1), txn (no
	// figures: a panel saying so). Per system with points: a p50 and a
	// dashed p99 line, and a circle per point on each.
	if doc.Width != 3*panelW {
		t.Errorf("width %d, want 3 panels", doc.Width)
	}
	if got := len(doc.Polylines); got != 8 {
		t.Errorf("%d polylines, want 8", got)
	}
	if got := len(doc.Circles); got != 2*(3+3+2+1) {
		t.Errorf("%d circles, want 18", got)
	}
	if !strings.Contains(svg, ">no figures<") {
		t.Error("the txn panel does not say it has no figures")
	}
	dashed := 0
	for _, p := range doc.Polylines {
		if p.Dash != "" {
			dashed++
		}
	}
	if dashed != 4 {
		t.Errorf("%d dashed (p99) lines, want 4", dashed)
	}
	// Geometry of the put panel (the first): Rafty's C=128 point is the
	// rightmost, within the plot; higher latency is higher up; a p99 is
	// above its p50.
	pt := func(title string) (x, y float64) {
		for _, c := range doc.Circles {
			if strings.HasPrefix(c.Title, title) {
				return c.CX, c.CY
			}
		}
		t.Fatalf("no point titled %q", title)
		return 0, 0
	}
	x128, y128 := pt("Rafty C=128: 8,408 ops/s, p50 13.3 ms")
	x1, y1 := pt("Rafty C=1: 616 ops/s")
	xe, _ := pt("etcd C=128: 4,291 ops/s")
	left, right := float64(marginL), float64(panelW-marginR)
	top, bottom := float64(chartTop+marginT), float64(chartTop+panelH-marginB)
	if !(left < x1 && x1 < xe && xe < x128 && x128 <= right) {
		t.Errorf("x positions C=1 %.1f, etcd C=128 %.1f, C=128 %.1f not ordered within [%v, %v]", x1, xe, x128, left, right)
	}
	if !(top <= y128 && y128 < y1 && y1 <= bottom) {
		t.Errorf("y of p50 13.3 ms (%.1f) should be above p50 1.44 ms (%.1f) within [%v, %v]", y128, y1, top, bottom)
	}
	// Throughput is linear: 8,408 ops/s sits at 8408/xMax of the width.
	xMax := math.Ceil(8408*1.05/niceStep(8408.0/5)) * niceStep(8408.0/5)
	if want := left + 8408/xMax*(right-left); math.Abs(x128-want) > 0.1 {
		t.Errorf("x of 8,408 ops/s = %.1f, want %.1f", x128, want)
	}
	// Latency is logarithmic: the axis spans 1–100 ms in the put panel,
	// so 10 ms is exactly halfway.
	if !strings.Contains(svg, `text-anchor="end">100<`) || !strings.Contains(svg, `text-anchor="end">1<`) {
		t.Error("put panel's latency axis does not run from 1 to 100 ms")
	}

	if _, err := renderChart(nil, "x"); err == nil {
		t.Error("rendering no rows: no error")
	}
}

func TestNiceStepAndAxisNumber(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{{1681.6, 2000}, {1000, 1000}, {0.3, 0.5}, {7, 10}, {2, 2}} {
		if got := niceStep(tc.in); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want float64 }{{0.963, 0.5}, {1.296, 1}, {4.9, 2}, {50, 50}, {0.02, 0.02}} {
		if got := niceBelow(tc.in); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceBelow(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   float64
		want string
	}{{12000, "12,000"}, {500, "500"}, {13.3, "13.3"}, {1.444, "1.44"}, {0.2, "0.2"}, {2, "2"}} {
		if got := axisNumber(tc.in); got != tc.want {
			t.Errorf("axisNumber(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestChartCommand renders result files through the command, and rejects
// bad input with exit status 2.
func TestChartCommand(t *testing.T) {
	dir := t.TempDir()
	res := `{"system":"rafty","op":"put","concurrency":16,"conns":1,"value_bytes":256,"ops_per_sec":3000,"p50_ms":4,"p99_ms":15,"errors":{}}
{"system":"etcd","op":"put","concurrency":16,"conns":1,"value_bytes":256,"ops_per_sec":2000,"p50_ms":7,"p99_ms":19,"errors":{}}`
	if err := os.WriteFile(filepath.Join(dir, "r.json"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "chart.svg")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"chart", "--out", out, dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("chart: exit %d: %s", code, stderr.String())
	}
	svg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(svg), "<circle"); n != 4 {
		t.Errorf("%d points, want 4 (2 systems × p50, p99)", n)
	}
	for _, args := range [][]string{{"chart"}, {"chart", "--table", "x.md", dir}} {
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// TestCommittedChartMatchesDocs: docs/benchmarks-compare.svg is what this
// code draws from the first comparison table in docs/benchmarks.md, so
// the picture and the table beside it cannot drift apart. After a new
// `make bench-compare` run is copied into the docs, regenerate it with
//
//	cd bench/etcd && go run . chart --table ../../docs/benchmarks.md --out ../../docs/benchmarks-compare.svg
func TestCommittedChartMatchesDocs(t *testing.T) {
	md, err := os.ReadFile("../../docs/benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := parseComparisonTable(bytes.NewReader(md))
	if err != nil {
		t.Fatal(err)
	}
	want, err := renderChart(rows, defaultChartTitle)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../docs/benchmarks-compare.svg")
	if err != nil || string(got) != want {
		t.Fatalf("docs/benchmarks-compare.svg is missing or not drawn from docs/benchmarks.md's table (%v); regenerate it (see this test's comment)", err)
	}
	if !strings.Contains(string(md), "](benchmarks-compare.svg)") {
		t.Error("docs/benchmarks.md does not link benchmarks-compare.svg")
	}
}
