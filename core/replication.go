package core

import (
	"errors"
)

// Propose appends commands to the log. On the leader they are appended at
// once; on a follower they are forwarded to the leader (MsgProp) and, if the
// leader refuses them, come back in Ready.RejectedProposals. Errors:
// ErrNoLeader, ErrTransferInProgress, ErrTooManyUncommitted,
// ErrProposalTooLarge, ErrIndexExhausted.
func (n *Node) Propose(data ...[]byte) error {
	if n.err != nil {
		return n.err
	}
	if len(data) == 0 {
		return nil
	}
	switch n.role {
	case RoleLeader:
		return n.proposeLocal(data)
	case RoleFollower:
		if n.lead == None {
			return ErrNoLeader
		}
		ents := make([]Entry, len(data))
		for i, d := range data {
			ents[i] = Entry{Type: EntryNormal, Data: d}
		}
		n.send(Message{Type: MsgProp, To: n.lead, Entries: ents})
		return nil
	}
	return ErrNoLeader
}

// proposeLocal is appendProposals for local commands: it builds the
// entries directly in the unstable log, saving a copy on the hot path.
func (n *Node) proposeLocal(data [][]byte) error {
	if n.leadTransferee != None {
		return ErrTransferInProgress
	}
	var size uint64
	for _, d := range data {
		size += uint64(len(d)) + entryOverheadBytes
	}
	if err := n.checkUncommitted(size); err != nil {
		return err
	}
	last := n.log.lastIndex()
	if uint64(len(data)) > MaxIndex-last {
		return ErrIndexExhausted
	}
	for i, d := range data {
		n.log.append(Entry{Index: last + 1 + uint64(i), Term: n.term, Type: EntryNormal, Data: d})
	}
	n.trackUncommitted(last+uint64(len(data)), size)
	return nil
}

func (n *Node) checkUncommitted(size uint64) error {
	if size > n.cfg.MaxUncommittedBytes {
		return ErrProposalTooLarge
	}
	if n.uncommittedBytes+size > n.cfg.MaxUncommittedBytes {
		return ErrTooManyUncommitted
	}
	return nil
}

func (n *Node) trackUncommitted(last, size uint64) {
	n.uncommittedBytes += size
	n.uncommitted = append(n.uncommitted, uncommittedBatch{last: last, bytes: size})
	n.bcastPending = true
}

// appendProposals is the leader's proposal path: assign indexes in this
// term, append, and replicate.
func (n *Node) appendProposals(ents []Entry) error {
	if n.leadTransferee != None {
		return ErrTransferInProgress
	}
	size := entriesSize(ents)
	if err := n.checkUncommitted(size); err != nil {
		return err
	}
	last := n.log.lastIndex()
	if uint64(len(ents)) > MaxIndex-last {
		return ErrIndexExhausted
	}
	for i := range ents {
		ents[i].Index = last + 1 + uint64(i)
		ents[i].Term = n.term
	}
	n.log.append(ents...)
	n.trackUncommitted(last+uint64(len(ents)), size)
	// A single-voter cluster commits once its own write is durable, in
	// Advance (AckPersisted in async mode); nothing more to do here.
	return nil
}

// rejectForwarded returns refused forwarded proposals to their proposer.
func (n *Node) rejectForwarded(m Message, err error) {
	reason := rejectReasonFor(err)
	n.send(Message{Type: MsgPropResp, To: m.From, Entries: m.Entries, Reject: true, Context: reason, Index: n.lead})
}

// Reasons a forwarded proposal was refused, carried in MsgPropResp.Context.
const (
	rejectNotLeader uint64 = iota + 1
	rejectTransfer
	rejectUncommitted
	rejectTooLarge
	rejectIndexExhausted
)

func rejectReasonFor(err error) uint64 {
	switch {
	case errors.Is(err, ErrTransferInProgress):
		return rejectTransfer
	case errors.Is(err, ErrTooManyUncommitted):
		return rejectUncommitted
	case errors.Is(err, ErrProposalTooLarge):
		return rejectTooLarge
	case errors.Is(err, ErrIndexExhausted):
		return rejectIndexExhausted
	}
	return rejectNotLeader
}

func (n *Node) handlePropResp(m Message) {
	var err error
	switch m.Context {
	case rejectTransfer:
		err = ErrTransferInProgress
	case rejectUncommitted:
		err = ErrTooManyUncommitted
	case rejectTooLarge:
		err = ErrProposalTooLarge
	case rejectIndexExhausted:
		err = ErrIndexExhausted
	default:
		err = &NotLeaderError{Leader: m.Index}
	}
	data := make([][]byte, len(m.Entries))
	for i := range m.Entries {
		data[i] = m.Entries[i].Data
	}
	n.rejectedProposals = append(n.rejectedProposals, RejectedProposal{Data: data, Err: err})
}

// handleAppend is the follower side of AppendEntries (paper §5.3).
func (n *Node) handleAppend(m Message) error {
	if m.Index < n.log.committed {
		// Everything up to our commit index matches the leader's log
		// (Log Matching); acknowledge it so the leader moves on.
		n.send(Message{Type: MsgAppResp, To: m.From, Index: n.log.committed})
		return nil
	}
	if n.log.matchTerm(m.Index, m.LogTerm) {
		lastNew := m.Index + uint64(len(m.Entries))
		conflict, err := n.log.findConflict(m.Entries)
		if err != nil {
			return n.fail(err)
		}
		if conflict != 0 {
			if conflict <= n.log.committed {
				// A leader never overwrites committed entries (Leader
				// Completeness); a message claiming to is corrupt.
				n.counters.InvalidMessages++
				return invalidf("MsgApp from %d conflicts at %d at or below commit %d", m.From, conflict, n.log.committed)
			}
			n.log.truncateAndAppend(m.Entries[conflict-m.Index-1:])
			n.dropAcksFrom(conflict)
		}
		// Commit only what this message proved we share with the leader.
		n.log.commitTo(min(m.Commit, lastNew))
		n.send(Message{Type: MsgAppResp, To: m.From, Index: lastNew})
		return nil
	}
	hintIdx, hintTerm, err := n.log.findConflictByTerm(m.Index, m.LogTerm)
	if err != nil {
		return n.fail(err)
	}
	n.send(Message{Type: MsgAppResp, To: m.From, Index: m.Index, Reject: true, RejectHint: hintIdx, LogTerm: hintTerm})
	return nil
}

// dropAcksFrom withdraws append acknowledgements not yet handed out that
// cover index i or later, whose entries a newer leader's append just
// replaced: they would leave with the Ready that writes the replacement
// and acknowledge entries never written (MessagesAfterPersist acknowledge
// what the persist step wrote). They are of an older term (one leader
// never contradicts itself), so nobody needs them: the newer leader
// ignores them and the older one is deposed.
func (n *Node) dropAcksFrom(i uint64) {
	kept := n.msgsAfterPersist[:0]
	for _, m := range n.msgsAfterPersist {
		if m.Type == MsgAppResp && !m.Reject && m.Index >= i {
			continue
		}
		kept = append(kept, m)
	}
	for j := len(kept); j < len(n.msgsAfterPersist); j++ {
		n.msgsAfterPersist[j] = Message{} // let the dropped messages go
	}
	n.msgsAfterPersist = kept
}

// Fast backoff (paper §5.3, last paragraphs; thesis §3.5). A rejection
// carries a hint so the leader skips a whole term per round trip instead of
// one entry. Example, leader L in term 7 and follower F:
//
//	index:  1 2 3 4 5 6 7 8 9
//	L:      1 1 1 4 4 5 5 6 6      L probes with prev = (9, term 6)
//	F:      1 1 1 2 2 2 3 3 3 3 3  (F is longer; its tail is stale)
//
//  1. F lacks (9, 6): term(9)=3. F answers with the largest index <= 9
//     whose term <= 6: that is 9 itself (term 3). Hint = (9, 3).
//  2. L looks for the largest index <= 9 whose term <= 3 in its own log:
//     index 3 (term 1). L probes at prev = (3, 1) next.
//  3. F has (3, 1): it accepts and truncates its stale 4..11.
//
// Two round trips instead of seven. Both sides only ever move to an index
// whose term is at most the other side's, so no matching prefix is skipped.

// handleAppendResp is the leader side of AppendEntries responses.
func (n *Node) handleAppendResp(m Message, pr *Progress) error {
	if m.Reject {
		next := m.RejectHint
		if m.LogTerm > 0 {
			idx, _, err := n.log.findConflictByTerm(m.RejectHint, m.LogTerm)
			if err != nil {
				return n.fail(err)
			}
			next = idx
		}
		if pr.maybeDecrTo(m.Index, next) {
			if pr.State == ProgressReplicate {
				pr.becomeProbe()
			}
			n.sendAppend(m.From, true)
		}
		return nil
	}
	if m.Index > n.log.lastIndex() {
		// Acknowledges entries we never had: a corrupt or foreign message.
		n.counters.InvalidMessages++
		return invalidf("MsgAppResp from %d acknowledges %d beyond our last index %d", m.From, m.Index, n.log.lastIndex())
	}
	if !pr.maybeUpdate(m.Index) {
		// A duplicate; still, a paused probe can resume.
		if pr.State == ProgressProbe && pr.Match+1 < pr.Next {
			pr.ProbeSent = false
		}
		return nil
	}
	switch pr.State {
	case ProgressProbe:
		pr.becomeReplicate()
	case ProgressSnapshot:
		if pr.Match >= pr.PendingSnapshot {
			pr.becomeProbe()
			pr.becomeReplicate()
		}
	case ProgressReplicate:
		pr.inflights.freeLE(m.Index)
	}
	if n.maybeCommit() {
		n.bcastPending = true
	}
	for n.sendAppend(m.From, false) {
	}
	if m.From == n.leadTransferee && pr.Match == n.log.lastIndex() {
		n.sendTimeoutNow(m.From)
	}
	return nil
}

// handleHeartbeat adopts the leader's commit index. The leader sends
// min(our match, its commit), which we are known to hold.
func (n *Node) handleHeartbeat(m Message) {
	n.log.commitTo(m.Commit)
	n.send(Message{Type: MsgHeartbeatResp, To: m.From, Context: m.Context})
}

// bcastAppend sends pending entries (or an empty append carrying the commit
// index) to every follower not paused.
func (n *Node) bcastAppend() {
	for _, id := range n.peers {
		n.sendAppend(id, true)
	}
}

// flushBcast sends what bcastPending deferred: new entries to every
// follower, and the new commit index to those not yet told.
func (n *Node) flushBcast() {
	n.bcastPending = false
	if n.role != RoleLeader {
		return
	}
	for _, id := range n.peers {
		pr := n.progress[id]
		for n.sendAppend(id, pr.sentCommit < n.log.committed) {
			if pr.State != ProgressReplicate {
				break
			}
		}
	}
}

// sendAppend sends one append to a follower if flow control allows. With
// sendIfEmpty it sends even with no new entries (to carry commit or probe).
// It reports whether a message was sent.
func (n *Node) sendAppend(to uint64, sendIfEmpty bool) bool {
	pr := n.progress[to]
	if pr.isPaused() {
		return false
	}
	prev := pr.Next - 1
	prevTerm, errT := n.log.term(prev)
	last := n.log.lastIndex()
	var ents []Entry
	var errE error
	if pr.Next <= last {
		limit := n.cfg.MaxMsgBytes
		if pr.State == ProgressReplicate {
			limit = min(limit, n.cfg.MaxInflightBytes-pr.inflights.bytes)
		}
		ents, errE = n.log.entries(pr.Next, last+1, limit)
	}
	if errT != nil || errE != nil {
		if errors.Is(errT, ErrCompacted) || errors.Is(errE, ErrCompacted) {
			return n.sendSnapshot(to, pr)
		}
		err := errT
		if err == nil {
			err = errE
		}
		if !errors.Is(err, ErrUnavailable) {
			n.fail(err)
		}
		return false
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	if pr.State == ProgressReplicate && pr.inflights.count > 0 &&
		entriesSize(ents) > n.cfg.MaxInflightBytes-pr.inflights.bytes {
		// The window is strict: with appends outstanding, an entry that
		// does not fit waits. (With none outstanding an oversized entry
		// goes alone, or it could never be sent.)
		return false
	}
	n.send(Message{Type: MsgApp, To: to, Index: prev, LogTerm: prevTerm, Entries: ents, Commit: n.log.committed})
	pr.sentCommit = n.log.committed
	switch pr.State {
	case ProgressReplicate:
		if len(ents) > 0 {
			lastSent := ents[len(ents)-1].Index
			pr.Next = lastSent + 1
			pr.inflights.add(lastSent, entriesSize(ents))
		}
	case ProgressProbe:
		pr.ProbeSent = true
	}
	return true
}

// sendSnapshot switches a follower that needs compacted entries to
// snapshot state and asks the driver to send the latest snapshot.
func (n *Node) sendSnapshot(to uint64, pr *Progress) bool {
	if !pr.RecentActive {
		// Do not start a large transfer to a peer that may be down.
		return false
	}
	_, snap, err := n.log.stable.InitialState()
	if err != nil {
		n.fail(err)
		return false
	}
	if snap.IsEmpty() {
		n.fail(errors.New("entries are compacted but the log reports no snapshot"))
		return false
	}
	pr.becomeSnapshot(snap.Index)
	meta := snap
	meta.Membership = snap.Membership.Clone()
	n.send(Message{Type: MsgSnap, To: to, Snapshot: &meta})
	return true
}

// maybeCommit advances the commit index to what a quorum holds durably,
// but only through an entry of the current term (paper §5.4.2, Figure 8):
// counting replicas of an older-term entry does not make it committed.
func (n *Node) maybeCommit() bool {
	n.self.Match = n.log.persistedIndex()
	idx := n.voters.CommittedIndex(n)
	if idx <= n.log.committed {
		return false
	}
	t, err := n.log.term(idx)
	if err != nil || t != n.term {
		return false
	}
	// A quorum holds an entry of this term at idx, so everything before
	// it is committed in the usual sense; commitCap may still hold back
	// a suffix (then up to an entry of an older term, and reads keep
	// waiting for committedInTerm).
	idx = n.commitCap(idx)
	if idx <= n.log.committed {
		return false
	}
	wasCommittedInTerm := n.committedInTerm()
	n.log.commitTo(idx)
	for len(n.uncommitted) > 0 && n.uncommitted[0].last <= idx {
		n.uncommittedBytes -= n.uncommitted[0].bytes
		n.uncommitted = n.uncommitted[1:]
	}
	if len(n.uncommitted) == 0 {
		n.uncommitted = n.uncommitted[:0:0]
	}
	if !wasCommittedInTerm && n.committedInTerm() {
		n.releaseReadsAwaitingCommit()
	}
	return true
}

// commitCap lowers idx, an index a quorum of the active configuration
// holds, to below the second configuration entry not yet activated. A
// quorum of the active configuration B may commit the entry creating the
// next configuration C and what follows it (every quorum of B meets every
// quorum of C: one change at a time, or joint consensus), but not the
// entry creating D after C: B and D may have disjoint quorums. So D and
// everything after it wait until C is active, and are then committed
// under C. A leader normally never holds two unactivated configuration
// entries (one change in flight), but a restarted node can: a power loss
// took back its commit index after it had activated C and appended D,
// and it is elected again under B (core/sim seed 43428).
func (n *Node) commitCap(idx uint64) uint64 {
	k := 0
	for k < len(n.pendingConfs) && n.pendingConfs[k] <= n.confScanned {
		k++
	}
	n.pendingConfs = n.pendingConfs[k:]
	lo := max(n.confSeenTo, n.confScanned) + 1
	for len(n.pendingConfs) < 2 && lo <= idx {
		ents, err := n.log.entries(lo, idx+1, n.cfg.MaxCommittedBytesPerReady)
		if err != nil || len(ents) == 0 {
			var se *StorageError
			if errors.As(err, &se) {
				n.fail(err)
			}
			// Not readable now: commit nothing that was not checked.
			return min(idx, lo-1)
		}
		for i := 0; i < len(ents) && len(n.pendingConfs) < 2; i++ {
			// Stops at the second: pendingConfs holds at most two.
			if ents[i].Type == EntryConfChange {
				n.pendingConfs = append(n.pendingConfs, ents[i].Index)
			}
			n.confSeenTo = ents[i].Index
		}
		lo = n.confSeenTo + 1
	}
	if len(n.pendingConfs) >= 2 {
		return min(idx, n.pendingConfs[1]-1)
	}
	return idx
}

// committedInTerm reports whether the leader has committed an entry of its
// own term, which it needs before answering reads (thesis §6.4).
func (n *Node) committedInTerm() bool {
	t, err := n.log.term(n.log.committed)
	return err == nil && t == n.term
}

// handleSnapshot is the follower side of InstallSnapshot (paper §7).
func (n *Node) handleSnapshot(m Message) error {
	meta := *m.Snapshot
	if meta.Index <= n.log.committed {
		n.send(Message{Type: MsgAppResp, To: m.From, Index: n.log.committed})
		return nil
	}
	if n.log.matchTerm(meta.Index, meta.Term) {
		// We already hold the entry the snapshot ends at, so our log
		// agrees up to there: commit it and keep the log (paper §7). The
		// acknowledgement covers only that much: entries after it were
		// never checked against the leader's log and may conflict, and
		// acknowledging them would let the leader count (and commit to
		// us) entries it does not have.
		n.log.commitTo(meta.Index)
		n.send(Message{Type: MsgAppResp, To: m.From, Index: meta.Index})
		return nil
	}
	n.log.restore(meta)
	// The snapshot carries the configuration active at its index: every
	// configuration entry up to there is accounted for.
	n.setMembership(meta.Membership)
	n.confIndex, n.confScanned = meta.Index, meta.Index
	n.send(Message{Type: MsgAppResp, To: m.From, Index: meta.Index})
	return nil
}

// ReportUnreachable tells the leader a message to id was lost: stop
// pipelining to it and probe until it answers.
func (n *Node) ReportUnreachable(id uint64) {
	if n.role != RoleLeader {
		return
	}
	if pr, ok := n.progress[id]; ok && id != n.id && pr.State == ProgressReplicate {
		pr.becomeProbe()
	}
}

// ReportSnapshot tells the leader how sending a snapshot to id ended. On
// failure the follower goes back to probing, so the leader retries (with a
// fresh snapshot if needed) instead of leaving it stuck in snapshot state.
func (n *Node) ReportSnapshot(id uint64, err error) {
	if n.role != RoleLeader {
		return
	}
	pr, ok := n.progress[id]
	if !ok || pr.State != ProgressSnapshot {
		return
	}
	if err != nil {
		pr.PendingSnapshot = 0
	}
	pr.becomeProbe()
	// Wait for the follower's next heartbeat response before probing, so
	// a failing peer is not flooded.
	pr.ProbeSent = true
}
