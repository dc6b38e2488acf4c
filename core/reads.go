package core

import (
	"errors"

	"github.com/rafty-db/rafty/core/quorum"
)

// ReadIndex (thesis §6.4, paper §8) lets a node serve a linearizable read
// without writing to the log:
//
//  1. The leader must have committed an entry of its own term, so its
//     commit index is at least as new as any committed entry. Requests
//     arriving earlier wait (bounded) until that no-op commits.
//  2. It records its commit index as the request's read index.
//  3. It confirms it is still leader: a heartbeat round acknowledged by a
//     quorum, sent after the request arrived, proves no newer leader had
//     committed anything at that moment.
//  4. The requester serves the read once its state machine has applied
//     the read index.
//
// Rounds are batched: every request queued since the last round waits for
// the next one, and each heartbeat tick starts a round, so N concurrent
// reads cost one heartbeat per follower, not N. A round for new requests
// starts at once only when no earlier round awaits its quorum: requests
// arriving meanwhile gather for the round that starts when it is
// confirmed (or at the next heartbeat tick, which also covers a round
// whose acknowledgements were lost). Under a steady stream of reads that
// makes rounds follow each other back to back, one per round trip,
// instead of one per loop iteration of the driver (measured: about one
// heartbeat per read at 16 concurrent readers before). A round is identified by a
// sequence number carried in MsgHeartbeat.Context and echoed back; the
// quorum package computes the highest round a quorum confirmed, exactly as
// it computes the commit index.
//
// With ReadLease the leader skips step 3 while it holds a lease (thesis
// §6.4.1). The lease is derived from the followers' side, in ticks of
// each node's own clock:
//
//   - Follower F receives the heartbeat of round r (started at the
//     leader's tick t, so sent at or after that tick) and acknowledges it.
//     Say F's own tick count is then f. From then on F ignores vote and
//     pre-vote requests until its tick f + E (E = ElectionTicks, the
//     minimum of the randomized timeout; voteLeaseUntil in node.go), and
//     F cannot campaign itself before then (its election timer restarted
//     and is at least E). Only a transfer vote passes, and MsgTimeoutNow
//     ends the lease (below).
//   - F's tick f+1 may come at once after the heartbeat arrived, so the E
//     ticks before F may vote span only a little more than E-1 tick
//     lengths of F's clock. That is the rounding tick: it is not drift,
//     and two clocks running at exactly the same rate already lose it.
//   - Clock assumption, with D = MaxClockDriftTicks: over any stretch of
//     real time one node's clock measures as E-1 ticks, every other node's
//     clock advances at least E-1-D ticks. (Equivalently, no clock runs
//     faster than another by more than a factor (E-1)/(E-1-D).)
//   - So when F first may vote, the leader's clock has advanced at least
//     E-1-D ticks past t. A new leader needs a vote from some member of
//     every quorum, so from a node of the quorum that confirmed round r
//     (the leader itself never votes while it leads). Hence no other
//     leader can exist, let alone commit, before the leader's tick
//     t + E - 1 - D; the leader serves lease reads only while its tick
//     count is below that: leaseUntil = t + E - 1 - D.
//
// Worked example, E = 10, D = 1: a round started at tick 100 and confirmed
// by a quorum lets the leader answer from its lease through tick 107. A
// follower that received the heartbeat just before its own tick votes no
// earlier than 9 of its tick lengths later, by which time a leader clock up
// to 9/8 slower has reached tick 108. (The old bound t + E - D took the
// rounding tick out of D: with D = 1 it tolerated no drift at all.)
//
// Config.Validate requires CheckQuorum (without it followers grant votes
// regardless), 1 <= D (real clocks drift) and E-1-D >= 1 (a lease of at
// least one tick); every member must use the same ElectionTicks.
//
// A leadership transfer ends the lease: MsgTimeoutNow makes the target
// campaign with votes that followers grant inside their vote lease
// (thesis §3.10), and a delayed MsgTimeoutNow may still start that
// election after the transfer was abandoned. So once a leader sent one, it
// confirms every read with a heartbeat round (step 3) until it leads a
// later term: a round confirmed in the same term cannot rule out the
// delayed election.

// readRequest is one pending ReadIndex request.
type readRequest struct {
	id    uint64
	from  uint64 // None for a local request
	index uint64
	round uint64 // 0 until a round is started for it
}

// readIndexQueue holds the leader's pending reads.
type readIndexQueue struct {
	// awaitingCommit: requests that arrived before the leader committed
	// in its term (step 1).
	awaitingCommit []readRequest
	// pending: requests in round order; round 0 entries are at the tail.
	pending []readRequest
	// round is the last round started; confirmed the highest a quorum
	// has acknowledged (confirmed <= round).
	round, confirmed uint64
	// needRound: some pending request waits for a round to start.
	needRound bool
	// roundTicks remembers when recent rounds started, for the lease.
	roundTicks [leaseRoundHistory]uint64
	// leaseUntil is the tick before which the leader holds its lease.
	leaseUntil uint64
	// leaseRevoked: this leader sent MsgTimeoutNow in its term, so it
	// holds no lease until it leads a later term (reset clears it).
	leaseRevoked bool
}

// leaseRoundHistory bounds how many recent rounds remember their start
// tick. A confirmation for an older round does not extend the lease.
const leaseRoundHistory = 256

func (q *readIndexQueue) size() int { return len(q.awaitingCommit) + len(q.pending) }

// wantsRound reports whether Ready should start a round now: a request
// waits for one and no earlier round is still unconfirmed.
func (q *readIndexQueue) wantsRound() bool { return q.needRound && q.confirmed >= q.round }

// ErrTooManyPendingReads: Config.MaxPendingReads reads already wait.
var ErrTooManyPendingReads = errors.New("raft: too many pending reads")

// ReadIndex requests a linearizable read point for requestID. The answer
// arrives in a later Ready as a ReadState with the same ID: serve the read
// once the state machine has applied ReadState.Index. Request IDs must be
// unique among this node's pending requests. On a follower the request is
// forwarded to the leader; ErrNoLeader if there is none.
func (n *Node) ReadIndex(requestID uint64) error {
	if n.err != nil {
		return n.err
	}
	switch n.role {
	case RoleLeader:
		return n.handleReadIndex(requestID, None)
	case RoleFollower:
		if n.lead == None {
			return ErrNoLeader
		}
		n.send(Message{Type: MsgReadIndex, To: n.lead, Context: requestID})
		return nil
	}
	return ErrNoLeader
}

// handleReadIndex queues a read on the leader (local when from is None).
func (n *Node) handleReadIndex(id, from uint64) error {
	if n.reads.size() >= n.cfg.MaxPendingReads {
		n.answerRead(readRequest{id: id, from: from}, ErrTooManyPendingReads)
		return ErrTooManyPendingReads
	}
	req := readRequest{id: id, from: from}
	if !n.committedInTerm() {
		n.reads.awaitingCommit = append(n.reads.awaitingCommit, req)
		return nil
	}
	n.queueRead(req)
	return nil
}

func (n *Node) queueRead(req readRequest) {
	req.index = n.log.committed
	if n.voters.VoteResult(map[uint64]bool{n.id: true}) == quorum.VoteWon {
		// A single voter is the quorum: nothing to confirm.
		n.answerRead(req, nil)
		return
	}
	if n.holdsLease() {
		n.answerRead(req, nil)
		return
	}
	n.reads.pending = append(n.reads.pending, req)
	n.reads.needRound = true
}

// holdsLease reports whether the leader may answer a read from its lease
// (see the argument at the top of this file).
func (n *Node) holdsLease() bool {
	return n.cfg.ReadMode == ReadLease && !n.reads.leaseRevoked && n.leadTransferee == None &&
		n.ticks < n.reads.leaseUntil
}

// revokeLease ends the lease for the rest of this term; see the transfer
// paragraph at the top of this file.
func (n *Node) revokeLease() {
	n.reads.leaseRevoked = true
	n.reads.leaseUntil = 0
}

// releaseReadsAwaitingCommit runs when the leader first commits in its
// term.
func (n *Node) releaseReadsAwaitingCommit() {
	waiting := n.reads.awaitingCommit
	n.reads.awaitingCommit = nil
	for _, req := range waiting {
		n.queueRead(req)
	}
}

// startReadRound begins a heartbeat round; it carries every pending read
// without a round and refreshes the lease.
func (n *Node) startReadRound() {
	q := &n.reads
	q.round++
	q.roundTicks[q.round%leaseRoundHistory] = n.ticks
	for i := len(q.pending) - 1; i >= 0 && q.pending[i].round == 0; i-- {
		q.pending[i].round = q.round
	}
	q.needRound = false
	n.self.ackedRound = q.round
	n.bcastHeartbeat()
	n.confirmReads()
}

func (n *Node) bcastHeartbeat() {
	for _, id := range n.peers {
		pr := n.progress[id]
		// Never tell a follower to commit past what it is known to hold.
		commit := min(pr.Match, n.log.committed)
		n.send(Message{Type: MsgHeartbeat, To: id, Commit: commit, Context: n.reads.round})
	}
}

// handleHeartbeatResp records liveness and read confirmations.
func (n *Node) handleHeartbeatResp(m Message, pr *Progress) error {
	pr.ProbeSent = false
	if pr.State == ProgressReplicate && pr.inflights.full() {
		// The follower is alive but the window is full: the appends in
		// it may all have been lost. Let one more through; if there was
		// a gap, its rejection moves the follower back to probing.
		pr.inflights.freeFirst()
	}
	if pr.Match < n.log.lastIndex() {
		n.sendAppend(m.From, true)
	}
	if m.Context > n.reads.round {
		n.counters.InvalidMessages++
		return invalidf("MsgHeartbeatResp from %d confirms round %d, newest is %d", m.From, m.Context, n.reads.round)
	}
	if m.Context > pr.ackedRound {
		pr.ackedRound = m.Context
		n.confirmReads()
	}
	return nil
}

// roundAcks adapts progress to quorum.AckedIndexer over read rounds.
type roundAcks struct{ n *Node }

func (r roundAcks) AckedIndex(id uint64) (uint64, bool) {
	pr, ok := r.n.progress[id]
	if !ok {
		return 0, false
	}
	return pr.ackedRound, true
}

// confirmReads answers every pending read whose round a quorum confirmed.
func (n *Node) confirmReads() {
	q := &n.reads
	confirmed := n.voters.CommittedIndex(roundAcks{n})
	if confirmed == 0 || confirmed > q.round {
		return
	}
	q.confirmed = max(q.confirmed, confirmed)
	if q.round-confirmed < leaseRoundHistory && !q.leaseRevoked {
		// leaseUntil = t + E - 1 - D; Validate keeps E - 1 - D >= 1.
		start := q.roundTicks[confirmed%leaseRoundHistory]
		until := start + uint64(n.cfg.ElectionTicks-1-n.cfg.MaxClockDriftTicks)
		q.leaseUntil = max(q.leaseUntil, until)
	}
	done := 0
	for done < len(q.pending) && q.pending[done].round != 0 && q.pending[done].round <= confirmed {
		n.answerRead(q.pending[done], nil)
		done++
	}
	if done > 0 {
		q.pending = append(q.pending[:0], q.pending[done:]...)
	}
}

// answerRead delivers a read index (or a refusal) to its requester.
func (n *Node) answerRead(req readRequest, err error) {
	if req.from == None {
		rs := ReadState{RequestID: req.id, Index: req.index, Err: err}
		if err != nil {
			rs.Index = 0
		}
		n.readStates = append(n.readStates, rs)
		return
	}
	n.send(Message{Type: MsgReadIndexResp, To: req.from, Context: req.id, Index: req.index, Reject: err != nil})
}

// failPendingReads refuses every queued read, when the leader steps down.
func (n *Node) failPendingReads(err error) {
	for _, req := range n.reads.awaitingCommit {
		n.answerRead(req, err)
	}
	for _, req := range n.reads.pending {
		n.answerRead(req, err)
	}
	n.reads.awaitingCommit, n.reads.pending = nil, nil
	n.reads.needRound = false
	n.reads.leaseUntil = 0
	n.reads.leaseRevoked = false
	for _, pr := range n.progress {
		pr.ackedRound = 0
	}
	n.reads.round, n.reads.confirmed = 0, 0
}

// handleReadIndexResp delivers the leader's answer to a forwarded read.
func (n *Node) handleReadIndexResp(m Message) {
	if m.Reject {
		n.readStates = append(n.readStates, ReadState{RequestID: m.Context, Err: &NotLeaderError{Leader: n.lead}})
		return
	}
	n.readStates = append(n.readStates, ReadState{RequestID: m.Context, Index: m.Index})
}
