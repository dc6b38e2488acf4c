package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTableAndChartByKeyspace: results of two keyspaces give one table
// each, the larger first, under the header (with its notes); the chart of
// the results draws the larger keyspace unless --keys names another.
func TestTableAndChartByKeyspace(t *testing.T) {
	dir := t.TempDir()
	res := `{"system":"rafty","version":"rafty (devel) go1.26.8","op":"put","concurrency":16,"conns":1,"value_bytes":256,"keys":100000,"ops":30000,"seconds":10,"ops_per_sec":3000,"p50_ms":4,"p99_ms":15,"p999_ms":21,"errors":{}}
{"system":"etcd","op":"put","concurrency":16,"conns":1,"value_bytes":256,"keys":100000,"ops":20000,"seconds":10,"ops_per_sec":2000,"p50_ms":7,"p99_ms":19,"p999_ms":30,"errors":{}}
{"system":"rafty","version":"rafty (devel) go1.26.8","op":"put","concurrency":16,"conns":1,"value_bytes":256,"keys":10000,"ops":40000,"seconds":10,"ops_per_sec":4000,"p50_ms":3,"p99_ms":9,"p999_ms":12,"errors":{}}
{"system":"etcd","op":"put","concurrency":16,"conns":1,"value_bytes":256,"keys":10000,"ops":25000,"seconds":10,"ops_per_sec":2500,"p50_ms":6,"p99_ms":18,"p999_ms":25,"errors":{}}`
	if err := os.WriteFile(filepath.Join(dir, "r.json"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	ctx := context.Background()
	if code := run(ctx, []string{"table", "--note", "Preloaded.", "--note", "Built so.", "--rafty-version", "git abc123", dir}, &stdout, &stderr); code != 0 {
		t.Fatalf("table: exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	big, small := strings.Index(out, "Keyspace 100,000 keys:"), strings.Index(out, "Keyspace 10,000 keys:")
	if big < 0 || small < big || !strings.Contains(out, "keyspace 100,000/10,000 keys") || !strings.Contains(out, " Preloaded. Built so.\n") ||
		!strings.Contains(out, "up to 1 round(s)") || !strings.Contains(out, "Rafty rafty (devel) go1.26.8 (git abc123);") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{
		"| put 256 B, C=16 | 3,000 | 2,000 | 1.50× | 4.00 | 7.00 | 0.57× | 15.0 | 19.0 | 0.79× | 21.0 | 30.0 | 0.70× |",
		"| put 256 B, C=16 | 4,000 | 2,500 | 1.60× | 3.00 | 6.00 | 0.50× | 9.00 | 18.0 | 0.50× | 12.0 | 25.0 | 0.48× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %s:\n%s", want, out)
		}
	}
	// The first table is the larger keyspace's: the one a chart --table reads.
	rows, err := parseComparisonTable(strings.NewReader(out))
	if err != nil || len(rows) != 1 || rows[0].Rafty.OpsPerSec != 3000 || rows[0].Rafty.P999 != 21 {
		t.Fatalf("first table: %+v, %v", rows, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chart", dir}, "Rafty C=16: 3,000 ops/s, p50 4 ms, p99 15 ms, p99.9 21 ms"},
		{[]string{"chart", "--keys", "10000", dir}, "Rafty C=16: 4,000 ops/s, p50 3 ms, p99 9 ms, p99.9 12 ms"},
	} {
		stdout.Reset()
		if code := run(ctx, tc.args, &stdout, &stderr); code != 0 {
			t.Fatalf("%q: exit %d: %s", tc.args, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("%q: no point %q", tc.args, tc.want)
		}
	}
	if code := run(ctx, []string{"chart", "--keys", "5", dir}, &stdout, &stderr); code != 1 {
		t.Errorf("chart of a keyspace with no results: exit %d, want 1", code)
	}
}
