package chaos

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// link is a fault-injecting TCP proxy for one ordered pair of nodes: node
// from dials it to reach node to's peer port. Rafty's transport sends a
// node's messages to a peer only over the connection that node dialled
// (the receiver never answers on it except to end the stream), so a link
// carries exactly the messages from -> to, and cutting it is a one-way
// partition of those messages.
//
// A link forwards bytes in both directions; each direction can be stalled
// (bytes are held, not dropped: the sender's kernel buffers fill up and TCP
// pushes back, as in a real partition, and on heal the stream resumes
// intact unless the endpoints gave up on it meanwhile) or delayed by a
// fixed latency. Reset closes every current connection. Memory is bounded
// per connection by the chunk queue.
type link struct {
	from, to int
	ln       net.Listener
	target   func() string // the current address of node to's peer port

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the state below changes
	stallF  bool          // hold bytes from -> to
	stallB  bool          // hold bytes to -> from
	delay   time.Duration // added to every chunk, both directions
	closed  bool
	conns   map[*proxyConn]struct{}

	wg sync.WaitGroup
}

// proxyConn is one proxied connection: the accepted side and the dialled
// side.
type proxyConn struct {
	a, b net.Conn
	once sync.Once
	dead chan struct{} // closed by close
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		_ = c.a.Close()
		_ = c.b.Close()
		close(c.dead)
	})
}

// chunkQueue bounds what a connection buffers per direction: at most
// queueChunks chunks of up to chunkBytes.
const (
	queueChunks = 64
	chunkBytes  = 32 << 10
)

// newLink listens on addr (host:0 for any port) and proxies to target().
func newLink(from, to int, addr string, target func() string) (*link, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := newLinkState(from, to, target)
	l.ln = ln
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// newLinkState is a link without a listener of its own: a front (front_test.go)
// hands it the connections it identifies as coming from node from.
func newLinkState(from, to int, target func() string) *link {
	return &link{from: from, to: to, target: target, changed: make(chan struct{}), conns: map[*proxyConn]struct{}{}}
}

// Addr is the address node from dials (a link with a listener of its own).
func (l *link) Addr() string { return l.ln.Addr().String() }

// set changes the link's state under mu and wakes every pump.
func (l *link) set(f func()) {
	l.mu.Lock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// Stall holds the traffic from -> to (fwd) and/or to -> from (back).
func (l *link) Stall(fwd, back bool) { l.set(func() { l.stallF, l.stallB = fwd, back }) }

// SetDelay adds d of latency to every chunk in both directions.
func (l *link) SetDelay(d time.Duration) { l.set(func() { l.delay = d }) }

// Heal lets everything through at once, with no added latency.
func (l *link) Heal() { l.set(func() { l.stallF, l.stallB, l.delay = false, false, 0 }) }

// Reset closes every current connection (as a connection reset would); new
// ones are accepted as usual.
func (l *link) Reset() {
	l.mu.Lock()
	conns := make([]*proxyConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// Close stops the listener, closes every connection and waits for every
// goroutine of the link.
func (l *link) Close() {
	l.set(func() { l.closed = true })
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.Reset()
	l.wg.Wait()
}

// state returns whether direction fwd is stalled, the delay, whether the
// link is closed, and the channel that is closed at the next change.
func (l *link) state(fwd bool) (stalled bool, delay time.Duration, closed bool, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fwd {
		stalled = l.stallF
	} else {
		stalled = l.stallB
	}
	return stalled, l.delay, l.closed, l.changed
}

func (l *link) accept() {
	defer l.wg.Done()
	for {
		a, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		if !l.serve(a) {
			return
		}
	}
}

// serve proxies accepted connection a to the link's target. It returns
// false once the link is closed.
func (l *link) serve(a net.Conn) bool {
	b, err := net.DialTimeout("tcp", l.target(), time.Second)
	if err != nil {
		_ = a.Close() // the node is down: so is its proxy
		return true
	}
	c := &proxyConn{a: a, b: b, dead: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.close()
		return false
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	l.mu.Unlock()
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() {
		defer l.wg.Done()
		pumps.Wait()
		c.close()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	go l.pump(c, a, b, true, &pumps)
	go l.pump(c, b, a, false, &pumps)
	return true
}

// chunk is a piece of the byte stream and when it was read.
type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst through a bounded queue: a reader goroutine reads
// chunks, the writer holds each while its direction is stalled and until
// its delay has passed, then writes it. Either side failing closes the
// whole connection.
func (l *link) pump(c *proxyConn, src, dst net.Conn, fwd bool, done *sync.WaitGroup) {
	defer done.Done()
	q := make(chan chunk, queueChunks)
	quit := make(chan struct{})
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(q)
		for {
			buf := make([]byte, chunkBytes)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{b: buf[:n], at: time.Now()}:
				case <-quit:
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					c.close()
				}
				return
			}
		}
	}()
	defer close(quit)
	for ch := range q {
		for {
			stalled, delay, closed, changed := l.state(fwd)
			if closed {
				c.close()
				return
			}
			if stalled {
				select {
				case <-changed:
					continue
				case <-c.dead:
					return
				}
			}
			if wait := time.Until(ch.at.Add(delay)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-changed:
					t.Stop()
					continue // re-read the state: it may be stalled now
				case <-c.dead:
					t.Stop()
					return
				}
			}
			break
		}
		if _, err := dst.Write(ch.b); err != nil {
			c.close()
			return
		}
	}
	// src reached EOF: pass the half-close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}
