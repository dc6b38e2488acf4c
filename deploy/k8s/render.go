package k8s

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Pod is what Kubernetes would run for one pod of a StatefulSet, reduced
// to what a container runtime needs: the container's command, its
// environment with every $(VAR) expanded as the kubelet expands it, its
// volumes (a StatefulSet pod's claim is <template>-<pod name>), the pod's
// DNS name through the governing Service, and the security settings.
// chaos/statefulset_test.go runs such pods as Docker containers, so that
// what it tests is the manifest itself, not a copy of it.
type Pod struct {
	Name      string `json:"name"`      // <statefulset>-<ordinal>
	Namespace string `json:"namespace"` //
	Ordinal   int    `json:"ordinal"`   //
	// Hostname is the pod's host name (the pod name, unless the
	// template overrides it) and FQDN its DNS name through the headless
	// Service: <hostname>.<serviceName>.<namespace>.svc.<cluster domain>.
	Hostname  string            `json:"hostname"`
	FQDN      string            `json:"fqdn"`
	Labels    map[string]string `json:"labels"`
	Container string            `json:"container"`
	Image     string            `json:"image"`
	// Command replaces the image's entrypoint when not empty; Args
	// replace its default arguments when not empty (Kubernetes' rules).
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	// Env is the container's environment in the manifest's order.
	Env    []EnvVar `json:"env"`
	Mounts []Mount  `json:"mounts"`
	// Ports are the container's named ports.
	Ports map[string]int32 `json:"ports"`

	RunAsUser              *int64   `json:"runAsUser,omitempty"`
	RunAsGroup             *int64   `json:"runAsGroup,omitempty"`
	FSGroup                *int64   `json:"fsGroup,omitempty"`
	ReadOnlyRootFilesystem bool     `json:"readOnlyRootFilesystem"`
	NoNewPrivileges        bool     `json:"noNewPrivileges"`
	DropCapabilities       []string `json:"dropCapabilities,omitempty"`
	AddCapabilities        []string `json:"addCapabilities,omitempty"`
	// TerminationGracePeriod is how long the pod has between the start of
	// its termination (the preStop hook included) and SIGKILL.
	TerminationGracePeriod time.Duration `json:"terminationGracePeriod"`
	// PreStopSleep is the preStop sleep action's pause before SIGTERM
	// (0 when there is none).
	PreStopSleep time.Duration `json:"preStopSleep"`
}

// EnvVar is one environment variable, its value expanded.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Mount is one volume mount. Claim is the PersistentVolumeClaim of a
// volumeClaimTemplate (it outlives the pod: a StatefulSet keeps it when it
// scales down); EmptyDir marks a volume that lives as long as the pod.
type Mount struct {
	Volume    string `json:"volume"`
	Claim     string `json:"claim,omitempty"`
	EmptyDir  bool   `json:"emptyDir,omitempty"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// ErrUnsupported marks a manifest feature the renderer cannot reproduce
// outside a cluster (a Secret, a ConfigMap, the pod's IP, ...): rendering
// refuses it rather than run something other than what the manifest says.
var ErrUnsupported = errors.New("not reproducible outside a Kubernetes cluster")

// LoadStatefulSet decodes the one StatefulSet of a manifest file strictly
// (unknown, duplicate or miscased fields are errors, as with the API
// server's strict field validation). Other kinds in the file are skipped.
func LoadStatefulSet(path string) (*appsv1.StatefulSet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var found *appsv1.StatefulSet
	for i, doc := range yamlDocSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("%s document %d: %v", path, i+1, err)
		}
		if head.APIVersion != "apps/v1" || head.Kind != "StatefulSet" {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("%s: more than one StatefulSet", path)
		}
		j, err := yaml.YAMLToJSONStrict([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %v", path, i+1, err)
		}
		var sts appsv1.StatefulSet
		strictErrs, err := sigsjson.UnmarshalStrict(j, &sts)
		if err == nil {
			err = errors.Join(strictErrs...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s document %d: strict decoding: %v", path, i+1, err)
		}
		found = &sts
	}
	if found == nil {
		return nil, fmt.Errorf("%s: no apps/v1 StatefulSet", path)
	}
	return found, nil
}

// yamlDocSeparator splits a YAML stream into documents.
var yamlDocSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// stripComments drops the comment lines of a YAML document.
func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// DefaultClusterDomain is the cluster DNS domain of a default
// installation (the kubelet's --cluster-domain).
const DefaultClusterDomain = "cluster.local"

// RenderPod returns pod `ordinal` of sts in namespace ns, as the
// StatefulSet controller creates it and the kubelet starts its container
// named container. clusterDomain "" is DefaultClusterDomain.
func RenderPod(sts *appsv1.StatefulSet, container string, ordinal int, ns, clusterDomain string) (Pod, error) {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	if ordinal < 0 {
		return Pod{}, fmt.Errorf("ordinal %d is negative", ordinal)
	}
	if ns == "" {
		return Pod{}, errors.New("no namespace")
	}
	spec := &sts.Spec.Template.Spec
	var c *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container {
			c = &spec.Containers[i]
		}
	}
	if c == nil {
		return Pod{}, fmt.Errorf("StatefulSet %s has no container %q", sts.Name, container)
	}
	if len(c.EnvFrom) > 0 {
		return Pod{}, fmt.Errorf("container %s: envFrom: %w", c.Name, ErrUnsupported)
	}

	name := sts.Name + "-" + strconv.Itoa(ordinal)
	p := Pod{
		Name: name, Namespace: ns, Ordinal: ordinal, Hostname: name, Container: c.Name, Image: c.Image,
		Labels: map[string]string{}, Ports: map[string]int32{},
	}
	// The StatefulSet controller's labels come on top of the template's.
	for k, v := range sts.Spec.Template.Labels {
		p.Labels[k] = v
	}
	p.Labels["statefulset.kubernetes.io/pod-name"] = name
	p.Labels["apps.kubernetes.io/pod-index"] = strconv.Itoa(ordinal)
	if spec.Hostname != "" {
		p.Hostname = spec.Hostname
	}
	// The controller sets the pod's subdomain to the governing Service,
	// which gives it <hostname>.<service>.<ns>.svc.<domain>.
	subdomain := sts.Spec.ServiceName
	if spec.Subdomain != "" {
		subdomain = spec.Subdomain
	}
	if subdomain != "" {
		p.FQDN = strings.Join([]string{p.Hostname, subdomain, ns, "svc", clusterDomain}, ".")
	}

	// Environment: each value may refer to the variables defined before
	// it; a fieldRef takes the pod's own fields.
	vars := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				return Pod{}, fmt.Errorf("env %s: only fieldRef sources: %w", e.Name, ErrUnsupported)
			}
			v, err := p.field(sts, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return Pod{}, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = v
		} else {
			val = ExpandVars(val, vars)
		}
		vars[e.Name] = val
		p.Env = append(p.Env, EnvVar{Name: e.Name, Value: val})
	}
	// Command and arguments see the whole environment.
	for _, s := range c.Command {
		p.Command = append(p.Command, ExpandVars(s, vars))
	}
	for _, s := range c.Args {
		p.Args = append(p.Args, ExpandVars(s, vars))
	}

	claims := map[string]bool{}
	for _, t := range sts.Spec.VolumeClaimTemplates {
		claims[t.Name] = true
	}
	podVolumes := map[string]corev1.VolumeSource{}
	for _, v := range spec.Volumes {
		podVolumes[v.Name] = v.VolumeSource
	}
	for _, vm := range c.VolumeMounts {
		m := Mount{Volume: vm.Name, MountPath: vm.MountPath, ReadOnly: vm.ReadOnly}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			return Pod{}, fmt.Errorf("volume mount %s: subPath is not modelled: %w", vm.Name, ErrUnsupported)
		}
		src, inPod := podVolumes[vm.Name]
		switch {
		case inPod && src.EmptyDir != nil:
			m.EmptyDir = true
		case inPod && src.PersistentVolumeClaim != nil:
			m.Claim = src.PersistentVolumeClaim.ClaimName
		case inPod:
			return Pod{}, fmt.Errorf("volume %s: only emptyDir and persistentVolumeClaim volumes: %w", vm.Name, ErrUnsupported)
		case claims[vm.Name]:
			// The StatefulSet controller's claim name.
			m.Claim = vm.Name + "-" + name
		default:
			return Pod{}, fmt.Errorf("volume mount %s names no volume and no volumeClaimTemplate", vm.Name)
		}
		p.Mounts = append(p.Mounts, m)
	}
	for _, cp := range c.Ports {
		if cp.Name != "" {
			p.Ports[cp.Name] = cp.ContainerPort
		}
	}

	// Security: the container's settings override the pod's.
	if psc := spec.SecurityContext; psc != nil {
		p.RunAsUser, p.RunAsGroup, p.FSGroup = psc.RunAsUser, psc.RunAsGroup, psc.FSGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			p.RunAsUser = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			p.RunAsGroup = sc.RunAsGroup
		}
		p.ReadOnlyRootFilesystem = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
		p.NoNewPrivileges = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		if sc.Privileged != nil && *sc.Privileged {
			return Pod{}, fmt.Errorf("container %s: privileged: %w", c.Name, ErrUnsupported)
		}
		if caps := sc.Capabilities; caps != nil {
			for _, x := range caps.Drop {
				p.DropCapabilities = append(p.DropCapabilities, string(x))
			}
			for _, x := range caps.Add {
				p.AddCapabilities = append(p.AddCapabilities, string(x))
			}
		}
	}

	// Kubernetes' default grace period is 30 s.
	p.TerminationGracePeriod = 30 * time.Second
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		p.TerminationGracePeriod = time.Duration(*g) * time.Second
	}
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		switch ps := c.Lifecycle.PreStop; {
		case ps.Sleep != nil:
			p.PreStopSleep = time.Duration(ps.Sleep.Seconds) * time.Second
		default:
			return Pod{}, fmt.Errorf("container %s: only a preStop sleep action: %w", c.Name, ErrUnsupported)
		}
	}
	return p, nil
}

// field returns the value of a downward API fieldRef for pod p.
func (p *Pod) field(sts *appsv1.StatefulSet, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "spec.serviceAccountName":
		if sa := sts.Spec.Template.Spec.ServiceAccountName; sa != "" {
			return sa, nil
		}
		return "default", nil
	}
	if k, ok := cutQuoted(path, "metadata.labels"); ok {
		return p.Labels[k], nil
	}
	if k, ok := cutQuoted(path, "metadata.annotations"); ok {
		return sts.Spec.Template.Annotations[k], nil
	}
	return "", fmt.Errorf("fieldRef %s: %w", path, ErrUnsupported)
}

// cutQuoted parses prefix['key'].
func cutQuoted(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

// ExpandVars expands $(VAR) references in s the way the kubelet expands
// env values, commands and arguments: a reference to a defined variable
// becomes its value; one to an undefined variable stays as written; $$ is
// an escaped $ (so $$(VAR) is the literal text $(VAR)); any other $ and an
// unterminated $( are kept as they are.
func ExpandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
