package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
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
	// after dueTicks.
	tickBase time.Time
	// leaderCatchUp bounds the ticks fed at once to a leader after the
	// loop fell behind: one election timeout, which is enough for any
	// read lease (shorter than that) to have expired, and runs at most
	// one CheckQuorum sweep, so a pause of the whole process does not by
	// itself depose a leader its followers still follow (see
	// stepInboundAndTicks).
	leaderCatchUp int64

	role   core.Role
	leader uint64
	// lastHS is the newest hard state the core handed out.
	lastHS core.HardState
	// commitWriter is the Storage's CommitWriter extension, nil without
	// it; looked up once, not per Ready.
	commitWriter CommitWriter

	// The persister (persist.go): persistInFlight batches queued and not
	// yet collected, counting persistBytes against MaxPersistQueueBytes;
	// acks are the batches collected and not yet acknowledged to the
	// core, in order.
	persister       *persister
	persistInFlight int
	persistBytes    int64
	acks            []*persistBatch

	// The applier (apply.go): handedOut is the last committed index
	// handed to it, applied the last it applied as far as the loop knows
	// (applied <= handedOut), ackedApplied the last given to
	// core.Node.AckApplied. reapplyAt is the commit index at start until
	// it is applied, then 0 (Start waits for it: n.reapplied).
	applier      *applier
	handedOut    uint64
	applied      uint64
	ackedApplied uint64
	reapplyAt    uint64

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

	// held are inbound messages a leader steps only after the ticks owed
	// (see stepInboundAndTicks); scratch, empty between iterations.
	held []core.Message
	// lastInvalidLog rate-limits the log line for refused forwarded
	// proposals.
	lastInvalidLog time.Time

	// Snapshots and compaction: their state has one owner (snapshotter.go).
	snap *snapshotter
	// install is the received snapshot being stepped and installed.
	install *installRequest

	// Membership (membership.go): the configuration at the applied index
	// (equal to the core's active one after each Ready, since the core
	// activates a configuration when it hands its entry out and the loop
	// applies every entry it is handed); confVersion counts its changes,
	// and peersVersion is the one last given to the transport. confHist
	// (snapshots only) keeps the configurations in force since the
	// compaction point, for the compaction marker (snapshot.go).
	membership    core.Membership
	confVersion   uint64
	peersVersion  uint64
	peersSet      bool
	confWaiters   []*confWaiter
	confResults   []confResult
	confHist      []confPoint
	caughtUpSince map[uint64]time.Time
	// promoteCheckedAt is when autoPromote last looked at progress.
	promoteCheckedAt time.Time
	// peersCheckAt is the commit index at start; peersChecked is set once
	// Config.Peers were compared with the configuration (checkPeers).
	peersCheckAt uint64
	peersChecked bool

	// Scratch buffers reused across iterations.
	batch  [][]byte
	batchW []*proposalWaiter
	ready  []uint64
}

func newLoop(n *Node, rn *core.Node) *loop {
	st := rn.Status()
	n.maxMessageBytes = n.cfg.MaxMessageBytes
	if ml, ok := n.transport.(MessageLimiter); ok {
		if lim := ml.MaxMessageBytes(); lim > 0 && lim < n.maxMessageBytes {
			n.maxMessageBytes = max(lim, minMaxMessageBytes)
		}
	}
	n.forwardBytes = n.maxMessageBytes - forwardFramingBytes
	n.transportSet.Store(true)
	commitWriter, _ := n.cfg.Storage.(CommitWriter) // nil without it
	l := &loop{
		n:             n,
		rn:            rn,
		log:           n.log,
		interval:      n.cfg.TickInterval,
		leaderCatchUp: int64(n.raftCfg.ElectionTicks),
		role:          st.Role,
		leader:        st.Leader,
		lastHS:        core.HardState{Term: st.Term, Vote: st.Vote, Commit: st.Commit},
		commitWriter:  commitWriter,
		persister:     newPersister(n),
		applier:       newApplier(n, st.Applied),
		handedOut:     st.Applied,
		applied:       st.Applied,
		ackedApplied:  st.Applied,
		ours:          map[uint64]uint64{},
		readsSent:     map[uint64]struct{}{},
		snap:          newSnapshotter(n),
		membership:    st.Membership,
		caughtUpSince: map[uint64]time.Time{},
	}
	if st.Commit > st.Applied {
		l.reapplyAt = st.Commit
	} else {
		close(n.reapplied)
	}
	return l
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
//  1. waits for something to do (unless the core already has a Ready it
//     may take);
//  2. takes in what the persister and the applier finished
//     (AckPersisted, AckApplied, parked reads);
//  3. feeds the core, in this order: inbound messages (bounded by
//     MaxStepMessages) and the ticks owed, interleaved on a leader so
//     that followers' answers count before the clock catches up and read
//     decisions come after it (stepInboundAndTicks), unreachable reports,
//     control requests, one batch of proposals (everything queued, up to
//     MaxBatchProposals / MaxBatchBytes, in chunks that fit one transport
//     message), queued reads;
//  4. handles at most one Ready (handleReady), following core.Ready's
//     asynchronous contract, unless the persist queue is full
//     (canTakeReady).
//
// The loop never waits for a Save or an Apply (except around a snapshot
// install): the persister merges everything queued while its previous
// fsync ran into its next Save, so batching needs no timer either.
func (l *loop) run() {
	var fatal error
	defer func() { l.shutdown(fatal) }()
	n := l.n
	l.tickBase = n.cfg.Clock.Now()
	ticker := n.cfg.Clock.NewTicker(l.interval)
	defer ticker.Stop()
	// The disk watchdog, the persister and the applier end with n.ctx;
	// shutdown waits for them (n.bg) before closing the transport they
	// send through and the storage they write.
	n.bg.Go(n.watchDisk)
	n.bg.Go(l.persister.run)
	n.bg.Go(l.applier.run)
	l.noteRemoved()
	l.updatePeers()
	l.checkPeers()
	for {
		var ev event
		propc := n.propc
		if l.holdProposals() {
			propc = nil
		}
		if !(l.rn.HasReady() && l.canTakeReady()) && (l.carry == nil || propc == nil) {
			select {
			case <-n.ctx.Done():
				return
			case <-ticker.C():
			case <-l.persister.notify:
			case <-l.applier.notify:
			case ev.msgs = <-n.inbox:
			case ev.prop = <-propc:
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

// iterate performs steps 2 to 4 of run. A returned error is fatal.
func (l *loop) iterate(ev event) error {
	if err := l.ackPersisted(); err != nil {
		return err
	}
	if err := l.processApplied(); err != nil {
		return err
	}
	if err := l.snapshotEvents(ev); err != nil {
		return err
	}
	if err := l.stepInboundAndTicks(ev.msgs); err != nil {
		return err
	}
	l.reportUnreachable()
	if err := l.runControl(ev.ctrl); err != nil {
		return err
	}
	if l.n.ctx.Err() != nil {
		// Stopped while a control request ran: take no more work.
		return nil
	}
	if l.holdProposals() {
		if ev.prop != nil {
			// Became leader while its follower-era write runs: the
			// proposal heads the next batch.
			l.carry = ev.prop
		}
	} else if err := l.proposeBatch(ev.prop); err != nil {
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
		if !l.canTakeReady() {
			// Throttled by the disk: Status still shows what the core
			// took in meanwhile (proposals, terms).
			l.n.publishStatus(l.rn.Status())
		} else if err := l.handleReady(); err != nil {
			return err
		}
	}
	l.updatePeers()
	l.checkPeers()
	l.autoPromote()
	// Capturing the state machine goes through withStateMachine
	// (snapshotter.go), so that it does not overlap Apply; a sync for
	// compaction does not need the applier drained.
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

// stepInboundAndTicks steps inbound messages (the first batch, then
// whatever else is queued, up to MaxStepMessages) and feeds the core the
// ticks owed for the clock time since the last fed tick.
//
// Counting time, not ticker fires, is what lets a leader notice a stall:
// after a Save (or Apply, or a pause of the whole process) that blocked it
// for longer than its lease, the core is fed enough ticks (up to
// leaderCatchUp) that the lease has expired before the leader decides on
// another read, so it confirms leadership with a quorum round instead of
// answering on stale time; a leader that is no longer followed then steps
// down (a higher term in the inbox, or CheckQuorum at its next sweep)
// rather than keep acting as leader.
//
// A leader's order after such a block is what keeps a healthy one leading
// through one slow fsync of about an election timeout while keeping leases
// honest:
//
//  1. one owed tick;
//  2. the followers' answers that arrived meanwhile (MsgHeartbeatResp,
//     and MsgAppResp unless a lease read could be released by them, see
//     stepsEarly), in arrival order;
//  3. the other owed ticks, at most leaderCatchUp in all, so at most one
//     CheckQuorum sweep — which now sees the followers heard from;
//  4. everything else, held back from step 2 in arrival order: requests
//     whose answer depends on time (a forwarded lease read) are decided on
//     the caught-up clock.
//
// Stepping the answers after one tick rather than before any dates them
// at most one tick later than they arrived (they arrived after the
// previous iteration began); only CheckQuorum and flow control read that
// date, never the lease, which counts from the start tick of the round a
// quorum confirmed. Fed every owed tick first, a leader whose fsync took
// an election timeout found its followers silent for that long and stepped
// down although they had answered.
//
// A node that is not leader steps everything first and is then fed at
// most one tick; the rest of the time is dropped, as time.Ticker drops
// ticks. Its clock running slow is safe (it only refuses votes longer,
// which a leader lease relies on anyway), and it avoids a process-wide
// pause (GC, a frozen VM) making every follower campaign at once the
// moment it resumes.
func (l *loop) stepInboundAndTicks(first []core.Message) error {
	due := l.dueTicks()
	if l.rn.Role() != core.RoleLeader {
		if err := l.stepInbox(first, false); err != nil {
			return err
		}
		return l.feedTicks(min(due+l.dueTicks(), 1))
	}
	early := min(due, 1)
	if err := l.feedTicks(early); err != nil {
		return err
	}
	if err := l.stepInbox(first, true); err != nil {
		return err
	}
	// Stepping a full inbox takes time too: count it now, so heartbeats
	// due meanwhile leave with this iteration's Ready.
	due += l.dueTicks()
	rest := min(due, l.leaderCatchUp) - early
	if l.rn.Role() != core.RoleLeader {
		rest = min(rest, 1) // stepped down meanwhile: a follower's share
	}
	if err := l.feedTicks(rest); err != nil {
		return err
	}
	held := l.held
	defer func() {
		clear(held)
		l.held = held[:0]
	}()
	return l.stepMessages(held)
}

// dueTicks returns the ticks owed for the clock time since tickBase and
// moves tickBase past them. Invariant: tickBase <= Clock.Now() <
// tickBase + interval afterwards.
func (l *loop) dueTicks() int64 {
	now := l.n.cfg.Clock.Now()
	elapsed := now.Sub(l.tickBase)
	if elapsed < l.interval {
		return 0
	}
	due := int64(elapsed / l.interval)
	l.tickBase = l.tickBase.Add(time.Duration(due) * l.interval)
	if due > int64(l.n.raftCfg.ElectionTicks) {
		l.log.Warn("loop fell behind the clock by more than an election timeout",
			"behind", time.Duration(due)*l.interval, "role", l.rn.Role())
	}
	return due
}

// feedTicks ticks the core k times.
func (l *loop) feedTicks(k int64) error {
	for range k {
		if err := l.rn.Tick(); err != nil {
			return err // only a latched storage failure
		}
	}
	return nil
}

// stepsEarly reports whether a leader steps m before the owed ticks (see
// stepInboundAndTicks). MsgAppResp is held back while the leader has not
// committed in its term under ReadLease: its first commit releases the
// reads waiting for it, which the core may answer from the lease, and
// that must happen on the caught-up clock.
func (l *loop) stepsEarly(m *core.Message) bool {
	switch m.Type {
	case core.MsgHeartbeatResp:
		return true
	case core.MsgAppResp:
		if l.n.raftCfg.ReadMode != core.ReadLease {
			return true
		}
		t, err := l.rn.EntryTerm(l.lastHS.Commit)
		return err == nil && t == l.rn.Term()
	}
	return false
}

// stepInbox steps first and then whatever else is queued, up to
// MaxStepMessages messages. With hold, only messages stepsEarly accepts
// are stepped; the others are appended to l.held, in order.
func (l *loop) stepInbox(first []core.Message, hold bool) error {
	stepped := 0
	step := func(msgs []core.Message) error {
		stepped += len(msgs)
		if !hold {
			return l.stepMessages(msgs)
		}
		for i := range msgs {
			if !l.stepsEarly(&msgs[i]) {
				l.held = append(l.held, msgs[i])
				continue
			}
			if err := l.stepMessage(&msgs[i]); err != nil {
				return err
			}
		}
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

func (l *loop) stepMessages(msgs []core.Message) error {
	for i := range msgs {
		if err := l.stepMessage(&msgs[i]); err != nil {
			return err
		}
	}
	return nil
}

// stepMessage steps one inbound message. The driver looks at proposals
// first: a forwarded MsgProp loses the entries validateForwarded refuses
// (answered at once, see refuseForwarded), and a MsgPropResp carrying a
// driver reason fails our waiters without reaching the core. A returned
// error is fatal.
func (l *loop) stepMessage(m *core.Message) error {
	switch m.Type {
	case core.MsgProp:
		if !l.screenForwarded(m) {
			return nil
		}
	case core.MsgPropResp:
		if err, ok := driverRejectErr(m.Context); ok && m.Reject {
			l.failForwarded(m.Entries, err)
			return nil
		}
	}
	if err := l.rn.Step(*m); err != nil {
		if fatal := l.rn.Err(); fatal != nil {
			return fatal
		}
		// Invalid input from a peer: count it, never stop.
		l.n.metrics.invalidMessages.Inc()
		l.log.Debug("core rejected message", "msg", *m, "err", err)
	}
	return nil
}

// screenForwarded removes from a forwarded proposal the entries that
// validateForwarded refuses and answers them with a rejection the
// proposer maps to ErrInvalidProposal. It reports whether entries are
// left to step.
func (l *loop) screenForwarded(m *core.Message) bool {
	var bad []core.Entry
	var firstErr error
	good := m.Entries
	for i := range m.Entries {
		err := validateForwarded(&m.Entries[i], m.From, l.n.cfg.ValidateCommand)
		if err == nil {
			if bad != nil {
				good = append(good, m.Entries[i])
			}
			continue
		}
		if bad == nil {
			// First refusal: from here on, copy what is kept.
			good = append([]core.Entry(nil), m.Entries[:i]...)
			firstErr = err
		}
		bad = append(bad, m.Entries[i])
	}
	if bad == nil {
		return true
	}
	l.n.metrics.invalidProposals.Add(float64(len(bad)))
	if now := time.Now(); now.Sub(l.lastInvalidLog) >= time.Second {
		l.lastInvalidLog = now
		l.log.Warn("refused malformed forwarded proposals", "from", m.From, "count", len(bad), "err", firstErr)
	}
	l.send([]core.Message{{Type: core.MsgPropResp, From: l.n.cfg.ID, To: m.From, Term: l.rn.Term(),
		Reject: true, Context: rejectInvalid, Entries: bad}})
	m.Entries = good
	return len(good) > 0
}

// failForwarded fails the waiters of our proposals among ents, refused by
// the leader's driver for reason.
func (l *loop) failForwarded(ents []core.Entry, reason error) {
	for i := range ents {
		if seq, ok := l.ourSeq(ents[i].Data); ok {
			l.resolveProposal(seq, proposalResult{err: &DroppedError{Reason: reason}})
		}
	}
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
			if c.smFree {
				c.reply <- c.lfn(l)
			} else {
				// The driver's own requests may use the state machine
				// (Backup captures it): not concurrently with Apply.
				c.reply <- l.withStateMachine(func(StateMachine) error { return c.lfn(l) })
			}
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
// holdProposals reports whether queued proposals wait: on a leader while
// entries it handed to the persister are being written. Everything that
// arrives meanwhile then goes into the core as one batch when the write
// completes — one run of entries per fsync and one append per follower —
// as when the loop itself blocked in Save. Without it the loop, which no
// longer waits for the disk, took a Ready for nearly every proposal: 1.2
// proposals per batch and 38,000 appends to each follower for 46,000 puts
// at C=128, whose per-message cost halved throughput (issue 15). Nothing
// else waits: acknowledgements, commits, applies, reads and heartbeats go
// on during the write. A follower forwards at once (its own writes are
// the leader's entries).
func (l *loop) holdProposals() bool {
	return l.role == core.RoleLeader && l.persistBytes > 0
}

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
	// One Propose call per chunk that fits one transport message: on a
	// follower each call becomes one forwarded MsgProp, which the
	// transport would drop whole if it exceeded its limit. On a leader the
	// chunks still go into one append and one write. Propose refused every
	// proposal that cannot fit a chunk alone.
	for lo := 0; lo < len(ws); {
		hi, size := lo, 0
		for hi < len(ws) {
			s := len(batch[hi]) + entryWireOverhead
			if hi > lo && size+s > n.forwardBytes {
				break
			}
			size += s
			hi++
		}
		if err := l.rn.Propose(batch[lo:hi]...); err != nil {
			if fatal := l.rn.Err(); fatal != nil {
				return fatal
			}
			// All or nothing: the core refused the whole chunk.
			for _, w := range ws[lo:hi] {
				l.resolveProposal(w.seq, proposalResult{err: &DroppedError{Reason: err}})
			}
		}
		lo = hi
	}
	return nil
}

// MessageLimiter is implemented by a Transport that bounds the size of
// one message (transport.GRPC does). The node then uses the smaller of its
// limit and Config.MaxMessageBytes for forwarded proposals.
type MessageLimiter interface {
	// MaxMessageBytes returns the largest message, in encoded bytes, the
	// transport sends or receives.
	MaxMessageBytes() int
}

// Wire sizes of a forwarded proposal (a MsgProp), with margin: the
// transport's encoding is its own business, so these bound it from above
// rather than repeat it. entryWireOverhead covers one entry's framing
// (the entry's length prefix, index, term, type and the data's length
// prefix: at most 36 bytes in protobuf); forwardFramingBytes the message's
// other fields, the batch header and gRPC's framing of one message (about
// 150 bytes).
const (
	entryWireOverhead   = 64
	forwardFramingBytes = 1 << 10
)

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
// refuse new work, wait for the persister and the applier (and the other
// goroutines) to end, fail every waiter,
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
	// from n.ctx) and wait for them. The persister finishes the Save in
	// flight and drops what is queued (nothing was acknowledged for it);
	// the applier finishes the Apply in flight and leaves the rest to the
	// next Start, which re-applies committed entries.
	if l.install != nil {
		l.finishInstall(ErrStopped)
	}
	n.bg.Wait()
	var errs []error
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

// Disk stalls.
//
// A write to Storage that never returns (a hung fdatasync, a dead disk
// behind a network volume) blocks the persister inside Save (or the loop
// inside a commit write), and with it, sooner or later, everything that
// waits for durability. The writers only record
// when their write in flight began (timeWrite: the persister in
// diskWriteStart, the loop in loopWriteStart); everything else happens
// off them:
//
//   - Status computes DiskWriteBlocked and DiskStalled from those records
//     (the older write in flight) on every call, so /readyz and `kvnode
//     status` show a stall while it lasts, and stop showing it the moment
//     the write returns;
//   - watchDisk, a goroutine of its own, logs the stall and counts it and,
//     if the node last published itself as leader, sends MsgTimeoutNow for
//     the node's term to the voter with the highest match index: that
//     follower campaigns at once (thesis §3.10), without waiting for its
//     election timeout. It needs no help from the core: a MsgTimeoutNow
//     only makes its receiver campaign, and the election's own rules
//     decide; one sent in a term that has already ended is ignored. The
//     stalled leader steps down when it sees the new term.
//
// A leader whose persister is blocked keeps sending heartbeats, but
// commits nothing (its own entries never become durable, and past
// MaxPersistQueueBytes it takes no more Readies); the hand-over moves
// leadership to a node that can persist, and the stalled flag keeps
// clients off this one. DiskStallTimeout is deliberately much longer than
// a slow fsync (seconds, not the hundreds of milliseconds of an election
// timeout): the other side, one slow fsync, must not cost a healthy
// leader its leadership (see stepInboundAndTicks).

// timeWrite runs one Storage write, recording it as in flight in slot
// (n.diskWriteStart for the persister, n.loopWriteStart for the loop).
func (n *Node) timeWrite(slot *atomic.Int64, write func() error) error {
	slot.Store(n.cfg.Clock.Now().UnixNano())
	defer slot.Store(0)
	return write()
}

// writeInFlight returns the start (Unix nanoseconds) of the older Storage
// write in flight, 0 when none.
func (n *Node) writeInFlight() int64 {
	a, b := n.diskWriteStart.Load(), n.loopWriteStart.Load()
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

// diskBlocked returns how long the older Storage write in flight has been
// running, 0 when none.
func (n *Node) diskBlocked() time.Duration {
	start := n.writeInFlight()
	if start == 0 {
		return 0
	}
	return max(n.cfg.Clock.Now().Sub(time.Unix(0, start)), 0)
}

// watchDisk checks the write in flight every quarter of DiskStallTimeout
// (never more often than every TickInterval) until the node stops; see
// above. A stall is thus noticed within 1.25 DiskStallTimeout.
func (n *Node) watchDisk() {
	period := max(n.cfg.DiskStallTimeout/4, n.cfg.TickInterval)
	tk := n.cfg.Clock.NewTicker(period)
	defer tk.Stop()
	var stalledSince int64 // start of the write reported stalled, 0 if none
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tk.C():
		}
		start := n.writeInFlight()
		blocked := n.diskBlocked()
		if stalledSince != 0 && start != stalledSince {
			n.metrics.diskStalled.Set(0)
			n.log.Warn("stalled disk write completed", "after_at_least", time.Duration(n.cfg.Clock.Now().UnixNano()-stalledSince))
			stalledSince = 0
		}
		if start == 0 || start == stalledSince || blocked < n.cfg.DiskStallTimeout {
			continue
		}
		stalledSince = start
		n.metrics.diskStalled.Set(1)
		n.metrics.diskStalls.Inc()
		n.log.Error("disk write stalled: not ready until it completes", "blocked", blocked,
			"disk_stall_timeout", n.cfg.DiskStallTimeout)
		n.handOverLeadership()
	}
}

// handOverLeadership asks the most up-to-date voter to campaign at once,
// if this node last published itself as leader (see above).
func (n *Node) handOverLeadership() {
	st := n.status.Load()
	if st.Role != core.RoleLeader || !n.transportSet.Load() {
		return
	}
	var to, match uint64
	for _, id := range st.Membership.Voters {
		pr, ok := st.Progress[id]
		if id == n.cfg.ID || !ok {
			continue
		}
		if to == core.None || pr.Match > match || (pr.Match == match && id < to) {
			to, match = id, pr.Match
		}
	}
	if to == core.None {
		n.log.Error("disk stalled on a leader with no other voter to hand leadership to")
		return
	}
	n.log.Warn("disk stalled: handing leadership over", "to", to, "term", st.Term, "match", match)
	n.metrics.stallHandovers.Inc()
	n.transport.Send([]core.Message{{Type: core.MsgTimeoutNow, From: n.cfg.ID, To: to, Term: st.Term}})
}
