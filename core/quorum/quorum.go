// Package quorum answers one question for every kind of Raft decision:
// given what each voter has acknowledged, what has a quorum acknowledged?
//
// The same arithmetic serves commit advancement (acknowledged = durable
// log index), read confirmation (acknowledged = heartbeat round) and
// elections (acknowledged = vote granted or refused). A joint configuration
// (thesis §4.3) is two majority configurations that must both agree, so its
// answer is the minimum (for indexes) or the conjunction (for votes) of its
// halves.
//
// The package is pure and allocation-free for clusters of up to
// smallClusterSize voters.
package quorum

import (
	"math"
	"slices"
)

// AckedIndexer reports the index a voter has acknowledged. ok is false
// when the voter has acknowledged nothing; it then counts as 0.
type AckedIndexer interface {
	AckedIndex(voter uint64) (idx uint64, ok bool)
}

// MapAckIndexer is an AckedIndexer backed by a map, for tests and rare paths.
type MapAckIndexer map[uint64]uint64

// AckedIndex implements AckedIndexer.
func (m MapAckIndexer) AckedIndex(id uint64) (uint64, bool) {
	idx, ok := m[id]
	return idx, ok
}

// VoteResult is the outcome of counting votes.
type VoteResult uint8

const (
	// VotePending: neither enough grants nor enough refusals yet.
	VotePending VoteResult = iota + 1
	// VoteLost: enough refusals that a quorum can no longer grant.
	VoteLost
	// VoteWon: a quorum granted.
	VoteWon
)

func (r VoteResult) String() string {
	switch r {
	case VotePending:
		return "pending"
	case VoteLost:
		return "lost"
	case VoteWon:
		return "won"
	}
	return "VoteResult(?)"
}

// smallClusterSize bounds the voter count handled on the stack.
const smallClusterSize = 7

// MajorityConfig is a set of voter IDs deciding by simple majority.
type MajorityConfig []uint64

// NewMajorityConfig returns a sorted, duplicate-free config of ids.
func NewMajorityConfig(ids ...uint64) MajorityConfig {
	c := slices.Clone(ids)
	slices.Sort(c)
	return slices.Compact(c)
}

// Contains reports whether id is a voter of c.
func (c MajorityConfig) Contains(id uint64) bool {
	_, found := slices.BinarySearch(c, id)
	return found
}

// CommittedIndex returns the largest index acknowledged by a majority of
// c. An empty config returns math.MaxUint64, so that in a joint config an
// empty half never holds the other back.
func (c MajorityConfig) CommittedIndex(acked AckedIndexer) uint64 {
	n := len(c)
	if n == 0 {
		return math.MaxUint64
	}
	var stack [smallClusterSize]uint64
	var idxs []uint64
	if n <= len(stack) {
		idxs = stack[:n]
	} else {
		idxs = make([]uint64, n)
	}
	for i, id := range c {
		idxs[i], _ = acked.AckedIndex(id)
	}
	// Insertion sort: n is tiny and this avoids the allocation and
	// indirection of sort.Slice on the hot commit path.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && idxs[j-1] > idxs[j]; j-- {
			idxs[j-1], idxs[j] = idxs[j], idxs[j-1]
		}
	}
	// With idxs ascending, the entry at n-(n/2+1) is acknowledged by itself
	// and every voter above it: n/2+1 voters, a majority.
	return idxs[n-(n/2+1)]
}

// VoteResult counts votes: votes[id] is true for a grant, false for a
// refusal; absent voters have not answered. An empty config wins.
func (c MajorityConfig) VoteResult(votes map[uint64]bool) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	granted, missing := 0, 0
	for _, id := range c {
		v, ok := votes[id]
		switch {
		case !ok:
			missing++
		case v:
			granted++
		}
	}
	quorum := len(c)/2 + 1
	if granted >= quorum {
		return VoteWon
	}
	if granted+missing >= quorum {
		return VotePending
	}
	return VoteLost
}

// JointConfig is a configuration during a membership change: Incoming and
// Outgoing must each agree. Outside a change, Outgoing is empty and the
// JointConfig behaves as Incoming alone.
type JointConfig struct {
	Incoming MajorityConfig
	Outgoing MajorityConfig
}

// CommittedIndex returns the largest index both halves have acknowledged.
func (c JointConfig) CommittedIndex(acked AckedIndexer) uint64 {
	return min(c.Incoming.CommittedIndex(acked), c.Outgoing.CommittedIndex(acked))
}

// VoteResult is won when both halves win, lost when either loses.
func (c JointConfig) VoteResult(votes map[uint64]bool) VoteResult {
	in, out := c.Incoming.VoteResult(votes), c.Outgoing.VoteResult(votes)
	switch {
	case in == VoteWon && out == VoteWon:
		return VoteWon
	case in == VoteLost || out == VoteLost:
		return VoteLost
	}
	return VotePending
}

// Contains reports whether id votes in either half.
func (c JointConfig) Contains(id uint64) bool {
	return c.Incoming.Contains(id) || c.Outgoing.Contains(id)
}

// IDs returns every voter of either half, sorted, without duplicates.
func (c JointConfig) IDs() []uint64 {
	ids := append(slices.Clone(c.Incoming), c.Outgoing...)
	slices.Sort(ids)
	return slices.Compact(ids)
}
