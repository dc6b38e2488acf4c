package transport

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/rafty-db/rafty/core"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// The generated structs are the reference implementation of
// transport.proto; these tests hold the hand-written codec to it.

func toPBMessage(m *core.Message) *pb.Message {
	out := &pb.Message{
		Type: pb.MessageType(wireOfType[m.Type]), From: m.From, To: m.To, Term: m.Term,
		LogTerm: m.LogTerm, Index: m.Index, Commit: m.Commit, Reject: m.Reject,
		RejectHint: m.RejectHint, Context: m.Context,
	}
	for _, e := range m.Entries {
		wt, _ := wireEntryType(e.Type)
		out.Entries = append(out.Entries, &pb.Entry{Index: e.Index, Term: e.Term, Type: pb.EntryType(wt), Data: e.Data})
	}
	if s := m.Snapshot; s != nil {
		out.Snapshot = &pb.SnapshotMeta{Index: s.Index, Term: s.Term, Membership: &pb.Membership{
			Voters: s.Membership.Voters, OutgoingVoters: s.Membership.OutgoingVoters, Learners: s.Membership.Learners,
		}}
		if encodedMembershipFieldSize(&s.Membership) > 0 {
			out.Snapshot.EncodedMembership = s.Membership.Marshal()
		}
	}
	return out
}

func fromPBMessage(m *pb.Message) core.Message {
	out := core.Message{
		Type: typeOfWire[uint8(m.Type)], From: m.From, To: m.To, Term: m.Term,
		LogTerm: m.LogTerm, Index: m.Index, Commit: m.Commit, Reject: m.Reject,
		RejectHint: m.RejectHint, Context: m.Context,
	}
	for _, e := range m.Entries {
		et, _ := coreEntryType(uint64(e.Type))
		out.Entries = append(out.Entries, core.Entry{Index: e.Index, Term: e.Term, Type: et, Data: e.Data})
	}
	if s := m.Snapshot; s != nil {
		out.Snapshot = &core.SnapshotMeta{Index: s.Index, Term: s.Term}
		if mb := s.Membership; mb != nil {
			out.Snapshot.Membership = core.Membership{Voters: mb.Voters, OutgoingVoters: mb.OutgoingVoters, Learners: mb.Learners}
		}
		if len(s.EncodedMembership) > 0 {
			m, err := core.UnmarshalMembership(s.EncodedMembership)
			if err != nil {
				panic(err) // only reached for bytes our decoder accepted
			}
			out.Snapshot.Membership = m
		}
	}
	return out
}

// normalize makes nil and empty slices compare equal.
func normalize(msgs []core.Message) []core.Message {
	out := make([]core.Message, len(msgs))
	for i, m := range msgs {
		if len(m.Entries) == 0 {
			m.Entries = nil
		} else {
			ents := make([]core.Entry, len(m.Entries))
			for j, e := range m.Entries {
				if len(e.Data) == 0 {
					e.Data = nil
				}
				ents[j] = e
			}
			m.Entries = ents
		}
		if m.Snapshot != nil {
			s := *m.Snapshot
			s.Membership = s.Membership.Clone()
			for _, l := range []*[]uint64{&s.Membership.Voters, &s.Membership.OutgoingVoters, &s.Membership.Learners} {
				if len(*l) == 0 {
					*l = nil
				}
			}
			if len(s.Membership.Members) == 0 {
				s.Membership.Members = nil
			}
			m.Snapshot = &s
		}
		out[i] = m
	}
	return out
}

func equalMessages(t *testing.T, got, want []core.Message) {
	t.Helper()
	got, want = normalize(got), normalize(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("messages differ:\n got %v\nwant %v", got, want)
	}
}

// randomMessages returns a varied batch, covering every field, big
// varints and every message type except MsgSnap.
func randomMessages(r *rand.Rand, from, to uint64, n int) []core.Message {
	big := func() uint64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return r.Uint64()
		default:
			return r.Uint64N(1000)
		}
	}
	msgs := make([]core.Message, n)
	for i := range msgs {
		typ := messageTypes[r.IntN(len(messageTypes))].core
		if typ == core.MsgSnap {
			typ = core.MsgApp
		}
		m := core.Message{
			Type: typ, From: from, To: to, Term: big(), LogTerm: big(), Index: big(),
			Commit: big(), Reject: r.IntN(2) == 0, RejectHint: big(), Context: big(),
		}
		for range r.IntN(4) {
			data := make([]byte, r.IntN(300))
			for k := range data {
				data[k] = byte(r.Uint32())
			}
			m.Entries = append(m.Entries, core.Entry{
				Index: 1 + r.Uint64N(1<<40), Term: big(),
				Type: core.EntryType(r.IntN(2)), Data: data,
			})
		}
		msgs[i] = m
	}
	return msgs
}

func snapMsg(from, to uint64) core.Message {
	return core.Message{
		Type: core.MsgSnap, From: from, To: to, Term: 9,
		Snapshot: &core.SnapshotMeta{Index: 1000, Term: 8, Membership: core.Membership{
			Voters: []uint64{1, 2, 3}, OutgoingVoters: []uint64{1, 2, 300000}, Learners: []uint64{4},
			Members: []core.MemberInfo{
				{ID: 1, Name: "rafty-0", PeerAddr: "rafty-0.rafty:7000", ClientAddr: "rafty-0.rafty:8000"},
				{ID: 4, Name: "rafty-3", PeerAddr: "[::1]:7000", AutoPromote: true, Replaces: 300000, Incarnation: 77},
				{ID: 300000, Name: "rafty-2", PeerAddr: "10.1.2.3:7000"},
			},
			HighestID: 300001,
		}},
	}
}

// legacySnapMsg is snapMsg as a peer before issue 14 knew it: ID lists
// only.
func legacySnapMsg(from, to uint64) core.Message {
	m := snapMsg(from, to)
	meta := *m.Snapshot
	meta.Membership = core.Membership{Voters: meta.Membership.Voters, OutgoingVoters: meta.Membership.OutgoingVoters, Learners: meta.Membership.Learners}
	m.Snapshot = &meta
	return m
}

func TestFieldNumbersMatchProto(t *testing.T) {
	file := pb.File_transport_proto
	cases := []struct {
		msg, field string
		num        protowire.Number
	}{
		{"Batch", "cluster_id", fieldBatchClusterID},
		{"Batch", "from", fieldBatchFrom},
		{"Batch", "to", fieldBatchTo},
		{"Batch", "messages", fieldBatchMessages},
		{"Message", "type", fieldMsgType},
		{"Message", "from", fieldMsgFrom},
		{"Message", "to", fieldMsgTo},
		{"Message", "term", fieldMsgTerm},
		{"Message", "log_term", fieldMsgLogTerm},
		{"Message", "index", fieldMsgIndex},
		{"Message", "entries", fieldMsgEntries},
		{"Message", "commit", fieldMsgCommit},
		{"Message", "reject", fieldMsgReject},
		{"Message", "reject_hint", fieldMsgRejectHint},
		{"Message", "context", fieldMsgContext},
		{"Message", "snapshot", fieldMsgSnapshot},
		{"Entry", "index", fieldEntryIndex},
		{"Entry", "term", fieldEntryTerm},
		{"Entry", "type", fieldEntryType},
		{"Entry", "data", fieldEntryData},
		{"SnapshotMeta", "index", fieldSnapIndex},
		{"SnapshotMeta", "term", fieldSnapTerm},
		{"SnapshotMeta", "membership", fieldSnapMembership},
		{"SnapshotMeta", "encoded_membership", fieldSnapEncoded},
		{"Membership", "voters", fieldMemberVoters},
		{"Membership", "outgoing_voters", fieldMemberOutgoingVoters},
		{"Membership", "learners", fieldMemberLearners},
		{"SnapshotChunk", "header", fieldChunkHeader},
		{"SnapshotChunk", "data", fieldChunkData},
		{"SnapshotChunk", "trailer", fieldChunkTrailer},
		{"SnapshotHeader", "cluster_id", fieldHeaderClusterID},
		{"SnapshotHeader", "from", fieldHeaderFrom},
		{"SnapshotHeader", "to", fieldHeaderTo},
		{"SnapshotHeader", "message", fieldHeaderMessage},
		{"SnapshotTrailer", "crc32c", fieldTrailerCRC},
		{"SnapshotTrailer", "total_bytes", fieldTrailerTotal},
	}
	counted := map[string]int{}
	for _, c := range cases {
		md := file.Messages().ByName(protoreflect.Name(c.msg))
		if md == nil {
			t.Fatalf("no message %s", c.msg)
		}
		fd := md.Fields().ByName(protoreflect.Name(c.field))
		if fd == nil {
			t.Fatalf("no field %s.%s", c.msg, c.field)
		}
		if fd.Number() != c.num {
			t.Errorf("%s.%s is field %d in the proto, %d in convert.go", c.msg, c.field, fd.Number(), c.num)
		}
		counted[c.msg]++
	}
	// Every field of the hand-coded messages is covered above.
	for name, n := range counted {
		if got := file.Messages().ByName(protoreflect.Name(name)).Fields().Len(); got != n {
			t.Errorf("%s has %d fields in the proto, convert.go knows %d", name, got, n)
		}
	}
}

func TestMessageTypeMapping(t *testing.T) {
	enum := pb.File_transport_proto.Enums().ByName("MessageType").Values()
	mapped := 0
	for i := range 256 {
		typ := core.MessageType(i)
		if !typ.Valid() {
			expectf(t, wireOfType[typ] == 0, "invalid core type %d maps to wire %d", i, wireOfType[typ])
			continue
		}
		w := wireOfType[typ]
		if w == 0 {
			t.Errorf("core type %v has no wire type", typ)
			continue
		}
		expectf(t, typeOfWire[w] == typ, "wire %d maps back to %v, not %v", w, typeOfWire[w], typ)
		// Names agree: MsgAppResp <-> MSG_APP_RESP.
		var snake strings.Builder
		for j, c := range typ.String() {
			if j > 0 && c >= 'A' && c <= 'Z' {
				snake.WriteByte('_')
			}
			snake.WriteRune(c)
		}
		want := strings.ToUpper(snake.String())
		if got := string(enum.ByNumber(protoreflect.EnumNumber(w)).Name()); got != want {
			t.Errorf("core %v is wire %s, want %s", typ, got, want)
		}
		mapped++
	}
	expectf(t, mapped == enum.Len()-1, "%d core types mapped, proto has %d non-zero types", mapped, enum.Len()-1)
}

func TestEncodeMatchesProtoMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		hdr := batchHeader{clusterID: r.Uint64(), from: 1 + r.Uint64N(5), to: 1 + r.Uint64N(5)}
		msgs := randomMessages(r, hdr.from, hdr.to, r.IntN(20))
		ours := encodeBatch(hdr, msgs)

		ref := &pb.Batch{ClusterId: hdr.clusterID, From: hdr.from, To: hdr.to}
		for j := range msgs {
			ref.Messages = append(ref.Messages, toPBMessage(&msgs[j]))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(ref)
		must(t, err)
		if !bytes.Equal(ours, want) {
			t.Fatalf("case %d: encoding differs from proto.Marshal\n ours %x\nproto %x", i, ours, want)
		}

		// And the generated decoder reads ours back.
		var back pb.Batch
		must(t, proto.Unmarshal(ours, &back))
		got := make([]core.Message, len(back.Messages))
		for j, m := range back.Messages {
			got[j] = fromPBMessage(m)
		}
		equalMessages(t, got, msgs)
	}
}

func TestDecodeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		hdr := batchHeader{clusterID: 1 + r.Uint64(), from: 2, to: 3}
		msgs := randomMessages(r, hdr.from, hdr.to, r.IntN(20))
		d, err := decodeBatch(encodeBatch(hdr, msgs))
		must(t, err)
		expectf(t, d.batchHeader == hdr, "header %+v, want %+v", d.batchHeader, hdr)
		expectf(t, d.invalid == 0, "%d invalid: %v", d.invalid, d.firstInvalid)
		equalMessages(t, d.msgs, msgs)
	}
}

func TestDecodeAcceptsUnpackedAndUnknownFields(t *testing.T) {
	m := legacySnapMsg(1, 2)
	var b []byte
	b = appendVarintField(b, fieldMsgType, uint64(wireOfType[core.MsgSnap]))
	b = appendVarintField(b, fieldMsgFrom, 1)
	b = appendVarintField(b, fieldMsgTo, 2)
	b = appendVarintField(b, fieldMsgTerm, 9)
	// An unknown field of each wire type, as a newer peer might send.
	b = appendVarintField(b, 15, 77)
	b = protowire.AppendFixed64(appendTag(b, 14, protowire.Fixed64Type), 1)
	b = protowire.AppendBytes(appendTag(b, 13, protowire.BytesType), []byte("future"))
	var mb []byte
	for _, id := range m.Snapshot.Membership.Voters { // unpacked
		mb = appendVarintField(mb, fieldMemberVoters, id)
	}
	mb = appendPacked(mb, fieldMemberOutgoingVoters, m.Snapshot.Membership.OutgoingVoters)
	mb = appendPacked(mb, fieldMemberLearners, m.Snapshot.Membership.Learners)
	var sb []byte
	sb = appendVarintField(sb, fieldSnapIndex, 1000)
	sb = appendVarintField(sb, fieldSnapTerm, 8)
	sb = protowire.AppendBytes(appendTag(sb, fieldSnapMembership, protowire.BytesType), mb)
	b = protowire.AppendBytes(appendTag(b, fieldMsgSnapshot, protowire.BytesType), sb)

	got, err := decodeSnapshotMessage(b)
	must(t, err)
	equalMessages(t, []core.Message{got}, []core.Message{m})
}

// batchOf frames raw message encodings as a batch from 1 to 2.
func batchOf(msgs ...[]byte) []byte {
	b := appendHeader(nil, &batchHeader{clusterID: testCluster, from: 1, to: 2})
	for _, m := range msgs {
		b = protowire.AppendBytes(appendTag(b, fieldBatchMessages, protowire.BytesType), m)
	}
	return b
}

func encodeOne(m core.Message) []byte { return appendMessage(nil, &m) }

func TestDecodeDiscardsInvalidMessages(t *testing.T) {
	good := heartbeat(1, 2, 5)
	unknownType := encodeOne(heartbeat(1, 2, 6))
	unknownType[1] = 99 // type varint
	entryZero := app(1, 2, 0, []byte("x"))
	entryZero.Entries[0].Index = 0
	// An entry with an unknown entry type (7).
	var e []byte
	e = appendVarintField(e, fieldEntryIndex, 11)
	e = appendVarintField(e, fieldEntryType, 7)
	badEnt := appendVarintField(nil, fieldMsgType, uint64(wireOfType[core.MsgApp]))
	badEnt = appendVarintField(badEnt, fieldMsgFrom, 1)
	badEnt = appendVarintField(badEnt, fieldMsgTo, 2)
	badEnt = protowire.AppendBytes(appendTag(badEnt, fieldMsgEntries, protowire.BytesType), e)
	snapInBatch := encodeOne(snapMsg(1, 2))
	snapMetaOnApp := app(1, 2, 3)
	snapMetaOnApp.Snapshot = &core.SnapshotMeta{Index: 1}
	noType := appendVarintField(appendVarintField(nil, fieldMsgFrom, 1), fieldMsgTo, 2)
	good2 := app(1, 2, 20, []byte("after"))

	d, err := decodeBatch(batchOf(encodeOne(good), unknownType, encodeOne(entryZero), badEnt,
		snapInBatch, encodeOne(snapMetaOnApp), noType, encodeOne(good2)))
	must(t, err)
	equalMessages(t, d.msgs, []core.Message{good, good2})
	expectf(t, d.invalid == 6, "invalid = %d, want 6", d.invalid)
	expectf(t, errors.Is(d.firstInvalid, core.ErrInvalidMessage), "firstInvalid = %v", d.firstInvalid)
	expectf(t, strings.Contains(d.firstInvalid.Error(), "unknown message type 99"), "firstInvalid = %v", d.firstInvalid)
}

func TestDecodeMalformed(t *testing.T) {
	valid := encodeBatch(batchHeader{testCluster, 1, 2}, []core.Message{app(1, 2, 5, []byte("hello"), []byte("world"))})
	// Every strict prefix that cuts a field is malformed; none panics.
	for i := 1; i < len(valid); i++ {
		_, _ = decodeBatch(valid[:i])
	}
	cases := map[string][]byte{
		"bad tag":           {0x80},
		"field 0":           {0x00, 0x01},
		"truncated varint":  {0x08, 0xff},
		"length overflow":   {0x22, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"truncated message": {0x22, 0x05, 0x08},
		"bad group":         {0x0b, 0x0c + 8},
		"bad inner tag":     batchOf([]byte{0x80}),
	}
	for name, b := range cases {
		if _, err := decodeBatch(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want errMalformed", name, err)
		}
	}
}

func TestDecodeBoundsAllocation(t *testing.T) {
	// 1000 empty messages: two bytes each, far below any honest message.
	b := appendHeader(nil, &batchHeader{testCluster, 1, 2})
	for range 1000 {
		b = append(b, byte(fieldBatchMessages<<3|protowire.BytesType), 0)
	}
	if _, err := decodeBatch(b); !errors.Is(err, errMalformed) {
		t.Fatalf("err = %v, want errMalformed", err)
	}
	// 1000 empty entries in one message, likewise.
	var m []byte
	for range 1000 {
		m = append(m, byte(fieldMsgEntries<<3|protowire.BytesType), 0)
	}
	if _, err := decodeBatch(batchOf(m)); !errors.Is(err, errMalformed) {
		t.Fatalf("err = %v, want errMalformed", err)
	}
}

func TestDecodedDataAliasesSafely(t *testing.T) {
	msg := app(1, 2, 5, []byte("first"), []byte("second"))
	buf := encodeBatch(batchHeader{testCluster, 1, 2}, []core.Message{msg})
	d, err := decodeBatch(buf)
	must(t, err)
	ents := d.msgs[0].Entries
	expectf(t, cap(ents) == len(ents), "entries cap %d > len %d", cap(ents), len(ents))
	// Appending to one entry's data must not overwrite the next entry.
	_ = append(ents[0].Data, "XXXXXXXX"...)
	expectf(t, string(ents[1].Data) == "second", "second entry is now %q", ents[1].Data)
}

func TestSnapshotFramesMatchProto(t *testing.T) {
	msg := snapMsg(1, 2)
	frames := []outChunk{
		{kind: chunkHeader, hdr: batchHeader{testCluster, 1, 2}, msg: &msg, msgSize: messageSize(&msg)},
		{kind: chunkData, data: []byte("some snapshot bytes")},
		{kind: chunkData, data: []byte{}},
		{kind: chunkTrailer, crc: 0xdeadbeef, total: 19},
		{kind: chunkTrailer},
	}
	for i := range frames {
		c := &frames[i]
		ours := c.appendWire(nil)
		expectf(t, len(ours) == c.wireSize(), "frame %d: %d bytes, wireSize %d", i, len(ours), c.wireSize())
		var ref pb.SnapshotChunk
		must(t, proto.Unmarshal(ours, &ref))
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&ref)
		must(t, err)
		expectf(t, bytes.Equal(ours, want), "frame %d: ours %x, proto %x", i, ours, want)

		f, err := decodeSnapshotFrame(ours)
		must(t, err)
		expectf(t, f.kind == c.kind, "frame %d: kind %d, want %d", i, f.kind, c.kind)
		switch c.kind {
		case chunkHeader:
			expectf(t, f.hdr == c.hdr, "header %+v", f.hdr)
			got, err := decodeSnapshotMessage(f.msg)
			must(t, err)
			equalMessages(t, []core.Message{got}, []core.Message{msg})
			expectf(t, proto.Equal(ref.GetHeader().GetMessage(), toPBMessage(&msg)), "proto header message differs")
		case chunkData:
			expectf(t, bytes.Equal(f.data, c.data), "data %q", f.data)
		case chunkTrailer:
			expectf(t, f.crc == c.crc && f.total == c.total, "trailer %x/%d", f.crc, f.total)
		}
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"two parts":  append(frames[1].appendWire(nil), frames[3].appendWire(nil)...),
		"truncated":  frames[0].appendWire(nil)[:5],
		"bad header": {0x0a, 0x02, 0x08, 0xff},
	} {
		if _, err := decodeSnapshotFrame(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want errMalformed", name, err)
		}
	}
}

// checkDecodeBatch is the fuzz property: decoding never panics; whatever
// it accepts is valid, re-encodes to something that decodes the same, and
// agrees with the generated protobuf decoder.
func checkDecodeBatch(t *testing.T, data []byte) {
	d, err := decodeBatch(data)
	if err != nil {
		return
	}
	for _, m := range d.msgs {
		if !m.Type.Valid() || m.Type == core.MsgSnap || m.Snapshot != nil {
			t.Fatalf("accepted invalid message %v", m)
		}
		for _, e := range m.Entries {
			if e.Index == 0 && m.Type != core.MsgProp && m.Type != core.MsgPropResp {
				t.Fatalf("accepted entry with index 0 in %v", m)
			}
		}
	}
	again, err := decodeBatch(encodeBatch(d.batchHeader, d.msgs))
	if err != nil || again.invalid != 0 || again.batchHeader != d.batchHeader {
		t.Fatalf("re-encoding does not decode: %v (invalid %d)", err, again.invalid)
	}
	equalMessages(t, again.msgs, d.msgs)
	if d.invalid != 0 {
		return // the reference decoder rejects or reads differently what we discard
	}
	var ref pb.Batch
	if err := proto.Unmarshal(data, &ref); err != nil {
		t.Fatalf("accepted what proto.Unmarshal rejects: %v", err)
	}
	if ref.ClusterId != d.clusterID || ref.From != d.from || ref.To != d.to {
		t.Fatalf("header differs from proto's: %+v vs %v", d.batchHeader, &ref)
	}
	want := make([]core.Message, len(ref.Messages))
	for i, m := range ref.Messages {
		want[i] = fromPBMessage(m)
	}
	equalMessages(t, d.msgs, want)
}

func FuzzDecodeBatch(f *testing.F) {
	for _, s := range fuzzBatchSeeds() {
		f.Add(s)
	}
	f.Fuzz(checkDecodeBatch)
}

func FuzzDecodeSnapshotFrame(f *testing.F) {
	for _, s := range fuzzSnapshotSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeSnapshotFrame(data)
		if err != nil || fr.kind != chunkHeader {
			return
		}
		m, err := decodeSnapshotMessage(fr.msg)
		if err == nil && (m.Type != core.MsgSnap && m.Snapshot != nil || len(m.Entries) != 0) {
			t.Fatalf("accepted invalid snapshot message %v", m)
		}
	})
}

func fuzzBatchSeeds() [][]byte {
	r := rand.New(rand.NewPCG(5, 6))
	hdr := batchHeader{testCluster, 1, 2}
	unknown := encodeOne(heartbeat(1, 2, 1))
	unknown[1] = 42
	seeds := [][]byte{
		{},
		encodeBatch(hdr, nil),
		encodeBatch(hdr, []core.Message{heartbeat(1, 2, 1)}),
		encodeBatch(hdr, []core.Message{app(1, 2, 7, []byte("a"), nil, []byte("ccc"))}),
		encodeBatch(hdr, randomMessages(r, 1, 2, 5)),
		batchOf(unknown, encodeOne(heartbeat(1, 2, 2))),
		batchOf(encodeOne(snapMsg(1, 2))),
		batchOf(encodeOne(legacySnapMsg(1, 2))),
		{0x22, 0x05, 0x08},
		{0x0b, 0x14},
	}
	full := encodeBatch(hdr, []core.Message{app(1, 2, 9, []byte("truncate me"))})
	return append(seeds, full[:len(full)-3])
}

func fuzzSnapshotSeeds() [][]byte {
	msg, legacy := snapMsg(1, 2), legacySnapMsg(1, 2)
	return [][]byte{
		{},
		(&outChunk{kind: chunkHeader, hdr: batchHeader{testCluster, 1, 2}, msg: &msg, msgSize: messageSize(&msg)}).appendWire(nil),
		(&outChunk{kind: chunkHeader, hdr: batchHeader{testCluster, 1, 2}, msg: &legacy, msgSize: messageSize(&legacy)}).appendWire(nil),
		(&outChunk{kind: chunkData, data: []byte("data")}).appendWire(nil),
		(&outChunk{kind: chunkTrailer, crc: 12345, total: 4}).appendWire(nil),
		{0x0a, 0x02, 0x22, 0x05},
	}
}

var writeFuzzCorpus = flag.Bool("write-fuzz-corpus", false, "rewrite the committed seed corpus under testdata/fuzz")

// TestWriteFuzzCorpus regenerates testdata/fuzz/<FuzzName>/ from the seed
// functions above when run with -write-fuzz-corpus; plain go test runs
// the committed files as test cases.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*writeFuzzCorpus {
		t.Skip("run with -write-fuzz-corpus to regenerate the seed corpus")
	}
	for name, seeds := range map[string][][]byte{
		"FuzzDecodeBatch":         fuzzBatchSeeds(),
		"FuzzDecodeSnapshotFrame": fuzzSnapshotSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		must(t, os.MkdirAll(dir, 0o755))
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(s)))
			must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644))
		}
	}
}

func BenchmarkEncodeBatch(b *testing.B) {
	msgs := benchMessages(1, 2)
	o := outBatch{hdr: batchHeader{testCluster, 1, 2}}
	o.size = o.hdr.size()
	for i := range msgs {
		n := messageSize(&msgs[i])
		o.msgs = append(o.msgs, queuedMsg{msg: msgs[i], size: n})
		o.size += framedMessageSize(n)
	}
	buf := make([]byte, 0, o.size)
	b.SetBytes(int64(o.size))
	b.ReportAllocs()
	for b.Loop() {
		buf = o.appendWire(buf[:0])
	}
}

func BenchmarkDecodeBatch(b *testing.B) {
	buf := encodeBatch(batchHeader{testCluster, 1, 2}, benchMessages(1, 2))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeBatch(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// benchMessages is the benchmark batch: 64 MsgApp with one 256-byte
// entry each.
func benchMessages(from, to uint64) []core.Message {
	payload := bytes.Repeat([]byte{0xab}, 256)
	msgs := make([]core.Message, 64)
	for i := range msgs {
		msgs[i] = app(from, to, uint64(1000+i), payload)
	}
	return msgs
}

// TestSnapshotMembershipFromOlderPeer: a MsgSnap from a peer that predates
// encoded_membership (ID lists only) decodes to those lists; one with the
// encoding keeps names, addresses and HighestID; the two disagreeing, or
// an encoding that does not decode, is an invalid message (never a panic).
func TestSnapshotMembershipFromOlderPeer(t *testing.T) {
	legacy := legacySnapMsg(1, 2)
	ref := toPBMessage(&legacy)
	ref.Snapshot.EncodedMembership = nil // as an older peer sends it
	b, err := proto.Marshal(ref)
	must(t, err)
	got, err := decodeSnapshotMessage(b)
	must(t, err)
	equalMessages(t, []core.Message{got}, []core.Message{legacy})

	full := snapMsg(1, 2)
	got, err = decodeSnapshotMessage(appendMessage(nil, &full))
	must(t, err)
	equalMessages(t, []core.Message{got}, []core.Message{full})
	expectf(t, got.Snapshot.Membership.Members[1].Name == "rafty-3" && got.Snapshot.Membership.HighestID == 300001,
		"membership %+v", got.Snapshot.Membership)

	withMeta := func(meta []byte) []byte {
		b := appendVarintField(nil, fieldMsgType, uint64(wireOfType[core.MsgSnap]))
		b = appendVarintField(b, fieldMsgFrom, 1)
		b = appendVarintField(b, fieldMsgTo, 2)
		return protowire.AppendBytes(appendTag(b, fieldMsgSnapshot, protowire.BytesType), meta)
	}
	lists := func(m core.Membership) []byte {
		var mb []byte
		mb = appendPacked(mb, fieldMemberVoters, m.Voters)
		return protowire.AppendBytes(appendTag(nil, fieldSnapMembership, protowire.BytesType), mb)
	}
	encoded := func(enc []byte) []byte {
		return protowire.AppendBytes(appendTag(nil, fieldSnapEncoded, protowire.BytesType), enc)
	}
	m := full.Snapshot.Membership
	for name, meta := range map[string][]byte{
		"lists disagree":  append(lists(core.Membership{Voters: []uint64{7}}), encoded(m.Marshal())...),
		"bad version":     encoded(append([]byte{9}, m.Marshal()[1:]...)),
		"truncated":       encoded(m.Marshal()[:10]),
		"trailing bytes":  encoded(append(m.Marshal(), 0)),
		"given twice":     append(encoded(m.Marshal()), encoded(m.Marshal())...),
		"too many voters": encoded([]byte{1, 0xff, 0xff, 0x03}),
	} {
		if _, err := decodeSnapshotMessage(withMeta(meta)); !errors.Is(err, core.ErrInvalidMessage) {
			t.Errorf("%s: err = %v, want core.ErrInvalidMessage", name, err)
		}
	}
	// The encoding alone (no lists) is enough.
	got, err = decodeSnapshotMessage(withMeta(encoded(m.Marshal())))
	must(t, err)
	expectf(t, reflect.DeepEqual(got.Snapshot.Membership, m), "membership %+v", got.Snapshot.Membership)
}
