package kv

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// Reads shared by the apply path (through the Apply call's indexed batch,
// so a command sees the effects of the commands before it in the same
// batch) and the service's local reads (through the database).

// kvOverhead approximates the encoding overhead of one KeyValue in a
// response, so that budgets also bound responses of many tiny pairs.
const kvOverhead = 16

// readKV returns the pair stored under Pebble key pk, or nil if absent.
// The result is a copy, independent of r.
func readKV(r pebble.Reader, pk []byte, keysOnly bool) (*kvpb.KeyValue, error) {
	v, closer, err := r.Get(pk)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv: reading key %q: %w", trunc(userKeyOf(pk)), err)
	}
	defer closer.Close()
	mod, val, err := decodeValue(v)
	if err != nil {
		return nil, fmt.Errorf("%w (key %q)", err, trunc(userKeyOf(pk)))
	}
	kv := &kvpb.KeyValue{Key: bytes.Clone(userKeyOf(pk)), ModIndex: mod}
	if !keysOnly {
		kv.Value = bytes.Clone(val)
	}
	return kv, nil
}

// exists reports whether Pebble key pk holds a pair.
func exists(r pebble.Reader, pk []byte) (bool, error) {
	_, closer, err := r.Get(pk)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kv: reading key %q: %w", trunc(userKeyOf(pk)), err)
	}
	return true, closer.Close()
}

// readRange answers op from r. budget is the key and value bytes the
// response may still carry; it is decreased by what is returned. The
// first pair is returned even if it alone exceeds the budget, so a caller
// paging through a span always makes progress. buf is scratch space for
// Pebble keys; the (possibly grown) buffer is returned for reuse.
func readRange(r pebble.Reader, op *rangeOp, budget *int, buf []byte) (*kvpb.RangeResponse, []byte, error) {
	resp := &kvpb.RangeResponse{}
	sp := spanOf(op.key, op.rangeEnd, op.prefix)
	if sp.single {
		buf = appendUserKey(buf[:0], sp.start)
		kv, err := readKV(r, buf, op.keysOnly || op.countOnly)
		if err != nil || kv == nil {
			return resp, buf, err
		}
		resp.Count = 1
		if !op.countOnly {
			*budget -= len(kv.Key) + len(kv.Value) + kvOverhead
			resp.Kvs = []*kvpb.KeyValue{kv}
		}
		return resp, buf, nil
	}
	lower, upper, buf := sp.bounds(buf[:0])
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, buf, fmt.Errorf("kv: opening iterator: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		if op.countOnly {
			// Counting touches keys only; values are never loaded.
			resp.Count++
			continue
		}
		if op.limit > 0 && int64(len(resp.Kvs)) >= op.limit {
			resp.More = true
			break
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, buf, fmt.Errorf("kv: reading value: %w", err)
		}
		mod, val, err := decodeValue(v)
		if err != nil {
			_ = it.Close()
			return nil, buf, fmt.Errorf("%w (key %q)", err, trunc(userKeyOf(it.Key())))
		}
		k := userKeyOf(it.Key())
		size := len(k) + kvOverhead
		if !op.keysOnly {
			size += len(val)
		}
		if len(resp.Kvs) > 0 && size > *budget {
			resp.More = true
			break
		}
		*budget -= size
		kv := &kvpb.KeyValue{Key: bytes.Clone(k), ModIndex: mod}
		if !op.keysOnly {
			kv.Value = bytes.Clone(val)
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	if err := it.Close(); err != nil {
		return nil, buf, fmt.Errorf("kv: iterating: %w", err)
	}
	if !op.countOnly {
		resp.Count = int64(len(resp.Kvs))
	}
	return resp, buf, nil
}

// get reads key from the local state, without any linearizability
// barrier (the service runs that first when asked to).
func (s *Store) get(key []byte) (*kvpb.KeyValue, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	return readKV(s.db, appendUserKey(make([]byte, 0, len(key)+1), key), false)
}

// rangeLocal answers op from the local state with at most maxBytes of
// keys and values (at least one pair if any); see readRange.
func (s *Store) rangeLocal(op *rangeOp, maxBytes int) (*kvpb.RangeResponse, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return nil, err
	}
	budget := maxBytes
	resp, _, err := readRange(s.db, op, &budget, nil)
	return resp, err
}
