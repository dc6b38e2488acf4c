package quorum

import (
	"math"
	"testing"
)

func TestMajorityCommittedIndex(t *testing.T) {
	cases := []struct {
		name   string
		voters []uint64
		acked  MapAckIndexer
		want   uint64
	}{
		{"empty config never holds back", nil, nil, math.MaxUint64},
		{"single voter", []uint64{1}, MapAckIndexer{1: 5}, 5},
		{"single voter silent", []uint64{1}, MapAckIndexer{}, 0},
		{"three, two agree", []uint64{1, 2, 3}, MapAckIndexer{1: 5, 2: 5, 3: 1}, 5},
		{"three, median wins", []uint64{1, 2, 3}, MapAckIndexer{1: 9, 2: 4, 3: 1}, 4},
		{"three, one silent", []uint64{1, 2, 3}, MapAckIndexer{1: 9, 2: 7}, 7},
		{"three, two silent", []uint64{1, 2, 3}, MapAckIndexer{1: 9}, 0},
		{"four needs three", []uint64{1, 2, 3, 4}, MapAckIndexer{1: 9, 2: 8, 3: 2, 4: 1}, 2},
		{"five needs three", []uint64{1, 2, 3, 4, 5}, MapAckIndexer{1: 9, 2: 8, 3: 7, 4: 1, 5: 1}, 7},
		{"non-voter ignored", []uint64{1, 2, 3}, MapAckIndexer{1: 9, 4: 9, 5: 9}, 0},
		{"nine voters (heap path)", []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9},
			MapAckIndexer{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 8: 8, 9: 9}, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := NewMajorityConfig(tc.voters...).CommittedIndex(tc.acked)
			if got != tc.want {
				t.Fatalf("CommittedIndex = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestMajorityVoteResult(t *testing.T) {
	cases := []struct {
		name   string
		voters []uint64
		votes  map[uint64]bool
		want   VoteResult
	}{
		{"empty wins", nil, nil, VoteWon},
		{"single yes", []uint64{1}, map[uint64]bool{1: true}, VoteWon},
		{"single no", []uint64{1}, map[uint64]bool{1: false}, VoteLost},
		{"single pending", []uint64{1}, nil, VotePending},
		{"three: 2 yes", []uint64{1, 2, 3}, map[uint64]bool{1: true, 2: true}, VoteWon},
		{"three: 1 yes 1 no", []uint64{1, 2, 3}, map[uint64]bool{1: true, 2: false}, VotePending},
		{"three: 2 no", []uint64{1, 2, 3}, map[uint64]bool{2: false, 3: false}, VoteLost},
		{"four: 2 yes 2 pending", []uint64{1, 2, 3, 4}, map[uint64]bool{1: true, 2: true}, VotePending},
		{"four: 2 yes 2 no", []uint64{1, 2, 3, 4}, map[uint64]bool{1: true, 2: true, 3: false, 4: false}, VoteLost},
		{"outsider vote ignored", []uint64{1, 2, 3}, map[uint64]bool{1: true, 9: true}, VotePending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewMajorityConfig(tc.voters...).VoteResult(tc.votes); got != tc.want {
				t.Fatalf("VoteResult = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestJoint checks thesis §4.3: during joint consensus, decisions need
// separate majorities of the old and the new configuration.
func TestJoint(t *testing.T) {
	j := JointConfig{Incoming: NewMajorityConfig(1, 2, 3), Outgoing: NewMajorityConfig(3, 4, 5)}
	acked := MapAckIndexer{1: 10, 2: 10, 3: 4, 4: 3, 5: 1}
	// Incoming majority has 10, outgoing majority only 3.
	if got := j.CommittedIndex(acked); got != 3 {
		t.Fatalf("joint CommittedIndex = %d, want 3", got)
	}
	if got := (JointConfig{Incoming: NewMajorityConfig(1, 2, 3)}).CommittedIndex(acked); got != 10 {
		t.Fatalf("non-joint CommittedIndex = %d, want 10", got)
	}
	votes := map[uint64]bool{1: true, 2: true}
	if got := j.VoteResult(votes); got != VotePending {
		t.Fatalf("joint vote with only incoming majority = %v, want pending", got)
	}
	votes[4], votes[5] = false, false
	if got := j.VoteResult(votes); got != VoteLost {
		t.Fatalf("joint vote with outgoing refusing = %v, want lost", got)
	}
	votes = map[uint64]bool{1: true, 3: true, 4: true}
	if got := j.VoteResult(votes); got != VoteWon {
		t.Fatalf("joint vote with both majorities = %v, want won", got)
	}
	if ids := j.IDs(); len(ids) != 5 {
		t.Fatalf("IDs = %v, want 5 distinct", ids)
	}
}

func BenchmarkCommittedIndex3(b *testing.B) {
	c := NewMajorityConfig(1, 2, 3)
	acked := MapAckIndexer{1: 100, 2: 99, 3: 98}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.CommittedIndex(acked)
	}
}
