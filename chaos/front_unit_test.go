package chaos

import (
	"net"
	"os"
	"testing"
	"time"
)

// TestFrontIdentifiesSender checks the front's /proc lookup on a
// connection this process makes: the sender found must be this process,
// and a connection from an unknown process goes to the unknown link.
func TestFrontIdentifiesSender(t *testing.T) {
	target := echoServer(t)
	links := map[int]*link{0: newLinkState(0, 1, func() string { return target }), -1: newLinkState(-1, 1, func() string { return target })}
	for _, l := range links {
		t.Cleanup(l.Close)
	}
	self := map[int]int{os.Getpid(): 0}
	f, err := newFront(1, "127.0.0.1:0", func(from int) *link { return links[from] }, func() map[int]int { return self })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	c, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, []byte("hello"), 5*time.Second); err != nil || string(got) != "hello" {
		t.Fatalf("through the front: %q, %v", got, err)
	}
	links[0].mu.Lock()
	known := len(links[0].conns)
	links[0].mu.Unlock()
	if known != 1 {
		t.Fatalf("the connection from this process went to the unknown link (link 0 has %d connections)", known)
	}
	// Stalling link 0 holds this process's bytes.
	links[0].Stall(true, false)
	if _, err := roundTrip(c, []byte("held"), 300*time.Millisecond); err == nil {
		t.Fatal("stalled link: bytes went through")
	}
	links[0].Heal()
}
