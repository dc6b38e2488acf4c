package main

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/rafty-db/rafty/bench/workload"
)

// chartMain is `etcdbench chart [--out FILE] [--title T] (--table FILE.md | PATH...)`:
// draw the throughput–latency chart of the comparison as an SVG, from
// result files (as `table` reads them) or from the first comparison table
// in a markdown file (docs/benchmarks.md, whose figures outlive the
// artifacts they came from).
func chartMain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("chart", stderr)
	out := fs.String("out", "", "write the SVG to this file instead of standard output")
	table := fs.String("table", "", "read the figures from the first Rafty/etcd table in this markdown file")
	title := fs.String("title", defaultChartTitle, "the chart's title")
	keys := fs.Int("keys", 0, "with result files: draw the results of this keyspace (default: the largest among them)")
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	var rows []workload.Row
	switch {
	case *table != "" && fs.NArg() > 0:
		return usagef("give --table or result paths, not both")
	case *table != "":
		f, err := os.Open(*table)
		if err != nil {
			return err
		}
		defer f.Close()
		if rows, err = parseComparisonTable(f); err != nil {
			return fmt.Errorf("%s: %w", *table, err)
		}
	case fs.NArg() > 0:
		results, err := readResults(fs.Args())
		if err != nil {
			return err
		}
		rows = workload.Summarize(ofKeyspace(results, *keys))
	default:
		return usagef("want --table FILE.md or result files or directories")
	}
	svg, err := renderChart(rows, *title)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = io.WriteString(stdout, svg)
		return err
	}
	return os.WriteFile(*out, []byte(svg), 0o644)
}

const defaultChartTitle = "Rafty and etcd, 3 members on loopback: throughput against latency (medians over rounds)"

// tableHeaderPrefix starts the header row workload.Table writes.
const tableHeaderPrefix = "| workload | Rafty ops/s | etcd ops/s |"

// labelPattern reads a row label written by workload.Row.Label.
var labelPattern = regexp.MustCompile(`^(put|txn|mixed) (\d+) B, C=(\d+)|^get \((linearizable|serializable)\), C=(\d+)`)

// ofKeyspace returns the results of keyspace keys, or of the largest
// keyspace among them when keys is 0: a chart, like a table, shows one.
func ofKeyspace(results []workload.Result, keys int) []workload.Result {
	if keys == 0 {
		for _, r := range results {
			keys = max(keys, r.Keys)
		}
	}
	var out []workload.Result
	for _, r := range results {
		if r.Keys == keys {
			out = append(out, r)
		}
	}
	return out
}

// Columns parseComparisonTable reads, by their header. The p99.9 columns
// are optional: tables written before they existed have none.
const (
	colRaftyOps  = "Rafty ops/s"
	colEtcdOps   = "etcd ops/s"
	colRaftyP50  = "Rafty p50 ms"
	colEtcdP50   = "etcd p50 ms"
	colRaftyP99  = "Rafty p99 ms"
	colEtcdP99   = "etcd p99 ms"
	colRaftyP999 = "Rafty p99.9 ms"
	colEtcdP999  = "etcd p99.9 ms"
)

// parseComparisonTable reads the first table rendered by workload.Table
// in r: per row the label, the two systems' ops/s, p50, p99 and, when the
// table has them, p99.9, found by their column headers. A missing figure
// ("–") is NaN, and so is p99.9 in a table without its columns.
func parseComparisonTable(r io.Reader) ([]workload.Row, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		col   map[string]int // header -> cell index; nil until the header
		width int            // cells a row must have: as many as the header
		rows  []workload.Row
	)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if col == nil {
			if strings.HasPrefix(text, tableHeaderPrefix) {
				header := splitCells(text)
				var err error
				if col, err = tableColumns(header); err != nil {
					return nil, fmt.Errorf("line %d: %w", line, err)
				}
				width = len(header)
			}
			continue
		}
		if !strings.HasPrefix(text, "|") {
			break // the end of the first table
		}
		cells := splitCells(text)
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		if len(cells) != width {
			return nil, fmt.Errorf("line %d: %d cells, want %d as in the header", line, len(cells), width)
		}
		m := labelPattern.FindStringSubmatch(cells[0])
		if m == nil {
			return nil, fmt.Errorf("line %d: cannot read the workload %q", line, cells[0])
		}
		row := workload.Row{Conns: 1}
		var err error
		if m[1] != "" {
			row.Op = m[1]
			row.ValueBytes, _ = strconv.Atoi(m[2])
			row.Concurrency, err = strconv.Atoi(m[3])
		} else {
			row.Op = workload.OpGet
			if m[4] == "serializable" {
				row.Op = workload.OpSGet
			}
			row.Concurrency, err = strconv.Atoi(m[5])
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %q: %v", line, cells[0], err)
		}
		fig := func(name string) float64 {
			i, ok := col[name]
			if !ok || err != nil {
				return math.NaN()
			}
			var v float64
			if v, err = parseFigure(cells[i]); err != nil {
				err = fmt.Errorf("line %d, column %q: %v", line, name, err)
			}
			return v
		}
		row.Rafty = workload.Summary{OpsPerSec: fig(colRaftyOps), P50: fig(colRaftyP50), P99: fig(colRaftyP99), P999: fig(colRaftyP999)}
		row.Etcd = workload.Summary{OpsPerSec: fig(colEtcdOps), P50: fig(colEtcdP50), P99: fig(colEtcdP99), P999: fig(colEtcdP999)}
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("no comparison table (a header starting " + tableHeaderPrefix + ")")
	}
	return rows, nil
}

// splitCells splits a markdown table row into its trimmed cells.
func splitCells(line string) []string {
	cells := strings.Split(strings.Trim(line, "|"), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

// tableColumns maps the header cells the chart reads to their index; the
// ops/s, p50 and p99 columns of both systems are required.
func tableColumns(header []string) (map[string]int, error) {
	if len(header) < 2 {
		return nil, errors.New("a header of one column")
	}
	col := map[string]int{}
	for i, h := range header {
		switch h {
		case colRaftyOps, colEtcdOps, colRaftyP50, colEtcdP50, colRaftyP99, colEtcdP99, colRaftyP999, colEtcdP999:
			if _, dup := col[h]; dup {
				return nil, fmt.Errorf("column %q twice", h)
			}
			col[h] = i
		}
	}
	for _, h := range []string{colRaftyOps, colEtcdOps, colRaftyP50, colEtcdP50, colRaftyP99, colEtcdP99} {
		if _, ok := col[h]; !ok {
			return nil, fmt.Errorf("the table has no column %q", h)
		}
	}
	return col, nil
}

// parseFigure reads "8,408", "13.3" or "–" (NaN).
func parseFigure(s string) (float64, error) {
	if s == "–" || s == "-" || s == "" {
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("not a figure: %q", s)
	}
	return v, nil
}

// Chart geometry, in SVG user units (pixels).
const (
	panelW, panelH        = 340, 300
	marginL, marginR      = 58, 26
	marginT, marginB      = 30, 46
	chartTop, chartBottom = 64, 48 // title and legend above, note below
)

// systemStyle is how one system is drawn.
type systemStyle struct {
	name, color string
	pick        func(workload.Row) workload.Summary
}

var chartSystems = []systemStyle{
	{"Rafty", "#1f6fb4", func(r workload.Row) workload.Summary { return r.Rafty }},
	{"etcd", "#e0731c", func(r workload.Row) workload.Summary { return r.Etcd }},
}

// point is one measured workload point of one system. p999 is NaN when
// not known (a table written before the p99.9 columns).
type point struct {
	c                   int
	ops, p50, p99, p999 float64
}

// panel is one operation's points per system, by rising concurrency.
type panel struct {
	title  string
	points [][]point // indexed like chartSystems
}

// panels groups rows by operation (in the rows' order; rows come sorted by
// op, then concurrency), keeping only figures that exist.
func panels(rows []workload.Row) []panel {
	var ps []panel
	index := map[string]int{}
	for _, r := range rows {
		key := r.Op + "/" + strconv.Itoa(r.ValueBytes) + "/" + strconv.Itoa(r.Conns)
		i, ok := index[key]
		if !ok {
			i = len(ps)
			index[key] = i
			ps = append(ps, panel{title: panelTitle(r), points: make([][]point, len(chartSystems))})
		}
		for s, sys := range chartSystems {
			sum := sys.pick(r)
			if !(sum.OpsPerSec > 0) || !(sum.P50 > 0) || !(sum.P99 > 0) {
				continue // missing or NaN
			}
			ps[i].points[s] = append(ps[i].points[s], point{r.Concurrency, sum.OpsPerSec, sum.P50, sum.P99, sum.P999})
		}
	}
	return ps
}

func panelTitle(r workload.Row) string {
	var s string
	switch r.Op {
	case workload.OpGet:
		s = "get (linearizable)"
	case workload.OpSGet:
		s = "get (serializable)"
	case workload.OpPut, workload.OpTxn, workload.OpMixed:
		s = fmt.Sprintf("%s, %d-byte values", r.Op, r.ValueBytes)
	default:
		s = r.Op
	}
	if r.Conns != 1 {
		s += fmt.Sprintf(", %d conns", r.Conns)
	}
	return s
}

// renderChart draws one panel per operation: throughput (ops/s, linear)
// across, latency (ms, logarithmic) up, a solid line through each
// system's p50 and a dashed one through its p99, each point labelled with
// its client concurrency C. p99.9 is in each point's tooltip only: a third
// pair of lines per panel made the panels unreadable, and the table beside
// the chart has the figure. The same rows always give the same bytes.
func renderChart(rows []workload.Row, title string) (string, error) {
	ps := panels(rows)
	if len(ps) == 0 {
		return "", errors.New("nothing to draw: no workload point has throughput and latency")
	}
	width := len(ps) * panelW
	height := chartTop + panelH + chartBottom
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="20" text-anchor="middle" font-size="14" font-weight="bold">%s</text>`+"\n", width/2, esc(title))
	// Legend.
	lx := width/2 - 230
	for i, sys := range chartSystems {
		x := lx + i*240
		fmt.Fprintf(&b, `<line x1="%d" y1="40" x2="%d" y2="40" stroke="%s" stroke-width="2"/>`, x, x+24, sys.color)
		fmt.Fprintf(&b, `<text x="%d" y="44">%s p50</text>`, x+30, esc(sys.name))
		fmt.Fprintf(&b, `<line x1="%d" y1="40" x2="%d" y2="40" stroke="%s" stroke-width="2" stroke-dasharray="6 4"/>`, x+100, x+124, sys.color)
		fmt.Fprintf(&b, `<text x="%d" y="44">%s p99</text>`+"\n", x+130, esc(sys.name))
	}
	for i, p := range ps {
		drawPanel(&b, p, i*panelW, chartTop)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#555555">Each point is one client concurrency C (closed loop); right is more throughput, down is lower latency.</text>`+"\n",
		width/2, height-12)
	b.WriteString("</svg>\n")
	return b.String(), nil
}

// drawPanel draws p with its top-left corner at (x0, y0).
func drawPanel(b *strings.Builder, p panel, x0, y0 int) {
	left, top := float64(x0+marginL), float64(y0+marginT)
	right, bottom := float64(x0+panelW-marginR), float64(y0+panelH-marginB)
	maxOps, minMS, maxMS := 0.0, math.Inf(1), 0.0
	for _, pts := range p.points {
		for _, q := range pts {
			maxOps = max(maxOps, q.ops)
			minMS, maxMS = min(minMS, q.p50), max(maxMS, q.p99)
		}
	}
	fmt.Fprintf(b, `<g><text x="%.1f" y="%d" text-anchor="middle" font-size="12" font-weight="bold">%s</text>`+"\n", (left+right)/2, y0+16, esc(p.title))
	if maxOps == 0 {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">no figures</text></g>`+"\n", (left+right)/2, (top+bottom)/2)
		return
	}
	xStep := niceStep(maxOps / 5)
	xMax := math.Ceil(maxOps*1.05/xStep) * xStep
	// The latency axis runs between 1-2-5 values with a margin, so no
	// point sits on the frame.
	lo, hi := math.Log10(niceBelow(minMS*0.9)), math.Log10(niceStep(maxMS*1.1))
	xOf := func(v float64) float64 { return left + v/xMax*(right-left) }
	yOf := func(ms float64) float64 { return bottom - (math.Log10(ms)-lo)/(hi-lo)*(bottom-top) }

	// Axes, grid and ticks.
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888888"/>`+"\n", left, top, right-left, bottom-top)
	for v := 0.0; v <= xMax+xStep/2; v += xStep {
		x := xOf(v)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, x, top, x, bottom)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, bottom+14, axisNumber(v))
	}
	for e := math.Floor(lo); e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			ms := m * math.Pow(10, e)
			if l := math.Log10(ms); l < lo-1e-9 || l > hi+1e-9 {
				continue
			}
			y := yOf(ms)
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, left, y, right, y)
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, y+4, axisNumber(ms))
		}
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">throughput, operations/s</text>`+"\n", (left+right)/2, bottom+32)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" transform="rotate(-90 %.1f %.1f)">latency, ms (log scale)</text>`+"\n",
		float64(x0+14), (top+bottom)/2, float64(x0+14), (top+bottom)/2)

	// Lines and points.
	for s, sys := range chartSystems {
		pts := p.points[s]
		if len(pts) == 0 {
			continue
		}
		for _, pc := range []struct {
			dash string
			ms   func(point) float64
		}{{"", func(q point) float64 { return q.p50 }}, {` stroke-dasharray="6 4"`, func(q point) float64 { return q.p99 }}} {
			var coords []string
			for _, q := range pts {
				coords = append(coords, fmt.Sprintf("%.1f,%.1f", xOf(q.ops), yOf(pc.ms(q))))
			}
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", sys.color, pc.dash, strings.Join(coords, " "))
			for _, q := range pts {
				p999 := ""
				if q.p999 > 0 {
					p999 = ", p99.9 " + axisNumber(q.p999) + " ms"
				}
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s C=%d: %s ops/s, p50 %s ms, p99 %s ms%s</title></circle>`+"\n",
					xOf(q.ops), yOf(pc.ms(q)), sys.color, esc(sys.name), q.c, axisNumber(math.Round(q.ops)), axisNumber(q.p50), axisNumber(q.p99), p999)
			}
		}
		for _, q := range pts {
			// Labels right of their point, or left of it near the frame.
			x, anchor := xOf(q.ops)+4, "start"
			if x > right-40 {
				x, anchor = xOf(q.ops)-4, "end"
			}
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="%s" font-size="10" text-anchor="%s">C=%d</text>`+"\n", x, yOf(q.p50)+13, sys.color, anchor, q.c)
		}
	}
	b.WriteString("</g>\n")
}

// niceStep returns the smallest 1, 2 or 5 × 10^k at least x (x > 0).
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x*(1-1e-12) {
			return m * p
		}
	}
	return 10 * p
}

// niceBelow returns the largest 1, 2 or 5 × 10^k at most x (x > 0).
func niceBelow(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= x*(1+1e-12) {
			return m * p
		}
	}
	return p
}

// axisNumber formats a tick or figure: thousands separated, at most
// three significant digits below 100.
func axisNumber(v float64) string {
	switch {
	case v >= 1000:
		return thousands(int(math.Round(v)))
	case v >= 100 || v == math.Trunc(v):
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
