package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// How often progress is reported. On a terminal the line is redrawn in
// place, so it can change often; plain lines (a log, a pipe) each take a
// line, so they come seldom enough to stay readable.
var (
	terminalProgressInterval = 200 * time.Millisecond
	plainProgressInterval    = 2 * time.Second
)

// progressClock is the clock progress reports use; tests replace it.
var progressClock = time.Now

// progressBarWidth is the number of cells of the terminal progress bar.
const progressBarWidth = 24

// progress reports the bytes of a long transfer and their rate on w
// (standard error): on a terminal as one line redrawn in place (with a
// bar when the total is known), otherwise as a plain line at most every
// plainProgressInterval. The first report comes one interval after the
// start, so a quick transfer prints nothing. It is used from one
// goroutine, the one doing the transfer, and reports only when bytes
// arrive: it starts no goroutine of its own.
type progress struct {
	w     io.Writer
	tty   bool
	label string // what is done: "snapshot save", "snapshot restore"
	verb  string // what happens to the bytes: "received", "read"
	total int64  // the bytes expected, or 0 if unknown
	now   func() time.Time

	interval    time.Duration
	start, last time.Time
	n           int64
	drawn       bool // a terminal line is on screen
}

// newProgress reports on w; it draws on a terminal when w is one.
func newProgress(w io.Writer, label, verb string, total int64) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = isTerminal(f.Fd())
	}
	p := &progress{w: w, tty: tty, label: label, verb: verb, total: max(total, 0), now: progressClock}
	p.interval = plainProgressInterval
	if tty {
		p.interval = terminalProgressInterval
	}
	p.start = p.now()
	p.last = p.start
	return p
}

// add counts n more bytes and reports if an interval has passed since
// the last report.
func (p *progress) add(n int) {
	p.n += int64(n)
	t := p.now()
	if t.Sub(p.last) < p.interval {
		return
	}
	p.last = t
	p.report(t)
}

// report writes the current state.
func (p *progress) report(t time.Time) {
	elapsed := t.Sub(p.start)
	rate := ""
	if secs := elapsed.Seconds(); secs > 0 {
		rate = humanBytes(uint64(float64(p.n)/secs)) + "/s"
	}
	if !p.tty {
		amount := fmt.Sprintf("%s %s", humanBytes(uint64(p.n)), p.verb)
		if p.total > 0 {
			amount = fmt.Sprintf("%s of %s %s (%d%%)", humanBytes(uint64(p.n)), humanBytes(uint64(p.total)), p.verb, percent(p.n, p.total))
		}
		fmt.Fprintf(p.w, "%s: %s in %v, %s\n", p.label, amount, elapsed.Round(time.Second), rate)
		return
	}
	var b strings.Builder
	b.WriteString("\r\x1b[K") // to the line's start, erased
	b.WriteString(p.label)
	if p.total > 0 {
		pct := percent(p.n, p.total)
		filled := pct * progressBarWidth / 100
		fmt.Fprintf(&b, " [%s%s] %3d%%  %s / %s  %s", strings.Repeat("#", filled), strings.Repeat("-", progressBarWidth-filled),
			pct, humanBytes(uint64(p.n)), humanBytes(uint64(p.total)), rate)
		if p.n > 0 && p.n < p.total {
			left := time.Duration(float64(elapsed) * float64(p.total-p.n) / float64(p.n))
			fmt.Fprintf(&b, "  ETA %v", left.Round(time.Second))
		}
	} else {
		fmt.Fprintf(&b, "  %s %s  %s  %v", humanBytes(uint64(p.n)), p.verb, rate, elapsed.Round(time.Second))
	}
	_, _ = io.WriteString(p.w, b.String())
	p.drawn = true
}

// done erases the terminal line, if one was drawn: the command's own
// result line follows on standard output.
func (p *progress) done() {
	if p.drawn {
		_, _ = io.WriteString(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// percent is n of total in whole percent, within [0, 100].
func percent(n, total int64) int {
	if total <= 0 || n <= 0 {
		return 0
	}
	if n >= total {
		return 100
	}
	return int(float64(n) * 100 / float64(total)) // float: n*100 could overflow
}

// progressWriter counts what is written through it into a progress.
type progressWriter struct {
	w io.Writer
	p *progress
}

func (pw progressWriter) Write(b []byte) (int, error) {
	n, err := pw.w.Write(b)
	pw.p.add(n)
	return n, err
}

// progressReader counts what is read through it into a progress.
type progressReader struct {
	r io.Reader
	p *progress
}

func (pr progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.add(n)
	return n, err
}
