package core_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/rafty-db/rafty/core"
)

func codecSeeds() (memberships []core.Membership, changes []core.ConfChange) {
	full := core.Membership{
		Voters: []uint64{1, 2, 5}, OutgoingVoters: []uint64{1, 2, 3}, Learners: []uint64{7},
		Members: []core.MemberInfo{
			{ID: 1, Name: "rafty-0", PeerAddr: "rafty-0.rafty:7000", ClientAddr: "rafty-0.rafty:9000"},
			{ID: 5, Name: "rafty-3", PeerAddr: "rafty-3.rafty:7000", Incarnation: 0xdeadbeef},
			{ID: 7, Name: "rafty-2", AutoPromote: true, Replaces: 3, Incarnation: 42},
		},
		HighestID: 9,
	}
	memberships = []core.Membership{{}, {Voters: []uint64{1}}, {Voters: []uint64{3, 1, 2}}, full}
	changes = []core.ConfChange{
		{LeaveJoint: true},
		{Replace: &core.Membership{Voters: []uint64{1, 2, 3}, HighestID: 3}},
		{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: full.Members[2]}}},
		{Ops: []core.ConfChangeOp{{Type: core.ConfPromote, Member: core.MemberInfo{ID: 7}}, {Type: core.ConfRemove, Member: core.MemberInfo{ID: 3}}}},
		{Ops: []core.ConfChangeOp{{Type: core.ConfAddVoter, Member: core.MemberInfo{ID: 10, Name: "x"}}}},
	}
	return memberships, changes
}

// TestConfChangeCodecRoundTrip: what Marshal writes decodes to the same
// value (ID lists in canonical, sorted order).
func TestConfChangeCodecRoundTrip(t *testing.T) {
	memberships, changes := codecSeeds()
	for _, m := range memberships {
		got, err := core.UnmarshalMembership(m.Marshal())
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if !bytes.Equal(got.Marshal(), m.Marshal()) || len(got.IDs()) != len(m.IDs()) {
			t.Fatalf("round trip of %+v gave %+v", m, got)
		}
	}
	for _, cc := range changes {
		got, err := core.UnmarshalConfChange(cc.Marshal())
		if err != nil {
			t.Fatalf("%v: %v", cc, err)
		}
		if !bytes.Equal(got.Marshal(), cc.Marshal()) || got.String() != cc.String() {
			t.Fatalf("round trip of %v gave %v", cc, got)
		}
	}
	// Order does not change the bytes (the bootstrap entry relies on it).
	a := core.Membership{Voters: []uint64{3, 1, 2}}.Marshal()
	b := core.Membership{Voters: []uint64{1, 2, 3}}.Marshal()
	if !bytes.Equal(a, b) {
		t.Fatalf("encoding depends on order: %x vs %x", a, b)
	}
}

// FuzzUnmarshalMembership: any input either fails to decode or decodes
// to a valid membership whose encoding is a fixed point; nothing panics.
func FuzzUnmarshalMembership(f *testing.F) {
	memberships, _ := codecSeeds()
	for _, m := range memberships {
		f.Add(m.Marshal())
	}
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := core.UnmarshalMembership(data)
		if err != nil {
			return
		}
		if !m.IsEmpty() {
			if err := m.Validate(); err != nil {
				t.Fatalf("decoded an invalid membership %+v: %v", m, err)
			}
		}
		enc := m.Marshal()
		m2, err := core.UnmarshalMembership(enc)
		if err != nil {
			t.Fatalf("re-decoding %x: %v", enc, err)
		}
		if !bytes.Equal(m2.Marshal(), enc) {
			t.Fatalf("encoding not a fixed point: %+v -> %+v", m, m2)
		}
		if !reflect.DeepEqual(m2.IDs(), m.IDs()) || m2.HighestID != m.HighestID || len(m2.Members) != len(m.Members) {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}

// FuzzUnmarshalConfChange: any input either fails to decode (with
// ErrInvalidConfChange) or decodes to a change whose encoding is a fixed
// point and that Apply judges without panicking.
func FuzzUnmarshalConfChange(f *testing.F) {
	_, changes := codecSeeds()
	for _, cc := range changes {
		f.Add(cc.Marshal())
	}
	f.Add([]byte{1, 0, 0x40})
	f.Add([]byte{1, 4})
	f.Add([]byte{})
	base := core.Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{7}, HighestID: 7}
	f.Fuzz(func(t *testing.T, data []byte) {
		cc, err := core.UnmarshalConfChange(data)
		if err != nil {
			return
		}
		enc := cc.Marshal()
		cc2, err := core.UnmarshalConfChange(enc)
		if err != nil {
			t.Fatalf("re-decoding %x: %v", enc, err)
		}
		// Replace's ID lists come back sorted; everything else as is.
		if !bytes.Equal(cc2.Marshal(), enc) || !reflect.DeepEqual(cc2.Ops, cc.Ops) || cc2.LeaveJoint != cc.LeaveJoint ||
			(cc2.Replace == nil) != (cc.Replace == nil) {
			t.Fatalf("round trip changed %v into %v", cc, cc2)
		}
		if next, err := base.Apply(cc); err == nil {
			if err := next.Validate(); err != nil {
				t.Fatalf("Apply(%v) produced an invalid membership %+v: %v", cc, next, err)
			}
		}
	})
}
