package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	defaultMembers      = 3
	defaultReadyTimeout = 60 * time.Second
	// clusterStopTimeout bounds the wait for members after SIGTERM
	// before they are killed; a member bounds its own stop below this.
	clusterStopTimeout = 20 * time.Second
	healthPoll         = 200 * time.Millisecond
)

// clusterInfo is what `etcdbench cluster` prints on standard output, one
// JSON line, once every member is healthy. The Rafty side's cluster
// command prints the same shape (see README.md).
type clusterInfo struct {
	System    string   `json:"system"`
	Version   string   `json:"version"`
	Endpoints []string `json:"endpoints"` // client host:port, member order
	Pids      []int    `json:"pids"`      // member processes, member order
	Leader    string   `json:"leader"`    // endpoint of the leader when healthy
	DataDir   string   `json:"data_dir"`  // removed when the cluster stops
}

// Settings of every member of a benchmark cluster.
const (
	// defaultQuotaBytes is the members' backend quota: 8 GiB, etcd's
	// documented maximum suggestion, far above what a benchmark run writes
	// (a fresh cluster per round), so the quota alarm never fires mid-run.
	defaultQuotaBytes = 8 << 30
	// memberBinName is the etcd member binary, built from the separate
	// module in member/ with etcd's own dependency versions; by default
	// it is looked for next to etcdbench (compare.sh builds both into bin/).
	memberBinName = "etcd-member"
)

// memberConfig is one member's command line (see member/main.go).
type memberConfig struct {
	name, dataDir      string
	peerURL, clientURL string
	initialCluster     string
	logLevel           string
	quotaBytes         int64
}

func (m memberConfig) args() []string {
	return []string{
		"--name", m.name, "--data-dir", m.dataDir,
		"--peer-url", m.peerURL, "--client-url", m.clientURL,
		"--initial-cluster", m.initialCluster, "--log-level", m.logLevel,
		"--quota-bytes", fmt.Sprint(m.quotaBytes),
	}
}

// member is one running member process.
type member struct {
	cfg    memberConfig
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
	err    error         // its exit status, valid after exited
}

// clusterMain is `etcdbench cluster`: start the members as child
// processes (of the etcd-member binary), wait until all are healthy, print clusterInfo
// and run until SIGTERM/SIGINT (ctx) or until a member dies, then stop
// every member and remove the data directory.
func clusterMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("cluster", stderr)
	n := fs.Int("members", defaultMembers, "number of members")
	parent := fs.String("data-dir", "", "directory under which a fresh data directory is made and removed at exit (default: the system temp dir)")
	logLevel := fs.String("log-level", "warn", "members' log level: debug, info, warn or error")
	quota := fs.Int64("quota-bytes", defaultQuotaBytes, "members' backend quota in bytes")
	readyTimeout := fs.Duration("ready-timeout", defaultReadyTimeout, "bound on waiting for a healthy cluster")
	memberBin := fs.String("member-bin", "", "the etcd member binary (built from bench/etcd/member; default: "+memberBinName+" next to etcdbench)")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if *n < 1 || *n > 9 {
		return usagef("--members %d: want 1..9", *n)
	}
	bin, err := findMemberBin(*memberBin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(*parent, "etcdbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	members, err := startMembers(bin, dir, *n, *logLevel, *quota, stderr)
	if err != nil {
		return err
	}
	leader := -1 // index of the leader when last seen
	defer func() { stopMembers(members, leader, stderr) }()

	info := clusterInfo{System: "etcd", Version: version.Version, DataDir: dir}
	for _, m := range members {
		info.Endpoints = append(info.Endpoints, strings.TrimPrefix(m.cfg.clientURL, "http://"))
		info.Pids = append(info.Pids, m.cmd.Process.Pid)
	}
	readyCtx, cancel := context.WithTimeout(ctx, *readyTimeout)
	info.Leader, err = waitHealthy(readyCtx, info.Endpoints, members)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: not a failure
		}
		return err
	}
	leader = slices.Index(info.Endpoints, info.Leader)
	line, _ := json.Marshal(info)
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}

	died := make(chan *member, len(members))
	for _, m := range members {
		go func() { <-m.exited; died <- m }()
	}
	select {
	case <-ctx.Done():
		// Leadership may have moved since start-up: look again, briefly.
		if l, err := currentLeader(info.Endpoints); err == nil {
			leader = slices.Index(info.Endpoints, l)
		}
		return nil
	case m := <-died:
		return fmt.Errorf("member %s exited: %v", m.cfg.name, m.err)
	}
}

// findMemberBin returns the member binary to run: bin if given, else
// memberBinName next to this executable. It must exist.
func findMemberBin(bin string) (string, error) {
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		bin = filepath.Join(filepath.Dir(exe), memberBinName)
	}
	st, err := os.Stat(bin)
	if err != nil {
		return "", fmt.Errorf("the etcd member binary: %w (build it: cd bench/etcd/member && go build -o ../../../bin/%s .)", err, memberBinName)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("the etcd member binary %s is not an executable file", bin)
	}
	return bin, nil
}

// startMembers starts n processes of the member binary bin on free loopback
// ports with their data under dir. On error, members already started are
// stopped.
func startMembers(bin, dir string, n int, logLevel string, quota int64, stderr io.Writer) ([]*member, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]memberConfig, n)
	var initial []string
	for i := range cfgs {
		name := fmt.Sprintf("m%d", i+1)
		cfgs[i] = memberConfig{
			name:       name,
			dataDir:    fmt.Sprintf("%s/%s", dir, name),
			peerURL:    fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]),
			clientURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
			logLevel:   logLevel,
			quotaBytes: quota,
		}
		initial = append(initial, name+"="+cfgs[i].peerURL)
	}
	var mu sync.Mutex // serialises the members' log lines on stderr
	var members []*member
	for i := range cfgs {
		cfgs[i].initialCluster = strings.Join(initial, ",")
		cmd := exec.Command(bin, cfgs[i].args()...)
		out := &lineWriter{mu: &mu, w: stderr, prefix: "[etcd " + cfgs[i].name + "] "}
		cmd.Stdout, cmd.Stderr = out, out
		// If this process dies without stopping them, so do the members.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			stopMembers(members, -1, stderr)
			return nil, fmt.Errorf("start member %s: %w", cfgs[i].name, err)
		}
		m := &member{cfg: cfgs[i], cmd: cmd, exited: make(chan struct{})}
		go func() { m.err = cmd.Wait(); close(m.exited) }()
		members = append(members, m)
	}
	return members, nil
}

// stopMembers stops every member still running: SIGTERM, then SIGKILL
// for any still running after clusterStopTimeout. The members other than
// leader (an index into members, or -1) stop first and together, then the
// leader: a leader that stops while followers run first transfers its
// leadership and waits for it, and would slow every stop by seconds.
func stopMembers(members []*member, leader int, stderr io.Writer) {
	var first, last []*member
	for i, m := range members {
		if i == leader {
			last = append(last, m)
		} else {
			first = append(first, m)
		}
	}
	deadline := time.After(clusterStopTimeout)
	for _, group := range [][]*member{first, last} {
		for _, m := range group {
			select {
			case <-m.exited:
			default:
				_ = m.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, m := range group {
			select {
			case <-m.exited:
			case <-deadline:
				fmt.Fprintf(stderr, "etcdbench cluster: member %s did not stop within %v: killing it\n", m.cfg.name, clusterStopTimeout)
				_ = m.cmd.Process.Kill()
				<-m.exited
			}
		}
	}
}

// waitHealthy polls until every endpoint answers Status with the same
// leader and a linearizable read succeeds through each, and returns the
// leader's endpoint. It fails early if a member exits.
func waitHealthy(ctx context.Context, endpoints []string, members []*member) (string, error) {
	var last error
	for {
		for _, m := range members {
			select {
			case <-m.exited:
				return "", fmt.Errorf("member %s exited while starting: %v", m.cfg.name, m.err)
			default:
			}
		}
		leader, err := checkHealth(ctx, endpoints)
		if err == nil {
			return leader, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cluster not healthy: %v (last check: %v)", ctx.Err(), last)
		case <-time.After(healthPoll):
		}
	}
}

// checkHealth makes one health check of the cluster at endpoints.
func checkHealth(ctx context.Context, endpoints []string) (string, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	leader, err := findLeader(ctx, cli, endpoints)
	if err != nil {
		return "", err
	}
	for _, ep := range endpoints {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return "", err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.Get(rctx, "etcdbench-health")
		cancel()
		c.Close()
		if err != nil {
			return "", fmt.Errorf("%s: read: %w", ep, err)
		}
	}
	return leader, nil
}

// findLeader asks every endpoint for its status and returns the endpoint
// of the leader, failing unless all agree on one.
func findLeader(ctx context.Context, cli *clientv3.Client, endpoints []string) (string, error) {
	var leaderID uint64
	leader := ""
	for _, ep := range endpoints {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: status: %w", ep, err)
		}
		if st.Leader == 0 {
			return "", fmt.Errorf("%s: no leader", ep)
		}
		if leaderID != 0 && st.Leader != leaderID {
			return "", fmt.Errorf("members disagree on the leader (%x, %x)", leaderID, st.Leader)
		}
		leaderID = st.Leader
		if st.Header.MemberId == st.Leader {
			leader = ep
		}
	}
	if leader == "" {
		return "", errors.New("the leader is not among the endpoints")
	}
	return leader, nil
}

// currentLeader returns the leader's endpoint, within a second.
func currentLeader(endpoints []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer cli.Close()
	return findLeader(ctx, cli, endpoints)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are only
// free when checked; on a quiet loopback that is good enough.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portsMain is `etcdbench ports N`: N free loopback ports, space separated.
func portsMain(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ports", stderr)
	if err := parseFlags(fs, args, true); err != nil {
		return err
	}
	var n int
	if fs.NArg() != 1 {
		return usagef("want one argument N")
	}
	if _, err := fmt.Sscan(fs.Arg(0), &n); err != nil || n < 1 || n > 1000 {
		return usagef("N %q: want 1..1000", fs.Arg(0))
	}
	ports, err := freePorts(n)
	if err != nil {
		return err
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	_, err = fmt.Fprintln(stdout, strings.Join(s, " "))
	return err
}

// lineWriter prefixes every line written through it and writes whole
// lines to w under mu, so several processes' logs interleave by line.
type lineWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.mu.Lock()
		_, _ = fmt.Fprintf(l.w, "%s%s\n", l.prefix, l.buf[:i])
		l.mu.Unlock()
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}
