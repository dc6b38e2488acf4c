package core

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"

	"github.com/rafty-db/rafty/core/quorum"
)

// Node is one Raft participant as a pure state machine. It is not safe for
// concurrent use: exactly one goroutine (the driver) calls its methods.
//
// Inputs: Tick, Step, Propose, ReadIndex, TransferLeadership,
// ReportUnreachable, ReportSnapshot. Output: Ready, acknowledged by
// Advance (and, with Config.AsyncStorageWrites, by AckPersisted and
// AckApplied). See Ready for the contract.
type Node struct {
	cfg Config
	id  uint64
	log *raftLog
	rng *rand.Rand

	term uint64
	vote uint64
	role Role
	lead uint64

	membership Membership
	voters     quorum.JointConfig
	progress   map[uint64]*Progress // every member, self included if a member
	// self is this node's progress; outside progress while this node is
	// not a member (a joiner, or a leader handing over after its removal).
	self *Progress
	// confIndex is the index of the entry (or snapshot) that made
	// membership active. confScanned is the last index whose
	// configuration entry, if it held one, has been activated or skipped:
	// configurations activate as committed entries are handed out in
	// Ready (membership.go), and everything at or below confScanned has
	// been. pendingConfIndex (leader) is the index of the latest
	// configuration entry this leader appended, or of its election no-op:
	// the next change waits until confScanned reaches it.
	confIndex        uint64
	confScanned      uint64
	pendingConfIndex uint64
	// confCheckedTo: committed entries in (confScanned, confCheckedTo]
	// hold no configuration entry (committedConfPending's memo).
	confCheckedTo uint64
	// Leader only (commitCap): confSeenTo is how far the log above
	// confScanned was scanned for configuration entries, and pendingConfs
	// the indexes of those found and not yet activated, ascending. Reset
	// when leadership starts; a leader never truncates its own log, so
	// they only grow until activation prunes them.
	confSeenTo   uint64
	pendingConfs []uint64
	// peers lists every other member, sorted: output order must never
	// depend on map iteration, or runs would not replay from a seed.
	peers []uint64
	votes map[uint64]bool
	// selfWinTerm: this candidate's own vote wins the election of this
	// term alone (a single voter); it becomes leader once that vote is
	// durable (selfVoteDurable). Zero otherwise.
	selfWinTerm uint64

	// ticks is a monotonic tick counter: the core's only notion of time.
	ticks           uint64
	electionElapsed int
	// voteLeaseUntil is the follower's side of the leader lease (thesis
	// §4.2.3, §6.4.1): having heard from a leader at tick f, this node
	// ignores vote and pre-vote requests until tick f + ElectionTicks,
	// whatever happens to its term meanwhile, because that leader may
	// count the acknowledgement toward a read lease (reads.go has the
	// argument). A restarted node may have acknowledged a leader just
	// before it stopped and cannot know, so it starts with a lease of one
	// election timeout.
	voteLeaseUntil            uint64
	heartbeatElapsed          int
	randomizedElectionTimeout int

	leadTransferee uint64
	// uncommitted tracks bytes the leader appended but has not committed,
	// as (last index, bytes) per proposal batch, to enforce
	// MaxUncommittedBytes without reading entries back.
	uncommittedBytes uint64
	uncommitted      []uncommittedBatch

	reads readIndexQueue
	// bcastPending: new entries or a new commit index await broadcast.
	// Broadcasting once per Ready instead of once per proposal or
	// acknowledgement merges many appends into one message per follower;
	// nothing observes the difference, as messages only leave via Ready.
	bcastPending bool

	msgs              []Message
	msgsAfterPersist  []Message
	readStates        []ReadState
	rejectedProposals []RejectedProposal

	prevSoft SoftState
	prevHard HardState
	// outstanding: a Ready was handed out and not yet advanced; mark
	// records what it contained.
	outstanding bool
	mark        readyMark
	// persistQ (AsyncStorageWrites) holds the persist batches handed out
	// and not yet acknowledged, oldest first: AckPersisted must name the
	// first. One element per Ready with a non-zero Persist (entries, a
	// snapshot or our own vote); the driver bounds how many Readies it
	// takes ahead of its writer.
	persistQ []persistBatch
	// commitHanded (AsyncStorageWrites) is the highest commit index the
	// driver was asked to write (Ready.CommitToWrite), or the durable
	// commit this node started from. Invariant: every committed entry
	// handed out has an index <= a CommitToWrite handed out in the same
	// or an earlier Ready, or <= the commit index the node started from
	// (max of the stored commit and Config.Applied). A driver that writes
	// CommitToWrite before applying thus never lets the state machine
	// pass the commit index it would find after a crash.
	commitHanded uint64

	counters Counters
	// err latches the first storage failure; the node is unusable after.
	err error
}

type uncommittedBatch struct {
	last  uint64
	bytes uint64
}

// Counters count inputs the node refused, for operators. They never
// affect the protocol.
type Counters struct {
	// InvalidMessages were malformed (unknown type, impossible fields).
	InvalidMessages uint64
	// UnknownSenders came from a node outside the configuration.
	UnknownSenders uint64
	// StaleMessages carried a lower term and were ignored.
	StaleMessages uint64
	// IgnoredVotes were vote requests ignored under a leader lease
	// (thesis §4.2.3).
	IgnoredVotes uint64
	// OutOfRangeMessages carried a term or index beyond MaxTerm or
	// MaxIndex: forged or corrupt (see MaxTerm). Any non-zero value
	// deserves an operator's attention.
	OutOfRangeMessages uint64
	// RefusedCampaigns were elections this node did not start because its
	// term or log index is at MaxTerm or MaxIndex (see MaxTerm).
	RefusedCampaigns uint64
	// InvalidConfChanges are committed configuration entries that did not
	// decode or apply and were skipped (only a faulty leader commits one;
	// every replica skips it alike).
	InvalidConfChanges uint64
	// RemovedSenders are messages dropped because their sender was
	// removed from the cluster (Membership.WasRemoved).
	RemovedSenders uint64
}

// New restores a node from the durable state in log and the settings in
// cfg. Where the membership comes from:
//   - Empty storage (no hard state, entries or snapshot) and a non-empty
//     cfg.Membership: bootstrap. The node appends entry 1 (term 1,
//     EntryConfChange, ConfChange{Replace: &membership} in canonical
//     form), commits it and activates it at once. Every node bootstrapped
//     with the same membership writes identical bytes, so log matching
//     holds across them; after this first start the persisted entry, not
//     the configuration, is the truth.
//   - Empty storage and an empty cfg.Membership: a joiner. It has no
//     membership, never campaigns, and becomes whatever the snapshot or
//     log a leader sends it says.
//   - Otherwise: the snapshot's membership, then every configuration
//     entry in (snapshot index, cfg.Applied] read back from log: the
//     configuration at the applied index, as the driver tracks it.
//     Configuration entries after it activate when handed out again; until
//     then the node does not campaign (committedConfPending). Storage written
//     before the bootstrap entry existed (no snapshot membership, entry 1
//     not a configuration entry) falls back to cfg.Membership; a joiner
//     that has not yet committed what it received stays a joiner.
func New(cfg Config, log LogReader) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hs, snap, err := log.InitialState()
	if err != nil {
		return nil, &StorageError{Err: err}
	}
	rl, err := newRaftLog(log, snap, cfg.MaxCommittedBytesPerReady)
	if err != nil {
		return nil, err
	}
	fresh := hs.IsZero() && snap.IsEmpty() && rl.lastIndex() == 0
	if !snap.Membership.IsEmpty() {
		if err := snap.Membership.validate(); err != nil {
			return nil, &StorageError{Err: fmt.Errorf("snapshot %d membership: %w", snap.Index, err)}
		}
	}
	if err := checkPersistedRange(hs, rl.lastIndex()); err != nil {
		return nil, &StorageError{Err: err}
	}
	if hs.Commit > rl.lastIndex() {
		return nil, &StorageError{Err: fmt.Errorf("hard state commit %d is past the last log index %d", hs.Commit, rl.lastIndex())}
	}
	if cfg.Applied > rl.lastIndex() {
		return nil, fmt.Errorf("config Applied %d is past the last log index %d: state machine and log disagree", cfg.Applied, rl.lastIndex())
	}
	n := &Node{
		cfg:  cfg,
		id:   cfg.ID,
		log:  rl,
		rng:  rand.New(rand.NewPCG(cfg.RandomSeed, cfg.ID)),
		term: hs.Term,
		vote: hs.Vote,
	}
	rl.async, rl.maxApplyingBytes = cfg.AsyncStorageWrites, cfg.MaxApplyingBytes
	// Entries the state machine applied were committed, whatever the
	// persisted commit says.
	rl.commitTo(max(hs.Commit, cfg.Applied))
	if cfg.Applied > rl.applied {
		rl.applied, rl.applying = cfg.Applied, cfg.Applied
	}
	// Before bootstrap commits entry 1: that commit is not written yet,
	// so handing out entry 1 asks for it (CommitToWrite).
	n.commitHanded = rl.committed
	n.prevHard = HardState{Term: n.term, Vote: n.vote, Commit: rl.committed}
	switch {
	case fresh && !cfg.Membership.IsEmpty():
		n.bootstrap(cfg.Membership)
	case fresh:
		// A joiner: no membership until a leader sends one.
		n.setMembership(Membership{})
	default:
		m, err := n.restoreMembership(snap)
		if err != nil {
			return nil, err
		}
		if m.IsEmpty() {
			legacy, err := n.predatesBootstrapEntry(snap)
			if err != nil {
				return nil, err
			}
			if legacy {
				m, n.confIndex = cfg.Membership.canonical(), 0
			}
		}
		n.setMembership(m)
	}
	n.becomeFollower(n.term, None)
	if !fresh {
		n.voteLeaseUntil = uint64(cfg.ElectionTicks)
	}
	n.prevSoft = n.softState()
	return n, nil
}

// bootstrap appends and commits entry 1, the configuration m, in term 1
// (see New). The first Ready persists it and hands it out like any
// committed entry; it is active from now on.
func (n *Node) bootstrap(m Membership) {
	cc := ConfChange{Replace: new(Membership)}
	*cc.Replace = m.canonical()
	n.term = 1
	n.log.append(Entry{Index: 1, Term: 1, Type: EntryConfChange, Data: cc.Marshal()})
	n.log.commitTo(1)
	n.prevHard = HardState{}
	// Config.Validate checked m, so Apply cannot fail; if it somehow
	// did, the node would be a joiner rather than panic.
	active, err := Membership{}.Apply(cc)
	if err != nil {
		n.counters.InvalidConfChanges++
		active = Membership{}
	}
	n.confIndex, n.confScanned = 1, 1
	n.setMembership(active)
}

// restoreMembership computes the configuration active at the applied index
// (see MembershipAt).
func (n *Node) restoreMembership(snap SnapshotMeta) (Membership, error) {
	applied := n.log.applied
	n.confScanned = max(applied, snap.Index)
	m, confIndex, skipped, err := membershipAt(n.log.stable, snap, applied, n.cfg.MaxCommittedBytesPerReady)
	n.counters.InvalidConfChanges += skipped
	n.confIndex = confIndex
	return m, err
}

// MembershipAt returns the configuration in force at index in the log that
// r holds, and the index of the entry (or snapshot) that made it so: the
// snapshot's membership, then every configuration entry after the
// snapshot up to index, applied with Membership.Apply (entries that do not
// decode or apply are skipped, as every replica skipped them). It reads at
// most maxBytes of entries at a time. This is what New restores at
// Config.Applied; a driver can ask for the configuration at the persisted
// commit index to compare it with its flags before anything is applied.
// The result is empty for storage with no configuration (a joiner, or data
// written before the bootstrap entry existed). Errors: index below the
// snapshot, and storage failures (*StorageError).
func MembershipAt(r LogReader, index, maxBytes uint64) (Membership, uint64, error) {
	_, snap, err := r.InitialState()
	if err != nil {
		return Membership{}, 0, &StorageError{Err: err}
	}
	m, confIndex, _, err := membershipAt(r, snap, index, maxBytes)
	return m, confIndex, err
}

func membershipAt(r LogReader, snap SnapshotMeta, index, maxBytes uint64) (m Membership, confIndex, skipped uint64, err error) {
	if index < snap.Index {
		return Membership{}, 0, 0, fmt.Errorf("raft: configuration at %d asked, the log starts after snapshot %d", index, snap.Index)
	}
	m = snap.Membership.Clone()
	if !m.IsEmpty() {
		confIndex = snap.Index
	}
	first, err := r.FirstIndex()
	if err != nil {
		return Membership{}, 0, 0, &StorageError{Err: err}
	}
	last, err := r.LastIndex()
	if err != nil {
		return Membership{}, 0, 0, &StorageError{Err: err}
	}
	hi := min(index, last)
	for lo := max(first, snap.Index+1); lo <= hi; {
		ents, err := r.Entries(lo, hi+1, max(maxBytes, 1))
		if err == nil && (len(ents) == 0 || ents[0].Index != lo) {
			err = fmt.Errorf("storage returned %d entries not starting at %d", len(ents), lo)
		}
		if err != nil {
			return Membership{}, 0, 0, &StorageError{Err: fmt.Errorf("reading configuration entries from %d: %w", lo, err)}
		}
		for i := range ents {
			if ents[i].Type != EntryConfChange {
				continue
			}
			if next, err := applyConfEntry(m, &ents[i]); err != nil {
				skipped++
			} else {
				m, confIndex = next, ents[i].Index
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return m, confIndex, skipped, nil
}

// predatesBootstrapEntry reports whether storage was written before
// configurations lived in the log: no snapshot membership and an entry 1
// that is not a configuration entry. Storage written since always starts
// with the bootstrap entry or a snapshot carrying a membership; a joiner
// that has not yet committed what it received has neither and must stay a
// joiner whatever Config.Membership says.
func (n *Node) predatesBootstrapEntry(snap SnapshotMeta) (bool, error) {
	if !snap.Membership.IsEmpty() {
		return false, nil
	}
	if snap.Index > 0 {
		return true, nil // a snapshot from before memberships were stored
	}
	if n.log.lastIndex() == 0 {
		// Nothing but a hard state: a joiner that voted, or a legacy
		// node that never received an entry. Only a joiner's driver
		// passes no membership, so trust the configuration here.
		return true, nil
	}
	ents, err := n.log.entries(1, 2, 1)
	if err == nil && len(ents) == 0 {
		err = errors.New("no entry returned")
	}
	if err != nil {
		return false, &StorageError{Err: fmt.Errorf("reading entry 1: %w", err)}
	}
	return ents[0].Type != EntryConfChange, nil
}

// applyConfEntry decodes a configuration entry and applies it to m.
func applyConfEntry(m Membership, e *Entry) (Membership, error) {
	cc, err := UnmarshalConfChange(e.Data)
	if err != nil {
		return m, err
	}
	return m.Apply(cc)
}

// setMembership installs m and rebuilds progress for its members: members
// kept keep their progress, new ones start probing after the last index,
// removed ones are dropped.
func (n *Node) setMembership(m Membership) {
	n.membership = m.Clone()
	n.voters = quorum.JointConfig{
		Incoming: quorum.NewMajorityConfig(m.Voters...),
		Outgoing: quorum.NewMajorityConfig(m.OutgoingVoters...),
	}
	old := n.progress
	n.progress = make(map[uint64]*Progress, len(m.Voters)+len(m.Learners))
	for _, id := range m.IDs() {
		pr := old[id]
		if pr == nil {
			pr = &Progress{Next: n.log.lastIndex() + 1, inflights: newInflights(n.cfg.MaxInflightMsgs, n.cfg.MaxInflightBytes)}
		}
		pr.IsLearner = !n.voters.Contains(id)
		n.progress[id] = pr
	}
	if pr := n.progress[n.id]; pr != nil {
		n.self = pr
	} else if n.self == nil {
		// Not a member (a joiner). A leader removed by the change it
		// committed keeps its old progress, outside the map, for its
		// own bookkeeping while it hands over (maybeHandOver).
		n.self = &Progress{Next: n.log.lastIndex() + 1, inflights: newInflights(n.cfg.MaxInflightMsgs, n.cfg.MaxInflightBytes)}
	}
	n.peers = n.peers[:0]
	for _, id := range m.IDs() {
		if id != n.id {
			n.peers = append(n.peers, id)
		}
	}
	if n.role == RoleLeader {
		// New members need their first probe. A read lease rests on
		// the vote leases of a quorum of the configuration that
		// confirmed it; after a change, confirm again under the new one.
		n.bcastPending = true
		n.reads.leaseUntil = 0
		// A member removed here gets no more messages from us, so it
		// might never learn that the entry removing it committed. Tell
		// it the commit index it is known to hold: if that covers the
		// removal it applies it and goes passive (Status.Removed); if
		// not, its messages are refused as a removed sender's.
		for _, id := range slices.Sorted(maps.Keys(old)) {
			if pr := old[id]; id != n.id && n.progress[id] == nil {
				n.send(Message{Type: MsgHeartbeat, To: id, Commit: min(pr.Match, n.log.committed)})
			}
		}
	}
}

// promotable reports whether this node may campaign.
func (n *Node) promotable() bool {
	return n.voters.Contains(n.id) && n.log.pendingSnap == nil
}

// AckedIndex lets the quorum package read the leader's progress: a
// follower's match, and for the leader itself only what it has made
// durable (design §3 rule 2).
func (n *Node) AckedIndex(id uint64) (uint64, bool) {
	if id == n.id {
		return n.log.persistedIndex(), true
	}
	pr, ok := n.progress[id]
	if !ok {
		return 0, false
	}
	return pr.Match, true
}

func (n *Node) softState() SoftState { return SoftState{Leader: n.lead, Role: n.role} }

func (n *Node) hardState() HardState {
	return HardState{Term: n.term, Vote: n.vote, Commit: n.log.committed}
}

// send queues m. Messages whose meaning depends on state this node has not
// yet persisted (votes, vote requests, append acknowledgements) wait in
// msgsAfterPersist; everything else may leave at once (design §3 rule 1).
func (n *Node) send(m Message) {
	m.From = n.id
	if m.Term == 0 {
		m.Term = n.term
	}
	switch m.Type {
	case MsgVote, MsgVoteResp, MsgAppResp:
		n.msgsAfterPersist = append(n.msgsAfterPersist, m)
	default:
		n.msgs = append(n.msgs, m)
	}
}

// fail latches a storage failure and returns it.
func (n *Node) fail(err error) error {
	var se *StorageError
	if !errors.As(err, &se) {
		err = &StorageError{Err: err}
	}
	if n.err == nil {
		n.err = err
	}
	return n.err
}

// Err returns the latched storage failure, if any.
func (n *Node) Err() error { return n.err }

// Tick advances the node's clock by one tick.
func (n *Node) Tick() error {
	if n.err != nil {
		return n.err
	}
	n.ticks++
	if n.role == RoleLeader {
		return n.tickLeader()
	}
	n.electionElapsed++
	if n.promotable() && n.electionElapsed >= n.randomizedElectionTimeout {
		n.electionElapsed = 0
		return n.campaign(campaignPreElection)
	}
	return nil
}

func (n *Node) tickLeader() error {
	n.heartbeatElapsed++
	n.electionElapsed++
	n.self.lastHeardTick = n.ticks
	if n.cfg.CheckQuorum && !n.quorumActive() {
		// thesis §6.2: a leader that has not heard from a quorum for an
		// election timeout steps down so clients find the real leader.
		// So does a removed leader still handing over (maybeHandOver):
		// the voters it can no longer reach learn C_new committed from
		// the commit hint in its vote responses (handleVoteRequest).
		n.becomeFollower(n.term, None)
		return nil
	}
	if n.electionElapsed >= n.cfg.ElectionTicks {
		n.electionElapsed = 0
		if n.leadTransferee != None {
			// A handover that did not finish starts again below.
			n.abortTransfer()
		}
	}
	// Retries what an earlier attempt could not do (uncommitted bytes
	// full, a transfer under way).
	n.maybeLeaveJoint()
	n.maybeHandOver()
	if n.heartbeatElapsed >= n.cfg.HeartbeatTicks {
		n.heartbeatElapsed = 0
		n.startReadRound()
	}
	return nil
}

// quorumActive reports whether a quorum has been heard from within the
// last election timeout. The quorum arithmetic that finds the commit index
// finds, over last-heard ticks, the latest tick by which a quorum was
// heard from.
func (n *Node) quorumActive() bool {
	heard := n.voters.CommittedIndex(heardTicks{n})
	for _, pr := range n.progress {
		pr.RecentActive = n.ticks-pr.lastHeardTick < uint64(n.cfg.ElectionTicks)
	}
	return n.ticks-heard < uint64(n.cfg.ElectionTicks)
}

// heardTicks adapts progress to quorum.AckedIndexer over last-heard ticks.
type heardTicks struct{ n *Node }

func (h heardTicks) AckedIndex(id uint64) (uint64, bool) {
	pr, ok := h.n.progress[id]
	if !ok {
		return 0, false
	}
	return pr.lastHeardTick, true
}

// Step feeds a message from a peer into the node. A malformed message
// returns an error wrapping ErrInvalidMessage (and is counted); the node's
// state is then unchanged. From a sender outside the configuration only
// leader messages, vote requests and answers to forwarded requests are
// accepted (acceptedFromNonMember); anything else is refused the same way
// (Counters.UnknownSenders). Anything from a removed member is refused
// with an error that also wraps ErrRemoved (Counters.RemovedSenders), so a
// driver can tell the sender; a stale append from one is answered with
// this node's term.
func (n *Node) Step(m Message) error {
	if n.err != nil {
		return n.err
	}
	if err := n.validate(m); err != nil {
		switch {
		case errors.Is(err, errRemovedSender):
			n.counters.RemovedSenders++
			if (m.Type == MsgApp || m.Type == MsgHeartbeat) && m.Term < n.term {
				// A removed leader still handing over (maybeHandOver)
				// while a later leader already took over: tell it our
				// term so it steps down instead of leading forever.
				n.send(Message{Type: MsgAppResp, To: m.From})
			}
		case errors.Is(err, errUnknownSender):
			n.counters.UnknownSenders++
		case errors.Is(err, errOutOfRange):
			n.counters.OutOfRangeMessages++
		default:
			n.counters.InvalidMessages++
		}
		return err
	}
	if err := n.stepTerm(m); err != nil || n.err != nil {
		return errors.Join(err, n.err)
	}
	return nil
}

var (
	errUnknownSender = fmt.Errorf("%w: sender is not a member", ErrInvalidMessage)
	// errRemovedSender also wraps ErrRemoved, so a driver can tell the
	// sender it was removed.
	errRemovedSender = fmt.Errorf("%w: %w: sender was removed", ErrInvalidMessage, ErrRemoved)
)

// acceptedFromNonMember reports the message types a node accepts from a
// sender outside its configuration (design §6): what a leader sends (a
// joiner knows nobody; a lagging member may not know a new leader yet),
// vote requests (the candidate may be a voter this node has not learned
// of; its votes count only in the candidate's own configuration), and
// answers to requests this node forwarded to such a leader. Responses to
// what a leader or candidate sent only ever come from members it sent to.
func acceptedFromNonMember(t MessageType) bool {
	switch t {
	case MsgApp, MsgHeartbeat, MsgSnap, MsgTimeoutNow, MsgVote, MsgPreVote, MsgPropResp, MsgReadIndexResp:
		return true
	}
	return false
}

// validate rejects messages no correct peer sends. Messages are untrusted
// input: nothing here may panic.
func (n *Node) validate(m Message) error {
	if !m.Type.Valid() {
		return invalidf("unknown message type %d", m.Type)
	}
	if m.To != n.id {
		return invalidf("%s addressed to %d, this node is %d", m.Type, m.To, n.id)
	}
	if m.From == None || m.From == n.id {
		return invalidf("%s from invalid sender %d", m.Type, m.From)
	}
	if n.membership.WasRemoved(m.From) && (m.From != n.lead || m.Term != n.term) {
		// A removed member may not disrupt the cluster (it cannot
		// campaign anyone down or be counted). The one exception is the
		// leader of our term, removed by the change it just committed:
		// it finishes its handover (MsgTimeoutNow) to a voter that may
		// already have activated the change.
		return fmt.Errorf("%w: %s from %d", errRemovedSender, m.Type, m.From)
	}
	if !n.membership.Contains(m.From) && !acceptedFromNonMember(m.Type) {
		return fmt.Errorf("%w: %s from %d", errUnknownSender, m.Type, m.From)
	}
	if err := checkRange(&m); err != nil {
		return err
	}
	if err := checkConsistent(&m); err != nil {
		return err
	}
	switch m.Type {
	case MsgApp:
		prev, prevTerm := m.Index, m.LogTerm
		if prevTerm > m.Term {
			return invalidf("MsgApp previous term %d above message term %d", prevTerm, m.Term)
		}
		for i := range m.Entries {
			e := &m.Entries[i]
			if e.Index != prev+1 || e.Term < prevTerm || e.Term > m.Term {
				return invalidf("MsgApp entry %d (index %d term %d) does not follow %d/%d within term %d",
					i, e.Index, e.Term, prev, prevTerm, m.Term)
			}
			if e.Type > EntryConfChange {
				return invalidf("MsgApp entry %d has unknown type %d", e.Index, e.Type)
			}
			prev, prevTerm = e.Index, e.Term
		}
	case MsgSnap:
		if m.Snapshot == nil || m.Snapshot.Index == 0 || m.Snapshot.Term == 0 || m.Snapshot.Term > m.Term {
			return invalidf("MsgSnap without a valid snapshot")
		}
		if err := m.Snapshot.Membership.validate(); err != nil {
			return invalidf("MsgSnap: %v", err)
		}
	case MsgProp:
		if len(m.Entries) == 0 {
			return invalidf("MsgProp without entries")
		}
		for i := range m.Entries {
			if m.Entries[i].Type != EntryNormal {
				// Configuration changes go through ProposeConfChange on
				// the leader and its checks (one in flight, quorum
				// reachable, ...); a forwarded one would skip them all.
				return invalidf("MsgProp entry %d has type %v; only commands are forwarded", i, m.Entries[i].Type)
			}
		}
	}
	if termless(m.Type) {
		return nil
	}
	if m.Term == 0 {
		return invalidf("%s with term 0", m.Type)
	}
	return nil
}

// termless reports message types whose handling does not depend on the
// sender's term: forwarded requests and their answers.
func termless(t MessageType) bool {
	switch t {
	case MsgProp, MsgPropResp, MsgReadIndex, MsgReadIndexResp, MsgTransferLeader:
		return true
	}
	return false
}

// stepTerm applies the term rules every role shares (paper §5.1), then
// dispatches by role.
func (n *Node) stepTerm(m Message) error {
	switch m.Type {
	case MsgVoteResp, MsgPreVoteResp, MsgVote, MsgPreVote:
		n.takeCommitHint(m)
	}
	switch {
	case termless(m.Type):
	case m.Term > n.term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			// thesis §4.2.3: while a live leader is heard from, ignore
			// vote requests, unless the leader itself asked (transfer,
			// which ends that leader's read lease: see sendTimeoutNow).
			inLease := n.inVoteLease()
			if inLease && m.Context != campaignTransfer {
				n.counters.IgnoredVotes++
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote never changes our term.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// Granted pre-votes carry the future term; the candidate
			// counts them in stepCandidate.
		case m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap:
			n.becomeFollower(m.Term, m.From)
		default:
			n.becomeFollower(m.Term, None)
		}
	case m.Term < n.term:
		n.counters.StaleMessages++
		switch {
		case m.Type == MsgApp || m.Type == MsgHeartbeat:
			// A stale leader would otherwise never learn our term (we
			// ignore its messages; with PreVote we never campaign it
			// down, and without, our vote requests reach it only if it
			// is a voter of our configuration, which a leader added by a
			// change we have not yet learned is not): tell it, so it
			// steps down (paper §5.1: every reply carries the term).
			n.send(Message{Type: MsgAppResp, To: m.From})
		case m.Type == MsgPreVote:
			n.send(Message{Type: MsgPreVoteResp, To: m.From, Reject: true})
		}
		return nil
	}

	switch m.Type {
	case MsgVote, MsgPreVote:
		return n.handleVoteRequest(m)
	}
	switch n.role {
	case RoleLeader:
		return n.stepLeader(m)
	case RoleCandidate, RolePreCandidate:
		return n.stepCandidate(m)
	default:
		return n.stepFollower(m)
	}
}

func (n *Node) stepFollower(m Message) error {
	switch m.Type {
	case MsgApp:
		n.heardLeader(m.From)
		return n.handleAppend(m)
	case MsgHeartbeat:
		n.heardLeader(m.From)
		n.handleHeartbeat(m)
	case MsgSnap:
		n.heardLeader(m.From)
		return n.handleSnapshot(m)
	case MsgTimeoutNow:
		// thesis §3.10: the leader chose us; campaign at once, skipping
		// PreVote, since the leader is deliberately stepping aside.
		if n.promotable() {
			return n.campaign(campaignTransferred)
		}
	case MsgProp:
		n.rejectForwarded(m, &NotLeaderError{Leader: n.lead})
	case MsgPropResp:
		n.handlePropResp(m)
	case MsgReadIndex:
		n.send(Message{Type: MsgReadIndexResp, To: m.From, Context: m.Context, Reject: true})
	case MsgReadIndexResp:
		n.handleReadIndexResp(m)
	case MsgTransferLeader:
		// Only a leader can transfer; the requester will time out and
		// retry against the real leader.
	}
	return nil
}

// inVoteLease reports whether this node ignores vote and pre-vote requests
// (other than a transfer's) because a leader is live: it leads, or it heard
// from a leader less than ElectionTicks ago (thesis §4.2.3).
func (n *Node) inVoteLease() bool {
	return n.cfg.CheckQuorum && (n.role == RoleLeader || n.ticks < n.voteLeaseUntil)
}

// heardLeader records contact with the leader of our term: the election
// timer restarts, and so does the vote lease (see voteLeaseUntil).
func (n *Node) heardLeader(lead uint64) {
	n.electionElapsed = 0
	n.lead = lead
	n.voteLeaseUntil = n.ticks + uint64(n.cfg.ElectionTicks)
}

func (n *Node) stepCandidate(m Message) error {
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgSnap:
		// A leader exists for our term (paper §5.2): it won.
		n.becomeFollower(m.Term, m.From)
		return n.stepFollower(m)
	case MsgVoteResp, MsgPreVoteResp:
		wantType := MsgVoteResp
		if n.role == RolePreCandidate {
			wantType = MsgPreVoteResp
		}
		if m.Type != wantType {
			return nil
		}
		return n.recordVote(m.From, !m.Reject)
	case MsgProp:
		n.rejectForwarded(m, ErrNoLeader)
	case MsgPropResp:
		n.handlePropResp(m)
	case MsgReadIndex:
		n.send(Message{Type: MsgReadIndexResp, To: m.From, Context: m.Context, Reject: true})
	case MsgReadIndexResp:
		n.handleReadIndexResp(m)
	}
	return nil
}

func (n *Node) stepLeader(m Message) error {
	pr := n.progress[m.From]
	if pr == nil {
		// A non-member's leader or vote message (acceptedFromNonMember)
		// in our own term: only the MsgApp/MsgHeartbeat/MsgSnap case
		// below can apply, and it is refused there.
		pr = &Progress{}
	}
	pr.RecentActive = true
	pr.lastHeardTick = n.ticks
	pr.heard = true
	switch m.Type {
	case MsgAppResp:
		return n.handleAppendResp(m, pr)
	case MsgHeartbeatResp:
		return n.handleHeartbeatResp(m, pr)
	case MsgProp:
		if err := n.appendProposals(m.Entries); err != nil {
			n.rejectForwarded(m, err)
		}
	case MsgReadIndex:
		n.handleReadIndex(m.Context, m.From)
	case MsgTransferLeader:
		if err := n.transferLeadership(m.Context); err != nil {
			n.counters.InvalidMessages++
		}
	case MsgApp, MsgHeartbeat, MsgSnap:
		// Two leaders in one term would break election safety (paper
		// §5.2); a correct peer never sends this.
		n.counters.InvalidMessages++
		return invalidf("%s from %d in our own term %d while leader", m.Type, m.From, m.Term)
	}
	return nil
}

// Status is a snapshot of the node's state for operators.
type Status struct {
	ID     uint64
	Term   uint64
	Vote   uint64
	Role   Role
	Leader uint64
	Commit uint64
	// Applied is the last index acknowledged applied: by Advance, or by
	// AckApplied with AsyncStorageWrites (or a snapshot installed).
	Applied   uint64
	LastIndex uint64
	// LeadTransferee is the transfer target while one is in progress.
	LeadTransferee uint64
	// Progress is set on the leader: a copy of every member's progress.
	Progress   map[uint64]Progress
	Membership Membership
	// ConfIndex is the index of the entry that made Membership active, or
	// the snapshot's index when it came from a snapshot; 0 for a joiner
	// and for storage older than the bootstrap entry (Config.Membership).
	ConfIndex uint64
	// Removed: this node is not a member and its ID is at or below
	// Membership.HighestID, so it was removed and may never rejoin. It
	// stays passive.
	Removed  bool
	Counters Counters
	// InVoteLease: the node ignores (pre-)vote requests other than a
	// transfer's, because it leads or heard from a leader within an
	// election timeout (thesis §4.2.3). A leader's read lease relies on a
	// quorum of these.
	InVoteLease bool
}

// Status returns the node's current state.
func (n *Node) Status() Status {
	s := Status{
		ID: n.id, Term: n.term, Vote: n.vote, Role: n.role, Leader: n.lead,
		Commit: n.log.committed, Applied: n.log.applied, LastIndex: n.log.lastIndex(),
		LeadTransferee: n.leadTransferee, Membership: n.membership.Clone(), Counters: n.counters,
		InVoteLease: n.inVoteLease(), ConfIndex: n.confIndex, Removed: n.membership.WasRemoved(n.id),
	}
	if n.role == RoleLeader {
		s.Progress = make(map[uint64]Progress, len(n.progress))
		for id, pr := range n.progress {
			c := *pr
			c.inflights.ring = nil
			s.Progress[id] = c
		}
	}
	return s
}

// ID returns the node's ID.
func (n *Node) ID() uint64 { return n.id }

// Members returns the IDs of every member, sorted.
func (n *Node) Members() []uint64 { return n.membership.IDs() }

// Role returns the node's current role.
func (n *Node) Role() Role { return n.role }

// Term returns the node's current term.
func (n *Node) Term() uint64 { return n.term }

// Leader returns the leader this node knows of, or None.
func (n *Node) Leader() uint64 { return n.lead }

// EntryTerm returns the term of entry i in this node's log, including
// entries not yet durable. It returns ErrCompacted or ErrUnavailable for
// indexes outside the log. For tests and diagnostics.
func (n *Node) EntryTerm(i uint64) (uint64, error) { return n.log.term(i) }
