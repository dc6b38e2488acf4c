package main

import (
	"errors"
	"io"
	"net"
	"testing"
)

// TestSharedListener: successive phase listeners take connections from
// one socket; closing a phase leaves the socket serving the next, and
// closing the shared listener ends every phase's Accept.
func TestSharedListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newSharedListener(l)
	echoOnce := func(p net.Listener) {
		c, err := p.Accept()
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer c.Close()
		_, _ = io.CopyN(c, c, 1)
	}
	dialEcho := func() {
		t.Helper()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
			t.Fatalf("echo: %q %v", b, err)
		}
	}
	for range 2 {
		p := s.phase()
		if p.Addr().String() != l.Addr().String() {
			t.Fatalf("phase address %v", p.Addr())
		}
		done := make(chan struct{})
		go func() { echoOnce(p); close(done) }()
		dialEcho()
		<-done
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept on a closed phase: %v", err)
		}
	}
	p := s.phase()
	accepted := make(chan error, 1)
	go func() {
		_, err := p.Accept()
		accepted <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err == nil {
		t.Fatal("accept after the socket closed succeeded")
	}
	_ = s.Close() // idempotent
}
