package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
)

// Snapshots and log compaction (Raft paper §7, thesis ch. 5). Everything
// here is off unless Config.Snapshots is set.
//
// # Taking a snapshot (loop.maybeSnapshot)
//
// After each Ready, once SnapshotEntries entries or SnapshotBytes bytes
// have been applied since the latest snapshot, the loop captures the state
// machine at its applied index S (StateMachine.Snapshot: a point-in-time
// view such as a Pebble snapshot, quick) together with S's term and the
// membership, and hands it to one background goroutine, which streams it
// into SnapshotStore.CreateSnapshot and commits the file. Apply goes on
// meanwhile: writes never stop for a snapshot. At most one runs at a time.
//
// # Compacting (loop.onSnapshotDone)
//
// Back on the loop, once the file is durable: the state machine is made
// durable up to S if it needs that (Syncer.Sync, which returns the index
// it covers), the snapshot becomes the one reported to the core, and only
// then is the log compacted, to
//
//	C = min(S - margin, synced, the lowest snapshot index being sent)
//
// where margin keeps at most CompactionMarginEntries entries and
// CompactionMarginBytes bytes below S, so a briefly slow follower still
// catches up from the log, and a follower receiving an older snapshot can
// continue from the log after it (snapsend.go). Compaction writes a
// marker at C (Storage.InstallSnapshot with C's index, term and
// membership: the entries after C are kept) and deletes the WAL segments
// wholly at or below C (Storage.Compact). Nothing is ever deleted before
// the snapshot file and the state machine's data covering it are durable.
// The log therefore holds at most the margin plus what the thresholds let
// accumulate (plus the partly used segments at either end), whatever the
// history: the snapshot files (the newest two) and the state machine hold
// the rest.
//
// The Storage's own snapshot marker is therefore the compaction point,
// which is below the latest snapshot. The core is told about the latest
// snapshot through snapshotLog, which reports it from InitialState: that
// is the snapshot the core asks the driver to send (MsgSnap) when a
// follower needs an entry at or below C.
//
// # Restart (recoverSnapshots, in Start)
//
// The state machine, the log and the snapshot files are reconciled before
// the core is built:
//
//  1. If the newest snapshot file does not agree with the log (it is
//     beyond the last entry, or the log holds another term at its index),
//     it is one received from a leader whose installation a crash
//     interrupted (after the file was committed, before the log recorded
//     it): the installation is completed (state machine restored from it,
//     then Storage.InstallSnapshot). Such a file always holds committed
//     state, so this is what the core would have done.
//  2. If the state machine has not applied up to the compaction point (an
//     in-memory state machine starts empty), it is restored from the
//     newest snapshot at or above that point, and the core resumes
//     applying after the snapshot's index.
//  3. The newest snapshot agreeing with the log is reported to the core.

// snapshotLog is the Storage the core reads when snapshots are on: the
// embedder's Storage, except that InitialState reports the latest snapshot
// with data when it is newer than the Storage's marker (the compaction
// point).
type snapshotLog struct {
	Storage
	mu   sync.Mutex
	snap core.SnapshotMeta
}

func (s *snapshotLog) InitialState() (core.HardState, core.SnapshotMeta, error) {
	hs, marker, err := s.Storage.InitialState()
	if err != nil {
		return hs, marker, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Index > marker.Index {
		marker = s.snap
		marker.Membership = s.snap.Membership.Clone()
	}
	return hs, marker, nil
}

// setSnapshot records meta as the latest snapshot with data.
func (s *snapshotLog) setSnapshot(meta core.SnapshotMeta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if meta.Index >= s.snap.Index {
		s.snap = meta
		s.snap.Membership = meta.Membership.Clone()
	}
}

// snapshotCounters are cumulative counts reported in Status.
type snapshotCounters struct {
	index, compacted                                            atomic.Uint64
	taken, installed, sent, sendFailures, recvFailures, resumed atomic.Uint64
}

// SnapshotStatus reports snapshots and compaction; all zero without
// Config.Snapshots.
type SnapshotStatus struct {
	// Index is the index of the latest snapshot, taken locally or
	// installed from the leader.
	Index uint64
	// CompactedIndex is the compaction point: the log holds no entry at or
	// below it.
	CompactedIndex uint64
	// Taken counts local snapshots made durable, Installed snapshots
	// received and installed, Sent snapshots sent and installed by a
	// follower; SendFailures and ReceiveFailures count failed transfers;
	// Resumed counts incoming transfers that resumed an interrupted one.
	Taken, Installed, Sent, SendFailures, ReceiveFailures, Resumed uint64
}

func (c *snapshotCounters) status() SnapshotStatus {
	return SnapshotStatus{
		Index: c.index.Load(), CompactedIndex: c.compacted.Load(),
		Taken: c.taken.Load(), Installed: c.installed.Load(), Sent: c.sent.Load(),
		SendFailures: c.sendFailures.Load(), ReceiveFailures: c.recvFailures.Load(),
		Resumed: c.resumed.Load(),
	}
}

// recoverSnapshots reconciles the state machine, the log and the snapshot
// files at Start (see the comment at the top of this file). It returns the
// index the state machine has applied (at least) and the latest snapshot
// to report to the core.
func recoverSnapshots(cfg *Config, applied uint64) (uint64, core.SnapshotMeta, error) {
	snaps, st, sm := cfg.Snapshots, cfg.Storage, cfg.StateMachine
	log := cfg.Logger
	metas, err := snaps.ListSnapshots()
	if err != nil {
		return 0, core.SnapshotMeta{}, fmt.Errorf("driver: listing snapshots: %w", err)
	}
	_, marker, err := st.InitialState()
	if err != nil {
		return 0, core.SnapshotMeta{}, fmt.Errorf("driver: reading storage: %w", err)
	}
	last, err := st.LastIndex()
	if err != nil {
		return 0, core.SnapshotMeta{}, fmt.Errorf("driver: reading storage: %w", err)
	}
	agrees := func(m core.SnapshotMeta) (bool, error) {
		if m.Index <= marker.Index {
			return m.Index < marker.Index || m.Term == marker.Term, nil
		}
		if m.Index > last {
			return false, nil
		}
		t, err := st.Term(m.Index)
		if err != nil {
			return false, fmt.Errorf("driver: reading the term of entry %d: %w", m.Index, err)
		}
		return t == m.Term, nil
	}

	// 1. An installation interrupted after its file was committed.
	if len(metas) > 0 {
		newest := metas[0]
		ok, err := agrees(newest)
		if err != nil {
			return 0, core.SnapshotMeta{}, err
		}
		if !ok {
			log.Warn("completing a snapshot installation interrupted by a crash",
				"index", newest.Index, "term", newest.Term, "log_last", last, "compacted", marker.Index)
			if err := restoreFrom(snaps, sm, newest); err != nil {
				return 0, core.SnapshotMeta{}, err
			}
			if err := st.InstallSnapshot(newest); err != nil {
				return 0, core.SnapshotMeta{}, fmt.Errorf("driver: recording snapshot %d in the log: %w", newest.Index, err)
			}
			if err := st.Compact(newest.Index); err != nil {
				return 0, core.SnapshotMeta{}, fmt.Errorf("driver: compacting the log to %d: %w", newest.Index, err)
			}
			marker = newest
			if last, err = st.LastIndex(); err != nil {
				return 0, core.SnapshotMeta{}, fmt.Errorf("driver: reading storage: %w", err)
			}
			applied = newest.Index
		}
	}

	// 2. A state machine behind the compacted log.
	if applied < marker.Index {
		var from *core.SnapshotMeta
		for i := range metas {
			if metas[i].Index < marker.Index {
				break
			}
			if ok, err := agrees(metas[i]); err != nil {
				return 0, core.SnapshotMeta{}, err
			} else if ok {
				from = &metas[i]
				break
			}
		}
		if from == nil {
			return 0, core.SnapshotMeta{}, fmt.Errorf(
				"driver: the state machine has applied up to %d, the log starts after %d, and no snapshot covers the gap", applied, marker.Index)
		}
		log.Info("restoring the state machine from a snapshot", "index", from.Index, "term", from.Term, "applied", applied)
		if err := restoreFrom(snaps, sm, *from); err != nil {
			return 0, core.SnapshotMeta{}, err
		}
		applied = from.Index
	}

	// 3. The snapshot to report.
	latest := marker
	for _, m := range metas {
		if m.Index <= marker.Index {
			break
		}
		if ok, err := agrees(m); err != nil {
			return 0, core.SnapshotMeta{}, err
		} else if ok {
			latest = m
			break
		}
	}
	return applied, latest, nil
}

// restoreFrom restores sm from the stored snapshot meta.
func restoreFrom(snaps SnapshotStore, sm StateMachine, meta core.SnapshotMeta) error {
	_, rc, err := snaps.OpenSnapshot(meta.Index, meta.Term)
	if err != nil {
		return fmt.Errorf("driver: opening snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	err = sm.Restore(rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("driver: restoring the state machine from snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	return nil
}

// appliedMark is the cumulative size of applied entries at an index,
// sampled once per applied batch, for the byte margin of compaction.
type appliedMark struct {
	index, bytes uint64
}

// localSnapshot is a snapshot being written in the background.
type localSnapshot struct {
	meta   core.SnapshotMeta
	bytes  uint64 // cumulative applied bytes at capture
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
}

// snapResult is what the background writer reports.
type snapResult struct {
	snap *localSnapshot
	size int64
	err  error
}

// snapshotDue reports whether the policy asks for a snapshot now.
func (l *loop) snapshotDue() bool {
	n := l.n
	if n.snaps == nil || l.snapRunning != nil || l.applied <= l.snapIndex {
		return false
	}
	if !l.snapRetryAt.IsZero() && time.Now().Before(l.snapRetryAt) {
		return false
	}
	return l.applied-l.snapIndex >= uint64(n.cfg.SnapshotEntries) ||
		l.cumBytes-l.snapBytes >= uint64(n.cfg.SnapshotBytes)
}

// maybeSnapshot starts a local snapshot if one is due.
func (l *loop) maybeSnapshot() error {
	if !l.snapshotDue() {
		return nil
	}
	meta, src, err := l.capture()
	if err != nil {
		// A state machine that cannot capture its state is not broken for
		// applying; retry later, loudly.
		l.snapshotFailed(err)
		return nil
	}
	n := l.n
	ctx, cancel := context.WithCancel(n.ctx)
	s := &localSnapshot{meta: meta, bytes: l.cumBytes, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	l.snapRunning = s
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		defer close(s.done)
		defer cancel()
		size, err := writeSnapshot(ctx, n.snaps, meta, src)
		// A cancelled snapshot (node stopping, or superseded by an
		// installed one: cancelLocalSnapshot) reports nothing.
		select {
		case n.snapDone <- snapResult{snap: s, size: size, err: err}:
		case <-ctx.Done():
		}
	}()
	return nil
}

// capture takes a point-in-time snapshot of the state machine at the
// applied index, with its metadata. Loop goroutine only.
func (l *loop) capture() (core.SnapshotMeta, SnapshotSource, error) {
	if l.applied == 0 {
		return core.SnapshotMeta{}, nil, errors.New("driver: nothing applied yet")
	}
	term, err := l.rn.EntryTerm(l.applied)
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("driver: term of applied entry %d: %w", l.applied, err)
	}
	// The configuration at the applied index, which the snapshot's state
	// reflects (membership.go tracks it entry by entry).
	meta := core.SnapshotMeta{Index: l.applied, Term: term, Membership: l.membership.Clone()}
	src, err := l.n.cfg.StateMachine.Snapshot()
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("driver: state machine Snapshot at %d: %w", l.applied, err)
	}
	if src == nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("driver: state machine Snapshot at %d returned no source", l.applied)
	}
	return meta, src, nil
}

// writeSnapshot streams src into a new snapshot file and commits it. It
// closes src.
func writeSnapshot(ctx context.Context, snaps SnapshotStore, meta core.SnapshotMeta, src SnapshotSource) (int64, error) {
	defer src.Close()
	w, err := snaps.CreateSnapshot(meta)
	if err != nil {
		return 0, fmt.Errorf("driver: creating snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	n, err := src.WriteTo(&ctxWriter{ctx: ctx, w: w})
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = w.Abort()
		return n, fmt.Errorf("driver: writing snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	if err := w.Commit(); err != nil {
		_ = w.Abort()
		return n, fmt.Errorf("driver: committing snapshot %d/%d: %w", meta.Term, meta.Index, err)
	}
	return n, nil
}

// ctxWriter fails writes once ctx is done, so a snapshot being written
// stops promptly when the node stops or a newer snapshot is installed.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (w *ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

func (l *loop) snapshotFailed(err error) {
	n := l.n
	n.metrics.snapshotFailures.Inc()
	l.snapFailures++
	delay := retryDelay(n.cfg.SnapshotRetryDelay, l.snapFailures)
	l.snapRetryAt = time.Now().Add(delay)
	l.log.Error("snapshot failed; will retry", "err", err, "retry_in", delay)
}

// retryDelay is the pause before attempt failures+1: base doubled per
// consecutive failure, capped.
func retryDelay(base time.Duration, failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := base
	for i := 1; i < failures && d < base*maxSnapshotRetryDelayFactor; i++ {
		d *= 2
	}
	return min(d, base*maxSnapshotRetryDelayFactor)
}

// onSnapshotDone finishes a local snapshot: on success, makes the state
// machine durable, publishes the snapshot to the core and compacts.
func (l *loop) onSnapshotDone(r snapResult) error {
	n := l.n
	if l.snapRunning == r.snap {
		l.snapRunning = nil
	}
	if r.err != nil {
		if n.ctx.Err() != nil {
			return nil
		}
		if r.snap.meta.Index <= l.snapIndex {
			return nil // cancelled: superseded by an installed snapshot
		}
		l.snapshotFailed(r.err)
		return nil
	}
	meta := r.snap.meta
	l.snapFailures, l.snapRetryAt = 0, time.Time{}
	n.metrics.snapshots.Inc()
	n.metrics.snapshotSeconds.Observe(time.Since(r.snap.start).Seconds())
	n.metrics.snapshotSize.Set(float64(r.size))
	n.snapStats.taken.Add(1)
	l.log.Info("snapshot taken", "index", meta.Index, "term", meta.Term, "bytes", r.size,
		"duration", time.Since(r.snap.start).Round(time.Millisecond))
	if meta.Index <= l.snapIndex {
		return nil // a newer snapshot was installed meanwhile
	}
	synced := meta.Index
	if s, ok := n.cfg.StateMachine.(Syncer); ok {
		idx, err := s.Sync()
		if err != nil {
			return fmt.Errorf("driver: state machine Sync: %w", err)
		}
		synced = min(synced, idx)
	}
	l.setSnapshot(meta, r.snap.bytes)
	return l.compact(min(l.compactionPoint(meta.Index, synced), l.sendGuard()))
}

// setSnapshot makes meta the latest snapshot: reported to the core and in
// Status. bytes is the cumulative applied size at its index.
func (l *loop) setSnapshot(meta core.SnapshotMeta, bytes uint64) {
	n := l.n
	l.snapIndex, l.snapBytes = meta.Index, bytes
	n.snapLog.setSnapshot(meta)
	n.snapStats.index.Store(meta.Index)
	n.metrics.snapshotIndex.Set(float64(meta.Index))
}

// compactionPoint returns where to compact after a snapshot at snap whose
// state is durable up to synced: a margin below the snapshot, never above
// synced.
func (l *loop) compactionPoint(snap, synced uint64) uint64 {
	cfg := &l.n.cfg
	c := snap - min(snap, uint64(cfg.CompactionMarginEntries))
	// The byte margin: the smallest sampled index whose entries up to the
	// snapshot fit in CompactionMarginBytes (samples are per applied
	// batch; below the oldest sample nothing is known, so keep it).
	var atSnap uint64
	for i := len(l.marks) - 1; i >= 0; i-- {
		if l.marks[i].index <= snap {
			atSnap = l.marks[i].bytes
			break
		}
	}
	if len(l.marks) > 0 && l.marks[0].index <= snap {
		for _, m := range l.marks {
			if m.index > snap {
				break
			}
			if atSnap-m.bytes <= uint64(cfg.CompactionMarginBytes) {
				c = max(c, m.index)
				break
			}
		}
	}
	return min(c, synced)
}

// compact moves the compaction point up to c (if that is progress) and
// deletes what the log no longer needs.
func (l *loop) compact(c uint64) error {
	if c <= l.compactIndex {
		return nil
	}
	// The marker carries the configuration in force at c, not the
	// snapshot's (later) one: a restart from the marker replays the
	// changes after c.
	membership := l.membershipAt(c)
	n := l.n
	term, err := l.rn.EntryTerm(c)
	if err != nil {
		return fmt.Errorf("driver: term of compaction point %d: %w", c, err)
	}
	st := n.cfg.Storage
	if err := st.InstallSnapshot(core.SnapshotMeta{Index: c, Term: term, Membership: membership}); err != nil {
		return fmt.Errorf("driver: recording compaction point %d: %w", c, err)
	}
	if err := st.Compact(c); err != nil {
		return fmt.Errorf("driver: compacting the log to %d: %w", c, err)
	}
	l.compacted(c)
	l.pruneConfHistory(c)
	l.log.Debug("log compacted", "index", c, "snapshot", l.snapIndex)
	return nil
}

// compacted records that the log now starts after c.
func (l *loop) compacted(c uint64) {
	n := l.n
	l.compactIndex = c
	n.snapStats.compacted.Store(c)
	n.metrics.compactedIndex.Set(float64(c))
	n.metrics.compactions.Inc()
	// Marks at or below c are no longer needed, except the last one, which
	// anchors the byte count of what follows.
	i := 0
	for i+1 < len(l.marks) && l.marks[i+1].index <= c {
		i++
	}
	l.marks = append(l.marks[:0], l.marks[i:]...)
}

// recordApplied accounts for applied entries, for the snapshot policy and
// the byte margin.
func (l *loop) recordApplied(ents []core.Entry) {
	if l.n.snaps == nil || len(ents) == 0 {
		return
	}
	for i := range ents {
		l.cumBytes += ents[i].Size()
	}
	l.marks = append(l.marks, appliedMark{index: ents[len(ents)-1].Index, bytes: l.cumBytes})
	if len(l.marks) > maxAppliedMarks {
		// Compaction normally prunes them; if it keeps failing, thin them
		// out (keeping the newest): fewer samples only make the byte
		// margin coarser, i.e. keep more of the log.
		kept := l.marks[:0]
		for i, m := range l.marks {
			if i%2 == 1 || i == len(l.marks)-1 {
				kept = append(kept, m)
			}
		}
		l.marks = kept
	}
}

// maxAppliedMarks bounds the byte-margin samples kept between compactions.
const maxAppliedMarks = 1 << 14

// cancelLocalSnapshot stops a running local snapshot and waits for its
// goroutine, before a received snapshot replaces the state machine.
func (l *loop) cancelLocalSnapshot() {
	s := l.snapRunning
	if s == nil {
		return
	}
	s.cancel()
	<-s.done
	// Its result, if it got one out, is discarded as superseded.
	l.snapRunning = nil
}

// The configuration at the compaction point.
//
// A snapshot carries the configuration at its own index (the loop's
// tracked one when it captures the state machine), but the log is
// compacted a margin below it, and the compaction marker
// (Storage.InstallSnapshot) must carry the configuration in force at the
// compaction point: a node restarted from the marker replays the changes
// after it, and a later configuration there would have them applied twice
// (an add refused as a reused ID, a removal of a non-member). So the loop
// keeps the configurations in force since the compaction point (confHist,
// one point per change: rare, and pruned at every compaction, so bounded by
// the changes the uncompacted log holds).

// confPoint says that m is the configuration in force from index on.
type confPoint struct {
	index uint64
	m     core.Membership
}

// noteConf records a change at index (snapshots only).
func (l *loop) noteConf(index uint64, m core.Membership) {
	if l.n.snaps == nil {
		return
	}
	l.confHist = append(l.confHist, confPoint{index: index, m: m})
}

// membershipAt returns the configuration in force at index c, at or
// above the compaction point. Below the oldest point known (which Start
// places at the compaction point) the oldest is the best answer there is.
func (l *loop) membershipAt(c uint64) core.Membership {
	if len(l.confHist) == 0 {
		return l.membership.Clone()
	}
	m := l.confHist[0].m
	for _, p := range l.confHist {
		if p.index > c {
			break
		}
		m = p.m
	}
	return m.Clone()
}

// pruneConfHistory drops the points superseded at or below c, keeping
// the one in force at c.
func (l *loop) pruneConfHistory(c uint64) {
	i := 0
	for i+1 < len(l.confHist) && l.confHist[i+1].index <= c {
		i++
	}
	l.confHist = append(l.confHist[:0], l.confHist[i:]...)
}

// initMembership sets, at Start, the configuration at the applied index
// and (snapshots only) confHist from the compaction point on. The core
// restores the configuration at the applied index too (entries after it
// are handed out again, and the loop applies them, configuration entries
// included), so that is the one tracked; confHist is rebuilt from the
// compaction marker (the Storage's InitialState) and the changes in the
// log after it, reading the log, in pages of at most confScanBytes, only
// when the marker's configuration is not the core's (configurations never
// repeat: IDs only grow and removals are final, so equal ends mean no
// change between). If the changes do not lead to the core's configuration
// (storage from before configurations were log entries), that one is
// taken to have held since the compaction point.
//
// As a check on the core's restore (the two must agree, or snapshots would
// carry a configuration the core does not use), the scan's result is
// compared with it and the core's is kept either way.
func (l *loop) initMembership(marker core.SnapshotMeta, wasEmpty bool) error {
	if wasEmpty {
		// Bootstrap (the core's entry 1 is not yet stored; applying it
		// sets the configuration) or a joiner: nothing applied yet.
		l.membership = core.Membership{}
		if l.n.snaps != nil {
			l.confHist = []confPoint{{index: 0}}
		}
		return nil
	}
	cur := l.rn.Status().Membership
	l.membership = cur
	if l.n.snaps == nil {
		return nil
	}
	l.confHist = []confPoint{{index: marker.Index, m: cur.Clone()}}
	if membershipEqual(marker.Membership, cur) || l.applied <= marker.Index {
		return nil
	}
	st := l.n.cfg.Storage
	m := marker.Membership.Clone()
	hist := []confPoint{{index: marker.Index, m: m}}
	for lo := marker.Index + 1; lo <= l.applied; {
		ents, err := st.Entries(lo, l.applied+1, confScanBytes)
		if err != nil {
			return fmt.Errorf("driver: reading entries %d..%d for membership changes: %w", lo, l.applied, err)
		}
		if len(ents) == 0 {
			return fmt.Errorf("driver: reading entries %d..%d for membership changes: none returned", lo, l.applied)
		}
		for i := range ents {
			if ents[i].Type != core.EntryConfChange {
				continue
			}
			cc, err := core.UnmarshalConfChange(ents[i].Data)
			if err != nil {
				continue // skipped by every replica
			}
			if next, err := m.Apply(cc); err == nil {
				m = next
				hist = append(hist, confPoint{index: ents[i].Index, m: m})
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	if !membershipEqual(m, cur) {
		l.log.Info("the membership changes in the log do not lead to the restored membership (storage from before membership changes); using the restored one",
			"compacted", marker.Index, "applied", l.applied, "voters", cur.Voters)
		return nil
	}
	l.confHist = hist
	return nil
}

// confScanBytes bounds one read of initConfHistory.
const confScanBytes = 4 << 20
