package core

import (
	"errors"
	"fmt"
	"math"
)

// MaxTerm and MaxIndex are the largest term and log index a node accepts
// from a peer, persists or reaches by itself. Terms and indexes only ever
// grow by one (a campaign, an append), so half of the uint64 range is
// unreachable by an honest cluster: at one election per millisecond MaxTerm
// lasts 292 million years. Refusing anything larger keeps every term+1 and
// index+n (n bounded by a message's size) from wrapping, and keeps both
// representable as int64 for storage and metrics. Only a forged or corrupt
// message can carry a larger value, and one that did made a node wrap its
// term to 0 and a second leader get elected in a term that already had one
// (issue 13, TestForgedMaxTermCannotWrapTerms).
//
// A cluster that reaches MaxTerm (only through a forged message carrying
// exactly MaxTerm) can no longer elect a leader: a node at MaxTerm refuses
// to campaign rather than wrap. That trades liveness for safety, and is
// counted in Counters.RefusedCampaigns.
const (
	MaxTerm  uint64 = math.MaxInt64
	MaxIndex uint64 = math.MaxInt64
)

// ErrIndexExhausted: the log has reached MaxIndex; nothing more can be
// appended. Unreachable by an honest cluster (see MaxIndex).
var ErrIndexExhausted = errors.New("raft: log index space exhausted")

// errOutOfRange wraps refusals of messages carrying a term or index beyond
// MaxTerm or MaxIndex, so Step can count them apart.
var errOutOfRange = fmt.Errorf("%w: term or index out of range", ErrInvalidMessage)

func outOfRangef(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errOutOfRange}, args...)...)
}

// checkRange refuses a message any of whose terms or indexes an honest
// peer cannot have produced (paper §5.1: terms grow by one per election;
// §5.3: indexes by one per entry). It runs before anything else looks at
// the numbers, so no handler can overflow on them.
func checkRange(m *Message) error {
	if m.Term > MaxTerm || m.LogTerm > MaxTerm {
		return outOfRangef("%s term %d / log term %d above MaxTerm %d", m.Type, m.Term, m.LogTerm, MaxTerm)
	}
	// MsgPropResp carries a leader hint (a node ID, any uint64) in Index.
	if (m.Index > MaxIndex && m.Type != MsgPropResp) || m.Commit > MaxIndex || m.RejectHint > MaxIndex {
		return outOfRangef("%s index %d / commit %d / hint %d above MaxIndex %d", m.Type, m.Index, m.Commit, m.RejectHint, MaxIndex)
	}
	// Index <= MaxIndex < MaxUint64 - len, so the sum cannot wrap.
	if uint64(len(m.Entries)) > MaxIndex-m.Index && m.Type == MsgApp {
		return outOfRangef("MsgApp with %d entries after index %d passes MaxIndex %d", len(m.Entries), m.Index, MaxIndex)
	}
	for i := range m.Entries {
		if e := &m.Entries[i]; e.Index > MaxIndex || e.Term > MaxTerm {
			return outOfRangef("%s entry %d/%d above MaxIndex/MaxTerm", m.Type, e.Term, e.Index)
		}
	}
	if s := m.Snapshot; s != nil && (s.Index > MaxIndex || s.Term > MaxTerm) {
		return outOfRangef("%s snapshot %d/%d above MaxIndex/MaxTerm", m.Type, s.Term, s.Index)
	}
	return nil
}

// checkConsistent refuses index/term pairs that contradict each other
// (counted as invalid, not out of range). Index 0 is the empty log, whose
// term is 0; every real entry has a term of at least 1 (§5.3), and no
// entry of a peer's log is newer than that peer's current term (§5.1).
func checkConsistent(m *Message) error {
	switch m.Type {
	case MsgApp, MsgVote, MsgPreVote:
		if (m.Index == 0) != (m.LogTerm == 0) {
			return invalidf("%s log position %d/%d: index 0 has term 0 and only index 0 has", m.Type, m.LogTerm, m.Index)
		}
		if m.LogTerm > m.Term {
			return invalidf("%s last log term %d above message term %d", m.Type, m.LogTerm, m.Term)
		}
	case MsgAppResp:
		if m.Reject && m.LogTerm > m.Term {
			return invalidf("MsgAppResp hint term %d above message term %d", m.LogTerm, m.Term)
		}
	}
	if m.Type == MsgApp {
		for i := range m.Entries {
			if m.Entries[i].Term == 0 {
				return invalidf("MsgApp entry %d with term 0", m.Entries[i].Index)
			}
		}
	}
	return nil
}

// checkPersistedRange refuses to start from durable state beyond the
// limits: a node that accepted a forged term before this check existed
// must be replaced (rejoin as a new member), not wrap.
func checkPersistedRange(hs HardState, last uint64) error {
	if hs.Term > MaxTerm || last > MaxIndex || hs.Commit > MaxIndex {
		return fmt.Errorf("persisted term %d / last index %d / commit %d beyond MaxTerm or MaxIndex (%d): "+
			"the state was reached through a forged or corrupt message; replace this member", hs.Term, last, hs.Commit, MaxTerm)
	}
	return nil
}
