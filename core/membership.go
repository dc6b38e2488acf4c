package core

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Membership changes (thesis ch. 4).
//
// A change is a log entry of type EntryConfChange whose data is an encoded
// ConfChange. The core activates a configuration when it hands the
// committed entry to the application in Ready.CommittedEntries (etcd's
// "on apply" rule), never when the entry is merely appended, so a
// truncated log never has to roll a configuration back. The rules that
// make this safe:
//   - One change in flight: the leader refuses a change while an earlier
//     one is not yet active (and a new leader treats everything in its log
//     as possibly holding one until it is active).
//   - More than one voter change at once goes through a joint configuration
//     (Voters = C_new, OutgoingVoters = C_old): elections and commitment
//     need a majority of both. The leader leaves it automatically with an
//     entry that has LeaveJoint set, once the joint configuration is
//     active.
//   - IDs are never reused: Membership.HighestID only grows, and a change
//     that adds an ID at or below it is refused.
//
// Membership.Apply is the one definition of what a change does; the core
// uses it when activating an entry and the driver uses it to know the
// configuration at its applied index (for snapshots).

// Limits on what a membership or a change may hold, so that a decoded
// entry cannot make a replica allocate without bound.
const (
	// MaxMembers bounds the members (voters, outgoing voters and learners
	// together) of a configuration.
	MaxMembers = 256
	// MaxMemberFieldBytes bounds a member's name and each address.
	MaxMemberFieldBytes = 512
	// MaxConfChangeOps bounds the operations of one change.
	MaxConfChangeOps = 64
)

// Errors of membership changes. ProposeConfChange returns them (wrapped
// with details); use errors.Is.
var (
	// ErrConfChangeInProgress: an earlier change (or the automatic exit
	// from a joint configuration) is not yet active.
	ErrConfChangeInProgress = errors.New("raft: a membership change is already in progress")
	// ErrInvalidConfChange: the change is malformed or impossible in the
	// current configuration (unknown member, duplicate, last voter
	// removed, ...).
	ErrInvalidConfChange = errors.New("raft: invalid membership change")
	// ErrIDReused: the change adds an ID that is or was a member; IDs are
	// never reused (Membership.HighestID).
	ErrIDReused = errors.New("raft: member ID was already used")
	// ErrLearnerBehind: the learner to promote is not caught up with the
	// leader's log (Config.MaxPromoteLagEntries) or not heard from.
	ErrLearnerBehind = errors.New("raft: learner is not caught up")
	// ErrQuorumUnreachable: the leader does not currently hear from
	// enough voters of the resulting configuration to commit in it.
	ErrQuorumUnreachable = errors.New("raft: the new configuration's quorum is not reachable")
	// ErrRemoved: this node was removed from the configuration.
	ErrRemoved = errors.New("raft: this node was removed from the cluster")
)

// MemberInfo is what the cluster knows about a member besides its ID. It
// travels in the replicated configuration, so any node can reach a member
// added after it started.
type MemberInfo struct {
	ID uint64
	// Name is unique among members (a StatefulSet pod name, a host name).
	// May be empty for members configured by ID only.
	Name string
	// PeerAddr is where the member's transport listens (host:port).
	PeerAddr string
	// ClientAddr is where the member serves clients, if it does.
	ClientAddr string
	// AutoPromote marks a learner the leader's driver promotes to voter
	// once it has stayed caught up (the learner-first join).
	AutoPromote bool
	// Replaces names the member this learner replaces (a pod back with an
	// empty volume under the same name): promoting it removes that member
	// in the same change.
	Replaces uint64
	// Incarnation is a random number a joining node draws once for its
	// empty data directory. It makes a join idempotent (a retried join
	// with the same name and incarnation finds the member it already
	// added) and tells a retry from a replacement (same name, new
	// incarnation: the old data is gone). Zero for bootstrap members.
	Incarnation uint64
}

// ConfChangeType names one operation of a ConfChange.
type ConfChangeType uint8

// Operations of a ConfChange. The zero value is invalid.
const (
	confChangeInvalid ConfChangeType = iota
	// ConfAddLearner adds Member (a new ID) as a learner.
	ConfAddLearner
	// ConfAddVoter adds Member (a new ID) as a voter.
	ConfAddVoter
	// ConfPromote makes learner Member.ID a voter.
	ConfPromote
	// ConfRemove removes Member.ID (voter or learner).
	ConfRemove
	confChangeTypeCount
)

func (t ConfChangeType) String() string {
	switch t {
	case ConfAddLearner:
		return "AddLearner"
	case ConfAddVoter:
		return "AddVoter"
	case ConfPromote:
		return "Promote"
	case ConfRemove:
		return "Remove"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChangeOp is one operation of a change. For ConfPromote and
// ConfRemove only Member.ID is used.
type ConfChangeOp struct {
	Type   ConfChangeType
	Member MemberInfo
}

// ConfChange is the data of an EntryConfChange entry.
type ConfChange struct {
	// Ops are applied together. If they change more than one voter the
	// result is a joint configuration.
	Ops []ConfChangeOp
	// LeaveJoint ends a joint configuration (Ops must be empty). The
	// leader proposes it by itself.
	LeaveJoint bool
	// Replace, when set, replaces the configuration outright. Only the
	// bootstrap entry and offline recovery (force-new-cluster) write it;
	// ProposeConfChange refuses it.
	Replace *Membership
}

func (cc ConfChange) String() string {
	switch {
	case cc.Replace != nil:
		return fmt.Sprintf("Replace(voters=%v learners=%v)", cc.Replace.Voters, cc.Replace.Learners)
	case cc.LeaveJoint:
		return "LeaveJoint"
	}
	s := ""
	for i, op := range cc.Ops {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%s(%d", op.Type, op.Member.ID)
		if op.Member.Name != "" {
			s += " " + op.Member.Name
		}
		s += ")"
	}
	return s
}

// Info returns the MemberInfo of id, and whether there is one.
func (m Membership) Info(id uint64) (MemberInfo, bool) {
	i, ok := slices.BinarySearchFunc(m.Members, id, func(mi MemberInfo, id uint64) int {
		switch {
		case mi.ID < id:
			return -1
		case mi.ID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return MemberInfo{ID: id}, false
	}
	return m.Members[i], true
}

// ByName returns the member called name, and whether there is one.
func (m Membership) ByName(name string) (MemberInfo, bool) {
	for _, mi := range m.Members {
		if mi.Name == name && name != "" {
			return mi, true
		}
	}
	return MemberInfo{}, false
}

// IsJoint reports whether m is a joint configuration.
func (m Membership) IsJoint() bool { return len(m.OutgoingVoters) > 0 }

// WasRemoved reports whether id is at or below HighestID and not a
// member: it was removed (or its ID skipped) and may never come back.
func (m Membership) WasRemoved(id uint64) bool {
	return id != None && id <= m.highestID() && !m.Contains(id)
}

// highestID is HighestID, or the largest member ID if that is larger
// (configurations built by hand may leave HighestID zero).
func (m Membership) highestID() uint64 {
	h := m.HighestID
	for _, ids := range [][]uint64{m.Voters, m.OutgoingVoters, m.Learners} {
		for _, id := range ids {
			h = max(h, id)
		}
	}
	return h
}

// Apply returns the configuration that results from cc, or an error
// wrapping ErrInvalidConfChange or ErrIDReused. It is pure: every replica
// computes the same result from the same entry. It does not check what
// only the leader knows (progress, reachability, changes in flight).
func (m Membership) Apply(cc ConfChange) (Membership, error) {
	if cc.Replace != nil {
		if len(cc.Ops) > 0 || cc.LeaveJoint {
			return m, fmt.Errorf("%w: Replace with other operations", ErrInvalidConfChange)
		}
		r := cc.Replace.canonical()
		r.HighestID = max(r.HighestID, m.highestID())
		if err := r.validate(); err != nil {
			return m, fmt.Errorf("%w: %w", ErrInvalidConfChange, err)
		}
		return r, nil
	}
	if cc.LeaveJoint {
		if len(cc.Ops) > 0 {
			return m, fmt.Errorf("%w: LeaveJoint with operations", ErrInvalidConfChange)
		}
		if !m.IsJoint() {
			return m, fmt.Errorf("%w: LeaveJoint outside a joint configuration", ErrInvalidConfChange)
		}
		out := m.Clone()
		out.HighestID = m.highestID()
		out.OutgoingVoters = nil
		out.Members = slices.DeleteFunc(out.Members, func(mi MemberInfo) bool { return !out.Contains(mi.ID) })
		return out, nil
	}
	if len(cc.Ops) == 0 {
		return m, fmt.Errorf("%w: no operations", ErrInvalidConfChange)
	}
	if len(cc.Ops) > MaxConfChangeOps {
		return m, fmt.Errorf("%w: %d operations, at most %d", ErrInvalidConfChange, len(cc.Ops), MaxConfChangeOps)
	}
	if m.IsJoint() {
		return m, fmt.Errorf("%w: the configuration is joint; only LeaveJoint may follow", ErrInvalidConfChange)
	}
	out := m.Clone()
	out.HighestID = m.highestID()
	touched := map[uint64]bool{}
	for _, op := range cc.Ops {
		id := op.Member.ID
		if id == None {
			return m, fmt.Errorf("%w: %s of ID 0", ErrInvalidConfChange, op.Type)
		}
		if touched[id] {
			return m, fmt.Errorf("%w: node %d named twice", ErrInvalidConfChange, id)
		}
		touched[id] = true
		switch op.Type {
		case ConfAddLearner, ConfAddVoter:
			if id <= out.HighestID {
				return m, fmt.Errorf("%w: node %d (IDs up to %d are taken)", ErrIDReused, id, out.HighestID)
			}
			if err := op.Member.validate(); err != nil {
				return m, fmt.Errorf("%w: %w", ErrInvalidConfChange, err)
			}
			if _, dup := out.ByName(op.Member.Name); dup && op.Member.Replaces == None {
				return m, fmt.Errorf("%w: name %q is taken", ErrInvalidConfChange, op.Member.Name)
			}
			if op.Member.Replaces != None && !m.Contains(op.Member.Replaces) {
				return m, fmt.Errorf("%w: node %d replaces %d, which is not a member", ErrInvalidConfChange, id, op.Member.Replaces)
			}
			if op.Type == ConfAddLearner {
				out.Learners = append(out.Learners, id)
			} else {
				out.Voters = append(out.Voters, id)
			}
			out.HighestID = max(out.HighestID, id)
			mi := op.Member
			out.Members = append(out.Members, mi)
		case ConfPromote:
			if !slices.Contains(out.Learners, id) {
				return m, fmt.Errorf("%w: node %d is not a learner", ErrInvalidConfChange, id)
			}
			out.Learners = slices.DeleteFunc(out.Learners, func(x uint64) bool { return x == id })
			out.Voters = append(out.Voters, id)
		case ConfRemove:
			if !out.Contains(id) {
				return m, fmt.Errorf("%w: node %d is not a member", ErrInvalidConfChange, id)
			}
			out.Voters = slices.DeleteFunc(out.Voters, func(x uint64) bool { return x == id })
			out.Learners = slices.DeleteFunc(out.Learners, func(x uint64) bool { return x == id })
		default:
			return m, fmt.Errorf("%w: operation %v", ErrInvalidConfChange, op.Type)
		}
	}
	slices.Sort(out.Voters)
	slices.Sort(out.Learners)
	if len(out.Voters) == 0 {
		return m, fmt.Errorf("%w: the change leaves no voter", ErrInvalidConfChange)
	}
	if symmetricDifference(m.Voters, out.Voters) > 1 {
		// Joint consensus (thesis §4.3): old voters stay as the outgoing
		// half until LeaveJoint, and keep their MemberInfo meanwhile.
		out.OutgoingVoters = slices.Clone(m.Voters)
	}
	out.Members = slices.DeleteFunc(out.Members, func(mi MemberInfo) bool { return !out.Contains(mi.ID) })
	slices.SortFunc(out.Members, func(a, b MemberInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if err := out.validate(); err != nil {
		return m, fmt.Errorf("%w: %w", ErrInvalidConfChange, err)
	}
	return out, nil
}

// canonical returns a copy of m with its ID lists and member infos sorted
// by ID and HighestID at least its largest member: the form every replica
// computes alike, whatever order a hand-built configuration used.
func (m Membership) canonical() Membership {
	c := m.Clone()
	slices.Sort(c.Voters)
	slices.Sort(c.OutgoingVoters)
	slices.Sort(c.Learners)
	slices.SortStableFunc(c.Members, func(a, b MemberInfo) int { return cmp.Compare(a.ID, b.ID) })
	c.HighestID = c.highestID()
	return c
}

// symmetricDifference counts IDs in exactly one of the sorted sets a, b.
func symmetricDifference(a, b []uint64) int {
	n := 0
	for _, x := range a {
		if !slices.Contains(b, x) {
			n++
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			n++
		}
	}
	return n
}

// validate checks one MemberInfo's fields.
func (mi MemberInfo) validate() error {
	for _, f := range []struct{ name, v string }{{"name", mi.Name}, {"peer address", mi.PeerAddr}, {"client address", mi.ClientAddr}} {
		if len(f.v) > MaxMemberFieldBytes {
			return fmt.Errorf("member %d: %s is %d bytes, at most %d", mi.ID, f.name, len(f.v), MaxMemberFieldBytes)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("member %d: %s is not UTF-8", mi.ID, f.name)
		}
	}
	if mi.Replaces == mi.ID && mi.ID != None {
		return fmt.Errorf("member %d replaces itself", mi.ID)
	}
	return nil
}

// Encoding. Memberships and changes are encoded by the core, so every
// layer that stores or sends one (WAL, snapshots, transport, backups,
// log entries) shares one format and one set of limits. Version byte,
// then uvarints and length-prefixed strings; decoding checks every length
// against the limits above before allocating.

const (
	membershipEncodingV1 = 1
	confChangeEncodingV1 = 1
)

// Marshal encodes m. The encoding is canonical: ID lists are written
// sorted (Members must already be sorted by ID, as Validate requires).
func (m Membership) Marshal() []byte {
	return m.appendTo(make([]byte, 0, 16+8*len(m.Members)))
}

// appendTo encodes m canonically: ID lists sorted, so that memberships
// that differ only in order encode to the same bytes (every node that
// bootstraps with the same membership writes an identical entry 1, which
// log matching needs).
func (m Membership) appendTo(b []byte) []byte {
	b = append(b, membershipEncodingV1)
	for _, ids := range [][]uint64{m.Voters, m.OutgoingVoters, m.Learners} {
		if !slices.IsSorted(ids) {
			ids = slices.Sorted(slices.Values(ids))
		}
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = binary.AppendUvarint(b, id)
		}
	}
	b = binary.AppendUvarint(b, m.HighestID)
	b = binary.AppendUvarint(b, uint64(len(m.Members)))
	for _, mi := range m.Members {
		b = mi.appendTo(b)
	}
	return b
}

func (mi MemberInfo) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, mi.ID)
	for _, s := range []string{mi.Name, mi.PeerAddr, mi.ClientAddr} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	flags := uint64(0)
	if mi.AutoPromote {
		flags |= 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, mi.Replaces)
	return binary.AppendUvarint(b, mi.Incarnation)
}

// UnmarshalMembership decodes and validates a membership encoded by
// Membership.Marshal. An empty input decodes to the empty membership.
func UnmarshalMembership(b []byte) (Membership, error) {
	if len(b) == 0 {
		return Membership{}, nil
	}
	d := decoder{b: b}
	m := d.membership()
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Membership{}, fmt.Errorf("decoding membership: %w", d.err)
	}
	if !m.IsEmpty() {
		if err := m.validate(); err != nil {
			return Membership{}, fmt.Errorf("decoding membership: %w", err)
		}
	}
	return m, nil
}

// Marshal encodes cc as the data of an EntryConfChange entry.
func (cc ConfChange) Marshal() []byte {
	b := []byte{confChangeEncodingV1}
	var flags uint64
	if cc.LeaveJoint {
		flags |= 1
	}
	if cc.Replace != nil {
		flags |= 2
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(len(cc.Ops)))
	for _, op := range cc.Ops {
		b = append(b, byte(op.Type))
		b = op.Member.appendTo(b)
	}
	if cc.Replace != nil {
		b = cc.Replace.appendTo(b)
	}
	return b
}

// UnmarshalConfChange decodes the data of an EntryConfChange entry. It
// checks the encoding and the limits, not whether the change applies.
func UnmarshalConfChange(b []byte) (ConfChange, error) {
	d := decoder{b: b}
	var cc ConfChange
	if v := d.byte(); d.err == nil && v != confChangeEncodingV1 {
		d.fail("unknown conf change encoding version %d", v)
	}
	flags := d.uvarint()
	if d.err == nil && flags&^3 != 0 {
		d.fail("unknown flags %#x", flags)
	}
	cc.LeaveJoint = flags&1 != 0
	n := d.count(MaxConfChangeOps, "operations")
	for i := 0; i < n && d.err == nil; i++ {
		t := ConfChangeType(d.byte())
		if d.err == nil && (t == confChangeInvalid || t >= confChangeTypeCount) {
			d.fail("operation %d has unknown type %d", i, uint8(t))
		}
		cc.Ops = append(cc.Ops, ConfChangeOp{Type: t, Member: d.memberInfo()})
	}
	if flags&2 != 0 && d.err == nil {
		r := d.membership()
		cc.Replace = &r
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return ConfChange{}, fmt.Errorf("%w: decoding conf change: %w", ErrInvalidConfChange, d.err)
	}
	return cc, nil
}

// decoder reads the encoding above; the first error sticks and every
// later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length and checks it against limit and against the bytes
// left (every counted item takes at least one byte).
func (d *decoder) count(limit int, what string) int {
	v := d.uvarint()
	if d.err == nil && (v > uint64(limit) || v > uint64(len(d.b))) {
		d.fail("%d %s, at most %d", v, what, limit)
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.count(MaxMemberFieldBytes, "bytes in a member field")
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) ids() []uint64 {
	n := d.count(MaxMembers, "IDs")
	var ids []uint64
	for i := 0; i < n && d.err == nil; i++ {
		ids = append(ids, d.uvarint())
	}
	return ids
}

func (d *decoder) memberInfo() MemberInfo {
	mi := MemberInfo{ID: d.uvarint()}
	mi.Name, mi.PeerAddr, mi.ClientAddr = d.string(), d.string(), d.string()
	flags := d.uvarint()
	if d.err == nil && flags&^1 != 0 {
		d.fail("member %d has unknown flags %#x", mi.ID, flags)
	}
	mi.AutoPromote = flags&1 != 0
	mi.Replaces = d.uvarint()
	mi.Incarnation = d.uvarint()
	if d.err == nil {
		if err := mi.validate(); err != nil {
			d.fail("%v", err)
		}
	}
	return mi
}

func (d *decoder) membership() Membership {
	if v := d.byte(); d.err == nil && v != membershipEncodingV1 {
		d.fail("unknown membership encoding version %d", v)
	}
	var m Membership
	m.Voters, m.OutgoingVoters, m.Learners = d.ids(), d.ids(), d.ids()
	m.HighestID = d.uvarint()
	n := d.count(MaxMembers, "member infos")
	for i := 0; i < n && d.err == nil; i++ {
		m.Members = append(m.Members, d.memberInfo())
	}
	return m
}
