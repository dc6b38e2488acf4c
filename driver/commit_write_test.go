package driver_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// orderWatch wraps a node's storage and state machine and checks the
// apply-ordering rules as they happen: the state machine is handed a
// command only once its entry is durable in the local log (a Save holding
// it returned) and a commit index covering it was written (by Save or
// CommitWriter.WriteCommit), so a restarted node re-applies everything it
// exposed to reads; a commit index is never written past the durable log;
// Apply never runs concurrently with itself; and membership entries never
// reach it.
type orderWatch struct {
	t  testing.TB
	id uint64

	mu      sync.Mutex
	durable map[uint64]bool // indexes of entries a returned Save wrote
	last    uint64          // last durable index
	written uint64          // highest commit index written
	saves   int
	writes  int // WriteCommit calls

	applying atomic.Bool
}

type orderStorage struct {
	driver.Storage
	w *orderWatch
}

func (s orderStorage) Save(hs core.HardState, ents []core.Entry) error {
	if err := s.Storage.Save(hs, ents); err != nil {
		return err
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.saves++
	if len(ents) > 0 {
		// The stored suffix from ents[0] on is replaced.
		for i := ents[0].Index; i <= w.last; i++ {
			delete(w.durable, i)
		}
		for _, e := range ents {
			w.durable[e.Index] = true
		}
		w.last = ents[len(ents)-1].Index
	}
	if hs.Commit > w.last {
		w.t.Errorf("node %d: Save wrote commit index %d past the durable log (last %d)", w.id, hs.Commit, w.last)
	}
	w.written = max(w.written, hs.Commit)
	return nil
}

// commitWriterStorage adds the CommitWriter extension.
type commitWriterStorage struct{ orderStorage }

func (s commitWriterStorage) WriteCommit(index uint64) error {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if index > w.last {
		w.t.Errorf("node %d: WriteCommit(%d) past the durable log (last %d)", w.id, index, w.last)
	}
	w.writes++
	w.written = max(w.written, index)
	return nil
}

var _ driver.CommitWriter = commitWriterStorage{}

type orderSM struct {
	driver.StateMachine
	w *orderWatch
}

func (s orderSM) Apply(cmds []driver.Command) ([]any, error) {
	w := s.w
	if !w.applying.CompareAndSwap(false, true) {
		w.t.Errorf("node %d: Apply called concurrently with itself", w.id)
	}
	defer w.applying.Store(false)
	w.mu.Lock()
	for _, c := range cmds {
		if !w.durable[c.Index] {
			w.t.Errorf("node %d: applying index %d, not durable in the local log (last durable %d)", w.id, c.Index, w.last)
		}
		if c.Index > w.written {
			w.t.Errorf("node %d: applying index %d while the commit index written is %d", w.id, c.Index, w.written)
		}
		if d := string(c.Data); !strings.HasPrefix(d, "w") && !strings.HasPrefix(d, "c") {
			w.t.Errorf("node %d: the state machine was handed %q at index %d, which no test proposed", w.id, d, c.Index)
		}
	}
	w.mu.Unlock()
	return s.StateMachine.Apply(cmds)
}

// TestApplyOrdering: on every node of a cluster with a membership entry at
// index 1, sequential and concurrent writes are applied only once durable
// locally and below a written commit index (orderWatch), both with a
// Storage that implements CommitWriter (commit indexes written without an
// fsync: commit_writes_total) and without (the commit index rides on a
// synced Save the applier waits for: commit_saves_total).
func TestApplyOrdering(t *testing.T) {
	for _, withWriter := range []bool{false, true} {
		t.Run(fmt.Sprintf("CommitWriter=%v", withWriter), func(t *testing.T) {
			watches := map[uint64]*orderWatch{}
			regs := map[uint64]*prometheus.Registry{}
			c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
				if regs[cfg.ID] == nil {
					regs[cfg.ID] = prometheus.NewRegistry()
				}
				cfg.Registerer = regs[cfg.ID]
				w := watches[cfg.ID]
				if w == nil {
					w = &orderWatch{t: t, id: cfg.ID, durable: map[uint64]bool{}}
					watches[cfg.ID] = w
				}
				ws := orderStorage{Storage: cfg.Storage, w: w}
				cfg.Storage = ws
				if withWriter {
					cfg.Storage = commitWriterStorage{ws}
				}
				cfg.StateMachine = orderSM{StateMachine: cfg.StateMachine, w: w}
			}))
			lead := c.leader()
			var want []string
			for i := range 30 {
				cmd := fmt.Sprintf("w%d", i)
				c.propose(lead, cmd)
				want = append(want, cmd)
			}
			const writers, each = 16, 20
			var wg sync.WaitGroup
			for g := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						c.propose(lead, fmt.Sprintf("c%d-%d", g, i))
					}
				}()
			}
			wg.Wait()
			c.awaitConverged(want...)
			writes := counterValue(t, regs[lead], "rafty_driver_commit_writes_total")
			saves := counterValue(t, regs[lead], "rafty_driver_commit_saves_total")
			w := watches[lead]
			w.mu.Lock()
			t.Logf("leader %d: %d Saves, %d WriteCommit calls; commit_writes_total %v, commit_saves_total %v",
				lead, w.saves, w.writes, writes, saves)
			w.mu.Unlock()
			if withWriter && (writes == 0 || saves != 0) || !withWriter && (writes != 0 || saves == 0) {
				t.Fatalf("commit_writes_total %v, commit_saves_total %v with CommitWriter %v", writes, saves, withWriter)
			}
		})
	}
}

// counterValue reads a counter from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
