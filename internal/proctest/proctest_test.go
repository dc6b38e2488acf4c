package proctest

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, ""},
	} {
		if got := Tail(tc.s, tc.n); got != tc.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
	if got := TailFile(filepath.Join(t.TempDir(), "missing"), 3); got != "" {
		t.Errorf("TailFile of a missing file = %q, want \"\"", got)
	}
}

func TestFreeAddrs(t *testing.T) {
	addrs, err := FreeAddrs("127.0.0.1", 5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
			t.Fatalf("FreeAddrs = %v: want distinct 127.0.0.1 addresses", addrs)
		}
		seen[a] = true
	}
}

func TestReadyz(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	addr := strings.TrimPrefix(srv.URL, "http://")
	if got := Readyz(addr); got != http.StatusOK {
		t.Errorf("Readyz of a ready server = %d, want 200", got)
	}
	srv.Close()
	if got := Readyz(addr); got != 0 {
		t.Errorf("Readyz of a closed server = %d, want 0", got)
	}
}

func TestProc(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("skipping: no sh on PATH")
	}
	log := filepath.Join(t.TempDir(), "proc.log")

	exited := make(chan error, 1)
	p, err := StartProc(exec.Command(sh, "-c", "echo out; echo err >&2; exit 3"), log, "== first ==", func(err error) { exited <- err })
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Err = %v, want exit status 3", err)
	}
	select {
	case err := <-exited:
		if err != p.Err() {
			t.Errorf("onExit got %v, Err is %v", err, p.Err())
		}
	default:
		t.Error("Done closed before onExit was called")
	}
	if p.Alive() {
		t.Error("Alive after exit")
	}

	// A second start appends to the same log; Kill ends it.
	p, err = StartProc(exec.Command(sh, "-c", "exec sleep 60"), log, "== second ==", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() {
		t.Error("not Alive after start")
	}
	p.Kill()
	if p.Alive() || p.Err() == nil {
		t.Errorf("after Kill: Alive %v, Err %v", p.Alive(), p.Err())
	}
	got := TailFile(log, 10)
	for _, want := range []string{"== first ==", "out", "err", "== second =="} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}

	var never *Proc
	if never.Alive() {
		t.Error("a nil Proc is Alive")
	}
	never.Kill() // a no-op
}
