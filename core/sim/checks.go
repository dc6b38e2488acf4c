package sim

import (
	"errors"
	"fmt"

	"github.com/rafty-db/rafty/core"
)

// observe checks Election Safety and Leader Completeness right after a
// node's state may have changed (a Tick or a Step).
func (s *Sim) observe(sn *simNode) error {
	if !sn.up {
		return nil
	}
	if t := sn.n.Term(); t < sn.durableTerm {
		return fmt.Errorf("terms go back: node %d is at term %d after persisting term %d", sn.id, t, sn.durableTerm)
	}
	if sn.n.Role() != core.RoleLeader {
		return nil
	}
	if err := s.checkAsyncLeader(sn); err != nil {
		return err
	}
	term := sn.n.Term()
	prev, seen := s.leaderOf[term]
	if seen && prev != sn.id {
		return fmt.Errorf("election safety: nodes %d and %d both leader in term %d", prev, sn.id, term)
	}
	if seen {
		return nil
	}
	s.leaderOf[term] = sn.id
	s.res.Elections++
	s.logf("node %d is leader of term %d", sn.id, term)
	if err := s.checkElectionQuorum(sn, term); err != nil {
		return err
	}
	if err := s.checkAckedWrites(sn, term); err != nil {
		return err
	}
	// Leader Completeness (paper §5.4): every entry committed in an
	// earlier term is in the new leader's log. Entries committed in a
	// later term (by a leader elected while this one's votes were in
	// flight) are exempt.
	for idx, ct := range s.commitTermOf {
		if ct >= term {
			continue
		}
		want, ok := s.appliedAt[idx]
		if !ok {
			want = core.Entry{Index: idx, Term: s.committedEntryTerm[idx]}
		}
		got, err := sn.n.EntryTerm(idx)
		if errors.Is(err, core.ErrCompacted) {
			continue // covered by a snapshot, itself checked on install
		}
		if err != nil || got != want.Term {
			return fmt.Errorf("leader completeness: leader %d of term %d has entry %d with term %d (%v), committed in term %d with term %d",
				sn.id, term, idx, got, err, ct, want.Term)
		}
	}
	return nil
}

// checkDurableTerm: a node's persisted term never decreases (paper §5.1;
// Figure 2: currentTerm increases monotonically).
func (s *Sim) checkDurableTerm(sn *simNode, hs core.HardState) error {
	if hs.IsZero() {
		return nil
	}
	if hs.Term < sn.durableTerm {
		return fmt.Errorf("terms go back: node %d persists term %d after term %d", sn.id, hs.Term, sn.durableTerm)
	}
	sn.durableTerm = hs.Term
	return nil
}

// recordCommit notes the term in which a leader committed each index.
func (s *Sim) recordCommit(sn *simNode, rd *core.Ready) error {
	if rd.HardState.IsZero() || sn.n.Role() != core.RoleLeader || rd.HardState.Term != sn.n.Term() {
		return nil
	}
	for idx := s.commitRecorded[sn.id] + 1; idx <= rd.HardState.Commit; idx++ {
		t, err := sn.n.EntryTerm(idx)
		if err != nil {
			continue
		}
		if _, ok := s.commitTermOf[idx]; !ok {
			s.commitTermOf[idx] = rd.HardState.Term
			s.committedEntryTerm[idx] = t
		} else if s.committedEntryTerm[idx] != t {
			return fmt.Errorf("commit safety: index %d committed with term %d, leader %d commits term %d",
				idx, s.committedEntryTerm[idx], sn.id, t)
		}
	}
	s.commitRecorded[sn.id] = max(s.commitRecorded[sn.id], rd.HardState.Commit)
	s.maxCommitted = max(s.maxCommitted, rd.HardState.Commit)
	return nil
}

// checkAndRecordEntries enforces Log Matching on entries about to become
// durable: an (index, term) pair always names the same data and follows
// the same predecessor term. By induction that makes any two logs holding
// one (index, term) identical up to it.
func (s *Sim) checkAndRecordEntries(sn *simNode, ents []core.Entry) error {
	for i := range ents {
		e := &ents[i]
		var prevTerm uint64
		if i > 0 {
			prevTerm = ents[i-1].Term
		} else if e.Index > 1 {
			t, err := sn.n.EntryTerm(e.Index - 1)
			if err != nil {
				return fmt.Errorf("node %d persists entry %d but cannot read term of %d: %v", sn.id, e.Index, e.Index-1, err)
			}
			prevTerm = t
		}
		key := [2]uint64{e.Index, e.Term}
		rec := entryRecord{data: string(e.Data), prevTerm: prevTerm}
		if old, ok := s.entryAt[key]; ok {
			if old != rec {
				return fmt.Errorf("log matching: entry %d/%d on node %d is %q after term %d, elsewhere %q after term %d",
					e.Term, e.Index, sn.id, rec.data, rec.prevTerm, old.data, old.prevTerm)
			}
			continue
		}
		s.entryAt[key] = rec
	}
	return nil
}

// apply applies committed entries to the node's state machine, enforcing
// State Machine Safety and in-order, gap-free application.
func (s *Sim) apply(sn *simNode, ents []core.Entry) error {
	for _, e := range ents {
		if e.Index != sn.appliedIndex+1 {
			return fmt.Errorf("apply order: node %d applies %d after %d", sn.id, e.Index, sn.appliedIndex)
		}
		if e.Type == core.EntryConfChange {
			if err := s.applyConfEntry(sn, e); err != nil {
				return err
			}
		}
		if prev, ok := s.appliedAt[e.Index]; ok {
			if prev.Term != e.Term || prev.Type != e.Type || string(prev.Data) != string(e.Data) {
				return fmt.Errorf("state machine safety: node %d applies %d/%d %q, another node applied %d/%d %q",
					sn.id, e.Term, e.Index, e.Data, prev.Term, prev.Index, prev.Data)
			}
		} else {
			s.appliedAt[e.Index] = e
			s.maxApplied = max(s.maxApplied, e.Index)
			if len(e.Data) > 0 && e.Type == core.EntryNormal {
				s.res.Applied++
			}
		}
		sn.appliedIndex = e.Index
		sn.applied = append(sn.applied, e)
	}
	return nil
}

// pendingRead is what a read's answer must satisfy.
type pendingRead struct {
	// need is the highest index committed anywhere when the read began.
	need uint64
	// leaderTerm is the requester's term if it was leader (else 0), and
	// newerLeader a leader of a later term that had already been elected
	// then (0 if none).
	leaderTerm, newerLeader uint64
}

// newerLeader returns a node that has led a term after term, or 0.
func (s *Sim) newerLeader(term uint64) uint64 {
	for t, id := range s.leaderOf {
		if t > term {
			return id
		}
	}
	return 0
}

// checkLeaseQuorum: when a leader answers from its lease, no quorum may be
// willing to elect anyone else right now (core/reads.go): the leader
// itself, nodes inside their vote lease, and nodes that are down (they
// cannot vote, and restart inside a vote lease) refuse. Unlike an outcome check, this
// fires the moment a lease outlives the followers' vote leases, with no
// election and no write needed in the gap; it holds node clocks to the
// drift the configuration allows (see newClock).
func (s *Sim) checkLeaseQuorum(leader *simNode, readID uint64) error {
	// The leader's active configuration decides who could elect another
	// leader (both halves if joint): that takes a quorum of voters
	// willing to grant, so none may exist. (With an even number of voters
	// neither side may have a majority.)
	m := leader.active
	grants := func(id uint64) bool {
		if id == leader.id {
			return false
		}
		sn := s.node(id)
		return sn != nil && sn.up && !sn.n.Status().InVoteLease
	}
	if isQuorum(m, grants) {
		var granting []uint64
		for _, id := range m.IDs() {
			if m.IsVoter(id) && grants(id) {
				granting = append(granting, id)
			}
		}
		return fmt.Errorf("lease safety: node %d answered read %d from its lease while voters %v of %s would grant votes",
			leader.id, readID, granting, fmtMembership(m))
	}
	return nil
}

// checkReads verifies each answered read: its index covers every entry
// committed anywhere when the read began (linearizability; a lease read
// never returns a state older than a committed write), and a read a
// leader answered in the Ready right after the request — from its lease —
// was not answered while another node had already been elected in a
// later term: the lease argument (core/reads.go) says no such leader can
// exist yet. That check fires on the election itself, before the new
// leader commits anything, so a lease that lasts too long is caught even
// when no write lands in the gap.
func (s *Sim) checkReads(sn *simNode, states []core.ReadState) error {
	for _, rs := range states {
		pr, ok := sn.pendingReads[rs.RequestID]
		if !ok {
			// A duplicated answer, or one to a read issued before a
			// restart: a driver ignores IDs it is not waiting for.
			continue
		}
		delete(sn.pendingReads, rs.RequestID)
		if rs.Err != nil {
			continue
		}
		s.res.Reads++
		if rs.Index < pr.need {
			return fmt.Errorf("read linearizability: node %d read %d answered index %d, but %d was committed when it began",
				sn.id, rs.RequestID, rs.Index, pr.need)
		}
		fromLease := s.opts.LeaseReads && pr.leaderTerm != 0 && s.atOnce == rs.RequestID
		if fromLease {
			s.res.LeaseReads++
		}
		if fromLease {
			if err := s.checkLeaseQuorum(sn, rs.RequestID); err != nil {
				return err
			}
		}
		if fromLease && pr.newerLeader != 0 {
			return fmt.Errorf("lease safety: node %d, leader of term %d, answered read %d from its lease after node %d was elected in a later term",
				sn.id, pr.leaderTerm, rs.RequestID, pr.newerLeader)
		}
	}
	return nil
}

// Checks of async mode (async.go).

// ackedWrite is a write a leader applied, and so reported to its client.
type ackedWrite struct {
	term, leaderTerm uint64
	data             string
}

// recordAckedWrite notes that leader sn applied e: its client has been
// told the write succeeded.
func (s *Sim) recordAckedWrite(sn *simNode, e core.Entry) {
	if _, ok := s.ackedWrites[e.Index]; ok {
		return
	}
	s.ackedWrites[e.Index] = ackedWrite{term: e.Term, leaderTerm: sn.n.Term(), data: string(e.Data)}
	s.res.AckedWrites++
}

// checkAckedWrites: no acknowledged write is lost. A write applied by the
// leader of term T was committed in a term at most T, so every leader of a
// later term holds it (or a snapshot covering it), whatever crashed and
// whatever unsynced data a power loss took meanwhile.
func (s *Sim) checkAckedWrites(sn *simNode, term uint64) error {
	for idx, w := range s.ackedWrites {
		if w.leaderTerm >= term {
			continue
		}
		got, err := sn.n.EntryTerm(idx)
		if errors.Is(err, core.ErrCompacted) {
			continue
		}
		if err != nil || got != w.term {
			return fmt.Errorf("acknowledged write lost: %q at %d/%d, applied by the leader of term %d, is not in the log of leader %d of term %d (term %d, %v)",
				w.data, w.term, idx, w.leaderTerm, sn.id, term, got, err)
		}
	}
	return nil
}

// checkAsyncReady checks a Ready against the asynchronous contract
// (core.Ready): Sync is MustSync against the hard state last handed out;
// Persist names the batch's last entry and snapshot; committed entries
// handed out are durable locally; CommitToWrite covers committed entries
// past every commit index handed out before; at most MaxApplyingBytes are
// handed out and not acknowledged applied (one batch when none is).
func (s *Sim) checkAsyncReady(sn *simNode, rd *core.Ready, outstanding uint64) error {
	a := sn.a
	if want := rd.MustSync(a.lastHS); rd.Sync != want {
		return fmt.Errorf("ready: node %d Ready.Sync = %v, want %v (hard state %v after %v, %d entries, snapshot %v)",
			sn.id, rd.Sync, want, rd.HardState, a.lastHS, len(rd.Entries), rd.Snapshot != nil)
	}
	if !rd.HardState.IsZero() {
		a.lastHS = rd.HardState
	}
	if !rd.Persist.IsZero() && !rd.Sync {
		return fmt.Errorf("ready: node %d Persist %+v without Sync", sn.id, rd.Persist)
	}
	if n := len(rd.Entries); n > 0 {
		if last := rd.Entries[n-1]; rd.Persist.Index != last.Index || rd.Persist.Term != last.Term {
			return fmt.Errorf("ready: node %d persists entries up to %d/%d but Persist is %+v", sn.id, last.Term, last.Index, rd.Persist)
		}
	}
	if rd.Snapshot != nil && rd.Persist.SnapshotIndex != rd.Snapshot.Index {
		return fmt.Errorf("ready: node %d installs snapshot %d but Persist is %+v", sn.id, rd.Snapshot.Index, rd.Persist)
	}
	n := len(rd.CommittedEntries)
	if n == 0 {
		if rd.CommitToWrite != 0 && rd.CommitToWrite > a.commitHanded {
			a.commitHanded = rd.CommitToWrite
		}
		return nil
	}
	last := rd.CommittedEntries[n-1]
	if !s.holds(sn.id, last.Index, last.Term) {
		return fmt.Errorf("ready: node %d hands out committed entry %d/%d, which is not in its fsynced log (AckPersisted must cover it)",
			sn.id, last.Term, last.Index)
	}
	if last.Index > a.commitHanded && rd.CommitToWrite < last.Index {
		return fmt.Errorf("apply ordering: node %d hands out committed entries up to %d with CommitToWrite %d (commit handed out before: %d)",
			sn.id, last.Index, rd.CommitToWrite, a.commitHanded)
	}
	a.commitHanded = max(a.commitHanded, rd.CommitToWrite)
	if outstanding > 0 && outstanding >= s.opts.MaxApplyingBytes {
		return fmt.Errorf("apply limit: node %d hands out %d..%d with %d bytes handed out and not acknowledged applied (MaxApplyingBytes %d)",
			sn.id, rd.CommittedEntries[0].Index, last.Index, outstanding, s.opts.MaxApplyingBytes)
	}
	return nil
}

// checkDurableMessages: before a batch's MessagesAfterPersist leave, what
// they vouch for is in the fsynced storage: an append acknowledgement's
// index is in the fsynced log, a vote granted is the fsynced vote. (A batch
// superseded by a later truncating one in the same fsync is exempt: its
// acknowledgements are of a term the node has left.)
func (s *Sim) checkDurableMessages(sn *simNode, b *persistBatch) error {
	a := sn.a
	if b.superseded {
		return nil
	}
	hs, snap, _ := a.durable.InitialState()
	// The fsynced hard state is the batch's or a later one: a higher
	// term, or the same term with the same vote (or a vote cast since).
	if b.sync && !b.hs.IsZero() && (hs.Term < b.hs.Term || hs.Term == b.hs.Term && b.hs.Vote != 0 && hs.Vote != b.hs.Vote) {
		return fmt.Errorf("durability: node %d completes Ready #%d with hard state %v while %v is fsynced", sn.id, b.seq, b.hs, hs)
	}
	for _, e := range b.ents {
		if e.Index <= snap.Index {
			continue
		}
		if t, err := a.durable.Term(e.Index); err != nil || t != e.Term {
			return fmt.Errorf("durability: node %d completes Ready #%d but its entry %d/%d is not fsynced (%d, %v)",
				sn.id, b.seq, e.Term, e.Index, t, err)
		}
	}
	for _, m := range b.msgs {
		switch {
		case m.Type == core.MsgAppResp && !m.Reject && m.Index > snap.Index:
			// (Including an acknowledgement of an older term whose
			// entries a newer leader's append replaced before they were
			// written: the core withdraws those, core 7d4edda, seed
			// 23113.)
			if last, _ := a.durable.LastIndex(); m.Index > last {
				return fmt.Errorf("durability: node %d sends %v after Ready #%d with only %d fsynced", sn.id, m, b.seq, last)
			}
		case m.Type == core.MsgVoteResp && !m.Reject:
			if hs.Term < m.Term || hs.Term == m.Term && hs.Vote != m.To {
				return fmt.Errorf("durability: node %d sends %v after Ready #%d with hard state %v fsynced", sn.id, m, b.seq, hs)
			}
		}
	}
	return nil
}

// checkAppliedCommit: applied never passes the written commit. Before the
// applier applies index, a commit at least as high is written (hard state
// or marker), so a process crash now restarts the node with a commit
// covering its state machine.
func (s *Sim) checkAppliedCommit(sn *simNode, index uint64) error {
	hs, _, _ := sn.log.InitialState()
	if index > hs.Commit && index > sn.a.marker && index > sn.a.startApplied {
		return fmt.Errorf("apply ordering: node %d applies %d with written commit %d (hard state) / %d (marker)",
			sn.id, index, hs.Commit, sn.a.marker)
	}
	return nil
}

// ackCovers reports whether index is covered, on node sn, by an
// AckPersisted (or was in its log at start): some acknowledged entry at or
// above index is still in its log with the acknowledged term.
func (s *Sim) ackCovers(sn *simNode, index uint64) bool {
	if index == 0 {
		return true
	}
	for term, idxs := range sn.a.acked {
		for _, i := range idxs {
			if i < index {
				continue
			}
			t, err := sn.n.EntryTerm(i)
			if errors.Is(err, core.ErrCompacted) || err == nil && t == term {
				return true
			}
		}
	}
	return false
}

// checkAsyncLeader: a leader counts its own log toward commitment only as
// far as AckPersisted covered it (core.Node.AckedIndex is what it counts),
// and when its commit index moves, a quorum holds the entry durably
// (checkCommitQuorum).
func (s *Sim) checkAsyncLeader(sn *simNode) error {
	if sn.a == nil || !sn.up || sn.n.Role() != core.RoleLeader {
		return nil
	}
	if p, _ := sn.n.AckedIndex(sn.id); !s.ackCovers(sn, p) {
		return fmt.Errorf("leader self-count: leader %d of term %d counts its log up to %d, which no AckPersisted covered (acknowledged: %v)",
			sn.id, sn.n.Term(), p, sn.a.acked)
	}
	commit := sn.n.Status().Commit
	if commit <= sn.a.checkedCommit {
		return nil
	}
	sn.a.checkedCommit = commit
	return s.checkCommitQuorum(sn, sn.active, sn.activeIdx, commit)
}
