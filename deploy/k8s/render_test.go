package k8s

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpandVarsLikeTheKubelet(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "$(A)", "EMPTY": ""}
	for _, tc := range []struct{ in, want string }{
		{"$(A)", "x"},
		{"a$(A)b$(A)", "axbx"},
		{"$(B)", "$(A)"}, // values are not expanded twice
		{"$(EMPTY)", ""},
		{"$(UNDEFINED)", "$(UNDEFINED)"},
		{"$$(A)", "$(A)"},
		{"$$", "$"},
		{"$$$(A)", "$x"},
		{"$", "$"},
		{"a$", "a$"},
		{"$x", "$x"},
		{"$(A", "$(A"},
		{"$()", "$()"},
		{"no refs", "no refs"},
	} {
		if got := ExpandVars(tc.in, vars); got != tc.want {
			t.Errorf("ExpandVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestRenderPods renders the manifest's pods 0..4 (two beyond the initial
// size, as after `kubectl scale --replicas=5`) and checks what each one
// runs with: its own DNS name as the headless Service publishes it, the
// same peer template and initial size everywhere, its client address
// under its own name, its own claim, the restricted security settings.
func TestRenderPods(t *testing.T) {
	sts, err := LoadStatefulSet("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"default", "rafty-prod"} {
		for ord := range 5 {
			p, err := RenderPod(sts, "kvnode", ord, ns, "")
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("rafty-%d", ord)
			fqdn := fmt.Sprintf("%s.rafty.%s.svc.cluster.local", name, ns)
			env := map[string]string{}
			for _, e := range p.Env {
				env[e.Name] = e.Value
			}
			if p.Name != name || p.Hostname != name || p.FQDN != fqdn {
				t.Errorf("pod %d: name %q host %q FQDN %q, want %q and %q", ord, p.Name, p.Hostname, p.FQDN, name, fqdn)
			}
			tmpl := env["KVNODE_PEER_TEMPLATE"]
			if own := strings.ReplaceAll(tmpl, "{i}", fmt.Sprint(ord)); own != fqdn+":7000" {
				t.Errorf("pod %d: the peer template %q gives it %q, not its DNS name", ord, tmpl, own)
			}
			for k, want := range map[string]string{
				"KVNODE_HOSTNAME": name, "POD_NAMESPACE": ns, "KVNODE_CLUSTER_SIZE": "3",
				"KVNODE_CLIENT_ADDR": fqdn + ":2379", "KVNODE_CLUSTER_ID": "rafty-" + ns,
				"KVNODE_DATA_DIR": "/var/lib/rafty",
			} {
				if env[k] != want {
					t.Errorf("pod %d: %s = %q, want %q", ord, k, env[k], want)
				}
			}
			for _, e := range p.Env {
				if strings.Contains(e.Value, "$(") {
					t.Errorf("pod %d: %s = %q still refers to a variable", ord, e.Name, e.Value)
				}
			}
			if len(p.Mounts) != 1 || p.Mounts[0].Claim != "data-"+name || p.Mounts[0].MountPath != env["KVNODE_DATA_DIR"] {
				t.Errorf("pod %d: mounts %+v, want claim data-%s at the data dir", ord, p.Mounts, name)
			}
			if p.Ports["client"] != 2379 || p.Ports["peer"] != 7000 || p.Ports["metrics"] != 9090 {
				t.Errorf("pod %d: ports %v", ord, p.Ports)
			}
			if p.RunAsUser == nil || *p.RunAsUser == 0 || p.FSGroup == nil || !p.ReadOnlyRootFilesystem ||
				!p.NoNewPrivileges || len(p.DropCapabilities) != 1 || p.DropCapabilities[0] != "ALL" {
				t.Errorf("pod %d: security settings %+v", ord, p)
			}
			if len(p.Command) != 0 || len(p.Args) != 1 || p.Args[0] != "serve" {
				t.Errorf("pod %d: command %q args %q, want the image's entrypoint with serve", ord, p.Command, p.Args)
			}
			if p.Labels["statefulset.kubernetes.io/pod-name"] != name || p.Labels["app.kubernetes.io/name"] != "rafty" {
				t.Errorf("pod %d: labels %v", ord, p.Labels)
			}
		}
	}
}

// TestRenderRefusesWhatItCannotReproduce: a Secret, the pod IP or a
// ConfigMap volume cannot be had outside a cluster; rendering says so
// instead of running something else.
func TestRenderRefusesWhatItCannotReproduce(t *testing.T) {
	sts, err := LoadStatefulSet("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, breakIt := range map[string]func(c *corev1.Container, s *corev1.PodSpec){
		"secret": func(c *corev1.Container, _ *corev1.PodSpec) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}})
		},
		"pod IP": func(c *corev1.Container, _ *corev1.PodSpec) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}})
		},
		"configMap volume": func(c *corev1.Container, s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}})
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "cm", MountPath: "/etc/x"})
		},
		"envFrom": func(c *corev1.Container, _ *corev1.PodSpec) {
			c.EnvFrom = []corev1.EnvFromSource{{Prefix: "X"}}
		},
	} {
		s := sts.DeepCopy()
		breakIt(&s.Spec.Template.Spec.Containers[0], &s.Spec.Template.Spec)
		if _, err := RenderPod(s, "kvnode", 0, "default", ""); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: RenderPod error %v, want ErrUnsupported", name, err)
		}
	}
	// A label fieldRef is the pod's own (with the controller's labels).
	s := sts.DeepCopy()
	c := &s.Spec.Template.Spec.Containers[0]
	c.Env = append(c.Env, corev1.EnvVar{Name: "IDX", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"}}},
		corev1.EnvVar{Name: "ECHO", Value: "i=$(IDX) $$(IDX)"})
	p, err := RenderPod(s, "kvnode", 4, "default", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Env[len(p.Env)-1]; got.Value != "i=4 $(IDX)" {
		t.Errorf("ECHO = %q, want %q", got.Value, "i=4 $(IDX)")
	}
}
