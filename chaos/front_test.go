package chaos

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// front is the one peer address of a node that every other node dials:
// the address in the flags and in the replicated membership. Since
// membership changes, members carry their peer address in the replicated
// configuration (and a new member has one address for everybody), so a
// node can no longer be given a private proxy address per peer in
// --peers: a snapshot or a joiner would spread one node's view to all.
// The front tells the senders apart instead: it finds the process on the
// other end of each accepted loopback connection (/proc/net/tcp maps the
// connection to a socket inode, the processes' fd tables map the inode to
// a process) and hands the connection to the link (sender, this node),
// whose faults apply as before. A connection from no known node process
// goes to a link of its own that no fault touches.
type front struct {
	to      int
	ln      net.Listener
	links   func(from int) *link // the link (from, to); from -1 for an unknown sender
	senders func() map[int]int   // pid -> node index of every running node
	unknown atomic.Int64         // connections from no node process

	wg sync.WaitGroup
}

// newFront listens on addr and dispatches connections to links(from).
func newFront(to int, addr string, links func(from int) *link, senders func() map[int]int) (*front, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &front{to: to, ln: ln, links: links, senders: senders}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the node's peer address as every member dials it.
func (f *front) Addr() string { return f.ln.Addr().String() }

// Close stops accepting; the links close their connections themselves.
func (f *front) Close() {
	_ = f.ln.Close()
	f.wg.Wait()
}

func (f *front) accept() {
	defer f.wg.Done()
	for {
		a, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		from := -1
		if inode, err := peerInode(a); err == nil {
			for pid, i := range f.senders() {
				if pidHasSocket(pid, inode) {
					from = i
					break
				}
			}
		}
		if from < 0 {
			f.unknown.Add(1)
		}
		l := f.links(from)
		if l == nil {
			_ = a.Close()
			continue
		}
		l.serve(a)
	}
}

// needProc skips tb where the fronts cannot tell senders apart (no
// /proc/net/tcp: not Linux), rather than let every partition silently
// leak.
func needProc(tb interface{ Skip(...any) }) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		tb.Skip("skipping: the loopback chaos clusters need /proc/net/tcp (Linux) to tell peer connections apart:", err)
	}
}

// peerInode returns the inode of the socket at the other end of the
// loopback TCP connection c (held by some process on this machine).
func peerInode(c net.Conn) (uint64, error) {
	remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
	local, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("not a TCP connection")
	}
	// The other end's socket: its local address is our remote one.
	return socketInode(remote, local)
}

// socketInode finds in /proc/net/tcp the socket whose local address is
// local and remote address remote, and returns its inode.
func socketInode(local, remote *net.TCPAddr) (uint64, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	want := procAddr(local) + " " + procAddr(remote)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[1]+" "+fields[2] != want {
			continue
		}
		return strconv.ParseUint(fields[9], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no socket %s in /proc/net/tcp", want)
}

// procAddr writes an IPv4 address as /proc/net/tcp does: the address as a
// little-endian 32-bit hex number, a colon, the port in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	rev := []byte{ip[3], ip[2], ip[1], ip[0]}
	return strings.ToUpper(hex.EncodeToString(rev)) + fmt.Sprintf(":%04X", a.Port)
}

// pidHasSocket reports whether process pid has socket inode open.
func pidHasSocket(pid int, inode uint64) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	for _, e := range ents {
		if t, err := os.Readlink(dir + "/" + e.Name()); err == nil && t == want {
			return true
		}
	}
	return false
}
