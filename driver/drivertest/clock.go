package drivertest

import (
	"sync"
	"time"

	"github.com/rafty-db/rafty/driver"
)

// Clock is a manual driver.Clock. Its time starts at a fixed instant and
// moves only through Advance (or Run, which calls Advance steadily).
// Tickers fire like time.Ticker: on each Advance past their next deadline
// they deliver one tick, dropping it if the previous one was not taken.
// It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	tickers map[*ticker]struct{}
}

var _ driver.Clock = (*Clock)(nil)

// NewClock returns a clock set to 2001-09-09 01:46:40 UTC.
func NewClock() *Clock {
	return &Clock{now: time.Unix(1_000_000_000, 0).UTC(), tickers: map[*ticker]struct{}{}}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTicker returns a ticker firing every d of the clock's time.
func (c *Clock) NewTicker(d time.Duration) driver.Ticker {
	if d <= 0 {
		panic("drivertest: non-positive ticker interval")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &ticker{c: c, d: d, next: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.tickers[t] = struct{}{}
	return t
}

// Advance moves the clock forward by d and fires every ticker whose
// deadline has passed (once, however many periods passed).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.tickers {
		if t.next.After(c.now) {
			continue
		}
		select {
		case t.ch <- c.now:
		default:
		}
		for !t.next.After(c.now) {
			t.next = t.next.Add(t.d)
		}
	}
}

// Run advances the clock by step every real interval `every`, on a
// goroutine, until the returned stop function is called (stop waits for
// the goroutine; calling it again is harmless). Tests use it to let
// protocol time flow at a chosen speed, and stop it to freeze time.
func (c *Clock) Run(step, every time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
				c.Advance(step)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

type ticker struct {
	c    *Clock
	d    time.Duration
	next time.Time // guarded by c.mu
	ch   chan time.Time
}

func (t *ticker) C() <-chan time.Time { return t.ch }

func (t *ticker) Stop() {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	delete(t.c.tickers, t)
}
