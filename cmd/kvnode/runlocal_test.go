package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rafty-db/rafty/internal/proctest"
)

// Tests of scripts/run-local.sh (`make run`), run for real: three kvnode
// processes on loopback ports of the test's own, data in a temporary
// directory, everything started killed at the end.

// runLocal is one run of the script.
type runLocal struct {
	script, bin, data string
	env               []string
	clients, metrics  []string // node i+1's client and metrics addresses
	cmd               *exec.Cmd
	out               lockedBuffer // the script's standard output and error
	done              chan struct{}
	err               error // the script's exit error, set before done is closed

	mu   sync.Mutex
	pids map[int]bool // every node process ID seen
}

// lockedBuffer is a bytes.Buffer safe for the exec package's copying
// goroutine and the test's reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// repoRoot is the repository's root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// newRunLocal prepares a run of the script with free ports and a
// temporary data directory; start starts it.
func newRunLocal(t *testing.T) *runLocal {
	t.Helper()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("skipping: no bash on PATH to run scripts/run-local.sh")
	}
	r := &runLocal{
		script: filepath.Join(repoRoot(t), "scripts", "run-local.sh"),
		bin:    kvnodeBinary(t),
		data:   t.TempDir(),
		done:   make(chan struct{}),
		pids:   map[int]bool{},
	}
	addrs := freePorts(t, 9)
	port := func(a string) string { return a[strings.LastIndexByte(a, ':')+1:] }
	var peers, clients, metrics []string
	for i := range 3 {
		peers = append(peers, port(addrs[3*i]))
		clients = append(clients, port(addrs[3*i+1]))
		metrics = append(metrics, port(addrs[3*i+2]))
		r.clients = append(r.clients, addrs[3*i+1])
		r.metrics = append(r.metrics, addrs[3*i+2])
	}
	r.env = append(os.Environ(),
		"KVNODE_BIN="+r.bin, "DATA_DIR="+r.data,
		"PEER_PORTS="+strings.Join(peers, ","),
		"CLIENT_PORTS="+strings.Join(clients, ","),
		"METRICS_PORTS="+strings.Join(metrics, ","))
	return r
}

// start starts the script. When the test ends, the script's process
// group and every node it started are killed if still running.
func (r *runLocal) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(r.script)
	r.cmd.Env = r.env
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	// Its own process group, so that the clean-up also reaches the
	// script's sleep and health-probe children.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", r.script, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		if r.running() {
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-r.done
		r.notePids()
		r.mu.Lock()
		defer r.mu.Unlock()
		for pid := range r.pids {
			// Only a kvnode of this test's: the ID may have been reused.
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == r.bin {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("---- run-local.sh output ----\n%s", r.out.String())
			for i := 1; i <= 3; i++ {
				t.Logf("---- node %d log ----\n%s", i, proctest.TailFile(r.log(i), 20))
			}
		}
	})
}

func (r *runLocal) running() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *runLocal) log(i int) string { return filepath.Join(r.data, fmt.Sprintf("node%d.log", i)) }

// pid returns node i's process ID from its pid file (0 if there is none).
func (r *runLocal) pid(i int) int {
	b, err := os.ReadFile(filepath.Join(r.data, fmt.Sprintf("node%d.pid", i)))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	r.mu.Lock()
	r.pids[pid] = true
	r.mu.Unlock()
	return pid
}

// notePids records the current node process IDs for the clean-up.
func (r *runLocal) notePids() {
	for i := 1; i <= 3; i++ {
		r.pid(i)
	}
}

// alive reports whether process pid exists (and is not a zombie).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: kill -0 is all there is
	}
	// The state follows the parenthesised command name.
	s := string(b)
	return !strings.HasPrefix(strings.TrimSpace(s[strings.LastIndexByte(s, ')')+1:]), "Z")
}

// waitOutput waits until the script's output matches re, and returns the
// first match's submatches.
func (r *runLocal) waitOutput(t *testing.T, timeout time.Duration, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	waitFor(t, timeout, fmt.Sprintf("run-local.sh to print %q", re), func() bool {
		m = re.FindStringSubmatch(r.out.String())
		return m != nil
	})
	return m
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for the script to
// exit; it returns the exit error.
func (r *runLocal) interrupt(t *testing.T, timeout time.Duration) error {
	t.Helper()
	r.notePids()
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
	case <-time.After(timeout):
		t.Fatalf("run-local.sh still running %v after SIGINT", timeout)
	}
	return r.err
}

// `make run` survives a dead node: kill -9 of the leader leaves the other
// two serving, the console says how to restart it, the printed restart
// command brings it back, and Ctrl-C then stops every node cleanly, with
// no warning about a leadership transfer nobody could take.
func TestRunLocalSurvivesKilledNode(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts a three-process cluster; skipped with -short")
	}
	r := newRunLocal(t)
	r.start(t)
	r.waitOutput(t, 30*time.Second, regexp.MustCompile(`Rafty is running: 3 of three nodes`))

	c := &e2eCluster{bin: r.bin}
	for i := range 3 {
		c.nodes = append(c.nodes, &node{id: i + 1, client: r.clients[i], metrics: r.metrics[i]})
	}
	// The real binary, pointed at a node's metrics port by mistake, is
	// told where the client port is.
	code, stdout, stderr := c.cli(t, "get", "k", "--endpoints", r.metrics[0])
	wantOneLineError(t, []string{"get", "k"}, code, stdout, stderr, exitFailure,
		"unimplemented: this is kvnode's metrics port (HTTP: /metrics, /healthz, /readyz); send gRPC requests to its client port, --client-listen "+r.clients[0])

	var lead *node
	waitFor(t, 10*time.Second, "a leader", func() bool {
		st, err := c.status(c.nodes[0], false)
		if err != nil || st.GetLeader() == 0 {
			return false
		}
		lead = c.nodes[st.GetLeader()-1]
		return true
	})
	leadPid := r.pid(lead.id)
	if err := syscall.Kill(leadPid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of node %d (pid %d): %v", lead.id, leadPid, err)
	}
	m := r.waitOutput(t, 10*time.Second, regexp.MustCompile(
		fmt.Sprintf(`node %d exited \(killed by SIGKILL\):\n(?:.*\n)*?  nodes? [0-9 ]+ keeps? running\n  restart it with: (.+)\n`, lead.id)))
	// As a user would paste it into a shell.
	restart := []string{"bash", "-c", m[1]}

	// The others keep running and serving.
	var others []*node
	for _, n := range c.nodes {
		if n != lead {
			others = append(others, n)
			if !alive(r.pid(n.id)) {
				t.Fatalf("node %d stopped after node %d was killed", n.id, lead.id)
			}
		}
	}
	if err := put(c.client(t, others...), "after-kill", "1"); err != nil {
		t.Fatalf("the surviving nodes do not take writes: %v", err)
	}
	if !r.running() {
		t.Fatalf("run-local.sh exited after node %d was killed: %v", lead.id, r.err)
	}

	// The printed restart command brings the node back. It names the
	// data directory (not the default one here): only the environment
	// the shell needs is passed on.
	if !strings.HasPrefix(m[1], "DATA_DIR="+r.data+" ") {
		t.Errorf("restart command %q does not name the data directory %s", m[1], r.data)
	}
	cmd := exec.Command(restart[0], restart[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), fmt.Sprintf("restarted node %d (pid ", lead.id)) {
		t.Fatalf("%q: %v\n%s", restart, err, out)
	}
	r.waitOutput(t, 20*time.Second, regexp.MustCompile(fmt.Sprintf(`node %d is ready`, lead.id)))
	if pid := r.pid(lead.id); pid == leadPid || !alive(pid) {
		t.Fatalf("node %d: pid %d after the restart (was %d)", lead.id, pid, leadPid)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("node %d to serve the write made while it was down", lead.id), func() bool {
		code, stdout, _ := c.cli(t, "get", "after-kill", "--serializable", "--endpoints", lead.client)
		return code == 0 && stdout == "1\n"
	})
	// A second request for a running node is refused.
	cmd = exec.Command(restart[0], restart[1:]...)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "is running") {
		t.Errorf("restart of a running node: %v %q", err, out)
	}

	// Ctrl-C stops everything gracefully.
	start := time.Now()
	if err := r.interrupt(t, 20*time.Second); err != nil {
		t.Fatalf("run-local.sh exited with %v after Ctrl-C", err)
	}
	t.Logf("stopped %v after Ctrl-C", time.Since(start).Round(time.Millisecond))
	if out := r.out.String(); !strings.HasSuffix(out, "stopped\n") {
		t.Errorf("output does not end with \"stopped\":\n%s", proctest.Tail(out, 5))
	}
	r.mu.Lock()
	for pid := range r.pids {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == r.bin && alive(pid) {
			t.Errorf("node process %d still running after the script stopped", pid)
		}
	}
	r.mu.Unlock()
	for i := 1; i <= 3; i++ {
		if b, _ := os.ReadFile(r.log(i)); bytes.Contains(b, []byte("leadership transfer did not complete")) {
			t.Errorf("node %d warns of a failed leadership transfer in a whole-cluster stop", i)
		}
	}
}

// again prepares another run of the script on r's data and ports.
func (r *runLocal) again() *runLocal {
	return &runLocal{script: r.script, bin: r.bin, data: r.data, env: r.env, clients: r.clients, metrics: r.metrics,
		done: make(chan struct{}), pids: map[int]bool{}}
}

// A node that cannot start (its client port is taken) is reported on the
// console with its error at once, and the others keep running. The
// cluster was created by an earlier run: a brand-new cluster bootstraps
// only once every initial member has answered (docs/operations.md), so
// two of three fresh nodes would wait for the third instead.
func TestRunLocalReportsStartupFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts a three-process cluster; skipped with -short")
	}
	first := newRunLocal(t)
	first.start(t)
	first.waitOutput(t, 30*time.Second, regexp.MustCompile(`Rafty is running: 3 of three nodes`))
	if err := first.interrupt(t, 20*time.Second); err != nil {
		t.Fatalf("run-local.sh exited with %v after Ctrl-C", err)
	}
	r := first.again()
	busy, err := net.Listen("tcp", r.clients[1])
	if err != nil {
		t.Fatalf("occupying node 2's client port: %v", err)
	}
	defer busy.Close()
	start := time.Now()
	r.start(t)
	r.waitOutput(t, 10*time.Second, regexp.MustCompile(
		`node 2 exited while starting \(exit status 1\):\n  kvnode: --client-listen `+regexp.QuoteMeta(r.clients[1])+`: bind: address already in use\n`))
	took := time.Since(start)
	t.Logf("reported %v after the start", took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the startup failure took %v to reach the console", took)
	}
	for _, i := range []int{1, 3} {
		if !alive(r.pid(i)) {
			t.Errorf("node %d is not running", i)
		}
	}
	// The console still gives the endpoints, once the two are ready.
	r.waitOutput(t, 30*time.Second, regexp.MustCompile(`Rafty is running: 2 of three nodes`))
	if proctest.Readyz(r.metrics[0]) != http.StatusOK || proctest.Readyz(r.metrics[2]) != http.StatusOK {
		t.Errorf("nodes 1 and 3 announced but not ready")
	}
	if err := r.interrupt(t, 20*time.Second); err != nil {
		t.Fatalf("run-local.sh exited with %v after Ctrl-C", err)
	}
	if out := r.out.String(); strings.Contains(out, "not ready after") {
		t.Errorf("the console waited for readiness instead of reporting the failure:\n%s", out)
	}
}
