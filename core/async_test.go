package core_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// asyncNode drives one node under Config.AsyncStorageWrites the way the
// contract on core.Ready says, but with persistence and application under
// the test's control: take hands Readies out (Messages leave at once,
// persist batches and committed entries queue), persist writes queued
// batches in order and acknowledges them, apply applies queued committed
// entries and acknowledges them.
type asyncNode struct {
	t   testing.TB
	id  uint64
	n   *core.Node
	log *memlog.Log
	// persistQ are the Readies whose persist batch is not yet written.
	persistQ []core.Ready
	// applyQ are committed entry batches handed out, not yet applied.
	applyQ [][]core.Entry
	// applied is what the state machine applied, in order.
	applied []core.Entry
	// commitFile is the commit index written through CommitToWrite (the
	// driver's CommitWriter: no fsync, survives a process crash here).
	commitFile uint64
	// out collects messages ready to leave, in order; afterPersist are
	// those that came from MessagesAfterPersist.
	out          []core.Message
	afterPersist []core.Message
	readies      []core.Ready
}

func asyncConfig(id uint64, voters ...uint64) core.Config {
	cfg := testConfig(id, voters...)
	cfg.AsyncStorageWrites = true
	return cfg
}

func newAsyncNode(t testing.TB, cfg core.Config, log *memlog.Log) *asyncNode {
	t.Helper()
	n, err := core.New(cfg, log)
	if err != nil {
		t.Fatalf("New(%d): %v", cfg.ID, err)
	}
	hs, _, _ := log.InitialState()
	return &asyncNode{t: t, id: cfg.ID, n: n, log: log, commitFile: hs.Commit}
}

// take hands out every Ready the node has, following steps 1, 2 (queue),
// 3 (write CommitToWrite, queue entries) and 5 of the async contract.
func (a *asyncNode) take() int {
	a.t.Helper()
	k := 0
	for a.n.HasReady() {
		k++
		if k > 1000 {
			a.t.Fatalf("node %d: HasReady spins", a.id)
		}
		rd, err := a.n.Ready()
		if err != nil {
			a.t.Fatalf("node %d Ready: %v", a.id, err)
		}
		if rd.IsEmpty() && rd.Persist.IsZero() && rd.CommitToWrite == 0 {
			a.t.Fatalf("node %d: HasReady but an empty Ready", a.id)
		}
		if want := rd.MustSync(a.lastHS()); rd.Sync != want {
			a.t.Fatalf("node %d: Ready.Sync %v, MustSync against the last hard state handed out says %v", a.id, rd.Sync, want)
		}
		a.readies = append(a.readies, rd)
		a.out = append(a.out, rd.Messages...)
		a.persistQ = append(a.persistQ, rd)
		if rd.CommitToWrite != 0 {
			a.commitFile = max(a.commitFile, rd.CommitToWrite)
		}
		if len(rd.CommittedEntries) > 0 {
			if last := rd.CommittedEntries[len(rd.CommittedEntries)-1].Index; last > a.commitFile {
				a.t.Fatalf("node %d: committed entry %d handed out above the written commit %d", a.id, last, a.commitFile)
			}
			a.applyQ = append(a.applyQ, rd.CommittedEntries)
		}
		if err := a.n.Advance(rd); err != nil {
			a.t.Fatalf("node %d Advance: %v", a.id, err)
		}
	}
	return k
}

// lastHS is the last non-zero hard state handed out (or stored at start).
func (a *asyncNode) lastHS() core.HardState {
	for i := len(a.readies) - 1; i >= 0; i-- {
		if hs := a.readies[i].HardState; !hs.IsZero() {
			return hs
		}
	}
	hs, _, _ := a.log.InitialState()
	return hs
}

// persist writes the oldest k queued batches (all if k < 0), in order, and
// acknowledges each.
func (a *asyncNode) persist(k int) {
	a.t.Helper()
	if k < 0 || k > len(a.persistQ) {
		k = len(a.persistQ)
	}
	for range k {
		rd := a.persistQ[0]
		a.persistQ = a.persistQ[1:]
		if rd.Snapshot != nil {
			if len(a.applyQ) > 0 {
				a.t.Fatalf("node %d: test driver installs a snapshot with committed entries unapplied", a.id)
			}
			if err := a.log.InstallSnapshot(*rd.Snapshot); err != nil {
				a.t.Fatalf("node %d install snapshot: %v", a.id, err)
			}
			a.applied = append(a.applied, core.Entry{Index: rd.Snapshot.Index, Term: rd.Snapshot.Term, Data: []byte("snapshot")})
		}
		if err := a.log.Save(rd.HardState, rd.Entries); err != nil {
			a.t.Fatalf("node %d save: %v", a.id, err)
		}
		a.out = append(a.out, rd.MessagesAfterPersist...)
		a.afterPersist = append(a.afterPersist, rd.MessagesAfterPersist...)
		if err := a.n.AckPersisted(rd.Persist); err != nil {
			a.t.Fatalf("node %d AckPersisted(%+v): %v", a.id, rd.Persist, err)
		}
	}
}

// apply applies the oldest k queued committed batches (all if k < 0) and
// acknowledges them.
func (a *asyncNode) apply(k int) {
	a.t.Helper()
	if k < 0 || k > len(a.applyQ) {
		k = len(a.applyQ)
	}
	for range k {
		ents := a.applyQ[0]
		a.applyQ = a.applyQ[1:]
		a.applied = append(a.applied, ents...)
		if err := a.n.AckApplied(ents[len(ents)-1].Index); err != nil {
			a.t.Fatalf("node %d AckApplied: %v", a.id, err)
		}
	}
}

// flush takes, persists and applies until the node is quiet.
func (a *asyncNode) flush() {
	a.t.Helper()
	for range 1000 {
		a.take()
		if len(a.persistQ) == 0 && len(a.applyQ) == 0 {
			return
		}
		a.persist(-1)
		a.apply(-1)
	}
	a.t.Fatalf("node %d did not quiesce", a.id)
}

// drain returns and clears the outgoing messages.
func (a *asyncNode) drain() []core.Message {
	out := a.out
	a.out = nil
	return out
}

// data returns the non-empty commands applied, as strings.
func (a *asyncNode) data() []string {
	var out []string
	for _, e := range a.applied {
		if len(e.Data) > 0 && e.Type == core.EntryNormal {
			out = append(out, string(e.Data))
		}
	}
	return out
}

// newAsyncSingle returns a bootstrapped single-voter async node, leader,
// with its bootstrap and election no-op applied.
func newAsyncSingle(t *testing.T, tweak func(*core.Config)) *asyncNode {
	t.Helper()
	cfg := asyncConfig(1, 1)
	if tweak != nil {
		tweak(&cfg)
	}
	a := newAsyncNode(t, cfg, memlog.New())
	a.flush()
	for range 100 {
		if a.n.Role() == core.RoleLeader {
			break
		}
		if err := a.n.Tick(); err != nil {
			t.Fatal(err)
		}
		a.flush()
	}
	if a.n.Role() != core.RoleLeader {
		t.Fatalf("setup: not leader")
	}
	a.flush()
	a.drain()
	return a
}

// TestAsyncSingleNode: a single voter's proposal is persisted and applied
// through the async contract: no commit before AckPersisted, then the
// entry comes out with CommitToWrite covering it.
func TestAsyncSingleNode(t *testing.T) {
	a := newAsyncSingle(t, nil)
	st := a.n.Status()
	if st.Applied != st.Commit {
		t.Fatalf("setup: applied %d, commit %d", st.Applied, st.Commit)
	}
	if err := a.n.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	a.take()
	if len(a.persistQ) != 1 {
		t.Fatalf("want one persist batch, got %d", len(a.persistQ))
	}
	rd := a.persistQ[0]
	last := st.LastIndex + 1
	if len(rd.Entries) != 1 || !rd.Sync || rd.Persist != (core.PersistAck{Index: last, Term: st.Term}) {
		t.Fatalf("Ready: entries %v sync %v persist %+v", rd.Entries, rd.Sync, rd.Persist)
	}
	// A second proposal while the first is being written goes out at once.
	if err := a.n.Propose([]byte("y")); err != nil {
		t.Fatal(err)
	}
	a.take()
	if len(a.persistQ) != 2 || a.persistQ[1].Persist.Index != last+1 {
		t.Fatalf("second batch not handed out while the first is in flight: %d batches", len(a.persistQ))
	}
	if got := a.n.Status().Commit; got != st.Commit {
		t.Fatalf("committed %d before any AckPersisted (was %d)", got, st.Commit)
	}
	a.persist(1)
	if got := a.n.Status().Commit; got != last {
		t.Fatalf("commit %d after the first ack, want %d", got, last)
	}
	a.take()
	if len(a.applyQ) != 1 || len(a.applyQ[0]) != 1 || string(a.applyQ[0][0].Data) != "x" {
		t.Fatalf("committed entries %v, want just x (y is not durable)", a.applyQ)
	}
	if got := a.readies[len(a.readies)-1].CommitToWrite; got != last {
		t.Fatalf("CommitToWrite %d, want %d", got, last)
	}
	a.flush()
	if got := a.data(); fmt.Sprint(got) != "[x y]" {
		t.Fatalf("applied %v", got)
	}
	if st := a.n.Status(); st.Applied != last+1 || st.Commit != last+1 {
		t.Fatalf("status %+v", st)
	}
}

// TestAsyncAckErrors: acknowledgements that do not match what was handed
// out are refused with ErrInvalidAck and change nothing.
func TestAsyncAckErrors(t *testing.T) {
	a := newAsyncSingle(t, nil)
	st := a.n.Status()
	if err := a.n.Propose([]byte("x"), []byte("y")); err != nil {
		t.Fatal(err)
	}
	a.take()
	good := a.persistQ[0].Persist
	bad := []core.PersistAck{
		{Index: good.Index + 5, Term: good.Term},
		{Index: good.Index, Term: good.Term + 1},
		{Index: good.Index - 1, Term: good.Term},
		{SnapshotIndex: 3},
	}
	for _, b := range bad {
		if err := a.n.AckPersisted(b); !errors.Is(err, core.ErrInvalidAck) {
			t.Fatalf("AckPersisted(%+v) = %v, want ErrInvalidAck", b, err)
		}
	}
	if err := a.n.AckPersisted(core.PersistAck{}); err != nil {
		t.Fatalf("zero ack: %v", err)
	}
	if err := a.n.AckApplied(st.Commit + 1); !errors.Is(err, core.ErrInvalidAck) {
		t.Fatalf("AckApplied past what was handed out = %v", err)
	}
	if err := a.n.AckApplied(st.Applied - 1); err != nil {
		t.Fatalf("stale AckApplied: %v", err)
	}
	if got := a.n.Status(); got.Commit != st.Commit || got.Applied != st.Applied || a.n.Err() != nil {
		t.Fatalf("state changed by refused acks: %+v", got)
	}
	a.persist(-1)
	if err := a.n.AckPersisted(good); !errors.Is(err, core.ErrInvalidAck) {
		t.Fatalf("repeated ack = %v", err)
	}
	a.flush()
	if got := a.data(); fmt.Sprint(got) != "[x y]" {
		t.Fatalf("applied %v", got)
	}
	// Sync mode has no acknowledgements.
	c := newCluster(t, 1, nil)
	if err := c.nodes[1].AckPersisted(core.PersistAck{Index: 1, Term: 1}); !errors.Is(err, core.ErrInvalidAck) {
		t.Fatalf("sync AckPersisted = %v", err)
	}
	if err := c.nodes[1].AckApplied(1); !errors.Is(err, core.ErrInvalidAck) {
		t.Fatalf("sync AckApplied = %v", err)
	}
}
