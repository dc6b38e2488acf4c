package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/bench/workload"
)

func TestBenchBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--op", "nope"}, `--op "nope"`},
		{[]string{"bench", "--concurrency", "0"}, "--concurrency"},
		{[]string{"bench", "--conns", "0"}, "--conns"},
		{[]string{"bench", "--duration", "0s"}, "--duration"},
		{[]string{"bench", "--mix", "put=x"}, "--mix"},
		{[]string{"bench", "--pids", "abc"}, "--pids"},
		{[]string{"bench", "--op-timeout", "0s"}, "--op-timeout"},
		{[]string{"bench", "--endpoints", ""}, "--endpoints"},
		{[]string{"bench", "extra"}, `unexpected argument "extra"`},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		wantOneLineError(t, tc.args, code, stdout, stderr, exitUsage, tc.want)
	}
}

// TestBenchAgainstCluster runs a short mixed load against a real
// three-process cluster and checks the JSON result is a workload.Result
// with work done and no errors.
func TestBenchAgainstCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-process cluster; skipped with -short")
	}
	c := startCluster(t, 3)
	code, stdout, stderr := c.cli(t, "bench", "--endpoints", c.endpoints(), "--leader-only", "--json", "--quiet",
		"--op", "mixed", "--concurrency", "8", "--keys", "100", "--prefill", "--warmup", "200ms", "--duration", "1s",
		"--pids", strconv.Itoa(c.nodes[0].process().Pid()))
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, stderr)
	}
	var res workload.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("bench --json output is not a Result: %v\n%s", err, stdout)
	}
	if res.System != "rafty" || res.Ops == 0 || res.OpsPerSec <= 0 || !res.LeaderOnly {
		t.Fatalf("implausible result: %+v", res)
	}
	if len(res.Errors) != 0 {
		t.Fatalf("errors under a healthy cluster: %v", res.Errors)
	}
	for _, kind := range workload.Kinds {
		if res.OpsByKind[kind] == 0 {
			t.Errorf("mixed run issued no %s operations: %v", kind, res.OpsByKind)
		}
	}
	if res.P50 <= 0 || res.P99 < res.P50 {
		t.Errorf("latency percentiles out of order: p50 %v p99 %v", res.P50, res.P99)
	}
}

// bench exits non-zero when operations fail, with one line counting them
// by kind with the first message of each; --json still prints the
// result first. It does too when none completed in the window.
func TestBenchReportsFailures(t *testing.T) {
	ep := serveKV(t, &kvpb.UnimplementedKVServer{}) // every operation fails
	for _, asJSON := range []bool{false, true} {
		// The warm-up covers connecting, which a loaded machine can make
		// slow; then every operation fails at once.
		args := []string{"bench", "--endpoints", ep, "--op", "put", "--concurrency", "2", "--warmup", "300ms", "--duration", "500ms", "--quiet"}
		if asJSON {
			args = append(args, "--json")
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != exitFailure {
			t.Errorf("json=%v: exit %d, want %d (stderr %q)", asJSON, code, exitFailure, stderr)
		}
		m := regexp.MustCompile(`^kvnode: bench: (\d+) of (\d+) measured operations failed: unimplemented (\d+) \(first: "method Put not implemented"\)\n$`).FindStringSubmatch(stderr)
		if m == nil || m[1] != m[2] || m[1] != m[3] || m[1] == "0" {
			t.Errorf("json=%v: stderr %q", asJSON, stderr)
		}
		if asJSON {
			var res workload.Result
			if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Errors["unimplemented"] == 0 {
				t.Errorf("--json output %q (%v)", stdout, err)
			}
		} else if !strings.Contains(stdout, "errors map[unimplemented:") {
			t.Errorf("summary line %q", stdout)
		}
	}
}

// A run in which no operation completes in the measured window (a stuck
// cluster) exits non-zero too: an empty result is not a measurement.
func TestBenchNothingCompleted(t *testing.T) {
	f := newFakeKV()
	f.failures = []error{errHang, errHang}
	ep := startFakeKV(t, f)
	args := []string{"bench", "--endpoints", ep, "--op", "put", "--concurrency", "2", "--warmup", "0s", "--duration", "300ms",
		"--op-timeout", "5s", "--quiet"}
	code, stdout, stderr := runCLI(t, args...)
	if code != exitFailure || !strings.HasPrefix(stderr, "kvnode: bench: no operation completed within the measured ") {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

// --prefill-only writes every key once and reports it, with no measured
// window: how bench/etcd/compare.sh preloads the keyspace, the same way
// etcdbench load --prefill-only does for etcd.
func TestBenchPrefillOnly(t *testing.T) {
	f := newFakeKV()
	ep := startFakeKV(t, f)
	code, stdout, stderr := runCLI(t, "bench", "--endpoints", ep, "--prefill-only", "--json", "--quiet",
		"--op", "get", "--concurrency", "4", "--keys", "50", "--value-bytes", "16", "--duration", "1h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var res workload.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("output %q: %v", stdout, err)
	}
	if res.Op != workload.OpPut || !res.Prefill || res.Ops != 50 || res.Keys != 50 || len(res.Errors) != 0 || res.System != "rafty" {
		t.Errorf("result %+v", res)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.data) != 50 || len(f.data[workload.KeyName(49)]) != 16 {
		t.Errorf("the store holds %d keys after the preload", len(f.data))
	}

	// A failed write fails the preload (exit 1), after the result.
	f.failures = []error{status.Error(codes.Unavailable, "down")}
	f.mu.Unlock()
	code, stdout, stderr = runCLI(t, "bench", "--endpoints", ep, "--prefill-only", "--json", "--quiet", "--concurrency", "2", "--keys", "10")
	f.mu.Lock()
	if code != exitFailure || !strings.Contains(stderr, "unavailable 1") || !strings.Contains(stdout, `"unavailable":1`) {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}
