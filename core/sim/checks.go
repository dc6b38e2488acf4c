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
