package kv

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// txn runs a transaction: every comparison is evaluated on the state the
// transaction starts from, then the chosen branch runs in order. Atomicity
// comes from the Apply call's single batch: the transaction's writes, like
// every other command's, become visible together with the applied index.
func (a *applier) txn(t *txnOp) (*kvpb.TxnResponse, error) {
	ok := true
	for i := range t.compares {
		held, err := a.compare(&t.compares[i])
		if err != nil {
			return nil, fmt.Errorf("txn compare[%d]: %w", i, err)
		}
		if !held {
			ok = false
			break
		}
	}
	ops := t.success
	if !ok {
		ops = t.failure
	}
	resp := &kvpb.TxnResponse{Succeeded: ok, Index: a.index, Responses: make([]*kvpb.ResponseOp, len(ops))}
	for i := range ops {
		op := &ops[i]
		r := &kvpb.ResponseOp{}
		switch op.kind {
		case opPut:
			put, err := a.put(&op.put)
			if err != nil {
				return nil, err
			}
			r.Op = &kvpb.ResponseOp_Put{Put: put}
		case opDelete:
			del, err := a.delete(&op.del)
			if err != nil {
				return nil, err
			}
			r.Op = &kvpb.ResponseOp_Delete{Delete: del}
		case opRange:
			rng, buf, err := readRange(a.b, &op.rng, &a.budget, a.keyBuf)
			a.keyBuf = buf
			if err != nil {
				return nil, err
			}
			r.Op = &kvpb.ResponseOp_Range{Range: rng}
		default:
			return nil, fmt.Errorf("kv: txn op of unknown kind %d passed validation", op.kind)
		}
		resp.Responses[i] = r
	}
	return resp, nil
}

// compare evaluates one comparison against the batch.
func (a *applier) compare(c *compareOp) (bool, error) {
	a.keyBuf = appendUserKey(a.keyBuf[:0], c.key)
	v, closer, err := a.b.Get(a.keyBuf)
	found := err == nil
	if err != nil && !errors.Is(err, pebble.ErrNotFound) {
		return false, fmt.Errorf("kv: reading key %q: %w", trunc(c.key), err)
	}
	var mod uint64
	var val []byte
	if found {
		defer closer.Close()
		if mod, val, err = decodeValue(v); err != nil {
			return false, fmt.Errorf("%w (key %q)", err, trunc(c.key))
		}
	}
	switch c.target {
	case kvpb.Compare_EXISTS:
		// Validation allows only EQUAL and NOT_EQUAL here.
		return (found == c.exists) == (c.result == kvpb.Compare_EQUAL), nil
	case kvpb.Compare_VALUE:
		if !found {
			return false, nil // no value to compare; documented in kv.proto
		}
		return holds(bytes.Compare(val, c.value), c.result), nil
	case kvpb.Compare_MOD_INDEX:
		return holds(cmp.Compare(mod, c.modIndex), c.result), nil // mod is 0 if absent
	}
	return false, fmt.Errorf("kv: compare target %v passed validation", c.target)
}

// holds reports whether a comparison result c (-1, 0, +1) satisfies r.
func holds(c int, r kvpb.Compare_Result) bool {
	switch r {
	case kvpb.Compare_EQUAL:
		return c == 0
	case kvpb.Compare_NOT_EQUAL:
		return c != 0
	case kvpb.Compare_LESS:
		return c < 0
	case kvpb.Compare_GREATER:
		return c > 0
	}
	return false
}
