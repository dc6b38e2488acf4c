package core_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestStepRejectsMalformed: messages no correct peer sends are refused
// with ErrInvalidMessage, counted, and change nothing.
func TestStepRejectsMalformed(t *testing.T) {
	cases := []struct {
		name string
		m    core.Message
	}{
		{"unknown type", core.Message{Type: 200, From: 2, To: 1, Term: 5}},
		{"zero type", core.Message{Type: 0, From: 2, To: 1, Term: 5}},
		{"wrong recipient", core.Message{Type: core.MsgHeartbeat, From: 2, To: 7, Term: 5}},
		{"no sender", core.Message{Type: core.MsgHeartbeat, From: 0, To: 1, Term: 5}},
		{"from self", core.Message{Type: core.MsgHeartbeat, From: 1, To: 1, Term: 5}},
		// A response only ever comes from a member the node sent to.
		// (Leader messages and vote requests from non-members are
		// accepted: membership_test.go.)
		{"non-member sender", core.Message{Type: core.MsgAppResp, From: 9, To: 1, Term: 50}},
		{"term zero", core.Message{Type: core.MsgApp, From: 2, To: 1}},
		{"entries with a gap", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 5, Index: 1, LogTerm: 1,
			Entries: []core.Entry{{Index: 3, Term: 5}}}},
		{"entry term above message term", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 5, Index: 1, LogTerm: 1,
			Entries: []core.Entry{{Index: 2, Term: 6}}}},
		{"entry terms decreasing", core.Message{Type: core.MsgApp, From: 2, To: 1, Term: 5, Index: 1, LogTerm: 3,
			Entries: []core.Entry{{Index: 2, Term: 2}}}},
		{"snapshot message without snapshot", core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 5}},
		{"snapshot with no voters", core.Message{Type: core.MsgSnap, From: 2, To: 1, Term: 5,
			Snapshot: &core.SnapshotMeta{Index: 10, Term: 4}}},
		{"empty proposal", core.Message{Type: core.MsgProp, From: 2, To: 1, Term: 5}},
		{"forwarded configuration change", core.Message{Type: core.MsgProp, From: 2, To: 1, Term: 5,
			Entries: []core.Entry{{Type: core.EntryConfChange, Data: core.ConfChange{LeaveJoint: true}.Marshal()}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSolo(t, core.HardState{Term: 5}, entriesWithTerms(1), nil)
			before := s.n.Status()
			err := s.step(tc.m)
			if !errors.Is(err, core.ErrInvalidMessage) {
				t.Fatalf("Step = %v, want ErrInvalidMessage", err)
			}
			after := s.n.Status()
			if after.Counters.InvalidMessages+after.Counters.UnknownSenders != 1 {
				t.Fatalf("refusal not counted: %+v", after.Counters)
			}
			after.Counters = before.Counters
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("state changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if s.n.HasReady() {
				t.Fatal("a refused message produced work")
			}
		})
	}
}

// FuzzStep feeds arbitrary message sequences to a leader and a follower:
// nothing may panic, and the node's basic invariants hold after each step.
func FuzzStep(f *testing.F) {
	f.Add([]byte{1, 2, 5, 0, 1, 1, 0})
	f.Add([]byte{2, 3, 9, 200, 7, 1, 0, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add([]byte{10, 2, 1, 1, 1, 1, 1, 11, 3, 2, 2, 2, 2, 2})
	f.Add([]byte{16, 2, 255, 0, 0, 0, 0, 7, 2, 250, 0, 0, 0, 0, 16, 3, 248, 0, 0, 0, 0}) // huge terms, MsgTimeoutNow
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lead := range []bool{false, true} {
			s := newSolo(t, core.HardState{Term: 2}, entriesWithTerms(1, 2), nil)
			if lead {
				electSolo(t, s, 2)
			}
			rest := data
			term := s.n.Term()
			for len(rest) >= 7 && len(s.out) < 10000 {
				var m core.Message
				m, rest = decodeFuzzMessage(rest)
				_ = s.step(m)
				s.flush()
				st := s.n.Status()
				if st.Term < term || st.Term > core.MaxTerm {
					t.Fatalf("term went from %d to %d after %v (§5.1: terms only grow, never past MaxTerm)", term, st.Term, m)
				}
				term = st.Term
				if st.Commit > st.LastIndex || st.Applied > st.Commit {
					t.Fatalf("invariant broken after %v: commit %d applied %d last %d", m, st.Commit, st.Applied, st.LastIndex)
				}
				if err := s.n.Err(); err != nil {
					t.Fatalf("network input caused a storage failure: %v", err)
				}
			}
		}
	})
}

// decodeFuzzMessage builds a message from fuzz bytes; fields are kept
// small so they often hit real indexes and terms, except that a term byte
// of 248 or more names a term at or near the top of the range.
func decodeFuzzMessage(b []byte) (core.Message, []byte) {
	term := uint64(b[2] % 8)
	if b[2] >= 248 {
		term = core.MaxTerm - 4 + uint64(b[2]-248)*(1<<62) // MaxTerm-4 .. beyond MaxUint64/2
	}
	m := core.Message{
		Type:    core.MessageType(b[0] % 20),
		From:    uint64(b[1] % 5),
		To:      1,
		Term:    term,
		LogTerm: uint64(b[3] % 8),
		Index:   uint64(b[4] % 12),
		Commit:  uint64(b[5] % 12),
		Reject:  b[6]&1 == 1,
	}
	m.Context = uint64(b[6] >> 1)
	b = b[7:]
	if m.Type == core.MsgSnap && len(b) > 0 {
		m.Snapshot = &core.SnapshotMeta{Index: uint64(b[0] % 12), Term: uint64(b[0] % 4),
			Membership: core.Membership{Voters: []uint64{1, 2, 3}}}
		b = b[1:]
	}
	if len(b) >= 2 {
		n := int(b[0] % 4)
		b = b[1:]
		for i := 0; i < n && len(b) >= 2; i++ {
			e := core.Entry{
				Index: m.Index + uint64(i) + 1 + uint64(b[0]%2),
				Term:  uint64(b[1] % 8),
				Data:  binary.AppendUvarint(nil, uint64(i)),
			}
			if b[1] >= 128 {
				// A configuration entry: garbage, or a change that may or
				// may not apply (and may remove this node).
				e.Type = core.EntryConfChange
				id := uint64(1 + b[0]%5)
				switch b[1] % 4 {
				case 1:
					e.Data = core.ConfChange{LeaveJoint: true}.Marshal()
				case 2:
					e.Data = core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: id + 3}}}}.Marshal()
				case 3:
					e.Data = core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfRemove, Member: core.MemberInfo{ID: id}}}}.Marshal()
				}
			}
			m.Entries = append(m.Entries, e)
			b = b[2:]
		}
	}
	return m, b
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name   string
		tweak  func(*core.Config)
		errHas string
	}{
		{"defaults are valid", func(*core.Config) {}, ""},
		{"zero ID", func(c *core.Config) { c.ID = 0 }, "ID must be non-zero"},
		{"election too short", func(c *core.Config) { c.ElectionTicks = 1 }, "ElectionTicks"},
		{"heartbeat not below election", func(c *core.Config) { c.HeartbeatTicks = 10 }, "HeartbeatTicks (10) must be less"},
		{"lease without check quorum", func(c *core.Config) { c.ReadMode = core.ReadLease; c.CheckQuorum = false }, "requires CheckQuorum"},
		{"drift too large", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = 10 }, "MaxClockDriftTicks (10) at most ElectionTicks - 2 (8)"},
		// Issue 13 item 6c: a margin of 0 was accepted.
		{"lease without drift margin", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = 0 }, "MaxClockDriftTicks of at least 1"},
		{"negative drift margin", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = -1 }, "MaxClockDriftTicks of at least 1"},
		{"lease of zero ticks", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = 9 }, "at most ElectionTicks - 2"},
		{"largest drift margin", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = 8 }, ""},
		{"smallest drift margin", func(c *core.Config) { c.ReadMode = core.ReadLease; c.MaxClockDriftTicks = 1 }, ""},
		{"lease on default timeouts", func(c *core.Config) { c.ReadMode = core.ReadLease; c.ElectionTicks = 5 }, ""},
		{"lease with election of 2 ticks", func(c *core.Config) { c.ReadMode = core.ReadLease; c.ElectionTicks = 2; c.HeartbeatTicks = 1 }, "at most ElectionTicks - 2 (0)"},
		{"no drift margin in safe mode", func(c *core.Config) { c.MaxClockDriftTicks = 0 }, ""},
		{"largest drift in safe mode", func(c *core.Config) { c.MaxClockDriftTicks = 9 }, ""},
		{"negative drift in safe mode", func(c *core.Config) { c.MaxClockDriftTicks = -1 }, "MaxClockDriftTicks must be in [0, ElectionTicks), got -1"},
		{"drift of an election timeout in safe mode", func(c *core.Config) { c.MaxClockDriftTicks = 10 }, "MaxClockDriftTicks must be in [0, ElectionTicks), got 10"},
		{"no inflight", func(c *core.Config) { c.MaxInflightMsgs = 0 }, "MaxInflightMsgs"},
		{"message above window", func(c *core.Config) { c.MaxMsgBytes = c.MaxInflightBytes + 1 }, "must not exceed MaxInflightBytes"},
		{"no uncommitted budget", func(c *core.Config) { c.MaxUncommittedBytes = 0 }, "MaxUncommittedBytes"},
		{"duplicate voter", func(c *core.Config) { c.Membership.Voters = []uint64{1, 1} }, "listed twice"},
		{"voter and learner", func(c *core.Config) { c.Membership.Learners = []uint64{2} }, "both voter and learner"},
		{"unknown read mode", func(c *core.Config) { c.ReadMode = 9 }, "unknown ReadMode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := core.DefaultConfig(1, 1, 2, 3)
			cfg.ElectionTicks = 10
			tc.tweak(&cfg)
			err := cfg.Validate()
			if tc.errHas == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.errHas)
			}
			// One mistake, one problem: no consequence reported twice.
			if probs := core.FieldErrors(err); len(probs) != 1 || probs[0].Field == "" {
				t.Fatalf("FieldErrors = %v, want one problem naming its field", probs)
			}
		})
	}
}

// TestConfigValidateFields: every problem names the field it is about, so
// that an embedder can map it to its own setting (kvnode's flags).
func TestConfigValidateFields(t *testing.T) {
	cases := []struct {
		name  string
		tweak func(*core.Config)
		want  []string // fields, in order
	}{
		{"valid", func(*core.Config) {}, nil},
		{"ID", func(c *core.Config) { c.ID = 0 }, []string{"ID"}},
		{"election", func(c *core.Config) { c.ElectionTicks = 1 }, []string{"ElectionTicks"}},
		{"heartbeat zero", func(c *core.Config) { c.HeartbeatTicks = 0 }, []string{"HeartbeatTicks"}},
		{"heartbeat vs election", func(c *core.Config) { c.HeartbeatTicks = 10 }, []string{"HeartbeatTicks"}},
		{"both ticks", func(c *core.Config) { c.ElectionTicks, c.HeartbeatTicks = 0, 0 }, []string{"ElectionTicks", "HeartbeatTicks"}},
		{"lease without quorum check", func(c *core.Config) { c.ReadMode, c.CheckQuorum = core.ReadLease, false }, []string{"ReadMode"}},
		{"lease drift", func(c *core.Config) { c.ReadMode, c.MaxClockDriftTicks = core.ReadLease, 9 }, []string{"MaxClockDriftTicks"}},
		{"safe drift", func(c *core.Config) { c.MaxClockDriftTicks = -1 }, []string{"MaxClockDriftTicks"}},
		{"read mode", func(c *core.Config) { c.ReadMode = 7 }, []string{"ReadMode"}},
		{"limits", func(c *core.Config) {
			c.MaxInflightMsgs, c.MaxInflightBytes, c.MaxUncommittedBytes = 0, 0, 0
			c.MaxCommittedBytesPerReady, c.MaxPendingReads = 0, 0
		}, []string{"MaxInflightMsgs", "MaxInflightBytes", "MaxUncommittedBytes", "MaxCommittedBytesPerReady", "MaxPendingReads"}},
		{"message above window", func(c *core.Config) { c.MaxMsgBytes = c.MaxInflightBytes + 1 }, []string{"MaxMsgBytes"}},
		{"apply bound", func(c *core.Config) { c.AsyncStorageWrites, c.MaxApplyingBytes = true, 0 }, []string{"MaxApplyingBytes"}},
		{"membership", func(c *core.Config) { c.Membership.Voters = []uint64{1, 1} }, []string{"Membership"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := core.DefaultConfig(1, 1, 2, 3)
			cfg.ElectionTicks = 10
			tc.tweak(&cfg)
			err := cfg.Validate()
			var got []string
			for _, p := range core.FieldErrors(err) {
				got = append(got, p.Field)
				if !strings.Contains(err.Error(), p.Err.Error()) {
					t.Errorf("problem %q is not in the error %q", p.Err, err)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("fields %q, want %q (error: %v)", got, tc.want, err)
			}
			if err != nil {
				var fe *core.FieldError
				if !errors.As(err, &fe) || fe.Field != tc.want[0] {
					t.Fatalf("errors.As finds %v, want the first problem's field %s", fe, tc.want[0])
				}
			}
		})
	}
}

// TestFieldErrors: nested field errors (the driver reports the core's
// under TuneRaft) come out with their path, wrappers fall away, and an
// error that names no field keeps its whole message.
func TestFieldErrors(t *testing.T) {
	if got := core.FieldErrors(nil); got != nil {
		t.Fatalf("FieldErrors(nil) = %v", got)
	}
	inner := errors.Join(&core.FieldError{Field: "ElectionTicks", Err: errors.New("e")}, errors.New("loose"))
	err := fmt.Errorf("invalid driver config: %w", errors.Join(
		&core.FieldError{Field: "TickInterval", Err: errors.New("t")},
		&core.FieldError{Field: "TuneRaft", Err: fmt.Errorf("invalid raft config: %w", inner)},
		fmt.Errorf("context: %w", errors.New("plain")),
	))
	var got []string
	for _, p := range core.FieldErrors(err) {
		got = append(got, p.Field+"="+p.Err.Error())
	}
	want := []string{"TickInterval=t", "TuneRaft.ElectionTicks=e", "TuneRaft=loose", "=context: plain"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FieldErrors = %q, want %q", got, want)
	}
	if (&core.FieldError{Field: "X"}).Error() == "" {
		t.Fatal("a FieldError without Err has no message")
	}
}
