package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rafty-db/rafty/internal/proctest"
)

// TestServeListenDefaults runs a one-node cluster the way the defaults
// mean it: no --peer-listen (the node listens on its own --peers entry)
// and --metrics-listen off. Writes and reads go through, and the node says
// it serves no metrics.
func TestServeListenDefaults(t *testing.T) {
	addrs := freePorts(t, 2)
	peer, client := addrs[0], addrs[1]
	dir := t.TempDir()
	logPath := filepath.Join(dir, "node.log")
	cmd := exec.Command(kvnodeBinary(t), "serve", "--id", "1", "--peers", "1="+peer,
		"--data-dir", filepath.Join(dir, "data"), "--client-listen", client, "--metrics-listen", "off",
		"--tick", "20ms")
	p, err := proctest.StartProc(cmd, logPath, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()

	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, stderr := runCLI(t, "put", "k", "v", "--endpoints", client)
		if code == 0 {
			break
		}
		if !p.Alive() || time.Now().After(deadline) {
			t.Fatalf("put never succeeded (last: exit %d, %q); log:\n%s", code, stderr, proctest.TailFile(logPath, 30))
		}
		time.Sleep(50 * time.Millisecond) // polling a process we cannot be notified by
	}
	if code, out, stderr := runCLI(t, "get", "k", "--endpoints", client); code != 0 || strings.TrimSpace(out) != "v" {
		t.Fatalf("get: exit %d, %q, %q", code, out, stderr)
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "metrics=off") || !strings.Contains(string(log), "peer_listen="+peer) {
		t.Errorf("log does not show metrics off and peer listen %s:\n%s", peer, proctest.Tail(string(log), 20))
	}
}

// TestServeListenDisagreement: a --peer-listen that peers cannot reach
// through this node's --peers entry stops serve at once with one line that
// names both.
func TestServeListenDisagreement(t *testing.T) {
	args := []string{"serve", "--id", "2", "--peers", "1=127.0.0.1:7101,2=127.0.0.1:7102",
		"--peer-listen", "127.0.0.1:7112", "--data-dir", t.TempDir()}
	code, stdout, stderr := runCLI(t, args...)
	wantOneLineError(t, args, code, stdout, stderr, 2,
		"--peer-listen 127.0.0.1:7112 disagrees with this node's --peers entry 2=127.0.0.1:7102")
}
