package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.yaml.in/yaml/v3"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/internal/proctest"
)

// The StatefulSet's behaviour, tested with Docker: no Kubernetes runs
// here, so each pod of deploy/k8s/statefulset.yaml becomes a container of
// the real image, with the environment Kubernetes would give it (rendered
// from the manifest itself: fieldRefs, $(VAR) references), the pod's
// host name, and a network alias equal to its FQDN under the headless
// Service. The test scales 3→5→3 (member remove, then stop), replaces a
// pod whose volume is lost, and restarts every pod, while clients write;
// every acknowledged write is read back and the history is linearizable.

// stsManifest is the part of a StatefulSet this test reads.
type stsManifest struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		ServiceName string `yaml:"serviceName"`
		Template    struct {
			Spec struct {
				Containers []struct {
					Args []string `yaml:"args"`
					Env  []struct {
						Name      string `yaml:"name"`
						Value     string `yaml:"value"`
						ValueFrom *struct {
							FieldRef *struct {
								FieldPath string `yaml:"fieldPath"`
							} `yaml:"fieldRef"`
						} `yaml:"valueFrom"`
					} `yaml:"env"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

var k8sVarRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// podEnv renders the container environment of pod ordinal ord in
// namespace ns the way the kubelet does: fieldRefs resolved, $(VAR)
// replaced by variables defined earlier in the list (others left as is).
func podEnv(t *testing.T, m *stsManifest, ord int, ns string) []string {
	t.Helper()
	pod := fmt.Sprintf("%s-%d", m.Metadata.Name, ord)
	vars := map[string]string{}
	var env []string
	for _, e := range m.Spec.Template.Spec.Containers[0].Env {
		val := k8sVarRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
			if v, ok := vars[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		})
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("env %s: only fieldRef sources are modelled", e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				val = pod
			case "metadata.namespace":
				val = ns
			default:
				t.Fatalf("env %s: unexpected fieldRef %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		vars[e.Name] = val
		env = append(env, e.Name+"="+val)
	}
	return env
}

// dockerPods runs StatefulSet pods as containers.
type dockerPods struct {
	t       *testing.T
	m       *stsManifest
	ns      string
	image   string
	network string
	prefix  string
	mu      sync.Mutex
	running map[int]bool
	vols    map[int]string // ordinal -> current volume
	gen     map[int]int
	cliPort map[int]string // host port of each pod's client port
}

func (d *dockerPods) container(ord int) string { return fmt.Sprintf("%s-%d", d.prefix, ord) }

func (d *dockerPods) fqdn(ord int) string {
	return fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", d.m.Metadata.Name, ord, d.m.Spec.ServiceName, d.ns)
}

// start runs pod ord (a new container on its current volume; a new
// volume when fresh, as after `kubectl delete pvc`).
func (d *dockerPods) start(ord int, fresh bool) {
	d.t.Helper()
	d.mu.Lock()
	if _, ok := d.vols[ord]; !ok || fresh {
		d.gen[ord]++
		d.vols[ord] = fmt.Sprintf("%s-data-%d-%d", d.prefix, ord, d.gen[ord])
	}
	vol := d.vols[ord]
	d.mu.Unlock()
	_, _ = proctest.Docker(time.Minute, "rm", "-f", d.container(ord))
	args := []string{"run", "-d", "--name", d.container(ord),
		"--hostname", fmt.Sprintf("%s-%d", d.m.Metadata.Name, ord),
		"--network", d.network, "--network-alias", d.fqdn(ord),
		"--read-only",
		// Kubernetes makes the volume writable for the pod's user with
		// fsGroup; Docker copies the ownership of the image's /data into
		// a new volume, so the volume goes there.
		"-v", vol + ":/data",
		"-p", "127.0.0.1::2379",
	}
	for _, e := range podEnv(d.t, d.m, ord, d.ns) {
		if strings.HasPrefix(e, "KVNODE_DATA_DIR=") {
			e = "KVNODE_DATA_DIR=/data"
		}
		args = append(args, "-e", e)
	}
	args = append(args, "-e", "KVNODE_TICK=100ms")
	args = append(append(args, d.image), d.m.Spec.Template.Spec.Containers[0].Args...)
	if out, err := proctest.Docker(2*time.Minute, args...); err != nil {
		d.t.Fatalf("starting pod %d: %v\n%s", ord, err, out)
	}
	out, err := proctest.Docker(time.Minute, "port", d.container(ord), "2379/tcp")
	if err != nil {
		d.t.Fatalf("port of pod %d: %v %s", ord, err, out)
	}
	first := strings.Split(strings.TrimSpace(out), "\n")[0]
	d.mu.Lock()
	d.cliPort[ord] = first[strings.LastIndexByte(first, ':')+1:]
	d.running[ord] = true
	d.mu.Unlock()
}

// stop stops pod ord gracefully (SIGTERM, as the kubelet does).
func (d *dockerPods) stop(ord int) {
	d.t.Helper()
	d.mu.Lock()
	d.running[ord] = false
	d.mu.Unlock()
	if out, err := proctest.Docker(time.Minute, "stop", "-t", "20", d.container(ord)); err != nil {
		d.t.Fatalf("stopping pod %d: %v\n%s", ord, err, out)
	}
}

// endpoints are the host addresses of the running pods' client ports.
func (d *dockerPods) endpoints() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var eps []string
	for ord := range 8 {
		if d.running[ord] {
			eps = append(eps, "127.0.0.1:"+d.cliPort[ord])
		}
	}
	return eps
}

// exec runs the kvnode CLI inside pod ord (whose DNS resolves the pods'
// FQDNs, so leader redirects work) against its own client port.
func (d *dockerPods) exec(ord int, args ...string) (string, error) {
	full := append([]string{"exec", d.container(ord), "/kvnode"}, args...)
	full = append(full, "--endpoints", "127.0.0.1:2379", "--timeout", "30s")
	return proctest.Docker(time.Minute, full...)
}

// ready reports whether pod ord answers /readyz with 200, asked inside
// the container.
func (d *dockerPods) ready(ord int) bool {
	_, err := proctest.Docker(20*time.Second, "exec", d.container(ord), "/kvnode", "health", "--url", "http://127.0.0.1:9090/readyz", "--timeout", "2s")
	return err == nil
}

// voterCount is the number of voters in pod ord's member list (the
// leader's view), -1 if it cannot tell.
func (d *dockerPods) voterCount(ord int) int {
	out, err := d.exec(ord, "member", "list")
	if err != nil || strings.Contains(out, "a follower") {
		return -1
	}
	n := 0
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 4 && f[4] == "voter" {
			n++
		}
	}
	return n
}

// linOp is one client operation of the history.
type linOp struct {
	put        bool
	key, value string
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(linOp).key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(linOp)
		if in.put {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	Equal: func(a, b any) bool { return a == b },
}

// TestStatefulSetDocker: see the top of the file.
func TestStatefulSetDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Docker StatefulSet test in -short mode")
	}
	if _, err := proctest.Docker(30*time.Second, "info"); err != nil {
		t.Skipf("docker is not usable: %v", err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(repo, "deploy", "k8s", "statefulset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m stsManifest
	if err := yaml.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	bin := kvnodeBinary(t)
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid())
	image := "rafty-kvnode-sts:" + suffix
	buildCmd := exec.Command(filepath.Join(repo, "scripts", "build-image.sh"), image)
	buildCmd.Env = append(os.Environ(), "KVNODE_BIN="+bin)
	if out, err := buildCmd.CombinedOutput(); err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = proctest.Docker(time.Minute, "rmi", "-f", image) })
	d := &dockerPods{t: t, m: &m, ns: "default", image: image, network: "raftysts" + suffix, prefix: "raftysts" + suffix,
		running: map[int]bool{}, vols: map[int]string{}, gen: map[int]int{}, cliPort: map[int]string{}}
	if out, err := proctest.Docker(time.Minute, "network", "create", d.network); err != nil {
		t.Fatalf("network: %v %s", err, out)
	}
	t.Cleanup(func() {
		for ord := range 8 {
			if t.Failed() {
				if out, err := proctest.Docker(time.Minute, "logs", "--tail", "40", d.container(ord)); err == nil {
					t.Logf("---- pod %d ----\n%s", ord, out)
				}
			}
			_, _ = proctest.Docker(time.Minute, "rm", "-f", d.container(ord))
		}
		for ord, g := range d.gen {
			for i := 1; i <= g; i++ {
				_, _ = proctest.Docker(time.Minute, "volume", "rm", "-f", fmt.Sprintf("%s-data-%d-%d", d.prefix, ord, i))
			}
		}
		_, _ = proctest.Docker(time.Minute, "network", "rm", d.network)
	})

	waitReady := func(ords ...int) {
		t.Helper()
		for _, ord := range ords {
			waitFor(t, 90*time.Second, fmt.Sprintf("pod %d to be ready", ord), func() bool { return d.ready(ord) })
		}
	}
	waitVoters := func(ord, n int) {
		t.Helper()
		waitFor(t, 90*time.Second, fmt.Sprintf("%d voters", n), func() bool { return d.voterCount(ord) == n })
	}

	for ord := range 3 {
		d.start(ord, true)
	}
	waitReady(0, 1, 2)

	// Clients write (and read) throughout; each records its history.
	var (
		histMu  sync.Mutex
		history []porcupine.Operation
		acked   []string // unique keys whose put was acknowledged
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		nOK     atomic.Int64
		clock   atomic.Int64
		started = time.Now()
	)
	now := func() int64 { return int64(time.Since(started)) + clock.Add(1) }
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cl, err := dialClient(d.endpoints(), time.Second)
				if err != nil {
					continue
				}
				key := fmt.Sprintf("k%d", i%5)
				value := fmt.Sprintf("w%d-%d", w, i)
				call := now()
				perr := putCtx(context.Background(), cl, key, value)
				ret := now()
				if perr != nil {
					ret = math.MaxInt64 // may have happened
				} else {
					nOK.Add(1)
				}
				histMu.Lock()
				history = append(history, porcupine.Operation{ClientId: w, Input: linOp{put: true, key: key, value: value}, Call: call, Return: ret})
				histMu.Unlock()
				// A key of its own, read back at the end.
				if putCtx(context.Background(), cl, "u-"+value, value) == nil {
					histMu.Lock()
					acked = append(acked, value)
					histMu.Unlock()
				}
				call = now()
				var resp *kvpb.GetResponse
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				gerr := cl.call(ctx, readRetry, func(ctx context.Context, c kvpb.KVClient) error {
					var err error
					resp, err = c.Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
					return err
				})
				cancel()
				ret = now()
				if gerr == nil {
					histMu.Lock()
					history = append(history, porcupine.Operation{ClientId: w, Input: linOp{key: key}, Output: string(resp.GetKv().GetValue()), Call: call, Return: ret})
					histMu.Unlock()
				}
				cl.Close()
			}
		})
	}

	// Scale up 3 -> 5: the new ordinals join and are promoted.
	d.start(3, true)
	d.start(4, true)
	waitReady(3, 4)
	waitVoters(0, 5)

	// Scale down 5 -> 3: remove the members first, then stop the pods.
	for _, ord := range []int{4, 3} {
		if out, err := d.exec(0, "member", "remove", fmt.Sprintf("rafty-%d", ord)); err != nil {
			t.Fatalf("member remove rafty-%d: %v\n%s", ord, err, out)
		}
		d.stop(ord)
	}
	waitVoters(0, 3)

	// Replace rafty-1 with an empty volume: it joins as a new member
	// and replaces its old self.
	d.stop(1)
	d.start(1, true)
	waitReady(1)
	waitFor(t, 90*time.Second, "rafty-1 replaced", func() bool {
		out, err := d.exec(0, "member", "list")
		return err == nil && !strings.Contains(out, "a follower") && d.voterCount(0) == 3 &&
			!regexp.MustCompile(`(?m)^2\s`).MatchString(out)
	})

	// Restart every pod (a rolling restart, one at a time).
	for ord := range 3 {
		d.stop(ord)
		d.start(ord, false)
		waitReady(ord)
	}
	close(stop)
	wg.Wait()
	if nOK.Load() == 0 {
		t.Fatal("no write was acknowledged")
	}

	// Every acknowledged write is in the history, and the history is
	// linearizable; the final values are readable from every pod.
	res, _ := porcupine.CheckOperationsVerbose(registerModel, history, time.Minute)
	if res == porcupine.Illegal {
		t.Fatalf("the history of %d operations is not linearizable", len(history))
	}
	cl, err := dialClient(d.endpoints(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for _, v := range acked {
		got, found, err := get(cl, "u-"+v)
		if err != nil || !found || got != v {
			t.Fatalf("acknowledged write u-%s read back as %q (found %v, err %v)", v, got, found, err)
		}
	}
	t.Logf("%d register operations (%v), %d acknowledged unique writes read back", len(history), res, len(acked))
}
