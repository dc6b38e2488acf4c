package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/internal/proctest"
)

// End-to-end tests: a cluster of real kvnode processes on loopback, driven
// through the CLI binary and through gRPC.

// e2eTick and e2eElectionTicks are the cluster's Raft timing: the design
// defaults, so the timing assertions below mean what they say about a
// default deployment.
const (
	e2eTick          = 100 * time.Millisecond
	e2eElectionTicks = 5
	// maxElectionTimeout is the longest randomized election timeout:
	// timeouts are drawn from [E, 2E) ticks.
	maxElectionTimeout = 2 * e2eElectionTicks * e2eTick
)

// node is one kvnode process of a test cluster.
type node struct {
	id                         int
	peer, client, metrics, dir string
	log                        string
	mu                         sync.Mutex
	proc                       *proctest.Proc // the running (or last) process; nil before the first start
}

// e2eCluster is a running test cluster.
type e2eCluster struct {
	bin   string
	peers string
	nodes []*node // nodes[i] has ID i+1
}

// freePorts returns n distinct free loopback addresses.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := proctest.FreeAddrs("127.0.0.1", n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// startCluster starts size nodes and waits until every one is ready.
func startCluster(t *testing.T, size int) *e2eCluster {
	t.Helper()
	c := &e2eCluster{bin: kvnodeBinary(t)}
	ports := freePorts(t, 3*size)
	base := t.TempDir()
	var peers []string
	for i := range size {
		n := &node{
			id:      i + 1,
			peer:    ports[3*i],
			client:  ports[3*i+1],
			metrics: ports[3*i+2],
			dir:     filepath.Join(base, fmt.Sprintf("node%d", i+1)),
			log:     filepath.Join(base, fmt.Sprintf("node%d.log", i+1)),
		}
		c.nodes = append(c.nodes, n)
		peers = append(peers, fmt.Sprintf("%d=%s", n.id, n.peer))
	}
	c.peers = strings.Join(peers, ",")
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("---- log of node %d ----\n%s", n.id, proctest.TailFile(n.log, 40))
			}
		}
	})
	for _, n := range c.nodes {
		c.start(t, n)
	}
	for _, n := range c.nodes {
		c.waitReady(t, n, 20*time.Second)
	}
	return c
}

// start runs n's process (again, after a kill: same data directory).
func (c *e2eCluster) start(t *testing.T, n *node) {
	t.Helper()
	cmd := exec.Command(c.bin, "serve",
		"--id", strconv.Itoa(n.id),
		"--peers", c.peers,
		"--cluster-id", "e2e",
		"--data-dir", n.dir,
		"--peer-listen", n.peer,
		"--client-listen", n.client,
		"--metrics-listen", n.metrics,
		"--tick", e2eTick.String(),
		"--election-ticks", strconv.Itoa(e2eElectionTicks),
		"--log-level", "debug",
	)
	p, err := proctest.StartProc(cmd, n.log, "", nil)
	if err != nil {
		t.Fatalf("starting node %d: %v", n.id, err)
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
}

// process returns n's current process (nil before the first start).
func (n *node) process() *proctest.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// running reports whether n's process is alive.
func (n *node) running() bool { return n.process().Alive() }

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() { n.process().Kill() }

// signal sends sig to n's process.
func (n *node) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := n.process().Signal(sig); err != nil {
		t.Fatalf("signalling node %d: %v", n.id, err)
	}
}

// waitExit waits up to timeout for n's process to exit and returns its
// exit error (nil for status 0).
func (n *node) waitExit(t *testing.T, timeout time.Duration) error {
	t.Helper()
	p := n.process()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatalf("node %d still running %v after it was asked to stop", n.id, timeout)
	}
	return p.Err()
}

// waitFor polls cond every 50 ms until it holds, failing the test with
// what after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func (c *e2eCluster) waitReady(t *testing.T, n *node, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("node %d to be ready", n.id), func() bool {
		if !n.running() {
			t.Fatalf("node %d exited while starting", n.id)
		}
		return proctest.Readyz(n.metrics) == http.StatusOK
	})
}

// endpoints lists the client addresses of the given nodes (all if none).
func (c *e2eCluster) endpoints(ns ...*node) string {
	if len(ns) == 0 {
		ns = c.nodes
	}
	eps := make([]string, len(ns))
	for i, n := range ns {
		eps[i] = n.client
	}
	return strings.Join(eps, ",")
}

// cli runs the kvnode binary with args and returns its exit status and
// output.
func (c *e2eCluster) cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("running kvnode %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// mustCLI runs the CLI and fails the test unless it exits with code and
// prints want.
func (c *e2eCluster) mustCLI(t *testing.T, wantCode int, want string, args ...string) {
	t.Helper()
	code, stdout, stderr := c.cli(t, args...)
	if code != wantCode || stdout != want {
		t.Fatalf("kvnode %q: exit %d stdout %q stderr %q; want exit %d stdout %q", args, code, stdout, stderr, wantCode, want)
	}
}

// client returns an in-process gRPC client of the given nodes, closed when
// the test ends.
func (c *e2eCluster) client(t *testing.T, ns ...*node) *kvClient {
	t.Helper()
	if len(ns) == 0 {
		ns = c.nodes
	}
	eps := make([]string, len(ns))
	for i, n := range ns {
		eps[i] = n.client
	}
	cl, err := dialClient(eps, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// status asks one node for its status.
func (c *e2eCluster) status(n *node, hash bool) (*kvpb.StatusResponse, error) {
	cl, err := dialClient([]string{n.client}, time.Second)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.clients[0].Status(ctx, &kvpb.StatusRequest{Hash: hash})
}

// leader waits until the running nodes agree on a leader and returns it.
func (c *e2eCluster) leader(t *testing.T, timeout time.Duration) *node {
	t.Helper()
	var lead *node
	waitFor(t, timeout, "the running nodes to agree on a leader", func() bool {
		var id uint64
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			st, err := c.status(n, false)
			if err != nil || st.GetLeader() == 0 || (id != 0 && st.GetLeader() != id) {
				return false
			}
			id = st.GetLeader()
		}
		if id == 0 || !c.nodes[id-1].running() {
			return false
		}
		lead = c.nodes[id-1]
		return true
	})
	return lead
}

// put writes key=value through cl (retrying as the CLI does) within 5 s.
func put(cl *kvClient, key, value string) error {
	return putCtx(context.Background(), cl, key, value)
}

// putCtx is put bounded by ctx too.
func putCtx(ctx context.Context, cl *kvClient, key, value string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return cl.call(ctx, idempotentRetry, func(ctx context.Context, kv kvpb.KVClient) error {
		_, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte(value)})
		return err
	})
}

// get reads key linearizably through cl.
func get(cl *kvClient, key string) (string, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp *kvpb.GetResponse
	err := cl.call(ctx, readRetry, func(ctx context.Context, kv kvpb.KVClient) error {
		var err error
		resp, err = kv.Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
		return err
	})
	return string(resp.GetKv().GetValue()), resp.GetFound(), err
}

func (c *e2eCluster) followers(lead *node) []*node {
	var fs []*node
	for _, n := range c.nodes {
		if n != lead && n.running() {
			fs = append(fs, n)
		}
	}
	return fs
}

// TestEndToEnd runs one three-process cluster through the CLI and gRPC,
// a kill -9 of the leader and its restart, and a graceful stop of the
// leader under client load.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end cluster test in -short mode")
	}
	c := startCluster(t, 3)
	eps := "--endpoints=" + c.endpoints()

	t.Run("CLI", func(t *testing.T) {
		c.mustCLI(t, 0, "OK\n", "put", "greeting", "hello", eps)
		c.mustCLI(t, 0, "hello\n", "get", "greeting", eps)
		c.mustCLI(t, 0, "OK\n", "put", "user/1", "ann", eps)
		c.mustCLI(t, 0, "OK\n", "put", "user/2", "bob", eps)
		c.mustCLI(t, 0, "user/1\tann\nuser/2\tbob\n", "scan", "--prefix", "user/", eps)
		c.mustCLI(t, 0, "2\n", "scan", "--prefix", "user/", "--count", eps)
		c.mustCLI(t, 0, "SUCCEEDED\nOK\n", "txn", "--if", "value(greeting)=hello", "--then", "put greeting bye", "--else", "get greeting", eps)
		c.mustCLI(t, exitFalse, "FAILED\ngreeting\tbye\n", "txn", "--if", "value(greeting)=hello", "--then", "put greeting bye", "--else", "get greeting", eps)
		c.mustCLI(t, 0, "1\n", "del", "user/2", eps)
		code, _, stderr := c.cli(t, "get", "user/2", eps)
		if code != exitFalse || stderr != "kvnode: get: key \"user/2\" not found\n" {
			t.Fatalf("get of a deleted key: exit %d stderr %q", code, stderr)
		}
		code, stdout, stderr := c.cli(t, "status", eps)
		if code != 0 || strings.Count(stdout, " leader ") != 1 || strings.Count(stdout, " follower ") != 2 {
			t.Fatalf("status: exit %d stderr %q\n%s", code, stderr, stdout)
		}
	})

	t.Run("gRPC and writes through a follower", func(t *testing.T) {
		lead := c.leader(t, 5*time.Second)
		for _, f := range c.followers(lead) {
			key := fmt.Sprintf("via-follower-%d", f.id)
			if err := put(c.client(t, f), key, "v"); err != nil {
				t.Fatalf("put through follower %d: %v", f.id, err)
			}
			// Linearizable reads on every member see it at once.
			for _, n := range c.nodes {
				if v, ok, err := get(c.client(t, n), key); err != nil || !ok || v != "v" {
					t.Fatalf("get %s on node %d: %q %v %v", key, n.id, v, ok, err)
				}
			}
		}
	})

	t.Run("kill -9 of the leader", func(t *testing.T) {
		lead := c.leader(t, 5*time.Second)
		cl := c.client(t, c.followers(lead)...)
		killed := time.Now()
		lead.kill()
		if err := put(cl, "after-kill", "1"); err != nil {
			t.Fatalf("no write succeeded after the leader was killed: %v", err)
		}
		took := time.Since(killed)
		t.Logf("first write after kill -9 of leader %d took %v", lead.id, took)
		if took > 2*maxElectionTimeout {
			t.Errorf("writes resumed %v after the leader died, more than 2 election timeouts (%v)", took, 2*maxElectionTimeout)
		}
		newLead := c.leader(t, 5*time.Second)
		if newLead == lead {
			t.Fatalf("node %d is still the leader after being killed", lead.id)
		}
		for i := range 20 {
			if err := put(cl, fmt.Sprintf("while-down/%02d", i), strconv.Itoa(i)); err != nil {
				t.Fatalf("write %d with node %d down: %v", i, lead.id, err)
			}
		}

		// Restarted, the node recovers its log and catches up.
		c.start(t, lead)
		c.waitReady(t, lead, 20*time.Second)
		waitFor(t, 20*time.Second, fmt.Sprintf("node %d to hold the same data as the others", lead.id), func() bool {
			var hash, index uint64
			for i, n := range c.nodes {
				st, err := c.status(n, true)
				if err != nil {
					return false
				}
				if i > 0 && (st.GetHash() != hash || st.GetHashIndex() != index) {
					return false
				}
				hash, index = st.GetHash(), st.GetHashIndex()
			}
			return true
		})
		code, stdout, stderr := c.cli(t, "get", "while-down/19", "--serializable", "--endpoints", lead.client)
		if code != 0 || stdout != "19\n" {
			t.Fatalf("serializable get on the restarted node: exit %d stdout %q stderr %q", code, stdout, stderr)
		}
	})

	t.Run("SIGTERM of the leader under load", func(t *testing.T) {
		lead := c.leader(t, 5*time.Second)
		cl := c.client(t)

		// A client writes distinct keys in a loop, bounded in count and
		// time, and records every failure.
		const maxWrites = 5000
		var (
			mu       sync.Mutex
			written  []string
			failures []error
		)
		loopCtx, stopLoop := context.WithCancel(context.Background())
		loopDone := make(chan struct{})
		// However the test ends, the loop ends with it.
		defer func() {
			stopLoop()
			<-loopDone
		}()
		go func() {
			defer close(loopDone)
			deadline := time.Now().Add(30 * time.Second)
			for i := 0; i < maxWrites && time.Now().Before(deadline) && loopCtx.Err() == nil; i++ {
				key := fmt.Sprintf("load/%05d", i)
				err := putCtx(loopCtx, cl, key, strconv.Itoa(i))
				if loopCtx.Err() != nil {
					return // stopped: the last write's fate is not the server's doing
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Errorf("%s: %w", key, err))
				} else {
					written = append(written, key)
				}
				mu.Unlock()
			}
		}()
		count := func() int {
			mu.Lock()
			defer mu.Unlock()
			return len(written)
		}
		waitFor(t, 10*time.Second, "20 writes before the SIGTERM", func() bool { return count() >= 20 })

		termAt := time.Now()
		lead.signal(t, syscall.SIGTERM)
		if err := lead.waitExit(t, 10*time.Second); err != nil {
			t.Errorf("node %d exited with %v after SIGTERM, want status 0", lead.id, err)
		}
		t.Logf("leader %d stopped %v after SIGTERM", lead.id, time.Since(termAt))
		before := count()
		waitFor(t, 10*time.Second, "20 more writes after the leader stopped", func() bool { return count() >= before+20 })
		stopLoop()
		<-loopDone

		mu.Lock()
		defer mu.Unlock()
		if len(failures) > 0 {
			t.Fatalf("%d of %d client writes failed across the graceful stop; first: %v",
				len(failures), len(failures)+len(written), failures[0])
		}
		logs, _ := os.ReadFile(lead.log)
		if !bytes.Contains(logs, []byte("leadership transferred")) {
			t.Errorf("node %d's log does not show a leadership transfer", lead.id)
		}
		newLead := c.leader(t, 5*time.Second)
		if newLead == lead {
			t.Fatalf("stopped node %d is still the leader", lead.id)
		}
		// Every acknowledged write is there.
		survivors := c.client(t, c.followers(lead)...)
		for _, key := range written {
			if _, ok, err := get(survivors, key); err != nil || !ok {
				t.Fatalf("acknowledged write %s is missing: found=%v err=%v", key, ok, err)
			}
		}
		t.Logf("%d writes, none failed, across the graceful stop of the leader", len(written))
	})
}
