package drivertest_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver/drivertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a MessageHandler that records what it receives.
type recorder struct {
	mu          sync.Mutex
	got         []core.Message
	unreachable []uint64
}

func (r *recorder) HandleMessages(_ context.Context, msgs []core.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, msgs...)
	return nil
}
func (r *recorder) HandleSnapshot(context.Context, core.Message, io.Reader) error { return nil }
func (r *recorder) ReportUnreachable(peer uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable = append(r.unreachable, peer)
}

func (r *recorder) snapshot() ([]core.Message, []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]core.Message(nil), r.got...), append([]uint64(nil), r.unreachable...)
}

func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tk.C
	}
}

func TestNetworkDeliversInOrderAndCopiesEntries(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	r1, r2 := &recorder{}, &recorder{}
	e1 := nw.Join(1, r1)
	nw.Join(2, r2)
	ents := []core.Entry{{Index: 1, Term: 1, Data: []byte("a")}}
	for i := range 100 {
		e1.Send([]core.Message{{Type: core.MsgApp, From: 1, To: 2, Index: uint64(i), Entries: ents}})
	}
	await(t, "100 messages", func() bool { got, _ := r2.snapshot(); return len(got) == 100 })
	got, _ := r2.snapshot()
	for i, m := range got {
		if m.Index != uint64(i) {
			t.Fatalf("message %d has index %d: out of order", i, m.Index)
		}
		if &m.Entries[0] == &ents[0] {
			t.Fatal("entries slice shared between sender and receiver")
		}
	}
}

func TestNetworkCutHealAndDrop(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	r1, r2 := &recorder{}, &recorder{}
	e1 := nw.Join(1, r1)
	nw.Join(2, r2)
	nw.Cut(1, 2)
	e1.Send([]core.Message{{Type: core.MsgHeartbeat, From: 1, To: 2, Context: 1}})
	await(t, "an unreachable report", func() bool { _, u := r1.snapshot(); return len(u) == 1 && u[0] == 2 })
	nw.Heal(1, 2)
	nw.SetDrop(func(m core.Message) bool { return m.Context == 2 })
	e1.Send([]core.Message{
		{Type: core.MsgHeartbeat, From: 1, To: 2, Context: 2},
		{Type: core.MsgHeartbeat, From: 1, To: 2, Context: 3},
	})
	await(t, "the undropped message", func() bool { got, _ := r2.snapshot(); return len(got) == 1 })
	if got, _ := r2.snapshot(); got[0].Context != 3 {
		t.Fatalf("delivered %v", got)
	}
	// Unknown peer: reported unreachable.
	e1.Send([]core.Message{{Type: core.MsgHeartbeat, From: 1, To: 9}})
	await(t, "unreachable 9", func() bool { _, u := r1.snapshot(); return len(u) == 2 && u[1] == 9 })
}

func TestEndpointCloseStopsDelivery(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	r1, r2 := &recorder{}, &recorder{}
	e1 := nw.Join(1, r1)
	e2 := nw.Join(2, r2)
	if err := e2.Close(); err != nil {
		t.Fatal(err)
	}
	_ = e2.Close() // idempotent
	e1.Send([]core.Message{{Type: core.MsgHeartbeat, From: 1, To: 2}})
	await(t, "unreachable after close", func() bool { _, u := r1.snapshot(); return len(u) == 1 })
	if got, _ := r2.snapshot(); len(got) != 0 {
		t.Fatalf("closed endpoint received %v", got)
	}
	_ = e1.Close()
	e1.Send([]core.Message{{Type: core.MsgHeartbeat, From: 1, To: 2}}) // no-op after close
}

func TestClockTickers(t *testing.T) {
	c := drivertest.NewClock()
	start := c.Now()
	tk := c.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	c.Advance(5 * time.Millisecond)
	select {
	case <-tk.C():
		t.Fatal("ticked before its period")
	default:
	}
	c.Advance(5 * time.Millisecond)
	if got := <-tk.C(); !got.Equal(start.Add(10 * time.Millisecond)) {
		t.Fatalf("tick at %v", got)
	}
	// Many periods at once: one tick is delivered, the rest dropped, like
	// time.Ticker with a slow receiver.
	c.Advance(100 * time.Millisecond)
	<-tk.C()
	select {
	case <-tk.C():
		t.Fatal("more than one buffered tick")
	default:
	}
	if got := c.Now().Sub(start); got != 110*time.Millisecond {
		t.Fatalf("clock moved %v", got)
	}
	stop := c.Run(time.Millisecond, time.Millisecond)
	await(t, "Run to advance the clock", func() bool { return c.Now().Sub(start) > 120*time.Millisecond })
	stop()
	stop()
}
