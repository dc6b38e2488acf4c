package sim

import (
	"errors"
	"fmt"

	"github.com/rafty-db/rafty/core"
)

// observe checks Election Safety and Leader Completeness right after a
// node's state may have changed (a Tick or a Step).
func (s *Sim) observe(sn *simNode) error {
	if !sn.up || sn.n.Role() != core.RoleLeader {
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
		if prev, ok := s.appliedAt[e.Index]; ok {
			if prev.Term != e.Term || string(prev.Data) != string(e.Data) {
				return fmt.Errorf("state machine safety: node %d applies %d/%d %q, another node applied %d/%d %q",
					sn.id, e.Term, e.Index, e.Data, prev.Term, prev.Index, prev.Data)
			}
		} else {
			s.appliedAt[e.Index] = e
			s.maxApplied = max(s.maxApplied, e.Index)
			if len(e.Data) > 0 {
				s.res.Applied++
			}
		}
		sn.appliedIndex = e.Index
		sn.applied = append(sn.applied, e)
	}
	return nil
}

// checkReads verifies each answered read index covers every entry that was
// committed anywhere when the read was requested.
func (s *Sim) checkReads(sn *simNode, states []core.ReadState) error {
	for _, rs := range states {
		need, ok := sn.pendingReads[rs.RequestID]
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
		if rs.Index < need {
			return fmt.Errorf("read linearizability: node %d read %d answered index %d, but %d was committed when it began",
				sn.id, rs.RequestID, rs.Index, need)
		}
	}
	return nil
}
