package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rafty-db/rafty/internal/proctest"
)

// TestCompose builds the image, starts deploy/compose.yaml under a unique
// project name, writes and reads through the published ports, stops one
// member (gracefully, as `docker compose stop` does), keeps writing,
// starts it again and reads everything back from every member. The
// project, its volumes and the image are removed whatever happens.
func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the Docker Compose test in -short mode")
	}
	compose := proctest.FindCompose(t)
	bin := kvnodeBinary(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	r := proctest.NewCompose(t, compose, repo, "test", bin)
	r.Up(t, 30, func() {
		if out, err := r.Down(15 * time.Second); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})

	services := []string{"rafty-0", "rafty-1", "rafty-2"}
	waitHealthy := func(i int) {
		t.Helper()
		waitFor(t, 60*time.Second, services[i]+" to be ready", func() bool {
			return proctest.Readyz(r.MetricsAddr(i)) == http.StatusOK
		})
		// Docker's own view, through `kvnode health` inside the image.
		id := r.ContainerID(t, services[i])
		waitFor(t, 60*time.Second, services[i]+"'s healthcheck to pass", func() bool {
			out, err := proctest.Docker(30*time.Second, "inspect", "--format", "{{.State.Health.Status}}", id)
			return err == nil && out == "healthy"
		})
	}
	for i := range services {
		waitHealthy(i)
	}
	// What deploy/compose.yaml promises besides: a read-only root file
	// system and a restart unless stopped.
	for _, svc := range services {
		got, err := proctest.Docker(30*time.Second, "inspect", "--format",
			"{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.RestartPolicy.Name}}", r.ContainerID(t, svc))
		if err != nil || got != "true unless-stopped" {
			t.Errorf("%s: read-only root, restart policy = %q (err %v), want \"true unless-stopped\"", svc, got, err)
		}
	}

	all := []string{r.ClientAddr(0), r.ClientAddr(1), r.ClientAddr(2)}
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
	id0 := r.ContainerID(t, "rafty-0")
	if _, err := r.Run(time.Minute, "stop", "--timeout", "15", "rafty-0"); err != nil {
		t.Fatal(err)
	}
	if code, err := proctest.Docker(30*time.Second, "inspect", "--format", "{{.State.ExitCode}}", id0); err != nil || code != "0" {
		t.Errorf("rafty-0 exited with %q after a graceful stop (err %v), want 0", code, err)
	}
	write("while-down", 10)

	if _, err := r.Run(time.Minute, "start", "rafty-0"); err != nil {
		t.Fatal(err)
	}
	waitHealthy(0)
	write("after", 5)

	// Every member, the restarted one included, returns every write
	// (linearizable reads: each one has caught up before answering).
	for i := range services {
		one, err := dialClient([]string{r.ClientAddr(i)}, 2*time.Second)
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

	// A member added later (service rafty-3, profile "scale") joins
	// through KVNODE_JOIN, is promoted, and is removed before it stops.
	extra := freePorts(t, 2)
	t.Setenv("RAFTY3_CLIENT_PORT", portOf(extra[0]))
	t.Setenv("RAFTY3_METRICS_PORT", portOf(extra[1]))
	t.Cleanup(func() {
		// Before down (cleanups run last first): a down without the
		// profile leaves the profile's container behind.
		if out, err := r.Run(time.Minute, "--profile", "scale", "rm", "-f", "-s", "-v", "rafty-3"); err != nil {
			t.Logf("removing rafty-3: %v\n%s", err, out)
		}
	})
	if _, err := r.Run(2*time.Minute, "--profile", "scale", "up", "-d", "rafty-3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "rafty-3 to be ready", func() bool {
		return proctest.Readyz(extra[1]) == http.StatusOK
	})
	eps := "--endpoints=" + strings.Join(append(all, extra[0]), ",")
	waitFor(t, 60*time.Second, "rafty-3 to be promoted", func() bool {
		code, out, _ := runCLI(t, "member", "list", eps)
		return code == 0 && strings.Count(out, " voter ") == 4 && strings.Contains(out, "rafty-3")
	})
	if code, out, errOut := runCLI(t, "member", "remove", "rafty-3", eps); code != 0 || !strings.HasPrefix(out, "removed member 4 (rafty-3)") {
		t.Fatalf("member remove rafty-3: exit %d %q %q", code, out, errOut)
	}
	if _, err := r.Run(time.Minute, "--profile", "scale", "stop", "--timeout", "15", "rafty-3"); err != nil {
		t.Fatal(err)
	}
	write("after-scale", 5)
	if code, out, _ := runCLI(t, "member", "list", "--endpoints="+strings.Join(all, ",")); code != 0 || strings.Count(out, " voter ") != 3 {
		t.Fatalf("after removing rafty-3: exit %d\n%s", code, out)
	}
}
