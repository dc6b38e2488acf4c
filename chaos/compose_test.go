package chaos

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/internal/powerloss"
	"github.com/rafty-db/rafty/internal/proctest"
)

// composeCluster is deploy/compose.yaml brought up under a project of its
// own, from an image built around the static kvnode binary. Faults are
// Docker's: `docker kill` (SIGKILL) and `docker start`, `docker pause`
// (the cgroup freezer, like SIGSTOP), and `docker network disconnect` /
// `connect` for partitions, which isolate whole containers (so only cuts
// that isolate a set of nodes are possible).
type composeCluster struct {
	logf    func(string, ...any)
	project *proctest.Compose
	ids     []string // container IDs
	network string
	aliases [][]string

	mu       sync.Mutex
	killed   map[int]bool
	paused   map[int]bool
	starts   []int
	isolated []int
}

// startCompose builds the image from bin, brings the project up and waits
// until every member is ready. The project (containers, network, volumes)
// and the image are removed by t's cleanup, whatever happens.
func startCompose(t *testing.T, bin string) *composeCluster {
	t.Helper()
	compose := proctest.FindCompose(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := &composeCluster{
		logf: t.Logf, project: proctest.NewCompose(t, compose, repo, "chaos", bin),
		killed: map[int]bool{}, paused: map[int]bool{}, starts: make([]int, 3),
	}
	c.project.Up(t, 40, c.Close)
	for i := range 3 {
		c.ids = append(c.ids, c.project.ContainerID(t, fmt.Sprintf("rafty-%d", i)))
		c.starts[i] = 1
	}
	// The network, and each container's aliases on it (a reconnected
	// container must get them back, or its peers cannot resolve it).
	for i, id := range c.ids {
		out, err := proctest.Docker(time.Minute, "inspect", "--format", "{{json .NetworkSettings.Networks}}", id)
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
func (c *composeCluster) Members() []int           { return []int{0, 1, 2} }
func (c *composeCluster) ClusterName() string      { return "rafty-compose" }
func (c *composeCluster) ClientAddr(i int) string  { return c.project.ClientAddr(i) }
func (c *composeCluster) MetricsAddr(i int) string { return c.project.MetricsAddr(i) }
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
	_, err := proctest.Docker(time.Minute, args...)
	return err
}

// dockerOn runs docker verb on node i's container and, if it succeeds,
// records its effect with update (under c.mu).
func (c *composeCluster) dockerOn(verb string, i int, update func()) error {
	if _, err := proctest.Docker(time.Minute, verb, c.ids[i]); err != nil {
		return err
	}
	c.mu.Lock()
	update()
	c.mu.Unlock()
	return nil
}

func (c *composeCluster) Start(i int) error {
	return c.dockerOn("start", i, func() {
		c.killed[i] = false
		c.starts[i]++
	})
}

func (c *composeCluster) Pause(i int) error {
	return c.dockerOn("pause", i, func() { c.paused[i] = true })
}

func (c *composeCluster) Resume(i int) error {
	return c.dockerOn("unpause", i, func() { c.paused[i] = false })
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
		if _, err := proctest.Docker(time.Minute, "network", "disconnect", c.network, c.ids[i]); err != nil {
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
		if _, err := proctest.Docker(time.Minute, append(args, c.network, c.ids[i])...); err != nil {
			return err
		}
	}
	return nil
}

var errComposeUnsupported = fmt.Errorf("not possible with Docker Compose")

func (c *composeCluster) SetLatency(time.Duration) error        { return errComposeUnsupported }
func (c *composeCluster) ResetConns() error                     { return errComposeUnsupported }
func (c *composeCluster) SetDiskDelay(int, time.Duration) error { return errComposeUnsupported }
func (c *composeCluster) PowerCut(int, *rand.Rand) (powerloss.CutReport, error) {
	return powerloss.CutReport{}, errComposeUnsupported
}

// Crashes reports containers that stopped without being killed, or that
// Docker restarted: the services restart unless stopped, which would hide
// a crash from the first check, and only such automatic restarts count
// in RestartCount (`docker kill` disables the policy until the next
// `docker start`).
func (c *composeCluster) Crashes() []string {
	var out []string
	for i, id := range c.ids {
		if !c.Alive(i) {
			continue
		}
		st, err := proctest.Docker(30*time.Second, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}} {{.RestartCount}}", id)
		if err == nil && (!strings.HasPrefix(st, "true") || !strings.HasSuffix(st, " 0")) {
			out = append(out, fmt.Sprintf("rafty-%d stopped by itself (running, exit code, restarts: %s); its log ends:\n%s", i, st, c.LogTail(i, 30)))
			c.mu.Lock()
			c.killed[i] = true // report once
			c.mu.Unlock()
		}
	}
	return out
}

func (c *composeCluster) LogTail(i, n int) string {
	out, err := proctest.Docker(time.Minute, "logs", "--tail", strconv.Itoa(n), c.ids[i])
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
	if out, err := c.project.Down(5 * time.Second); err != nil {
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
		t.Skip("skipping the Docker Compose chaos test in -short mode: it builds an image and runs a 3-container cluster under faults for about 40 s")
	}
	proctest.FindCompose(t)
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
