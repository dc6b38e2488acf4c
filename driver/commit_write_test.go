package driver_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// commitWatch wraps a node's storage and state machine: it records the
// commit index written to storage (by Save, or SaveCommitUnsynced when
// unsynced is on) and fails the test if the state machine is asked to
// apply past it — the invariant that lets a restarted node re-apply
// everything it exposed to reads (driver/ready.go persist).
type commitWatch struct {
	t        testing.TB
	id       uint64
	unsynced bool

	mu              sync.Mutex
	written         uint64
	syncedSaves     int // Saves with entries or a term/vote change
	commitOnlySaves int // Saves that only moved the commit index
	unsyncedWrites  int
	last            core.HardState
}

type watchedStorage struct {
	driver.Storage
	w *commitWatch
}

func (s watchedStorage) Save(hs core.HardState, ents []core.Entry) error {
	if err := s.Storage.Save(hs, ents); err != nil {
		return err
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if !hs.IsZero() {
		if len(ents) == 0 && hs.Term == w.last.Term && hs.Vote == w.last.Vote {
			w.commitOnlySaves++
		} else {
			w.syncedSaves++
		}
		w.written, w.last = hs.Commit, hs
	} else if len(ents) > 0 {
		w.syncedSaves++
	}
	return nil
}

// unsyncedStorage adds the UnsyncedCommitSaver extension.
type unsyncedStorage struct{ watchedStorage }

func (s unsyncedStorage) SaveCommitUnsynced(hs core.HardState) error {
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if hs.Term != w.last.Term || hs.Vote != w.last.Vote {
		w.t.Errorf("node %d: SaveCommitUnsynced(%+v) changes term or vote (last saved %+v)", w.id, hs, w.last)
	}
	// A commit index past the durable log would be a crash away from a
	// node that cannot start.
	if last, err := s.Storage.LastIndex(); err != nil || hs.Commit > last {
		w.t.Errorf("node %d: SaveCommitUnsynced(%+v) past the stored log (last index %d, %v)", w.id, hs, last, err)
	}
	// A memlog write is durable; for this test "written" is what counts.
	if err := s.Storage.Save(hs, nil); err != nil {
		return err
	}
	w.unsyncedWrites++
	w.written, w.last = hs.Commit, hs
	return nil
}

type watchedSM struct {
	driver.StateMachine
	w *commitWatch
}

func (s watchedSM) Apply(cmds []driver.Command) ([]any, error) {
	w := s.w
	w.mu.Lock()
	written := w.written
	w.mu.Unlock()
	if last := cmds[len(cmds)-1].Index; last > written {
		w.t.Errorf("node %d: applying index %d while the commit index written to storage is %d", w.id, last, written)
	}
	return s.StateMachine.Apply(cmds)
}

// TestAppliedNeverPassesWrittenCommit: on every node, nothing is applied
// past the commit index written to storage, and no commit index is
// written past the stored log. With an UnsyncedCommitSaver the
// commit-only advances of sequential writes go through it instead of a
// full Save (the fsync this saves is the difference at low load), and
// under concurrent writers entries committed by a Ready are applied
// before that Ready's own fsync (applyEarly).
func TestAppliedNeverPassesWrittenCommit(t *testing.T) {
	for _, unsynced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsynced=%v", unsynced), func(t *testing.T) {
			watches := map[uint64]*commitWatch{}
			regs := map[uint64]*prometheus.Registry{}
			c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
				if regs[cfg.ID] == nil {
					regs[cfg.ID] = prometheus.NewRegistry()
				}
				cfg.Registerer = regs[cfg.ID]
				w := watches[cfg.ID]
				if w == nil {
					w = &commitWatch{t: t, id: cfg.ID, unsynced: unsynced}
					watches[cfg.ID] = w
				}
				ws := watchedStorage{Storage: cfg.Storage, w: w}
				cfg.Storage = ws
				if unsynced {
					cfg.Storage = unsyncedStorage{ws}
				}
				cfg.StateMachine = watchedSM{StateMachine: cfg.StateMachine, w: w}
			}))
			lead := c.leader()
			const writes = 50
			var want []string
			for i := range writes {
				cmd := fmt.Sprintf("w%d", i)
				c.propose(lead, cmd)
				want = append(want, cmd)
			}
			c.awaitConverged(want...)
			w := watches[lead]
			w.mu.Lock()
			syncedSaves, commitOnlySaves, unsyncedWrites := w.syncedSaves, w.commitOnlySaves, w.unsyncedWrites
			w.mu.Unlock()
			t.Logf("leader %d: %d saves with entries, %d commit-only saves, %d unsynced commit writes",
				lead, syncedSaves, commitOnlySaves, unsyncedWrites)
			if unsynced {
				if commitOnlySaves > 0 || unsyncedWrites < writes/2 {
					t.Fatalf("leader: %d commit-only Saves and %d unsynced commit writes for %d sequential writes; want 0 and most of them unsynced",
						commitOnlySaves, unsyncedWrites, writes)
				}
			} else if commitOnlySaves < writes/2 {
				t.Fatalf("leader: %d commit-only Saves for %d sequential writes; without the extension each commit advance needs one",
					commitOnlySaves, writes)
			}

			// Concurrent writers: Readys carry the next batch together
			// with the previous batch's commitment, whose entries are
			// applied before the new batch's Save — only when the
			// commit can be written without an fsync.
			const writers, each = 16, 25
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
			if got := counterValue(t, regs[lead], "rafty_driver_commit_writes_unsynced_total"); unsynced && got < writes/2 || !unsynced && got != 0 {
				t.Fatalf("rafty_driver_commit_writes_unsynced_total = %v (unsynced extension: %v)", got, unsynced)
			}
			early := counterValue(t, regs[lead], "rafty_driver_applied_early_total")
			t.Logf("leader %d: %v entries applied ahead of their Ready's fsync", lead, early)
			if unsynced && early == 0 {
				t.Fatalf("no entry applied ahead of the next batch's fsync under %d concurrent writers", writers)
			}
			if !unsynced && early != 0 {
				t.Fatalf("%v entries applied early without an UnsyncedCommitSaver", early)
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
