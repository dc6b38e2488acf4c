package proctest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"
)

// FreeAddrs returns n distinct free TCP addresses on host. A process
// cannot be handed a listener, so they are found by binding host:0 (all n
// at once, so they differ) and closing; the kernel does not hand them out
// again at once.
func FreeAddrs(host string, n int) ([]string, error) {
	addrs := make([]string, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// Readyz returns the status code of GET /readyz on the metrics address
// addr, or 0 if it does not answer within a second.
func Readyz(addr string) int {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TailFile returns the last n lines of the file at path ("" if it cannot
// be read).
func TailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	return Tail(string(b), n)
}

// Proc is a process a test started (a kvnode node, typically), its
// standard output and error appended to a log file, and watched until it
// exits.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // the exit error; set before done is closed
}

// StartProc starts cmd with its standard output and error appended to the
// file logPath (created if need be), after the line header if it is not
// empty. onExit, if not nil, is called with the exit error once the
// process has exited and the log file is closed, before Done is closed.
func StartProc(cmd *exec.Cmd, logPath, header string, onExit func(error)) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if header != "" {
		fmt.Fprintln(logf, header)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.err = err
		if onExit != nil {
			onExit(err)
		}
		close(p.done)
	}()
	return p, nil
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err waits for the process to exit and returns its exit error (nil for
// status 0).
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Alive reports whether the process runs (a stopped one does); false for
// a nil Proc, one never started.
func (p *Proc) Alive() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to be gone; a nil Proc
// (never started) is left alone.
func (p *Proc) Kill() {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}
