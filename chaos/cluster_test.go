package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rafty-db/rafty/internal/powerloss"
	"github.com/rafty-db/rafty/internal/proctest"
)

// cluster is what the fault schedules drive: a running kvnode cluster whose
// nodes can be killed, restarted, paused and cut off from each other. Node
// indexes run from 0; node i has Raft ID i+1.
type cluster interface {
	// Name describes the cluster ("loopback, 3 nodes").
	Name() string
	// Size is the number of node slots: the initial members, and for a
	// cluster whose membership the schedules change, spare slots that
	// nodes join from (nodeClients dial every slot).
	Size() int
	// Members returns the slots that are members now, as the harness
	// keeps track (every slot of a cluster whose membership never
	// changes). Faults pick their targets among them, and clients send
	// to them.
	Members() []int
	// ClusterName is the --cluster-id the nodes run with.
	ClusterName() string
	ClientAddr(i int) string
	MetricsAddr(i int) string
	// PeerAddr is node i's real peer port, reachable from the test.
	PeerAddr(i int) string

	// Alive reports whether node i's process runs (a paused one does).
	Alive(i int) bool
	// Incarnation counts node i's starts: a read served by one
	// incarnation and one served by the next are across a restart.
	Incarnation(i int) int
	Paused(i int) bool
	Kill(is ...int) error // SIGKILL, all at once, and wait for them to be gone
	Start(i int) error    // restart a killed node on the same data
	Pause(i int) error    // SIGSTOP
	Resume(i int) error   // SIGCONT

	// caps says which faults the cluster can inject.
	caps() caps
	// Partition replaces the current network faults by these one-way cuts
	// (a message from p.from to p.to is held). Heal removes all of them.
	Partition(cuts []pair) error
	Heal() error
	// SetLatency adds d to every peer link (0 removes it).
	SetLatency(d time.Duration) error
	// ResetConns closes every peer connection.
	ResetConns() error
	// SetDiskDelay makes node i's every WAL write take d longer.
	SetDiskDelay(i int, d time.Duration) error
	// PowerCut turns killed node i's data directory into what a power
	// cut could have left (internal/powerloss): unsynced writes dropped
	// or kept in part, drawn from rng.
	PowerCut(i int, rng *rand.Rand) (powerloss.CutReport, error)

	// Crashes returns (and forgets) the nodes that exited without being
	// killed since the last call: a crash is a bug.
	Crashes() []string
	// LogTail returns the last n lines of node i's log.
	LogTail(i, n int) string
	Close()
}

// caps are the optional faults a cluster supports.
type caps struct {
	oneWay   bool // Partition accepts any set of one-way cuts
	latency  bool
	reset    bool
	slowDisk bool
	badInput bool // the peer ports are reachable from the test
	powerCut bool // PowerCut works (nodes journal unsynced writes)
	// membership: the cluster has spare slots, and nodes can be wiped
	// and started as joiners (memberCluster).
	membership bool
}

// pair is a directed link: messages from node `from` to node `to`.
type pair struct{ from, to int }

// Timing of every test cluster: the design defaults (tick 100 ms, election
// timeout drawn from [500 ms, 1 s)), so faults are measured against what
// a default deployment does.
const (
	tick               = 100 * time.Millisecond
	electionTicks      = 5
	maxElectionTimeout = 2 * electionTicks * tick
)

// procCluster runs every node as a process on loopback. Each run uses its
// own loopback addresses (127.X.Y.Z, with X.Y random) for the client and
// metrics ports and the nodes' peer addresses, so they cannot collide
// with other tests running at the same time. Node i's peer address, the
// one in --peers and in the replicated membership, is its front
// (front_test.go) on 127.X.Y.(200+i), which hands a connection from node
// j to link (j, i), a proxy to i's real peer port. The real peer ports
// listen on localhost with the front's port number (kvnode wants a peer
// listener's port to be its peer address's port, and an IP address
// other than its own refused).
type procCluster struct {
	logf    func(string, ...any)
	bin     string
	dir     string
	name    string
	initial int // slots 0..initial-1 are the initial members
	nodes   []*procNode
	links   map[pair]*link
	unknown []*link // per slot, for connections from no node process
	fronts  []*front

	mu      sync.Mutex
	crashes []string
	members []int // slots in the cluster (harness bookkeeping), sorted
}

type procNode struct {
	idx                        int
	peer, client, metrics      string
	dataDir, logPath, diskFile string
	journal                    string // the power-loss journal (cmd/kvnode/chaos_powerloss.go)
	peers                      string // the --peers value: every initial member's front
	peerListen                 string // localhost:port of the front
	front                      string // the node's peer address as every member dials it
	name                       string // the member name (--name)
	// join, when set, is the --join value the node starts with (a member
	// that joined, or a slot whose data was wiped): it then has no --id
	// and no --peers.
	join string

	mu      sync.Mutex
	proc    *proctest.Proc // the running (or last) process; nil before the first start
	paused  bool
	killing bool // Kill sent SIGKILL: the exit is expected
	starts  int
}

// loopbackBase picks a random 127.X.Y.0/24 for one cluster.
func loopbackBase() string {
	return fmt.Sprintf("127.%d.%d.", 64+rand.IntN(128), 1+rand.IntN(250))
}

// startProcCluster starts n nodes of bin under dir and waits until every
// one is ready.
func startProcCluster(logf func(string, ...any), bin, dir string, n int) (*procCluster, error) {
	return startProcClusterSpares(logf, bin, dir, n, 0)
}

// startProcClusterSpares is startProcCluster with spare slots that nodes
// can later join from (membership nemesis): addresses, fronts and links
// are made for them now, their processes are started by the schedules.
func startProcClusterSpares(logf func(string, ...any), bin, dir string, n, spares int) (*procCluster, error) {
	c := &procCluster{logf: logf, bin: bin, dir: dir, name: fmt.Sprintf("chaos-%d", rand.Uint32()), links: map[pair]*link{}, initial: n}
	base := loopbackBase()
	total := n + spares
	for i := range total {
		host := base + strconv.Itoa(i+1)
		nd := &procNode{
			idx:      i,
			dataDir:  filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			logPath:  filepath.Join(dir, fmt.Sprintf("node%d.log", i+1)),
			diskFile: filepath.Join(dir, fmt.Sprintf("node%d.disk-delay", i+1)),
			journal:  filepath.Join(dir, fmt.Sprintf("node%d.powerloss", i+1)),
			name:     fmt.Sprintf("node-%d", i+1),
		}
		// host is a loopback address used by this cluster alone, so
		// nothing else takes the ports before the node binds them.
		addrs, err := proctest.FreeAddrs(host, 2)
		if err != nil {
			c.Close()
			return nil, err
		}
		nd.client, nd.metrics = addrs[0], addrs[1]
		peer, err := proctest.FreeAddrs("127.0.0.1", 1)
		if err != nil {
			c.Close()
			return nil, err
		}
		_, port, _ := net.SplitHostPort(peer[0])
		nd.peer, nd.peerListen = peer[0], "localhost:"+port
		c.nodes = append(c.nodes, nd)
	}
	for i := range total {
		target := c.nodes[i].peer
		for j := range total {
			if i != j {
				c.links[pair{j, i}] = newLinkState(j, i, func() string { return target })
			}
		}
		c.unknown = append(c.unknown, newLinkState(-1, i, func() string { return target }))
	}
	for i := range total {
		_, port, _ := net.SplitHostPort(c.nodes[i].peer)
		f, err := newFront(i, fmt.Sprintf("%s%d:%s", base, 200+i, port), func(from int) *link {
			if from < 0 || from == i {
				return c.unknown[i]
			}
			return c.links[pair{from, i}]
		}, c.senders)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.fronts = append(c.fronts, f)
		c.nodes[i].front = f.Addr()
	}
	var peers []string
	for i := range n {
		peers = append(peers, fmt.Sprintf("%d=%s", i+1, c.nodes[i].front))
	}
	for i := range n {
		c.nodes[i].peers = strings.Join(peers, ",")
		c.members = append(c.members, i)
	}
	for i := range n {
		if err := c.Start(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	for i := range n {
		if err := waitReady(c, i, 30*time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// senders maps the pid of every running node process to its slot.
func (c *procCluster) senders() map[int]int {
	out := map[int]int{}
	for i, nd := range c.nodes {
		nd.mu.Lock()
		if nd.proc.Alive() {
			out[nd.proc.Pid()] = i
		}
		nd.mu.Unlock()
	}
	return out
}

func (c *procCluster) Members() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// SetMember records that slot i is (or is no longer) a member.
func (c *procCluster) SetMember(i int, in bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = slices.DeleteFunc(c.members, func(x int) bool { return x == i })
	if in {
		c.members = append(c.members, i)
		slices.Sort(c.members)
	}
}

// UnknownSenders counts the peer connections whose sending process the
// fronts could not find (they went through without faults).
func (c *procCluster) UnknownSenders() int64 {
	var n int64
	for _, f := range c.fronts {
		n += f.unknown.Load()
	}
	return n
}

// FrontAddr is slot i's peer address as the members dial it.
func (c *procCluster) FrontAddr(i int) string { return c.nodes[i].front }

// NodeName is the member name slot i runs under.
func (c *procCluster) NodeName(i int) string {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.name
}

// SetJoin makes slot i start from now on as a joiner named name, through
// the fronts of slots via (--join), or with the initial members' flags
// again if via is empty and i is an initial slot.
func (c *procCluster) SetJoin(i int, name string, via []int) {
	nd := c.nodes[i]
	var eps []string
	for _, j := range via {
		eps = append(eps, c.nodes[j].front)
	}
	nd.mu.Lock()
	defer nd.mu.Unlock()
	nd.name, nd.join = name, strings.Join(eps, ",")
}

// Joined reports whether slot i starts with --join.
func (c *procCluster) Joined(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.join != ""
}

// Wipe removes killed node i's data directory and power-loss journal: it
// starts empty next time.
func (c *procCluster) Wipe(i int) error {
	if c.Alive(i) {
		return fmt.Errorf("node %d: wiping the data of a running process", i+1)
	}
	nd := c.nodes[i]
	if err := os.RemoveAll(nd.dataDir); err != nil {
		return err
	}
	if err := os.Remove(nd.journal); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (c *procCluster) Name() string {
	if spare := len(c.nodes) - c.initial; spare > 0 {
		return fmt.Sprintf("loopback, %d nodes and %d spare slots", c.initial, spare)
	}
	return fmt.Sprintf("loopback, %d nodes", len(c.nodes))
}
func (c *procCluster) Size() int                { return len(c.nodes) }
func (c *procCluster) ClusterName() string      { return c.name }
func (c *procCluster) ClientAddr(i int) string  { return c.nodes[i].client }
func (c *procCluster) MetricsAddr(i int) string { return c.nodes[i].metrics }
func (c *procCluster) PeerAddr(i int) string    { return c.nodes[i].peer }

func (c *procCluster) caps() caps {
	return caps{oneWay: true, latency: true, reset: true, slowDisk: true, badInput: true, powerCut: true, membership: len(c.nodes) > c.initial}
}

// Start runs node i's process (again, after Kill: same data directory).
func (c *procCluster) Start(i int) error {
	nd := c.nodes[i]
	if c.Alive(i) {
		return fmt.Errorf("node %d is already running", i+1)
	}
	nd.mu.Lock()
	args := []string{"serve", "--name", nd.name}
	if nd.join != "" {
		args = append(args, "--join", nd.join, "--peer-addr", nd.front, "--client-addr", nd.client)
	} else {
		args = append(args, "--id", strconv.Itoa(i+1), "--peers", nd.peers)
	}
	nd.mu.Unlock()
	cmd := exec.Command(c.bin, append(args,
		"--cluster-id", c.name,
		"--data-dir", nd.dataDir,
		"--peer-listen", nd.peerListen,
		"--client-listen", nd.client,
		"--metrics-listen", nd.metrics,
		"--tick", tick.String(),
		"--election-ticks", strconv.Itoa(electionTicks),
		"--log-level", "info",
	)...)
	cmd.Env = append(os.Environ(), "KVNODE_CHAOS_DISK_DELAY_FILE="+nd.diskFile, "KVNODE_CHAOS_POWERLOSS_JOURNAL="+nd.journal)
	cmd.SysProcAttr = sysProcAttr()
	// Held across the start, the lock keeps onExit from reading
	// nd.killing before it is reset for this process.
	nd.mu.Lock()
	defer nd.mu.Unlock()
	header := fmt.Sprintf("==== chaos: starting node %d at %s ====", i+1, time.Now().Format(time.RFC3339Nano))
	p, err := proctest.StartProc(cmd, nd.logPath, header, func(err error) {
		nd.mu.Lock()
		expected := nd.killing
		nd.mu.Unlock()
		if !expected {
			c.mu.Lock()
			c.crashes = append(c.crashes, fmt.Sprintf("node %d exited by itself (%v); its log ends:\n%s", i+1, err, c.LogTail(i, 30)))
			c.mu.Unlock()
		}
	})
	if err != nil {
		return fmt.Errorf("starting node %d: %w", i+1, err)
	}
	nd.proc, nd.paused, nd.killing = p, false, false
	nd.starts++
	return nil
}

func (c *procCluster) Alive(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.proc.Alive()
}

func (c *procCluster) Incarnation(i int) int {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.starts
}

func (c *procCluster) Paused(i int) bool {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.paused
}

// Kill sends SIGKILL to every given node first, then waits for each to be
// gone, so that "all at once" is as close to a power cut as processes get.
func (c *procCluster) Kill(is ...int) error {
	var dones []<-chan struct{}
	for _, i := range is {
		nd := c.nodes[i]
		nd.mu.Lock()
		p := nd.proc
		nd.paused, nd.killing = false, true
		nd.mu.Unlock()
		if p == nil {
			continue
		}
		_ = p.Signal(syscall.SIGKILL)
		dones = append(dones, p.Done())
	}
	for _, d := range dones {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			return errors.New("a killed node did not exit within 10s")
		}
	}
	return nil
}

func (c *procCluster) signal(i int, sig syscall.Signal, paused bool) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.proc == nil {
		return fmt.Errorf("node %d never started", i+1)
	}
	if err := nd.proc.Signal(sig); err != nil {
		return fmt.Errorf("node %d: %v: %w", i+1, sig, err)
	}
	nd.paused = paused
	return nil
}

func (c *procCluster) Pause(i int) error  { return c.signal(i, syscall.SIGSTOP, true) }
func (c *procCluster) Resume(i int) error { return c.signal(i, syscall.SIGCONT, false) }

func (c *procCluster) Partition(cuts []pair) error {
	cut := map[pair]bool{}
	for _, p := range cuts {
		cut[p] = true
	}
	for p, l := range c.links {
		l.Stall(cut[p], false)
	}
	return nil
}

func (c *procCluster) Heal() error {
	for _, l := range c.links {
		l.Heal()
	}
	return nil
}

func (c *procCluster) SetLatency(d time.Duration) error {
	for _, l := range c.links {
		l.SetDelay(d)
	}
	return nil
}

func (c *procCluster) ResetConns() error {
	for _, l := range c.links {
		l.Reset()
	}
	return nil
}

// SetDiskDelay writes the delay to node i's control file, which the
// chaos-tagged kvnode polls (cmd/kvnode/chaos_disk.go).
func (c *procCluster) SetDiskDelay(i int, d time.Duration) error {
	nd := c.nodes[i]
	tmp := nd.diskFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(d.String()+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, nd.diskFile)
}

// PowerCut applies a simulated power cut to node i's data directory,
// which the chaos-tagged kvnode journals (cmd/kvnode/chaos_powerloss.go).
// The node must be dead: kill -9 keeps the page cache, so the journal
// lists every mutation not yet synced.
func (c *procCluster) PowerCut(i int, rng *rand.Rand) (powerloss.CutReport, error) {
	if c.Alive(i) {
		return powerloss.CutReport{}, fmt.Errorf("node %d: a power cut of a running process", i+1)
	}
	rep, err := powerloss.Cut(c.nodes[i].journal, rng, powerloss.CutRandom)
	if err != nil {
		return rep, fmt.Errorf("node %d: %w", i+1, err)
	}
	return rep, nil
}

func (c *procCluster) Crashes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	cr := c.crashes
	c.crashes = nil
	return cr
}

func (c *procCluster) LogTail(i, n int) string {
	return proctest.TailFile(c.nodes[i].logPath, n)
}

// Close kills every node (a paused one too) and closes every link.
func (c *procCluster) Close() {
	var all []int
	for i := range c.nodes {
		all = append(all, i)
	}
	_ = c.Kill(all...)
	for _, f := range c.fronts {
		f.Close()
	}
	for _, l := range c.links {
		l.Close()
	}
	for _, l := range c.unknown {
		l.Close()
	}
}

// waitReady waits until node i answers /readyz with 200.
func waitReady(c cluster, i int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if !c.Alive(i) {
			return fmt.Errorf("node %d exited while starting:\n%s", i+1, c.LogTail(i, 20))
		}
		if proctest.Readyz(c.MetricsAddr(i)) == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %d not ready after %v:\n%s", i+1, timeout, c.LogTail(i, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
