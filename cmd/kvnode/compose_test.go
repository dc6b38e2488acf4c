package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// composeRunner runs `docker compose` (or the standalone docker-compose)
// on deploy/compose.yaml for one project, with the environment that picks
// the image and the published ports.
type composeRunner struct {
	argv    []string // the compose command, before its arguments
	file    string
	project string
	env     []string
}

// findCompose returns the compose command available here, or a reason to
// skip: no docker CLI, no compose, or no reachable Docker daemon.
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

// run runs one compose command within timeout and returns its output.
func (r *composeRunner) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(append([]string{}, r.argv[1:]...), "-f", r.file, "-p", r.project), args...)
	cmd := exec.CommandContext(ctx, r.argv[0], argv...)
	cmd.Env = append(os.Environ(), r.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(r.argv[len(r.argv)-1]), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// docker runs a plain docker command within timeout.
func dockerOut(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// TestCompose builds the image, starts deploy/compose.yaml under a unique
// project name, writes and reads through the published ports, stops one
// member (gracefully, as `docker compose stop` does), keeps writing,
// starts it again and reads everything back from every member. The
// project, its volumes and the image are removed whatever happens.
func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Docker Compose test in -short mode")
	}
	compose := findCompose(t)
	bin := kvnodeBinary(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid())
	tag := "rafty-kvnode-test:" + suffix
	build := exec.Command(filepath.Join(repo, "scripts", "build-image.sh"), tag)
	build.Env = append(os.Environ(), "KVNODE_BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if _, err := dockerOut(time.Minute, "rmi", "-f", tag); err != nil {
			t.Logf("removing image %s: %v", tag, err)
		}
	})

	ports := freePorts(t, 6)
	portOf := func(i int) string { return ports[i][strings.LastIndexByte(ports[i], ':')+1:] }
	r := &composeRunner{
		argv:    compose,
		file:    filepath.Join(repo, "deploy", "compose.yaml"),
		project: "raftytest" + suffix,
		env: []string{
			"KVNODE_IMAGE=" + tag,
			"RAFTY0_CLIENT_PORT=" + portOf(0), "RAFTY0_METRICS_PORT=" + portOf(1),
			"RAFTY1_CLIENT_PORT=" + portOf(2), "RAFTY1_METRICS_PORT=" + portOf(3),
			"RAFTY2_CLIENT_PORT=" + portOf(4), "RAFTY2_METRICS_PORT=" + portOf(5),
		},
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := r.run(time.Minute, "logs", "--no-color", "--tail", "30"); err == nil {
				t.Logf("compose logs:\n%s", out)
			}
		}
		if out, err := r.run(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", "15"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	if _, err := r.run(3*time.Minute, "up", "-d"); err != nil {
		t.Fatal(err)
	}

	services := []string{"rafty-0", "rafty-1", "rafty-2"}
	clientAddr := func(i int) string { return "127.0.0.1:" + portOf(2*i) }
	metricsAddr := func(i int) string { return "127.0.0.1:" + portOf(2*i+1) }
	containerID := func(svc string) string {
		out, err := r.run(time.Minute, "ps", "-q", svc)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("container of %s: %v %q", svc, err, out)
		}
		return strings.TrimSpace(out)
	}
	ready := func(i int) bool {
		client := http.Client{Timeout: time.Second}
		resp, err := client.Get("http://" + metricsAddr(i) + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	waitHealthy := func(i int) {
		t.Helper()
		waitFor(t, 60*time.Second, services[i]+" to be ready", func() bool { return ready(i) })
		// Docker's own view, through `kvnode health` inside the image.
		id := containerID(services[i])
		waitFor(t, 60*time.Second, services[i]+"'s healthcheck to pass", func() bool {
			out, err := dockerOut(30*time.Second, "inspect", "--format", "{{.State.Health.Status}}", id)
			return err == nil && out == "healthy"
		})
	}
	for i := range services {
		waitHealthy(i)
	}

	all := []string{clientAddr(0), clientAddr(1), clientAddr(2)}
	cl, err := dialClient(all, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := map[string]string{}
	write := func(prefix string, n int) {
		t.Helper()
		for i := range n {
			k, v := fmt.Sprintf("%s/%02d", prefix, i), strconv.Itoa(i)
			if err := put(cl, k, v); err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
			want[k] = v
		}
	}
	write("before", 10)

	// A graceful stop of one member: exit status 0, and the others go on.
	id0 := containerID("rafty-0")
	if _, err := r.run(time.Minute, "stop", "--timeout", "15", "rafty-0"); err != nil {
		t.Fatal(err)
	}
	if code, err := dockerOut(30*time.Second, "inspect", "--format", "{{.State.ExitCode}}", id0); err != nil || code != "0" {
		t.Errorf("rafty-0 exited with %q after a graceful stop (err %v), want 0", code, err)
	}
	write("while-down", 10)

	if _, err := r.run(time.Minute, "start", "rafty-0"); err != nil {
		t.Fatal(err)
	}
	waitHealthy(0)
	write("after", 5)

	// Every member, the restarted one included, returns every write
	// (linearizable reads: each one has caught up before answering).
	for i := range services {
		one, err := dialClient([]string{clientAddr(i)}, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			got, ok, err := get(one, k)
			if err != nil || !ok || got != v {
				one.Close()
				t.Fatalf("%s: get %s = %q, %v, %v; want %q", services[i], k, got, ok, err, v)
			}
		}
		one.Close()
	}
}
