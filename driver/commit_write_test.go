package driver_test

import (
	"fmt"
	"sync"
	"testing"

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
// past the commit index written to storage. With an UnsyncedCommitSaver
// the commit-only advances of sequential writes go through it instead of
// a full Save (the fsync this saves is the difference at low load).
func TestAppliedNeverPassesWrittenCommit(t *testing.T) {
	for _, unsynced := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsynced=%v", unsynced), func(t *testing.T) {
			watches := map[uint64]*commitWatch{}
			c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
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
			defer w.mu.Unlock()
			t.Logf("leader %d: %d saves with entries, %d commit-only saves, %d unsynced commit writes",
				lead, w.syncedSaves, w.commitOnlySaves, w.unsyncedWrites)
			if unsynced {
				if w.commitOnlySaves > 0 || w.unsyncedWrites < writes/2 {
					t.Fatalf("leader: %d commit-only Saves and %d unsynced commit writes for %d sequential writes; want 0 and most of them unsynced",
						w.commitOnlySaves, w.unsyncedWrites, writes)
				}
			} else if w.commitOnlySaves < writes/2 {
				t.Fatalf("leader: %d commit-only Saves for %d sequential writes; without the extension each commit advance needs one",
					w.commitOnlySaves, writes)
			}
		})
	}
}
