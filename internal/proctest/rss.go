package proctest

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// PeakRSS measures this process's resident memory around fn, for tests
// that bound the memory a transfer uses: it collects garbage, resets the
// kernel's peak-RSS mark (writing 5 to /proc/self/clear_refs), runs fn,
// and returns the resident set before fn and its peak while fn ran, in
// bytes. It skips tb where /proc offers neither (not Linux, or a
// restricted sandbox).
func PeakRSS(tb testing.TB, fn func()) (before, peak int64) {
	tb.Helper()
	runtime.GC()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Skipf("skipping: cannot reset the peak RSS: %v", err)
	}
	before = selfStatusBytes(tb, "VmRSS")
	fn()
	return before, selfStatusBytes(tb, "VmHWM")
}

// selfStatusBytes reads a kB field of /proc/self/status, in bytes.
func selfStatusBytes(tb testing.TB, field string) int64 {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skipf("skipping: no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatalf("/proc/self/status %s: %v", field, err)
			}
			return kb << 10
		}
	}
	tb.Skipf("skipping: no %s in /proc/self/status", field)
	return 0
}
