package kv

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// A command in the Raft log is a protobuf-encoded kvpb.Command. The apply
// path does not unmarshal it into generated messages: it decodes the wire
// format by hand (this file) into the plain structs below, whose byte
// slices alias the log entry (driver.Command.Data may be kept but never
// modified), so decoding a Put allocates nothing. The decoder is strict
// where protobuf is lenient, on purpose:
//
//   - an unknown field is an error, not skipped: a member that silently
//     ignored part of a command would apply something other than what the
//     proposer meant;
//   - a singular field or oneof that appears twice is an error, not
//     merged;
//   - a known field with the wrong wire type is an error.
//
// Whatever it accepts, proto.Unmarshal accepts too and reads the same way
// (FuzzDecodeCommand checks this). Every failure is an error value; no
// input makes it panic.

// opKind says which operation a command or transaction op holds.
type opKind uint8

const (
	opNone opKind = iota
	opPut
	opDelete
	opRange
	opTxn
)

type putOp struct {
	key, value []byte
	prevKV     bool
}

type deleteOp struct {
	key, rangeEnd []byte
	prefix        bool
	prevKVs       bool
}

type rangeOp struct {
	key, rangeEnd []byte
	prefix        bool
	limit         int64
	keysOnly      bool
	countOnly     bool
	serializable  bool
}

type compareOp struct {
	key      []byte
	target   kvpb.Compare_Target
	result   kvpb.Compare_Result
	exists   bool
	value    []byte
	modIndex uint64
}

// requestOp is one operation of a transaction branch: put, delete or range.
type requestOp struct {
	kind opKind
	put  putOp
	del  deleteOp
	rng  rangeOp
}

type txnOp struct {
	compares []compareOp
	success  []requestOp
	failure  []requestOp
}

// command is a decoded kvpb.Command. The Store keeps one and decodes every
// command into it, reusing the transaction slices.
type command struct {
	kind opKind
	put  putOp
	del  deleteOp
	txn  txnOp
}

func (c *command) reset() {
	t := c.txn
	*c = command{txn: txnOp{compares: t.compares[:0], success: t.success[:0], failure: t.failure[:0]}}
}

// Field numbers, from kv.proto.
const (
	fCommandPut    = 1
	fCommandDelete = 2
	fCommandTxn    = 3

	fPutKey    = 1
	fPutValue  = 2
	fPutPrevKV = 3

	fDeleteKey      = 1
	fDeleteRangeEnd = 2
	fDeletePrefix   = 3
	fDeletePrevKVs  = 4

	fRangeKey          = 1
	fRangeRangeEnd     = 2
	fRangePrefix       = 3
	fRangeLimit        = 4
	fRangeKeysOnly     = 5
	fRangeCountOnly    = 6
	fRangeSerializable = 7

	fCompareKey      = 1
	fCompareTarget   = 2
	fCompareResult   = 3
	fCompareExists   = 4
	fCompareValue    = 5
	fCompareModIndex = 6

	fOpPut    = 1
	fOpDelete = 2
	fOpRange  = 3

	fTxnCompare = 1
	fTxnSuccess = 2
	fTxnFailure = 3
)

// decodeCommand decodes and validates data into c (reset first). The
// error, if any, wraps ErrCorruptCommand or ErrInvalidCommand.
func decodeCommand(data []byte, c *command) error {
	c.reset()
	w := wire{b: data, msg: "command"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		var v []byte
		switch num {
		case fCommandPut, fCommandDelete, fCommandTxn:
			// A oneof: only one of its fields may appear, once.
			if c.kind != opNone {
				return corruptf("command: more than one operation")
			}
			if v, err = w.bytes(num, typ); err != nil {
				return err
			}
		default:
			return w.unknown(num, typ)
		}
		switch num {
		case fCommandPut:
			c.kind, err = opPut, decodePut(v, &c.put)
		case fCommandDelete:
			c.kind, err = opDelete, decodeDelete(v, &c.del)
		case fCommandTxn:
			c.kind, err = opTxn, decodeTxn(v, &c.txn)
		}
		if err != nil {
			return err
		}
	}
	return c.validate() // also rejects an empty command, well-formed but meaningless
}

func decodePut(b []byte, p *putOp) error {
	w := wire{b: b, msg: "put"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		switch num {
		case fPutKey:
			p.key, err = w.bytes(num, typ)
		case fPutValue:
			p.value, err = w.bytes(num, typ)
		case fPutPrevKV:
			p.prevKV, err = w.bool(num, typ)
		default:
			err = w.unknown(num, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeDelete(b []byte, d *deleteOp) error {
	w := wire{b: b, msg: "delete"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		switch num {
		case fDeleteKey:
			d.key, err = w.bytes(num, typ)
		case fDeleteRangeEnd:
			d.rangeEnd, err = w.bytes(num, typ)
		case fDeletePrefix:
			d.prefix, err = w.bool(num, typ)
		case fDeletePrevKVs:
			d.prevKVs, err = w.bool(num, typ)
		default:
			err = w.unknown(num, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeRange(b []byte, r *rangeOp) error {
	w := wire{b: b, msg: "range"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		var u uint64
		switch num {
		case fRangeKey:
			r.key, err = w.bytes(num, typ)
		case fRangeRangeEnd:
			r.rangeEnd, err = w.bytes(num, typ)
		case fRangePrefix:
			r.prefix, err = w.bool(num, typ)
		case fRangeLimit:
			u, err = w.varint(num, typ)
			r.limit = int64(u) // int64 fields are plain two's-complement varints
		case fRangeKeysOnly:
			r.keysOnly, err = w.bool(num, typ)
		case fRangeCountOnly:
			r.countOnly, err = w.bool(num, typ)
		case fRangeSerializable:
			r.serializable, err = w.bool(num, typ)
		default:
			err = w.unknown(num, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeCompare(b []byte, c *compareOp) error {
	w := wire{b: b, msg: "compare"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		var u uint64
		switch num {
		case fCompareKey:
			c.key, err = w.bytes(num, typ)
		case fCompareTarget:
			u, err = w.varint(num, typ)
			c.target = kvpb.Compare_Target(int32(u)) // enums are int32 varints
		case fCompareResult:
			u, err = w.varint(num, typ)
			c.result = kvpb.Compare_Result(int32(u))
		case fCompareExists:
			c.exists, err = w.bool(num, typ)
		case fCompareValue:
			c.value, err = w.bytes(num, typ)
		case fCompareModIndex:
			c.modIndex, err = w.varint(num, typ)
		default:
			err = w.unknown(num, typ)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func decodeRequestOp(b []byte, op *requestOp) error {
	w := wire{b: b, msg: "request op"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		var v []byte
		switch num {
		case fOpPut, fOpDelete, fOpRange:
			if op.kind != opNone {
				return corruptf("request op: more than one operation")
			}
			if v, err = w.bytes(num, typ); err != nil {
				return err
			}
		default:
			return w.unknown(num, typ)
		}
		switch num {
		case fOpPut:
			op.kind, err = opPut, decodePut(v, &op.put)
		case fOpDelete:
			op.kind, err = opDelete, decodeDelete(v, &op.del)
		case fOpRange:
			op.kind, err = opRange, decodeRange(v, &op.rng)
		}
		if err != nil {
			return err
		}
	}
	return nil // an empty op is well-formed protobuf; validate rejects it
}

func decodeTxn(b []byte, t *txnOp) error {
	w := wire{b: b, msg: "txn"}
	for w.more() {
		num, typ, err := w.tag()
		if err != nil {
			return err
		}
		// Repeated message fields: each occurrence is one element.
		if typ != protowire.BytesType {
			return w.unknown(num, typ)
		}
		var v []byte
		v, err = w.element()
		if err != nil {
			return err
		}
		switch num {
		case fTxnCompare:
			t.compares = append(t.compares, compareOp{})
			err = decodeCompare(v, &t.compares[len(t.compares)-1])
		case fTxnSuccess:
			t.success = append(t.success, requestOp{})
			err = decodeRequestOp(v, &t.success[len(t.success)-1])
		case fTxnFailure:
			t.failure = append(t.failure, requestOp{})
			err = decodeRequestOp(v, &t.failure[len(t.failure)-1])
		default:
			return w.unknown(num, protowire.BytesType)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// wire reads the fields of one encoded message.
type wire struct {
	b   []byte
	msg string // message name, for errors
	// seen has bit n set once singular field n was read.
	seen uint64
}

func (w *wire) more() bool { return len(w.b) > 0 }

func (w *wire) tag() (protowire.Number, protowire.Type, error) {
	num, typ, n := protowire.ConsumeTag(w.b)
	if n < 0 {
		return 0, 0, corruptf("%s: bad field tag: %v", w.msg, protowire.ParseError(n))
	}
	w.b = w.b[n:]
	return num, typ, nil
}

// once records that singular field num was read, failing if it was
// already (num is one of the small known field numbers).
func (w *wire) once(num protowire.Number) error {
	bit := uint64(1) << uint(num)
	if w.seen&bit != 0 {
		return corruptf("%s: field %d appears twice", w.msg, num)
	}
	w.seen |= bit
	return nil
}

func (w *wire) bytes(num protowire.Number, typ protowire.Type) ([]byte, error) {
	if typ != protowire.BytesType {
		return nil, corruptf("%s: field %d has wire type %d, want bytes", w.msg, num, typ)
	}
	if err := w.once(num); err != nil {
		return nil, err
	}
	return w.element()
}

// element reads a length-delimited value without the singular check.
func (w *wire) element() ([]byte, error) {
	v, n := protowire.ConsumeBytes(w.b)
	if n < 0 {
		return nil, corruptf("%s: bad length-delimited field: %v", w.msg, protowire.ParseError(n))
	}
	w.b = w.b[n:]
	return v, nil
}

func (w *wire) varint(num protowire.Number, typ protowire.Type) (uint64, error) {
	if typ != protowire.VarintType {
		return 0, corruptf("%s: field %d has wire type %d, want varint", w.msg, num, typ)
	}
	if err := w.once(num); err != nil {
		return 0, err
	}
	v, n := protowire.ConsumeVarint(w.b)
	if n < 0 {
		return 0, corruptf("%s: bad varint in field %d: %v", w.msg, num, protowire.ParseError(n))
	}
	w.b = w.b[n:]
	return v, nil
}

func (w *wire) bool(num protowire.Number, typ protowire.Type) (bool, error) {
	v, err := w.varint(num, typ)
	return v != 0, err // protobuf reads any non-zero varint as true
}

func (w *wire) unknown(num protowire.Number, typ protowire.Type) error {
	return corruptf("%s: unknown field %d (wire type %d)", w.msg, num, typ)
}
