package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a progress clock that moves step forward at every reading.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

// useFakeClock makes the progress reports of the test read a clock that
// advances step per reading.
func useFakeClock(t *testing.T, step time.Duration) {
	t.Helper()
	c := &fakeClock{t: time.Unix(1e9, 0), step: step}
	old := progressClock
	progressClock = c.now
	t.Cleanup(func() { progressClock = old })
}

// Off a terminal, progress is plain lines, at most one per interval, the
// first one interval after the start, none at the end.
func TestProgressPlainLines(t *testing.T) {
	useFakeClock(t, 500*time.Millisecond)
	var out bytes.Buffer
	p := newProgress(&out, "snapshot restore", "read", 10<<20) // starts at 0.5 s
	for range 10 {
		p.add(1 << 20) // at 1.0, 1.5, ... 5.5 s: reports at 2.5 s and 4.5 s
	}
	p.done()
	if p.tty {
		t.Fatal("a bytes.Buffer taken for a terminal")
	}
	want := "snapshot restore: 4.0 MiB of 10.0 MiB read (40%) in 2s, 2.0 MiB/s\n" +
		"snapshot restore: 8.0 MiB of 10.0 MiB read (80%) in 4s, 2.0 MiB/s\n"
	if out.String() != want {
		t.Errorf("progress lines:\n%s\nwant:\n%s", out.String(), want)
	}

	out.Reset()
	p = newProgress(&out, "snapshot save", "received", 0)
	for range 5 {
		p.add(512 << 10)
	}
	p.done()
	if want := "snapshot save: 2.0 MiB received in 2s, 1.0 MiB/s\n"; out.String() != want {
		t.Errorf("progress of an unknown total: %q, want %q", out.String(), want)
	}
}

// On a terminal the line is redrawn in place, with a bar when the total
// is known, and erased at the end.
func TestProgressTerminal(t *testing.T) {
	useFakeClock(t, time.Second)
	var out bytes.Buffer
	p := newProgress(&out, "snapshot restore", "read", 4<<20)
	p.tty, p.interval = true, terminalProgressInterval
	p.add(1 << 20)
	p.done()
	want := "\r\x1b[Ksnapshot restore [######------------------]  25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 3s\r\x1b[K"
	if out.String() != want {
		t.Errorf("terminal progress %q, want %q", out.String(), want)
	}
}

// snapshot save and restore report progress on standard error while
// they run: with standard error not a terminal, as plain lines.
func TestSnapshotProgress(t *testing.T) {
	base := t.TempDir()
	good, _ := writeTestBackup(t, base, "good.rbak")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// Each reading of the clock is a second later: every other chunk
	// of the transfer is reported.
	useFakeClock(t, time.Second)

	out := filepath.Join(base, "saved.rbak")
	code, stdout, stderr := runCLI(t, "snapshot", "save", out, "--endpoints", serveKV(t, &backupKV{data: data}))
	if code != exitOK || !strings.HasPrefix(stdout, "saved ") {
		t.Fatalf("save: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	saveLine := regexp.MustCompile(`^snapshot save: \d+\.\d KiB received in \d+s, \d+\.\d KiB/s$`)
	checkProgressLines(t, "save", stderr, saveLine)

	code, stdout, stderr = runCLI(t, "snapshot", "restore", out, "--id", "5", "--peers", testPeers, "--data-dir", filepath.Join(base, "member5"))
	if code != exitOK || !strings.HasPrefix(stdout, "restored ") {
		t.Fatalf("restore: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	restoreLine := regexp.MustCompile(`^snapshot restore: \d+(\.\d KiB|\s B) of \d+\.\d KiB read \(\d+%\) in \d+s, \d+(\.\d KiB| B)/s$`)
	checkProgressLines(t, "restore", stderr, restoreLine)
}

// checkProgressLines checks that out is one or more lines, each matching
// line.
func checkProgressLines(t *testing.T, what, out string, line *regexp.Regexp) {
	t.Helper()
	if out == "" || !strings.HasSuffix(out, "\n") {
		t.Fatalf("%s: no progress lines on stderr: %q", what, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("%s: progress line %q does not match %s", what, l, line)
		}
	}
	t.Logf("%s: %d progress lines, the last %q", what, len(lines), lines[len(lines)-1])
}
