package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/internal/powerloss"
	"github.com/rafty-db/rafty/internal/proctest"
)

// stsPod is one pod of deploy/k8s/statefulset.yaml as the kubelet would
// run it: the JSON that deploy/k8s/cmd/stsrender prints (k8s.Pod). The
// main module does not depend on k8s.io/api, so the rendering runs in the
// deploy/k8s module and only its output crosses over.
type stsPod struct {
	Name                   string            `json:"name"`
	Namespace              string            `json:"namespace"`
	Ordinal                int               `json:"ordinal"`
	Hostname               string            `json:"hostname"`
	FQDN                   string            `json:"fqdn"`
	Labels                 map[string]string `json:"labels"`
	Image                  string            `json:"image"`
	Command                []string          `json:"command"`
	Args                   []string          `json:"args"`
	Env                    []struct{ Name, Value string }
	Mounts                 []stsMount       `json:"mounts"`
	Ports                  map[string]int32 `json:"ports"`
	RunAsUser              *int64           `json:"runAsUser"`
	RunAsGroup             *int64           `json:"runAsGroup"`
	FSGroup                *int64           `json:"fsGroup"`
	ReadOnlyRootFilesystem bool             `json:"readOnlyRootFilesystem"`
	NoNewPrivileges        bool             `json:"noNewPrivileges"`
	DropCapabilities       []string         `json:"dropCapabilities"`
	AddCapabilities        []string         `json:"addCapabilities"`
	TerminationGracePeriod time.Duration    `json:"terminationGracePeriod"`
	PreStopSleep           time.Duration    `json:"preStopSleep"`
}

// stsMount is a volume mount of a rendered pod.
type stsMount struct {
	Volume    string `json:"volume"`
	Claim     string `json:"claim"`
	EmptyDir  bool   `json:"emptyDir"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly"`
}

// env returns the value of the pod's environment variable name.
func (p *stsPod) env(name string) string {
	for _, e := range p.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// renderStatefulSet renders pods 0..n-1 of deploy/k8s/statefulset.yaml in
// namespace ns, with the deploy/k8s module's renderer (built here; its
// module's dependencies are those `make test-deploy` uses).
func renderStatefulSet(repo, dir, ns string, n int) ([]stsPod, error) {
	k8sDir := filepath.Join(repo, "deploy", "k8s")
	bin := filepath.Join(dir, "stsrender")
	build := exec.Command("go", "build", "-o", bin, "./cmd/stsrender")
	build.Dir = k8sDir
	build.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the renderer (deploy/k8s/cmd/stsrender): %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-f", filepath.Join(k8sDir, "statefulset.yaml"), "-namespace", ns,
		"-ordinals", fmt.Sprintf("0-%d", n-1)).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("stsrender: %v: %s", err, ee.Stderr)
		}
		return nil, fmt.Errorf("stsrender: %v", err)
	}
	var pods []stsPod
	if err := json.Unmarshal(out, &pods); err != nil {
		return nil, fmt.Errorf("stsrender's output: %v", err)
	}
	if len(pods) != n {
		return nil, fmt.Errorf("stsrender rendered %d pods, want %d", len(pods), n)
	}
	return pods, nil
}

// stsCluster runs the pods of the StatefulSet as Docker containers of the
// real image on a network of their own, the way Kubernetes would run them
// (see startPod). Its node i is pod rafty-i (not Raft ID i+1: IDs are the
// cluster's, and a replaced pod gets a new one). Client and metrics ports
// are published on fixed loopback ports per ordinal, so a pod recreated
// under the same name is reached at the same address, as through its DNS
// name in Kubernetes.
type stsCluster struct {
	logf    func(string, ...any)
	image   string
	network string
	label   string // every container, volume and network of this run carries it
	owner   string // and this one: stsOwnerLabel=host:pid (see sweepStale)
	prefix  string // of container and volume names
	pods    []stsPod
	ports   []string // client, then metrics port of each ordinal

	mu        sync.Mutex
	running   []bool
	starts    []int
	volumes   []string // the claim each ordinal's pod mounts now
	generated map[string]bool
}

// newStsCluster prepares (and arranges to remove, whatever happens) the
// network and names of one run; no pod runs yet.
func newStsCluster(logf func(string, ...any), image, suffix string, pods []stsPod) (*stsCluster, error) {
	c := &stsCluster{
		logf: logf, image: image, pods: pods,
		network: "rafty-sts-" + suffix, label: "rafty-sts-test=" + suffix, prefix: "sts" + suffix + "-",
		owner:   stsOwnerLabel + "=" + stsOwner(),
		running: make([]bool, len(pods)), starts: make([]int, len(pods)), volumes: make([]string, len(pods)),
		generated: map[string]bool{},
	}
	addrs, err := proctest.FreeAddrs("127.0.0.1", 2*len(pods))
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		c.ports = append(c.ports, a[strings.LastIndexByte(a, ':')+1:])
	}
	if _, err := proctest.Docker(time.Minute, "network", "create", "--label", c.label, "--label", c.owner, c.network); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *stsCluster) container(i int) string { return c.prefix + c.pods[i].Name }

// claimVolume is the Docker volume of claim generation gen of ordinal i:
// generation 0 is the StatefulSet's claim; a later one is the claim
// recreated after a lost volume.
func (c *stsCluster) claimVolume(i, gen int) string {
	claim := c.pods[i].Name
	for _, m := range c.pods[i].Mounts {
		if m.Claim != "" {
			claim = m.Claim
		}
	}
	v := c.prefix + claim
	if gen > 0 {
		v += fmt.Sprintf("-gen%d", gen)
	}
	return v
}

// startPod starts pod i's container with volume vol at its claim's mount
// path, as the kubelet would start the rendered pod: its environment
// verbatim, its host name, its DNS name through the headless Service as
// a network alias, the image's entrypoint unless the pod has a command,
// the pod's user and group, a read-only root, no new privileges, the
// capabilities dropped, the grace period as the stop timeout, and a
// restart on exit (restartPolicy Always). A new volume is first given the
// ownership fsGroup would give it: Docker has no fsGroup, but a new named
// volume takes the ownership of the image directory it is first mounted
// on, and the image's /data belongs to the unprivileged user.
func (c *stsCluster) startPod(i int, vol string) error {
	p := &c.pods[i]
	c.mu.Lock()
	fresh := !c.generated[vol]
	c.generated[vol] = true
	c.mu.Unlock()
	if fresh {
		if _, err := proctest.Docker(time.Minute, "volume", "create", "--label", c.label, "--label", c.owner, vol); err != nil {
			return err
		}
		if p.FSGroup != nil {
			if _, err := proctest.Docker(2*time.Minute, "run", "--rm", "--label", c.label, "--label", c.owner, "--network", "none",
				"--user", fmt.Sprintf("%d:%d", *p.FSGroup, *p.FSGroup), "-v", vol+":/data",
				"--entrypoint", "/kvnode", c.image, "version"); err != nil {
				return fmt.Errorf("giving volume %s to fsGroup %d: %w", vol, *p.FSGroup, err)
			}
		}
	}
	args := []string{"run", "-d", "--name", c.container(i), "--label", c.label, "--label", c.owner,
		"--hostname", p.Hostname, "--network", c.network, "--network-alias", p.FQDN,
		"--restart", "unless-stopped",
		"--stop-timeout", strconv.Itoa(int((p.TerminationGracePeriod - p.PreStopSleep).Seconds())),
		"-p", fmt.Sprintf("127.0.0.1:%s:%d", c.ports[2*i], p.Ports["client"]),
		"-p", fmt.Sprintf("127.0.0.1:%s:%d", c.ports[2*i+1], p.Ports["metrics"]),
	}
	for k, v := range p.Labels {
		args = append(args, "--label", k+"="+v)
	}
	if p.RunAsUser != nil {
		u := strconv.FormatInt(*p.RunAsUser, 10)
		if p.RunAsGroup != nil {
			u += ":" + strconv.FormatInt(*p.RunAsGroup, 10)
		}
		args = append(args, "--user", u)
	}
	if p.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	if p.NoNewPrivileges {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	for _, cp := range p.DropCapabilities {
		args = append(args, "--cap-drop", cp)
	}
	for _, cp := range p.AddCapabilities {
		args = append(args, "--cap-add", cp)
	}
	for _, e := range p.Env {
		args = append(args, "-e", e.Name+"="+e.Value)
	}
	for _, m := range p.Mounts {
		switch {
		case m.Claim != "":
			spec := vol + ":" + m.MountPath
			if m.ReadOnly {
				spec += ":ro"
			}
			args = append(args, "-v", spec)
		case m.EmptyDir:
			args = append(args, "--tmpfs", m.MountPath)
		}
	}
	cmd := append([]string(nil), p.Args...)
	if len(p.Command) > 0 {
		args = append(args, "--entrypoint", p.Command[0])
		cmd = append(append([]string(nil), p.Command[1:]...), p.Args...)
	}
	args = append(append(args, c.image), cmd...)
	if _, err := proctest.Docker(2*time.Minute, args...); err != nil {
		return err
	}
	c.mu.Lock()
	c.running[i] = true
	c.starts[i]++
	c.volumes[i] = vol
	c.mu.Unlock()
	return nil
}

// deletePod deletes pod i as Kubernetes does: the preStop pause, SIGTERM,
// SIGKILL if it has not exited within the rest of the grace period; then
// the container is removed (its volume stays, as a StatefulSet's claim
// does). A pod that did not exit with status 0 is reported.
func (c *stsCluster) deletePod(i int) error {
	p := &c.pods[i]
	c.mu.Lock()
	c.running[i] = false // no more requests, as the endpoints controller would see it
	c.mu.Unlock()
	time.Sleep(p.PreStopSleep) // the preStop sleep action: a pause, not a synchronisation
	name := c.container(i)
	_, stopErr := proctest.Docker(2*time.Minute, "stop", "-t", strconv.Itoa(int((p.TerminationGracePeriod - p.PreStopSleep).Seconds())), name)
	code, _ := proctest.Docker(30*time.Second, "inspect", "--format", "{{.State.ExitCode}}", name)
	var bad error
	if stopErr == nil && code != "0" {
		bad = fmt.Errorf("%s exited with status %s after SIGTERM; its log ends:\n%s", p.Name, code, c.LogTail(i, 20))
	}
	if _, err := proctest.Docker(time.Minute, "rm", "-f", name); err != nil {
		return errors.Join(stopErr, err)
	}
	return errors.Join(stopErr, bad)
}

// crashPod kills pod i's container (SIGKILL), waits until another pod
// leads, and starts the container again, as the kubelet restarts a
// crashed container in place.
func (c *stsCluster) crashPod(i int) error {
	c.mu.Lock()
	c.running[i] = false
	c.mu.Unlock()
	if _, err := proctest.Docker(time.Minute, "kill", c.container(i)); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.leaderMembers()
		if err == nil && !slices.ContainsFunc(resp.GetMembers(), func(m *kvpb.Member) bool { return m.GetLeader() && m.GetName() == c.pods[i].Name }) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no new leader within 30 s of killing %s (last: %v)", c.pods[i].Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := proctest.Docker(time.Minute, "start", c.container(i)); err != nil {
		return err
	}
	c.mu.Lock()
	c.running[i] = true
	c.starts[i]++
	c.mu.Unlock()
	return nil
}

// volume returns the volume pod i mounts now.
func (c *stsCluster) volume(i int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.volumes[i]
}

func (c *stsCluster) Name() string {
	return fmt.Sprintf("StatefulSet on Docker, up to %d pods", len(c.pods))
}
func (c *stsCluster) Size() int { return len(c.pods) }

// Members is every ordinal: the test itself scales the StatefulSet, and
// clients keep sending to a deleted pod's address, as to a DNS name that
// stopped resolving (those requests fail and are recorded as such).
func (c *stsCluster) Members() []int {
	all := make([]int, len(c.pods))
	for i := range all {
		all[i] = i
	}
	return all
}
func (c *stsCluster) ClusterName() string {
	return c.pods[0].env("KVNODE_CLUSTER_ID")
}
func (c *stsCluster) ClientAddr(i int) string  { return "127.0.0.1:" + c.ports[2*i] }
func (c *stsCluster) MetricsAddr(i int) string { return "127.0.0.1:" + c.ports[2*i+1] }
func (c *stsCluster) PeerAddr(int) string      { return "" }
func (c *stsCluster) caps() caps               { return caps{} }

// Alive reports whether pod i exists (is not deleted).
func (c *stsCluster) Alive(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running[i]
}

func (c *stsCluster) Incarnation(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts[i]
}

func (c *stsCluster) Paused(int) bool { return false }

var errStsUnsupported = errors.New("not a fault of the StatefulSet test")

func (c *stsCluster) Kill(...int) error                     { return errStsUnsupported }
func (c *stsCluster) Start(int) error                       { return errStsUnsupported }
func (c *stsCluster) Pause(int) error                       { return errStsUnsupported }
func (c *stsCluster) Resume(int) error                      { return errStsUnsupported }
func (c *stsCluster) Partition([]pair) error                { return errStsUnsupported }
func (c *stsCluster) Heal() error                           { return nil }
func (c *stsCluster) SetLatency(time.Duration) error        { return errStsUnsupported }
func (c *stsCluster) ResetConns() error                     { return errStsUnsupported }
func (c *stsCluster) SetDiskDelay(int, time.Duration) error { return errStsUnsupported }
func (c *stsCluster) PowerCut(int, *rand.Rand) (powerloss.CutReport, error) {
	return powerloss.CutReport{}, errStsUnsupported
}

// Crashes reports running pods whose container stopped or was restarted
// by Docker (restartPolicy Always hides an exit from a later look).
func (c *stsCluster) Crashes() []string {
	var out []string
	for i := range c.pods {
		if !c.Alive(i) {
			continue
		}
		st, err := proctest.Docker(30*time.Second, "inspect", "--format", "{{.State.Running}} {{.RestartCount}}", c.container(i))
		if err == nil && st != "true 0" {
			out = append(out, fmt.Sprintf("%s exited by itself (running, restarts: %s); its log ends:\n%s", c.pods[i].Name, st, c.LogTail(i, 30)))
		}
	}
	return out
}

func (c *stsCluster) LogTail(i, n int) string {
	out, err := proctest.Docker(time.Minute, "logs", "--tail", strconv.Itoa(n), c.container(i))
	if err != nil {
		return err.Error()
	}
	return out
}

// Close removes every container, volume and the network of the run, by
// its label.
func (c *stsCluster) Close() {
	if ids, err := proctest.Docker(time.Minute, "ps", "-aq", "--filter", "label="+c.label); err == nil && ids != "" {
		if _, err := proctest.Docker(2*time.Minute, append([]string{"rm", "-f"}, strings.Fields(ids)...)...); err != nil {
			c.logf("removing containers: %v", err)
		}
	}
	if vols, err := proctest.Docker(time.Minute, "volume", "ls", "-q", "--filter", "label="+c.label); err == nil && vols != "" {
		if _, err := proctest.Docker(2*time.Minute, append([]string{"volume", "rm", "-f"}, strings.Fields(vols)...)...); err != nil {
			c.logf("removing volumes: %v", err)
		}
	}
	if _, err := proctest.Docker(time.Minute, "network", "rm", c.network); err != nil {
		c.logf("removing network %s: %v", c.network, err)
	}
}

// stsOwnerLabel names the run that created a container, volume or
// network: host name and process ID of the test binary.
const stsOwnerLabel = "rafty-sts-test.owner"

func stsOwner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// sweepStale removes what earlier runs on this host left behind when they
// could not clean up (a `go test -timeout` panic or an interrupt skips
// t.Cleanup): containers, volumes and networks whose owner process is
// gone. Runs of other hosts (a shared Docker daemon) and live runs are
// left alone.
func sweepStale(logf func(string, ...any)) {
	host, _ := os.Hostname()
	stale := func(owner string) bool {
		h, pidStr, ok := strings.Cut(owner, ":")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || h != host || pid <= 0 {
			return false
		}
		err = syscall.Kill(pid, 0)
		return err != nil && !errors.Is(err, syscall.EPERM)
	}
	// ownerOf finds the owner label in docker's "k=v,k=v" label list.
	ownerOf := func(labels string) string {
		for kv := range strings.SplitSeq(labels, ",") {
			if v, ok := strings.CutPrefix(kv, stsOwnerLabel+"="); ok {
				return v
			}
		}
		return ""
	}
	for _, kind := range []struct {
		list, rm []string
	}{
		{[]string{"ps", "-a"}, []string{"rm", "-f"}},
		{[]string{"volume", "ls"}, []string{"volume", "rm", "-f"}},
		{[]string{"network", "ls"}, []string{"network", "rm"}},
	} {
		format := "{{.Names}}\t{{.Labels}}"
		if kind.list[0] != "ps" {
			format = "{{.Name}}\t{{.Labels}}"
		}
		out, err := proctest.Docker(time.Minute, append(kind.list, "--filter", "label="+stsOwnerLabel, "--format", format)...)
		if err != nil || out == "" {
			continue
		}
		var names []string
		for line := range strings.SplitSeq(out, "\n") {
			name, labels, _ := strings.Cut(line, "\t")
			if stale(ownerOf(labels)) {
				names = append(names, name)
			}
		}
		if len(names) > 0 {
			logf("removing what an earlier run left behind: %s", strings.Join(names, " "))
			if _, err := proctest.Docker(2*time.Minute, append(kind.rm, names...)...); err != nil {
				logf("%v", err)
			}
		}
	}
}

// kvnodeCLI runs the kvnode command line inside pod i's container, as an
// operator does with `kubectl exec rafty-0 -- /kvnode ...`: its default
// endpoint is the pod's own client port, and it follows the leader
// redirect to the leader's client address (a DNS name of the headless
// Service) by itself.
func (c *stsCluster) kvnodeCLI(i int, timeout time.Duration, args ...string) (string, error) {
	return proctest.Docker(timeout, append([]string{"exec", c.container(i), "/kvnode"}, args...)...)
}

// members returns the membership as pod i serves it (MemberList on its
// client port).
func (c *stsCluster) members(ctx context.Context, i int) (*kvpb.MemberListResponse, error) {
	conn, err := grpc.NewClient(c.ClientAddr(i), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return kvpb.NewClusterClient(conn).MemberList(ctx, &kvpb.MemberListRequest{})
}

// leaderMembers returns the membership as the leader serves it, asking the
// running pods in turn.
func (c *stsCluster) leaderMembers() (*kvpb.MemberListResponse, error) {
	var last error = errors.New("no pod runs")
	for i := range c.pods {
		if !c.Alive(i) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := c.members(ctx, i)
		cancel()
		switch {
		case err != nil:
			last = err
		case resp.GetFromLeader():
			return resp, nil
		default:
			last = fmt.Errorf("%s is not the leader (leader %d)", c.pods[i].Name, resp.GetLeaderId())
		}
	}
	return nil, last
}

// voters returns the names of the voters of a membership that is not
// joint and has no learner, by name with their IDs; ok is false for a
// membership in transition.
func voters(resp *kvpb.MemberListResponse) (map[string]uint64, bool) {
	if resp.GetJoint() {
		return nil, false
	}
	out := map[string]uint64{}
	for _, m := range resp.GetMembers() {
		if m.GetLearner() || m.GetOutgoing() {
			return nil, false
		}
		out[m.GetName()] = m.GetId()
	}
	return out, true
}

// waitMembers polls the leader's membership until it is settled (no
// learner, not joint) and ok accepts its voters, or timeout.
func (c *stsCluster) waitMembers(timeout time.Duration, what string, ok func(map[string]uint64) bool) (map[string]uint64, error) {
	deadline := time.Now().Add(timeout)
	last := "nothing yet"
	for {
		resp, err := c.leaderMembers()
		if err != nil {
			last = err.Error()
		} else {
			last = describeMembers(resp)
			if v, settled := voters(resp); settled && ok(v) {
				return v, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: not within %v; last membership: %s", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitReadyz waits until pod i's /readyz answers want (200, or anything
// else when want is 0).
func (c *stsCluster) waitReadyz(i int, want bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code := proctest.Readyz(c.MetricsAddr(i))
		if (code == http.StatusOK) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: /readyz %d after %v (want ready=%v); its log ends:\n%s", c.pods[i].Name, code, timeout, want, c.LogTail(i, 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
