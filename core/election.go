package core

import (
	"errors"

	"github.com/rafty-db/rafty/core/quorum"
)

// campaignTransfer in a vote request's Context marks an election the old
// leader asked for (thesis §3.10): voters grant it even while they still
// hear from that leader.
const campaignTransfer uint64 = 1

// campaignKind selects how an election starts.
type campaignKind uint8

const (
	// campaignPreElection runs PreVote first when configured.
	campaignPreElection campaignKind = iota
	// campaignElection raises the term and asks for votes.
	campaignElection
	// campaignTransferred is an election the leader asked for.
	campaignTransferred
)

// reset clears per-term state when the term or role changes.
func (n *Node) reset(term uint64) {
	if n.term != term {
		n.term = term
		n.vote = None
	}
	n.lead = None
	n.electionElapsed = 0
	n.heartbeatElapsed = 0
	n.resetRandomizedElectionTimeout()
	n.abortTransfer()
	n.votes = nil
	n.selfWinTerm = 0
	n.uncommittedBytes = 0
	n.uncommitted = n.uncommitted[:0]
	n.failPendingReads(ErrStepDown)
	last := n.log.lastIndex()
	for id, pr := range n.progress {
		*pr = Progress{
			Next:      last + 1,
			IsLearner: pr.IsLearner,
			inflights: newInflights(n.cfg.MaxInflightMsgs, n.cfg.MaxInflightBytes),
		}
		if id == n.id {
			pr.Match = n.log.persistedIndex()
		}
	}
}

// resetRandomizedElectionTimeout draws a timeout in [E, 2E) (paper §5.2):
// spreading timeouts out makes split votes rare.
func (n *Node) resetRandomizedElectionTimeout() {
	n.randomizedElectionTimeout = n.cfg.ElectionTicks + n.rng.IntN(n.cfg.ElectionTicks)
}

func (n *Node) becomeFollower(term, lead uint64) {
	n.reset(term)
	n.role = RoleFollower
	n.lead = lead
}

func (n *Node) becomePreCandidate() {
	// A pre-candidate keeps its term and vote (thesis §9.6): nothing
	// durable changes, so a failed pre-vote disturbs nobody.
	n.role = RolePreCandidate
	n.lead = None
	n.votes = map[uint64]bool{}
	n.abortTransfer()
}

func (n *Node) becomeCandidate() {
	n.reset(n.term + 1)
	n.vote = n.id
	n.role = RoleCandidate
	n.votes = map[uint64]bool{}
}

func (n *Node) becomeLeader() {
	n.reset(n.term)
	n.role = RoleLeader
	n.lead = n.id
	// Every voter just took part in electing us: count them as heard
	// from now, so CheckQuorum measures a full timeout from here.
	// Learners took no part: they count as heard once they answer (a
	// learner is promoted only if heard from, see ProposeConfChange).
	for _, pr := range n.progress {
		pr.RecentActive = true
		pr.lastHeardTick = n.ticks
		pr.heard = !pr.IsLearner
	}
	// The leader's own progress is always in replicate state: it
	// "replicates" to itself by persisting.
	n.self.becomeReplicate()
	n.self.Match = n.log.persistedIndex()
	n.confSeenTo, n.pendingConfs = n.confScanned, nil
	// A no-op in the new term (paper §5.4.2, §8): entries of earlier terms
	// commit only once an entry of this term does.
	n.log.append(Entry{Index: n.log.lastIndex() + 1, Term: n.term, Type: EntryNormal})
	// Anything in the log may hold a configuration change not yet
	// active, so no change is proposed before everything through the
	// no-op is: that also means this leader has committed in its term
	// first, which single-voter changes need for safety (Ongaro,
	// raft-dev, 2015: "bug in single-server membership changes").
	n.pendingConfIndex = n.log.lastIndex()
	n.bcastAppend()
	n.maybeCommit()
}

// campaign starts a pre-election or an election. A transferred campaign
// skips PreVote and marks its requests so voters under a lease grant them.
func (n *Node) campaign(kind campaignKind) error {
	if !n.promotable() {
		return nil
	}
	if n.term >= MaxTerm || n.log.lastIndex() >= MaxIndex {
		// The election's term (or the new leader's no-op index) would pass
		// the limit that keeps terms from wrapping (see MaxTerm): better no
		// leader than two in one term.
		n.counters.RefusedCampaigns++
		return nil
	}
	if pending, err := n.committedConfPending(); err != nil || pending {
		// A configuration entry is committed but not yet active here
		// (activation waits for a Ready to hand it out; after a restart,
		// everything past Config.Applied). Counting votes in the
		// configuration before it could mean counting one two changes
		// old, whose quorums need not intersect the newest one's (etcd
		// refuses the same way). Campaign once it is handed out.
		return err
	}
	msgType := MsgVote
	voteTerm := n.term + 1
	if n.cfg.PreVote && kind == campaignPreElection {
		n.becomePreCandidate()
		msgType = MsgPreVote
	} else {
		n.becomeCandidate()
		voteTerm = n.term
	}
	lastIdx := n.log.lastIndex()
	lastTerm, err := n.log.lastTerm()
	if err != nil {
		return n.fail(err)
	}
	var ctx uint64
	if kind == campaignTransferred {
		ctx = campaignTransfer
	}
	if n.recordVoteNoPoll(n.id, true) {
		return nil
	}
	for _, id := range n.voters.IDs() {
		if id == n.id {
			continue
		}
		// Commit tells voters what we know committed, so that only one
		// who knows more answers with a commit hint (handleVoteRequest).
		n.send(Message{Type: msgType, To: id, Term: voteTerm, Index: lastIdx, LogTerm: lastTerm, Context: ctx,
			Commit: n.log.committed})
	}
	return nil
}

// recordVoteNoPoll records the self-vote and, for a single-voter cluster,
// completes the election once the vote is durable (selfWinTerm). It
// reports whether the self-vote alone wins.
//
// A candidate counts its own vote at once, before the hard state carrying
// it is durable. With other voters that is safe: a quorum needs their
// grants, which answer MsgVote requests that leave only after that hard
// state is durable (MessagesAfterPersist). Alone, it is not: a leader
// acting in a term whose vote a crash can erase may, after restarting,
// win the same term again and write different entries at the same
// indexes, and the first incarnation's appends may already have reached
// learners. So a lone voter becomes leader only in selfVoteDurable.
func (n *Node) recordVoteNoPoll(id uint64, granted bool) bool {
	n.votes[id] = granted
	if n.voters.VoteResult(n.votes) != quorum.VoteWon {
		return false
	}
	if n.role == RolePreCandidate {
		// A pre-vote binds nothing durable: go on to the election.
		n.becomeCandidate()
		if n.voters.VoteResult(map[uint64]bool{n.id: true}) == quorum.VoteWon {
			n.selfWinTerm = n.term
		}
		return true
	}
	n.selfWinTerm = n.term
	return true
}

// selfVoteDurable is called when the hard state carrying this node's vote
// for itself in term is durable (Advance, or AckPersisted in async mode):
// a candidate that wins by its own vote alone becomes leader now.
//
// The configuration may have changed since the vote was cast (committed
// entries activate as they are handed out): the vote must still win
// alone in the configuration active now, or the candidate waits for
// grants or its next timeout like any other.
func (n *Node) selfVoteDurable(term uint64) {
	if n.role != RoleCandidate || n.term != term || n.selfWinTerm != term || n.vote != n.id {
		return
	}
	if !n.voters.Contains(n.id) || n.voters.VoteResult(map[uint64]bool{n.id: true}) != quorum.VoteWon {
		n.selfWinTerm = 0
		return
	}
	n.becomeLeader()
}

// recordVote counts a vote response and acts on the outcome.
func (n *Node) recordVote(from uint64, granted bool) error {
	if _, seen := n.votes[from]; seen {
		return nil // duplicates must not count twice
	}
	n.votes[from] = granted
	switch n.voters.VoteResult(n.votes) {
	case quorum.VoteWon:
		if !n.voters.Contains(n.id) {
			// A configuration that made us a non-voter became active
			// mid-campaign: a quorum of it may grant, but a node outside
			// it must not lead (design §6). activateConfChanges normally
			// ends the campaign first; this is the last line.
			n.becomeFollower(n.term, None)
			return nil
		}
		if n.role == RolePreCandidate {
			// Real election now that a quorum would vote for us.
			return n.campaign(campaignElection)
		}
		n.becomeLeader()
	case quorum.VoteLost:
		// Stay in the term and wait for a leader or the next timeout.
		n.becomeFollower(n.term, None)
	}
	return nil
}

// handleVoteRequest answers MsgVote and MsgPreVote (paper §5.2, §5.4.1;
// thesis §9.6).
func (n *Node) handleVoteRequest(m Message) error {
	respType := MsgVoteResp
	if m.Type == MsgPreVote {
		respType = MsgPreVoteResp
	}
	// One vote per term: we may repeat a vote already cast for this
	// candidate, or cast a new one if we have none and know no leader. A
	// pre-vote for a future term binds nothing, so it is judged on the
	// log alone.
	canVote := n.vote == m.From ||
		(n.vote == None && n.lead == None) ||
		(m.Type == MsgPreVote && m.Term > n.term)
	upToDate, err := n.log.isUpToDate(m.Index, m.LogTerm)
	if err != nil {
		return n.fail(err)
	}
	// Commit hint: if we hold the candidate's last entry, log matching
	// says its log equals ours up to there, so whatever we know is
	// committed up to there is committed in its log too. This is how a
	// voter that never learned its configuration change committed (its
	// leader removed itself and went away) finds out and stops counting
	// the old configuration, whose quorum may need removed members.
	hint := func(resp Message) Message {
		if c := min(n.log.committed, m.Index); c > m.Commit && n.log.matchTerm(m.Index, m.LogTerm) {
			resp.Index, resp.LogTerm, resp.Commit = m.Index, m.LogTerm, c
		}
		return resp
	}
	// The candidate need not be a voter in our configuration: it may have
	// activated a change we have not yet (a promotion). Its votes count
	// only in its own configuration; removed members never get here.
	if canVote && upToDate {
		// A granted pre-vote answers in the candidate's future term so it
		// can count it; a rejection carries ours so it can catch up.
		n.send(hint(Message{Type: respType, To: m.From, Term: m.Term}))
		if m.Type == MsgVote {
			n.electionElapsed = 0
			n.vote = m.From
		}
		return nil
	}
	n.send(hint(Message{Type: respType, To: m.From, Term: n.term, Reject: true}))
	return nil
}

// takeCommitHint adopts the commit index a vote response vouches for (see
// handleVoteRequest), or the one a vote request carries (the candidate's
// own): only up to the candidate's last entry it names, and only if that
// entry is ours too, so by Log Matching our log equals the candidate's up
// to there. Committed entries stay committed, so a stale or duplicated
// message is as good as a fresh one, whatever its term and whether the
// vote is granted. A leader (a late response) ignores it: its commit index
// moves only through maybeCommit, which also releases the reads waiting
// for its first commit.
//
// Taking it from requests matters when the only node that knows a
// configuration change committed is a candidate that cannot win without
// us: e.g. a lone voter replaced by a learner through the joint
// configuration {voters=[learner] outgoing=[old voter]} crashes after
// committing it and loses appends it had already sent the learner. The
// learner's log is now longer, so it refuses its vote; and not knowing
// the change committed, it thinks itself a learner and never campaigns.
// The hint activates the change on the learner, which then campaigns.
func (n *Node) takeCommitHint(m Message) {
	if n.role == RoleLeader || m.Commit == 0 || m.Commit > m.Index || m.Index > n.log.lastIndex() ||
		n.log.pendingSnap != nil {
		return
	}
	if n.log.matchTerm(m.Index, m.LogTerm) {
		n.log.commitTo(m.Commit)
	}
}

// committedConfPending reports whether a committed configuration entry
// waits to be handed out (and so activated). It reads the committed
// entries not yet handed out, remembering how far it found none.
func (n *Node) committedConfPending() (bool, error) {
	lo := max(n.confScanned, n.confCheckedTo) + 1
	for lo <= n.log.committed {
		ents, err := n.log.entries(lo, n.log.committed+1, n.cfg.MaxCommittedBytesPerReady)
		if err != nil {
			var se *StorageError
			if errors.As(err, &se) {
				return true, n.fail(err)
			}
			return true, nil // not readable now: do not campaign
		}
		if len(ents) == 0 {
			return true, nil
		}
		for i := range ents {
			if ents[i].Type == EntryConfChange {
				return true, nil
			}
			n.confCheckedTo = ents[i].Index
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return false, nil
}
