package main

import (
	"net"
	"sync"
)

// sharedListener lets successive servers use one listening socket: a
// node that decides to join under a new ID replaces the peer transport it
// started (to answer Probe under its ordinal's ID) by one with the ID the
// cluster allocated, on the same port its peers know. One goroutine
// accepts from the socket and hands each connection to whichever phase
// listener is accepting; closing a phase listener leaves the socket open.
type sharedListener struct {
	real  net.Listener
	conns chan net.Conn
	stop  chan struct{}
	done  chan struct{} // closed when the accept loop has ended
	err   error         // the socket's Accept error, set before done closes
	once  sync.Once
}

func newSharedListener(l net.Listener) *sharedListener {
	s := &sharedListener{real: l, conns: make(chan net.Conn), stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *sharedListener) loop() {
	defer close(s.done)
	for {
		c, err := s.real.Accept()
		if err != nil {
			s.err = err
			return
		}
		select {
		case s.conns <- c:
		case <-s.stop:
			_ = c.Close()
			return
		}
	}
}

// phase returns a listener for the next server on the socket.
func (s *sharedListener) phase() net.Listener {
	return &phaseListener{s: s, closed: make(chan struct{})}
}

// Close closes the socket and ends the accept loop.
func (s *sharedListener) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		err = s.real.Close()
		<-s.done
	})
	return err
}

// phaseListener is one server's view of a sharedListener.
type phaseListener struct {
	s      *sharedListener
	closed chan struct{}
	once   sync.Once
}

func (p *phaseListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.s.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-p.s.done:
		if p.s.err != nil {
			return nil, p.s.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops this phase's Accept; the socket stays open.
func (p *phaseListener) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *phaseListener) Addr() net.Addr { return p.s.real.Addr() }
