package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rafty-db/rafty/internal/proctest"
)

// Membership end to end: real kvnode processes laid out like StatefulSet
// pods on loopback. Pod rafty-<i> has its own address 127.0.0.<i+1> (all
// of 127/8 is loopback on Linux) and every pod uses the same peer, client
// and metrics ports, as pods do, so --peer-template works unchanged:
// 127.0.0.{id}:PORT.

// podCluster is a set of pod-like kvnode processes.
type podCluster struct {
	bin                      string
	peerPort, cliPort, mPort string
	base                     string
	clusterID                string
	size                     int // --cluster-size (initial members)
	pods                     map[int]*node
}

func newPodCluster(t *testing.T, size int) *podCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping the membership process test in -short mode")
	}
	ports := freePorts(t, 3)
	c := &podCluster{bin: kvnodeBinary(t), base: t.TempDir(), clusterID: "e2e-members", size: size, pods: map[int]*node{}}
	c.peerPort, c.cliPort, c.mPort = portOf(ports[0]), portOf(ports[1]), portOf(ports[2])
	// Every pod address must be free at these ports too.
	for i := range 8 {
		for _, p := range []string{c.peerPort, c.cliPort, c.mPort} {
			l, err := net.Listen("tcp", c.addr(i, p))
			if err != nil {
				t.Skipf("loopback address %s not usable: %v", c.addr(i, p), err)
			}
			l.Close()
		}
	}
	t.Cleanup(func() {
		for _, n := range c.pods {
			if n.process() != nil {
				n.kill()
			}
		}
		if t.Failed() {
			for i, n := range c.pods {
				t.Logf("---- log of rafty-%d ----\n%s", i, proctest.TailFile(n.log, 60))
			}
		}
	})
	return c
}

// addr is pod ordinal's address at port.
func (c *podCluster) addr(ord int, port string) string {
	return net.JoinHostPort("127.0.0."+strconv.Itoa(ord+1), port)
}

// pod returns (creating) the node of ordinal ord.
func (c *podCluster) pod(ord int) *node {
	if n, ok := c.pods[ord]; ok {
		return n
	}
	n := &node{
		id: ord + 1, peer: c.addr(ord, c.peerPort), client: c.addr(ord, c.cliPort), metrics: c.addr(ord, c.mPort),
		dir: filepath.Join(c.base, fmt.Sprintf("rafty-%d", ord)),
		log: filepath.Join(c.base, fmt.Sprintf("rafty-%d.log", ord)),
	}
	c.pods[ord] = n
	return n
}

// podArgs are pod ord's serve flags in the StatefulSet form, then extra.
func (c *podCluster) podArgs(ord int, extra ...string) []string {
	n := c.pod(ord)
	return append([]string{"serve",
		"--hostname", fmt.Sprintf("rafty-%d", ord),
		"--peer-template", "127.0.0.{id}:" + c.peerPort,
		"--cluster-size", strconv.Itoa(c.size),
		"--cluster-id", c.clusterID,
		"--data-dir", n.dir,
		"--client-listen", n.client,
		"--metrics-listen", n.metrics,
		"--tick", e2eTick.String(),
		"--election-ticks", strconv.Itoa(e2eElectionTicks),
		"--log-level", "debug",
	}, extra...)
}

// run starts pod ord's process with args (its log appended to).
func (c *podCluster) run(t *testing.T, ord int, args []string) *node {
	t.Helper()
	n := c.pod(ord)
	p, err := proctest.StartProc(exec.Command(c.bin, args...), n.log, "", nil)
	if err != nil {
		t.Fatalf("starting rafty-%d: %v", ord, err)
	}
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return n
}

func (c *podCluster) waitReady(t *testing.T, ord int, timeout time.Duration) {
	t.Helper()
	n := c.pod(ord)
	waitFor(t, timeout, fmt.Sprintf("rafty-%d to be ready", ord), func() bool {
		if !n.running() {
			t.Fatalf("rafty-%d exited while starting:\n%s", ord, proctest.TailFile(n.log, 30))
		}
		return proctest.Readyz(n.metrics) == http.StatusOK
	})
}

// endpoints lists the client addresses of the running pods.
func (c *podCluster) endpoints() string {
	var eps []string
	for i := range 16 {
		if n, ok := c.pods[i]; ok && n.process() != nil && n.running() {
			eps = append(eps, n.client)
		}
	}
	return strings.Join(eps, ",")
}

// cli runs the kvnode CLI.
func (c *podCluster) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return (&e2eCluster{bin: c.bin}).cli(t, args...)
}

// mustCLI runs the CLI and fails unless it exits 0; returns stdout.
func (c *podCluster) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := c.cli(t, args...)
	if code != 0 {
		t.Fatalf("kvnode %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// memberRows runs member list and returns its rows (ID -> row fields).
func (c *podCluster) memberRows(t *testing.T) map[string][]string {
	t.Helper()
	out := c.mustCLI(t, "member", "list", "--endpoints", c.endpoints())
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if line == "" {
			break
		}
		f := strings.Fields(line)
		rows[f[0]] = f
	}
	return rows
}

// voters counts the voter rows of a member list.
func voters(rows map[string][]string) int {
	n := 0
	for _, f := range rows {
		if f[4] == "voter" {
			n++
		}
	}
	return n
}

func (c *podCluster) put(t *testing.T, key, value string) {
	t.Helper()
	if out := c.mustCLI(t, "put", key, value, "--endpoints", c.endpoints(), "--timeout", "10s"); out != "OK\n" {
		t.Fatalf("put %s: %q", key, out)
	}
}

func (c *podCluster) get(t *testing.T, key string) string {
	t.Helper()
	return strings.TrimSuffix(c.mustCLI(t, "get", key, "--endpoints", c.endpoints(), "--timeout", "10s"), "\n")
}

func (c *podCluster) leaderOrdinal(t *testing.T) int {
	t.Helper()
	var lead int
	waitFor(t, 20*time.Second, "a leader in member list", func() bool {
		code, out, _ := c.cli(t, "member", "list", "--endpoints", c.endpoints())
		if code != 0 || strings.Contains(out, "a follower") {
			return false
		}
		for _, line := range strings.Split(out, "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 5 && f[5] == "*" {
				for ord, n := range c.pods {
					if n.peer == f[2] {
						lead = ord
						return true
					}
				}
			}
		}
		return false
	})
	return lead
}

// TestMembershipProcesses: three StatefulSet-like pods; an operator's
// `member add` and a fourth process started with --join; a fifth pod
// scaled up by ordinal alone; both promoted automatically; the leader
// removed with `member remove` while writes continue; a pod restarted
// with another --cluster-size keeps the persisted membership; a data
// directory of another cluster refuses to start.
func TestMembershipProcesses(t *testing.T) {
	c := newPodCluster(t, 3)
	for i := range 3 {
		c.run(t, i, c.podArgs(i))
	}
	for i := range 3 {
		c.waitReady(t, i, 30*time.Second)
	}
	c.put(t, "before", "1")

	// An operator adds rafty-3; the node started with --join takes that
	// member (same name and peer address) and is promoted.
	out := c.mustCLI(t, "member", "add", "rafty-3", "--peer-addr", c.addr(3, c.peerPort), "--client-addr", c.addr(3, c.cliPort),
		"--endpoints", c.endpoints())
	if !strings.HasPrefix(out, "added member 4 (rafty-3") {
		t.Fatalf("member add: %q", out)
	}
	n3 := c.pod(3)
	c.run(t, 3, []string{"serve",
		"--join", c.addr(0, c.peerPort) + "," + c.addr(1, c.peerPort),
		"--name", "rafty-3", "--peer-listen", n3.peer,
		"--cluster-id", c.clusterID, "--data-dir", n3.dir,
		"--client-listen", n3.client, "--metrics-listen", n3.metrics,
		"--tick", e2eTick.String(), "--election-ticks", strconv.Itoa(e2eElectionTicks), "--log-level", "debug"})
	c.waitReady(t, 3, 30*time.Second)
	// rafty-4: a scale-up by ordinal alone (no member add, no --join).
	c.run(t, 4, c.podArgs(4))
	c.waitReady(t, 4, 30*time.Second)
	waitFor(t, 30*time.Second, "5 voters", func() bool { return voters(c.memberRows(t)) == 5 })
	rows := c.memberRows(t)
	if rows["4"][1] != "rafty-3" || rows["5"][1] != "rafty-4" {
		t.Fatalf("members %v", rows)
	}
	if got := c.get(t, "before"); got != "1" {
		t.Fatalf("get before = %q", got)
	}

	// Remove the leader while a writer writes.
	lead := c.leaderOrdinal(t)
	leadID := ""
	for id, f := range c.memberRows(t) {
		if f[1] == fmt.Sprintf("rafty-%d", lead) {
			leadID = id
		}
	}
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		cl, err := dialClient(strings.Split(c.endpoints(), ","), time.Second)
		if err != nil {
			writerDone <- err
			return
		}
		defer cl.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if err := put(cl, "w"+strconv.Itoa(i), "v"); err != nil {
				writerDone <- fmt.Errorf("write %d during the removal: %v", i, err)
				return
			}
		}
	}()
	out = c.mustCLI(t, "member", "remove", fmt.Sprintf("rafty-%d", lead), "--endpoints", c.endpoints())
	if !strings.HasPrefix(out, "removed member") {
		t.Fatalf("member remove: %q", out)
	}
	// It learns it was removed (from the committed change, or from the
	// members refusing its traffic), records it, and reports not ready.
	waitFor(t, 20*time.Second, "the removed leader to report that it was removed", func() bool {
		code, body := readyzBody(c.pod(lead).metrics)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "removed from the cluster")
	})
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	c.pod(lead).signal(t, syscall.SIGTERM)
	_ = c.pod(lead).waitExit(t, 20*time.Second)
	removed := c.pods[lead]
	delete(c.pods, lead)
	c.put(t, "after", "2")
	rows = c.memberRows(t)
	if voters(rows) != 4 || rows[leadID] != nil {
		t.Fatalf("after removing rafty-%d: %v", lead, rows)
	}

	// A restart with another --cluster-size: one line, and the
	// persisted membership stays.
	ord := 0
	if lead == 0 {
		ord = 1
	}
	p := c.pod(ord)
	p.signal(t, syscall.SIGTERM)
	if err := p.waitExit(t, 20*time.Second); err != nil {
		t.Fatalf("rafty-%d stop: %v", ord, err)
	}
	args := c.podArgs(ord)
	for i, a := range args {
		if a == "--cluster-size" {
			args[i+1] = "5"
		}
	}
	c.run(t, ord, args)
	c.waitReady(t, ord, 30*time.Second)
	logText, _ := os.ReadFile(p.log)
	if n := strings.Count(string(logText), "disagree with the persisted membership"); n != 1 {
		t.Fatalf("the flags-vs-persisted line appears %d times", n)
	}
	if rows := c.memberRows(t); voters(rows) != 4 || len(rows) != 4 {
		t.Fatalf("after the restart with --cluster-size 5: %v", rows)
	}
	c.put(t, "after-restart", "3")

	// Another cluster's data directory: one line, exit 1.
	p.signal(t, syscall.SIGTERM)
	_ = p.waitExit(t, 20*time.Second)
	args = c.podArgs(ord)
	for i, a := range args {
		if a == "--cluster-id" {
			args[i+1] = "someone-else"
		}
	}
	code, _, stderr := c.cli(t, args...)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if code != exitFailure || !strings.Contains(last, "belongs to another cluster") || !strings.Contains(last, `cluster "e2e-members"`) {
		t.Fatalf("foreign data dir: exit %d, last line %q", code, last)
	}
	if got := c.get(t, "after-restart"); got != "3" {
		t.Fatalf("get after-restart = %q", got)
	}

	// The removed member, started again with its data directory, moves
	// the data aside and joins as a new member under its name.
	c.run(t, ord, c.podArgs(ord))
	c.waitReady(t, ord, 30*time.Second)
	c.pods[lead] = removed
	c.run(t, lead, c.podArgs(lead))
	c.waitReady(t, lead, 30*time.Second)
	waitFor(t, 30*time.Second, "5 voters again", func() bool { return voters(c.memberRows(t)) == 5 })
	rows = c.memberRows(t)
	if rows["6"] == nil || rows["6"][1] != fmt.Sprintf("rafty-%d", lead) {
		t.Fatalf("the removed rafty-%d did not come back as member 6: %v", lead, rows)
	}
	aside, _ := filepath.Glob(filepath.Join(removed.dir, "removed-"+leadID+"-*"))
	if len(aside) != 1 {
		t.Fatalf("the removed member's data was not moved aside: %v", aside)
	}
	if got := c.get(t, "after"); got != "2" {
		t.Fatalf("get after = %q", got)
	}
}

// TestRecoverForceNewCluster: of three members two are destroyed; the
// third's data directory is recovered offline and serves reads and
// writes alone; then a new node joins it.
func TestRecoverForceNewCluster(t *testing.T) {
	c := newPodCluster(t, 3)
	for i := range 3 {
		c.run(t, i, c.podArgs(i))
	}
	for i := range 3 {
		c.waitReady(t, i, 30*time.Second)
	}
	for i := range 20 {
		c.put(t, "k"+strconv.Itoa(i), "v"+strconv.Itoa(i))
	}
	for i := range 3 {
		c.pod(i).signal(t, syscall.SIGTERM)
	}
	for i := range 3 {
		_ = c.pod(i).waitExit(t, 20*time.Second)
	}
	for i := range 2 {
		if err := os.RemoveAll(c.pod(i).dir); err != nil {
			t.Fatal(err)
		}
		delete(c.pods, i)
	}
	survivor := c.pod(2)
	out := c.mustCLI(t, "recover", "--force-new-cluster", "--data-dir", survivor.dir)
	if !strings.Contains(out, "as a cluster of member 3 (rafty-2) alone") || !strings.Contains(out, "former voters 1,2,3") {
		t.Fatalf("recover: %q", out)
	}
	c.run(t, 2, c.podArgs(2))
	c.waitReady(t, 2, 30*time.Second)
	if got := c.get(t, "k19"); got != "v19" {
		t.Fatalf("get k19 after recovery = %q", got)
	}
	c.put(t, "alone", "yes")
	rows := c.memberRows(t)
	if len(rows) != 1 || rows["3"] == nil {
		t.Fatalf("members after recovery: %v", rows)
	}
	// A new node joins the recovered member (ordinal 5: a scale-up).
	c.run(t, 5, c.podArgs(5))
	c.waitReady(t, 5, 30*time.Second)
	waitFor(t, 30*time.Second, "2 voters", func() bool { return voters(c.memberRows(t)) == 2 })
	c.put(t, "grown", "yes")
	if got := c.get(t, "alone"); got != "yes" {
		t.Fatalf("get alone = %q", got)
	}
}

// readyzBody returns /readyz's status code and body at the metrics
// address addr (0 and "" if it does not answer within a second).
func readyzBody(addr string) (int, string) {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b)
}
