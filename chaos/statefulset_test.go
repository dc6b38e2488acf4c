package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/rafty-db/rafty/internal/proctest"
)

// The StatefulSet's size before and after the scale-up.
const (
	stsInitial = 3
	stsScaled  = 5
)

// TestStatefulSetDocker is the StatefulSet's membership behaviour (issue
// 14) without a Kubernetes cluster: every pod is rendered from
// deploy/k8s/statefulset.yaml itself (deploy/k8s/cmd/stsrender: the
// environment with $(VAR) expanded, the claim, the DNS name) and run as a
// container of the real image (FROM scratch around the static binary) on
// a network of its own, with the pod's DNS name as its network alias, and
// the operator's commands are run with `docker exec` as they would be
// with `kubectl exec`. While clients write and read, it
//
//  1. starts rafty-0..2 (podManagementPolicy Parallel): they bootstrap;
//  2. scales to 5: rafty-3 and rafty-4 (ordinals at or above
//     KVNODE_CLUSTER_SIZE) join as learners and are promoted: 5 voters;
//  3. crashes the leading pod (its container restarted in place) until
//     rafty-3 or rafty-4 leads, at most 5 times, then scales to 3 the
//     documented way (docs/operations.md): `kvnode member remove
//     rafty-4`, then `rafty-3` (the removed members must turn not ready),
//     then their pods are deleted (their claims are kept, as a StatefulSet
//     keeps them);
//  4. scales to 5 again onto those kept volumes: each pod moves its
//     removed member's data aside and joins under a new ID (IDs are never
//     reused); then scales back to 3 the same way;
//  5. replaces rafty-1 with an empty volume (a lost disk): it joins under
//     a new ID and its old ID is removed;
//  6. restarts every pod (deletes all, then creates all on their claims);
//
// then reads every key back, checks that no acknowledged write is lost,
// that the history is linearizable (porcupine) and that serializable
// reads never went back in time on one member, and that the replicas
// converge. Everything the test creates (containers, volumes, network,
// image) is removed at the end, whatever happens; what a run killed
// before its cleanup left (a test timeout) is removed by the next run.
func TestStatefulSetDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the StatefulSet-on-Docker test in -short mode: it builds an image and runs up to 5 containers for about 2 minutes")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("skipping: no docker CLI on PATH")
	}
	if out, err := proctest.Docker(20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("skipping: no Docker daemon reachable: %v %s", err, out)
	}
	begin := time.Now()
	sweepStale(t.Logf)
	seed := baseSeed(t)
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	suffix := strconv.FormatUint(seed%1e6, 36) + strconv.Itoa(os.Getpid()%1e5)
	ns := "sts" + suffix // the namespace is in every DNS name and the cluster ID

	pods, err := renderStatefulSet(repo, t.TempDir(), ns, stsScaled)
	if err != nil {
		t.Fatal(err)
	}
	if size, err := strconv.Atoi(pods[0].env("KVNODE_CLUSTER_SIZE")); err != nil || size != stsInitial {
		t.Fatalf("the manifest's KVNODE_CLUSTER_SIZE is %q; this test scales from %d", pods[0].env("KVNODE_CLUSTER_SIZE"), stsInitial)
	}
	image := "rafty-kvnode-sts:" + suffix
	build := exec.Command(filepath.Join(repo, "scripts", "build-image.sh"), image)
	build.Env = append(os.Environ(), "KVNODE_BIN="+kvnodeBinary(t, "plain"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := proctest.Docker(time.Minute, "rmi", "-f", image); err != nil {
			t.Logf("removing image %s: %v", image, err)
		}
	})
	c, err := newStsCluster(t.Logf, image, suffix, pods)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := range c.pods {
				if c.Alive(i) {
					t.Logf("%s's log ends:\n%s", c.pods[i].Name, c.LogTail(i, 40))
				}
			}
		}
		c.Close()
	})
	t.Logf("namespace %s, network %s, image %s; prepared in %v", ns, c.network, image, time.Since(begin).Round(time.Millisecond))

	var violations []string
	violate := func(format string, args ...any) {
		v := fmt.Sprintf(format, args...)
		t.Log("VIOLATION: " + v)
		violations = append(violations, v)
	}
	step := func(name string, fn func() error) {
		t.Helper()
		if t.Failed() {
			return
		}
		start := time.Now()
		if err := fn(); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		t.Logf("%-58s %6.1fs (at %5.1fs)", name, time.Since(start).Seconds(), time.Since(begin).Seconds())
	}
	// parallel runs fn for each of is at once.
	parallel := func(is []int, fn func(int) error) error {
		errs := make([]error, len(is))
		var wg sync.WaitGroup
		for k, i := range is {
			wg.Go(func() { errs[k] = fn(i) })
		}
		wg.Wait()
		return joinErrs(errs)
	}
	startAll := func(is []int, gen func(int) string) error {
		return parallel(is, func(i int) error { return c.startPod(i, gen(i)) })
	}
	readyAll := func(is []int) error {
		return parallel(is, func(i int) error { return c.waitReadyz(i, true, 90*time.Second) })
	}
	initial := []int{0, 1, 2}
	ids := map[string]uint64{}  // the voters, by pod name, as last seen
	seen := map[uint64]string{} // every ID ever seen, with its name
	// fresh checks that the members named joined under IDs never seen
	// before (IDs are never reused), and records v's IDs.
	fresh := func(v map[string]uint64, names ...string) error {
		for _, n := range names {
			if old, ok := seen[v[n]]; ok {
				return fmt.Errorf("%s joined under ID %d, which %s had before: an ID was reused", n, v[n], old)
			}
		}
		for n, id := range v {
			if old, ok := seen[id]; ok && old != n {
				return fmt.Errorf("ID %d is %s now and was %s before", id, n, old)
			}
			seen[id] = n
		}
		return nil
	}

	step("start rafty-0..2 (bootstrap)", func() error {
		if err := startAll(initial, func(i int) string { return c.claimVolume(i, 0) }); err != nil {
			return err
		}
		if err := readyAll(initial); err != nil {
			return err
		}
		v, err := c.waitMembers(30*time.Second, "3 voters", func(v map[string]uint64) bool { return len(v) == 3 })
		if err != nil {
			return err
		}
		ids = v
		return fresh(v)
	})
	if t.Failed() {
		return
	}
	t.Logf("members after bootstrap: %v", ids)

	nc, err := dialNodes(c)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	o := defaultOpts()
	o.workers, o.think = 10, 10*time.Millisecond
	cfg := workloadConfig{workers: o.workers, keys: o.keys, prefix: fmt.Sprintf("sts%d/", seed),
		opTimeout: o.opTimeout, think: o.think, maxOps: o.maxOps}
	w := startWorkload(cfg, nc, c.Size(), seed)
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()
	progress := func(what string) error {
		if !waitProgress(w, 10, 30*time.Second) {
			return fmt.Errorf("%s: fewer than 10 writes acknowledged within 30 s", what)
		}
		return nil
	}
	step("clients write", func() error { return progress("at the start") })

	scaleUp := func(gen int) func() error {
		return func() error {
			before := maps(ids)
			if err := startAll([]int{3, 4}, func(i int) string { return c.claimVolume(i, gen) }); err != nil {
				return err
			}
			v, err := c.waitMembers(120*time.Second, "5 voters after the scale-up", func(v map[string]uint64) bool {
				return len(v) == 5 && v["rafty-3"] != 0 && v["rafty-4"] != 0
			})
			if err != nil {
				return err
			}
			for name, id := range v {
				if old, ok := before[name]; ok && old != id {
					return fmt.Errorf("%s changed ID from %d to %d in a scale-up", name, old, id)
				}
			}
			if err := fresh(v, "rafty-3", "rafty-4"); err != nil {
				return err
			}
			ids = v
			if err := readyAll([]int{3, 4}); err != nil {
				return err
			}
			if out, err := c.kvnodeCLI(0, time.Minute, "member", "list"); err == nil {
				t.Logf("  kvnode member list (in rafty-0):\n%s", out)
			}
			return progress("after the scale-up")
		}
	}
	scaleDown := func() error {
		if resp, err := c.leaderMembers(); err == nil {
			t.Logf("  before the scale-down: %s", describeMembers(resp))
		}
		for _, i := range []int{4, 3} {
			name := c.pods[i].Name
			out, err := c.kvnodeCLI(0, time.Minute, "member", "remove", name)
			if err != nil {
				return fmt.Errorf("kvnode member remove %s: %v", name, err)
			}
			t.Logf("  kvnode member remove %s (in rafty-0): %s", name, out)
		}
		v, err := c.waitMembers(60*time.Second, "3 voters after removing rafty-4 and rafty-3", func(v map[string]uint64) bool {
			return len(v) == 3 && v["rafty-3"] == 0 && v["rafty-4"] == 0
		})
		if err != nil {
			return err
		}
		ids = v
		// A removed member goes passive and not ready (so a Service
		// stops sending it clients) before its pod is deleted.
		if err := parallel([]int{3, 4}, func(i int) error { return c.waitReadyz(i, false, 30*time.Second) }); err != nil {
			return fmt.Errorf("a removed member stays ready: %w", err)
		}
		if err := parallel([]int{3, 4}, c.deletePod); err != nil {
			return err
		}
		if out, err := c.kvnodeCLI(0, time.Minute, "member", "list"); err == nil {
			t.Logf("  kvnode member list (in rafty-0):\n%s", out)
		}
		return progress("after the scale-down")
	}
	step("scale to 5: rafty-3, rafty-4 join and are promoted", scaleUp(0))
	// The leader on a departing pod is the case a scale-down must
	// survive (removing the leader hands leadership over first). Nothing
	// moves leadership on request, and a graceful stop hands it to the
	// most up-to-date voter, which is one of the older pods; so crash the
	// leading pod (SIGKILL; the kubelet restarts its container in place)
	// until the election that follows makes rafty-3 or rafty-4 the leader,
	// a few times at most.
	step("crash the leading pod until rafty-3 or rafty-4 leads", func() error {
		for try := 0; ; try++ {
			resp, err := c.leaderMembers()
			for wait := time.Now().Add(30 * time.Second); err != nil && time.Now().Before(wait); {
				time.Sleep(200 * time.Millisecond)
				resp, err = c.leaderMembers()
			}
			if err != nil {
				return err
			}
			lead := -1
			for _, m := range resp.GetMembers() {
				if m.GetLeader() {
					lead = slices.IndexFunc(c.pods, func(p stsPod) bool { return p.Name == m.GetName() })
				}
			}
			if lead >= 3 || try == 5 {
				t.Logf("  after %d crashes: %s", try, describeMembers(resp))
				return nil
			}
			if lead < 0 {
				return fmt.Errorf("no leader in %s", describeMembers(resp))
			}
			if err := c.crashPod(lead); err != nil {
				return err
			}
			if err := c.waitReadyz(lead, true, 90*time.Second); err != nil {
				return err
			}
		}
	})
	step("scale to 3: member remove rafty-4, rafty-3; delete pods", scaleDown)

	step("scale to 5 on the removed pods' kept claims: rejoin anew", func() error {
		if err := scaleUp(0)(); err != nil {
			return err
		}
		for _, i := range []int{3, 4} {
			if !strings.Contains(c.LogTail(i, 100000), "moved it aside") {
				return fmt.Errorf("%s: no \"moved it aside\" in its log: the removed member's data was not moved aside", c.pods[i].Name)
			}
		}
		return nil
	})
	step("scale to 3 again", scaleDown)

	var replacedInc int
	step("replace rafty-1 with an empty volume", func() error {
		oldID := ids["rafty-1"]
		if err := c.deletePod(1); err != nil {
			return err
		}
		if err := c.startPod(1, c.claimVolume(1, 1)); err != nil {
			return err
		}
		replacedInc = c.Incarnation(1)
		v, err := c.waitMembers(120*time.Second, "rafty-1 replaced under a new ID", func(v map[string]uint64) bool {
			if len(v) != 3 || v["rafty-1"] == 0 || v["rafty-1"] == oldID {
				return false
			}
			return !slices.Contains(valuesOf(v), oldID)
		})
		if err != nil {
			return err
		}
		t.Logf("  rafty-1: ID %d replaced by %d", oldID, v["rafty-1"])
		if err := fresh(v, "rafty-1"); err != nil {
			return err
		}
		ids = v
		if err := c.waitReadyz(1, true, 90*time.Second); err != nil {
			return err
		}
		return progress("after the replacement")
	})

	step("restart every pod (delete all, create all)", func() error {
		before := maps(ids)
		if err := parallel(initial, c.deletePod); err != nil {
			return err
		}
		if err := startAll(initial, c.volume); err != nil {
			return err
		}
		if err := readyAll(initial); err != nil {
			return err
		}
		v, err := c.waitMembers(60*time.Second, "the same 3 voters after the restart", func(v map[string]uint64) bool {
			return len(v) == 3
		})
		if err != nil {
			return err
		}
		for name, id := range before {
			if v[name] != id {
				return fmt.Errorf("after the restart the members are %v, before %v", v, before)
			}
		}
		return progress("after the restart")
	})

	for _, cr := range c.Crashes() {
		violate("crash: %s", cr)
	}
	w.Stop()
	stopped = true
	if t.Failed() {
		return
	}
	if n := w.unexpected.Load(); n > 0 {
		violate("%d operations got an error a well-formed request must never get; first: %s", n, w.firstUnexp)
	}

	// Read everything back through the pods that run, linearizably.
	final := map[string]string{}
	rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	for k := range cfg.keys {
		op, err := readKey(rctx, nc, w.h, stsInitial, cfg.key(k), k)
		if err != nil {
			violate("final read: %v", err)
			continue
		}
		final[op.Key] = ""
		if op.Found {
			final[op.Key] = op.Got
		}
	}
	once, err := readPrefix(rctx, nc, stsInitial, cfg.prefix+"u/")
	cancel()
	if err != nil {
		violate("final read of the keys written once: %v", err)
	}
	ops := w.h.snapshot()
	if err == nil {
		for i := range ops {
			if ops[i].Kind == opUPut {
				final[ops[i].Key] = once[ops[i].Key]
			}
		}
	}
	// The pods that remain: rafty-0..2 (waitConverged wants every node
	// of the cluster it is given to answer).
	view := &sizedCluster{cluster: c, n: stsInitial}
	if err := waitConverged(view, &nodeClients{c: view, conns: nc.conns[:stsInitial], kv: nc.kv[:stsInitial]}, 60*time.Second); err != nil {
		violate("replicas do not converge: %v", err)
	}

	lr := checkLinearizable(ops, o.checkTimeout)
	switch lr.result {
	case porcupine.Illegal:
		violate("the history is not linearizable (porcupine)")
	case porcupine.Unknown:
		t.Logf("porcupine timed out after %v: the history is neither proven nor refuted", o.checkTimeout)
	}
	// Serializable reads must not go back in time on one member: the
	// replaced rafty-1 is another member (node index Size()).
	ser := slices.Clone(ops)
	for i := range ser {
		if ser[i].Node == 1 && replacedInc > 0 && ser[i].Inc[0] >= replacedInc {
			ser[i].Node = c.Size()
		}
	}
	same, across, _ := checkSerializable(ser, c.Size()+1, nil)
	for _, v := range append(same, across...) {
		violate("serializable read went back in time: %s", v)
	}
	for _, v := range checkIndexes(ops) {
		violate("inconsistent response: %s", v)
	}
	lost, acked := lostWrites(ops, final)
	for _, l := range lost {
		violate("acknowledged write lost: %s", l)
	}
	t.Logf("%d operations: %s", len(ops), summarizeOps(ops))
	if top := topErrors(ops, outUnknown, 3); top != "" {
		t.Logf("unknown outcomes, most frequent errors: %s", top)
	}
	t.Logf("porcupine: %s on %d operations in %v; %d acknowledged writes read back, %d lost; whole test %v (seed %d)",
		lr.result, lr.checked, lr.took.Round(time.Millisecond), acked, len(lost), time.Since(begin).Round(time.Second), seed)
	if len(violations) > 0 {
		dir := filepath.Join(*flagArtifacts, fmt.Sprintf("%s-seed%d-%s", unsafeName.ReplaceAllString(t.Name(), "_"), seed, time.Now().Format("20060102-150405")))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			if lr.result != "" {
				_ = writeVisualization(filepath.Join(dir, "porcupine.html"), lr, nil)
			}
			for i := range c.pods {
				_ = os.WriteFile(filepath.Join(dir, c.pods[i].Name+".log"), []byte(c.LogTail(i, 5000)+"\n"), 0o644)
			}
		}
		t.Errorf("seed %d: %d violations:\n  %s\nartifacts: %s", seed, len(violations), strings.Join(violations, "\n  "), dir)
	}
}

// sizedCluster is the first n nodes of a cluster.
type sizedCluster struct {
	cluster
	n int
}

func (s *sizedCluster) Size() int { return s.n }

// Members is the first n ordinals, the pods that remain.
func (s *sizedCluster) Members() []int {
	m := make([]int, s.n)
	for i := range m {
		m[i] = i
	}
	return m
}

// maps returns a copy of m.
func maps(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// valuesOf returns m's values.
func valuesOf(m map[string]uint64) []uint64 {
	var out []uint64
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// joinErrs joins the errors that are not nil.
func joinErrs(errs []error) error {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}
