package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/rafty-db/rafty/core"
)

// loop is the single goroutine that owns the core node. Every field below
// is touched only by that goroutine; the Node's channels and registries
// are how other goroutines reach it.
type loop struct {
	n   *Node
	rn  *core.Node
	log *slog.Logger

	interval time.Duration
	// tickBase is the clock time up to which ticks have been fed to the
	// core. Invariant: tickBase <= Clock.Now() < tickBase + interval right
	// after catchUpTicks.
	tickBase time.Time
	// leaderCatchUp bounds the ticks fed at once to a leader after the
	// loop fell behind: one election timeout, which is enough for any
	// read lease (shorter than that) to have expired, and runs at most
	// one CheckQuorum sweep, so a pause of the whole process does not by
	// itself depose a leader its followers still follow (see
	// catchUpTicks).
	leaderCatchUp int64

	role    core.Role
	leader  uint64
	applied uint64
	// lastHS is the newest hard state the core handed out; unsavedHS says
	// it differs from the stored one only in Commit, which the loop
	// defers to the next write (see persist).
	lastHS    core.HardState
	unsavedHS bool
	// writtenCommit is the commit index of the last hard state written
	// to storage (or implied at start): fsynced by Save, or only written
	// by an UnsyncedCommitSaver. Nothing beyond it is applied (see
	// persist).
	writtenCommit uint64
	// commitSaver is the Storage's UnsyncedCommitSaver extension, nil
	// without it; looked up once, not per Ready.
	commitSaver UnsyncedCommitSaver

	// ours maps a log index to the sequence number of this incarnation's
	// proposal that was persisted locally at that index, until the index
	// is applied. If a different entry is applied there, that proposal
	// can never commit (an entry never moves to another index) and its
	// waiter fails at once instead of waiting for its context.
	ours map[uint64]uint64
	// readsSent holds IDs of reads handed to the core that await their
	// ReadState; parked holds reads that have a read index and await the
	// state machine.
	readsSent map[uint64]struct{}
	parked    readHeap

	// carry is a proposal taken from propc that did not fit the previous
	// batch; it heads the next one.
	carry *proposalWaiter

	// Snapshots and compaction (snapshot.go, snapsend.go); unused when
	// Config.Snapshots is nil.
	//
	// snapIndex is the latest snapshot with data (local or installed),
	// compactIndex the log's compaction point. cumBytes counts the bytes
	// of entries applied since Start, snapBytes its value at snapIndex;
	// marks sample it per applied batch for the byte margin.
	snapIndex, compactIndex uint64
	cumBytes, snapBytes     uint64
	marks                   []appliedMark
	snapRunning             *localSnapshot
	snapFailures            int
	snapRetryAt             time.Time
	// sending maps each follower with a transfer running to the index of
	// the snapshot it is being sent, below which compaction waits;
	// sendFailures counts consecutive failed transfers per follower, for
	// the retry backoff, and lastSent is the snapshot of a follower's last
	// failed transfer, retried first so that the transfer can resume.
	sending      map[uint64]uint64
	sendFailures map[uint64]int
	lastSent     map[uint64]core.SnapshotMeta
	// install is the received snapshot being stepped and installed.
	install *installRequest

	// Scratch buffers reused across iterations.
	batch  [][]byte
	batchW []*proposalWaiter
	cmds   []Command
	owners []uint64
	ready  []uint64
}

func newLoop(n *Node, rn *core.Node) *loop {
	st := rn.Status()
	commitSaver, _ := n.cfg.Storage.(UnsyncedCommitSaver) // nil without it
	return &loop{
		n:             n,
		rn:            rn,
		log:           n.log,
		interval:      n.cfg.TickInterval,
		leaderCatchUp: int64(n.raftCfg.ElectionTicks),
		role:          st.Role,
		leader:        st.Leader,
		applied:       st.Applied,
		lastHS:        core.HardState{Term: st.Term, Vote: st.Vote, Commit: st.Commit},
		// At start the core's commit is the persisted one or the state
		// machine's durably applied index, whichever is higher.
		writtenCommit: st.Commit,
		commitSaver:   commitSaver,
		ours:          map[uint64]uint64{},
		readsSent:     map[uint64]struct{}{},
		sending:       map[uint64]uint64{},
		sendFailures:  map[uint64]int{},
		lastSent:      map[uint64]core.SnapshotMeta{},
	}
}

// event is what woke the loop up; at most one field is set.
type event struct {
	msgs     []core.Message
	prop     *proposalWaiter
	read     *readWaiter
	ctrl     *ctrlRequest
	snapDone *snapResult
	sendDone *sendResult
	install  *installRequest
	fail     error
}

// run is the loop. Each iteration:
//
//  1. waits for something to do (unless the core already has a Ready);
//  2. feeds the core, in this order: ticks owed if leader (so a lease is
//     judged against the real clock before any read decision, including
//     forwarded reads in the inbox), inbound messages (bounded by
//     MaxStepMessages), ticks owed, unreachable reports, control
//     requests, one batch of proposals (everything queued, up to
//     MaxBatchProposals / MaxBatchBytes), queued reads;
//  3. handles at most one Ready (handleReady), following core.Ready's
//     contract.
//
// Because step 2 drains the proposal queue completely before step 3, all
// proposals that arrived while the previous Save was blocking go into the
// next write: batching without a timer.
func (l *loop) run() {
	var fatal error
	defer func() { l.shutdown(fatal) }()
	n := l.n
	l.tickBase = n.cfg.Clock.Now()
	ticker := n.cfg.Clock.NewTicker(l.interval)
	defer ticker.Stop()
	for {
		var ev event
		if !l.rn.HasReady() && l.carry == nil {
			select {
			case <-n.ctx.Done():
				return
			case <-ticker.C():
			case ev.msgs = <-n.inbox:
			case ev.prop = <-n.propc:
			case ev.read = <-n.readc:
			case c := <-n.ctrlc:
				ev.ctrl = &c
			case <-n.unreachableNotify:
			case r := <-n.snapDone:
				ev.snapDone = &r
			case r := <-n.sendDone:
				ev.sendDone = &r
			case ev.install = <-n.installc:
			case ev.fail = <-n.failc:
			}
		}
		if n.ctx.Err() != nil {
			return
		}
		if err := l.iterate(ev); err != nil {
			fatal = err
			return
		}
	}
}

// iterate performs steps 2 and 3 of run. A returned error is fatal.
func (l *loop) iterate(ev event) error {
	if err := l.snapshotEvents(ev); err != nil {
		return err
	}
	if l.role == core.RoleLeader {
		if err := l.catchUpTicks(); err != nil {
			return err
		}
	}
	if err := l.stepInbox(ev.msgs); err != nil {
		return err
	}
	if err := l.catchUpTicks(); err != nil {
		return err
	}
	l.reportUnreachable()
	if err := l.runControl(ev.ctrl); err != nil {
		return err
	}
	if err := l.proposeBatch(ev.prop); err != nil {
		return err
	}
	if err := l.issueReads(ev.read); err != nil {
		return err
	}
	if l.install != nil && !l.rn.HasReady() {
		// Stepped without effect (a stale term): nothing to install.
		l.finishInstall(nil)
	}
	if l.rn.HasReady() {
		if err := l.handleReady(); err != nil {
			return err
		}
	}
	return l.maybeSnapshot()
}

// snapshotEvents handles the snapshot-related event that woke the loop,
// then whatever else of that kind is queued (the loop may not wait in
// select for a while under load): finished local snapshots and outgoing
// transfers, a received snapshot to step, a crash requested by a test
// hook.
func (l *loop) snapshotEvents(ev event) error {
	n := l.n
	if ev.fail != nil {
		return ev.fail
	}
	select {
	case err := <-n.failc:
		return err
	default:
	}
	if ev.snapDone != nil {
		if err := l.onSnapshotDone(*ev.snapDone); err != nil {
			return err
		}
	}
	if ev.sendDone != nil {
		l.onSendDone(*ev.sendDone)
	}
	for more := true; more; {
		select {
		case r := <-n.snapDone:
			if err := l.onSnapshotDone(r); err != nil {
				return err
			}
		case r := <-n.sendDone:
			l.onSendDone(r)
		default:
			more = false
		}
	}
	req := ev.install
	if req == nil {
		select {
		case req = <-n.installc:
		default:
		}
	}
	if req != nil {
		return l.stepInstall(req)
	}
	return nil
}

// catchUpTicks feeds the core the ticks owed for the clock time since the
// last fed tick. Counting time, not ticker fires, is what lets a leader
// notice a stall: after a Save (or Apply, or a pause of the whole process)
// that blocked it for longer than its lease, the core is fed enough ticks
// (up to leaderCatchUp) that the lease has expired before the leader
// decides on another read, so it confirms leadership with a quorum round
// instead of answering on stale time; a leader that is no longer followed
// then steps down (a higher term in the inbox, or CheckQuorum at its next
// sweep) rather than keep acting as leader.
//
// A node that is not leader is fed at most one tick per call and the rest
// of the time is dropped, as time.Ticker drops ticks. Its clock running
// slow is safe (it only refuses votes longer, which a leader lease relies
// on anyway), and it avoids a process-wide pause (GC, a frozen VM) making
// every follower campaign at once the moment it resumes.
func (l *loop) catchUpTicks() error {
	now := l.n.cfg.Clock.Now()
	elapsed := now.Sub(l.tickBase)
	if elapsed < l.interval {
		return nil
	}
	due := int64(elapsed / l.interval)
	l.tickBase = l.tickBase.Add(time.Duration(due) * l.interval)
	feed := int64(1)
	if l.role == core.RoleLeader {
		feed = min(due, l.leaderCatchUp)
	}
	if due > int64(l.n.raftCfg.ElectionTicks) {
		l.log.Warn("loop fell behind the clock by more than an election timeout",
			"behind", time.Duration(due)*l.interval, "ticksFed", feed, "role", l.role)
	}
	for range feed {
		if err := l.rn.Tick(); err != nil {
			return err // only a latched storage failure
		}
	}
	return nil
}

// stepInbox steps first and then whatever else is queued, up to
// MaxStepMessages messages.
func (l *loop) stepInbox(first []core.Message) error {
	stepped := 0
	step := func(msgs []core.Message) error {
		for i := range msgs {
			if err := l.rn.Step(msgs[i]); err != nil {
				if fatal := l.rn.Err(); fatal != nil {
					return fatal
				}
				// Invalid input from a peer: count it, never stop.
				l.n.metrics.invalidMessages.Inc()
				l.log.Debug("core rejected message", "msg", msgs[i], "err", err)
			}
		}
		stepped += len(msgs)
		return nil
	}
	if first != nil {
		if err := step(first); err != nil {
			return err
		}
	}
	for stepped < l.n.cfg.MaxStepMessages {
		select {
		case msgs := <-l.n.inbox:
			if err := step(msgs); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

func (l *loop) reportUnreachable() {
	n := l.n
	n.unreachableMu.Lock()
	if len(n.unreachable) == 0 {
		n.unreachableMu.Unlock()
		return
	}
	peers := make([]uint64, 0, len(n.unreachable))
	for p := range n.unreachable {
		peers = append(peers, p)
	}
	clear(n.unreachable)
	n.unreachableMu.Unlock()
	for _, p := range peers {
		l.rn.ReportUnreachable(p)
	}
}

// runControl runs first and any other queued control requests.
func (l *loop) runControl(first *ctrlRequest) error {
	run := func(c ctrlRequest) error {
		if c.lfn != nil {
			c.reply <- c.lfn(l)
		} else {
			c.reply <- c.fn(l.rn)
		}
		return l.rn.Err()
	}
	if first != nil {
		if err := run(*first); err != nil {
			return err
		}
	}
	for range cap(l.n.ctrlc) {
		select {
		case c := <-l.n.ctrlc:
			if err := run(c); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

// proposeBatch hands the core every queued proposal, up to the batch
// limits, in one Propose call: one append, one write, one replication
// round for all of them.
func (l *loop) proposeBatch(first *proposalWaiter) error {
	n := l.n
	batch, ws := l.batch[:0], l.batchW[:0]
	bytes := 0
	// add reports false when w does not fit; it then becomes the carry.
	add := func(w *proposalWaiter) bool {
		size := len(w.data) + entryOverheadBytes
		if len(ws) > 0 && (len(ws) >= n.cfg.MaxBatchProposals || bytes+size > n.cfg.MaxBatchBytes) {
			l.carry = w
			return false
		}
		// The caller may have given up while w was queued; then the core
		// must never see it (its caller was told so).
		if w.state.CompareAndSwap(waiterQueued, waiterProposed) {
			ws = append(ws, w)
			batch = append(batch, w.data)
			bytes += size
		}
		return true
	}
	fits := true
	if c := l.carry; c != nil {
		l.carry = nil
		fits = add(c)
	}
	if fits && first != nil {
		fits = add(first)
	}
	for fits {
		select {
		case w := <-n.propc:
			fits = add(w)
		default:
			fits = false
		}
	}
	defer func() {
		clear(batch)
		clear(ws)
		l.batch, l.batchW = batch[:0], ws[:0]
	}()
	if len(ws) == 0 {
		return nil
	}
	n.metrics.proposalsPerBatch.Observe(float64(len(ws)))
	if err := l.rn.Propose(batch...); err != nil {
		if fatal := l.rn.Err(); fatal != nil {
			return fatal
		}
		// All or nothing: the core refused the whole batch.
		for _, w := range ws {
			l.resolveProposal(w.seq, proposalResult{err: &DroppedError{Reason: err}})
		}
	}
	return nil
}

// issueReads hands queued reads to the core.
func (l *loop) issueReads(first *readWaiter) error {
	issue := func(w *readWaiter) error {
		if !l.n.reads.has(w.id) {
			return nil // the caller gave up
		}
		if err := l.rn.ReadIndex(w.id); err != nil {
			if fatal := l.rn.Err(); fatal != nil {
				return fatal
			}
			l.resolveRead(w.id, fmt.Errorf("driver: read: %w", err))
			return nil
		}
		l.readsSent[w.id] = struct{}{}
		return nil
	}
	if first != nil {
		if err := issue(first); err != nil {
			return err
		}
	}
	for range l.n.cfg.MaxPendingReads {
		select {
		case w := <-l.n.readc:
			if err := issue(w); err != nil {
				return err
			}
		default:
			l.sweepReadsSent()
			return nil
		}
	}
	l.sweepReadsSent()
	return nil
}

// sweepReadsSent forgets reads whose callers gave up and whose answer
// never came (a forwarded request lost on the way), so readsSent stays
// bounded by about twice MaxPendingReads.
func (l *loop) sweepReadsSent() {
	if len(l.readsSent) <= 2*l.n.cfg.MaxPendingReads {
		return
	}
	for id := range l.readsSent {
		if !l.n.reads.has(id) {
			delete(l.readsSent, id)
		}
	}
}

// shutdown runs when the loop exits for any reason. Order matters:
// refuse new work, flush the deferred commit index, fail every waiter,
// close the transport (so no receive goroutine calls in any more), then
// storage; only then close done, which Stop waits for.
func (l *loop) shutdown(fatal error) {
	n := l.n
	close(n.loopDone)
	n.cancel()
	if fatal != nil {
		l.log.Error("node stopped on a fatal error", "err", fatal)
	}
	// Snapshot work: answer a received snapshot being stepped, stop the
	// local snapshot writer and outgoing transfers (their contexts derive
	// from n.ctx) and wait for them.
	if l.install != nil {
		l.finishInstall(ErrStopped)
	}
	n.bg.Wait()
	var errs []error
	if fatal == nil && l.unsavedHS {
		if err := n.cfg.Storage.Save(l.lastHS, nil); err != nil {
			errs = append(errs, fmt.Errorf("driver: saving final hard state: %w", err))
		}
	}
	stopped := stoppedError(fatal)
	for _, w := range n.props.close() {
		// Only this goroutine moves a waiter out of queued, so the state
		// read here is final.
		if w.state.Load() == waiterProposed {
			w.done <- proposalResult{err: &OutcomeUnknownError{Cause: stopped}}
		} else {
			w.done <- proposalResult{err: stopped}
		}
	}
	for _, w := range n.reads.close() {
		w.done <- stopped
	}
	if n.ownsTransport {
		if err := n.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("driver: closing transport: %w", err))
		}
	}
	n.closePartial()
	if err := n.cfg.Storage.Close(); err != nil {
		errs = append(errs, fmt.Errorf("driver: closing storage: %w", err))
	}
	n.metrics.unregister()
	n.fatal = fatal
	n.stopErr = errors.Join(append([]error{fatal}, errs...)...)
	l.log.Info("node stopped")
	close(n.done)
}
