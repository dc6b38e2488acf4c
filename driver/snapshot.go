package driver

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
)

// Snapshots and log compaction (Raft paper §7, thesis ch. 5). Everything
// here is off unless Config.Snapshots is set. snapshotter.go owns the
// state; this file has the policy's description, restart and the
// configuration history.
//
// The log is compacted to a point C whose state the state machine holds
// durably; a snapshot with data is what a follower that needs entries at
// or below C gets, and what a state machine that keeps nothing across a
// restart needs. The two are separate: the Storage's marker
// (InitialState, FirstIndex-1) is the compaction point and all the core
// knows; the latest snapshot with data is the driver's business (the
// SnapshotStore).
//
// # With a Syncer state machine (app/kv): compaction copies no data
//
// Every SnapshotEntries entries or SnapshotBytes bytes applied, the loop
// runs Syncer.Sync off the loop (startSync), which returns the index D the
// state machine holds durably, and compacts to
//
//	C = min(D - margin, the lowest snapshot index being sent)
//
// where margin keeps at most CompactionMarginEntries entries and
// CompactionMarginBytes bytes below D, so a briefly slow follower still
// catches up from the log. No snapshot file is written. A snapshot with
// data is produced only when a follower needs one (loop.sendSnapshot,
// snapsend.go): the latest stored one if the log still follows it (index
// >= C), else the state machine is captured at its applied index A >= C
// (through withStateMachine: a Pebble snapshot, quick), streamed into the
// SnapshotStore in the background (bounded memory) and sent. The MsgSnap
// the core emitted names C; the driver sends A with its term and the
// membership at A, and the follower's acknowledgement of A >= C completes
// the core's pending snapshot.
//
// # Without a Syncer (an in-memory state machine, Applied 0 on restart)
//
// The state machine needs a snapshot with data to restart, so every
// SnapshotEntries entries or SnapshotBytes bytes applied the loop captures
// it at its applied index S and writes it in the background (Apply goes
// on meanwhile; at most one runs at a time); once the file is durable the
// log is compacted to C = min(S - margin, the lowest snapshot index being
// sent). Followers get the latest stored snapshot.
//
// Either way compaction writes a marker at C (Storage.InstallSnapshot with
// C's index, term and the membership in force at C: the entries after C
// are kept) and deletes the WAL segments wholly at or below C
// (Storage.Compact). Nothing is ever deleted before the state machine's
// data covering it is durable (synced, or in a snapshot file). The log
// holds at most the margin plus what the thresholds let accumulate (plus
// the partly used segments at either end), whatever the history.
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
//     applying after the snapshot's index. A Syncer state machine never
//     needs this (the log is only compacted to an index it synced) unless
//     a crash interrupted an install.
//  3. The newest snapshot agreeing with the log becomes the driver's
//     latest snapshot (for Status and for sending); the core restores
//     from the Storage's marker alone.

// snapshotCounters are cumulative counts reported in Status.
type snapshotCounters struct {
	index, compacted                                            atomic.Uint64
	taken, installed, sent, sendFailures, recvFailures, resumed atomic.Uint64
	synced, compactions, bytesWritten                           atomic.Uint64
}

// SnapshotStatus reports snapshots and compaction; all zero without
// Config.Snapshots.
type SnapshotStatus struct {
	// Index is the index of the latest snapshot with data, taken locally
	// or installed from the leader (0 if none). With a Syncer state
	// machine snapshots are taken only for followers that need one, so it
	// is usually 0 or below CompactedIndex.
	Index uint64
	// CompactedIndex is the compaction point: the log holds no entry at or
	// below it.
	CompactedIndex uint64
	// Taken counts local snapshots made durable, Installed snapshots
	// received and installed, Sent snapshots sent and installed by a
	// follower; SendFailures and ReceiveFailures count failed transfers;
	// Resumed counts incoming transfers that resumed an interrupted one.
	Taken, Installed, Sent, SendFailures, ReceiveFailures, Resumed uint64
	// Synced counts state machine syncs (Syncer) made for compaction,
	// Compactions the times the compaction point moved, and BytesWritten
	// the data bytes of the snapshots taken locally (Taken), which is what
	// snapshots cost the disk (received ones are not counted).
	Synced, Compactions, BytesWritten uint64
}

func (c *snapshotCounters) status() SnapshotStatus {
	return SnapshotStatus{
		Index: c.index.Load(), CompactedIndex: c.compacted.Load(),
		Taken: c.taken.Load(), Installed: c.installed.Load(), Sent: c.sent.Load(),
		SendFailures: c.sendFailures.Load(), ReceiveFailures: c.recvFailures.Load(),
		Resumed: c.resumed.Load(),
		Synced:  c.synced.Load(), Compactions: c.compactions.Load(), BytesWritten: c.bytesWritten.Load(),
	}
}

// recoverSnapshots reconciles the state machine, the log and the snapshot
// files at Start (see the comment at the top of this file). It returns the
// index the state machine has applied (at least) and the latest snapshot
// with data (zero if none), which only the driver tracks.
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

	// 3. The latest snapshot with data: the newest agreeing with the log.
	var latest core.SnapshotMeta
	for _, m := range metas {
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

// localSnapshot is a snapshot being written in the background (bytes is
// the cumulative applied size at capture).
type localSnapshot struct {
	meta   core.SnapshotMeta
	bytes  uint64 // cumulative applied bytes at capture
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
}

// snapResult is what a background job reports: a snapshot written (snap,
// size) or a sync (sync, synced: the index Syncer.Sync returned).
type snapResult struct {
	snap   *localSnapshot
	size   int64
	sync   bool
	synced uint64
	start  time.Time
	err    error
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

// maxAppliedMarks bounds the byte-margin samples kept between compactions.
const maxAppliedMarks = 1 << 14

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
