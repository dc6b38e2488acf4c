package core

import (
	"fmt"
	"slices"
)

// None is the node ID meaning "no node": no vote cast, no leader known.
// Node IDs start at 1.
const None uint64 = 0

// EntryType tells the state machine how to interpret an entry's data.
type EntryType uint8

const (
	// EntryNormal carries an application command. An EntryNormal with no
	// data is the no-op a new leader appends to commit entries of earlier
	// terms (Raft paper §5.4.2, thesis §6.4).
	EntryNormal EntryType = iota
	// EntryConfChange carries a membership change: its data is an encoded
	// ConfChange (membership.go).
	EntryConfChange
)

func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "Normal"
	case EntryConfChange:
		return "ConfChange"
	}
	return fmt.Sprintf("EntryType(%d)", uint8(t))
}

// Entry is one record of the replicated log.
type Entry struct {
	Index uint64
	Term  uint64
	Type  EntryType
	Data  []byte
}

// entryOverheadBytes approximates the fixed cost of an entry (index, term,
// type, framing) so that byte limits count empty entries too.
const entryOverheadBytes = 24

// Size is the number of bytes the entry counts for against byte limits.
func (e *Entry) Size() uint64 { return uint64(len(e.Data)) + entryOverheadBytes }

// entriesSize sums Size over ents.
func entriesSize(ents []Entry) uint64 {
	var n uint64
	for i := range ents {
		n += ents[i].Size()
	}
	return n
}

// HardState is the state that must be durable before any message that
// depends on it leaves the node (Raft paper Figure 2, "persistent state").
// Commit is persisted so a restarted node need not wait for a leader to
// learn what it has already applied; it is never required for safety.
type HardState struct {
	Term   uint64
	Vote   uint64
	Commit uint64
}

// IsZero reports whether hs is the state of a node that never ran.
func (hs HardState) IsZero() bool { return hs == HardState{} }

// Membership is a cluster configuration. Voters decide elections and
// commitment. During a joint-consensus change (thesis §4.3) OutgoingVoters
// holds the previous voter set and both sets must agree; otherwise it is
// empty. Learners receive the log but never vote and never count toward a
// quorum. See membership.go for how a configuration changes.
type Membership struct {
	Voters         []uint64
	OutgoingVoters []uint64
	Learners       []uint64
	// Members describes members (sorted by ID, at most one per member);
	// members configured by ID only may have none.
	Members []MemberInfo
	// HighestID is the largest ID ever used in this cluster. IDs are
	// never reused, so an ID at or below it that is not a member was
	// removed and stays out.
	HighestID uint64
}

// IsEmpty reports whether m names no node at all.
func (m Membership) IsEmpty() bool {
	return len(m.Voters) == 0 && len(m.OutgoingVoters) == 0 && len(m.Learners) == 0
}

// Clone returns a deep copy of m.
func (m Membership) Clone() Membership {
	return Membership{
		Voters:         slices.Clone(m.Voters),
		OutgoingVoters: slices.Clone(m.OutgoingVoters),
		Learners:       slices.Clone(m.Learners),
		Members:        slices.Clone(m.Members),
		HighestID:      m.HighestID,
	}
}

// Contains reports whether id is a voter (incoming or outgoing) or learner.
func (m Membership) Contains(id uint64) bool {
	return slices.Contains(m.Voters, id) || slices.Contains(m.OutgoingVoters, id) ||
		slices.Contains(m.Learners, id)
}

// IsVoter reports whether id votes in either half of the configuration.
func (m Membership) IsVoter(id uint64) bool {
	return slices.Contains(m.Voters, id) || slices.Contains(m.OutgoingVoters, id)
}

// IDs returns every node of m, sorted, without duplicates.
func (m Membership) IDs() []uint64 {
	ids := make([]uint64, 0, len(m.Voters)+len(m.OutgoingVoters)+len(m.Learners))
	ids = append(ids, m.Voters...)
	ids = append(ids, m.OutgoingVoters...)
	ids = append(ids, m.Learners...)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// Validate checks that m is usable as a configuration.
func (m Membership) Validate() error { return m.validate() }

// validate checks that m is usable as a configuration.
func (m Membership) validate() error {
	if len(m.Voters) == 0 {
		return fmt.Errorf("membership has no voters")
	}
	seen := map[uint64]bool{}
	for _, id := range m.Voters {
		if id == None {
			return fmt.Errorf("membership: voter ID 0 is reserved")
		}
		if seen[id] {
			return fmt.Errorf("membership: voter %d listed twice", id)
		}
		seen[id] = true
	}
	outgoing := map[uint64]bool{}
	for _, id := range m.OutgoingVoters {
		if id == None {
			return fmt.Errorf("membership: outgoing voter ID 0 is reserved")
		}
		if outgoing[id] {
			return fmt.Errorf("membership: outgoing voter %d listed twice", id)
		}
		outgoing[id] = true
	}
	for _, id := range m.Learners {
		if id == None {
			return fmt.Errorf("membership: learner ID 0 is reserved")
		}
		if seen[id] || outgoing[id] {
			return fmt.Errorf("membership: node %d is both voter and learner", id)
		}
		seen[id] = true
	}
	if n := len(m.IDs()); n > MaxMembers {
		return fmt.Errorf("membership: %d members, at most %d", n, MaxMembers)
	}
	names := map[string]uint64{}
	for i, mi := range m.Members {
		if i > 0 && m.Members[i-1].ID >= mi.ID {
			return fmt.Errorf("membership: member infos not sorted by ID at %d", mi.ID)
		}
		if !m.Contains(mi.ID) {
			return fmt.Errorf("membership: info for node %d, which is not a member", mi.ID)
		}
		if err := mi.validate(); err != nil {
			return fmt.Errorf("membership: %w", err)
		}
		// Names are unique, except that a replacement shares its name
		// with the member it replaces until that member leaves.
		if other, dup := names[mi.Name]; dup && mi.Name != "" && mi.Replaces != other {
			return fmt.Errorf("membership: nodes %d and %d are both named %q", other, mi.ID, mi.Name)
		}
		names[mi.Name] = mi.ID
	}
	if m.HighestID != 0 && m.HighestID < m.highestID() {
		return fmt.Errorf("membership: HighestID %d is below member %d", m.HighestID, m.highestID())
	}
	return nil
}

// SnapshotMeta describes a snapshot: the last log entry it covers and the
// configuration in force at that entry (Raft paper §7). The state machine's
// data travels beside it, outside the core.
type SnapshotMeta struct {
	Index      uint64
	Term       uint64
	Membership Membership
}

// IsEmpty reports whether meta describes no snapshot.
func (meta SnapshotMeta) IsEmpty() bool { return meta.Index == 0 }

// MessageType names the kind of a Message.
type MessageType uint8

// Message types. The zero value is invalid so that a decoded message with
// no type is rejected rather than mistaken for an append.
const (
	msgInvalid MessageType = iota
	// MsgApp carries entries after (Index, LogTerm) and the leader's commit
	// index (AppendEntries, paper §5.3).
	MsgApp
	// MsgAppResp acknowledges a MsgApp or snapshot: Index is the follower's
	// last matching index; with Reject set, RejectHint and LogTerm carry
	// the fast-backoff hint.
	MsgAppResp
	// MsgVote asks for a vote (RequestVote, paper §5.2).
	MsgVote
	// MsgVoteResp answers MsgVote.
	MsgVoteResp
	// MsgPreVote asks whether a vote would be granted, without changing
	// any term (thesis §9.6).
	MsgPreVote
	// MsgPreVoteResp answers MsgPreVote.
	MsgPreVoteResp
	// MsgHeartbeat asserts leadership and carries a commit index the
	// follower can safely adopt. Context carries the leader's read round.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat, echoing Context.
	MsgHeartbeatResp
	// MsgSnap tells a follower to install the snapshot described by
	// Snapshot; the data travels over a separate stream.
	MsgSnap
	// MsgProp forwards proposals from a follower to the leader.
	MsgProp
	// MsgPropResp returns forwarded proposals the leader refused, so the
	// proposer can fail them with a reason instead of waiting forever.
	MsgPropResp
	// MsgReadIndex forwards a ReadIndex request (Context is its ID) to the
	// leader.
	MsgReadIndex
	// MsgReadIndexResp answers MsgReadIndex with the read index, or Reject.
	MsgReadIndexResp
	// MsgTransferLeader forwards a transfer request; Context is the target.
	MsgTransferLeader
	// MsgTimeoutNow tells the transfer target to campaign at once
	// (thesis §3.10).
	MsgTimeoutNow
	msgTypeCount
)

var messageTypeNames = [...]string{
	msgInvalid:        "Invalid",
	MsgApp:            "MsgApp",
	MsgAppResp:        "MsgAppResp",
	MsgVote:           "MsgVote",
	MsgVoteResp:       "MsgVoteResp",
	MsgPreVote:        "MsgPreVote",
	MsgPreVoteResp:    "MsgPreVoteResp",
	MsgHeartbeat:      "MsgHeartbeat",
	MsgHeartbeatResp:  "MsgHeartbeatResp",
	MsgSnap:           "MsgSnap",
	MsgProp:           "MsgProp",
	MsgPropResp:       "MsgPropResp",
	MsgReadIndex:      "MsgReadIndex",
	MsgReadIndexResp:  "MsgReadIndexResp",
	MsgTransferLeader: "MsgTransferLeader",
	MsgTimeoutNow:     "MsgTimeoutNow",
}

func (t MessageType) String() string {
	if t < msgTypeCount {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Valid reports whether t is a known message type.
func (t MessageType) Valid() bool { return t > msgInvalid && t < msgTypeCount }

// Message is the unit of communication between nodes. Which fields are
// meaningful depends on Type; see the MessageType constants.
type Message struct {
	Type MessageType
	From uint64
	To   uint64
	Term uint64
	// LogTerm is the term of the entry at Index (MsgApp, votes), or the
	// hint term in a rejected MsgAppResp.
	LogTerm uint64
	Index   uint64
	Entries []Entry
	Commit  uint64
	Reject  bool
	// RejectHint is the follower's suggested probe index in a rejected
	// MsgAppResp.
	RejectHint uint64
	// Context carries a request ID (reads), a read round (heartbeats), a
	// transfer target, or a transfer flag (votes), by type.
	Context uint64
	// Snapshot is set on MsgSnap.
	Snapshot *SnapshotMeta
}

func (m Message) String() string {
	s := fmt.Sprintf("%s %d->%d term=%d", m.Type, m.From, m.To, m.Term)
	if m.LogTerm != 0 || m.Index != 0 {
		s += fmt.Sprintf(" log=%d/%d", m.LogTerm, m.Index)
	}
	if m.Commit != 0 {
		s += fmt.Sprintf(" commit=%d", m.Commit)
	}
	switch {
	case len(m.Entries) > 0 && m.Entries[0].Index == 0:
		s += fmt.Sprintf(" proposals=%d", len(m.Entries)) // not yet in the log
	case len(m.Entries) > 0:
		s += fmt.Sprintf(" entries=%d..%d", m.Entries[0].Index, m.Entries[len(m.Entries)-1].Index)
	}
	if m.Reject {
		s += fmt.Sprintf(" reject hint=%d/%d", m.LogTerm, m.RejectHint)
	}
	if m.Context != 0 {
		s += fmt.Sprintf(" ctx=%d", m.Context)
	}
	if m.Snapshot != nil {
		s += fmt.Sprintf(" snap=%d/%d", m.Snapshot.Term, m.Snapshot.Index)
	}
	return s
}

// Role is a node's part in the protocol.
type Role uint8

const (
	// RoleFollower answers leaders and candidates.
	RoleFollower Role = iota
	// RolePreCandidate runs a pre-vote (thesis §9.6) without changing term.
	RolePreCandidate
	// RoleCandidate runs an election (paper §5.2).
	RoleCandidate
	// RoleLeader replicates the log (paper §5.3).
	RoleLeader
)

func (r Role) String() string {
	switch r {
	case RoleFollower:
		return "follower"
	case RolePreCandidate:
		return "pre-candidate"
	case RoleCandidate:
		return "candidate"
	case RoleLeader:
		return "leader"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// SoftState is volatile state worth reporting when it changes.
type SoftState struct {
	Leader uint64
	Role   Role
}

// ReadState answers a ReadIndex request: once the state machine has applied
// Index, a read that began before the request may be served locally. Err is
// set instead when the request was refused; Index is then zero.
type ReadState struct {
	RequestID uint64
	Index     uint64
	Err       error
}

// RejectedProposal reports proposals that were accepted locally (forwarded
// to a leader) but later refused, with the reason.
type RejectedProposal struct {
	Data [][]byte
	Err  error
}
