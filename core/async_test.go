package core_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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
	// persistQ are the Readies whose persist batch is not yet written;
	// written are the acks of batches written and not yet acknowledged.
	persistQ []core.Ready
	written  []core.PersistAck
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
		if want := rd.MustSync(a.lastHS()); rd.Sync != want {
			a.t.Fatalf("node %d: Ready.Sync %v, MustSync against the last hard state handed out says %v", a.id, rd.Sync, want)
		}
		if !rd.Persist.IsZero() && !rd.Sync {
			a.t.Fatalf("node %d: Persist %+v without Sync", a.id, rd.Persist)
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
			// The state machine never runs ahead of the local log.
			for _, e := range rd.CommittedEntries {
				if lt, err := a.log.Term(e.Index); err != nil || lt != e.Term {
					a.t.Fatalf("node %d: committed entry %d/%d handed out, storage has term %d (%v)", a.id, e.Index, e.Term, lt, err)
				}
			}
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

// persist writes the oldest k queued batches (all if k < 0), in order,
// and acknowledges every batch written so far.
func (a *asyncNode) persist(k int) {
	a.t.Helper()
	a.write(k)
	a.ackWritten(-1)
}

// write writes the oldest k queued batches (all if k < 0), in order, and
// sends their MessagesAfterPersist, but leaves their acknowledgements
// queued: the writer runs ahead of the loop.
func (a *asyncNode) write(k int) {
	a.t.Helper()
	if k < 0 || k > len(a.persistQ) {
		k = len(a.persistQ)
	}
	for range k {
		rd := a.persistQ[0]
		a.persistQ = a.persistQ[1:]
		if rd.Snapshot != nil {
			// Restoring replaces the state machine: first apply what
			// was handed out before (the contract's step 2).
			a.apply(-1)
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
		a.written = append(a.written, rd.Persist)
	}
}

// ackWritten acknowledges the oldest k written batches (all if k < 0).
func (a *asyncNode) ackWritten(k int) {
	a.t.Helper()
	if k < 0 || k > len(a.written) {
		k = len(a.written)
	}
	for range k {
		p := a.written[0]
		a.written = a.written[1:]
		if err := a.n.AckPersisted(p); err != nil {
			a.t.Fatalf("node %d AckPersisted(%+v): %v", a.id, p, err)
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
		if len(a.persistQ) == 0 && len(a.applyQ) == 0 && len(a.written) == 0 {
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

// newAsyncFollower returns node 1 of {1,2,3} in async mode, whose storage
// holds hs and ents; peers are simulated by the test.
func newAsyncFollower(t *testing.T, hs core.HardState, ents []core.Entry, tweak func(*core.Config)) *asyncNode {
	t.Helper()
	log := memlog.New()
	if err := log.Save(hs, ents); err != nil {
		t.Fatal(err)
	}
	cfg := asyncConfig(1, 1, 2, 3)
	cfg.CheckQuorum = false
	if tweak != nil {
		tweak(&cfg)
	}
	a := newAsyncNode(t, cfg, log)
	// Hand out (and apply) what storage already holds committed, so
	// tests see only what their own steps cause.
	a.flush()
	a.readies, a.out, a.afterPersist = nil, nil, nil
	return a
}

func (a *asyncNode) step(m core.Message) {
	a.t.Helper()
	if m.To == 0 {
		m.To = a.id
	}
	if err := a.n.Step(m); err != nil {
		a.t.Fatalf("node %d Step(%v): %v", a.id, m, err)
	}
}

// handedOut returns the committed entries handed out so far, applied or
// queued, as index/term strings.
func (a *asyncNode) handedOut() string {
	var out []string
	for _, rd := range a.readies {
		for _, e := range rd.CommittedEntries {
			out = append(out, fmt.Sprintf("%d/%d", e.Index, e.Term))
		}
	}
	return fmt.Sprint(out)
}

// writeOnly writes the oldest queued batch to storage without
// acknowledging it (the writer runs ahead of the loop); the returned ack
// is for the test to pass to AckPersisted later.
func (a *asyncNode) writeOnly() core.PersistAck {
	a.t.Helper()
	rd := a.persistQ[0]
	a.persistQ = a.persistQ[1:]
	if rd.Snapshot != nil {
		if err := a.log.InstallSnapshot(*rd.Snapshot); err != nil {
			a.t.Fatal(err)
		}
	}
	if err := a.log.Save(rd.HardState, rd.Entries); err != nil {
		a.t.Fatal(err)
	}
	return rd.Persist
}

func (a *asyncNode) ack(p core.PersistAck) {
	a.t.Helper()
	if err := a.n.AckPersisted(p); err != nil {
		a.t.Fatalf("node %d AckPersisted(%+v): %v", a.id, p, err)
	}
}

func ents(first uint64, terms ...uint64) []core.Entry {
	out := make([]core.Entry, len(terms))
	for i, t := range terms {
		out[i] = core.Entry{Index: first + uint64(i), Term: t, Data: []byte{byte(first + uint64(i)), byte(t)}}
	}
	return out
}

// TestAsyncFollowerCommitAheadOfPersistence: a follower that learns a
// commit index covering entries it has not yet made durable hands them
// out for applying only once AckPersisted covers them, and HasReady does
// not report the blocked entries meanwhile.
func TestAsyncFollowerCommitAheadOfPersistence(t *testing.T) {
	a := newAsyncFollower(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), nil)
	a.step(core.Message{Type: core.MsgApp, From: 2, Term: 2, Index: 1, LogTerm: 1, Entries: ents(2, 2, 2, 2), Commit: 4})
	a.take()
	if len(a.persistQ) != 1 || len(a.persistQ[0].Entries) != 3 || a.handedOut() != "[]" {
		t.Fatalf("want entries 2..4 to persist and nothing to apply; persist %d, handed out %s", len(a.persistQ), a.handedOut())
	}
	if len(a.out) != 0 || len(a.persistQ[0].MessagesAfterPersist) != 1 {
		t.Fatalf("append response must wait for the persist batch: out %v", a.out)
	}
	if st := a.n.Status(); st.Commit != 4 {
		t.Fatalf("commit %d, want 4 (known, not yet applicable)", st.Commit)
	}
	if a.n.HasReady() {
		t.Fatal("HasReady with only committed entries blocked behind persistence")
	}
	a.persist(1)
	if !a.n.HasReady() {
		t.Fatal("no Ready after the ack released committed entries")
	}
	a.take()
	if got := a.handedOut(); got != "[2/2 3/2 4/2]" {
		t.Fatalf("handed out %s", got)
	}
	if got := a.readies[len(a.readies)-1].CommitToWrite; got != 4 {
		t.Fatalf("CommitToWrite %d, want 4", got)
	}
	a.apply(-1)
	if st := a.n.Status(); st.Applied != 4 {
		t.Fatalf("Status.Applied %d after AckApplied(4)", st.Applied)
	}
}

// TestAsyncMaxApplyingBytes: committed entries handed out and not yet
// acknowledged applied stay within MaxApplyingBytes (at least one batch),
// a partial AckApplied releases nothing of a batch it does not finish,
// and blocked entries do not make HasReady true.
func TestAsyncMaxApplyingBytes(t *testing.T) {
	const size = 8 + 24 // 8 data bytes plus the per-entry overhead
	for _, tc := range []struct {
		name      string
		limit     uint64
		wantBatch []int // entries per Ready while nothing is applied
	}{
		{"one entry fits", size, []int{1}},
		{"exactly three fit", 3 * size, []int{3}},
		{"three and a bit", 3*size + 1, []int{3, 1}},
		{"limit below one entry still hands out one", size / 2, []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAsyncSingle(t, func(cfg *core.Config) { cfg.MaxApplyingBytes = tc.limit })
			base := a.n.Status().Applied
			for i := range 10 {
				if err := a.n.Propose([]byte(fmt.Sprintf("cmd%05d", i))); err != nil {
					t.Fatal(err)
				}
			}
			for range 5 {
				a.take()
				a.persist(-1)
			}
			var got []int
			for _, b := range a.applyQ {
				got = append(got, len(b))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantBatch) {
				t.Fatalf("batches handed out %v, want %v", got, tc.wantBatch)
			}
			if a.n.HasReady() {
				t.Fatal("HasReady while committed entries are blocked by MaxApplyingBytes")
			}
			first := a.applyQ[0]
			if len(first) > 1 {
				// Part of a batch: nothing is released.
				if err := a.n.AckApplied(first[0].Index); err != nil {
					t.Fatal(err)
				}
				if a.n.HasReady() {
					t.Fatal("a partial AckApplied released a batch")
				}
			}
			a.apply(-1)
			if !a.n.HasReady() {
				t.Fatal("no Ready after everything handed out was applied")
			}
			a.flush()
			if st := a.n.Status(); st.Applied != base+10 || len(a.data()) != 10 {
				t.Fatalf("applied %d (base %d), data %v", st.Applied, base, a.data())
			}
		})
	}
}

// TestAsyncSupersededBatches: with several persist batches in flight, a
// batch whose entries a later batch rewrites (a newer leader's conflicting
// suffix) must not mark anything stable: the writer may already have
// written the later batch, so only its own acknowledgement tells. The
// follower starts with 1/1 in term 2; every step is a MsgApp after 1/1
// from a leader of the given term, followed by handing out a Ready. Its
// commit index lets the test see how far the core believes its log
// durable: committed entries are handed out only up to there.
func TestAsyncSupersededBatches(t *testing.T) {
	type app struct {
		term    uint64
		prev    uint64 // index of the entry before ents (its term from the log)
		prevT   uint64
		ents    []core.Entry
		commit  uint64
		handOut bool // take a Ready after it
	}
	cases := []struct {
		name string
		apps []app
		// writes is how many queued batches are written before any
		// acknowledgement; then the acks come one by one, and after
		// each (and once before any) the test records what was handed
		// out for applying.
		writes    int
		wantAfter []string
		wantLog   string // terms of entries 1.. in storage at the end
	}{
		{
			name: "two batches in flight then truncation",
			apps: []app{
				{term: 2, prev: 1, prevT: 1, ents: ents(2, 2, 2), commit: 1, handOut: true}, // A: 2..3/2
				{term: 2, prev: 3, prevT: 2, ents: ents(4, 2, 2), commit: 3, handOut: true}, // B: 4..5/2
				{term: 3, prev: 3, prevT: 2, ents: ents(4, 3), commit: 4, handOut: true},    // C: 4/3
			},
			writes:    3,
			wantAfter: []string{"[]", "[2/2 3/2]", "[2/2 3/2]", "[2/2 3/2 4/3]"},
			wantLog:   "[1 2 2 3]",
		},
		{
			name: "suffix replaced and restored (A, B, A again)",
			apps: []app{
				{term: 2, prev: 1, prevT: 1, ents: ents(2, 2, 2, 2), commit: 1, handOut: true}, // A: 2..4/2
				{term: 3, prev: 1, prevT: 1, ents: ents(2, 3), commit: 1, handOut: true},       // B: 2/3
				{term: 4, prev: 1, prevT: 1, ents: ents(2, 2, 2, 2), commit: 4, handOut: true}, // C: 2..4/2 again
			},
			// A and B written, C not yet: storage holds 2/3, so A's
			// ack must not make 2..4/2 count as durable.
			writes:    2,
			wantAfter: []string{"[]", "[]", "[]", "[2/2 3/2 4/2]"},
			wantLog:   "[1 2 2 2]",
		},
		{
			name: "truncation not yet handed out",
			apps: []app{
				{term: 2, prev: 1, prevT: 1, ents: ents(2, 2, 2, 2), commit: 1, handOut: true}, // A: 2..4/2
				{term: 3, prev: 2, prevT: 2, ents: ents(3, 3), commit: 3, handOut: false},      // 3/3 replaces 3..4
			},
			writes:    1,
			wantAfter: []string{"[]", "[]", "[2/2 3/3]"},
			wantLog:   "[1 2 3]",
		},
		{
			name: "superseded ack in order, later batch shorter",
			apps: []app{
				{term: 2, prev: 1, prevT: 1, ents: ents(2, 2, 2, 2), commit: 1, handOut: true}, // A: 2..4/2
				{term: 3, prev: 1, prevT: 1, ents: ents(2, 3), commit: 2, handOut: true},       // B: 2/3
			},
			writes:    0,
			wantAfter: []string{"[]", "[]", "[2/3]"},
			wantLog:   "[1 3]",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAsyncFollower(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), nil)
			for _, m := range tc.apps {
				a.step(core.Message{Type: core.MsgApp, From: 2, Term: m.term, Index: m.prev, LogTerm: m.prevT, Entries: m.ents, Commit: m.commit})
				if m.handOut {
					a.take()
				}
			}
			var acks []core.PersistAck
			for range tc.writes {
				acks = append(acks, a.writeOnly())
			}
			var got []string
			record := func() {
				a.take()
				got = append(got, a.handedOut())
			}
			record()
			for len(acks) > 0 || len(a.persistQ) > 0 {
				if len(acks) == 0 {
					acks = append(acks, a.writeOnly())
				}
				p := acks[0]
				acks = acks[1:]
				a.ack(p)
				if !p.IsZero() {
					record()
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantAfter) {
				t.Fatalf("handed out for applying after each ack:\n got %v\nwant %v", got, tc.wantAfter)
			}
			var terms []uint64
			for _, e := range a.log.AllEntries() {
				terms = append(terms, e.Term)
			}
			if fmt.Sprint(terms) != tc.wantLog {
				t.Fatalf("storage terms %v, want %s", terms, tc.wantLog)
			}
			// Every entry handed out for applying is what storage holds.
			for _, rd := range a.readies {
				for _, e := range rd.CommittedEntries {
					if st, err := a.log.Term(e.Index); err != nil || st != e.Term {
						t.Fatalf("applied %d/%d, storage has term %d (%v)", e.Index, e.Term, st, err)
					}
				}
			}
			if a.n.HasReady() {
				t.Fatal("HasReady after everything was acknowledged")
			}
		})
	}
}

// TestAsyncSnapshot: snapshot batches among entry batches in flight. A
// snapshot's ack makes it the applied state; entries after it are handed
// out for applying only once their own batch is acknowledged; a batch a
// later snapshot replaced is acknowledged without effect.
func TestAsyncSnapshot(t *testing.T) {
	snap := func(i, term uint64) core.Message {
		return core.Message{Type: core.MsgSnap, From: 2, Term: 2, Snapshot: &core.SnapshotMeta{
			Index: i, Term: term, Membership: core.Membership{Voters: []uint64{1, 2, 3}}}}
	}
	app := func(prev uint64, commit uint64, e ...core.Entry) core.Message {
		return core.Message{Type: core.MsgApp, From: 2, Term: 2, Index: prev, LogTerm: 2, Entries: e, Commit: commit}
	}
	type check struct {
		applied   uint64
		handedOut string
	}
	cases := []struct {
		name  string
		steps []core.Message // each followed by a Ready
		// after each acknowledgement of a non-zero Persist, in order
		want []check
	}{
		{
			name:  "snapshot then entries in flight",
			steps: []core.Message{snap(10, 2), app(10, 12, ents(11, 2, 2)...)},
			want:  []check{{10, "[]"}, {12, "[11/2 12/2]"}},
		},
		{
			name: "entries in flight then snapshot",
			steps: []core.Message{
				{Type: core.MsgApp, From: 2, Term: 2, Index: 1, LogTerm: 1, Entries: ents(2, 2, 2), Commit: 1},
				snap(10, 2), app(10, 11, ents(11, 2)...),
			},
			want: []check{{1, "[]"}, {10, "[]"}, {11, "[11/2]"}},
		},
		{
			name:  "two snapshots in flight",
			steps: []core.Message{snap(10, 2), snap(20, 2), app(20, 21, ents(21, 2)...)},
			want:  []check{{1, "[]"}, {20, "[]"}, {21, "[21/2]"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAsyncFollower(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), nil)
			for _, m := range tc.steps {
				a.step(m)
				a.take()
			}
			if a.handedOut() != "[]" {
				t.Fatalf("handed out %s before any ack", a.handedOut())
			}
			// The snapshot is not the applier's to acknowledge.
			if err := a.n.AckApplied(a.n.Status().Commit); !errors.Is(err, core.ErrInvalidAck) {
				t.Fatalf("AckApplied(%d) of a snapshot not installed = %v", a.n.Status().Commit, err)
			}
			var got []check
			for len(a.persistQ) > 0 {
				p := a.writeOnly()
				a.ack(p)
				a.take()
				a.apply(-1)
				if !p.IsZero() {
					got = append(got, check{a.n.Status().Applied, a.handedOut()})
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("after each ack (applied, handed out):\n got %v\nwant %v", got, tc.want)
			}
			if a.n.HasReady() {
				t.Fatal("HasReady after everything was acknowledged")
			}
		})
	}
}

// asyncCluster is the cluster harness for async nodes: messages queue in
// the network until delivered; persistence and application happen when
// the test (or the random scheduler) says.
type asyncCluster struct {
	t     testing.TB
	nodes map[uint64]*asyncNode
	ids   []uint64
	net   []core.Message
	// leaderOf checks Election Safety as in the sync harness.
	leaderOf map[uint64]uint64
}

func newAsyncCluster(t testing.TB, size int, tweak func(*core.Config)) *asyncCluster {
	t.Helper()
	c := &asyncCluster{t: t, nodes: map[uint64]*asyncNode{}, leaderOf: map[uint64]uint64{}}
	var voters []uint64
	for i := range size {
		voters = append(voters, uint64(i+1))
	}
	c.ids = voters
	for _, id := range voters {
		cfg := asyncConfig(id, voters...)
		if tweak != nil {
			tweak(&cfg)
		}
		c.nodes[id] = newAsyncNode(t, cfg, memlog.New())
		c.nodes[id].flush()
	}
	return c
}

// collect takes every node's Readies and moves its output to the network.
func (c *asyncCluster) collect() {
	for _, id := range c.ids {
		a := c.nodes[id]
		a.take()
		c.checkLeader(a)
		c.net = append(c.net, a.drain()...)
	}
}

func (c *asyncCluster) checkLeader(a *asyncNode) {
	if a.n.Role() != core.RoleLeader {
		return
	}
	if prev, ok := c.leaderOf[a.n.Term()]; ok && prev != a.id {
		c.t.Fatalf("election safety: %d and %d both led term %d", prev, a.id, a.n.Term())
	}
	c.leaderOf[a.n.Term()] = a.id
}

func (c *asyncCluster) deliver(m core.Message) {
	c.t.Helper()
	a := c.nodes[m.To]
	if a == nil {
		return
	}
	if err := a.n.Step(m); err != nil && !errors.Is(err, core.ErrInvalidMessage) {
		c.t.Fatalf("node %d Step(%v): %v", m.To, m, err)
	}
}

// stabilize persists, applies and delivers everything until quiet.
func (c *asyncCluster) stabilize() {
	c.t.Helper()
	for range 10000 {
		c.collect()
		busy := len(c.net) > 0
		for _, id := range c.ids {
			a := c.nodes[id]
			if len(a.persistQ) > 0 || len(a.applyQ) > 0 || len(a.written) > 0 {
				busy = true
			}
			a.persist(-1)
			a.apply(-1)
		}
		if !busy {
			return
		}
		net := c.net
		c.net = nil
		for _, m := range net {
			c.deliver(m)
		}
	}
	c.t.Fatal("async cluster did not stabilize")
}

func (c *asyncCluster) elect(id uint64) {
	c.t.Helper()
	for range 200 {
		if err := c.nodes[id].n.Tick(); err != nil {
			c.t.Fatal(err)
		}
		c.stabilize()
		if c.nodes[id].n.Role() == core.RoleLeader {
			return
		}
	}
	c.t.Fatalf("node %d not elected", id)
}

// TestAsyncLeaderOwnAck: the leader counts its own entries toward
// commitment only when AckPersisted covers them, whether its followers'
// acknowledgements arrive before or after its own; it applies only what
// it holds durably; the new commit index goes out in the next Ready.
func TestAsyncLeaderOwnAck(t *testing.T) {
	type state struct {
		commit  bool // the leader committed x
		applied bool // the leader handed x out for applying
	}
	cases := []struct {
		events []string // "L": the leader's write acknowledged; "F2", "F3": that follower's response delivered
		want   []state
	}{
		{[]string{"L", "F2", "F3"}, []state{{false, false}, {true, true}, {true, true}}},
		{[]string{"F2", "L", "F3"}, []state{{false, false}, {true, true}, {true, true}}},
		{[]string{"F2", "F3", "L"}, []state{{false, false}, {true, false}, {true, true}}},
		{[]string{"F3", "L"}, []state{{false, false}, {true, true}}},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.events), func(t *testing.T) {
			c := newAsyncCluster(t, 3, func(cfg *core.Config) { cfg.CheckQuorum = false })
			c.elect(1)
			lead := c.nodes[1]
			if err := lead.n.Propose([]byte("x")); err != nil {
				t.Fatal(err)
			}
			lead.take()
			x := lead.n.Status().LastIndex
			if len(lead.persistQ) != 1 {
				t.Fatalf("leader persist queue %d", len(lead.persistQ))
			}
			// The appends leave before the leader's write (step 1).
			resp := map[string][]core.Message{}
			for _, m := range lead.drain() {
				c.deliver(m)
			}
			for _, id := range []uint64{2, 3} {
				f := c.nodes[id]
				f.flush()
				resp[fmt.Sprint("F", id)] = f.drain()
			}
			var got []state
			for _, ev := range tc.events {
				if ev == "L" {
					lead.persist(-1)
				} else {
					for _, m := range resp[ev] {
						c.deliver(m)
					}
				}
				lead.take()
				applied := false
				for _, b := range lead.applyQ {
					if b[len(b)-1].Index >= x {
						applied = true
					}
				}
				got = append(got, state{lead.n.Status().Commit >= x, applied})
				if applied && lead.commitFile < x {
					t.Fatalf("x handed out before its commit was asked to be written")
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("after each event (committed, applied):\n got %v\nwant %v", got, tc.want)
			}
			if lead.n.Status().Commit >= x {
				// The commit goes to the followers without waiting for
				// anything else.
				sawCommit := false
				for _, m := range lead.out {
					if m.Type == core.MsgApp && m.Commit >= x {
						sawCommit = true
					}
				}
				if !sawCommit {
					t.Fatalf("no append carrying commit %d after it committed: %v", x, lead.out)
				}
			}
			c.stabilize()
			for _, id := range c.ids {
				if got := c.nodes[id].data(); fmt.Sprint(got) != "[x]" {
					t.Fatalf("node %d applied %v", id, got)
				}
			}
		})
	}
}

// restart returns a new node for a's storage as a crash leaves it: the
// persisted batches, the commit index written through CommitToWrite if
// written (the driver's restart rule: commit = max(stored, written)), and
// a state machine durable up to applied.
func (a *asyncNode) restart(written bool, applied uint64, cfg core.Config) *asyncNode {
	a.t.Helper()
	log := a.log.Clone()
	hs, _, err := log.InitialState()
	if err != nil {
		a.t.Fatal(err)
	}
	if written && a.commitFile > hs.Commit {
		hs.Commit = a.commitFile
		if err := log.Save(hs, nil); err != nil {
			a.t.Fatal(err)
		}
	}
	cfg.Applied = applied
	r := newAsyncNode(a.t, cfg, log)
	r.applied = append(r.applied, a.applied...)
	r.applied = r.applied[:countUpTo(r.applied, applied)]
	return r
}

// countUpTo returns how many of ents have an index at or below i.
func countUpTo(ents []core.Entry, i uint64) int {
	k := 0
	for k < len(ents) && ents[k].Index <= i {
		k++
	}
	return k
}

// TestAsyncRestart: across a crash, the state machine never passes the
// commit index the node restarts with, whether the driver wrote
// CommitToWrite before the crash or not, and nothing is applied twice.
func TestAsyncRestart(t *testing.T) {
	cases := []struct {
		name    string
		written bool // CommitToWrite reached storage before the crash
		applied bool // the state machine applied x, y durably
		// wantAtOnce: the restarted node hands x, y out before any
		// election (its commit covers them), without asking to write a
		// commit again.
		wantAtOnce bool
	}{
		{"commit written, applied", true, true, false},
		{"commit written, not applied", true, false, true},
		{"commit not written, not applied", false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := newAsyncSingle(t, nil)
			base := a.n.Status().Applied
			if err := a.n.Propose([]byte("x"), []byte("y")); err != nil {
				t.Fatal(err)
			}
			a.take()
			a.persist(-1)
			a.take()
			y := base + 2
			if rd := a.readies[len(a.readies)-1]; rd.CommitToWrite != y || len(rd.CommittedEntries) != 2 {
				t.Fatalf("CommitToWrite %d with %d entries, want %d with 2", rd.CommitToWrite, len(rd.CommittedEntries), y)
			}
			applied := base
			if tc.applied {
				a.apply(-1)
				applied = y
			}
			cfg := asyncConfig(1, 1)
			r := a.restart(tc.written, applied, cfg)
			r.take()
			if got := len(r.applyQ) > 0; got != tc.wantAtOnce {
				t.Fatalf("handed out at once: %v, want %v (%v)", got, tc.wantAtOnce, r.applyQ)
			}
			for _, rd := range r.readies {
				if len(rd.CommittedEntries) > 0 && rd.CommitToWrite != 0 {
					t.Fatalf("restarted node asks to write commit %d it started with", rd.CommitToWrite)
				}
			}
			r.flush()
			for range 100 {
				if r.n.Role() == core.RoleLeader {
					break
				}
				if err := r.n.Tick(); err != nil {
					t.Fatal(err)
				}
				r.flush()
			}
			if got := r.data(); fmt.Sprint(got) != "[x y]" {
				t.Fatalf("applied across the restart: %v", got)
			}
			if st := r.n.Status(); st.Applied != st.Commit || st.Commit <= y {
				t.Fatalf("restarted leader: %+v", st)
			}
		})
	}
}

// TestAsyncRandom runs small async clusters under a random schedule of
// proposals, message delivery (reordered), Readies, batch writes (the
// writer running ahead of the acknowledgements), acknowledgements and
// applies. Phase 1 (no faults, node 1 leading) must commit the same
// commands at the same indexes, in the same order, as the synchronous
// harness given the same proposals. Phase 2 adds ticks, message loss and
// crash-restarts and checks election safety, state machine safety, that
// no node applies an entry it does not hold durably or above the commit
// index it asked to be written (asyncNode.take), and that the healed
// cluster commits again. A failure names its seed; rerun one with
// -run 'TestAsyncRandom/seed=N$'.
func TestAsyncRandom(t *testing.T) {
	seeds := 150
	if testing.Short() {
		seeds = 20
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runAsyncRandom(t, seed)
		})
	}
}

func runAsyncRandom(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 15))
	size := 1 + 2*rng.IntN(3)
	prevote := rng.IntN(2) == 0
	maxApplying := uint64(1 + rng.IntN(300))
	perReady := uint64(1 + rng.IntN(300))
	// Sometimes a single voter with learners: the learners hold whatever
	// the voter sent, so a voter leading a term twice (a crash erasing a
	// vote it had acted on) shows as two entries at one index and term.
	voters := size
	if size > 1 && rng.IntN(3) == 0 {
		voters = 1
	}
	tweak := func(cfg *core.Config) {
		cfg.PreVote, cfg.CheckQuorum = prevote, prevote
		cfg.RandomSeed = seed*7919 + cfg.ID
		cfg.MaxApplyingBytes = maxApplying
		cfg.MaxCommittedBytesPerReady = perReady
		if voters < size {
			ids := cfg.Membership.Voters
			cfg.Membership = core.Membership{Voters: ids[:voters:voters], Learners: ids[voters:]}
		}
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (size %d, voters %d, prevote %v, MaxApplyingBytes %d): %s", seed, size, voters, prevote, maxApplying, fmt.Sprintf(format, args...))
	}
	c := newAsyncCluster(t, size, tweak)
	c.elect(1)
	sc := newCluster(t, size, func(cfg *core.Config) { tweak(cfg); cfg.AsyncStorageWrites = false })
	sc.elect(1)

	// step runs one random driver action; faults enables ticks, loss
	// and crashes.
	var proposed int
	step := func(faults bool) {
		ids := c.ids
		a := c.nodes[ids[rng.IntN(len(ids))]]
		switch r := rng.IntN(100); {
		case r < 12:
			if !faults && a.id != 1 {
				return
			}
			if a.n.Propose([]byte(fmt.Sprintf("p%d", proposed))) == nil {
				if !faults {
					if err := sc.nodes[1].Propose([]byte(fmt.Sprintf("p%d", proposed))); err != nil {
						fail("sync propose: %v", err)
					}
				}
				proposed++
			}
		case r < 40:
			if len(c.net) == 0 {
				return
			}
			i := rng.IntN(len(c.net))
			m := c.net[i]
			c.net = append(c.net[:i], c.net[i+1:]...)
			if faults && rng.IntN(10) == 0 {
				return // lost
			}
			c.deliver(m)
		case r < 55:
			a.take()
			c.checkLeader(a)
			c.net = append(c.net, a.drain()...)
		case r < 68:
			a.write(rng.IntN(3))
			c.net = append(c.net, a.drain()...)
		case r < 80:
			a.ackWritten(rng.IntN(3))
		case r < 92:
			a.apply(rng.IntN(3))
		case faults && r < 98:
			if err := a.n.Tick(); err != nil {
				fail("tick: %v", err)
			}
		case faults:
			// Crash: unwritten batches and unapplied entries are lost;
			// written ones (even unacknowledged) are durable.
			var applied uint64
			if k := len(a.applied); k > 0 {
				applied = a.applied[k-1].Index
			}
			hs, _, _ := a.log.InitialState()
			if a.commitFile > hs.Commit {
				hs.Commit = a.commitFile
				if err := a.log.Save(hs, nil); err != nil {
					fail("save: %v", err)
				}
			}
			cfg := asyncConfig(a.id, c.ids...)
			tweak(&cfg)
			cfg.Applied = applied
			r := newAsyncNode(t, cfg, a.log)
			r.applied = a.applied
			c.nodes[a.id] = r
		}
	}
	appliedAt := map[uint64]core.Entry{}
	checkSafety := func() {
		t.Helper()
		for _, id := range c.ids {
			for _, e := range c.nodes[id].applied {
				if e.Type != core.EntryNormal {
					continue
				}
				if prev, ok := appliedAt[e.Index]; ok && (prev.Term != e.Term || string(prev.Data) != string(e.Data)) {
					fail("node %d applied %d/%d %q, another node %d/%d %q", id, e.Index, e.Term, e.Data, prev.Index, prev.Term, prev.Data)
				}
				appliedAt[e.Index] = e
			}
		}
	}

	// Phase 1: no faults; equivalence with the synchronous harness.
	for range 400 {
		step(false)
	}
	// Reordered appends may leave followers probing; the leader's
	// heartbeats (only its clock runs: nobody campaigns) resume them.
	for range 5 {
		if err := c.nodes[1].n.Tick(); err != nil {
			fail("tick: %v", err)
		}
		c.stabilize()
	}
	sc.stabilize()
	checkSafety()
	want := sc.appliedCommands(1)
	for _, id := range c.ids {
		if got := commands(c.nodes[id].applied); fmt.Sprint(got) != fmt.Sprint(want) {
			fail("phase 1: node %d applied\n %v\nthe synchronous cluster\n %v", id, got, want)
		}
	}
	if len(want) != proposed {
		fail("phase 1: %d of %d proposals committed", len(want), proposed)
	}

	// Phase 2: ticks, loss, crashes.
	for range 1500 {
		step(true)
		checkSafety()
	}
	// Heal: deliver everything, tick until a leader commits a last command
	// on every node.
	for round := range 300 {
		c.stabilize()
		checkSafety()
		lead := uint64(0)
		for _, id := range c.ids {
			if c.nodes[id].n.Role() == core.RoleLeader {
				lead = id
			}
		}
		if lead != 0 {
			last := fmt.Sprintf("last%d", round)
			if err := c.nodes[lead].n.Propose([]byte(last)); err == nil {
				c.stabilize()
				checkSafety()
				done := true
				for _, id := range c.ids {
					got := commands(c.nodes[id].applied)
					if len(got) == 0 || !strings.HasSuffix(got[len(got)-1], ":"+last) {
						done = false
					}
				}
				if done {
					return
				}
			}
		}
		for _, id := range c.ids {
			if err := c.nodes[id].n.Tick(); err != nil {
				fail("tick: %v", err)
			}
		}
	}
	fail("healed cluster did not commit")
}

// commands lists the non-empty normal entries as "index:data".
func commands(ents []core.Entry) []string {
	var out []string
	for _, e := range ents {
		if e.Type == core.EntryNormal && len(e.Data) > 0 && string(e.Data) != "snapshot" {
			out = append(out, fmt.Sprintf("%d:%s", e.Index, e.Data))
		}
	}
	return out
}

func (c *cluster) appliedCommands(id uint64) []string { return commands(c.applied[id]) }

// FuzzAsync interleaves arbitrary messages with driver actions (taking
// Readies, writing batches ahead of their acknowledgements, acks,
// applies, proposals) on an async follower and leader: nothing may panic
// or fail storage, acknowledgements handed back as the contract says are
// always accepted, and asyncNode.take checks that nothing is applied that
// storage does not hold or above the commit asked to be written.
func FuzzAsync(f *testing.F) {
	f.Add([]byte{1, 2, 2, 1, 1, 1, 0, 2, 1, 1, 4, 5, 6, 7})
	f.Add([]byte{1, 2, 3, 1, 1, 3, 0, 3, 2, 3, 3, 4, 1, 2, 2, 1, 1, 2, 0, 2, 1, 3, 4, 5, 5, 6, 7, 7})
	f.Add([]byte{4, 8, 5, 13, 2, 3, 4, 0, 9, 1, 1, 6, 14, 15, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lead := range []bool{false, true} {
			a := newAsyncFollower(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1, 2), nil)
			if lead {
				electAsyncSolo(t, a)
			}
			rest := data
			for len(rest) > 0 {
				op := rest[0]
				rest = rest[1:]
				switch op % 16 {
				case 0, 1, 2, 3:
					if len(rest) < 7 {
						return
					}
					var m core.Message
					m, rest = decodeFuzzMessage(rest)
					_ = a.n.Step(m)
				case 4, 5:
					a.take()
				case 6, 7:
					a.write(int(op / 16))
				case 8, 9:
					a.ackWritten(int(op / 16))
				case 10, 11:
					a.apply(int(op / 16))
				case 12:
					_ = a.n.Propose([]byte{op})
				case 13:
					_ = a.n.Tick()
				default:
					a.drain()
				}
				st := a.n.Status()
				if st.Commit > st.LastIndex || st.Applied > st.Commit {
					t.Fatalf("invariant broken: commit %d applied %d last %d", st.Commit, st.Applied, st.LastIndex)
				}
				if err := a.n.Err(); err != nil {
					t.Fatalf("storage failure: %v", err)
				}
			}
			a.flush()
		}
	})
}

// electAsyncSolo makes async node 1 of {1,2,3} leader by granting it
// pre-votes and votes from node 2 once its vote is durable.
func electAsyncSolo(t *testing.T, a *asyncNode) {
	t.Helper()
	for range 100 {
		if a.n.Role() != core.RoleFollower {
			break
		}
		if err := a.n.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if a.n.Role() == core.RolePreCandidate {
		a.step(core.Message{Type: core.MsgPreVoteResp, From: 2, Term: a.n.Term() + 1})
	}
	a.flush()
	a.step(core.Message{Type: core.MsgVoteResp, From: 2, Term: a.n.Term()})
	a.flush()
	if a.n.Role() != core.RoleLeader {
		t.Fatalf("setup: not leader: %v", a.n.Role())
	}
	a.readies, a.out, a.afterPersist = nil, nil, nil
}

// TestAsyncVoteBehindEntryBatch: a vote granted while an entry batch is
// still being written travels in a later batch: its hard state (new term,
// vote) and the response in that batch's MessagesAfterPersist, which the
// writer sends only once that batch, and so every earlier one, is
// durable. The batch needs an fsync but no acknowledgement.
func TestAsyncVoteBehindEntryBatch(t *testing.T) {
	a := newAsyncFollower(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), nil)
	a.step(core.Message{Type: core.MsgApp, From: 2, Term: 2, Index: 1, LogTerm: 1, Entries: ents(2, 2, 2), Commit: 1})
	a.take()
	// Candidate 3's log is as up to date as ours including the entries
	// not yet durable: they will be by the time the vote leaves.
	a.step(core.Message{Type: core.MsgVote, From: 3, Term: 3, Index: 3, LogTerm: 2})
	a.take()
	if len(a.persistQ) != 2 {
		t.Fatalf("want two batches in flight, got %d", len(a.persistQ))
	}
	first, second := a.persistQ[0], a.persistQ[1]
	if len(first.MessagesAfterPersist) != 1 || first.MessagesAfterPersist[0].Type != core.MsgAppResp {
		t.Fatalf("first batch messages %v", first.MessagesAfterPersist)
	}
	if hs := second.HardState; hs.Term != 3 || hs.Vote != 3 || !second.Sync || !second.Persist.IsZero() {
		t.Fatalf("second batch: hard state %+v sync %v persist %+v", hs, second.Sync, second.Persist)
	}
	if m := second.MessagesAfterPersist; len(m) != 1 || m[0].Type != core.MsgVoteResp || m[0].Reject {
		t.Fatalf("vote response %v, want a granted MsgVoteResp after the second batch", m)
	}
	for _, m := range a.out {
		if m.Type == core.MsgVoteResp || m.Type == core.MsgAppResp {
			t.Fatalf("%v left before its batch was written", m)
		}
	}
	a.flush()
	if hs, _, _ := a.log.InitialState(); hs.Term != 3 || hs.Vote != 3 {
		t.Fatalf("stored hard state %+v", hs)
	}
	if last, _ := a.log.LastIndex(); last != 3 {
		t.Fatalf("stored last index %d", last)
	}
}

// TestReadySync: Ready.Sync is MustSync against the hard state handed out
// before, in both modes; CommitToWrite and Persist stay zero in sync mode.
func TestReadySync(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprint("async=", async), func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), func(cfg *core.Config) {
				cfg.AsyncStorageWrites = async
			})
			s.flush()
			steps := []struct {
				m    core.Message
				sync bool
			}{
				{core.Message{Type: core.MsgApp, From: 2, Term: 2, Index: 1, LogTerm: 1, Entries: ents(2, 2)}, true},
				{core.Message{Type: core.MsgHeartbeat, From: 2, Term: 2, Commit: 2}, false},
				{core.Message{Type: core.MsgHeartbeat, From: 2, Term: 3}, true},
			}
			for i, st := range steps {
				if err := s.step(st.m); err != nil {
					t.Fatal(err)
				}
				rd, err := s.n.Ready()
				if err != nil {
					t.Fatal(err)
				}
				if rd.Sync != st.sync {
					t.Fatalf("step %d: Sync %v, want %v (Ready %+v)", i, rd.Sync, st.sync, rd)
				}
				if !async && (rd.CommitToWrite != 0 || !rd.Persist.IsZero()) {
					t.Fatalf("sync mode: CommitToWrite %d, Persist %+v", rd.CommitToWrite, rd.Persist)
				}
				if err := s.log.Save(rd.HardState, rd.Entries); err != nil {
					t.Fatal(err)
				}
				if err := s.n.Advance(rd); err != nil {
					t.Fatal(err)
				}
				if async {
					if err := s.n.AckPersisted(rd.Persist); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestSelfVoteDurableBeforeLeading: a single voter (here with a learner)
// becomes leader only once the hard state carrying its vote for itself is
// durable (Advance, or AckPersisted of a Persist naming VoteTerm). Were it
// to lead at once, a crash before that write would let it win the same
// term again after restarting and write different entries at the same
// indexes, while the learner may already hold the first incarnation's.
func TestSelfVoteDurableBeforeLeading(t *testing.T) {
	for _, tc := range []struct {
		async, crash bool
	}{{false, false}, {false, true}, {true, false}, {true, true}} {
		t.Run(fmt.Sprintf("async=%v crash=%v", tc.async, tc.crash), func(t *testing.T) {
			cfg := testConfig(1)
			cfg.Membership = core.Membership{Voters: []uint64{1}, Learners: []uint64{2}}
			cfg.AsyncStorageWrites = tc.async
			log := memlog.New()
			start := func() *core.Node {
				n, err := core.New(cfg, log)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			var sent []core.Message
			// persist writes rd and acknowledges it in the mode's way.
			persist := func(n *core.Node, rd core.Ready) {
				if err := log.Save(rd.HardState, rd.Entries); err != nil {
					t.Fatal(err)
				}
				sent = append(sent, rd.MessagesAfterPersist...)
				if err := n.Advance(rd); err != nil {
					t.Fatal(err)
				}
				if tc.async {
					if err := n.AckPersisted(rd.Persist); err != nil {
						t.Fatal(err)
					}
					for _, e := range rd.CommittedEntries {
						if err := n.AckApplied(e.Index); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			campaign := func(n *core.Node) core.Ready {
				for range 100 {
					if n.Role() != core.RoleFollower {
						break
					}
					for n.HasReady() { // e.g. the restarted node's committed entries
						rd, _ := n.Ready()
						persist(n, rd)
					}
					if err := n.Tick(); err != nil {
						t.Fatal(err)
					}
				}
				if n.Role() != core.RoleCandidate {
					t.Fatalf("role %v before the vote is durable, want candidate", n.Role())
				}
				rd, err := n.Ready()
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, rd.Messages...)
				if rd.HardState.Vote != 1 || !rd.Sync {
					t.Fatalf("campaign Ready: hard state %+v, sync %v", rd.HardState, rd.Sync)
				}
				if tc.async && rd.Persist.VoteTerm != rd.HardState.Term {
					t.Fatalf("Persist %+v does not wait for the vote of term %d", rd.Persist, rd.HardState.Term)
				}
				return rd
			}
			n := start()
			for n.HasReady() { // the bootstrap entry
				rd, _ := n.Ready()
				persist(n, rd)
			}
			rd := campaign(n)
			term := rd.HardState.Term
			if tc.crash {
				// The vote never reached the disk: the Ready is lost.
				for _, m := range sent {
					if m.Type == core.MsgApp {
						t.Fatalf("%v sent before the vote was durable", m)
					}
				}
				n = start()
				rd = campaign(n)
				if rd.HardState.Term != term {
					t.Fatalf("restarted campaign in term %d, want the same term %d", rd.HardState.Term, term)
				}
			}
			if n.Role() == core.RoleLeader {
				t.Fatal("leader before its vote is durable")
			}
			persist(n, rd)
			if n.Role() != core.RoleLeader || n.Term() != term {
				t.Fatalf("role %v term %d after the vote is durable, want leader of %d", n.Role(), n.Term(), term)
			}
			for n.HasReady() {
				rd, _ := n.Ready()
				sent = append(sent, rd.Messages...)
				persist(n, rd)
			}
			apps := 0
			for _, m := range sent {
				if m.Type == core.MsgApp && m.To == 2 {
					apps++
				}
			}
			if apps == 0 {
				t.Fatal("the leader never replicated to its learner")
			}
		})
	}
}

// TestAsyncCommitOnActivation: leaving a joint configuration can make an
// entry committed with acknowledgements already in: {1,2,3} needs only 1
// and 2 where {1..5} needed three. The leader re-counts when the Ready
// that activates the configuration is handed out (sync mode does it in
// Advance), or commit would stall until some unrelated acknowledgement.
func TestAsyncCommitOnActivation(t *testing.T) {
	c := newAsyncCluster(t, 5, func(cfg *core.Config) { cfg.CheckQuorum = false })
	c.elect(1)
	lead := c.nodes[1]
	cut := func(m core.Message) bool { return m.To == 4 || m.To == 5 || m.From == 4 || m.From == 5 }
	deliver := func(drop func(core.Message) bool) {
		net := c.net
		c.net = nil
		for _, m := range net {
			if !cut(m) && (drop == nil || !drop(m)) {
				c.deliver(m)
			}
		}
	}
	if _, err := lead.n.ProposeConfChange(core.ConfChange{Ops: []core.ConfChangeOp{
		{Type: core.ConfRemove, Member: core.MemberInfo{ID: 4}},
		{Type: core.ConfRemove, Member: core.MemberInfo{ID: 5}},
	}}); err != nil {
		t.Fatal(err)
	}
	// Run until the leader activates the joint configuration: that Ready
	// also carries its LeaveJoint entry, left unwritten for now.
	for i := 0; !lead.n.Status().Membership.IsJoint(); i++ {
		if i == 50 {
			t.Fatal("joint configuration never activated")
		}
		for _, id := range []uint64{1, 2, 3} {
			a := c.nodes[id]
			a.take()
			c.net = append(c.net, a.drain()...)
			if id == 1 && lead.n.Status().Membership.IsJoint() {
				break
			}
			a.persist(-1)
			a.apply(-1)
			c.net = append(c.net, a.drain()...)
		}
		if !lead.n.Status().Membership.IsJoint() {
			deliver(nil)
		}
	}
	leave := lead.n.Status().LastIndex
	if err := lead.n.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	lead.take()
	c.net = append(c.net, lead.drain()...)
	x := lead.n.Status().LastIndex
	// 2 gets both, 3 only the LeaveJoint entry; then the followers'
	// acknowledgements reach the leader before its own write.
	deliver(func(m core.Message) bool {
		return m.Type == core.MsgApp && m.To == 3 && len(m.Entries) > 0 && m.Entries[len(m.Entries)-1].Index >= x
	})
	for _, id := range []uint64{2, 3} {
		c.nodes[id].flush()
		c.net = append(c.net, c.nodes[id].drain()...)
	}
	deliver(nil)
	lead.take()
	if got := lead.n.Status().Commit; got >= leave {
		t.Fatalf("commit %d before the leader's own write (LeaveJoint at %d)", got, leave)
	}
	lead.persist(-1)
	if got := lead.n.Status().Commit; got != leave {
		t.Fatalf("commit %d after the leader's write, want the LeaveJoint at %d (x at %d lacks the old quorum)", got, leave, x)
	}
	lead.take() // hands out the LeaveJoint entry: {1,2,3} is active
	if m := lead.n.Status().Membership; m.IsJoint() {
		t.Fatalf("still joint: %+v", m)
	}
	if got := lead.n.Status().Commit; got != x {
		t.Fatalf("commit %d once {1,2,3} is active, want %d (acknowledged by 1 and 2)", got, x)
	}
}

// TestAckOfReplacedEntriesWithdrawn: an append acknowledgement not yet
// handed out is withdrawn when a newer leader's append replaces the
// entries it covers, so MessagesAfterPersist acknowledge only what the
// same Ready writes.
func TestAckOfReplacedEntriesWithdrawn(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprint("async=", async), func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 2, Commit: 1}, ents(1, 1), func(cfg *core.Config) {
				cfg.AsyncStorageWrites = async
			})
			s.flush()
			steps := []core.Message{
				{Type: core.MsgApp, From: 2, Term: 2, Index: 1, LogTerm: 1, Entries: ents(2, 2, 2), Commit: 1},
				{Type: core.MsgApp, From: 3, Term: 3, Index: 1, LogTerm: 1, Entries: ents(2, 3), Commit: 1},
			}
			for _, m := range steps {
				if err := s.step(m); err != nil {
					t.Fatal(err)
				}
			}
			rd, err := s.n.Ready()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range rd.MessagesAfterPersist {
				got = append(got, fmt.Sprintf("%v to %d term %d index %d", m.Type, m.To, m.Term, m.Index))
			}
			if want := "[MsgAppResp to 3 term 3 index 2]"; fmt.Sprint(got) != want {
				t.Fatalf("MessagesAfterPersist %v, want %s", got, want)
			}
			if len(rd.Entries) != 1 || rd.Entries[0].Term != 3 {
				t.Fatalf("entries %v", rd.Entries)
			}
		})
	}
}
