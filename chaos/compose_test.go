package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// composeCluster is deploy/compose.yaml brought up under a project of its
// own, from an image built around the static kvnode binary. Faults are
// Docker's: `docker kill` (SIGKILL) and `docker start`, `docker pause`
// (the cgroup freezer, like SIGSTOP), and `docker network disconnect` /
// `connect` for partitions, which isolate whole containers (so only cuts
// that isolate a set of nodes are possible).
type composeCluster struct {
	logf    func(string, ...any)
	argv    []string // the compose command
	file    string
	project string
	env     []string
	ports   []string // client, metrics port of each service, in turn
	ids     []string // container IDs
	network string
	aliases [][]string

	mu       sync.Mutex
	killed   map[int]bool
	paused   map[int]bool
	starts   []int
	isolated []int
}

// findCompose returns the compose command, or skips t: no docker CLI, no
// daemon, or no compose.
func findCompose(t *testing.T) []string {
	t.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("skipping: no docker CLI on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("skipping: no Docker daemon reachable (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	if exec.CommandContext(ctx, docker, "compose", "version").Run() == nil {
		return []string{docker, "compose"}
	}
	if dc, err := exec.LookPath("docker-compose"); err == nil {
		return []string{dc}
	}
	t.Skip("skipping: neither `docker compose` nor docker-compose is available")
	return nil
}

func dockerCmd(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *composeCluster) compose(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(append([]string{}, c.argv[1:]...), "-f", c.file, "-p", c.project), args...)
	cmd := exec.CommandContext(ctx, c.argv[0], argv...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startCompose builds the image from bin, brings the project up and waits
// until every member is ready. The project (containers, network, volumes)
// and the image are removed by t's cleanup, whatever happens.
func startCompose(t *testing.T, bin string) *composeCluster {
	t.Helper()
	compose := findCompose(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid())
	tag := "rafty-kvnode-chaos:" + suffix
	start := time.Now()
	build := exec.Command(filepath.Join(repo, "scripts", "build-image.sh"), tag)
	build.Env = append(os.Environ(), "KVNODE_BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := dockerCmd(time.Minute, "rmi", "-f", tag); err != nil {
			t.Logf("removing image %s: %v", tag, err)
		}
	})
	c := &composeCluster{
		logf: t.Logf, argv: compose, file: filepath.Join(repo, "deploy", "compose.yaml"),
		project: "raftychaos" + suffix, killed: map[int]bool{}, paused: map[int]bool{}, starts: make([]int, 3),
	}
	for range 6 {
		addr, err := freeAddr("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		c.ports = append(c.ports, addr[strings.LastIndexByte(addr, ':')+1:])
	}
	c.env = []string{"KVNODE_IMAGE=" + tag}
	for i := range 3 {
		c.env = append(c.env,
			fmt.Sprintf("RAFTY%d_CLIENT_PORT=%s", i, c.ports[2*i]),
			fmt.Sprintf("RAFTY%d_METRICS_PORT=%s", i, c.ports[2*i+1]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := c.compose(time.Minute, "logs", "--no-color", "--tail", "40"); err == nil {
				t.Logf("compose logs:\n%s", out)
			}
		}
		c.Close()
	})
	if _, err := c.compose(3*time.Minute, "up", "-d"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		out, err := c.compose(time.Minute, "ps", "-q", fmt.Sprintf("rafty-%d", i))
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("container of rafty-%d: %v %q", i, err, out)
		}
		c.ids = append(c.ids, strings.TrimSpace(out))
		c.starts[i] = 1
	}
	// The network, and each container's aliases on it (a reconnected
	// container must get them back, or its peers cannot resolve it).
	for i, id := range c.ids {
		out, err := dockerCmd(time.Minute, "inspect", "--format", "{{json .NetworkSettings.Networks}}", id)
		if err != nil {
			t.Fatal(err)
		}
		var nets map[string]struct{ Aliases []string }
		if err := json.Unmarshal([]byte(out), &nets); err != nil || len(nets) != 1 {
			t.Fatalf("networks of rafty-%d: %v %s", i, err, out)
		}
		for name, n := range nets {
			c.network = name
			var keep []string
			for _, a := range n.Aliases {
				if !strings.HasPrefix(id, a) { // the short container ID is added back by Docker
					keep = append(keep, a)
				}
			}
			c.aliases = append(c.aliases, keep)
		}
	}
	for i := range 3 {
		if err := waitReady(c, i, 90*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%s ready in %v (network %s)", c.Name(), time.Since(start).Round(time.Millisecond), c.network)
	return c
}

func (c *composeCluster) Name() string             { return "Docker Compose, 3 nodes" }
func (c *composeCluster) Size() int                { return 3 }
func (c *composeCluster) ClusterName() string      { return "rafty-compose" }
func (c *composeCluster) ClientAddr(i int) string  { return "127.0.0.1:" + c.ports[2*i] }
func (c *composeCluster) MetricsAddr(i int) string { return "127.0.0.1:" + c.ports[2*i+1] }
func (c *composeCluster) PeerAddr(int) string      { return "" }
func (c *composeCluster) caps() caps               { return caps{} }

func (c *composeCluster) Alive(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.killed[i]
}

func (c *composeCluster) Paused(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused[i]
}

func (c *composeCluster) Incarnation(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts[i]
}

func (c *composeCluster) Kill(is ...int) error {
	args := []string{"kill"}
	c.mu.Lock()
	for _, i := range is {
		args = append(args, c.ids[i])
		c.killed[i], c.paused[i] = true, false
	}
	c.mu.Unlock()
	_, err := dockerCmd(time.Minute, args...)
	return err
}

func (c *composeCluster) Start(i int) error {
	if _, err := dockerCmd(time.Minute, "start", c.ids[i]); err != nil {
		return err
	}
	c.mu.Lock()
	c.killed[i] = false
	c.starts[i]++
	c.mu.Unlock()
	return nil
}

func (c *composeCluster) Pause(i int) error {
	if _, err := dockerCmd(time.Minute, "pause", c.ids[i]); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[i] = true
	c.mu.Unlock()
	return nil
}

func (c *composeCluster) Resume(i int) error {
	if _, err := dockerCmd(time.Minute, "unpause", c.ids[i]); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[i] = false
	c.mu.Unlock()
	return nil
}

// Partition accepts only cuts that isolate a set of nodes from every
// other node, which it does by disconnecting them from the network.
func (c *composeCluster) Partition(cuts []pair) error {
	if err := c.Heal(); err != nil {
		return err
	}
	cut := map[pair]bool{}
	for _, p := range cuts {
		cut[p] = true
	}
	var iso []int
	for x := range 3 {
		all := true
		for y := range 3 {
			if x != y && (!cut[pair{x, y}] || !cut[pair{y, x}]) {
				all = false
			}
		}
		if all {
			iso = append(iso, x)
		}
	}
	want := map[pair]bool{}
	for _, x := range iso {
		for y := range 3 {
			if x != y {
				want[pair{x, y}], want[pair{y, x}] = true, true
			}
		}
	}
	if len(want) != len(cut) {
		return fmt.Errorf("compose: only partitions that isolate whole nodes are possible, not %v", cuts)
	}
	for _, i := range iso {
		if _, err := dockerCmd(time.Minute, "network", "disconnect", c.network, c.ids[i]); err != nil {
			return err
		}
		c.mu.Lock()
		c.isolated = append(c.isolated, i)
		c.mu.Unlock()
	}
	return nil
}

func (c *composeCluster) Heal() error {
	c.mu.Lock()
	iso := c.isolated
	c.isolated = nil
	c.mu.Unlock()
	for _, i := range iso {
		args := []string{"network", "connect"}
		for _, a := range c.aliases[i] {
			args = append(args, "--alias", a)
		}
		if _, err := dockerCmd(time.Minute, append(args, c.network, c.ids[i])...); err != nil {
			return err
		}
	}
	return nil
}

var errComposeUnsupported = fmt.Errorf("not possible with Docker Compose")

func (c *composeCluster) SetLatency(time.Duration) error        { return errComposeUnsupported }
func (c *composeCluster) ResetConns() error                     { return errComposeUnsupported }
func (c *composeCluster) SetDiskDelay(int, time.Duration) error { return errComposeUnsupported }

// Crashes reports containers that stopped without being killed.
func (c *composeCluster) Crashes() []string {
	var out []string
	for i, id := range c.ids {
		if !c.Alive(i) {
			continue
		}
		st, err := dockerCmd(30*time.Second, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", id)
		if err == nil && !strings.HasPrefix(st, "true") {
			out = append(out, fmt.Sprintf("rafty-%d stopped by itself (running, exit code: %s); its log ends:\n%s", i, st, c.LogTail(i, 30)))
			c.mu.Lock()
			c.killed[i] = true // report once
			c.mu.Unlock()
		}
	}
	return out
}

func (c *composeCluster) LogTail(i, n int) string {
	out, err := dockerCmd(time.Minute, "logs", "--tail", strconv.Itoa(n), c.ids[i])
	if err != nil {
		return err.Error()
	}
	return out
}

// Close removes the project: containers (paused ones are unpaused first),
// network and volumes.
func (c *composeCluster) Close() {
	c.mu.Lock()
	var paused []int
	for i, p := range c.paused {
		if p {
			paused = append(paused, i)
		}
	}
	c.mu.Unlock()
	sort.Ints(paused)
	for _, i := range paused {
		_ = c.Resume(i)
	}
	if out, err := c.compose(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "5"); err != nil {
		c.logf("compose down: %v\n%s", err, out)
	}
}

// TestChaosCompose runs the Docker Compose deployment (deploy/compose.yaml,
// the image built FROM scratch around the production binary) through a
// schedule of the faults Docker can inject: kill -9 of the leader and of
// every container, a paused leader, an isolated leader and an isolated
// random node. With -chaos.duration it keeps drawing schedules for a
// fifth of that time.
func TestChaosCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Docker Compose chaos test in -short mode")
	}
	findCompose(t)
	bin := kvnodeBinary(t, "plain")
	c := startCompose(t, bin)
	nc, err := dialNodes(c)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	base := baseSeed(t)
	tot := &totals{}
	start := time.Now()
	defer report(t, tot, start)
	kinds := []faultKind{fKillLeader, fPauseLeader, fIsoLeader, fKillAll, fSplit}
	runSchedule(t, c, nc, newPlan(subSeed(base, 0), 3, 0, kinds, true), opts(), tot)
	if *flagDuration > 0 {
		deadline := start.Add(*flagDuration / 5)
		pool := []faultKind{fKillRandom, fKillLeader, fKillMajority, fKillAll, fPauseLeader, fPauseRandom, fIsoLeader, fSplit}
		for i := 1; time.Until(deadline) > 40*time.Second && !t.Failed(); i++ {
			runSchedule(t, c, nc, newPlan(subSeed(base, i), 3, 5, pool, false), opts(), tot)
		}
	}
}
