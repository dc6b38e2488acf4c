package k8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifests is every object of every manifest in this directory.
type manifests struct {
	statefulSets []*appsv1.StatefulSet
	services     map[string]*corev1.Service
	pdbs         []*policyv1.PodDisruptionBudget
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// onlyComments reports whether a YAML document holds no content.
func onlyComments(doc string) bool {
	for line := range strings.SplitSeq(doc, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// decodeStrict decodes a YAML document into obj the way the API server's
// strict field validation does: a duplicate key, an unknown field or a
// field spelt with the wrong case is an error. (sigs.k8s.io/yaml's
// UnmarshalStrict alone is not enough: encoding/json matches field names
// case-insensitively, so it takes clusterIp for clusterIP.)
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// loadManifests decodes every document of every *.yaml file strictly: an
// unknown or misspelt field, a duplicate key or a kind this test does not
// know fails the test, so a manifest cannot silently lose a setting.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests found: %v", err)
	}
	m := manifests{services: map[string]*corev1.Service{}}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(data), -1) {
			if onlyComments(doc) {
				continue
			}
			where := fmt.Sprintf("%s document %d", file, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			strict := func(obj any) {
				if err := decodeStrict([]byte(doc), obj); err != nil {
					t.Fatalf("%s: strict decoding of %s %s: %v", where, tm.APIVersion, tm.Kind, err)
				}
			}
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 StatefulSet":
				var o appsv1.StatefulSet
				strict(&o)
				m.statefulSets = append(m.statefulSets, &o)
			case "v1 Service":
				var o corev1.Service
				strict(&o)
				if _, dup := m.services[o.Name]; dup {
					t.Fatalf("%s: Service %q defined twice", where, o.Name)
				}
				m.services[o.Name] = &o
			case "policy/v1 PodDisruptionBudget":
				var o policyv1.PodDisruptionBudget
				strict(&o)
				m.pdbs = append(m.pdbs, &o)
			default:
				t.Fatalf("%s: unexpected object %q %q", where, tm.APIVersion, tm.Kind)
			}
		}
	}
	return m
}

// theStatefulSet returns the one StatefulSet and its kvnode container.
func (m manifests) theStatefulSet(t *testing.T) (*appsv1.StatefulSet, *corev1.Container) {
	t.Helper()
	if len(m.statefulSets) != 1 {
		t.Fatalf("want exactly one StatefulSet, have %d", len(m.statefulSets))
	}
	sts := m.statefulSets[0]
	for i := range sts.Spec.Template.Spec.Containers {
		if c := &sts.Spec.Template.Spec.Containers[i]; c.Name == "kvnode" {
			return sts, c
		}
	}
	t.Fatalf("StatefulSet %s has no container named kvnode", sts.Name)
	return nil, nil
}

// varRef matches a Kubernetes $(VAR) reference in an env value or arg.
var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandVars expands $(VAR) as the kubelet does: from the variables
// defined so far; an undefined reference stays as written; $$ is a $.
func expandVars(s string, vars map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if ref == "$$" {
			return "$"
		}
		if v, ok := vars[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// kvnodeSettings returns the kvnode serve settings the container of pod
// podName in namespace ns runs with, by flag name, read the way kvnode
// reads them: environment twins (KVNODE_PEER_TEMPLATE is
// --peer-template), overridden by command-line flags.
func kvnodeSettings(t *testing.T, c *corev1.Container, podName, ns string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	settings := map[string]string{}
	for _, e := range c.Env {
		val := expandVars(e.Value, vars)
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				t.Fatalf("env %s: only fieldRef sources are modelled by this test", e.Name)
			}
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				val = podName
			case "metadata.namespace":
				val = ns
			default:
				t.Fatalf("env %s: unexpected fieldRef %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		}
		vars[e.Name] = val
		if name, ok := strings.CutPrefix(e.Name, "KVNODE_"); ok {
			settings[strings.ReplaceAll(strings.ToLower(name), "_", "-")] = val
		}
	}
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("container args %q do not start with the serve command", args)
	}
	for i := 1; i < len(args); i++ {
		a := expandVars(args[i], vars)
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			t.Fatalf("unexpected positional argument %q", a)
		}
		if n, v, hasValue := strings.Cut(name, "="); hasValue {
			settings[n] = v
			continue
		}
		if i+1 >= len(args) {
			t.Fatalf("flag --%s has no value", name)
		}
		i++
		settings[name] = expandVars(args[i], vars)
	}
	return settings
}

// expandTemplate is kvnode's --peer-template rule: member i (from 0) has
// ID i+1 and the template with {i} replaced by i and {id} by i+1.
func expandTemplate(tmpl string, size int) map[uint64]string {
	peers := map[uint64]string{}
	for i := range size {
		peers[uint64(i+1)] = strings.NewReplacer("{i}", strconv.Itoa(i), "{id}", strconv.Itoa(i+1)).Replace(tmpl)
	}
	return peers
}

// idFromPodName is kvnode's ID derivation from a StatefulSet pod name.
func idFromPodName(t *testing.T, name string) uint64 {
	t.Helper()
	i := strings.LastIndexByte(name, '-')
	ord, err := strconv.ParseUint(name[i+1:], 10, 32)
	if i < 0 || err != nil {
		t.Fatalf("pod name %q has no ordinal", name)
	}
	return ord + 1
}

// containerPort resolves a probe's or Service's target port (a name or a
// number) to the container's port number.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

// listenPort returns the port of a kvnode listen address.
func listenPort(t *testing.T, settings map[string]string, flag string) int32 {
	t.Helper()
	addr, ok := settings[flag]
	if !ok {
		t.Fatalf("--%s is not set; the manifests must not rely on kvnode's defaults for ports", flag)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("--%s %q: %v", flag, addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("--%s %q: bad port", flag, addr)
	}
	return int32(n)
}

// selects reports whether selector matches every label it names in labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if len(m.statefulSets) != 1 || len(m.services) != 2 || len(m.pdbs) != 1 {
		t.Fatalf("want 1 StatefulSet, 2 Services, 1 PodDisruptionBudget; have %d, %d, %d",
			len(m.statefulSets), len(m.services), len(m.pdbs))
	}
}

// TestStrictDecoding checks the guard the other tests rely on.
func TestStrictDecoding(t *testing.T) {
	const head = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n"
	var svc corev1.Service
	if err := decodeStrict([]byte(head+"  clusterIP: None\n"), &svc); err != nil || svc.Spec.ClusterIP != "None" {
		t.Fatalf("a valid Service: %v", err)
	}
	for name, doc := range map[string]string{
		"wrong case":    head + "  clusterIp: None\n",
		"unknown field": head + "  publishNotReady: true\n",
		"duplicate key": head + "  clusterIP: None\n  clusterIP: 10.0.0.1\n",
		"wrong type":    head + "  ports: 7000\n",
	} {
		var svc corev1.Service
		if err := decodeStrict([]byte(doc), &svc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPeerAddressesMatchStatefulSetDNS checks that the address kvnode in
// pod <sts>-<i> dials for every member j is exactly the DNS name
// Kubernetes gives pod <sts>-<j> through the headless Service, at the
// port that member listens on, and that each pod derives the ID under
// which its own address is listed. It runs for two namespaces, since the
// names must follow the namespace the manifests are applied in.
func TestPeerAddressesMatchStatefulSetDNS(t *testing.T) {
	m := loadManifests(t)
	sts, c := m.theStatefulSet(t)
	if sts.Spec.Replicas == nil {
		t.Fatal("StatefulSet has no replica count")
	}
	replicas := int(*sts.Spec.Replicas)
	headless, ok := m.services[sts.Spec.ServiceName]
	if !ok {
		t.Fatalf("the StatefulSet's serviceName %q is not a Service in the manifests", sts.Spec.ServiceName)
	}
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s must be headless (clusterIP: None) to give pods DNS names", headless.Name)
	}
	if !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s must publish not-ready addresses: members must find each other before any is ready", headless.Name)
	}
	if !selects(headless.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("Service %s does not select the StatefulSet's pods", headless.Name)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy is %q; with OrderedReady rafty-1 waits for rafty-0 to be ready, which needs a quorum", sts.Spec.PodManagementPolicy)
	}

	for _, ns := range []string{"default", "rafty-prod"} {
		var clusterIDs []string
		for i := range replicas {
			pod := fmt.Sprintf("%s-%d", sts.Name, i)
			s := kvnodeSettings(t, c, pod, ns)
			if _, ok := s["peers"]; ok {
				t.Fatalf("%s: --peers is set; a StatefulSet must use --peer-template", pod)
			}
			if id, ok := s["id"]; ok {
				t.Fatalf("%s: --id %s is set; every pod would get the same ID", pod, id)
			}
			if h, ok := s["hostname"]; ok && h != pod {
				t.Fatalf("%s: --hostname is %q, not the pod name: the ID would not follow the ordinal", pod, h)
			}
			if !ok && sts.Spec.Template.Spec.Hostname != "" {
				t.Fatalf("%s: the pod's hostname is overridden and --hostname is unset", pod)
			}
			size, err := strconv.Atoi(s["cluster-size"])
			if err != nil || size != replicas {
				t.Fatalf("%s: --cluster-size %q, want the replica count %d", pod, s["cluster-size"], replicas)
			}
			tmpl, ok := s["peer-template"]
			if !ok {
				t.Fatalf("%s: --peer-template is not set", pod)
			}
			if strings.Contains(tmpl, "$(") {
				t.Fatalf("%s: --peer-template %q references an undefined variable", pod, tmpl)
			}
			peerPort := listenPort(t, s, "peer-listen")
			peers := expandTemplate(tmpl, size)
			for j := range replicas {
				want := fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local:%d", sts.Name, j, headless.Name, ns, peerPort)
				if got := peers[uint64(j+1)]; got != want {
					t.Errorf("%s (namespace %s) dials member %d at %q; Kubernetes names that pod %q", pod, ns, j+1, got, want)
				}
			}
			id := idFromPodName(t, pod)
			if own := peers[id]; !strings.HasPrefix(own, pod+".") {
				t.Errorf("%s derives ID %d, listed at %q, which is not its own address", pod, id, own)
			}
			clusterIDs = append(clusterIDs, s["cluster-id"])
		}
		for _, id := range clusterIDs {
			if id == "" || id != clusterIDs[0] {
				t.Errorf("namespace %s: pods disagree on --cluster-id (or leave it to the default): %q", ns, clusterIDs)
				break
			}
		}
	}
}

// TestPortsProbesAndShutdown checks that Services, probes and the volume
// point at what kvnode actually listens on and writes, and that the
// graceful stop fits in the grace period.
func TestPortsProbesAndShutdown(t *testing.T) {
	m := loadManifests(t)
	sts, c := m.theStatefulSet(t)
	s := kvnodeSettings(t, c, sts.Name+"-0", "default")
	peerPort := listenPort(t, s, "peer-listen")
	clientPort := listenPort(t, s, "client-listen")
	metricsPort := listenPort(t, s, "metrics-listen")

	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	for name, want := range map[string]int32{"peer": peerPort, "client": clientPort, "metrics": metricsPort} {
		if named[name] != want {
			t.Errorf("container port %q is %d, kvnode listens on %d", name, named[name], want)
		}
	}

	headless := m.services[sts.Spec.ServiceName]
	var peerServed bool
	for _, p := range headless.Spec.Ports {
		if containerPort(t, c, p.TargetPort) == peerPort && p.Port == peerPort {
			peerServed = true
		}
	}
	if !peerServed {
		t.Errorf("headless Service %s has no port %d to the peer port", headless.Name, peerPort)
	}

	var client *corev1.Service
	for _, svc := range m.services {
		if svc != headless {
			client = svc
		}
	}
	if client == nil || client.Spec.ClusterIP == corev1.ClusterIPNone || !selects(client.Spec.Selector, sts.Spec.Template.Labels) {
		t.Fatal("no client Service with a cluster IP selecting the StatefulSet's pods")
	}
	if len(client.Spec.Ports) != 1 || containerPort(t, c, client.Spec.Ports[0].TargetPort) != clientPort {
		t.Errorf("client Service %s does not route to the client port %d", client.Name, clientPort)
	}

	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe is missing or not an HTTP GET", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || containerPort(t, c, p.probe.HTTPGet.Port) != metricsPort {
			t.Errorf("%s probe gets %s on port %v; want %s on the metrics port %d",
				p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, metricsPort)
		}
	}

	dataDir := s["data-dir"]
	var claimed bool
	for _, vm := range c.VolumeMounts {
		for _, claim := range sts.Spec.VolumeClaimTemplates {
			if vm.Name == claim.Name && vm.MountPath == dataDir {
				claimed = true
			}
		}
	}
	if !claimed {
		t.Errorf("--data-dir %q is not a volume from the StatefulSet's volumeClaimTemplates: data would not survive a restart", dataDir)
	}

	grace := sts.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || *grace <= 10 {
		t.Fatalf("terminationGracePeriodSeconds must exceed 10 s, is %v", grace)
	}
	shutdown, err := time.ParseDuration(s["shutdown-timeout"])
	if err != nil {
		t.Fatalf("--shutdown-timeout %q: %v", s["shutdown-timeout"], err)
	}
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if need := preStop + shutdown + 2*time.Second; time.Duration(*grace)*time.Second < need {
		t.Errorf("terminationGracePeriodSeconds %d leaves no margin for the preStop pause (%v) and the graceful stop (%v)", *grace, preStop, shutdown)
	}
}

func TestDisruptionBudget(t *testing.T) {
	m := loadManifests(t)
	sts, _ := m.theStatefulSet(t)
	pdb := m.pdbs[0]
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget %s: want maxUnavailable 1 (and no minAvailable)", pdb.Name)
	}
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget %s does not select the StatefulSet's pods", pdb.Name)
	}
	replicas := int(*sts.Spec.Replicas)
	if quorum := replicas/2 + 1; replicas-1 < quorum {
		t.Errorf("with %d replicas, losing one member loses the quorum", replicas)
	}
}

// restrictedViolations checks a pod spec (and its pod template's
// annotations) against every rule of the "restricted" Pod Security
// Standard, which includes the baseline one
// (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
// and returns what breaks them. It is what the admission controller
// enforces in a namespace labelled pod-security.kubernetes.io/enforce=restricted.
func restrictedViolations(spec *corev1.PodSpec, annotations map[string]string) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	// Baseline: host namespaces, host paths, host ports, privilege,
	// capabilities, AppArmor, SELinux, /proc, seccomp, sysctls.
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		bad("host namespaces: hostNetwork %v, hostPID %v, hostIPC %v", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	for k, val := range annotations {
		if strings.HasPrefix(k, "container.apparmor.security.beta.kubernetes.io/") && val != "runtime/default" && !strings.HasPrefix(val, "localhost/") {
			bad("AppArmor annotation %s: %s", k, val)
		}
	}
	pod := spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	safeSysctls := map[string]bool{"kernel.shm_rmid_forced": true, "net.ipv4.ip_local_port_range": true,
		"net.ipv4.ip_unprivileged_port_start": true, "net.ipv4.tcp_syncookies": true, "net.ipv4.ping_group_range": true,
		"net.ipv4.ip_local_reserved_ports": true, "net.ipv4.tcp_keepalive_time": true, "net.ipv4.tcp_fin_timeout": true,
		"net.ipv4.tcp_keepalive_intvl": true, "net.ipv4.tcp_keepalive_probes": true}
	for _, s := range pod.Sysctls {
		if !safeSysctls[s.Name] {
			bad("sysctl %s is not in the safe set", s.Name)
		}
	}
	checkSELinux := func(where string, o *corev1.SELinuxOptions) {
		if o == nil {
			return
		}
		switch o.Type {
		case "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t":
		default:
			bad("%s: SELinux type %s", where, o.Type)
		}
		if o.User != "" || o.Role != "" {
			bad("%s: SELinux user or role set", where)
		}
	}
	checkAppArmor := func(where string, p *corev1.AppArmorProfile) {
		if p != nil && p.Type == corev1.AppArmorProfileTypeUnconfined {
			bad("%s: AppArmor unconfined", where)
		}
	}
	checkSELinux("pod", pod.SELinuxOptions)
	checkAppArmor("pod", pod.AppArmorProfile)
	if pod.WindowsOptions != nil && pod.WindowsOptions.HostProcess != nil && *pod.WindowsOptions.HostProcess {
		bad("pod: hostProcess")
	}

	// Restricted: volume types.
	for _, vol := range spec.Volumes {
		s := vol.VolumeSource
		if s.ConfigMap == nil && s.CSI == nil && s.DownwardAPI == nil && s.EmptyDir == nil && s.Ephemeral == nil &&
			s.PersistentVolumeClaim == nil && s.Projected == nil && s.Secret == nil {
			bad("volume %s: type not allowed (only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret)", vol.Name)
		}
	}
	// Restricted: non-root, user not 0, seccomp, per container or for the pod.
	if pod.RunAsUser != nil && *pod.RunAsUser == 0 {
		bad("pod: runAsUser 0")
	}
	podNonRoot := pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	podSeccomp := pod.SeccompProfile != nil &&
		(pod.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault || pod.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost)
	if pod.SeccompProfile != nil && pod.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
		bad("pod: seccomp Unconfined")
	}

	type container struct {
		name  string
		sc    *corev1.SecurityContext
		ports []corev1.ContainerPort
	}
	var all []container
	for _, c := range spec.InitContainers {
		all = append(all, container{"init container " + c.Name, c.SecurityContext, c.Ports})
	}
	for _, c := range spec.Containers {
		all = append(all, container{"container " + c.Name, c.SecurityContext, c.Ports})
	}
	for _, c := range spec.EphemeralContainers {
		all = append(all, container{"ephemeral container " + c.Name, c.SecurityContext, c.Ports})
	}
	if len(all) == 0 {
		bad("no containers")
	}
	for _, c := range all {
		for _, p := range c.ports {
			if p.HostPort != 0 {
				bad("%s: hostPort %d", c.name, p.HostPort)
			}
		}
		sc := c.sc
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("%s: privileged", c.name)
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			bad("%s: procMount %s", c.name, *sc.ProcMount)
		}
		checkSELinux(c.name, sc.SELinuxOptions)
		checkAppArmor(c.name, sc.AppArmorProfile)
		if sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess {
			bad("%s: hostProcess", c.name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("%s: allowPrivilegeEscalation must be false", c.name)
		}
		switch {
		case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
			bad("%s: runAsNonRoot false", c.name)
		case sc.RunAsNonRoot == nil && !podNonRoot:
			bad("%s: runAsNonRoot not true (here or for the pod)", c.name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			bad("%s: runAsUser 0", c.name)
		}
		switch {
		case sc.SeccompProfile == nil && !podSeccomp:
			bad("%s: seccompProfile not RuntimeDefault or Localhost (here or for the pod)", c.name)
		case sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault &&
			sc.SeccompProfile.Type != corev1.SeccompProfileTypeLocalhost:
			bad("%s: seccompProfile %s", c.name, sc.SeccompProfile.Type)
		}
		var drop []corev1.Capability
		if sc.Capabilities != nil {
			drop = sc.Capabilities.Drop
			for _, add := range sc.Capabilities.Add {
				if add != "NET_BIND_SERVICE" {
					bad("%s: adds capability %s (only NET_BIND_SERVICE may be added)", c.name, add)
				}
			}
		}
		if !slices.Contains(drop, "ALL") {
			bad("%s: capabilities must drop ALL", c.name)
		}
	}
	return v
}

// TestRestrictedPodSecurity: the StatefulSet's pods pass the "restricted"
// Pod Security Standard, and each of its rules is asserted: breaking any
// one is caught.
func TestRestrictedPodSecurity(t *testing.T) {
	m := loadManifests(t)
	sts, c := m.theStatefulSet(t)
	tmpl := &sts.Spec.Template
	if v := restrictedViolations(&tmpl.Spec, tmpl.Annotations); len(v) > 0 {
		t.Errorf("the StatefulSet's pods break the restricted Pod Security Standard:\n%s", strings.Join(v, "\n"))
	}
	// Set explicitly, not only inherited or defaulted: what the comments
	// in statefulset.yaml promise.
	sc := c.SecurityContext
	pod := tmpl.Spec.SecurityContext
	if sc == nil || pod == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		t.Errorf("kvnode container security context %+v, pod %+v: want a read-only root, RuntimeDefault seccomp on both, non-root", sc, pod)
	}
	if a := tmpl.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("automountServiceAccountToken is not false: kvnode needs no API token")
	}

	yes, no, root := true, false, int64(0)
	for _, tc := range []struct {
		breakIt func(*corev1.PodSpec, map[string]string)
		want    string
	}{
		{func(s *corev1.PodSpec, _ map[string]string) { s.HostNetwork = true }, "host namespaces"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.Containers[0].SecurityContext.Privileged = &yes }, "privileged"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil
		}, "allowPrivilegeEscalation"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.AllowPrivilegeEscalation = &yes
		}, "allowPrivilegeEscalation"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.Containers[0].SecurityContext.RunAsNonRoot = &no }, "runAsNonRoot false"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.RunAsNonRoot = nil
			s.SecurityContext.RunAsNonRoot = nil
		}, "runAsNonRoot not true"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.SecurityContext.RunAsUser = &root }, "runAsUser 0"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.Containers[0].SecurityContext.RunAsUser = &root }, "runAsUser 0"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.SeccompProfile = nil
			s.SecurityContext.SeccompProfile = nil
		}, "seccompProfile not"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "seccompProfile Unconfined"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "seccomp Unconfined"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.Containers[0].SecurityContext.Capabilities.Drop = nil }, "drop ALL"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
		}, "adds capability SYS_ADMIN"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, "volume h"},
		{func(s *corev1.PodSpec, _ map[string]string) { s.Containers[0].Ports[0].HostPort = 7000 }, "hostPort"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.InitContainers = []corev1.Container{{Name: "init"}}
		}, "init container init: allowPrivilegeEscalation"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			pm := corev1.UnmaskedProcMount
			s.Containers[0].SecurityContext.ProcMount = &pm
		}, "procMount"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.SecurityContext.SELinuxOptions = &corev1.SELinuxOptions{Type: "spc_t"}
		}, "SELinux type"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.Containers[0].SecurityContext.AppArmorProfile = &corev1.AppArmorProfile{Type: corev1.AppArmorProfileTypeUnconfined}
		}, "AppArmor"},
		{func(_ *corev1.PodSpec, a map[string]string) {
			a["container.apparmor.security.beta.kubernetes.io/kvnode"] = "unconfined"
		}, "AppArmor annotation"},
		{func(s *corev1.PodSpec, _ map[string]string) {
			s.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "kernel.msgmax", Value: "1"}}
		}, "sysctl kernel.msgmax"},
	} {
		spec := tmpl.Spec.DeepCopy()
		ann := map[string]string{}
		for k, v := range tmpl.Annotations {
			ann[k] = v
		}
		tc.breakIt(spec, ann)
		v := restrictedViolations(spec, ann)
		if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, tc.want) }) {
			t.Errorf("breaking the rule on %q went unnoticed (violations: %q)", tc.want, v)
		}
	}
}
