package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// etcdGoMod returns the path and text of etcd's own go.mod (that of
// etcdModule at the version this module requires) from the module cache.
func etcdGoMod(t *testing.T) (string, []byte) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}} {{.GoMod}}", etcdModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", etcdModule, err)
	}
	version, path, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if version != etcdVersion {
		t.Fatalf("go.mod requires %s %s, want %s", etcdModule, version, etcdVersion)
	}
	gomod, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return path, gomod
}

// TestBuiltWithEtcdsVersions builds the member as compare.sh does and
// checks, on the binary (`go version -m`), that every module linked in is
// at the version etcd's own go.mod pins: Rafty's module and its versions of
// grpc, protobuf, prometheus... do not reach the etcd server. The binary's
// --verify-deps, which compare.sh runs on bin/etcd-member, must agree.
func TestBuiltWithEtcdsVersions(t *testing.T) {
	path, gomod := etcdGoMod(t)
	bin := filepath.Join(t.TempDir(), "etcd-member")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	mods := parseGoVersionM(out)
	report, err := checkDeps(mods, gomod)
	if err != nil {
		t.Fatalf("%v\n%s", err, report)
	}
	versions := map[string]string{}
	for _, m := range mods {
		versions[m.Path] = m.Version
	}
	// The modules the main module would have raised (it requires grpc
	// v1.85.0, protobuf v1.36.12, client_golang v1.25.0) are at etcd's.
	pins, _ := parseRequires(gomod)
	for _, p := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/prometheus/client_golang", "go.etcd.io/bbolt"} {
		if versions[p] == "" || versions[p] != pins[p] {
			t.Errorf("%s: built %q, etcd pins %q", p, versions[p], pins[p])
		}
	}
	t.Logf("%d modules linked in, all at etcd %s's versions (grpc %s, protobuf %s)",
		len(mods), etcdVersion, versions["google.golang.org/grpc"], versions["google.golang.org/protobuf"])

	var stdout bytes.Buffer
	cmd := exec.Command(bin, "--verify-deps", path)
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		t.Fatalf("--verify-deps: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "google.golang.org/grpc") {
		t.Errorf("--verify-deps printed:\n%s", stdout.String())
	}
}

const sampleGoMod = `module go.etcd.io/etcd/server/v3

go 1.26.0

require (
	google.golang.org/grpc v1.83.2
	go.etcd.io/etcd/api/v3 v3.7.3 // a comment
)

require go.uber.org/zap v1.27.1

require (
	github.com/beorn7/perks v1.0.1 // indirect
)

replace (
	go.etcd.io/etcd/api/v3 => ../api
)
`

func TestParseRequires(t *testing.T) {
	req, err := parseRequires([]byte(sampleGoMod))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"google.golang.org/grpc": "v1.83.2", "go.etcd.io/etcd/api/v3": "v3.7.3",
		"go.uber.org/zap": "v1.27.1", "github.com/beorn7/perks": "v1.0.1",
	}
	if len(req) != len(want) {
		t.Errorf("got %v, want %v", req, want)
	}
	for p, v := range want {
		if req[p] != v {
			t.Errorf("%s: %q, want %q", p, req[p], v)
		}
	}
	for _, bad := range []string{"module x\n", "require (\n\ta b c\n)\n"} {
		if _, err := parseRequires([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseGoVersionM(t *testing.T) {
	out := "/tmp/etcd-member: go1.26.8\n\tpath\tgithub.com/rafty-db/rafty/bench/etcd/member\n" +
		"\tmod\tgithub.com/rafty-db/rafty/bench/etcd/member\t(devel)\t\n" +
		"\tdep\tgoogle.golang.org/grpc\tv1.83.2\th1:x=\n" +
		"\tdep\tgo.etcd.io/etcd/api/v3\tv3.7.3\n\t=>\t../api\t(devel)\t\n" +
		"\tbuild\t-compiler=gc\n"
	got := parseGoVersionM([]byte(out))
	want := []module{{"google.golang.org/grpc", "v1.83.2", false}, {"go.etcd.io/etcd/api/v3", "v3.7.3", true}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestCheckDeps(t *testing.T) {
	good := []module{{etcdModule, etcdVersion, false}, {"google.golang.org/grpc", "v1.83.2", false}, {"go.uber.org/zap", "v1.27.1", false}}
	if report, err := checkDeps(good, []byte(sampleGoMod)); err != nil || !strings.Contains(report, "google.golang.org/grpc") {
		t.Errorf("good build: %v\n%s", err, report)
	}
	for _, tc := range []struct {
		name string
		mods []module
		want string
	}{
		{"raised grpc", []module{good[0], {"google.golang.org/grpc", "v1.85.0", false}}, "etcd pins v1.83.2"},
		{"rafty linked in", []module{good[0], {"github.com/rafty-db/rafty", "v0.0.0", false}}, "Rafty's module"},
		{"unpinned module", []module{good[0], {"github.com/cockroachdb/pebble/v2", "v2.1.7", false}}, "not in etcd's go.mod"},
		{"replaced", []module{good[0], {"go.uber.org/zap", "v1.27.1", true}}, "replaced"},
		{"other etcd", []module{{etcdModule, "v3.6.0", false}}, "want " + etcdVersion},
		{"no etcd", good[1:], "not linked in"},
	} {
		if _, err := checkDeps(tc.mods, []byte(sampleGoMod)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		{},
		{"--name", "m1"},
		{"--name", "m1", "--data-dir", "d", "--peer-url", "http://127.0.0.1:1", "--client-url", "http://127.0.0.1:2", "--initial-cluster", "m1=http://127.0.0.1:1", "extra"},
		{"--name", "m1", "--data-dir", "d", "--peer-url", "http://127.0.0.1:1", "--client-url", "http://127.0.0.1:2", "--initial-cluster", "m1=http://127.0.0.1:1", "--quota-bytes", "0"},
		{"--no-such-flag"},
	} {
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
	if code := run(context.Background(), []string{"--verify-deps", filepath.Join(t.TempDir(), "missing")}, &out, &errOut); code != 1 {
		t.Errorf("--verify-deps of a missing file: exit %d, want 1", code)
	}
	// A URL that does not parse is bad input, not a start-up failure.
	m := memberConfig{name: "m1", dataDir: t.TempDir(), peerURL: "http://[bad", clientURL: "http://127.0.0.1:2", initialCluster: "m1=http://[bad"}
	if _, err := m.embedConfig(); err == nil {
		t.Error("a bad peer URL: no error")
	}
}
