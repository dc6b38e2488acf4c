package kv

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

// Apply applies cmds, in order, in one Pebble batch, and returns one result
// per command:
//
//   - *kvpb.PutResponse, *kvpb.DeleteResponse or *kvpb.TxnResponse (with
//     Header unset; the service fills it) for a command that ran;
//   - *CommandError for one that had no effect: corrupt bytes
//     (ErrCorruptCommand), a broken rule (ErrInvalidCommand), or an index
//     at or below the applied index (ErrAlreadyApplied: skipped, so a
//     re-delivered command is never applied twice).
//
// Exactly-once: the batch also records the index of the last command as
// the applied index, and is committed atomically, so after a crash the
// store holds either all of this call's effects and its index, or none of
// them and the previous index, and the driver re-delivers from there.
//
// The batch is committed without fsync (pebble.NoSync): the Raft log is
// the write-ahead log (see Sync for the resulting compaction invariant).
// It is an indexed batch, so a command reads the writes of the commands
// before it in the same call.
//
// A non-nil error means Pebble failed; nothing of this call was committed
// and the driver stops the node. Apply is called by the driver's goroutine
// only, never concurrently with itself.
func (s *Store) Apply(cmds []driver.Command) ([]any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	results := make([]any, len(cmds))
	applied := s.applied.Load()
	last := applied
	a := &s.applier
	a.b = s.db.NewIndexedBatch()
	defer func() {
		_ = a.b.Close()
		a.b = nil
	}()
	for i := range cmds {
		c := &cmds[i]
		if c.Index <= applied {
			results[i] = &CommandError{Index: c.Index, Err: ErrAlreadyApplied}
			continue
		}
		if c.Index <= last {
			return nil, fmt.Errorf("kv: command index %d does not follow %d: indexes must increase", c.Index, last)
		}
		last = c.Index
		if err := decodeCommand(c.Data, &s.cmd); err != nil {
			// The same verdict on every member, and again when the entry
			// is re-applied after a restart: a failed no-op, never a stop.
			// (An unknown field, such as a newer release's, is refused
			// the same way; see driver/envelope.go for how a format
			// change is rolled out.)
			a.refused.Add(1)
			s.log.Warn("command applied as a failed no-op", "index", c.Index, "bytes", len(c.Data), "err", err)
			results[i] = &CommandError{Index: c.Index, Err: err}
			continue
		}
		res, err := a.run(c.Index, &s.cmd, s.opts.MaxResultBytes)
		if err != nil {
			return nil, fmt.Errorf("kv: applying command at index %d: %w", c.Index, err)
		}
		results[i] = res
	}
	if last == applied {
		return results, nil // every command was already applied
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], last)
	if err := a.b.Set(appliedKey, idx[:], nil); err != nil {
		return nil, fmt.Errorf("kv: recording applied index %d: %w", last, err)
	}
	if err := a.b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("kv: committing indexes %d..%d: %w", cmds[0].Index, last, err)
	}
	s.applied.Store(last)
	return results, nil
}

// RefusedCommands counts the commands Apply refused, since OpenStore:
// corrupt or rule-breaking bytes applied as failed no-ops (a *CommandError
// result wrapping ErrCorruptCommand or ErrInvalidCommand). ValidateCommand
// keeps them out of the log; a nonzero count means a member proposed
// without it, or a release with a newer command format proposed too
// early.
func (s *Store) RefusedCommands() uint64 { return s.applier.refused.Load() }

// ValidateCommand reports whether data is a command Apply would execute:
// it decodes and keeps every structural rule, with the same verdict on
// every member. It is the driver's Config.ValidateCommand for a Store, so
// a malformed command is refused before it enters the log. Errors wrap
// ErrCorruptCommand or ErrInvalidCommand. Safe for concurrent use.
func ValidateCommand(data []byte) error {
	var c command
	return decodeCommand(data, &c)
}

// applier executes decoded commands into the batch of one Apply call.
type applier struct {
	// refused counts commands that failed to decode or validate
	// (RefusedCommands); read concurrently by metrics.
	refused atomic.Uint64

	b      *pebble.Batch
	index  uint64 // the command's log index: the mod index of its writes
	budget int    // result bytes the command may still return
	keyBuf []byte // scratch for Pebble keys, reused across commands
}

// run executes c, logged at index, and returns its result. Errors are
// Pebble failures only: c has been validated.
func (a *applier) run(index uint64, c *command, maxResultBytes int) (any, error) {
	a.index, a.budget = index, maxResultBytes
	switch c.kind {
	case opPut:
		return a.put(&c.put)
	case opDelete:
		return a.delete(&c.del)
	case opTxn:
		return a.txn(&c.txn)
	}
	return nil, fmt.Errorf("kv: command of unknown kind %d passed validation", c.kind)
}

func (a *applier) put(p *putOp) (*kvpb.PutResponse, error) {
	resp := &kvpb.PutResponse{Index: a.index}
	a.keyBuf = appendUserKey(a.keyBuf[:0], p.key)
	pk := a.keyBuf
	if p.prevKV {
		prev, err := readKV(a.b, pk, false)
		if err != nil {
			return nil, err
		}
		if prev != nil {
			a.budget -= len(prev.Key) + len(prev.Value) + kvOverhead
		}
		resp.PrevKv = prev
	}
	// Build the stored value in place in the batch: one copy, no
	// allocation.
	op := a.b.SetDeferred(len(pk), valueHeaderLen+len(p.value))
	copy(op.Key, pk)
	putValueHeader(op.Value, a.index)
	copy(op.Value[valueHeaderLen:], p.value)
	if err := op.Finish(); err != nil {
		return nil, fmt.Errorf("kv: writing key %q: %w", trunc(p.key), err)
	}
	return resp, nil
}

func (a *applier) delete(d *deleteOp) (*kvpb.DeleteResponse, error) {
	resp := &kvpb.DeleteResponse{Index: a.index}
	sp := spanOf(d.key, d.rangeEnd, d.prefix)
	if sp.single {
		a.keyBuf = appendUserKey(a.keyBuf[:0], d.key)
		pk := a.keyBuf
		var found bool
		if d.prevKVs {
			prev, err := readKV(a.b, pk, false)
			if err != nil {
				return nil, err
			}
			if found = prev != nil; found {
				a.budget -= len(prev.Key) + len(prev.Value) + kvOverhead
				resp.PrevKvs = []*kvpb.KeyValue{prev}
			}
		} else {
			var err error
			if found, err = exists(a.b, pk); err != nil {
				return nil, err
			}
		}
		if !found {
			return resp, nil
		}
		if err := a.b.Delete(pk, nil); err != nil {
			return nil, fmt.Errorf("kv: deleting key %q: %w", trunc(d.key), err)
		}
		resp.Deleted = 1
		return resp, nil
	}

	// A span: count (and collect) what is there, then drop it all with
	// one range tombstone instead of one tombstone per key.
	if d.prevKVs {
		rng := rangeOp{key: d.key, rangeEnd: d.rangeEnd, prefix: d.prefix}
		prev, buf, err := readRange(a.b, &rng, &a.budget, a.keyBuf)
		a.keyBuf = buf
		if err != nil {
			return nil, err
		}
		resp.PrevKvs, resp.PrevKvsTruncated = prev.Kvs, prev.More
	}
	cnt := rangeOp{key: d.key, rangeEnd: d.rangeEnd, prefix: d.prefix, countOnly: true}
	counted, buf, err := readRange(a.b, &cnt, &a.budget, a.keyBuf)
	a.keyBuf = buf
	if err != nil {
		return nil, err
	}
	resp.Deleted = counted.Count
	if resp.Deleted == 0 {
		return resp, nil
	}
	lower, upper, buf := sp.bounds(a.keyBuf[:0])
	a.keyBuf = buf
	if err := a.b.DeleteRange(lower, upper, nil); err != nil {
		return nil, fmt.Errorf("kv: deleting range %q..%q: %w", trunc(d.key), trunc(d.rangeEnd), err)
	}
	return resp, nil
}
