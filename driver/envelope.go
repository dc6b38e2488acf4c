package driver

import (
	"encoding/binary"
	"fmt"

	"github.com/rafty-db/rafty/core"
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

// Versions and rolling upgrades. Byte 0 is the envelope's version; this
// build writes and reads version 1 only. Entry data that does not decode
// (a version this build does not know, a short or zeroed header) is
// handled the same way everywhere, so every replica reaches the same
// state:
//
//   - forwarded for proposal, it is refused by the leader with
//     ErrInvalidProposal (validateForwarded) and never enters the log;
//   - found committed (written by a faulty or hostile member, or a newer
//     version that reached the log), it is applied as a failed no-op:
//     the state machine does not see it, no waiter is resolved by it, it
//     is counted (rafty_driver_undecodable_entries_total) and logged once,
//     and the node keeps running — also after a restart, which replays it
//     the same way.
//
// A format change therefore goes in three steps: (1) a release that reads
// the old and the new version but still writes the old; (2) every member
// upgraded to it; (3) only then a release (or setting) that writes the new
// version. Writing it before step 2 completes would make old members no-op
// entries that new members apply, so step 3 must wait (ideally gated by a
// replicated cluster version, which Rafty does not have yet; today the
// operator's upgrade order is the gate). Downgrading below step 1 once the
// new version was written is unsupported. Application commands follow the
// same rule through Config.ValidateCommand and the state machine's own
// decoder: app/kv's protobuf decoder refuses unknown fields, so a command
// using a field an old member does not know is refused by an old leader
// and is a failed no-op (a *kv.CommandError result) on an old follower.

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

// Reasons the driver refuses a forwarded proposal, carried in the
// MsgPropResp's Context like the core's own (core/replication.go). The
// core's reasons are small integers; the driver's live above 2^32 so that
// the two sets never meet. A MsgPropResp carrying one is consumed by the
// receiving driver (stepMessage) and never stepped into the core, which
// would read an unknown reason as "not leader".
const (
	driverRejectBase  uint64 = 1 << 32
	rejectInvalid            = driverRejectBase + 1 // ErrInvalidProposal
	rejectLeaderBusy         = driverRejectBase + 2 // ErrLeaderBusy
	driverRejectLimit        = driverRejectBase + 1<<16
)

// driverRejectErr maps a driver reject reason to its error, ok false if
// reason is not one of the driver's.
func driverRejectErr(reason uint64) (error, bool) {
	switch reason {
	case rejectInvalid:
		return ErrInvalidProposal, true
	case rejectLeaderBusy:
		return ErrLeaderBusy, true
	}
	if reason >= driverRejectBase && reason < driverRejectLimit {
		// A reason from a newer driver: still a refusal.
		return fmt.Errorf("%w (unknown reason %d)", ErrProposalDropped, reason), true
	}
	return nil, false
}

// validateForwarded checks one entry of a forwarded proposal (MsgProp)
// from peer: a normal entry whose data is an envelope this build decodes,
// naming peer as its proposer (a peer may only propose as itself, so it
// cannot resolve another node's waiter with its entry), and whose command
// validate (Config.ValidateCommand, may be nil) accepts.
func validateForwarded(e *core.Entry, from uint64, validate func([]byte) error) error {
	if e.Type != core.EntryNormal {
		// Membership changes are never forwarded as proposals.
		return fmt.Errorf("%w: entry of type %v", ErrInvalidProposal, e.Type)
	}
	id, cmd, err := decodeEnvelope(e.Data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	if id.node != from {
		return fmt.Errorf("%w: forwarded by node %d but claims proposer %d", ErrInvalidProposal, from, id.node)
	}
	if validate != nil {
		if err := validate(cmd); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidProposal, err)
		}
	}
	return nil
}
