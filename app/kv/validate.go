package kv

import (
	"fmt"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// Structural rules of commands. They depend on nothing but the command, so
// every member reaches the same verdict: the state machine enforces them
// at apply time (an invalid command changes nothing and yields a
// *CommandError), and the service enforces them before proposing, through
// the very same code, so a client learns about a bad request before it
// costs a Raft round. Size limits are not rules of this kind: they are
// per-member configuration and live in limits.go, checked by the service
// only.

func (c *command) validate() error {
	switch c.kind {
	case opPut:
		return wrapRule("put", c.put.validate())
	case opDelete:
		return wrapRule("delete", c.del.validate())
	case opTxn:
		return wrapRule("txn", c.txn.validate())
	}
	return invalidf("command has no operation")
}

func (p *putOp) validate() error {
	if len(p.key) == 0 {
		return invalidf("key is empty")
	}
	return nil
}

func (d *deleteOp) validate() error { return validateSpan(d.key, d.rangeEnd, d.prefix) }

func (r *rangeOp) validate() error {
	if r.limit < 0 {
		return invalidf("limit %d is negative", r.limit)
	}
	return validateSpan(r.key, r.rangeEnd, r.prefix)
}

func (c *compareOp) validate() error {
	if len(c.key) == 0 {
		return invalidf("key is empty")
	}
	switch c.result {
	case kvpb.Compare_EQUAL, kvpb.Compare_NOT_EQUAL, kvpb.Compare_LESS, kvpb.Compare_GREATER:
	default:
		return invalidf("unknown result %d", int32(c.result))
	}
	switch c.target {
	case kvpb.Compare_EXISTS:
		if c.result != kvpb.Compare_EQUAL && c.result != kvpb.Compare_NOT_EQUAL {
			return invalidf("target EXISTS allows only EQUAL and NOT_EQUAL, got %v", c.result)
		}
		if len(c.value) > 0 || c.modIndex != 0 {
			return invalidf("target EXISTS takes the exists operand only")
		}
	case kvpb.Compare_VALUE:
		if c.exists || c.modIndex != 0 {
			return invalidf("target VALUE takes the value operand only")
		}
	case kvpb.Compare_MOD_INDEX:
		if c.exists || len(c.value) > 0 {
			return invalidf("target MOD_INDEX takes the mod_index operand only")
		}
	case kvpb.Compare_TARGET_UNSPECIFIED:
		return invalidf("target is unspecified")
	default:
		return invalidf("unknown target %d", int32(c.target))
	}
	return nil
}

func (op *requestOp) validate() error {
	switch op.kind {
	case opPut:
		return wrapRule("put", op.put.validate())
	case opDelete:
		return wrapRule("delete", op.del.validate())
	case opRange:
		return wrapRule("range", op.rng.validate())
	}
	return invalidf("operation is empty")
}

func (t *txnOp) validate() error {
	for i := range t.compares {
		if err := t.compares[i].validate(); err != nil {
			return wrapRule(fmt.Sprintf("compare[%d]", i), err)
		}
	}
	for i := range t.success {
		if err := t.success[i].validate(); err != nil {
			return wrapRule(fmt.Sprintf("success[%d]", i), err)
		}
	}
	for i := range t.failure {
		if err := t.failure[i].validate(); err != nil {
			return wrapRule(fmt.Sprintf("failure[%d]", i), err)
		}
	}
	return nil
}

// wrapRule prefixes err (if any) with where it was found.
func wrapRule(where string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", where, err)
}
