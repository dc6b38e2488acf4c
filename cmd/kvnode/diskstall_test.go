package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// TestDiskStallNotReadyAndShown: a member whose disk write is stalled
// (driver.Status.DiskStalled) fails /readyz, saying why, although it knows
// a leader and has applied everything; `kvnode status` shows the stall in
// the member's row.
func TestDiskStallNotReadyAndShown(t *testing.T) {
	st := driver.Status{Status: core.Status{Leader: 1, Commit: 5, Applied: 5}}
	if ok, why := readinessOf(&st); !ok {
		t.Fatalf("healthy member not ready: %s", why)
	}
	st.DiskStalled, st.DiskWriteBlocked = true, 6200*time.Millisecond
	ok, why := readinessOf(&st)
	if ok || !strings.Contains(why, "disk stalled") || !strings.Contains(why, "6.2s") {
		t.Fatalf("stalled member: ready=%v %q", ok, why)
	}

	var out bytes.Buffer
	rows := []statusRow{
		{endpoint: "a:1", resp: &kvpb.StatusResponse{MemberId: 1, Role: "leader", Leader: 1, DiskStalled: true, DiskWriteBlockedMs: 6200}},
		{endpoint: "b:1", resp: &kvpb.StatusResponse{MemberId: 2, Role: "follower", Leader: 1}},
	}
	if err := printStatus(&out, rows, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[1], "leader (disk stalled 6.2s)") || strings.Contains(lines[2], "stalled") {
		t.Fatalf("status table:\n%s", out.String())
	}
}
