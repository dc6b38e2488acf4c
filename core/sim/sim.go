// Package sim runs whole Rafty clusters deterministically: a seeded random
// schedule drives ticks, message delivery (with loss, duplication, delay and
// reordering), symmetric and asymmetric partitions, crash-restarts that lose
// everything not yet persisted, proposals, reads and log compaction with
// snapshot installation. After every step it checks Raft's safety
// properties (paper Figure 3):
//
//   - Election Safety: at most one leader per term.
//   - Log Matching: an (index, term) pair names one entry, with one
//     predecessor term, across every node's durable log.
//   - Leader Completeness: a new leader's log holds every entry any node
//     has applied.
//   - State Machine Safety: no two nodes apply different entries at one
//     index.
//   - Read linearizability: a ReadIndex answer (lease reads included) is
//     at least the highest index any leader had committed when the read
//     was requested: a read never returns a state older than a committed
//     write.
//   - Terms never go back: a node's durable term never decreases, and its
//     current term is never below it (paper §5.1; a wrapped term would).
//
// Lease seeds run every node with ReadLease on its own clock: each node
// ticks at its own rate, within the drift the configured
// MaxClockDriftTicks allows, with a random phase, so heartbeats arrive at
// any point of a follower's tick. Forged messages carrying terms or
// indexes past core.MaxTerm / core.MaxIndex are injected at random and must
// be refused; MsgTimeoutNow is sometimes held back for several election
// timeouts, so transfers are abandoned while the target may still campaign.
//
// After the faults stop and the network heals, it checks liveness: a
// leader is elected within a bounded number of ticks and a proposal
// commits on every node.
//
// With Options.Reconfig (TestSimulationReconfig) it also changes the
// membership at random — learners, promotions, replacements, removals,
// joint changes, new nodes that join with empty storage — and checks that
// no two configurations in use can have disjoint quorums, that IDs are
// never reused, that learners never count, and that every node agrees on
// the membership at every index; see reconfig.go.
//
// With Options.Async (half the seeds, chosen by AsyncSeed; -sim.async
// forces either mode) every node runs with core.Config.AsyncStorageWrites
// behind a model of the asynchronous driver (async.go): a persist queue
// whose batches are written (merged or not), fsynced, completed (their
// MessagesAfterPersist sent) and acknowledged in separately scheduled
// steps, an unsynced commit marker written before committed entries are
// handed to an applier that lags, and crashes between any two of those
// steps, either process crashes (the page cache keeps every write) or
// power losses (unsynced writes lost, or a prefix of them kept). It checks
// that applied never passes the written commit across restarts, that an
// acknowledged write is in every later leader's log, that
// MessagesAfterPersist vouch only for fsynced state, and that a leader
// counts its own log toward commitment only once acknowledged durable.
// A failure report names the mode.
//
// Everything is a function of Options.Seed, so a failure replays exactly.
package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// Options configure one simulation run.
type Options struct {
	Seed  uint64
	Nodes int
	// Steps is the number of faulty steps before healing.
	Steps int
	// Probabilities per step of each fault (the rest are ordinary
	// deliveries, ticks and Ready processing).
	DropRate      float64
	DupRate       float64
	PartitionRate float64
	CrashRate     float64
	ProposeRate   float64
	ReadRate      float64
	CompactRate   float64
	TransferRate  float64
	// MaxDelaySteps bounds how long a message may wait in the network.
	MaxDelaySteps int
	// LivenessTicks bounds the ticks after healing within which a leader
	// must be elected and a proposal committed.
	LivenessTicks int
	// ForgeRate is the probability per step of stepping a forged message
	// with a term or index past core.MaxTerm / core.MaxIndex into a random
	// node; it must be refused (ErrInvalidMessage) without effect.
	ForgeRate float64
	// SlowTimeoutNowRate is the probability that a MsgTimeoutNow is held
	// in the network for up to SlowTimeoutNowSteps steps: the transfer is
	// abandoned (and, with leases, reads go on) while the target may still
	// campaign.
	SlowTimeoutNowRate  float64
	SlowTimeoutNowSteps int
	// LeaseReads runs every node with ReadLease. Leases assume clock rates
	// within the configured drift, so ticks then follow simulated real
	// time: each node ticks every ClockPeriod units of its own (see
	// newClock), and a tick step advances real time by half a nominal
	// tick. Without LeaseReads one random node ticks per tick step.
	LeaseReads bool
	// TickStepUnits is how much real time one tick step advances in lease
	// seeds (a nominal tick is 1000 units). Small steps let messages
	// overtake ticks, so heartbeats land at any point of a tick.
	TickStepUnits int64
	// LeaderReadRate is the probability that a read goes to a node that
	// believes it leads (if any) rather than to a random node: lease reads
	// are a leader's.
	LeaderReadRate float64
	// MaxClockDriftTicks is the lease seeds' drift margin; node clocks
	// then drift almost as far as it allows (clockSpread).
	MaxClockDriftTicks int
	// IsolateLeaderRate is the probability that a one-node isolation
	// picks the leader: its followers' vote leases then lapse while it may
	// still hold a read lease, the moment the lease bound is tested.
	IsolateLeaderRate float64
	// ProcessAfterTickRate is the probability that a node's Ready is
	// processed right after its tick (lease seeds), so heartbeats leave
	// at the start of a tick, the tightest case for a lease.
	ProcessAfterTickRate float64
	// Tweak adjusts every node's core.Config.
	Tweak func(*core.Config)
	// TraceLen is how many recent events a failure report includes.
	TraceLen int
	// Reconfig turns on the reconfiguring workload (reconfig.go): random
	// membership changes proposed to the leader at ReconfigRate per step,
	// joiners for new members, crashes at JointCrashRate per step while a
	// joint configuration is active, and the membership checks.
	Reconfig       bool
	ReconfigRate   float64
	JointCrashRate float64
	// Async runs every node with core.Config.AsyncStorageWrites through
	// the model of the asynchronous driver in async.go: a persist queue
	// written, fsynced and acknowledged in separately scheduled steps, an
	// unsynced commit marker, an applier that lags the loop, and crashes
	// of two kinds (process, power loss) between any two of those steps.
	// DefaultOptions turns it on for half the seeds (asyncSeed).
	Async bool
	// MaxApplyingBytes is core.Config.MaxApplyingBytes in async seeds.
	MaxApplyingBytes uint64
	// MaxPersistQueueBytes bounds the persist queue of async seeds, as
	// driver.Config.MaxPersistQueueBytes does: no Ready is taken while
	// the batches handed out and not yet completed weigh this much (each
	// batch weighs its entries plus persistBatchOverhead).
	MaxPersistQueueBytes uint64
	// PowerLossRate is the share of async crashes that are power losses
	// (unsynced writes lost, in part or whole) rather than process
	// crashes (kill -9: the page cache keeps every write).
	PowerLossRate float64
	// PipelineCrashRate is the probability, in async seeds, of a crash
	// right after one step of a node's pipeline (Ready, write, fsync,
	// acknowledgement, marker, apply...): a crash point between every
	// pair of them.
	PipelineCrashRate float64
}

// DefaultOptions returns a demanding but fast schedule for seed.
func DefaultOptions(seed uint64) Options {
	o := Options{
		Seed: seed, Nodes: 3 + 2*int(seed%2), Steps: 1500,
		DropRate: 0.05, DupRate: 0.03, PartitionRate: 0.004, CrashRate: 0.003,
		ProposeRate: 0.08, ReadRate: 0.03, CompactRate: 0.005, TransferRate: 0.002,
		ForgeRate: 0.002, SlowTimeoutNowRate: 0.5, SlowTimeoutNowSteps: 300,
		MaxDelaySteps: 30, LivenessTicks: 400, TraceLen: 80,
		LeaseReads: seed%4 == 3, TickStepUnits: nominalTickUnits / 8,
		MaxClockDriftTicks: 1 + int(seed/4%3),
	}
	if seed%8 == 7 {
		// Lease stress: fast messages, slow ticks, frequent partitions
		// and leader reads, so that a leader cut off from its quorum
		// keeps answering reads while the others elect a new leader, and
		// a lease that lasted a tick too long would be caught.
		o.MaxDelaySteps, o.DropRate, o.DupRate = 4, 0.01, 0.01
		o.PartitionRate, o.ReadRate, o.LeaderReadRate, o.IsolateLeaderRate = 0.003, 0.1, 0.7, 0.8
		o.TickStepUnits, o.Steps, o.Nodes = nominalTickUnits/12, 4000, 3+2*int(seed/8%2)
		o.ProcessAfterTickRate = 0.9
	}
	o.SetAsync(AsyncSeed(seed))
	return o
}

// AsyncSeed reports whether DefaultOptions runs seed in async mode: half
// the seeds, by the top bit of a multiplicative hash, independent of the
// residues that choose the cluster size, the lease seeds and the
// reconfiguring cluster sizes.
func AsyncSeed(seed uint64) bool { return (seed*0x9e3779b97f4a7c15)>>63 == 1 }

// SetAsync switches o to async mode (with its parameters, functions of
// the seed) or back to sync mode. Sync mode leaves every other option as
// it was, so a sync seed replays the schedule it always had.
func (o *Options) SetAsync(on bool) {
	o.Async = on
	o.PowerLossRate, o.PipelineCrashRate, o.MaxApplyingBytes, o.MaxPersistQueueBytes = 0, 0, 0, 0
	if !on {
		return
	}
	o.PowerLossRate, o.PipelineCrashRate = 0.5, 0.002
	// Back-pressure at the limit some of the time: one batch at a time
	// in the applier (1 byte) or in the persist queue.
	o.MaxApplyingBytes = []uint64{1, 2 << 10, 64 << 10}[o.Seed/16%3]
	o.MaxPersistQueueBytes = []uint64{1, 4 << 10, 1 << 20}[o.Seed/48%3]
}

// ReconfigOptions returns the reconfiguring workload for seed: clusters of
// 1 to 7 initial voters under the faults of DefaultOptions, with random
// membership changes.
func ReconfigOptions(seed uint64) Options {
	o := DefaultOptions(seed)
	o.Nodes = 1 + int(seed%7)
	o.Steps = 3000
	o.Reconfig, o.ReconfigRate, o.JointCrashRate = true, 0.02, 0.02
	o.LivenessTicks = 800
	return o
}

// Result summarises a run.
type Result struct {
	Steps, Elections, Crashes, Partitions, Snapshots int
	Proposed, Applied, Reads                         int
	Delivered, Dropped, Duplicated                   int
	// Forged counts forged out-of-range messages refused; Transfers the
	// leadership transfers started; LeaseReads the reads a leader
	// answered from its lease (without a heartbeat acknowledgement).
	Forged, Transfers, LeaseReads int
	// Reconfiguring workload: changes the leader accepted and refused
	// (Refusals by reason), configurations committed (JointConfigs of
	// them joint), members removed, joiners started, crashes during a
	// joint phase, committed changes that did not apply (must be 0).
	ConfProposed, ConfRefused, Configs, JointConfigs    int
	Removals, Joiners, JointCrashes, InvalidConfChanges int
	// DeadReplaced counts members taken down for good (until healing)
	// when a replacement for them was added: the lost-volume case.
	DeadReplaced int
	// JoinerSnapshots counts snapshots installed by joiners;
	// ElectionsBehind the elections won under a configuration older than
	// the newest committed one (checked against it, see
	// checkElectionQuorum).
	JoinerSnapshots, ElectionsBehind int
	Refusals                         map[string]int
	// Async mode (async.go): runs in it; crashes that were power losses
	// and process crashes; commit markers written; persist writes
	// (MergedWrites of them carrying several Readies) and fsyncs;
	// unsynced Ready batches a power loss kept and lost; applies a power
	// loss undid; writes applied on a leader (acknowledged to a client).
	AsyncRuns, PowerLosses, ProcessCrashes, MarkerWrites int
	Writes, MergedWrites, Fsyncs                         int
	KeptUnsynced, LostUnsynced, LostApplies, AckedWrites int
}

type inflight struct {
	m         core.Message
	deliverAt int
}

type simNode struct {
	id      uint64
	n       *core.Node
	log     *memlog.Log
	applied []core.Entry // volatile state machine: lost on crash
	// appliedIndex is the last index applied (or restored from snapshot).
	appliedIndex uint64
	up           bool
	// pendingReads maps a read ID to what its answer must satisfy.
	pendingReads map[uint64]pendingRead
	// clock is this node's tick source in lease seeds; it survives
	// crashes (the hardware clock keeps running).
	clock clock
	// durableTerm is the highest term this node has persisted.
	durableTerm uint64
	// joiner: started with empty storage and no membership, to be caught
	// up by a leader (reconfig.go).
	joiner bool
	// mem is the membership at appliedIndex, tracked as a driver does;
	// memIndex the index of the entry that activated it (0: bootstrap).
	mem      core.Membership
	memIndex uint64
	// active is the configuration the core has active (Status) and
	// activeIdx its ConfIndex, read after New and after every Ready: the
	// core changes it only in New (from the snapshot and the log) and
	// inside Ready, so between Readies it is what the core counts votes
	// and acknowledgements with.
	active    core.Membership
	activeIdx uint64
	// lost: the node is being replaced because it died (reconfig.go); it
	// stays down until the healing phase, which restarts every node.
	lost bool
	// a is the asynchronous driver's state (Options.Async), nil in sync
	// mode. log is then the WAL as the page cache has it (what the node
	// reads); a.durable is what has been fsynced.
	a *asyncNode
}

// Simulated real time in lease seeds, in units: a nominal tick is
// nominalTickUnits long.
const (
	nominalTickUnits = 1000
	electionTicks    = 10
)

// clockSpread returns how far from nominalTickUnits a node's clock period
// may be, for drift margin D: the lease argument (core/reads.go) allows any
// two periods in the ratio (E-1-D)/(E-1), and the spread uses 95% of that,
// so clocks drift nearly as far as the configuration claims to tolerate.
// For E = 10: D = 1 gives periods in [945, 1055], D = 2 in [882, 1118].
func clockSpread(drift int) int64 {
	ratio := float64(electionTicks-1-drift) / float64(electionTicks-1)
	return int64(0.95 * nominalTickUnits * (1 - ratio) / (1 + ratio))
}

// clock ticks a node every period units from phase on.
type clock struct {
	period, next int64
}

// Sim is one simulation run.
type Sim struct {
	opts  Options
	rng   *rand.Rand
	nodes []*simNode // index id-1
	net   []inflight
	// cut[a][b]: messages from a to b are lost.
	cut   map[[2]uint64]bool
	step  int
	trace []string
	res   Result

	// Global knowledge for the safety checks.
	leaderOf    map[uint64]uint64         // term -> leader
	entryAt     map[[2]uint64]entryRecord // (index, term) -> entry
	appliedAt   map[uint64]core.Entry     // index -> entry applied there
	maxApplied  uint64
	nextReadID  uint64
	nextPropID  int
	snapHistory map[uint64]core.SnapshotMeta // node -> latest local snapshot
	// now is simulated real time (lease seeds).
	now int64
	// atOnce: the Ready being processed follows the request of read
	// atOnce on a leader directly (see read); 0 otherwise.
	atOnce uint64
	// maxCommitted is the highest index any leader has committed.
	maxCommitted uint64
	// commitTermOf: index -> term of the leader first seen committing it;
	// committedEntryTerm: index -> that entry's own term.
	commitTermOf       map[uint64]uint64
	committedEntryTerm map[uint64]uint64
	commitRecorded     map[uint64]uint64 // node -> commit index recorded

	// Membership (reconfig.go): the committed sequence of configurations
	// (index 0 is the bootstrap one), IDs ever removed, the last ID
	// given to a node, and vote grants per (candidate, term).
	confHist    []confRec
	everRemoved map[uint64]bool
	nextID      uint64
	grants      map[[2]uint64]map[uint64]bool

	// ackedWrites (async mode): index -> a write a leader applied, that
	// is, reported to its client (checkAckedWrites).
	ackedWrites map[uint64]ackedWrite
}

type entryRecord struct {
	data     string
	prevTerm uint64
}

// New builds a simulation.
func New(opts Options) (*Sim, error) {
	if opts.Nodes < 1 || opts.Nodes > 9 {
		return nil, fmt.Errorf("sim: Nodes must be in [1, 9], got %d", opts.Nodes)
	}
	if opts.Async && (opts.MaxApplyingBytes == 0 || opts.MaxPersistQueueBytes == 0) {
		return nil, errors.New("sim: async mode needs MaxApplyingBytes and MaxPersistQueueBytes (Options.SetAsync)")
	}
	s := &Sim{
		opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, 0x5eed)),
		cut: map[[2]uint64]bool{}, leaderOf: map[uint64]uint64{},
		entryAt: map[[2]uint64]entryRecord{}, appliedAt: map[uint64]core.Entry{},
		snapHistory: map[uint64]core.SnapshotMeta{}, commitTermOf: map[uint64]uint64{},
		committedEntryTerm: map[uint64]uint64{}, commitRecorded: map[uint64]uint64{},
		everRemoved: map[uint64]bool{}, grants: map[[2]uint64]map[uint64]bool{},
		nextID: uint64(opts.Nodes), ackedWrites: map[uint64]ackedWrite{},
	}
	s.confHist = []confRec{{index: 0, m: core.Membership{Voters: s.voters(), HighestID: uint64(opts.Nodes)}}}
	if opts.Async {
		s.res.AsyncRuns = 1
	}
	for i := 1; i <= opts.Nodes; i++ {
		sn := s.newNode(uint64(i), false)
		s.initClock(sn)
		if err := s.start(sn); err != nil {
			return nil, err
		}
		s.nodes = append(s.nodes, sn)
	}
	return s, nil
}

// initClock gives sn its clock. Clocks are fast or slow by the whole
// spread: the pairs that stress a lease most (a fast follower, a slow
// leader) are common.
func (s *Sim) initClock(sn *simNode) {
	spread := clockSpread(s.opts.MaxClockDriftTicks)
	sn.clock.period = nominalTickUnits + spread*int64(1-2*s.rng.IntN(2))
	sn.clock.next = s.now + s.rng.Int64N(sn.clock.period)
}

// allIDs lists every node ever created (members, learners, joiners and
// removed nodes, which keep running).
func (s *Sim) allIDs() []uint64 {
	ids := make([]uint64, len(s.nodes))
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	return ids
}

func (s *Sim) voters() []uint64 { return s.opts.nodeIDs() }

// nodeIDs lists node IDs 1..Nodes.
func (o Options) nodeIDs() []uint64 {
	ids := make([]uint64, o.Nodes)
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	return ids
}

func (s *Sim) config(sn *simNode) core.Config {
	id := sn.id
	cfg := core.DefaultConfig(id, s.voters()...)
	if sn.joiner {
		cfg.Membership = core.Membership{}
	}
	cfg.ElectionTicks = electionTicks
	cfg.HeartbeatTicks = 1
	cfg.MaxMsgBytes = 4 << 10
	cfg.MaxInflightMsgs = 8
	cfg.MaxInflightBytes = 64 << 10
	cfg.MaxCommittedBytesPerReady = 8 << 10
	cfg.RandomSeed = s.opts.Seed*1000003 + id + uint64(s.step)
	if s.opts.LeaseReads {
		cfg.ReadMode = core.ReadLease
		cfg.MaxClockDriftTicks = s.opts.MaxClockDriftTicks
	}
	if s.opts.Async {
		cfg.AsyncStorageWrites = true
		cfg.MaxApplyingBytes = s.opts.MaxApplyingBytes
	}
	if s.opts.Tweak != nil {
		s.opts.Tweak(&cfg)
	}
	return cfg
}

// start (re)creates a node from its durable log. The state machine is
// rebuilt from the latest snapshot, as a real one restores from its files.
func (s *Sim) start(sn *simNode) error {
	if sn.a != nil {
		return s.startAsync(sn)
	}
	_, snap, err := sn.log.InitialState()
	if err != nil {
		return err
	}
	sn.applied, sn.appliedIndex = nil, snap.Index
	sn.mem, sn.memIndex = core.Membership{}, 0
	if !sn.joiner {
		sn.mem = s.confHist[0].m.Clone()
	}
	if snap.Index > 0 {
		sn.applied = s.snapshotState(snap.Index)
		sn.mem = snap.Membership.Clone()
		if p := s.confPosAt(snap.Index); p >= 0 {
			sn.memIndex = s.confHist[p].index
		}
	}
	cfg := s.config(sn)
	cfg.Applied = snap.Index
	n, err := core.New(cfg, sn.log)
	if err != nil {
		return fmt.Errorf("restart node %d: %w", sn.id, err)
	}
	sn.n, sn.up = n, true
	sn.pendingReads = map[uint64]pendingRead{}
	// What New restored (from the snapshot and the log) is checked like
	// any activation.
	return s.checkActiveMembership(sn)
}

// snapshotState is the state machine contents through index, taken from
// the globally applied history (State Machine Safety makes it unique).
func (s *Sim) snapshotState(index uint64) []core.Entry {
	out := make([]core.Entry, 0, index)
	for i := uint64(1); i <= index; i++ {
		e, ok := s.appliedAt[i]
		if !ok {
			continue // compacted-away no-ops are not needed; see apply
		}
		out = append(out, e)
	}
	return out
}

func (s *Sim) logf(format string, args ...any) {
	line := fmt.Sprintf("%5d ", s.step) + fmt.Sprintf(format, args...)
	s.trace = append(s.trace, line)
	if max := s.opts.TraceLen; max > 0 && len(s.trace) > 4*max {
		s.trace = slices.Clone(s.trace[len(s.trace)-max:])
	}
}

// Failure is a safety or liveness violation with its replay information.
type Failure struct {
	Seed  uint64
	Step  int
	Err   error
	Trace []string
	// Reconfig: the run was of the reconfiguring workload.
	Reconfig bool
	// Async: the run drove the nodes in async mode (Options.Async).
	Async bool
}

func (f *Failure) Error() string {
	test := "TestSimulation$"
	if f.Reconfig {
		test = "TestSimulationReconfig$"
	}
	mode, flag := "sync", ""
	if f.Async {
		mode = "async"
	}
	if f.Async != AsyncSeed(f.Seed) {
		// The mode was forced: the replay must force it too.
		flag = " -sim.async=" + map[bool]string{true: "on", false: "off"}[f.Async]
	}
	return fmt.Sprintf("seed %d step %d (%s mode): %v\nreplay: go test ./core/sim -run '%s' -sim.seed=%d%s -v\nlast events:\n%s",
		f.Seed, f.Step, mode, f.Err, test, f.Seed, flag, strings.Join(f.Trace, "\n"))
}

// Unwrap returns the violation.
func (f *Failure) Unwrap() error { return f.Err }

func (s *Sim) failure(err error) error {
	tr := s.trace
	if max := s.opts.TraceLen; max > 0 && len(tr) > max {
		tr = tr[len(tr)-max:]
	}
	return &Failure{Seed: s.opts.Seed, Step: s.step, Err: err, Trace: slices.Clone(tr), Reconfig: s.opts.Reconfig, Async: s.opts.Async}
}

// Run executes the schedule and the liveness phase.
func (s *Sim) Run() (Result, error) {
	for s.step = 0; s.step < s.opts.Steps; s.step++ {
		if err := s.randomStep(); err != nil {
			return s.res, s.failure(err)
		}
	}
	if err := s.heal(); err != nil {
		return s.res, s.failure(err)
	}
	s.res.Steps = s.step
	return s.res, nil
}

func (s *Sim) chance(p float64) bool { return s.rng.Float64() < p }

func (s *Sim) randomNode() *simNode { return s.nodes[s.rng.IntN(len(s.nodes))] }

func (s *Sim) randomStep() error {
	o := s.opts
	switch {
	case s.chance(o.CrashRate):
		return s.crash(s.randomNode())
	case s.chance(o.PartitionRate):
		s.partition()
		return nil
	case s.chance(o.ProposeRate):
		return s.propose(s.randomNode())
	case s.chance(o.ReadRate):
		return s.read(s.readTarget())
	case s.chance(o.CompactRate):
		return s.compact(s.randomNode())
	case s.chance(o.TransferRate):
		return s.transfer()
	case s.chance(o.ForgeRate):
		return s.forge(s.randomNode())
	case o.Reconfig && s.chance(o.ReconfigRate):
		return s.reconfigure()
	case o.Reconfig && s.chance(o.JointCrashRate):
		return s.jointCrash()
	}
	switch s.rng.IntN(3) {
	case 0:
		sn := s.randomNode()
		if !sn.up && !sn.lost {
			return s.restart(sn)
		}
		if !sn.up {
			return nil
		}
		if s.opts.LeaseReads {
			return s.advanceClocks(max(1, s.opts.TickStepUnits))
		}
		s.logf("tick %d", sn.id)
		if err := s.wrap(sn, sn.n.Tick()); err != nil {
			return err
		}
		return s.observe(sn)
	case 1:
		if s.opts.Async {
			return s.asyncStep(s.randomNode())
		}
		return s.process(s.randomNode(), true)
	default:
		return s.deliverSome()
	}
}

// advanceClocks advances simulated real time by units and ticks every
// live node whose clock comes due, in time order.
func (s *Sim) advanceClocks(units int64) error {
	s.now += units
	for {
		var due *simNode
		for _, sn := range s.nodes {
			if sn.clock.next <= s.now && (due == nil || sn.clock.next < due.clock.next) {
				due = sn
			}
		}
		if due == nil {
			return nil
		}
		due.clock.next += due.clock.period
		if !due.up {
			continue
		}
		s.logf("tick %d", due.id)
		if err := s.wrap(due, due.n.Tick()); err != nil {
			return err
		}
		if err := s.observe(due); err != nil {
			return err
		}
		if s.chance(s.opts.ProcessAfterTickRate) {
			// As a driver does: the heartbeats of this tick leave now.
			if err := s.process(due, true); err != nil {
				return err
			}
		}
	}
}

func (s *Sim) wrap(sn *simNode, err error) error {
	if err != nil {
		return fmt.Errorf("node %d: %w", sn.id, err)
	}
	return nil
}

func (s *Sim) restart(sn *simNode) error {
	s.logf("restart %d", sn.id)
	sn.lost = false
	return s.start(sn)
}

// crash stops a node; everything not saved to its log is lost. It may
// crash mid-Ready: after sending Messages but before persisting.
func (s *Sim) crash(sn *simNode) error {
	if !sn.up {
		return nil
	}
	s.res.Crashes++
	if sn.n.HasReady() && s.chance(0.5) {
		rd, err := sn.n.Ready()
		if err != nil {
			return s.wrap(sn, err)
		}
		// Leaders may send appends before their own write (§10.2.1);
		// crash right after, losing the write.
		s.sendAll(rd.Messages)
		s.logf("crash %d mid-Ready (sent %d, lost %d entries)", sn.id, len(rd.Messages), len(rd.Entries))
	} else {
		s.logf("crash %d", sn.id)
	}
	if sn.a != nil {
		return s.crashAsync(sn)
	}
	sn.up, sn.n, sn.applied = false, nil, nil
	return nil
}

func (s *Sim) partition() {
	s.res.Partitions++
	s.cut = map[[2]uint64]bool{}
	ids := s.allIDs()
	switch s.rng.IntN(4) {
	case 0:
		s.logf("heal partitions")
	case 1: // split into two groups
		s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		k := 1 + s.rng.IntN(len(ids)-1+boolInt(len(ids) == 1))
		a, b := ids[:min(k, len(ids))], ids[min(k, len(ids)):]
		for _, x := range a {
			for _, y := range b {
				s.cut[[2]uint64{x, y}], s.cut[[2]uint64{y, x}] = true, true
			}
		}
		s.logf("partition %v | %v", a, b)
	case 2: // isolate one node, often the leader
		x := ids[s.rng.IntN(len(ids))]
		if s.chance(s.opts.IsolateLeaderRate) {
			for _, sn := range s.nodes {
				if sn.up && sn.n.Role() == core.RoleLeader {
					x = sn.id
				}
			}
		}
		for _, y := range ids {
			if y != x {
				s.cut[[2]uint64{x, y}], s.cut[[2]uint64{y, x}] = true, true
			}
		}
		s.logf("isolate %d", x)
	default: // asymmetric: some one-way links lost
		for _, x := range ids {
			for _, y := range ids {
				if x != y && s.chance(0.3) {
					s.cut[[2]uint64{x, y}] = true
				}
			}
		}
		s.logf("asymmetric cuts %v", keys(s.cut))
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func keys(m map[[2]uint64]bool) [][2]uint64 {
	var out [][2]uint64
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b [2]uint64) int {
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		return int(a[1]) - int(b[1])
	})
	return out
}

// maxCommit is the highest index known committed anywhere, now or before
// (a leader that committed an index and crashed still committed it).
func (s *Sim) maxCommit() uint64 {
	for _, sn := range s.nodes {
		if sn.up {
			s.maxCommitted = max(s.maxCommitted, sn.n.Status().Commit)
		}
	}
	return max(s.maxCommitted, s.maxApplied)
}

func (s *Sim) propose(sn *simNode) error {
	if !sn.up {
		return nil
	}
	s.nextPropID++
	data := fmt.Sprintf("s%d-p%d", s.opts.Seed, s.nextPropID)
	err := sn.n.Propose([]byte(data))
	s.logf("propose %d %q: %v", sn.id, data, err)
	if err == nil {
		s.res.Proposed++
		return nil
	}
	var nl *core.NotLeaderError
	if errors.Is(err, core.ErrNoLeader) || errors.As(err, &nl) || errors.Is(err, core.ErrTransferInProgress) ||
		errors.Is(err, core.ErrTooManyUncommitted) || errors.Is(err, core.ErrRemoved) {
		return nil
	}
	return s.wrap(sn, err)
}

// readTarget picks the node a read goes to (see Options.LeaderReadRate).
func (s *Sim) readTarget() *simNode {
	if s.chance(s.opts.LeaderReadRate) {
		var leaders []*simNode
		for _, sn := range s.nodes {
			if sn.up && sn.n.Role() == core.RoleLeader {
				leaders = append(leaders, sn)
			}
		}
		if len(leaders) > 0 {
			return leaders[s.rng.IntN(len(leaders))]
		}
	}
	return s.randomNode()
}

func (s *Sim) read(sn *simNode) error {
	if !sn.up {
		return nil
	}
	s.nextReadID++
	id := s.nextReadID
	need := s.maxCommit()
	err := sn.n.ReadIndex(id)
	s.logf("read %d id=%d need>=%d: %v", sn.id, id, need, err)
	if err == nil {
		pr := pendingRead{need: need}
		if sn.n.Role() != core.RoleLeader {
			sn.pendingReads[id] = pr
			return nil
		}
		pr.leaderTerm = sn.n.Term()
		pr.newerLeader = s.newerLeader(pr.leaderTerm)
		sn.pendingReads[id] = pr
		// Process the leader's Ready at once, as a driver does: if this
		// read is answered in it, it was answered without any
		// confirmation, from the lease, which checkReads holds to the
		// lease argument. (Older reads answered in the same Ready were
		// confirmed by heartbeat acknowledgements stepped before.)
		s.atOnce = id
		err := s.process(sn, false)
		s.atOnce = 0
		return err
	}
	if errors.Is(err, core.ErrNoLeader) || errors.Is(err, core.ErrTooManyPendingReads) || errors.Is(err, core.ErrRemoved) {
		return nil
	}
	return s.wrap(sn, err)
}

// compact takes a local snapshot at the applied index and discards most of
// the log below it, keeping a margin, as the compaction policy does.
func (s *Sim) compact(sn *simNode) error {
	if !sn.up {
		return nil
	}
	idx := sn.appliedIndex
	first, _ := sn.log.FirstIndex()
	if idx < first+5 {
		return nil
	}
	term, err := sn.log.Term(idx)
	if err != nil {
		return nil // not yet durable locally
	}
	// The membership of a snapshot is the one at its index, which the
	// simulator tracks as a driver does (reconfig.go).
	meta := core.SnapshotMeta{Index: idx, Term: term, Membership: sn.mem.Clone()}
	sn.log.SetSnapshot(meta)
	s.snapHistory[sn.id] = meta
	keep := uint64(s.rng.IntN(10))
	if err := sn.log.Compact(idx - min(keep, idx-first)); err != nil {
		return s.wrap(sn, err)
	}
	if sn.a != nil {
		if err := s.compactAsync(sn, meta, idx-min(keep, idx-first)); err != nil {
			return err
		}
	}
	s.logf("compact %d to %d (snapshot %d/%d)", sn.id, idx-min(keep, idx-first), term, idx)
	return nil
}

func (s *Sim) transfer() error {
	for _, sn := range s.nodes {
		if sn.up && sn.n.Status().Role == core.RoleLeader {
			to := s.allIDs()[s.rng.IntN(len(s.nodes))]
			err := sn.n.TransferLeadership(to)
			s.logf("transfer %d -> %d: %v", sn.id, to, err)
			if err == nil && to != sn.id {
				s.res.Transfers++
			}
			return nil
		}
	}
	return nil
}

// forge steps into sn a message from another member whose term or index
// no honest peer can send (past core.MaxTerm or core.MaxIndex): issue 13
// item 4, where one such term wrapped a node to term 0 and a second leader
// was elected in a term that had one. It must be refused; the safety
// checks then confirm nothing changed.
func (s *Sim) forge(sn *simNode) error {
	if !sn.up || len(s.nodes) < 2 {
		return nil
	}
	from := sn.id
	for from == sn.id {
		from = uint64(1 + s.rng.IntN(len(s.nodes)))
	}
	types := []core.MessageType{core.MsgApp, core.MsgAppResp, core.MsgHeartbeat, core.MsgHeartbeatResp,
		core.MsgVote, core.MsgVoteResp, core.MsgPreVote, core.MsgPreVoteResp, core.MsgTimeoutNow, core.MsgSnap}
	huge := func() uint64 { return core.MaxTerm + 1 + s.rng.Uint64N(math.MaxUint64-core.MaxTerm) }
	m := core.Message{Type: types[s.rng.IntN(len(types))], From: from, To: sn.id, Term: sn.n.Term() + 1}
	if m.Type == core.MsgSnap {
		m.Snapshot = &core.SnapshotMeta{Index: 1, Term: 1, Membership: core.Membership{Voters: s.voters()}}
	}
	switch s.rng.IntN(4) {
	case 0:
		m.Term = math.MaxUint64
	case 1:
		m.Term = huge()
	case 2:
		m.Index, m.LogTerm = math.MaxUint64, 1
		if m.Type == core.MsgApp {
			m.Entries = []core.Entry{{Index: 0, Term: m.Term}} // MaxUint64+1 wraps to 0
		}
	default:
		m.Commit = huge()
	}
	before := sn.n.Term()
	err := sn.n.Step(m)
	s.logf("forge %v: %v", m, err)
	if !errors.Is(err, core.ErrInvalidMessage) {
		return fmt.Errorf("node %d accepted forged %v (term %d -> %d): %v", sn.id, m, before, sn.n.Term(), err)
	}
	s.res.Forged++
	return s.observe(sn)
}

// sendAll puts messages on the network, applying loss and duplication.
func (s *Sim) sendAll(msgs []core.Message) {
	for _, m := range msgs {
		if s.cut[[2]uint64{m.From, m.To}] || s.chance(s.opts.DropRate) {
			s.res.Dropped++
			s.dropped(m)
			continue
		}
		delay := 0
		if s.opts.MaxDelaySteps > 0 {
			delay = s.rng.IntN(s.opts.MaxDelaySteps)
		}
		if m.Type == core.MsgTimeoutNow && s.opts.SlowTimeoutNowSteps > 0 && s.chance(s.opts.SlowTimeoutNowRate) {
			delay = s.rng.IntN(s.opts.SlowTimeoutNowSteps)
			s.logf("hold %v for %d steps", m, delay)
		}
		s.net = append(s.net, inflight{m: m, deliverAt: s.step + delay})
		// A stream transport never duplicates a forwarded proposal;
		// everything else may arrive twice.
		if m.Type != core.MsgProp && s.chance(s.opts.DupRate) {
			s.res.Duplicated++
			s.net = append(s.net, inflight{m: m, deliverAt: s.step + delay + s.rng.IntN(5)})
		}
	}
}

// dropped tells a leader its snapshot message was lost, as a transport
// reports a failed snapshot stream.
func (s *Sim) dropped(m core.Message) {
	if m.Type != core.MsgSnap {
		return
	}
	if from := s.node(m.From); from != nil && from.up {
		from.n.ReportSnapshot(m.To, errors.New("snapshot stream lost"))
	}
}

// deliverSome delivers one message that is due, chosen at random: this is
// where reordering comes from.
func (s *Sim) deliverSome() error {
	var due []int
	for i, f := range s.net {
		if f.deliverAt <= s.step {
			due = append(due, i)
		}
	}
	if len(due) == 0 {
		return nil
	}
	i := due[s.rng.IntN(len(due))]
	f := s.net[i]
	s.net = append(s.net[:i], s.net[i+1:]...)
	return s.deliver(f.m)
}

func (s *Sim) deliver(m core.Message) error {
	to := s.node(m.To)
	if to == nil || !to.up || s.cut[[2]uint64{m.From, m.To}] {
		s.res.Dropped++
		s.dropped(m)
		return nil
	}
	s.res.Delivered++
	s.logf("deliver %v", m)
	if m.Type == core.MsgVoteResp && !m.Reject {
		// Grants a candidate receives (checkElectionQuorum).
		k := [2]uint64{m.To, m.Term}
		if s.grants[k] == nil {
			s.grants[k] = map[uint64]bool{}
		}
		s.grants[k][m.From] = true
	}
	if err := to.n.Step(m); err != nil {
		if errors.Is(err, core.ErrInvalidMessage) {
			// Duplicated or reordered messages from an old term can be
			// refused; that must never corrupt state, which the checks
			// verify. A refusal of a fresh message is a bug.
			s.logf("  refused: %v", err)
			return nil
		}
		return s.wrap(to, err)
	}
	if err := s.observe(to); err != nil {
		return err
	}
	if m.Type == core.MsgSnap {
		// The snapshot data travels with the message in this simulation;
		// the sender learns the outcome once the receiver processes it.
		if err := s.process(to, false); err != nil {
			return err
		}
		if from := s.node(m.From); from != nil && from.up {
			from.n.ReportSnapshot(m.To, nil)
		}
	}
	return nil
}

// process runs one node's Ready through the persistence contract and
// checks the invariants. mayCrash allows a crash between persisting and
// the messages that depend on it.
func (s *Sim) process(sn *simNode, mayCrash bool) error {
	if sn.a != nil {
		return s.loopReady(sn, mayCrash)
	}
	if !sn.up || !sn.n.HasReady() {
		return nil
	}
	rd, err := sn.n.Ready()
	if err != nil {
		return s.wrap(sn, err)
	}
	s.sendAll(rd.Messages)
	if rd.Snapshot != nil {
		if err := sn.log.InstallSnapshot(*rd.Snapshot); err != nil {
			return s.wrap(sn, err)
		}
		sn.applied, sn.appliedIndex = s.snapshotState(rd.Snapshot.Index), rd.Snapshot.Index
		s.res.Snapshots++
		s.logf("install snapshot %d at %d/%d", sn.id, rd.Snapshot.Term, rd.Snapshot.Index)
		if err := s.checkInstalledMembership(sn, *rd.Snapshot); err != nil {
			return err
		}
		if sn.joiner {
			s.res.JoinerSnapshots++
		}
	}
	if err := s.checkAndRecordEntries(sn, rd.Entries); err != nil {
		return err
	}
	if err := s.recordCommit(sn, &rd); err != nil {
		return err
	}
	// The configuration that counted the acknowledgements behind this
	// commit is the one active before this Ready's committed entries.
	activeBefore, activeBeforeIdx := sn.active, sn.activeIdx
	if err := s.checkDurableTerm(sn, rd.HardState); err != nil {
		return err
	}
	if err := sn.log.Save(rd.HardState, rd.Entries); err != nil {
		return s.wrap(sn, err)
	}
	if !rd.HardState.IsZero() && sn.n.Role() == core.RoleLeader && rd.HardState.Term == sn.n.Term() {
		if err := s.checkCommitQuorum(sn, activeBefore, activeBeforeIdx, rd.HardState.Commit); err != nil {
			return err
		}
	}
	if mayCrash && s.chance(s.opts.CrashRate) {
		s.logf("crash %d after persist, before acks", sn.id)
		s.res.Crashes++
		sn.up, sn.n, sn.applied = false, nil, nil
		return nil
	}
	s.sendAll(rd.MessagesAfterPersist)
	if err := s.apply(sn, rd.CommittedEntries); err != nil {
		return err
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
	// A lone voter becomes leader inside the Advance that made its vote
	// durable: check the election under the configuration active now.
	return s.observe(sn)
}

// heal removes every fault and checks liveness: within LivenessTicks a
// leader exists and a new proposal is applied on every node.
func (s *Sim) heal() error {
	s.logf("heal: faults stop")
	s.cut = map[[2]uint64]bool{}
	for _, sn := range s.nodes {
		if !sn.up {
			if err := s.restart(sn); err != nil {
				return err
			}
		}
	}
	probe := fmt.Sprintf("s%d-liveness", s.opts.Seed)
	// The probe goes to the leader of the highest term, and again to a
	// new one if leadership moves before it is applied: a stale leader
	// may accept it and be deposed (or removed) before committing it.
	var leader, leaderTerm uint64
	proposed := false
	for tick := 0; tick < s.opts.LivenessTicks; tick++ {
		s.step++
		for _, sn := range s.nodes {
			if err := s.wrap(sn, sn.n.Tick()); err != nil {
				return err
			}
			if err := s.observe(sn); err != nil {
				return err
			}
		}
		if err := s.drain(); err != nil {
			return err
		}
		if ld := s.currentLeader(); ld != nil && (ld.id != leader || ld.n.Term() != leaderTerm) {
			if err := ld.n.Propose([]byte(probe)); err == nil {
				proposed, leader, leaderTerm = true, ld.id, ld.n.Term()
				s.logf("liveness: proposed on leader %d at tick %d", ld.id, tick)
				continue
			}
		}
		if proposed && s.allApplied(probe, leader) {
			return nil
		}
	}
	if !proposed {
		return fmt.Errorf("liveness: no leader accepted a proposal within %d ticks after healing\n%s", s.opts.LivenessTicks, s.describe())
	}
	return fmt.Errorf("liveness: proposal not applied on every member within %d ticks after healing\n%s", s.opts.LivenessTicks, s.describe())
}

// drain processes and delivers (without faults) until quiet.
func (s *Sim) drain() error {
	for range 1000 {
		busy := false
		for _, sn := range s.nodes {
			if sn.a != nil {
				b, err := s.flushAsync(sn)
				if err != nil {
					return err
				}
				busy = busy || b
				continue
			}
			for sn.n.HasReady() {
				busy = true
				if err := s.process(sn, false); err != nil {
					return err
				}
			}
		}
		if len(s.net) > 0 {
			busy = true
			net := s.net
			s.net = nil
			for _, f := range net {
				if err := s.deliver(f.m); err != nil {
					return err
				}
			}
		}
		if !busy {
			return nil
		}
	}
	return errors.New("drain: cluster did not quiesce")
}

// describe renders every node's state, for failure reports.
func (s *Sim) describe() string {
	var b strings.Builder
	for _, sn := range s.nodes {
		if !sn.up {
			fmt.Fprintf(&b, "  node %d down\n", sn.id)
			continue
		}
		st := sn.n.Status()
		first, _ := sn.log.FirstIndex()
		_, snap, _ := sn.log.InitialState()
		fmt.Fprintf(&b, "  node %d %s term=%d lead=%d commit=%d applied=%d last=%d first=%d snap=%d\n",
			sn.id, st.Role, st.Term, st.Leader, st.Commit, st.Applied, st.LastIndex, first, snap.Index)
		if s.opts.Reconfig {
			fmt.Fprintf(&b, "    membership %s (applied, from %d), removed=%v joiner=%v\n",
				fmtMembership(sn.mem), sn.memIndex, st.Removed, sn.joiner)
			fmt.Fprintf(&b, "    active %s (from %d)\n", fmtMembership(st.Membership), st.ConfIndex)
		}
		if sn.a != nil {
			b.WriteString(s.describeAsync(sn))
		}
		for _, id := range s.allIDs() {
			if pr, ok := st.Progress[id]; ok {
				fmt.Fprintf(&b, "    progress %d: %s active=%v probeSent=%v pendingSnap=%d\n",
					id, pr.String(), pr.RecentActive, pr.ProbeSent, pr.PendingSnapshot)
			}
		}
	}
	if s.opts.Reconfig {
		b.WriteString(s.describeMembership())
	}
	return b.String()
}

// allApplied reports whether every node has applied data; with
// membership changes, every member of the configuration now active on the
// node that accepted the proposal (removed nodes and joiners never added
// need not).
func (s *Sim) allApplied(data string, leader uint64) bool {
	nodes := s.nodes
	if s.opts.Reconfig {
		nodes = nil
		ld := s.node(leader)
		if ld == nil || ld.active.IsEmpty() {
			return false
		}
		for _, id := range ld.active.IDs() {
			if sn := s.node(id); sn != nil {
				nodes = append(nodes, sn)
			}
		}
	}
	for _, sn := range nodes {
		found := false
		for i := len(sn.applied) - 1; i >= 0; i-- {
			if string(sn.applied[i].Data) == data {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
