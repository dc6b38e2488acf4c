package chaos

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes msg and reads as many bytes back, within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return buf, err
}

// dialLink returns a link to target and a connection through it, both
// closed when the test ends.
func dialLink(t *testing.T, target string) (*link, net.Conn) {
	t.Helper()
	l, err := newLink(0, 1, "127.0.0.1:0", func() string { return target })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c
}

func TestProxy(t *testing.T) {
	l, c := dialLink(t, echoServer(t))

	msg := bytes.Repeat([]byte("rafty"), 20000) // several chunks
	if got, err := roundTrip(c, msg, 5*time.Second); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("pass-through: %v (%d bytes back)", err, len(got))
	}

	// A stalled direction holds the bytes; on heal they arrive intact.
	for _, dir := range []struct {
		name      string
		fwd, back bool
	}{{"forward", true, false}, {"back", false, true}, {"both", true, true}} {
		l.Stall(dir.fwd, dir.back)
		if _, err := roundTrip(c, []byte("held"), 300*time.Millisecond); err == nil {
			t.Fatalf("%s stalled: bytes went through", dir.name)
		}
		l.Heal()
		buf := make([]byte, 4)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
			t.Fatalf("%s healed: %q %v", dir.name, buf, err)
		}
	}

	// Latency applies to each direction.
	l.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(c, []byte("slow"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Errorf("round trip with 100ms each way took %v", rtt)
	}
	l.Heal()

	// Reset closes the connection; a new one works.
	l.Reset()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Reset succeeded")
	}
	c2, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := roundTrip(c2, []byte("again"), 5*time.Second); err != nil {
		t.Fatalf("after Reset: %v", err)
	}

	// A reset while stalled must not leave the connection's goroutines
	// behind (Close waits for them; goleak checks at the end).
	l.Stall(true, true)
	_, _ = c2.Write([]byte("stuck"))
	time.Sleep(50 * time.Millisecond)
	l.Reset()
}

func TestProxyTargetDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	_, c := dialLink(t, dead)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("a proxy to a dead node kept the connection open")
	}
}
