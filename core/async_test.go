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
