package driver

import (
	"encoding/binary"
	"fmt"
)

// The proposal envelope wraps every command the driver proposes, so that
// the node that applies an entry can tell whether one of its own callers
// waits for it, even when the proposal was forwarded to the leader and came
// back through replication. The state machine never sees it.
//
// Format (EnvelopeOverhead bytes, then the command):
//
//	offset  size  field
//	0       1     version (envelopeVersion)
//	1       8     proposer node ID, big endian
//	9       8     proposer boot epoch, big endian (random per Start)
//	17      8     sequence number within the epoch, big endian (from 1)
//	25      ...   command bytes, as passed to Propose
//
// (node, epoch, seq) is unique across restarts: the epoch is drawn from
// crypto/rand at every Start, so a restarted node never resolves a waiter
// with an entry its previous incarnation proposed. Fixed-width fields keep
// decoding trivial and total: any byte string decodes or is rejected,
// never misread.

// EnvelopeOverhead is the number of bytes the driver adds to every command
// in the Raft log. Count it when sizing core limits.
const EnvelopeOverhead = 25

const envelopeVersion byte = 1

// proposalID names one Propose call cluster-wide.
type proposalID struct {
	node  uint64
	epoch uint64
	seq   uint64
}

// encodeEnvelope returns a fresh buffer holding id's envelope and a copy of
// cmd, so the caller may reuse cmd once Propose returns.
func encodeEnvelope(id proposalID, cmd []byte) []byte {
	buf := make([]byte, EnvelopeOverhead+len(cmd))
	buf[0] = envelopeVersion
	binary.BigEndian.PutUint64(buf[1:9], id.node)
	binary.BigEndian.PutUint64(buf[9:17], id.epoch)
	binary.BigEndian.PutUint64(buf[17:25], id.seq)
	copy(buf[EnvelopeOverhead:], cmd)
	return buf
}

// decodeEnvelope splits entry data into the proposal ID and the command.
// The command aliases data.
func decodeEnvelope(data []byte) (proposalID, []byte, error) {
	if len(data) < EnvelopeOverhead {
		return proposalID{}, nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrCorruptEntry, len(data), EnvelopeOverhead)
	}
	if data[0] != envelopeVersion {
		return proposalID{}, nil, fmt.Errorf("%w: unknown version %d", ErrCorruptEntry, data[0])
	}
	id := proposalID{
		node:  binary.BigEndian.Uint64(data[1:9]),
		epoch: binary.BigEndian.Uint64(data[9:17]),
		seq:   binary.BigEndian.Uint64(data[17:25]),
	}
	if id.node == 0 || id.seq == 0 {
		return proposalID{}, nil, fmt.Errorf("%w: zero node or sequence", ErrCorruptEntry)
	}
	return id, data[EnvelopeOverhead:], nil
}
