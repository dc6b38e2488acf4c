package disk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"

	"github.com/rafty-db/rafty/core"
)

// Record framing (see doc.go for the whole format):
//
//	offset 0  uint32  CRC-32C (Castagnoli) of bytes [4, 9+length)
//	offset 4  uint32  length of the payload
//	offset 8  uint8   record type
//	offset 9  payload (length bytes)
//
// All integers are little endian. The CRC covers the length and the type,
// so a flipped bit anywhere in a record is detected.
const recordHeaderSize = 9

// recordType says how to decode a payload. Zero is invalid so that a
// zero-filled region never decodes as a record.
type recordType uint8

const (
	recInvalid    recordType = iota
	recCheckpoint            // first record of every segment: the state so far
	recBatch                 // opens a group-commit batch: seq, body length, count
	recEntry                 // one log entry
	recHardState             // term, vote, commit
	recSnapshot              // InstallSnapshot marker, legacy metadata (WAL format 2)
	recSnapshotV3            // InstallSnapshot marker, metadata with the core's membership codec
	recTypeEnd
)

func (t recordType) String() string {
	switch t {
	case recCheckpoint:
		return "checkpoint"
	case recBatch:
		return "batch"
	case recEntry:
		return "entry"
	case recHardState:
		return "hardstate"
	case recSnapshot:
		return "snapshot"
	case recSnapshotV3:
		return "snapshot-v3"
	}
	return fmt.Sprintf("recordType(%d)", uint8(t))
}

// Fixed payload sizes.
const (
	// seq u64, salt u64, synced-end u64, body length u32, record count
	// u32, previous chain value u32
	batchPayloadSize     = 36
	batchRecordBytes     = recordHeaderSize + batchPayloadSize
	hardStatePayloadSize = 24 // term, vote, commit
	hardStateRecordBytes = recordHeaderSize + hardStatePayloadSize

	// EntryOverheadBytes is the part of an entry record's payload that is
	// not Data: index u64, term u64, type u8. An entry fits when
	// EntryOverheadBytes+len(Data) <= Options.MaxRecordBytes.
	EntryOverheadBytes = 17

	// checkpointVersion is the WAL format version, stored in every
	// segment's checkpoint. Version 1 had no salt, chain or synced end in
	// its batch headers, and recovered a torn tail by scanning for later
	// headers (issue 13); it is refused with ErrFormatVersion. Version 2
	// stored snapshot metadata with ID lists only (no member names,
	// addresses or HighestID); it is still read, and a Store that opens
	// a version-2 segment starts a new version-3 segment for its writes.
	checkpointVersion       = 3
	checkpointVersionLegacy = 2
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Decoding failures of the framing. Which of them means "torn tail" and
// which "corruption" is decided by the caller from where they happen.
var (
	errRecTruncated = errors.New("record extends past the end of the data")
	errRecTooLong   = errors.New("record length exceeds Options.MaxRecordBytes")
	errRecChecksum  = errors.New("record CRC-32C mismatch")
	errRecType      = errors.New("unknown record type")
)

// beginRecord reserves a header at the end of buf; endRecord fills it once
// the payload has been appended. Encoding in place avoids a copy per record.
func beginRecord(buf []byte) ([]byte, int) {
	start := len(buf)
	return append(buf, make([]byte, recordHeaderSize)...), start
}

func endRecord(buf []byte, start int, typ recordType) []byte {
	h := buf[start:]
	binary.LittleEndian.PutUint32(h[4:], uint32(len(buf)-start-recordHeaderSize))
	h[8] = byte(typ)
	binary.LittleEndian.PutUint32(h[0:], crc32.Checksum(h[4:], crcTable))
	return buf
}

// decodeRecord decodes the record at the start of buf. maxPayload bounds the
// length field before anything is trusted. It returns the payload (aliasing
// buf) and the record's total size. It never panics on any input.
func decodeRecord(buf []byte, maxPayload int) (recordType, []byte, int, error) {
	if len(buf) < recordHeaderSize {
		return recInvalid, nil, 0, errRecTruncated
	}
	n := binary.LittleEndian.Uint32(buf[4:])
	if uint64(n) > uint64(max(maxPayload, 0)) {
		return recInvalid, nil, 0, fmt.Errorf("%w: length %d > %d", errRecTooLong, n, maxPayload)
	}
	end := recordHeaderSize + int(n)
	if end > len(buf) {
		return recInvalid, nil, 0, errRecTruncated
	}
	if err := checkRecord(buf[:recordHeaderSize], buf[recordHeaderSize:end]); err != nil {
		return recInvalid, nil, 0, err
	}
	return recordType(buf[8]), buf[recordHeaderSize:end], end, nil
}

// checkRecord verifies the CRC and the type of a record whose header and
// payload were read separately.
func checkRecord(hdr, payload []byte) error {
	want := binary.LittleEndian.Uint32(hdr[0:])
	crc := crc32.Update(crc32.Checksum(hdr[4:recordHeaderSize], crcTable), crcTable, payload)
	if crc != want {
		return fmt.Errorf("%w: stored %#08x, computed %#08x", errRecChecksum, want, crc)
	}
	if t := recordType(hdr[8]); t == recInvalid || t >= recTypeEnd {
		return fmt.Errorf("%w %d", errRecType, hdr[8])
	}
	return nil
}

// errPayload reports a record whose CRC is valid but whose payload does not
// decode: never a torn write, always damage or a bug.
func errPayload(t recordType, format string, args ...any) error {
	return fmt.Errorf("malformed %s payload: %s", t, fmt.Sprintf(format, args...))
}

// --- entry ---------------------------------------------------------------

func appendEntryRecord(buf []byte, e *core.Entry) []byte {
	buf, start := beginRecord(buf)
	buf = binary.LittleEndian.AppendUint64(buf, e.Index)
	buf = binary.LittleEndian.AppendUint64(buf, e.Term)
	buf = append(buf, byte(e.Type))
	buf = append(buf, e.Data...)
	return endRecord(buf, start, recEntry)
}

// entryRecordBytes is the framed size of e's record.
func entryRecordBytes(e *core.Entry) int {
	return recordHeaderSize + EntryOverheadBytes + len(e.Data)
}

// decodeEntry returns the entry in p; Data aliases p.
func decodeEntry(p []byte) (core.Entry, error) {
	if len(p) < EntryOverheadBytes {
		return core.Entry{}, errPayload(recEntry, "%d bytes, need at least %d", len(p), EntryOverheadBytes)
	}
	e := core.Entry{
		Index: binary.LittleEndian.Uint64(p[0:]),
		Term:  binary.LittleEndian.Uint64(p[8:]),
		Type:  core.EntryType(p[16]),
	}
	if len(p) > EntryOverheadBytes {
		e.Data = p[EntryOverheadBytes:]
	}
	return e, nil
}

// --- hard state ------------------------------------------------------------

func appendHardStateRecord(buf []byte, hs core.HardState) []byte {
	buf, start := beginRecord(buf)
	buf = appendHardState(buf, hs)
	return endRecord(buf, start, recHardState)
}

func appendHardState(buf []byte, hs core.HardState) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, hs.Term)
	buf = binary.LittleEndian.AppendUint64(buf, hs.Vote)
	return binary.LittleEndian.AppendUint64(buf, hs.Commit)
}

func decodeHardState(p []byte) (core.HardState, error) {
	if len(p) != hardStatePayloadSize {
		return core.HardState{}, errPayload(recHardState, "%d bytes, want %d", len(p), hardStatePayloadSize)
	}
	return core.HardState{
		Term:   binary.LittleEndian.Uint64(p[0:]),
		Vote:   binary.LittleEndian.Uint64(p[8:]),
		Commit: binary.LittleEndian.Uint64(p[16:]),
	}, nil
}

// --- batch header ------------------------------------------------------------

// batchHeader opens a group-commit batch: the body that follows is exactly
// bodyLen bytes holding count records. Seq increases by one per batch
// across the whole WAL. The other fields let recovery accept a header only
// where it continues the log, and tell a torn tail from damage (see
// recovery.go):
//
//   - salt is the random value of the segment (from its checkpoint): a
//     header copied into a client value, or left from another segment,
//     does not carry it;
//   - prev is the chain value before this batch: the CRC of the previous
//     batch's header record, or of the segment's checkpoint record for
//     the first batch, so a header is valid only right after the batch it
//     names;
//   - syncedEnd is how much of this segment file was known durable (by a
//     completed fdatasync) when the batch was written: a claim that is
//     true of every header that reached the disk.
type batchHeader struct {
	seq       uint64
	salt      uint64
	syncedEnd uint64
	bodyLen   uint32
	count     uint32
	prev      uint32
}

// putBatchRecord writes a complete batch record into dst (batchRecordBytes)
// and returns its CRC, the chain value after the batch.
func putBatchRecord(dst []byte, h batchHeader) uint32 {
	p := dst[recordHeaderSize:batchRecordBytes]
	binary.LittleEndian.PutUint64(p[0:], h.seq)
	binary.LittleEndian.PutUint64(p[8:], h.salt)
	binary.LittleEndian.PutUint64(p[16:], h.syncedEnd)
	binary.LittleEndian.PutUint32(p[24:], h.bodyLen)
	binary.LittleEndian.PutUint32(p[28:], h.count)
	binary.LittleEndian.PutUint32(p[32:], h.prev)
	binary.LittleEndian.PutUint32(dst[4:], batchPayloadSize)
	dst[8] = byte(recBatch)
	crc := crc32.Checksum(dst[4:batchRecordBytes], crcTable)
	binary.LittleEndian.PutUint32(dst[0:], crc)
	return crc
}

func decodeBatch(p []byte) (batchHeader, error) {
	if len(p) != batchPayloadSize {
		return batchHeader{}, errPayload(recBatch, "%d bytes, want %d", len(p), batchPayloadSize)
	}
	return batchHeader{
		seq:       binary.LittleEndian.Uint64(p[0:]),
		salt:      binary.LittleEndian.Uint64(p[8:]),
		syncedEnd: binary.LittleEndian.Uint64(p[16:]),
		bodyLen:   binary.LittleEndian.Uint32(p[24:]),
		count:     binary.LittleEndian.Uint32(p[28:]),
		prev:      binary.LittleEndian.Uint32(p[32:]),
	}, nil
}

// --- membership and snapshot metadata --------------------------------------

// Snapshot metadata has two encodings. The current one (WAL format 3,
// recSnapshotV3 markers, snapshot files version 2) stores the membership
// with the core's codec (core.Membership.Marshal), so names, addresses and
// HighestID survive a restart; the legacy one (WAL format 2, recSnapshot
// markers, snapshot files version 1) stored the three ID lists only. New
// data is always written in the current encoding; the legacy one is still
// read, so a data directory written before membership changes opens.
//
// Current: index u64, term u64, membership length u32, membership bytes.
// Legacy: index u64, term u64, then each ID list as count u32 and IDs u64.

// appendSnapshotMeta appends meta in the current encoding.
func appendSnapshotMeta(buf []byte, meta core.SnapshotMeta) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, meta.Index)
	buf = binary.LittleEndian.AppendUint64(buf, meta.Term)
	m := meta.Membership.Marshal()
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(m)))
	return append(buf, m...)
}

// snapshotMetaBytes is the size of meta in the current encoding.
func snapshotMetaBytes(meta core.SnapshotMeta) int { return 20 + len(meta.Membership.Marshal()) }

// checkSnapshotMeta refuses metadata whose membership would not decode
// again (core.UnmarshalMembership validates what it decodes), so a store
// never writes something its own recovery rejects as corrupt.
func checkSnapshotMeta(meta core.SnapshotMeta) error {
	if meta.Membership.IsEmpty() {
		if len(meta.Membership.Members) > 0 {
			return fmt.Errorf("membership has member infos but no members")
		}
		return nil
	}
	return meta.Membership.Validate()
}

// decodeSnapshotMeta decodes meta in the current encoding and returns the
// bytes after it. The membership's length is checked against the bytes
// present before it is trusted; the core codec bounds what it allocates.
func decodeSnapshotMeta(p []byte) (core.SnapshotMeta, []byte, error) {
	if len(p) < 20 {
		return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: %d bytes, need at least 20", len(p))
	}
	meta := core.SnapshotMeta{
		Index: binary.LittleEndian.Uint64(p[0:]),
		Term:  binary.LittleEndian.Uint64(p[8:]),
	}
	n := binary.LittleEndian.Uint32(p[16:])
	p = p[20:]
	if uint64(n) > uint64(len(p)) {
		return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: membership of %d bytes, %d left", n, len(p))
	}
	m, err := core.UnmarshalMembership(p[:n])
	if err != nil {
		return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	// Only the canonical encoding is accepted: what the core's codec
	// writes for m. Anything else was not written by a Store.
	if !bytes.Equal(m.Marshal(), p[:n]) {
		return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: membership is not in canonical encoding")
	}
	meta.Membership = m
	return meta, p[n:], nil
}

// writeLegacyForTest, set only by tests, makes new segments, snapshot
// markers and snapshot files use the legacy formats, to produce the data
// directory of an older build and check that it still opens.
var writeLegacyForTest atomic.Bool

// appendLegacySnapshotMeta appends meta in the legacy encoding (ID lists
// only). Only tests write it (writeLegacyForTest), to check that old data
// still reads.
func appendLegacySnapshotMeta(buf []byte, meta core.SnapshotMeta) []byte {
	buf = binary.LittleEndian.AppendUint64(buf, meta.Index)
	buf = binary.LittleEndian.AppendUint64(buf, meta.Term)
	for _, ids := range [][]uint64{meta.Membership.Voters, meta.Membership.OutgoingVoters, meta.Membership.Learners} {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(ids)))
		for _, id := range ids {
			buf = binary.LittleEndian.AppendUint64(buf, id)
		}
	}
	return buf
}

// decodeLegacySnapshotMeta decodes what appendLegacySnapshotMeta wrote and
// returns the rest. Counts are checked against the bytes present before
// any allocation.
func decodeLegacySnapshotMeta(p []byte) (core.SnapshotMeta, []byte, error) {
	if len(p) < 16 {
		return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: %d bytes, need at least 16", len(p))
	}
	meta := core.SnapshotMeta{
		Index: binary.LittleEndian.Uint64(p[0:]),
		Term:  binary.LittleEndian.Uint64(p[8:]),
	}
	p = p[16:]
	var lists [3][]uint64
	for k := range lists {
		if len(p) < 4 {
			return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: membership list %d: truncated count", k)
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)/8) {
			return core.SnapshotMeta{}, nil, fmt.Errorf("snapshot metadata: membership list %d: count %d exceeds the %d bytes left", k, n, len(p))
		}
		if n > 0 {
			ids := make([]uint64, n)
			for i := range ids {
				ids[i] = binary.LittleEndian.Uint64(p[8*i:])
			}
			lists[k] = ids
		}
		p = p[8*int(n):]
	}
	meta.Membership = core.Membership{Voters: lists[0], OutgoingVoters: lists[1], Learners: lists[2]}
	return meta, p, nil
}

// --- snapshot marker ---------------------------------------------------------

// snapshotMarker records InstallSnapshot. Keep says whether the entries after
// Meta.Index survived (the log held Meta.Index with Meta.Term, Raft §7) or
// the whole log was discarded; storing the decision keeps replay exact even
// when the entry it was based on is no longer on disk. Legacy marks a
// marker read from a recSnapshot record (legacy metadata encoding); new
// markers are recSnapshotV3 records.
type snapshotMarker struct {
	meta   core.SnapshotMeta
	keep   bool
	legacy bool
}

func snapshotRecordBytes(meta core.SnapshotMeta) int {
	return recordHeaderSize + 1 + snapshotMetaBytes(meta)
}

func appendSnapshotRecord(buf []byte, mk snapshotMarker) []byte {
	buf, start := beginRecord(buf)
	keep := byte(0)
	if mk.keep {
		keep = 1
	}
	buf = append(buf, keep)
	if mk.legacy {
		buf = appendLegacySnapshotMeta(buf, mk.meta)
		return endRecord(buf, start, recSnapshot)
	}
	buf = appendSnapshotMeta(buf, mk.meta)
	return endRecord(buf, start, recSnapshotV3)
}

// decodeSnapshotMarker decodes the payload of a recSnapshot or
// recSnapshotV3 record (t says which).
func decodeSnapshotMarker(t recordType, p []byte) (snapshotMarker, error) {
	if len(p) < 1 || p[0] > 1 {
		return snapshotMarker{}, errPayload(t, "bad keep flag")
	}
	decode := decodeSnapshotMeta
	if t == recSnapshot {
		decode = decodeLegacySnapshotMeta
	}
	meta, rest, err := decode(p[1:])
	if err != nil {
		return snapshotMarker{}, errPayload(t, "%v", err)
	}
	if len(rest) != 0 {
		return snapshotMarker{}, errPayload(t, "%d trailing bytes", len(rest))
	}
	return snapshotMarker{meta: meta, keep: p[0] == 1, legacy: t == recSnapshot}, nil
}

// --- segment checkpoint ------------------------------------------------------

// checkpoint is the first record of every segment: the durable state after
// every record of the earlier segments. It makes a segment self-describing,
// so Compact can delete older segments without losing the hard state or the
// snapshot marker they held. It also fixes where the previous segment's
// log ends (prevEnd) and the chain value there (prevChain): a sealed
// segment must hold exactly that many bytes of valid, chained batches, and
// whatever its file holds after them (preallocated zeros, or a torn tail
// cut by recovery) is not part of the log.
type checkpoint struct {
	segSeq       uint64 // sequence number of the segment it opens
	salt         uint64 // random, repeated in every batch header of the segment
	nextBatchSeq uint64 // seq of the first batch in this segment
	last         uint64 // last log index when the segment was created
	hs           core.HardState
	prevEnd      uint64 // end of the log in segment segSeq-1 (0 for segment 1)
	prevChain    uint32 // chain value at prevEnd
	snap         core.SnapshotMeta
	// version is the WAL format of the segment: checkpointVersion, or
	// checkpointVersionLegacy for a segment written before issue 14.
	// Zero (a checkpoint built to be written) means checkpointVersion.
	version uint32
}

// legacy reports whether cp is of a version-2 segment.
func (cp *checkpoint) legacy() bool { return cp.version == checkpointVersionLegacy }

// checkpointFixedBytes: version u32, segSeq, salt, nextBatchSeq, last u64,
// hard state, prevEnd u64, prevChain u32.
const checkpointFixedBytes = 4 + 32 + hardStatePayloadSize + 12

func checkpointRecordBytes(cp *checkpoint) int {
	if cp.legacy() {
		return len(appendLegacySnapshotMeta(make([]byte, 0, 64), cp.snap)) + recordHeaderSize + checkpointFixedBytes
	}
	return recordHeaderSize + checkpointFixedBytes + snapshotMetaBytes(cp.snap)
}

// appendCheckpointRecord appends cp's record to buf and returns the buffer
// and the record's CRC, the chain value before the segment's first batch.
func appendCheckpointRecord(buf []byte, cp *checkpoint) ([]byte, uint32) {
	buf, start := beginRecord(buf)
	version := uint32(checkpointVersion)
	if cp.legacy() {
		version = checkpointVersionLegacy
	}
	buf = binary.LittleEndian.AppendUint32(buf, version)
	buf = binary.LittleEndian.AppendUint64(buf, cp.segSeq)
	buf = binary.LittleEndian.AppendUint64(buf, cp.salt)
	buf = binary.LittleEndian.AppendUint64(buf, cp.nextBatchSeq)
	buf = binary.LittleEndian.AppendUint64(buf, cp.last)
	buf = appendHardState(buf, cp.hs)
	buf = binary.LittleEndian.AppendUint64(buf, cp.prevEnd)
	buf = binary.LittleEndian.AppendUint32(buf, cp.prevChain)
	if cp.legacy() {
		buf = appendLegacySnapshotMeta(buf, cp.snap)
	} else {
		buf = appendSnapshotMeta(buf, cp.snap)
	}
	buf = endRecord(buf, start, recCheckpoint)
	return buf, binary.LittleEndian.Uint32(buf[start:])
}

// errFormatVersion: a checkpoint of another WAL format version.
var errFormatVersion = errors.New("WAL format version")

func decodeCheckpoint(p []byte) (checkpoint, error) {
	version := uint32(checkpointVersion)
	if len(p) >= 4 {
		version = binary.LittleEndian.Uint32(p)
		if version != checkpointVersion && version != checkpointVersionLegacy {
			return checkpoint{}, fmt.Errorf("%w %d, this build reads versions %d and %d only", errFormatVersion, version, checkpointVersionLegacy, checkpointVersion)
		}
	}
	if len(p) < checkpointFixedBytes {
		return checkpoint{}, errPayload(recCheckpoint, "%d bytes, need at least %d", len(p), checkpointFixedBytes)
	}
	cp := checkpoint{
		version:      version,
		segSeq:       binary.LittleEndian.Uint64(p[4:]),
		salt:         binary.LittleEndian.Uint64(p[12:]),
		nextBatchSeq: binary.LittleEndian.Uint64(p[20:]),
		last:         binary.LittleEndian.Uint64(p[28:]),
	}
	cp.hs, _ = decodeHardState(p[36 : 36+hardStatePayloadSize])
	q := p[36+hardStatePayloadSize:]
	cp.prevEnd = binary.LittleEndian.Uint64(q)
	cp.prevChain = binary.LittleEndian.Uint32(q[8:])
	decode := decodeSnapshotMeta
	if cp.legacy() {
		decode = decodeLegacySnapshotMeta
	}
	meta, rest, err := decode(p[checkpointFixedBytes:])
	if err != nil {
		return checkpoint{}, errPayload(recCheckpoint, "%v", err)
	}
	if len(rest) != 0 {
		return checkpoint{}, errPayload(recCheckpoint, "%d trailing bytes", len(rest))
	}
	cp.snap = meta
	return cp, nil
}
