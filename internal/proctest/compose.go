package proctest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FindCompose returns the compose command available here (docker compose,
// or the standalone docker-compose), or skips tb with the reason: no
// docker CLI on PATH, no reachable Docker daemon, or no compose.
func FindCompose(tb testing.TB) []string {
	tb.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		tb.Skip("skipping: no docker CLI on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		tb.Skipf("skipping: no Docker daemon reachable (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	if exec.CommandContext(ctx, docker, "compose", "version").Run() == nil {
		return []string{docker, "compose"}
	}
	if dc, err := exec.LookPath("docker-compose"); err == nil {
		return []string{dc}
	}
	tb.Skip("skipping: neither `docker compose` nor docker-compose is available")
	return nil
}

// Docker runs a docker command within timeout and returns its output with
// surrounding white space trimmed; on failure, the error has the output
// too.
func Docker(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// composeServices is the number of kvnode services in
// deploy/compose.yaml: rafty-0, rafty-1 and rafty-2.
const composeServices = 3

// Compose is the Docker Compose deployment (deploy/compose.yaml) as a
// project of its own: its own image, and every service's client and
// metrics ports published on free ports of 127.0.0.1.
type Compose struct {
	argv    []string // the compose command, before its arguments
	file    string
	project string
	env     []string // picks the image and the published ports
	ports   []string // the client, then the metrics port of each service
}

// NewCompose prepares a project of the compose file under repo (the
// repository's root) to be run with compose (from FindCompose). It builds
// the image around bin, a static kvnode binary, with
// scripts/build-image.sh, and removes the image when tb ends. name tells
// the test's projects and images from others': they are
// rafty<name><suffix> and rafty-kvnode-<name>:<suffix>, with a suffix of
// their own. Up starts the project.
func NewCompose(tb testing.TB, compose []string, repo, name, bin string) *Compose {
	tb.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid())
	tag := "rafty-kvnode-" + name + ":" + suffix
	build := exec.Command(filepath.Join(repo, "scripts", "build-image.sh"), tag)
	build.Env = append(os.Environ(), "KVNODE_BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("building the image: %v\n%s", err, out)
	}
	tb.Cleanup(func() {
		if _, err := Docker(time.Minute, "rmi", "-f", tag); err != nil {
			tb.Logf("removing image %s: %v", tag, err)
		}
	})
	addrs, err := FreeAddrs("127.0.0.1", 2*composeServices)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Compose{
		argv:    compose,
		file:    filepath.Join(repo, "deploy", "compose.yaml"),
		project: "rafty" + name + suffix,
		env:     []string{"KVNODE_IMAGE=" + tag},
	}
	for _, a := range addrs {
		c.ports = append(c.ports, a[strings.LastIndexByte(a, ':')+1:])
	}
	for i := range composeServices {
		c.env = append(c.env,
			fmt.Sprintf("RAFTY%d_CLIENT_PORT=%s", i, c.ports[2*i]),
			fmt.Sprintf("RAFTY%d_METRICS_PORT=%s", i, c.ports[2*i+1]))
	}
	return c
}

// ClientAddr is service i's client address, as published on the host.
func (c *Compose) ClientAddr(i int) string { return "127.0.0.1:" + c.ports[2*i] }

// MetricsAddr is service i's metrics address, as published on the host.
func (c *Compose) MetricsAddr(i int) string { return "127.0.0.1:" + c.ports[2*i+1] }

// Run runs one compose command on the project within timeout and returns
// its output; on failure, the error has the output too.
func (c *Compose) Run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(append([]string{}, c.argv[1:]...), "-f", c.file, "-p", c.project), args...)
	cmd := exec.CommandContext(ctx, c.argv[0], argv...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(c.argv[len(c.argv)-1]), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Up starts the project (compose up -d, within 3 minutes), failing tb if
// it cannot. First it arranges for tb's end, whatever happens: if tb
// failed, the last logTail lines of every service's log are logged; then
// down removes the project (Down, typically).
func (c *Compose) Up(tb testing.TB, logTail int, down func()) {
	tb.Helper()
	tb.Cleanup(func() {
		if tb.Failed() {
			if out, err := c.Run(time.Minute, "logs", "--no-color", "--tail", strconv.Itoa(logTail)); err == nil {
				tb.Logf("compose logs:\n%s", out)
			}
		}
		down()
	})
	if _, err := c.Run(3*time.Minute, "up", "-d"); err != nil {
		tb.Fatal(err)
	}
}

// Down removes the project, its containers, network and volumes (compose
// down, within 3 minutes), giving each container stop to stop before it
// is killed.
func (c *Compose) Down(stop time.Duration) (string, error) {
	return c.Run(3*time.Minute, "down", "-v", "--remove-orphans", "--timeout", strconv.Itoa(int(stop.Seconds())))
}

// ContainerID returns the ID of svc's container, failing tb if there is
// none.
func (c *Compose) ContainerID(tb testing.TB, svc string) string {
	tb.Helper()
	out, err := c.Run(time.Minute, "ps", "-q", svc)
	if err != nil || strings.TrimSpace(out) == "" {
		tb.Fatalf("container of %s: %v %q", svc, err, out)
	}
	return strings.TrimSpace(out)
}
