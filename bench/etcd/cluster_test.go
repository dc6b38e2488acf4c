package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rafty-db/rafty/bench/workload"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// asMainEnv makes the test binary behave as etcdbench itself, so the
// smoke test runs the real `cluster` command as a process, which starts
// its members as processes of the etcd-member binary (built by the test
// from member/, as compare.sh builds it).
const asMainEnv = "ETCDBENCH_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// syncBuffer collects a child's stderr for the test log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// buildMember builds the etcd member binary from its own module (member/)
// into a temporary directory and returns its path.
func buildMember(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), memberBinName)
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = "member"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the member: %v\n%s", err, out)
	}
	return bin
}

// TestClusterSmoke starts a real 3-member cluster (`etcdbench cluster`, 4
// processes), drives a short mixed workload through the load code, checks
// the result and the data, stops the cluster with SIGTERM, and checks that
// every process is gone and the data directory removed. About 10-20 s.
func TestClusterSmoke(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	memberBin := buildMember(t)
	parent := t.TempDir()
	cmd := exec.Command(exe, "cluster", "--data-dir", parent, "--member-bin", memberBin)
	cmd.Env = append(os.Environ(), asMainEnv+"=1")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	var info clusterInfo
	t.Cleanup(func() {
		// On any failure: no process may outlive the test.
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-waited:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
			}
		}
		for _, pid := range info.Pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("cluster stderr:\n%s", stderr.String())
		}
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
		waited <- cmd.Wait()
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("cluster exited without printing its endpoints")
		}
		if err := json.Unmarshal([]byte(line), &info); err != nil {
			t.Fatalf("cluster printed %q: %v", line, err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("cluster not healthy within 90 s")
	}
	if info.System != "etcd" || info.Version == "" || len(info.Endpoints) != 3 || len(info.Pids) != 3 || info.Leader == "" {
		t.Fatalf("cluster info %+v", info)
	}
	if filepath.Dir(info.DataDir) != parent {
		t.Fatalf("data dir %s not under %s", info.DataDir, parent)
	}
	for _, pid := range info.Pids {
		if !alive(pid) {
			t.Fatalf("member pid %d not running", pid)
		}
	}

	// 100 keys written by the prefill, then a 1-second mixed run with
	// every kind, all to the leader.
	spec := workload.DefaultSpec()
	spec.Op = workload.OpMixed
	spec.Mix = map[string]int{workload.OpPut: 40, workload.OpGet: 30, workload.OpSGet: 20, workload.OpTxn: 10}
	spec.Concurrency = 4
	spec.Conns = 2
	spec.Keys = 100
	spec.Prefill = true
	spec.Warmup = 200 * time.Millisecond
	spec.Duration = time.Second
	var progress syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := runLoad(ctx, loadConfig{
		spec: spec, endpoints: info.Endpoints, leaderOnly: true, pids: info.Pids,
		opTimeout: 5 * time.Second, dialTimeout: 5 * time.Second, progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("smoke result: %d ops, %.0f ops/s, p50 %v, p99 %v, server CPU %.2f s, errors %v",
		res.Ops, res.OpsPerSec, res.P50, res.P99, res.CPUSeconds, res.Errors)
	if res.System != "etcd" || !strings.HasPrefix(res.Version, "etcd 3.") || !res.LeaderOnly {
		t.Errorf("system %q version %q leader-only %v", res.System, res.Version, res.LeaderOnly)
	}
	if res.Ops < 20 || res.Seconds != 1 || res.Interrupted {
		t.Errorf("ops %d in %v s (interrupted %v)", res.Ops, res.Seconds, res.Interrupted)
	}
	if len(res.Errors) != 0 || len(res.Warnings) != 0 {
		t.Errorf("errors %v warnings %v", res.Errors, res.Warnings)
	}
	for _, k := range workload.Kinds {
		if res.OpsByKind[k] == 0 {
			t.Errorf("no %s operations: %v", k, res.OpsByKind)
		}
	}
	if res.P50 <= 0 || res.P99 < res.P50 || len(res.CPUPids) != 3 || res.CPUSeconds <= 0 {
		t.Errorf("p50 %v p99 %v cpu %v s over %v", res.P50, res.P99, res.CPUSeconds, res.CPUPids)
	}
	if !strings.Contains(progress.String(), "etcd mixed c=4 prefill done: 100 keys written") {
		t.Errorf("progress:\n%s", progress.String())
	}

	// The prefill wrote every key, with 256-byte values, on every member
	// (a follower may lag by a few entries: allow it a moment).
	for _, ep := range info.Endpoints {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		var resp *clientv3.GetResponse
		for try := 0; try < 20; try++ {
			resp, err = cli.Get(ctx, "key-", clientv3.WithPrefix(), clientv3.WithSerializable())
			if err != nil || len(resp.Kvs) == 100 {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		cli.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 100 {
			t.Fatalf("%s holds %d keys, want 100", ep, len(resp.Kvs))
		}
		for _, kv := range resp.Kvs {
			if len(kv.Value) != 256 {
				t.Fatalf("%s: %s has %d bytes", ep, kv.Key, len(kv.Value))
			}
		}
	}

	// The table renders the result.
	file := filepath.Join(t.TempDir(), "etcd.json")
	b, _ := json.Marshal(res)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"table", file}, &out, &errOut); code != 0 {
		t.Fatalf("table: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "| mixed 256 B, C=4, 2 conns | – |") || !strings.Contains(out.String(), "etcd 3.") {
		t.Errorf("table:\n%s", out.String())
	}

	// SIGTERM stops everything and removes the data.
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("cluster exited with %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("cluster did not stop within 40 s of SIGTERM")
	}
	t.Logf("cluster stopped in %v", time.Since(start).Round(time.Millisecond))
	for _, pid := range info.Pids {
		if alive(pid) {
			t.Errorf("member pid %d still running", pid)
		}
	}
	if _, err := os.Stat(info.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data dir %s left behind (%v)", info.DataDir, err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("left in %s: %v", parent, ents)
	}
}

func TestClassifyEtcd(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("wrapped: %w", context.Canceled), "canceled"},
		{rpctypes.ErrNoLeader, "no_leader"},
		{rpctypes.ErrTooManyRequests, "too_many_requests"},
		{status.Error(codes.Unavailable, "connection refused"), "unavailable"},
		{status.Error(codes.ResourceExhausted, "x"), "resource_exhausted"},
		{errors.New("strange"), "other"},
	} {
		if got := classifyEtcd(tc.err); got != tc.want {
			t.Errorf("classifyEtcd(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"ports", "5"}, &out, &errOut); code != 0 || len(strings.Fields(out.String())) != 5 {
		t.Errorf("ports 5: exit %d, out %q, err %q", code, out.String(), errOut.String())
	}
	if code := run(ctx, []string{"cluster", "--member-bin", "/nonexistent/etcd-member"}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "etcd member binary") {
		t.Errorf("cluster without a member binary: exit %d, stderr %q", code, errOut.String())
	}
	for _, args := range [][]string{
		{},
		{"nope"},
		{"ports"},
		{"load", "--op", "scan"},
		{"load", "--conns", "0"},
		{"load", "--pids", "x"},
		{"member", "--name", "m1"}, // the member is its own binary now
		{"cluster", "--members", "0"},
		{"table"},
	} {
		out.Reset()
		errOut.Reset()
		if code := run(ctx, args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
}
