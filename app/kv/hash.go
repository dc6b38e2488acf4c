package kv

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// HashResult is a digest of the store's user data at one applied index.
type HashResult struct {
	// Hash is the first 8 bytes (big-endian) of the SHA-256 of every pair
	// in key order, each encoded as in a snapshot record (uvarint key
	// length, key, uvarint stored-value length, mod index header and
	// value), so it covers keys, values and mod indexes.
	Hash uint64
	// Index is the applied index the data was read at. Hashes of two
	// members are comparable only at equal indexes.
	Index uint64
	// Keys is the number of keys hashed.
	Keys uint64
}

// hashCheckEvery is how many keys Hash reads between checks of its
// context.
const hashCheckEvery = 4096

// Hash digests the whole keyspace from a Pebble snapshot, for convergence
// checks (members that applied the same commands have equal hashes).
//
// Cost: it reads every key and value, so time and I/O grow with the data
// (SHA-256 runs at roughly 1-2 GB/s; Pebble's iteration usually
// dominates); memory stays constant. At most one Hash runs at a time per
// store; others wait their turn or until ctx ends, and ctx also stops a
// running hash.
func (s *Store) Hash(ctx context.Context) (HashResult, error) {
	select {
	case s.hashSem <- struct{}{}:
	case <-ctx.Done():
		return HashResult{}, fmt.Errorf("kv: hash: waiting for another hash: %w", ctx.Err())
	}
	defer func() { <-s.hashSem }()

	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return HashResult{}, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()
	var res HashResult
	var err error
	if res.Index, err = readApplied(snap); err != nil {
		return HashResult{}, err
	}
	h := sha256.New()
	var tmp [binary.MaxVarintLen64]byte
	err = scanUser(snap, func(key, stored []byte) error {
		if res.Keys%hashCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		h.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(key)))])
		h.Write(key)
		h.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(stored)))])
		h.Write(stored)
		res.Keys++
		return nil
	})
	if err != nil {
		return HashResult{}, fmt.Errorf("kv: hash: %w", err)
	}
	var sum [sha256.Size]byte
	res.Hash = binary.BigEndian.Uint64(h.Sum(sum[:0]))
	return res, nil
}
