package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rafty-db/rafty/core"
)

// snapshotter is the one owner of a node's snapshot and compaction state:
// the compaction point, the latest snapshot with data, the policy's
// accounting, the background job (a state machine sync or a snapshot
// being written) and the outgoing transfers. Everything is off when store
// is nil (Config.Snapshots unset).
//
// Invariants:
//   - Only the loop goroutine reads or writes its fields. The goroutines
//     it starts (the sync, the writer, the transfers) get copies of what
//     they need and report through Node.snapDone and Node.sendDone, which
//     the loop handles (onSnapshotDone, onSendDone); each ends when the
//     node's context does, and the loop waits for them (Node.bg) when it
//     stops.
//   - compactIndex is the Storage's compaction point (its InitialState
//     marker, FirstIndex-1): the core knows nothing else. latest is the
//     newest snapshot with data in store, known to the driver only; with a
//     Syncer state machine it may be older than compactIndex, or absent.
//   - compactIndex never exceeds what the state machine holds durably
//     (the index a Syncer.Sync returned, or a snapshot's index with data
//     in store for a state machine without Syncer), nor the lowest
//     snapshot index in sending.
//   - At most one sync and one snapshot writer run at once. Every follower
//     in waiting is in sending with the index of writing, and writing is
//     not nil while waiting is not empty; every follower in sending
//     gets exactly one ReportSnapshot when its transfer (or the snapshot
//     it waits for) ends, unless the node stops.
type snapshotter struct {
	store  SnapshotStore // Config.Snapshots; nil: snapshots off
	syncer Syncer        // the state machine's, nil without one
	// sendSem holds MaxSnapshotSends slots, taken by running transfers.
	sendSem chan struct{}

	// latest is the newest snapshot with data in store (taken locally,
	// produced for a follower, or installed); zero if none.
	latest       core.SnapshotMeta
	compactIndex uint64

	// The policy: cumBytes counts the bytes of entries applied since
	// Start; baseIndex and baseBytes are the applied index and cumBytes at
	// the last policy point (the latest snapshot without a Syncer, the
	// latest sync started with one); marks sample cumBytes per applied
	// batch for the byte margin of compaction.
	cumBytes             uint64
	baseIndex, baseBytes uint64
	marks                []appliedMark

	// syncing is set while a Syncer.Sync runs off the loop; writing is the
	// snapshot being written (periodic without a Syncer, or produced for
	// followers); failures and retryAt back the writer off after
	// consecutive failures.
	syncing  bool
	writing  *localSnapshot
	failures int
	retryAt  time.Time

	// sending maps each follower with a transfer running (or waiting for
	// writing) to the index of the snapshot it gets, below which
	// compaction waits; waiting holds the MsgSnap of the followers waiting
	// for writing; sendFailures counts consecutive failed transfers per
	// follower, for the retry backoff, and lastSent is the snapshot of a
	// follower's last failed transfer, retried first so that the transfer
	// can resume.
	sending      map[uint64]uint64
	waiting      map[uint64]core.Message
	sendFailures map[uint64]int
	lastSent     map[uint64]core.SnapshotMeta
}

func newSnapshotter(n *Node) *snapshotter {
	s := &snapshotter{
		store:        n.cfg.Snapshots,
		sendSem:      make(chan struct{}, max(n.cfg.MaxSnapshotSends, 1)),
		sending:      map[uint64]uint64{},
		waiting:      map[uint64]core.Message{},
		sendFailures: map[uint64]int{},
		lastSent:     map[uint64]core.SnapshotMeta{},
	}
	s.syncer, _ = n.cfg.StateMachine.(Syncer)
	return s
}

// initSnapshots sets the state recovered at Start: latest is the newest
// stored snapshot agreeing with the log (zero if none), compacted the
// Storage's marker. Loop goroutine, before the loop runs.
func (l *loop) initSnapshots(latest core.SnapshotMeta, compacted uint64) {
	s, n := l.snap, l.n
	s.latest, s.compactIndex = latest, compacted
	s.baseIndex = max(l.applied, latest.Index)
	if s.syncer == nil {
		// Without a Syncer the next snapshot counts from the latest one.
		s.baseIndex = latest.Index
	}
	n.snapStats.index.Store(latest.Index)
	n.snapStats.compacted.Store(compacted)
	n.metrics.snapshotIndex.Set(float64(latest.Index))
	n.metrics.compactedIndex.Set(float64(compacted))
}

// snapshotDue reports whether the policy asks for a sync (Syncer) or a
// periodic snapshot (without) now.
func (l *loop) snapshotDue() bool {
	s, cfg := l.snap, &l.n.cfg
	if s.store == nil || l.applied <= s.baseIndex {
		return false
	}
	if s.syncer != nil {
		if s.syncing {
			return false
		}
	} else if s.writing != nil || (!s.retryAt.IsZero() && time.Now().Before(s.retryAt)) {
		return false
	}
	return l.applied-s.baseIndex >= uint64(cfg.SnapshotEntries) ||
		s.cumBytes-s.baseBytes >= uint64(cfg.SnapshotBytes)
}

// maybeSnapshot runs the policy after each iteration: with a Syncer, every
// SnapshotEntries entries or SnapshotBytes bytes applied it syncs the
// state machine off the loop and compacts below the synced index (no copy
// of the data); without, it takes a snapshot with data and compacts below
// it.
func (l *loop) maybeSnapshot() error {
	if !l.snapshotDue() {
		return nil
	}
	s := l.snap
	if s.syncer != nil {
		l.startSync()
		return nil
	}
	if err := l.startWriting(); err != nil {
		// A state machine that cannot capture its state is not broken for
		// applying; retry later, loudly.
		l.snapshotFailed(err)
	}
	return nil
}

// startSync runs Syncer.Sync on a goroutine of its own. It is not run on
// the loop because it can be slow: one fsync of Pebble's WAL, or a
// memtable flush with its WAL off (kv.Options.DisableWAL), while heartbeats
// and appends must go on. The state machine must allow Sync concurrently
// with Apply (app/kv.Store does: Sync reads the applied index, then syncs
// everything committed before). Its result comes back as a snapResult.
func (l *loop) startSync() {
	n, s := l.n, l.snap
	s.syncing = true
	s.baseIndex, s.baseBytes = l.applied, s.cumBytes
	syncer := s.syncer
	start := time.Now()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		idx, err := syncer.Sync()
		select {
		case n.snapDone <- snapResult{sync: true, synced: idx, start: start, err: err}:
		case <-n.ctx.Done():
		}
	}()
}

// startWriting captures the state machine at the applied index and writes
// it into the store in the background (snapDone reports the end). At most
// one writer runs.
func (l *loop) startWriting() error {
	s, n := l.snap, l.n
	if s.writing != nil {
		return errors.New("driver: a snapshot is already being written")
	}
	meta, src, err := l.capture()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(n.ctx)
	w := &localSnapshot{meta: meta, bytes: s.cumBytes, start: time.Now(), cancel: cancel, done: make(chan struct{})}
	s.writing = w
	store := s.store
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		defer close(w.done)
		defer cancel()
		size, err := writeSnapshot(ctx, store, meta, src)
		// A cancelled snapshot (node stopping, or superseded by an
		// installed one: cancelLocalSnapshot) reports nothing.
		select {
		case n.snapDone <- snapResult{snap: w, size: size, err: err}:
		case <-ctx.Done():
		}
	}()
	return nil
}

// onSnapshotDone handles the end of a background job: a sync (compact
// below the synced index) or a snapshot written (publish it, start the
// transfers waiting for it, and without a Syncer compact below it).
func (l *loop) onSnapshotDone(r snapResult) error {
	if r.sync {
		return l.onSyncDone(r)
	}
	n, s := l.n, l.snap
	// A writer cancelled (cancelLocalSnapshot) may still get its result
	// out; the followers waiting now wait for another one.
	stale := s.writing != r.snap
	if !stale {
		s.writing = nil
	}
	meta := r.snap.meta
	if r.err != nil {
		if stale || n.ctx.Err() != nil {
			return nil
		}
		l.failWaiting(r.err)
		if meta.Index <= s.latest.Index {
			return nil // superseded by an installed snapshot
		}
		l.snapshotFailed(r.err)
		return nil
	}
	s.failures, s.retryAt = 0, time.Time{}
	n.metrics.snapshots.Inc()
	n.metrics.snapshotSeconds.Observe(time.Since(r.snap.start).Seconds())
	n.metrics.snapshotSize.Set(float64(r.size))
	n.snapStats.taken.Add(1)
	n.snapStats.bytesWritten.Add(uint64(max(r.size, 0)))
	l.log.Info("snapshot taken", "index", meta.Index, "term", meta.Term, "bytes", r.size,
		"duration", time.Since(r.snap.start).Round(time.Millisecond))
	if meta.Index > s.latest.Index {
		l.setSnapshot(meta, r.snap.bytes)
	}
	if !stale {
		for to, m := range s.waiting {
			delete(s.waiting, to)
			l.startSend(m, meta, false)
		}
	}
	if s.syncer != nil || meta.Index < s.compactIndex {
		// With a Syncer only syncs move the compaction point.
		return nil
	}
	return l.compact(min(l.compactionPoint(meta.Index, meta.Index), l.sendGuard()))
}

// onSyncDone compacts the log below the index a Syncer.Sync made durable.
func (l *loop) onSyncDone(r snapResult) error {
	n, s := l.n, l.snap
	s.syncing = false
	if r.err != nil {
		if n.ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("driver: state machine Sync: %w", r.err)
	}
	n.snapStats.synced.Add(1)
	// The state machine may report more than the loop has seen applied
	// (the applier runs ahead of the loop's bookkeeping): never compact
	// past what the core has handed out and the loop accounted for.
	d := min(r.synced, l.applied)
	l.log.Debug("state machine synced", "index", d, "duration", time.Since(r.start).Round(time.Millisecond))
	return l.compact(min(l.compactionPoint(d, d), l.sendGuard()))
}

// capture takes a point-in-time snapshot of the state machine at the
// applied index, with its metadata, through withStateMachine (so it sees
// the state at a known applied index, never concurrently with Apply).
// Loop goroutine only.
func (l *loop) capture() (core.SnapshotMeta, SnapshotSource, error) {
	var (
		meta core.SnapshotMeta
		src  SnapshotSource
	)
	err := l.withStateMachine(func(sm StateMachine) error {
		if l.applied == 0 {
			return errors.New("driver: nothing applied yet")
		}
		term, err := l.rn.EntryTerm(l.applied)
		if err != nil {
			return fmt.Errorf("driver: term of applied entry %d: %w", l.applied, err)
		}
		// The configuration at the applied index, which the snapshot's
		// state reflects (membership.go tracks it entry by entry).
		meta = core.SnapshotMeta{Index: l.applied, Term: term, Membership: l.membership.Clone()}
		src, err = sm.Snapshot()
		if err != nil {
			return fmt.Errorf("driver: state machine Snapshot at %d: %w", l.applied, err)
		}
		if src == nil {
			return fmt.Errorf("driver: state machine Snapshot at %d returned no source", l.applied)
		}
		return nil
	})
	if err != nil {
		return core.SnapshotMeta{}, nil, err
	}
	return meta, src, nil
}

func (l *loop) snapshotFailed(err error) {
	n, s := l.n, l.snap
	n.metrics.snapshotFailures.Inc()
	s.failures++
	delay := retryDelay(n.cfg.SnapshotRetryDelay, s.failures)
	s.retryAt = time.Now().Add(delay)
	l.log.Error("snapshot failed; will retry", "err", err, "retry_in", delay)
}

// setSnapshot makes meta the latest snapshot with data (in Status).
// bytes is the cumulative applied size at its index.
func (l *loop) setSnapshot(meta core.SnapshotMeta, bytes uint64) {
	n, s := l.n, l.snap
	s.latest = meta
	s.latest.Membership = meta.Membership.Clone()
	if s.syncer == nil {
		s.baseIndex, s.baseBytes = meta.Index, bytes
	}
	n.snapStats.index.Store(meta.Index)
	n.metrics.snapshotIndex.Set(float64(meta.Index))
}

// compactionPoint returns where to compact below top, an index whose
// state is durable (a snapshot's, or a sync's): a margin below it, so a
// briefly slow follower still catches up from the log.
func (l *loop) compactionPoint(top, synced uint64) uint64 {
	cfg, s := &l.n.cfg, l.snap
	c := top - min(top, uint64(cfg.CompactionMarginEntries))
	// The byte margin: the smallest sampled index whose entries up to top
	// fit in CompactionMarginBytes (samples are per applied batch; below
	// the oldest sample nothing is known, so keep it).
	var atTop uint64
	for i := len(s.marks) - 1; i >= 0; i-- {
		if s.marks[i].index <= top {
			atTop = s.marks[i].bytes
			break
		}
	}
	if len(s.marks) > 0 && s.marks[0].index <= top {
		for _, m := range s.marks {
			if m.index > top {
				break
			}
			if atTop-m.bytes <= uint64(cfg.CompactionMarginBytes) {
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
	s := l.snap
	if c <= s.compactIndex || c > l.applied {
		return nil
	}
	// The marker carries the configuration in force at c, not a later
	// one: a restart from the marker replays the changes after c.
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
	l.log.Debug("log compacted", "index", c, "snapshot", s.latest.Index)
	return nil
}

// compacted records that the log now starts after c.
func (l *loop) compacted(c uint64) {
	n, s := l.n, l.snap
	s.compactIndex = c
	n.snapStats.compacted.Store(c)
	n.snapStats.compactions.Add(1)
	n.metrics.compactedIndex.Set(float64(c))
	n.metrics.compactions.Inc()
	// Marks at or below c are no longer needed, except the last one, which
	// anchors the byte count of what follows.
	i := 0
	for i+1 < len(s.marks) && s.marks[i+1].index <= c {
		i++
	}
	s.marks = append(s.marks[:0], s.marks[i:]...)
}

// recordApplied accounts for applied entries, for the snapshot policy and
// the byte margin. Loop goroutine.
func (l *loop) recordApplied(ents []core.Entry) {
	s := l.snap
	if s.store == nil || len(ents) == 0 {
		return
	}
	for i := range ents {
		s.cumBytes += ents[i].Size()
	}
	s.marks = append(s.marks, appliedMark{index: ents[len(ents)-1].Index, bytes: s.cumBytes})
	if len(s.marks) > maxAppliedMarks {
		// Compaction normally prunes them; if it keeps failing, thin them
		// out (keeping the newest): fewer samples only make the byte
		// margin coarser, i.e. keep more of the log.
		kept := s.marks[:0]
		for i, m := range s.marks {
			if i%2 == 1 || i == len(s.marks)-1 {
				kept = append(kept, m)
			}
		}
		s.marks = kept
	}
}

// cancelLocalSnapshot stops the snapshot being written and waits for its
// goroutine, before a received snapshot replaces the state machine. The
// followers waiting for it are told the transfer failed.
func (l *loop) cancelLocalSnapshot() {
	s := l.snap
	w := s.writing
	if w == nil {
		return
	}
	w.cancel()
	<-w.done
	// Its result, if it got one out, is discarded as superseded.
	s.writing = nil
	l.failWaiting(errors.New("driver: the snapshot being produced was superseded by an installed one"))
}

// failWaiting ends the transfers waiting for the snapshot being written.
func (l *loop) failWaiting(err error) {
	s := l.snap
	for to := range s.waiting {
		delete(s.waiting, to)
		delete(s.sending, to)
		s.sendFailures[to]++
		l.n.metrics.snapSendFailures.Inc()
		l.n.snapStats.sendFailures.Add(1)
		l.rn.ReportSnapshot(to, err)
	}
}

// installed records a snapshot received from the leader and installed
// (install.go): it is the latest snapshot and the compaction point.
func (l *loop) installed(meta core.SnapshotMeta) {
	s := l.snap
	s.marks = s.marks[:0]
	l.setSnapshot(meta, s.cumBytes)
	s.baseIndex, s.baseBytes = meta.Index, s.cumBytes
	l.compacted(meta.Index)
}
