package core_test

import (
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestCommitHintFromVoteRequest: a vote or pre-vote request carries the
// candidate's commit index; a node holding the candidate's last entry
// adopts it (up to that entry), whether or not it grants the vote, and
// whatever the request's term. Otherwise nothing changes.
func TestCommitHintFromVoteRequest(t *testing.T) {
	cases := []struct {
		name       string
		term       uint64
		index, lt  uint64
		commit     uint64
		wantCommit uint64
	}{
		{"matching entry", 4, 3, 2, 2, 2},
		{"up to the named entry", 4, 3, 2, 3, 3},
		{"stale term still vouches", 2, 3, 2, 3, 3},
		{"entry with another term", 4, 3, 1, 2, 0},
		{"commit past the named entry", 4, 2, 2, 3, 0},
		{"entry beyond our log", 4, 5, 2, 4, 0},
	}
	for _, typ := range []core.MessageType{core.MsgVote, core.MsgPreVote} {
		for _, tc := range cases {
			t.Run(typ.String()+"/"+tc.name, func(t *testing.T) {
				s := newSolo(t, core.HardState{Term: 3}, entriesWithTerms(1, 2, 2), nil)
				m := core.Message{Type: typ, From: 2, To: 1, Term: tc.term, Index: tc.index, LogTerm: tc.lt, Commit: tc.commit}
				if err := s.step(m); err != nil {
					t.Fatal(err)
				}
				if got := s.n.Status().Commit; got != tc.wantCommit {
					t.Fatalf("commit %d, want %d", got, tc.wantCommit)
				}
			})
		}
	}
}
