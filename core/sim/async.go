package sim

import (
	"fmt"
	"slices"
	"strings"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// The asynchronous driver (Options.Async; core.Config.AsyncStorageWrites,
// design15.md §2), modelled step by step so that every step is scheduled
// on its own and a crash can fall between any two of them:
//
//   - loop (loopReady): takes a Ready while the persist queue is under
//     Options.MaxPersistQueueBytes, sends Messages, queues the persist
//     batch {Snapshot, HardState, Entries, MessagesAfterPersist, Sync,
//     Persist}, writes the commit marker (CommitToWrite, unsynced: the
//     driver's CommitWriter.WriteCommit), hands CommittedEntries to the
//     applier, checks ReadStates and calls Advance.
//   - persister: writes the next batches in order, one or several merged
//     into one write (persistWrite; a snapshot is installed first, once
//     the applier is idle, with an fsync of everything written before it);
//     fsyncs (persistSync); completes the oldest batch once it is durable
//     (written, and fsynced if it needs it) by sending its
//     MessagesAfterPersist and posting its acknowledgement
//     (persistComplete); the loop delivers that acknowledgement later
//     (deliverAck: Node.AckPersisted).
//   - applier: applies a prefix of what was handed out (applySome), the
//     loop acknowledges later (ackApplied: Node.AckApplied); the state
//     machine syncs now and then (smSync) and at every local snapshot.
//
// Storage. sn.log is the WAL as the page cache holds it (what reads see,
// and what a process crash leaves), a.durable what has been fsynced, and
// a.unsynced the Ready batches written since the last fsync, in order.
// The state machine records its applied index in the same atomic write
// as its effects; sn.appliedIndex is what it has applied, a.smSynced what
// it has synced. The commit marker is a.marker as written and
// a.markerDisk as it would survive a power loss (the kernel writes it back
// at some point: modelled at fsyncs, at random).
//
// Crashes (crashAsync), with the loop's, persister's and applier's
// volatile state lost either way:
//
//   - process crash (kill -9): everything written survives. The restarted
//     storage fsyncs the WAL it replays (disk.Store's Open does: "after
//     kill -9 the replayed prefix may not be durable yet"); the marker and
//     the state machine's unsynced applies stay unsynced.
//   - power loss: the WAL keeps everything fsynced and an arbitrary prefix
//     of the unsynced batches (the disk recovery keeps the longest valid
//     prefix of the log); the marker keeps its latest value or the one on
//     disk, independently; the state machine keeps its synced applies and
//     any prefix of the unsynced ones.
//
// On restart the node gets commit = max(stored hard state commit, marker
// clamped to the last durable entry) (markerLog, like the driver's
// CommitWriter) and Config.Applied = the state machine's surviving
// applied index. Checks specific to this mode (besides every check of
// sync mode): see checkAsyncReady, persistComplete, checkAppliedCommit,
// checkSelfPersisted, checkAckedWrites and startAsync.

// persistBatchOverhead is what a batch weighs in the persist queue besides
// its entries, so that a queue of empty batches is bounded too.
const persistBatchOverhead = 64

// asyncNode is one node's asynchronous driver and storage model.
type asyncNode struct {
	durable *memlog.Log
	// queue holds the batches handed out and not yet completed, oldest
	// first; the written ones are a prefix.
	queue    []*persistBatch
	unsynced []saveOp
	acks     []pendingAck
	// marker is the commit marker as written (page cache), markerDisk the
	// value a power loss falls back to.
	marker, markerDisk uint64
	// applyQ: committed entries handed to the applier, not yet applied;
	// handed: what each Ready handed out, until AckApplied releases it.
	applyQ []core.Entry
	handed []handedBatch
	// appliedHanded is the last handed-out entry applied, ackedApplied
	// the last index acknowledged with AckApplied; smSynced the state
	// machine's durable applied index.
	appliedHanded, ackedApplied, smSynced uint64
	// startApplied is the state machine's applied index at the last start
	// (Config.Applied).
	startApplied uint64
	// acked: per term, the indexes acknowledged with AckPersisted since
	// the start (the stored last entry counts as acknowledged at start:
	// New takes the stored log as durable).
	acked map[uint64][]uint64
	// commitHanded is the highest commit index the node asked to write
	// (or started with); lastHS the hard state last handed out.
	commitHanded uint64
	lastHS       core.HardState
	// checkedCommit: the leader commit index checked for its quorum.
	checkedCommit uint64
	// powerLoss: the last crash was a power loss (else a process crash).
	powerLoss bool
	// readies numbers the Readies taken since start, for the trace.
	readies int
}

// persistBatch is one Ready's persist work.
type persistBatch struct {
	seq        int
	hs         core.HardState
	ents       []core.Entry
	snap       *core.SnapshotMeta
	msgs       []core.Message
	sync       bool
	ack        core.PersistAck
	written    bool
	synced     bool
	superseded bool // a later written batch truncated the log below its end
}

func (b *persistBatch) bytes() uint64 {
	n := uint64(persistBatchOverhead)
	for i := range b.ents {
		n += b.ents[i].Size()
	}
	return n
}

func (b *persistBatch) durable() bool { return b.written && (!b.sync || b.synced) }

// saveOp is one written batch's Save, kept until fsynced.
type saveOp struct {
	hs   core.HardState
	ents []core.Entry
}

type pendingAck struct {
	ack      core.PersistAck
	snapTerm uint64
}

type handedBatch struct{ last, bytes uint64 }

// markerLog is the storage a restarted node reads: InitialState reports
// the highest commit recorded by a hard state or the commit marker, never
// above the last entry (driver.CommitWriter's contract).
type markerLog struct {
	*memlog.Log
	marker uint64
}

// InitialState implements core.LogReader.
func (l markerLog) InitialState() (core.HardState, core.SnapshotMeta, error) {
	hs, snap, err := l.Log.InitialState()
	if err != nil {
		return hs, snap, err
	}
	last, err := l.Log.LastIndex()
	if err != nil {
		return hs, snap, err
	}
	hs.Commit = max(hs.Commit, min(l.marker, last))
	return hs, snap, nil
}

// newNode creates a node's (empty) storage.
func (s *Sim) newNode(id uint64, joiner bool) *simNode {
	sn := &simNode{id: id, log: memlog.New(), joiner: joiner}
	if s.opts.Async {
		sn.a = &asyncNode{durable: memlog.New()}
	}
	return sn
}

// startAsync (re)starts an async node from what its storage and state
// machine kept, and checks that the state machine did not pass the
// commit the node restarts with.
func (s *Sim) startAsync(sn *simNode) error {
	a := sn.a
	if !a.powerLoss && len(a.unsynced) > 0 {
		// The storage's Open fsyncs the WAL it replays after kill -9.
		s.syncWAL(sn)
	}
	hs, snap, err := sn.log.InitialState()
	if err != nil {
		return err
	}
	last, _ := sn.log.LastIndex()
	applied := sn.appliedIndex
	if applied < snap.Index {
		return fmt.Errorf("restart node %d: state machine at %d, below the log's snapshot %d", sn.id, applied, snap.Index)
	}
	if applied > last {
		return fmt.Errorf("durability: node %d restarts with its state machine at %d past its last durable entry %d (after a %s)",
			sn.id, applied, last, a.crashKind())
	}
	stored := max(hs.Commit, min(a.marker, last))
	if !a.powerLoss && applied > max(stored, a.startApplied) {
		// The invariant CommitToWrite exists for: a process crash keeps
		// every write, so what was applied since the last start was
		// written as committed first. (A power loss may leave the state
		// machine ahead of the marker; the node then started with
		// Config.Applied, which covers it.)
		return fmt.Errorf("apply ordering: node %d restarts after a process crash with its state machine at %d, past the written commit %d (hard state %d, marker %d) and the applied index %d it last started with",
			sn.id, applied, stored, hs.Commit, a.marker, a.startApplied)
	}
	// The membership at the applied index, as a driver recovers it with
	// its state machine.
	sn.mem, sn.memIndex = core.Membership{}, 0
	switch {
	case applied > 0:
		p := s.confPosAt(applied)
		if p < 0 {
			return fmt.Errorf("restart node %d: no configuration recorded at its applied index %d", sn.id, applied)
		}
		sn.mem, sn.memIndex = s.confHist[p].m.Clone(), s.confHist[p].index
	case !sn.joiner:
		sn.mem = s.confHist[0].m.Clone()
	}
	cfg := s.config(sn)
	cfg.Applied = applied
	n, err := core.New(cfg, markerLog{Log: sn.log, marker: a.marker})
	if err != nil {
		return fmt.Errorf("restart node %d: %w", sn.id, err)
	}
	sn.n, sn.up = n, true
	sn.pendingReads = map[uint64]pendingRead{}
	st := n.Status()
	lastTerm, _ := sn.log.Term(last)
	*a = asyncNode{
		durable: a.durable, unsynced: a.unsynced, marker: a.marker, markerDisk: a.markerDisk,
		smSynced: a.smSynced, appliedHanded: applied, ackedApplied: applied, startApplied: applied,
		acked:        map[uint64][]uint64{lastTerm: {last}},
		commitHanded: st.Commit,
		lastHS:       core.HardState{Term: st.Term, Vote: st.Vote, Commit: st.Commit},
		powerLoss:    a.powerLoss,
	}
	s.logf("node %d starts: commit %d (hard state %d, marker %d), applied %d, last %d", sn.id, st.Commit, hs.Commit, a.marker, applied, last)
	return s.checkActiveMembership(sn)
}

func (a *asyncNode) crashKind() string {
	if a.powerLoss {
		return "power loss"
	}
	return "process crash"
}

func (a *asyncNode) queueBytes() uint64 {
	var n uint64
	for _, b := range a.queue {
		n += b.bytes()
	}
	return n
}

func (a *asyncNode) handedBytes() uint64 {
	var n uint64
	for _, h := range a.handed {
		n += h.bytes
	}
	return n
}

// canReady: the loop takes a Ready only while the persist queue has room.
func (s *Sim) canReady(sn *simNode) bool {
	return sn.up && sn.n.HasReady() && sn.a.queueBytes() < s.opts.MaxPersistQueueBytes
}

// loopReady is the driver loop's handling of one Ready in async mode.
// mayCrash allows crashes between its steps.
func (s *Sim) loopReady(sn *simNode, mayCrash bool) error {
	if !s.canReady(sn) {
		return nil
	}
	a := sn.a
	outstanding := a.handedBytes()
	rd, err := sn.n.Ready()
	if err != nil {
		return s.wrap(sn, err)
	}
	a.readies++
	if err := s.checkAsyncReady(sn, &rd, outstanding); err != nil {
		return err
	}
	s.sendAll(rd.Messages)
	if err := s.checkAndRecordEntries(sn, rd.Entries); err != nil {
		return err
	}
	if err := s.recordCommit(sn, &rd); err != nil {
		return err
	}
	if !rd.HardState.IsZero() && rd.HardState.Term < sn.durableTerm {
		return fmt.Errorf("terms go back: node %d hands out term %d after persisting term %d", sn.id, rd.HardState.Term, sn.durableTerm)
	}
	b := &persistBatch{seq: a.readies, hs: rd.HardState, ents: rd.Entries, snap: rd.Snapshot,
		msgs: rd.MessagesAfterPersist, sync: rd.Sync, ack: rd.Persist}
	if !rd.Sync && !b.hs.IsZero() && s.chance(0.5) {
		// Writing a commit-only hard state is optional (Ready.Sync).
		b.hs = core.HardState{}
	}
	if !b.hs.IsZero() || len(b.ents) > 0 || b.snap != nil || len(b.msgs) > 0 || !b.ack.IsZero() {
		a.queue = append(a.queue, b)
	}
	var last uint64
	if len(rd.CommittedEntries) > 0 {
		last = rd.CommittedEntries[len(rd.CommittedEntries)-1].Index
	}
	s.logf("ready %d #%d: hs=%v sync=%v %d entries%s, %d msgs + %d after persist, persist %+v, commit to write %d, committed %d..%d",
		sn.id, b.seq, rd.HardState, rd.Sync, len(rd.Entries), snapNote(rd.Snapshot), len(rd.Messages), len(rd.MessagesAfterPersist),
		rd.Persist, rd.CommitToWrite, firstIndex(rd.CommittedEntries), last)
	if mayCrash && s.chance(s.opts.PipelineCrashRate) {
		s.logf("crash %d after queueing Ready #%d, before the commit marker", sn.id, b.seq)
		return s.crashNow(sn)
	}
	if rd.CommitToWrite != 0 {
		// disk.Store refuses a commit past the entries it holds.
		if last, _ := sn.log.LastIndex(); rd.CommitToWrite > last {
			return fmt.Errorf("apply ordering: node %d asks to write commit %d past its last stored entry %d", sn.id, rd.CommitToWrite, last)
		}
		a.marker = max(a.marker, rd.CommitToWrite)
		s.res.MarkerWrites++
	}
	if mayCrash && s.chance(s.opts.PipelineCrashRate) {
		s.logf("crash %d after the commit marker %d, before handing out Ready #%d's committed entries", sn.id, a.marker, b.seq)
		return s.crashNow(sn)
	}
	if len(rd.CommittedEntries) > 0 {
		a.applyQ = append(a.applyQ, rd.CommittedEntries...)
		var n uint64
		for i := range rd.CommittedEntries {
			n += rd.CommittedEntries[i].Size()
		}
		a.handed = append(a.handed, handedBatch{last: last, bytes: n})
	}
	if err := s.checkReads(sn, rd.ReadStates); err != nil {
		return err
	}
	if err := sn.n.Advance(rd); err != nil {
		return s.wrap(sn, err)
	}
	if err := s.checkActiveMembership(sn); err != nil {
		return err
	}
	return s.observe(sn) // checkAsyncLeader among the rest
}

func snapNote(m *core.SnapshotMeta) string {
	if m == nil {
		return ""
	}
	return fmt.Sprintf(" + snapshot %d/%d", m.Term, m.Index)
}

func firstIndex(ents []core.Entry) uint64 {
	if len(ents) == 0 {
		return 0
	}
	return ents[0].Index
}

// crashNow crashes sn at a pipeline crash point.
func (s *Sim) crashNow(sn *simNode) error {
	s.res.Crashes++
	return s.crashAsync(sn)
}

// firstUnwritten returns the position in the queue of the oldest batch not
// yet written, or -1.
func (a *asyncNode) firstUnwritten() int {
	for i, b := range a.queue {
		if !b.written {
			return i
		}
	}
	return -1
}

// canWrite: a batch waits to be written, and if it installs a snapshot,
// the applier is idle (every committed entry handed out before it has
// been applied: restoring replaces the state machine).
func (a *asyncNode) canWrite() bool {
	i := a.firstUnwritten()
	return i >= 0 && (a.queue[i].snap == nil || len(a.applyQ) == 0)
}

// persistWrite writes the next one or more batches in order, merged into
// one write.
func (s *Sim) persistWrite(sn *simNode) error {
	a := sn.a
	i := a.firstUnwritten()
	if i < 0 {
		return nil
	}
	k := 1 + s.rng.IntN(len(a.queue)-i)
	n := 0
	for _, b := range a.queue[i : i+k] {
		if b.snap != nil {
			if len(a.applyQ) > 0 {
				break
			}
			if err := s.installAsync(sn, b); err != nil {
				return err
			}
		}
		if len(b.ents) > 0 {
			if lastIdx, _ := sn.log.LastIndex(); b.ents[0].Index <= lastIdx {
				// Truncation: what earlier batches acknowledge may be
				// gone from the log by the time they complete.
				for _, o := range a.queue[:i+n] {
					o.superseded = true
				}
			}
		}
		if err := sn.log.Save(b.hs, b.ents); err != nil {
			return s.wrap(sn, err)
		}
		a.unsynced = append(a.unsynced, saveOp{hs: b.hs, ents: b.ents})
		b.written = true
		n++
	}
	if n == 0 {
		return nil
	}
	s.res.Writes++
	if n > 1 {
		s.res.MergedWrites++
	}
	s.logf("write %d: Readies #%d..#%d", sn.id, a.queue[i].seq, a.queue[i+n-1].seq)
	return nil
}

// installAsync installs a batch's snapshot: everything written before it
// is fsynced, then the state machine is restored (durably) and the log
// reset, as one durable step.
func (s *Sim) installAsync(sn *simNode, b *persistBatch) error {
	a := sn.a
	s.syncWAL(sn)
	meta := *b.snap
	if err := sn.log.InstallSnapshot(meta); err != nil {
		return s.wrap(sn, err)
	}
	if err := a.durable.InstallSnapshot(meta); err != nil {
		return s.wrap(sn, err)
	}
	sn.applied, sn.appliedIndex = s.snapshotState(meta.Index), meta.Index
	a.smSynced = meta.Index
	s.res.Snapshots++
	s.logf("install snapshot %d at %d/%d (Ready #%d)", sn.id, meta.Term, meta.Index, b.seq)
	if err := s.checkInstalledMembership(sn, meta); err != nil {
		return err
	}
	if sn.joiner {
		s.res.JoinerSnapshots++
	}
	return nil
}

// syncWAL makes every written batch durable.
func (s *Sim) syncWAL(sn *simNode) {
	a := sn.a
	for _, op := range a.unsynced {
		// The same Saves on the fsynced image: they succeeded on the page
		// cache's, which held the same log before them.
		_ = a.durable.Save(op.hs, op.ents)
	}
	a.unsynced = nil
	for _, b := range a.queue {
		if b.written {
			b.synced = true
		}
	}
	if hs, _, err := a.durable.InitialState(); err == nil {
		sn.durableTerm = max(sn.durableTerm, hs.Term)
	}
}

// persistSync is the persister's fsync; the kernel may also write the
// commit marker back meanwhile.
func (s *Sim) persistSync(sn *simNode) {
	a := sn.a
	s.logf("fsync %d: %d batches", sn.id, len(a.unsynced))
	s.syncWAL(sn)
	s.res.Fsyncs++
	if s.chance(0.5) {
		a.markerDisk = a.marker
	}
}

// persistComplete completes the oldest batch once it is durable: its
// MessagesAfterPersist leave and its acknowledgement is posted to the loop.
// Before they leave, the model checks that what they acknowledge is in
// the fsynced WAL.
func (s *Sim) persistComplete(sn *simNode) error {
	a := sn.a
	b := a.queue[0]
	if !b.durable() {
		return fmt.Errorf("sim: node %d completes Ready #%d before it is durable", sn.id, b.seq)
	}
	if err := s.checkDurableMessages(sn, b); err != nil {
		return err
	}
	a.queue = a.queue[1:]
	s.sendAll(b.msgs)
	if !b.ack.IsZero() {
		pa := pendingAck{ack: b.ack}
		if b.snap != nil {
			pa.snapTerm = b.snap.Term
		}
		a.acks = append(a.acks, pa)
	}
	s.logf("complete %d: Ready #%d durable, %d msgs sent, ack %+v posted", sn.id, b.seq, len(b.msgs), b.ack)
	return nil
}

// deliverAck delivers the oldest posted acknowledgement to the node.
func (s *Sim) deliverAck(sn *simNode) error {
	a := sn.a
	pa := a.acks[0]
	a.acks = a.acks[1:]
	s.logf("ack persisted %d: %+v", sn.id, pa.ack)
	if err := sn.n.AckPersisted(pa.ack); err != nil {
		return s.wrap(sn, err)
	}
	if pa.ack.Index > 0 {
		a.acked[pa.ack.Term] = append(a.acked[pa.ack.Term], pa.ack.Index)
	}
	if pa.ack.SnapshotIndex > 0 {
		a.acked[pa.snapTerm] = append(a.acked[pa.snapTerm], pa.ack.SnapshotIndex)
	}
	return s.observe(sn)
}

// applySome applies a prefix of what the applier was handed.
func (s *Sim) applySome(sn *simNode) error {
	a := sn.a
	k := 1 + s.rng.IntN(len(a.applyQ))
	ents := a.applyQ[:k]
	a.applyQ = a.applyQ[k:]
	for _, e := range ents {
		if err := s.checkAppliedCommit(sn, e.Index); err != nil {
			return err
		}
		if err := s.apply(sn, []core.Entry{e}); err != nil {
			return err
		}
		a.appliedHanded = e.Index
		if sn.n.Role() == core.RoleLeader && e.Type == core.EntryNormal && len(e.Data) > 0 {
			s.recordAckedWrite(sn, e)
		}
	}
	s.logf("apply %d: %d..%d", sn.id, ents[0].Index, ents[len(ents)-1].Index)
	return nil
}

// ackApplied delivers the applier's progress to the loop.
func (s *Sim) ackApplied(sn *simNode) error {
	a := sn.a
	i := a.appliedHanded
	s.logf("ack applied %d: %d", sn.id, i)
	if err := sn.n.AckApplied(i); err != nil {
		return s.wrap(sn, err)
	}
	a.ackedApplied = i
	for len(a.handed) > 0 && a.handed[0].last <= i {
		a.handed = a.handed[1:]
	}
	// (Above i when a snapshot installed since is acknowledged.)
	if got := sn.n.Status().Applied; got < i || got > sn.appliedIndex {
		return fmt.Errorf("node %d: Status.Applied %d after AckApplied(%d), state machine at %d", sn.id, got, i, sn.appliedIndex)
	}
	return nil
}

// smSync makes the state machine's applies durable.
func (s *Sim) smSync(sn *simNode) {
	sn.a.smSynced = sn.appliedIndex
	s.logf("state machine sync %d at %d", sn.id, sn.appliedIndex)
}

// crashAsync stops an async node with a process crash or a power loss
// (see the top of this file). Everything volatile is lost: queued and
// unwritten batches, posted acknowledgements, entries handed to the
// applier.
func (s *Sim) crashAsync(sn *simNode) error {
	a := sn.a
	a.queue, a.acks, a.applyQ, a.handed = nil, nil, nil, nil
	sn.up, sn.n = false, nil
	a.powerLoss = s.chance(s.opts.PowerLossRate)
	if !a.powerLoss {
		s.res.ProcessCrashes++
		s.logf("  process crash %d (kill -9: %d unsynced batches, marker %d, state machine at %d (synced %d) all survive)",
			sn.id, len(a.unsynced), a.marker, sn.appliedIndex, a.smSynced)
		return nil
	}
	s.res.PowerLosses++
	kept := s.rng.IntN(len(a.unsynced) + 1)
	lg := a.durable.Clone()
	for _, op := range a.unsynced[:kept] {
		if err := lg.Save(op.hs, op.ents); err != nil {
			return s.wrap(sn, err)
		}
	}
	s.res.KeptUnsynced += kept
	s.res.LostUnsynced += len(a.unsynced) - kept
	sn.log, a.durable, a.unsynced = lg, lg.Clone(), nil
	if hs, _, err := lg.InitialState(); err == nil {
		sn.durableTerm = max(sn.durableTerm, hs.Term)
	}
	written := a.marker
	if s.chance(0.5) {
		a.marker = a.markerDisk
	}
	a.markerDisk = a.marker
	applied := a.smSynced + s.rng.Uint64N(sn.appliedIndex-a.smSynced+1)
	s.res.LostApplies += int(sn.appliedIndex - applied)
	s.logf("  power loss %d: WAL keeps %d of %d unsynced batches, marker %d (written %d), state machine at %d of %d (synced %d)",
		sn.id, kept, kept+len(a.unsynced), a.marker, written, applied, sn.appliedIndex, a.smSynced)
	sn.applied = slices.DeleteFunc(sn.applied, func(e core.Entry) bool { return e.Index > applied })
	sn.appliedIndex, a.smSynced = applied, applied
	return nil
}

// asyncAction is one step of a node's pipeline.
type asyncAction struct {
	name string
	do   func() error
}

// asyncActions lists the steps sn can take now.
func (s *Sim) asyncActions(sn *simNode) []asyncAction {
	a := sn.a
	var acts []asyncAction
	if s.canReady(sn) {
		acts = append(acts, asyncAction{"ready", func() error { return s.loopReady(sn, true) }})
	}
	if a.canWrite() {
		acts = append(acts, asyncAction{"write", func() error { return s.persistWrite(sn) }})
	}
	if len(a.unsynced) > 0 && (len(acts) == 0 || s.chance(0.5)) {
		// Often late: unsynced batches pile up, merge and meet crashes.
		acts = append(acts, asyncAction{"fsync", func() error { s.persistSync(sn); return nil }})
	}
	if len(a.queue) > 0 && a.queue[0].durable() {
		acts = append(acts, asyncAction{"complete", func() error { return s.persistComplete(sn) }})
	}
	if len(a.acks) > 0 {
		acts = append(acts, asyncAction{"ack", func() error { return s.deliverAck(sn) }})
	}
	if len(a.applyQ) > 0 {
		acts = append(acts, asyncAction{"apply", func() error { return s.applySome(sn) }})
	}
	if a.appliedHanded > a.ackedApplied {
		acts = append(acts, asyncAction{"ack applied", func() error { return s.ackApplied(sn) }})
	}
	if sn.appliedIndex > a.smSynced && s.chance(0.2) {
		acts = append(acts, asyncAction{"sm sync", func() error { s.smSync(sn); return nil }})
	}
	return acts
}

// asyncStep runs one to three steps of sn's pipeline, chosen at random
// among those it can take, with a crash possible after each.
func (s *Sim) asyncStep(sn *simNode) error {
	for n := 1 + s.rng.IntN(3); n > 0 && sn.up; n-- {
		acts := s.asyncActions(sn)
		if len(acts) == 0 {
			return nil
		}
		act := acts[s.rng.IntN(len(acts))]
		if err := act.do(); err != nil {
			return err
		}
		rate := s.opts.PipelineCrashRate
		if act.name == "write" {
			// Crashes with written, unsynced batches are what power
			// losses are about: make them common.
			rate *= 5
		}
		if sn.up && act.name != "ready" && s.chance(rate) {
			s.logf("crash %d after %s", sn.id, act.name)
			if err := s.crashNow(sn); err != nil {
				return err
			}
		}
	}
	return nil
}

// flushAsync runs sn's pipeline to quiescence without faults (healing).
func (s *Sim) flushAsync(sn *simNode) (bool, error) {
	busy := false
	for range 10000 {
		if !sn.up {
			return busy, nil
		}
		a := sn.a
		progressed := false
		run := func(cond func() bool, f func() error) error {
			for i := 0; cond() && sn.up; i++ {
				if i == 10000 {
					return fmt.Errorf("node %d: async pipeline step does not quiesce\n%s", sn.id, s.describe())
				}
				progressed = true
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}
		steps := []struct {
			cond func() bool
			do   func() error
		}{
			{func() bool { return s.canReady(sn) }, func() error { return s.loopReady(sn, false) }},
			{a.canWrite, func() error { return s.persistWrite(sn) }},
			{func() bool { return len(a.unsynced) > 0 }, func() error { s.persistSync(sn); return nil }},
			{func() bool { return len(a.queue) > 0 && a.queue[0].durable() }, func() error { return s.persistComplete(sn) }},
			{func() bool { return len(a.acks) > 0 }, func() error { return s.deliverAck(sn) }},
			{func() bool { return len(a.applyQ) > 0 }, func() error { return s.applySome(sn) }},
			{func() bool { return a.appliedHanded > a.ackedApplied }, func() error { return s.ackApplied(sn) }},
		}
		for _, st := range steps {
			if err := run(st.cond, st.do); err != nil {
				return busy, err
			}
		}
		if !progressed {
			return busy, nil
		}
		busy = true
	}
	return busy, fmt.Errorf("node %d: async pipeline did not quiesce", sn.id)
}

// compactAsync mirrors a local snapshot and compaction in the fsynced
// image: the snapshot holds the state machine at index durably.
func (s *Sim) compactAsync(sn *simNode, meta core.SnapshotMeta, to uint64) error {
	a := sn.a
	if t, err := a.durable.Term(meta.Index); err != nil || t != meta.Term {
		return fmt.Errorf("durability: node %d applied %d/%d, which is not in its fsynced log (%d, %v)", sn.id, meta.Term, meta.Index, t, err)
	}
	a.durable.SetSnapshot(meta)
	if err := a.durable.Compact(to); err != nil {
		return s.wrap(sn, err)
	}
	a.smSynced = max(a.smSynced, meta.Index)
	return nil
}

// describeAsync renders a node's pipeline for failure reports.
func (s *Sim) describeAsync(sn *simNode) string {
	a := sn.a
	var b strings.Builder
	written := 0
	for _, q := range a.queue {
		if q.written {
			written++
		}
	}
	dlast, _ := a.durable.LastIndex()
	fmt.Fprintf(&b, "    async: queue %d (written %d), unsynced %d, acks %d, marker %d (disk %d), applyQ %d, applied %d (handed-out %d, acked %d, synced %d), durable last %d\n",
		len(a.queue), written, len(a.unsynced), len(a.acks), a.marker, a.markerDisk, len(a.applyQ),
		sn.appliedIndex, a.appliedHanded, a.ackedApplied, a.smSynced, dlast)
	return b.String()
}
