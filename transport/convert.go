package transport

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rafty-db/rafty/core"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// This file converts core messages to and from the wire format of
// transportpb/transport.proto by hand, with protowire, instead of through
// the generated structs. The generated path costs an allocation per
// message, per entry and per entry payload on receive, plus building a
// parallel tree of pb structs on send. Here a received batch costs a
// fixed handful of allocations however many messages and entries it
// holds: one copy of the payload (entry data aliases it), one slice of
// messages and one arena of entries. The encoding is byte-for-byte what
// proto.Marshal produces for the equivalent pb.Batch (tests check both
// directions), so any protobuf implementation interoperates.
//
// Everything decoded here comes from the network and is untrusted: the
// decoder never panics, never reads out of bounds, and bounds what it
// allocates by the size of its input.

// Field numbers of transport.proto. All are below 16, so every tag is one
// byte. convert_test.go checks them against the generated descriptors.
const (
	fieldBatchClusterID = 1
	fieldBatchFrom      = 2
	fieldBatchTo        = 3
	fieldBatchMessages  = 4

	fieldMsgType       = 1
	fieldMsgFrom       = 2
	fieldMsgTo         = 3
	fieldMsgTerm       = 4
	fieldMsgLogTerm    = 5
	fieldMsgIndex      = 6
	fieldMsgEntries    = 7
	fieldMsgCommit     = 8
	fieldMsgReject     = 9
	fieldMsgRejectHint = 10
	fieldMsgContext    = 11
	fieldMsgSnapshot   = 12

	fieldEntryIndex = 1
	fieldEntryTerm  = 2
	fieldEntryType  = 3
	fieldEntryData  = 4

	fieldSnapIndex      = 1
	fieldSnapTerm       = 2
	fieldSnapMembership = 3
	fieldSnapEncoded    = 4

	fieldMemberVoters         = 1
	fieldMemberOutgoingVoters = 2
	fieldMemberLearners       = 3

	fieldChunkHeader  = 1
	fieldChunkData    = 2
	fieldChunkTrailer = 3

	fieldHeaderClusterID = 1
	fieldHeaderFrom      = 2
	fieldHeaderTo        = 3
	fieldHeaderMessage   = 4

	fieldTrailerCRC   = 1
	fieldTrailerTotal = 2
)

// Smallest honest encodings, used to bound what a decoder allocates: a
// message in a batch always has a type, a From and a To (each non-zero,
// so at least two bytes) plus its tag and length; a log entry always has a
// non-zero index, and a forwarded proposal always has data (the driver's
// envelope), so either takes at least four bytes. A batch claiming more
// messages or entries than its size allows is malformed.
const (
	minMessageWireBytes = 8
	minEntryWireBytes   = 4
)

// errMalformed reports bytes that are not a well-formed protobuf encoding.
var errMalformed = errors.New("malformed protobuf")

// Message type numbers are fixed by transport.proto, not by core's
// declaration order, so reordering core constants cannot change the wire.
var messageTypes = [...]struct {
	core core.MessageType
	wire pb.MessageType
}{
	{core.MsgApp, pb.MessageType_MSG_APP},
	{core.MsgAppResp, pb.MessageType_MSG_APP_RESP},
	{core.MsgVote, pb.MessageType_MSG_VOTE},
	{core.MsgVoteResp, pb.MessageType_MSG_VOTE_RESP},
	{core.MsgPreVote, pb.MessageType_MSG_PRE_VOTE},
	{core.MsgPreVoteResp, pb.MessageType_MSG_PRE_VOTE_RESP},
	{core.MsgHeartbeat, pb.MessageType_MSG_HEARTBEAT},
	{core.MsgHeartbeatResp, pb.MessageType_MSG_HEARTBEAT_RESP},
	{core.MsgSnap, pb.MessageType_MSG_SNAP},
	{core.MsgProp, pb.MessageType_MSG_PROP},
	{core.MsgPropResp, pb.MessageType_MSG_PROP_RESP},
	{core.MsgReadIndex, pb.MessageType_MSG_READ_INDEX},
	{core.MsgReadIndexResp, pb.MessageType_MSG_READ_INDEX_RESP},
	{core.MsgTransferLeader, pb.MessageType_MSG_TRANSFER_LEADER},
	{core.MsgTimeoutNow, pb.MessageType_MSG_TIMEOUT_NOW},
}

// wireOfType and typeOfWire are lookup tables built from messageTypes;
// zero means "no mapping" in both (zero is invalid on both sides).
var (
	wireOfType [256]uint8
	typeOfWire [256]core.MessageType
)

func init() {
	for _, p := range messageTypes {
		wireOfType[p.core] = uint8(p.wire)
		typeOfWire[p.wire] = p.core
	}
}

// wireEntryType maps core entry types to transport.proto's EntryType.
func wireEntryType(t core.EntryType) (uint64, bool) {
	switch t {
	case core.EntryNormal:
		return uint64(pb.EntryType_ENTRY_NORMAL), true
	case core.EntryConfChange:
		return uint64(pb.EntryType_ENTRY_CONF_CHANGE), true
	}
	return 0, false
}

// coreEntryType is the inverse of wireEntryType.
func coreEntryType(v uint64) (core.EntryType, bool) {
	switch v {
	case uint64(pb.EntryType_ENTRY_NORMAL):
		return core.EntryNormal, true
	case uint64(pb.EntryType_ENTRY_CONF_CHANGE):
		return core.EntryConfChange, true
	}
	return 0, false
}

// checkOutgoing reports why m cannot be encoded; the sender drops it.
func checkOutgoing(m *core.Message) error {
	if wireOfType[m.Type] == 0 {
		return fmt.Errorf("%w: unknown type %v", core.ErrInvalidMessage, m.Type)
	}
	for i := range m.Entries {
		if _, ok := wireEntryType(m.Entries[i].Type); !ok {
			return fmt.Errorf("%w: entry %d has unknown type %v", core.ErrInvalidMessage, m.Entries[i].Index, m.Entries[i].Type)
		}
	}
	return nil
}

// ---- sizes ----

func sizeVarintField(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

// sizeLenField is the size of a length-delimited field with n payload
// bytes, tag included. Embedded messages are always written, even empty.
func sizeLenField(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

func sizeBoolField(v bool) int {
	if v {
		return 2
	}
	return 0
}

func entrySize(e *core.Entry) int {
	wt, _ := wireEntryType(e.Type)
	n := sizeVarintField(e.Index) + sizeVarintField(e.Term) + sizeVarintField(wt)
	if len(e.Data) > 0 {
		n += sizeLenField(len(e.Data))
	}
	return n
}

func packedSize(ids []uint64) int {
	n := 0
	for _, id := range ids {
		n += protowire.SizeVarint(id)
	}
	return n
}

func packedFieldSize(ids []uint64) int {
	if len(ids) == 0 {
		return 0
	}
	return sizeLenField(packedSize(ids))
}

func membershipSize(m *core.Membership) int {
	return packedFieldSize(m.Voters) + packedFieldSize(m.OutgoingVoters) + packedFieldSize(m.Learners)
}

// snapshotMetaSize is the encoded size of s. The membership travels
// twice: as ID lists (field 3, for peers that predate field 4) and in the
// core's encoding (field 4, with names, addresses and HighestID).
// Snapshots are rare, so the extra bytes do not matter.
func snapshotMetaSize(s *core.SnapshotMeta) int {
	return sizeVarintField(s.Index) + sizeVarintField(s.Term) + sizeLenField(membershipSize(&s.Membership)) +
		encodedMembershipFieldSize(&s.Membership)
}

// encodedMembershipFieldSize is the size of field 4: absent for an empty
// membership (as before it existed), so that peers and tests see the same
// bytes for a MsgSnap without configuration.
func encodedMembershipFieldSize(m *core.Membership) int {
	if m.IsEmpty() && len(m.Members) == 0 && m.HighestID == 0 {
		return 0
	}
	return sizeLenField(len(m.Marshal()))
}

// messageSize is the encoded size of m without its own tag and length.
func messageSize(m *core.Message) int {
	n := sizeVarintField(uint64(wireOfType[m.Type])) +
		sizeVarintField(m.From) + sizeVarintField(m.To) +
		sizeVarintField(m.Term) + sizeVarintField(m.LogTerm) + sizeVarintField(m.Index) +
		sizeVarintField(m.Commit) + sizeBoolField(m.Reject) +
		sizeVarintField(m.RejectHint) + sizeVarintField(m.Context)
	for i := range m.Entries {
		n += sizeLenField(entrySize(&m.Entries[i]))
	}
	if m.Snapshot != nil {
		n += sizeLenField(snapshotMetaSize(m.Snapshot))
	}
	return n
}

// batchHeader is what identifies a batch or a snapshot transfer.
type batchHeader struct {
	clusterID uint64
	from      uint64
	to        uint64
}

func (h *batchHeader) size() int {
	return sizeVarintField(h.clusterID) + sizeVarintField(h.from) + sizeVarintField(h.to)
}

// ---- encoding ----

func appendTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return append(b, byte(num)<<3|byte(typ))
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(appendTag(b, num, protowire.VarintType), v)
}

func appendLenPrefix(b []byte, num protowire.Number, n int) []byte {
	return protowire.AppendVarint(appendTag(b, num, protowire.BytesType), uint64(n))
}

func appendPacked(b []byte, num protowire.Number, ids []uint64) []byte {
	if len(ids) == 0 {
		return b
	}
	b = appendLenPrefix(b, num, packedSize(ids))
	for _, id := range ids {
		b = protowire.AppendVarint(b, id)
	}
	return b
}

func appendEntry(b []byte, e *core.Entry) []byte {
	wt, _ := wireEntryType(e.Type)
	b = appendVarintField(b, fieldEntryIndex, e.Index)
	b = appendVarintField(b, fieldEntryTerm, e.Term)
	b = appendVarintField(b, fieldEntryType, wt)
	if len(e.Data) > 0 {
		b = appendLenPrefix(b, fieldEntryData, len(e.Data))
		b = append(b, e.Data...)
	}
	return b
}

func appendSnapshotMeta(b []byte, s *core.SnapshotMeta) []byte {
	b = appendVarintField(b, fieldSnapIndex, s.Index)
	b = appendVarintField(b, fieldSnapTerm, s.Term)
	b = appendLenPrefix(b, fieldSnapMembership, membershipSize(&s.Membership))
	b = appendPacked(b, fieldMemberVoters, s.Membership.Voters)
	b = appendPacked(b, fieldMemberOutgoingVoters, s.Membership.OutgoingVoters)
	b = appendPacked(b, fieldMemberLearners, s.Membership.Learners)
	if encodedMembershipFieldSize(&s.Membership) > 0 {
		enc := s.Membership.Marshal()
		b = appendLenPrefix(b, fieldSnapEncoded, len(enc))
		b = append(b, enc...)
	}
	return b
}

// appendMessage appends the fields of m (without its own tag and length).
func appendMessage(b []byte, m *core.Message) []byte {
	b = appendVarintField(b, fieldMsgType, uint64(wireOfType[m.Type]))
	b = appendVarintField(b, fieldMsgFrom, m.From)
	b = appendVarintField(b, fieldMsgTo, m.To)
	b = appendVarintField(b, fieldMsgTerm, m.Term)
	b = appendVarintField(b, fieldMsgLogTerm, m.LogTerm)
	b = appendVarintField(b, fieldMsgIndex, m.Index)
	for i := range m.Entries {
		e := &m.Entries[i]
		b = appendLenPrefix(b, fieldMsgEntries, entrySize(e))
		b = appendEntry(b, e)
	}
	b = appendVarintField(b, fieldMsgCommit, m.Commit)
	if m.Reject {
		b = appendVarintField(b, fieldMsgReject, 1)
	}
	b = appendVarintField(b, fieldMsgRejectHint, m.RejectHint)
	b = appendVarintField(b, fieldMsgContext, m.Context)
	if m.Snapshot != nil {
		b = appendLenPrefix(b, fieldMsgSnapshot, snapshotMetaSize(m.Snapshot))
		b = appendSnapshotMeta(b, m.Snapshot)
	}
	return b
}

func appendHeader(b []byte, h *batchHeader) []byte {
	b = appendVarintField(b, fieldBatchClusterID, h.clusterID)
	b = appendVarintField(b, fieldBatchFrom, h.from)
	return appendVarintField(b, fieldBatchTo, h.to)
}

// queuedMsg is a message waiting in a peer's send queue with its encoded
// size, computed once by Send.
type queuedMsg struct {
	msg  core.Message
	size int
}

// framedMessageSize is the bytes a message of encoded size n adds to a
// batch.
func framedMessageSize(n int) int { return sizeLenField(n) }

// outBatch is a batch ready for the codec to encode.
type outBatch struct {
	hdr  batchHeader
	msgs []queuedMsg
	size int // total encoded size, computed by the sender
}

func (o *outBatch) wireSize() int { return o.size }

func (o *outBatch) appendWire(b []byte) []byte {
	b = appendHeader(b, &o.hdr)
	for i := range o.msgs {
		q := &o.msgs[i]
		b = appendLenPrefix(b, fieldBatchMessages, q.size)
		b = appendMessage(b, &q.msg)
	}
	return b
}

// encodeBatch encodes msgs as one batch (used by tests and benchmarks; the
// send path goes through outBatch and the codec).
func encodeBatch(hdr batchHeader, msgs []core.Message) []byte {
	o := outBatch{hdr: hdr, size: hdr.size()}
	for i := range msgs {
		n := messageSize(&msgs[i])
		o.msgs = append(o.msgs, queuedMsg{msg: msgs[i], size: n})
		o.size += framedMessageSize(n)
	}
	return o.appendWire(make([]byte, 0, o.size))
}

// ---- decoding ----

// decodedBatch is a received batch. Messages that failed validation are
// left out of msgs and counted in invalid; firstInvalid says why the first
// one failed.
type decodedBatch struct {
	batchHeader
	msgs         []core.Message
	invalid      int
	firstInvalid error
}

// batchScan is the result of the first pass over a received batch: its
// header, known before anything is allocated (so that traffic refused on
// its header costs no more), and the counts that size the second pass.
type batchScan struct {
	batchHeader
	b     []byte
	nMsgs int
	nEnts int
}

// scanBatch checks that b is a well-formed Batch down to the fields of
// its messages, reads its header and counts its messages and entries. It
// returns an error wrapping errMalformed if b is not well formed, or
// claims more messages or entries than honest ones of its size could
// hold (which bounds what decode allocates to a small multiple of len(b)).
func scanBatch(b []byte) (batchScan, error) {
	sc := batchScan{b: b}
	for rest := b; len(rest) > 0; {
		num, typ, n := consumeTag(rest)
		if n < 0 {
			return sc, fmt.Errorf("%w: batch: bad tag", errMalformed)
		}
		rest = rest[n:]
		switch {
		case num == fieldBatchMessages && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return sc, fmt.Errorf("%w: batch: truncated message", errMalformed)
			}
			ents, err := countEntries(v)
			if err != nil {
				return sc, err
			}
			sc.nMsgs++
			sc.nEnts += ents
			rest = rest[n:]
		case num >= fieldBatchClusterID && num <= fieldBatchTo && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(rest)
			if n < 0 {
				return sc, fmt.Errorf("%w: batch: bad varint", errMalformed)
			}
			switch num {
			case fieldBatchClusterID:
				sc.clusterID = v
			case fieldBatchFrom:
				sc.from = v
			case fieldBatchTo:
				sc.to = v
			}
			rest = rest[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, rest)
			if n < 0 {
				return sc, fmt.Errorf("%w: batch: bad field %d", errMalformed, num)
			}
			rest = rest[n:]
		}
	}
	if sc.nMsgs > len(b)/minMessageWireBytes || sc.nEnts > len(b)/minEntryWireBytes {
		return sc, fmt.Errorf("%w: batch of %d bytes claims %d messages and %d entries", errMalformed, len(b), sc.nMsgs, sc.nEnts)
	}
	return sc, nil
}

// decode is the second pass: it decodes the messages, allocating once
// for all messages and once for all entries. Entry data aliases the
// scanned buffer, which the caller must therefore not reuse. A message
// that is not a valid Raft message is left out and counted in invalid,
// so that one bad message does not discard its neighbours.
func (sc *batchScan) decode() decodedBatch {
	d := decodedBatch{batchHeader: sc.batchHeader}
	if sc.nMsgs == 0 {
		return d
	}
	d.msgs = make([]core.Message, 0, sc.nMsgs)
	var ents []core.Entry
	if sc.nEnts > 0 {
		ents = make([]core.Entry, sc.nEnts)
	}
	// The structure is known to be sound down to message fields.
	for rest := sc.b; len(rest) > 0; {
		num, typ, n := consumeTag(rest)
		rest = rest[n:]
		if num != fieldBatchMessages || typ != protowire.BytesType {
			rest = rest[protowire.ConsumeFieldValue(num, typ, rest):]
			continue
		}
		v, n := protowire.ConsumeBytes(rest)
		rest = rest[n:]
		d.msgs = append(d.msgs, core.Message{})
		m := &d.msgs[len(d.msgs)-1]
		used, err := decodeMessage(v, m, ents, false)
		if err != nil {
			d.msgs = d.msgs[:len(d.msgs)-1]
			d.invalid++
			if d.firstInvalid == nil {
				d.firstInvalid = err
			}
			continue
		}
		ents = ents[used:]
	}
	return d
}

// decodeBatch is scanBatch followed by decode.
func decodeBatch(b []byte) (decodedBatch, error) {
	sc, err := scanBatch(b)
	if err != nil {
		return decodedBatch{batchHeader: sc.batchHeader}, err
	}
	return sc.decode(), nil
}

// countEntries checks that b is a well-formed sequence of fields and
// counts the entries among them.
func countEntries(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		num, typ, k := consumeTag(b)
		if k < 0 {
			return 0, fmt.Errorf("%w: message: bad tag", errMalformed)
		}
		b = b[k:]
		k = protowire.ConsumeFieldValue(num, typ, b)
		if k < 0 {
			return 0, fmt.Errorf("%w: message: bad field %d", errMalformed, num)
		}
		b = b[k:]
		if num == fieldMsgEntries && typ == protowire.BytesType {
			n++
		}
	}
	return n, nil
}

// consumeTag is protowire.ConsumeTag that also refuses field numbers above
// protowire.MaxValidNumber, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && !num.IsValid() {
		return 0, 0, -1
	}
	return num, typ, n
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{core.ErrInvalidMessage}, args...)...)
}

// decodeMessage decodes the fields in b into m, placing its entries at the
// start of ents (the arena the caller sized) and returning how many it
// used. allowSnap admits MsgSnap, which is legal only in a snapshot
// header. Any error wraps core.ErrInvalidMessage.
func decodeMessage(b []byte, m *core.Message, ents []core.Entry, allowSnap bool) (int, error) {
	var wireType uint64
	used := 0
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return 0, invalidf("bad tag")
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num != fieldMsgEntries && num != fieldMsgSnapshot && num <= fieldMsgContext:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, invalidf("bad varint in field %d", num)
			}
			b = b[n:]
			switch num {
			case fieldMsgType:
				wireType = v
			case fieldMsgFrom:
				m.From = v
			case fieldMsgTo:
				m.To = v
			case fieldMsgTerm:
				m.Term = v
			case fieldMsgLogTerm:
				m.LogTerm = v
			case fieldMsgIndex:
				m.Index = v
			case fieldMsgCommit:
				m.Commit = v
			case fieldMsgReject:
				m.Reject = v != 0
			case fieldMsgRejectHint:
				m.RejectHint = v
			case fieldMsgContext:
				m.Context = v
			}
		case typ == protowire.BytesType && num == fieldMsgEntries:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, invalidf("truncated entry")
			}
			b = b[n:]
			if used >= len(ents) {
				return 0, invalidf("more entries than counted")
			}
			if err := decodeEntry(v, &ents[used]); err != nil {
				return 0, err
			}
			used++
		case typ == protowire.BytesType && num == fieldMsgSnapshot:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, invalidf("truncated snapshot metadata")
			}
			b = b[n:]
			if m.Snapshot != nil {
				return 0, invalidf("snapshot metadata given twice")
			}
			meta := new(core.SnapshotMeta)
			if err := decodeSnapshotMeta(v, meta); err != nil {
				return 0, err
			}
			m.Snapshot = meta
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, invalidf("bad field %d", num)
			}
			b = b[n:]
		}
	}
	if wireType >= uint64(len(typeOfWire)) || typeOfWire[wireType] == 0 {
		return 0, invalidf("unknown message type %d", wireType)
	}
	m.Type = typeOfWire[wireType]
	switch {
	case m.From == core.None || m.To == core.None:
		// Also what keeps minMessageWireBytes honest.
		return 0, invalidf("%v without From or To", m.Type)
	case m.Type == core.MsgSnap && !allowSnap:
		return 0, invalidf("MsgSnap outside a snapshot transfer")
	case m.Type == core.MsgSnap && m.Snapshot == nil:
		return 0, invalidf("MsgSnap without snapshot metadata")
	case m.Type != core.MsgSnap && m.Snapshot != nil:
		return 0, invalidf("%v with snapshot metadata", m.Type)
	}
	// Entries of log messages have indexes; forwarded proposals (and
	// refused ones coming back) do not yet: the leader assigns them.
	if m.Type != core.MsgProp && m.Type != core.MsgPropResp {
		for i := range used {
			if ents[i].Index == 0 {
				return 0, invalidf("%v entry with index 0", m.Type)
			}
		}
	}
	if used > 0 {
		m.Entries = ents[:used:used]
	}
	return used, nil
}

func decodeEntry(b []byte, e *core.Entry) error {
	*e = core.Entry{}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return invalidf("entry: bad tag")
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= fieldEntryIndex && num <= fieldEntryType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return invalidf("entry: bad varint")
			}
			b = b[n:]
			switch num {
			case fieldEntryIndex:
				e.Index = v
			case fieldEntryTerm:
				e.Term = v
			case fieldEntryType:
				t, ok := coreEntryType(v)
				if !ok {
					return invalidf("entry: unknown type %d", v)
				}
				e.Type = t
			}
		case typ == protowire.BytesType && num == fieldEntryData:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return invalidf("entry: truncated data")
			}
			b = b[n:]
			if len(v) > 0 {
				// Alias the batch buffer; the cap stops an append by the
				// receiver from overwriting the next entry.
				e.Data = v[:len(v):len(v)]
			} else {
				e.Data = nil
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return invalidf("entry: bad field %d", num)
			}
			b = b[n:]
		}
	}
	return nil
}

// decodeSnapshotMeta decodes a SnapshotMeta. The core's encoding of the
// membership (field 4) wins over the ID lists (field 3) when both are
// present; a peer that predates field 4 sends the lists only.
func decodeSnapshotMeta(b []byte, s *core.SnapshotMeta) error {
	seenMembership, seenEncoded := false, false
	var lists core.Membership
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return invalidf("snapshot: bad tag")
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == fieldSnapIndex || num == fieldSnapTerm):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return invalidf("snapshot: bad varint")
			}
			b = b[n:]
			if num == fieldSnapIndex {
				s.Index = v
			} else {
				s.Term = v
			}
		case typ == protowire.BytesType && num == fieldSnapMembership:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return invalidf("snapshot: truncated membership")
			}
			b = b[n:]
			if seenMembership {
				return invalidf("snapshot: membership given twice")
			}
			seenMembership = true
			if err := decodeMembership(v, &lists); err != nil {
				return err
			}
		case typ == protowire.BytesType && num == fieldSnapEncoded:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return invalidf("snapshot: truncated encoded membership")
			}
			b = b[n:]
			if seenEncoded {
				return invalidf("snapshot: encoded membership given twice")
			}
			seenEncoded = true
			m, err := core.UnmarshalMembership(v)
			if err != nil {
				return invalidf("snapshot: %v", err)
			}
			s.Membership = m
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return invalidf("snapshot: bad field %d", num)
			}
			b = b[n:]
		}
	}
	switch {
	case !seenEncoded:
		s.Membership = lists
	case seenMembership && !(slices.Equal(lists.Voters, s.Membership.Voters) &&
		slices.Equal(lists.OutgoingVoters, s.Membership.OutgoingVoters) && slices.Equal(lists.Learners, s.Membership.Learners)):
		return invalidf("snapshot: the membership's ID lists and its encoding disagree")
	}
	return nil
}

// decodeMembership accepts each list packed (as written by every proto3
// encoder) or unpacked (as the protobuf spec requires parsers to accept).
func decodeMembership(b []byte, m *core.Membership) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return invalidf("membership: bad tag")
		}
		b = b[n:]
		var list *[]uint64
		switch num {
		case fieldMemberVoters:
			list = &m.Voters
		case fieldMemberOutgoingVoters:
			list = &m.OutgoingVoters
		case fieldMemberLearners:
			list = &m.Learners
		}
		switch {
		case list != nil && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return invalidf("membership: bad varint")
			}
			b = b[n:]
			*list = append(*list, v)
		case list != nil && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return invalidf("membership: truncated list")
			}
			b = b[n:]
			for len(v) > 0 {
				id, k := protowire.ConsumeVarint(v)
				if k < 0 {
					return invalidf("membership: bad packed varint")
				}
				v = v[k:]
				*list = append(*list, id)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return invalidf("membership: bad field %d", num)
			}
			b = b[n:]
		}
	}
	return nil
}

// ---- snapshot frames ----

// chunkKind says which member of SnapshotChunk's oneof a frame holds.
type chunkKind uint8

const (
	chunkNone chunkKind = iota
	chunkHeader
	chunkData
	chunkTrailer
)

// outChunk is a snapshot frame ready for the codec to encode.
type outChunk struct {
	kind chunkKind
	// header
	hdr     batchHeader
	msg     *core.Message
	msgSize int
	// data
	data []byte
	// trailer
	crc   uint32
	total uint64
	// pool, if set, supplies the encoding buffer.
	pool mem.BufferPool
}

func (c *outChunk) bufferPool() mem.BufferPool { return c.pool }

func (c *outChunk) headerSize() int {
	return c.hdr.size() + sizeLenField(c.msgSize)
}

func (c *outChunk) trailerSize() int {
	n := sizeVarintField(c.total)
	if c.crc != 0 {
		n += 1 + 4
	}
	return n
}

func (c *outChunk) wireSize() int {
	switch c.kind {
	case chunkHeader:
		return sizeLenField(c.headerSize())
	case chunkData:
		return sizeLenField(len(c.data))
	default:
		return sizeLenField(c.trailerSize())
	}
}

func (c *outChunk) appendWire(b []byte) []byte {
	switch c.kind {
	case chunkHeader:
		b = appendLenPrefix(b, fieldChunkHeader, c.headerSize())
		b = appendVarintField(b, fieldHeaderClusterID, c.hdr.clusterID)
		b = appendVarintField(b, fieldHeaderFrom, c.hdr.from)
		b = appendVarintField(b, fieldHeaderTo, c.hdr.to)
		b = appendLenPrefix(b, fieldHeaderMessage, c.msgSize)
		return appendMessage(b, c.msg)
	case chunkData:
		b = appendLenPrefix(b, fieldChunkData, len(c.data))
		return append(b, c.data...)
	default:
		b = appendLenPrefix(b, fieldChunkTrailer, c.trailerSize())
		if c.crc != 0 {
			b = protowire.AppendFixed32(appendTag(b, fieldTrailerCRC, protowire.Fixed32Type), c.crc)
		}
		return appendVarintField(b, fieldTrailerTotal, c.total)
	}
}

// snapshotFrame is a decoded SnapshotChunk. data and msg alias the
// buffer the frame was decoded from.
type snapshotFrame struct {
	kind  chunkKind
	hdr   batchHeader
	msg   []byte // encoded Message of a header frame
	data  []byte
	crc   uint32
	total uint64
}

// decodeSnapshotFrame decodes one SnapshotChunk. Exactly one member of the
// oneof must be present.
func decodeSnapshotFrame(b []byte) (snapshotFrame, error) {
	var f snapshotFrame
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return f, fmt.Errorf("%w: snapshot frame: bad tag", errMalformed)
		}
		b = b[n:]
		if typ != protowire.BytesType || num < fieldChunkHeader || num > fieldChunkTrailer {
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return f, fmt.Errorf("%w: snapshot frame: bad field %d", errMalformed, num)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return f, fmt.Errorf("%w: snapshot frame: truncated field %d", errMalformed, num)
		}
		b = b[n:]
		if f.kind != chunkNone {
			return f, fmt.Errorf("%w: snapshot frame holds more than one part", errMalformed)
		}
		var err error
		switch num {
		case fieldChunkHeader:
			f.kind = chunkHeader
			err = decodeSnapshotHeader(v, &f)
		case fieldChunkData:
			f.kind = chunkData
			f.data = v
		case fieldChunkTrailer:
			f.kind = chunkTrailer
			err = decodeSnapshotTrailer(v, &f)
		}
		if err != nil {
			return f, err
		}
	}
	if f.kind == chunkNone {
		return f, fmt.Errorf("%w: empty snapshot frame", errMalformed)
	}
	return f, nil
}

func decodeSnapshotHeader(b []byte, f *snapshotFrame) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: snapshot header: bad tag", errMalformed)
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && num >= fieldHeaderClusterID && num <= fieldHeaderTo:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot header: bad varint", errMalformed)
			}
			b = b[n:]
			switch num {
			case fieldHeaderClusterID:
				f.hdr.clusterID = v
			case fieldHeaderFrom:
				f.hdr.from = v
			case fieldHeaderTo:
				f.hdr.to = v
			}
		case typ == protowire.BytesType && num == fieldHeaderMessage:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot header: truncated message", errMalformed)
			}
			b = b[n:]
			if f.msg != nil {
				return fmt.Errorf("%w: snapshot header: message given twice", errMalformed)
			}
			f.msg = v[:len(v):len(v)]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot header: bad field %d", errMalformed, num)
			}
			b = b[n:]
		}
	}
	if f.msg == nil {
		f.msg = []byte{}
	}
	return nil
}

func decodeSnapshotTrailer(b []byte, f *snapshotFrame) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: snapshot trailer: bad tag", errMalformed)
		}
		b = b[n:]
		switch {
		case num == fieldTrailerCRC && typ == protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot trailer: bad crc", errMalformed)
			}
			b = b[n:]
			f.crc = v
		case num == fieldTrailerTotal && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot trailer: bad length", errMalformed)
			}
			b = b[n:]
			f.total = v
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: snapshot trailer: bad field %d", errMalformed, num)
			}
			b = b[n:]
		}
	}
	return nil
}

// decodeSnapshotMessage decodes the MsgSnap of a header frame.
func decodeSnapshotMessage(b []byte) (core.Message, error) {
	var m core.Message
	_, err := decodeMessage(b, &m, nil, true)
	return m, err
}
