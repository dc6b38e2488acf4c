package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
)

// Node is a running Raft node: the library's front door. Create it with
// Start; every method is safe for concurrent use.
type Node struct {
	cfg     Config // validated, defaults applied
	raftCfg core.Config
	log     *slog.Logger
	metrics *metrics

	transport     Transport
	ownsTransport bool

	// epoch distinguishes this incarnation's proposals from a previous
	// one's (see envelope.go).
	epoch uint64
	// seq numbers proposals within the epoch, from 1.
	seq atomic.Uint64
	// readSeq numbers reads. It starts at a random value so that a late
	// answer addressed to a previous incarnation's read can never match a
	// current one and serve it from a stale read index.
	readSeq atomic.Uint64

	// pendingProposals and pendingReads count calls in flight, to enforce
	// MaxPendingProposals and MaxPendingReads.
	pendingProposals atomic.Int64
	pendingReads     atomic.Int64

	props *registry[*proposalWaiter]
	reads *registry[*readWaiter]

	// Channels into the loop. propc and readc are as large as the pending
	// limits, so a caller holding a slot rarely blocks on them; inbox is
	// InboxSize batches and never blocks its writer (see handler.go).
	propc chan *proposalWaiter
	readc chan *readWaiter
	ctrlc chan ctrlRequest
	inbox chan []core.Message

	unreachableMu     sync.Mutex
	unreachable       map[uint64]struct{}
	unreachableNotify chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	// loopDone is closed when the loop stops taking work, before it
	// releases resources; requests seeing it fail with ErrStopped.
	loopDone chan struct{}
	// done is closed once every goroutine the node started has returned
	// and transport (if owned) and storage are closed. fatal and stopErr
	// are written before it is closed and only read after.
	done    chan struct{}
	fatal   error
	stopErr error

	status atomic.Pointer[Status]

	leaderMu sync.Mutex
	leader   uint64
	// leaderCh is closed and replaced whenever leader changes.
	leaderCh chan struct{}

	// Snapshots (the loop's snapshotter owns their state; handler.go
	// receives); snaps is nil when Config.Snapshots is.
	snaps     SnapshotStore
	snapStats snapshotCounters
	// bg counts the snapshot goroutines (the sync, the snapshot writer
	// and outgoing transfers) and watchLeader, which the loop waits for
	// when it stops.
	bg       sync.WaitGroup
	sendDone chan sendResult // outgoing transfers report here
	snapDone chan snapResult // the sync and the snapshot writer report here
	installc chan *installRequest
	recvSem  chan struct{} // one incoming transfer at a time
	// failc carries a crash requested by a test hook to the loop.
	failc chan error
	// partial is an interrupted incoming transfer kept for resuming.
	partialMu     sync.Mutex
	partial       *partialSnapshot
	partialClosed bool

	// forwardBytes bounds the entries of one forwarded proposal message:
	// the transport's message limit less framing. Set by newLoop, before
	// Start returns; read-only afterwards.
	forwardBytes    int
	maxMessageBytes int
	// transportSet is set (by newLoop) once n.transport may be used from
	// the handler's goroutines, which answer dropped forwarded proposals.
	transportSet atomic.Bool
	// diskWriteStart is the Clock time (Unix nanoseconds) at which the
	// persister's Storage write in flight began, 0 when none;
	// loopWriteStart the same for the loop's own writes (commit index).
	// See watchDisk.
	diskWriteStart atomic.Int64
	loopWriteStart atomic.Int64
	// reapplied is closed once the node has applied everything that was
	// committed when it started (Start waits for it).
	reapplied chan struct{}

	// Membership (membership.go): membership calls in flight; removal
	// learned from the node's own applied configuration (removedSelf) or
	// from a peer through the transport (removedBy, the peer's ID);
	// removedNoted makes either logged once.
	pendingConf  atomic.Int64
	removedSelf  atomic.Bool
	removedBy    atomic.Uint64
	removedNoted atomic.Bool
}

// Status is a point-in-time view of the node, published by the loop after
// every Ready it handles and whenever the applier advances (Applied);
// reading it never waits for the loop (so it
// answers even while a disk write stalls). Treat its maps and slices as
// read-only.
type Status struct {
	core.Status
	// PendingProposals and PendingReads count Propose and Read calls in
	// flight on this node (compare with the Max* limits in Config).
	PendingProposals int
	PendingReads     int
	// Stopped reports that the node has stopped.
	Stopped bool
	// Snapshots reports snapshots and log compaction.
	Snapshots SnapshotStatus
	// DiskStalled reports that a Storage write has been in flight for
	// longer than Config.DiskStallTimeout; DiskWriteBlocked is how long
	// the write in flight has run (0 when none). A stalled node is not
	// fit to serve (kvnode's /readyz fails), and a stalled leader hands
	// leadership over.
	DiskStalled      bool
	DiskWriteBlocked time.Duration
	// Removed reports that this node is no longer a member: its applied
	// configuration says so (core.Status.Removed), or a member refused its
	// messages because it was removed (RemovedBy). It shadows
	// core.Status.Removed, which only knows the former.
	Removed bool
	// Members describes every member of Membership, sorted by ID; on the
	// leader with its replication progress.
	Members []MemberStatus
}

// ctrlRequest runs fn on the loop goroutine, which owns the core.
type ctrlRequest struct {
	fn  func(*core.Node) error
	lfn func(*loop) error // instead of fn, for the driver's own requests
	// smFree says lfn does not use the state machine, so it need not
	// wait for the applier to drain (see runControl).
	smFree bool
	reply  chan error
}

// Start validates cfg, restores the core from cfg.Storage, builds and
// starts the node-owned transport (Config.NewTransport; see Starter), and
// starts the node's loop. It does not wait for other nodes or for a
// leader: it returns as soon as the node runs and has re-applied its log
// up to the commit index it found at start, or with an error saying what
// is wrong (an invalid Config, unreadable storage, a transport that
// cannot be built or started). On an error nothing keeps running, and the
// caller still owns Storage, except after a failure while re-applying
// (the state machine or storage failed, or ctx ended): the node has then
// stopped as Stop would, storage closed, and the error wraps ErrStopped
// and the cause.
//
// Re-applying needs no other node. It is what a state machine that
// applies without fsync (app/kv) needs after a crash: the commands its
// store lost are applied again before Start returns, so an application
// that serves local reads once Start returns never serves an older state
// than it served before the crash (up to the durable commit index; see
// CommitWriter for a power loss).
//
// ctx is the node's lifetime, not a deadline for Start: the node runs
// until ctx is cancelled or Stop is called, whichever comes first. Either
// way every goroutine it started ends, pending calls fail with
// ErrStopped, and its transport (if it owns it) and storage are closed;
// Stop (or Done) waits for that. So pass a context that lives as long as
// the node should (context.Background() for a node stopped only by
// Stop), never a request's. If ctx is already done, Start returns its
// error and starts nothing. The node-owned transport is started with a
// context that carries ctx's values but is never cancelled: the node
// closes it itself, after its loop has stopped.
//
// A node that knows no leader for ten election timeouts logs a warning
// (and again, less and less often, while it lasts), so that a cluster
// that cannot form (members not running, unreachable addresses, an
// embedder-owned transport never started) is never silent; see
// Config.Logger.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("driver: not starting node %d: %w", cfg.ID, err)
	}
	cfg, err := cfg.validated()
	if err != nil {
		return nil, err
	}
	applied, err := cfg.StateMachine.Applied()
	if err != nil {
		return nil, fmt.Errorf("driver: state machine Applied: %w", err)
	}
	wasEmpty, err := storageEmpty(cfg.Storage)
	if err != nil {
		return nil, fmt.Errorf("driver: reading storage: %w", err)
	}
	var (
		// The core reads the Storage itself: its marker is the compaction
		// point; the latest snapshot with data is the driver's business.
		reader core.LogReader = cfg.Storage
		latest core.SnapshotMeta
		marker core.SnapshotMeta
	)
	if cfg.Snapshots != nil {
		if applied, latest, err = recoverSnapshots(&cfg, applied); err != nil {
			return nil, err
		}
		if _, marker, err = cfg.Storage.InitialState(); err != nil {
			return nil, fmt.Errorf("driver: reading storage: %w", err)
		}
	}
	rc := cfg.raftConfig(applied, rand.Uint64())
	rn, err := core.New(rc, reader)
	if err != nil {
		return nil, fmt.Errorf("driver: restoring node %d: %w", cfg.ID, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:               cfg,
		raftCfg:           rc,
		log:               cfg.Logger.With(slog.Uint64("node", cfg.ID)),
		metrics:           m,
		epoch:             rand.Uint64(),
		props:             newRegistry[*proposalWaiter](),
		reads:             newRegistry[*readWaiter](),
		propc:             make(chan *proposalWaiter, cfg.MaxPendingProposals),
		readc:             make(chan *readWaiter, cfg.MaxPendingReads),
		ctrlc:             make(chan ctrlRequest, 16),
		inbox:             make(chan []core.Message, cfg.InboxSize),
		unreachable:       map[uint64]struct{}{},
		unreachableNotify: make(chan struct{}, 1),
		loopDone:          make(chan struct{}),
		done:              make(chan struct{}),
		leaderCh:          make(chan struct{}),
		snaps:             cfg.Snapshots,
		sendDone:          make(chan sendResult, 16),
		snapDone:          make(chan snapResult, 1),
		installc:          make(chan *installRequest),
		recvSem:           make(chan struct{}, 1),
		failc:             make(chan error, 1),
		reapplied:         make(chan struct{}),
	}
	n.readSeq.Store(rand.Uint64())
	// Published before NewTransport: a transport may deliver to the
	// handler as soon as it exists, and the handler reads the status
	// (refuseRemoved, refuseDropped).
	st := rn.Status()
	n.publishStatus(st)
	if cfg.NewTransport != nil {
		t, err := cfg.NewTransport(n.Handler())
		if err != nil {
			m.unregister()
			return nil, fmt.Errorf("driver: NewTransport: %w", err)
		}
		if t == nil {
			m.unregister()
			return nil, errors.New("driver: NewTransport returned a nil Transport")
		}
		n.transport, n.ownsTransport = t, true
	} else {
		n.transport = cfg.Transport
	}
	n.ctx, n.cancel = context.WithCancel(ctx)
	// Started only now that the node can take traffic: a transport
	// delivers to the handler as soon as it runs.
	if s, ok := n.transport.(Starter); ok && n.ownsTransport {
		if err := s.Start(context.WithoutCancel(ctx)); err != nil {
			n.cancel()
			closeErr := n.transport.Close()
			m.unregister()
			return nil, errors.Join(fmt.Errorf("driver: starting the transport NewTransport returned (the node starts it; NewTransport must only build it): %w", err), closeErr)
		}
	}
	l := newLoop(n, rn)
	_, storeMarker, err := cfg.Storage.InitialState()
	if err == nil {
		err = l.initMembership(storeMarker, wasEmpty)
	}
	if err != nil {
		n.cancel()
		var closeErr error
		if n.ownsTransport {
			closeErr = n.transport.Close()
		}
		m.unregister()
		return nil, errors.Join(fmt.Errorf("driver: restoring the membership: %w", err), closeErr)
	}
	// Flags are checked against the persisted configuration once what
	// was committed at start is applied (checkPeers).
	checked := wasEmpty || cfg.Join || len(cfg.Peers) == 0
	if !checked {
		if pm, _, err := core.MembershipAt(reader, st.Commit, confScanBytes); err == nil {
			if pm.IsEmpty() {
				pm = st.Membership // storage from before the bootstrap entry
			}
			n.warnPeers(pm, st.Commit)
			checked = true
		}
	}
	l.peersCheckAt, l.peersChecked = st.Commit, checked
	if cfg.Snapshots != nil {
		l.initSnapshots(latest, marker.Index)
	}
	n.bg.Go(n.watchLeader)
	go l.run()
	// Serving before the commit index at start is re-applied would
	// answer local reads from an older state than this node served before
	// a crash (the state machine applies without fsync).
	select {
	case <-n.reapplied:
	case <-n.done:
		return nil, fmt.Errorf("driver: node %d stopped while re-applying its committed log (up to index %d): %w",
			cfg.ID, st.Commit, stoppedError(n.fatal))
	}
	n.log.Info("node started", "applied", applied, "commit", st.Commit, "epoch", n.epoch)
	return n, nil
}

// ID returns the node's ID.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Handler returns the MessageHandler through which a transport delivers
// inbound traffic to this node. With Config.NewTransport the node passes
// it to the factory itself.
func (n *Node) Handler() MessageHandler { return handler{n} }

// Propose replicates cmd and returns the state machine's result for it once
// it has been applied on this node. It may be called on any node: a
// follower forwards to the leader, and the result comes back when the
// entry is applied here. cmd is copied; the caller may reuse it.
//
// Errors (see errors.go): ErrBusy (nothing submitted), a *DroppedError
// (never applied; its Reason says why, e.g. core.ErrNoLeader), an
// *OutcomeUnknownError (submitted, fate unknown: ctx ended or the node
// stopped first), the context's error wrapped when ctx ended before the
// proposal was submitted (never applied), ErrStopped.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, notSubmitted(err)
	}
	if n.stopped() {
		return nil, stoppedError(n.fatalIfDone())
	}
	if len(cmd) > n.cfg.MaxProposalBytes {
		return nil, &DroppedError{Reason: fmt.Errorf("%w: %d bytes exceeds MaxProposalBytes %d",
			core.ErrProposalTooLarge, len(cmd), n.cfg.MaxProposalBytes)}
	}
	// A proposal that cannot fit one transport message could never be
	// forwarded (nor replicated): it would vanish and its caller wait for
	// its context.
	if room := n.forwardBytes - EnvelopeOverhead - entryWireOverhead; len(cmd) > room {
		return nil, &DroppedError{Reason: &tooLargeError{msg: fmt.Sprintf(
			"driver: a command of %d bytes cannot fit in one transport message: MaxMessageBytes %d leaves room for %d",
			len(cmd), n.maxMessageBytes, room)}}
	}
	if v := n.cfg.ValidateCommand; v != nil {
		if err := v(cmd); err != nil {
			return nil, &DroppedError{Reason: fmt.Errorf("%w: %w", ErrInvalidProposal, err)}
		}
	}
	if n.pendingProposals.Add(1) > int64(n.cfg.MaxPendingProposals) {
		n.pendingProposals.Add(-1)
		return nil, fmt.Errorf("%w: %d proposals pending (MaxPendingProposals)", ErrBusy, n.cfg.MaxPendingProposals)
	}
	defer n.pendingProposals.Add(-1)
	start := time.Now()

	seq := n.seq.Add(1)
	w := &proposalWaiter{
		seq:  seq,
		data: encodeEnvelope(proposalID{node: n.cfg.ID, epoch: n.epoch, seq: seq}, cmd),
		done: make(chan proposalResult, 1),
	}
	if !n.props.add(seq, w) {
		return nil, stoppedError(n.fatalIfDone())
	}
	select {
	case n.propc <- w:
	case <-ctx.Done():
		return n.abandonProposal(w, ctx.Err())
	case <-n.loopDone:
		return n.abandonProposal(w, ErrStopped)
	}
	select {
	case r := <-w.done:
		if r.err == nil {
			n.metrics.proposeSeconds.Observe(time.Since(start).Seconds())
		}
		return r.value, r.err
	case <-ctx.Done():
		return n.abandonProposal(w, ctx.Err())
	}
}

// abandonProposal gives up waiting for w because of cause (the context's
// error or ErrStopped). If the loop already took w it is resolving it:
// take its answer. Otherwise w's state says whether the core ever saw it
// (see waiters.go): if not, it never will, and the caller may retry; if
// so, its fate is unknown.
func (n *Node) abandonProposal(w *proposalWaiter, cause error) (any, error) {
	if _, ok := n.props.take(w.seq); !ok {
		r := <-w.done // the resolver sends right after taking
		return r.value, r.err
	}
	if w.state.CompareAndSwap(waiterQueued, waiterCancelled) {
		return nil, notSubmitted(cause)
	}
	return nil, &OutcomeUnknownError{Cause: cause}
}

// notSubmitted marks an error (context or stop) that ended a proposal
// before the core saw it: the caller may retry without fear of a
// duplicate.
func notSubmitted(err error) error {
	return fmt.Errorf("driver: proposal not submitted (it will not be applied): %w", err)
}

// Read is a linearizable barrier (ReadIndex, design §4): when it returns
// nil, this node's state machine reflects every write committed before
// Read was called, so the caller may read it locally. It works on the
// leader and on followers (which ask the leader for the read index).
//
// Errors are retryable unless ErrStopped: ErrBusy, core.ErrNoLeader,
// core.ErrStepDown or a *core.NotLeaderError (leadership changed before
// the read was confirmed), core.ErrLeaderNotReady, or the context's error.
func (n *Node) Read(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.stopped() {
		return stoppedError(n.fatalIfDone())
	}
	if n.pendingReads.Add(1) > int64(n.cfg.MaxPendingReads) {
		n.pendingReads.Add(-1)
		return fmt.Errorf("%w: %d reads pending (MaxPendingReads)", ErrBusy, n.cfg.MaxPendingReads)
	}
	defer n.pendingReads.Add(-1)

	w := &readWaiter{id: n.readSeq.Add(1), done: make(chan error, 1)}
	if !n.reads.add(w.id, w) {
		return stoppedError(n.fatalIfDone())
	}
	select {
	case n.readc <- w:
	case <-ctx.Done():
		return n.abandonRead(w, ctx.Err())
	case <-n.loopDone:
		return n.abandonRead(w, ErrStopped)
	}
	select {
	case err := <-w.done:
		return err
	case <-ctx.Done():
		return n.abandonRead(w, ctx.Err())
	}
}

// abandonRead gives up on w unless the loop already answered it. Reads
// have no side effects, so there is no outcome to be unsure about.
func (n *Node) abandonRead(w *readWaiter, cause error) error {
	if _, ok := n.reads.take(w.id); !ok {
		return <-w.done
	}
	return cause
}

// Status returns the node's latest published state.
func (n *Node) Status() Status {
	s := *n.status.Load()
	s.PendingProposals = int(n.pendingProposals.Load())
	s.PendingReads = int(n.pendingReads.Load())
	s.Stopped = n.stopped()
	s.Snapshots = n.snapStats.status()
	s.DiskWriteBlocked = n.diskBlocked()
	s.DiskStalled = s.DiskWriteBlocked >= n.cfg.DiskStallTimeout
	s.Removed = s.Status.Removed || n.removedSelf.Load() || n.removedBy.Load() != 0
	s.Members = memberStatuses(&s.Status)
	return s
}

func (n *Node) publishStatus(st core.Status) {
	n.status.Store(&Status{Status: st})
}

// Leader returns the leader this node currently knows (0 if none) and a
// channel closed when that changes.
func (n *Node) Leader() (uint64, <-chan struct{}) {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leader, n.leaderCh
}

// setLeader is called by the loop when the core reports a new leader.
func (n *Node) setLeader(id uint64) {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	if n.leader == id {
		return
	}
	n.leader = id
	close(n.leaderCh)
	n.leaderCh = make(chan struct{})
}

// WaitLeader blocks until this node knows a leader and returns its ID.
func (n *Node) WaitLeader(ctx context.Context) (uint64, error) {
	if n.stopped() {
		return 0, stoppedError(n.fatalIfDone())
	}
	for {
		lead, changed := n.Leader()
		if lead != core.None {
			return lead, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-n.loopDone:
			return 0, stoppedError(n.fatalIfDone())
		}
	}
}

// TransferLeadership asks the cluster to make node to the leader (thesis
// §3.10) and returns once this node sees to as leader. It may be called on
// any node (a follower forwards the request). The leader abandons a
// transfer that has not completed within an election timeout, so the
// request is repeated every election timeout and whenever the leader
// changes, until ctx ends. Errors: core.ErrUnknownNode, core.ErrLearner,
// the context's error, ErrStopped.
func (n *Node) TransferLeadership(ctx context.Context, to uint64) error {
	if n.stopped() {
		return stoppedError(n.fatalIfDone())
	}
	retry := n.cfg.Clock.NewTicker(time.Duration(n.raftCfg.ElectionTicks) * n.cfg.TickInterval)
	defer retry.Stop()
	for {
		lead, changed := n.Leader()
		if lead == to {
			return nil
		}
		if lead != core.None {
			err := n.onLoop(ctx, func(rn *core.Node) error { return rn.TransferLeadership(to) })
			if err != nil && !errors.Is(err, core.ErrNoLeader) {
				return err
			}
		}
		select {
		case <-changed:
		case <-retry.C():
		case <-ctx.Done():
			return ctx.Err()
		case <-n.loopDone:
			return stoppedError(n.fatalIfDone())
		}
	}
}

// onLoop runs fn on the loop goroutine and returns its error.
func (n *Node) onLoop(ctx context.Context, fn func(*core.Node) error) error {
	return n.control(ctx, ctrlRequest{fn: fn, reply: make(chan error, 1)})
}

// control runs req on the loop goroutine and returns its error.
func (n *Node) control(ctx context.Context, req ctrlRequest) error {
	select {
	case n.ctrlc <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopDone:
		return stoppedError(n.fatalIfDone())
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.loopDone:
		// The loop replies before it can exit once it took the request,
		// so prefer a reply that is already there.
		select {
		case err := <-req.reply:
			return err
		default:
			return stoppedError(n.fatalIfDone())
		}
	}
}

// Stop stops the node and waits until every goroutine it started has
// returned and its transport (if owned) and storage are closed. Pending
// Propose and Read calls return ErrStopped (proposals already submitted
// return an *OutcomeUnknownError whose cause is ErrStopped). Stop is
// idempotent; every call returns the same error: the fatal error that
// stopped the node, if any, joined with any error closing resources.
func (n *Node) Stop() error {
	n.cancel()
	<-n.done
	return n.stopErr
}

// Done returns a channel closed once the node has fully stopped, whatever
// the reason.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns the fatal error that stopped the node (a storage or state
// machine failure), or nil while it runs or if it was stopped on request.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.fatal
	default:
		return nil
	}
}

func (n *Node) stopped() bool {
	select {
	case <-n.loopDone:
		return true
	default:
		return false
	}
}

// fatalIfDone returns the fatal error if the node has fully stopped; used
// to enrich ErrStopped without racing with the loop's shutdown.
func (n *Node) fatalIfDone() error { return n.Err() }
