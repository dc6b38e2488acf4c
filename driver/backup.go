package driver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/rafty-db/rafty/core"
)

// Backups: a consistent copy of a live node's state, taken without
// stopping writes, and the offline restore that seeds a new node from it.
//
// Format (integers little endian), a stream written and read once:
//
//	"RFTYBAK2"                       magic (the digit is the version)
//	uint32 h                         header length
//	header                           index u64, term u64, then the
//	                                 membership as core.Membership.Marshal
//	                                 encodes it (IDs, HighestID, names,
//	                                 addresses) to the end of the header
//	uint32 CRC-32C of the header
//	frames                           uint32 n (1..1 MiB), n data bytes; ...
//	uint32 0                         end of data
//	uint64 data length, uint32 CRC-32C of the data
//
// The data is the state machine's snapshot stream (SnapshotSource), the
// same bytes a snapshot file holds.
//
// Version 1 ("RFTYBAK1", before membership changes) is still restored:
// its header holds, after index and term, the voters, outgoing voters and
// learners, each a count u32 and that many u64 node IDs; no names or
// addresses.

var (
	backupMagic       = []byte("RFTYBAK2")
	backupMagicLegacy = []byte("RFTYBAK1")
)

const (
	backupFrameBytes = 1 << 20
	// maxBackupHeaderBytes bounds the header (about 130,000 node IDs), so a
	// corrupt length cannot cause a huge allocation.
	maxBackupHeaderBytes = 1 << 20
)

// ErrBadBackup is wrapped by RestoreBackup's errors about the stream
// itself: not a backup, truncated, or damaged.
var ErrBadBackup = errors.New("driver: bad backup stream")

// Backup writes a consistent backup of this node's state to w and returns
// its metadata. The state is captured at the node's applied index on the
// loop, through withStateMachine (StateMachine.Snapshot: a point-in-time
// view, never taken concurrently with Apply), and streamed from the
// calling goroutine, so writes continue meanwhile. Restore it with
// RestoreBackup. Errors: ErrStopped, ctx's error, the state machine's or
// w's error.
func (n *Node) Backup(ctx context.Context, w io.Writer) (core.SnapshotMeta, error) {
	var (
		mu        sync.Mutex
		abandoned bool
		meta      core.SnapshotMeta
		src       SnapshotSource
	)
	err := n.control(ctx, ctrlRequest{reply: make(chan error, 1), lfn: func(l *loop) error {
		m, s, err := l.capture()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			_ = s.Close()
			return ctx.Err()
		}
		meta, src = m, s
		return nil
	}})
	mu.Lock()
	abandoned = true
	s := src
	mu.Unlock()
	if err != nil {
		if s != nil {
			_ = s.Close()
		}
		return core.SnapshotMeta{}, err
	}
	defer s.Close()
	if err := WriteBackup(ctx, w, meta, s); err != nil {
		return core.SnapshotMeta{}, err
	}
	n.log.Info("backup written", "index", meta.Index, "term", meta.Term)
	return meta, nil
}

// WriteBackup writes a backup of the snapshot meta, whose data src
// streams, to w, in the format above. It does not close src. Node.Backup
// uses it; it is exported for tools that hold a snapshot file (a
// SnapshotStore's OpenLatest data can be wrapped in a source).
func WriteBackup(ctx context.Context, w io.Writer, meta core.SnapshotMeta, src io.WriterTo) error {
	if !meta.Membership.IsEmpty() {
		// A membership the decoder would refuse makes a backup that
		// never restores: refuse it now.
		if err := meta.Membership.Validate(); err != nil {
			return fmt.Errorf("driver: backup of snapshot %d/%d: %w", meta.Term, meta.Index, err)
		}
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	hdr := appendBackupMeta(nil, meta)
	if len(hdr) > maxBackupHeaderBytes {
		return fmt.Errorf("driver: backup header of %d bytes exceeds %d", len(hdr), maxBackupHeaderBytes)
	}
	var b []byte
	b = append(b, backupMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hdr)))
	b = append(b, hdr...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(hdr, castagnoli))
	if _, err := bw.Write(b); err != nil {
		return fmt.Errorf("driver: writing backup: %w", err)
	}
	fw := &frameWriter{w: bw, buf: make([]byte, 0, backupFrameBytes)}
	if _, err := src.WriteTo(&ctxWriter{ctx: ctx, w: fw}); err != nil {
		return fmt.Errorf("driver: writing backup data: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fw.flush(); err != nil {
		return fmt.Errorf("driver: writing backup: %w", err)
	}
	var tail []byte
	tail = binary.LittleEndian.AppendUint32(tail, 0)
	tail = binary.LittleEndian.AppendUint64(tail, fw.total)
	tail = binary.LittleEndian.AppendUint32(tail, fw.crc)
	if _, err := bw.Write(tail); err != nil {
		return fmt.Errorf("driver: writing backup: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("driver: writing backup: %w", err)
	}
	return nil
}

// frameWriter cuts the data into frames of at most backupFrameBytes.
type frameWriter struct {
	w     io.Writer
	buf   []byte
	total uint64
	crc   uint32
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(f.buf)-len(f.buf))
		f.buf = append(f.buf, p[:k]...)
		p = p[k:]
		if len(f.buf) == cap(f.buf) {
			if err := f.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

func (f *frameWriter) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	var hdr [4]byte
	binary.LittleEndian.PutUint32(hdr[:], uint32(len(f.buf)))
	if _, err := f.w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := f.w.Write(f.buf); err != nil {
		return err
	}
	f.total += uint64(len(f.buf))
	f.crc = crc32.Update(f.crc, castagnoli, f.buf)
	f.buf = f.buf[:0]
	return nil
}

func appendBackupMeta(b []byte, meta core.SnapshotMeta) []byte {
	b = binary.LittleEndian.AppendUint64(b, meta.Index)
	b = binary.LittleEndian.AppendUint64(b, meta.Term)
	return append(b, meta.Membership.Marshal()...)
}

// decodeBackupMeta decodes a version-2 header; the core's decoder bounds
// what it allocates and validates the membership.
func decodeBackupMeta(b []byte) (core.SnapshotMeta, error) {
	if len(b) < 16 {
		return core.SnapshotMeta{}, errors.New("header too short")
	}
	meta := core.SnapshotMeta{Index: binary.LittleEndian.Uint64(b), Term: binary.LittleEndian.Uint64(b[8:])}
	m, err := core.UnmarshalMembership(b[16:])
	if err != nil {
		return core.SnapshotMeta{}, err
	}
	meta.Membership = m
	return meta, nil
}

// appendLegacyBackupMeta writes a version-1 header; only tests use it, to
// check that old backups still restore.
func appendLegacyBackupMeta(b []byte, meta core.SnapshotMeta) []byte {
	b = binary.LittleEndian.AppendUint64(b, meta.Index)
	b = binary.LittleEndian.AppendUint64(b, meta.Term)
	for _, ids := range [][]uint64{meta.Membership.Voters, meta.Membership.OutgoingVoters, meta.Membership.Learners} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = binary.LittleEndian.AppendUint64(b, id)
		}
	}
	return b
}

// decodeLegacyBackupMeta decodes a version-1 header (ID lists only).
func decodeLegacyBackupMeta(b []byte) (core.SnapshotMeta, error) {
	if len(b) < 16 {
		return core.SnapshotMeta{}, errors.New("header too short")
	}
	meta := core.SnapshotMeta{Index: binary.LittleEndian.Uint64(b), Term: binary.LittleEndian.Uint64(b[8:])}
	b = b[16:]
	for _, dst := range []*[]uint64{&meta.Membership.Voters, &meta.Membership.OutgoingVoters, &meta.Membership.Learners} {
		if len(b) < 4 {
			return core.SnapshotMeta{}, errors.New("header truncated")
		}
		k := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(len(b)) < uint64(k)*8 {
			return core.SnapshotMeta{}, errors.New("header truncated")
		}
		for i := range k {
			*dst = append(*dst, binary.LittleEndian.Uint64(b[8*i:]))
		}
		b = b[8*k:]
	}
	if len(b) != 0 {
		return core.SnapshotMeta{}, fmt.Errorf("%d trailing header bytes", len(b))
	}
	return meta, nil
}

// RestoreTarget is what RestoreBackup seeds: a new node's storage, snapshot
// store and state machine, opened on its empty data directory.
type RestoreTarget struct {
	Storage      Storage
	Snapshots    SnapshotStore
	StateMachine StateMachine
	// Membership, if not empty, replaces the backup's: to restore into a
	// cluster whose node IDs differ from the one backed up.
	Membership core.Membership
}

// RestoreBackup seeds a node that never ran from a backup written by
// Node.Backup (an offline restore): it verifies the stream while copying
// it into t.Snapshots as a snapshot, restores t.StateMachine from that,
// and records the snapshot in t.Storage (InstallSnapshot, and a hard state
// with the snapshot's term and index as commit). Every member of the new
// cluster is seeded from the same backup; started with Config.Snapshots
// set, the nodes then begin at the backup's index with its membership
// (Config.Peers is ignored once a snapshot names the members).
//
// It refuses a Storage that already holds state. Errors about the stream
// wrap ErrBadBackup. If it fails after the snapshot was stored, starting
// the node with Config.Snapshots completes the restore, since the
// snapshot file is then ahead of the empty log (see snapshot.go).
func RestoreBackup(r io.Reader, t RestoreTarget) (core.SnapshotMeta, error) {
	if t.Storage == nil || t.Snapshots == nil || t.StateMachine == nil {
		return core.SnapshotMeta{}, errors.New("driver: RestoreBackup needs Storage, Snapshots and StateMachine")
	}
	hs, marker, err := t.Storage.InitialState()
	if err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("driver: reading storage: %w", err)
	}
	last, err := t.Storage.LastIndex()
	if err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("driver: reading storage: %w", err)
	}
	if !hs.IsZero() || !marker.IsEmpty() || last != 0 {
		return core.SnapshotMeta{}, fmt.Errorf("driver: RestoreBackup: the storage already holds state (term %d, last index %d, snapshot %d): restore into an empty data directory",
			hs.Term, last, marker.Index)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	meta, err := readBackupHeader(br)
	if err != nil {
		return core.SnapshotMeta{}, err
	}
	if !t.Membership.IsEmpty() {
		meta.Membership = t.Membership.Clone()
	}
	if len(meta.Membership.Voters) == 0 || meta.Index == 0 {
		return core.SnapshotMeta{}, fmt.Errorf("%w: snapshot %d/%d with no voters", ErrBadBackup, meta.Term, meta.Index)
	}
	w, err := t.Snapshots.CreateSnapshot(meta)
	if err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("driver: creating snapshot: %w", err)
	}
	if err := copyBackupData(w, br); err != nil {
		_ = w.Abort()
		return core.SnapshotMeta{}, err
	}
	if err := w.Commit(); err != nil {
		_ = w.Abort()
		return core.SnapshotMeta{}, fmt.Errorf("driver: committing snapshot: %w", err)
	}
	if err := restoreFrom(t.Snapshots, t.StateMachine, meta); err != nil {
		return core.SnapshotMeta{}, err
	}
	if err := t.Storage.InstallSnapshot(meta); err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("driver: recording the snapshot in the log: %w", err)
	}
	if err := t.Storage.Save(core.HardState{Term: meta.Term, Commit: meta.Index}, nil); err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("driver: saving the hard state: %w", err)
	}
	return meta, nil
}

func readBackupHeader(br *bufio.Reader) (core.SnapshotMeta, error) {
	var pre [12]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("%w: reading the header: %w", ErrBadBackup, err)
	}
	decode := decodeBackupMeta
	switch {
	case bytes.Equal(pre[:8], backupMagic):
	case bytes.Equal(pre[:8], backupMagicLegacy):
		decode = decodeLegacyBackupMeta
	default:
		return core.SnapshotMeta{}, fmt.Errorf("%w: not a Rafty backup (magic %q)", ErrBadBackup, pre[:8])
	}
	h := binary.LittleEndian.Uint32(pre[8:])
	if h > maxBackupHeaderBytes {
		return core.SnapshotMeta{}, fmt.Errorf("%w: header length %d exceeds %d", ErrBadBackup, h, maxBackupHeaderBytes)
	}
	hdr := make([]byte, h+4)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("%w: reading the header: %w", ErrBadBackup, err)
	}
	if crc32.Checksum(hdr[:h], castagnoli) != binary.LittleEndian.Uint32(hdr[h:]) {
		return core.SnapshotMeta{}, fmt.Errorf("%w: header checksum mismatch", ErrBadBackup)
	}
	meta, err := decode(hdr[:h])
	if err != nil {
		return core.SnapshotMeta{}, fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	return meta, nil
}

// copyBackupData copies the frames to w, verifying length and checksum,
// and checks that nothing follows.
func copyBackupData(w io.Writer, br *bufio.Reader) error {
	var (
		lenBuf [4]byte
		total  uint64
		crc    uint32
		buf    = make([]byte, 256<<10)
	)
	for {
		if _, err := io.ReadFull(br, lenBuf[:]); err != nil {
			return fmt.Errorf("%w: data truncated after %d bytes: %w", ErrBadBackup, total, err)
		}
		k := binary.LittleEndian.Uint32(lenBuf[:])
		if k == 0 {
			break
		}
		if k > backupFrameBytes {
			return fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrBadBackup, k, backupFrameBytes)
		}
		for left := int(k); left > 0; {
			c := min(left, len(buf))
			if _, err := io.ReadFull(br, buf[:c]); err != nil {
				return fmt.Errorf("%w: data truncated after %d bytes: %w", ErrBadBackup, total, err)
			}
			crc = crc32.Update(crc, castagnoli, buf[:c])
			total += uint64(c)
			if _, err := w.Write(buf[:c]); err != nil {
				return fmt.Errorf("driver: writing snapshot: %w", err)
			}
			left -= c
		}
	}
	var tail [12]byte
	if _, err := io.ReadFull(br, tail[:]); err != nil {
		return fmt.Errorf("%w: trailer truncated: %w", ErrBadBackup, err)
	}
	if n := binary.LittleEndian.Uint64(tail[:]); n != total {
		return fmt.Errorf("%w: trailer says %d data bytes, the stream held %d", ErrBadBackup, n, total)
	}
	if c := binary.LittleEndian.Uint32(tail[8:]); c != crc {
		return fmt.Errorf("%w: data checksum mismatch (trailer %08x, data %08x)", ErrBadBackup, c, crc)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("%w: trailing bytes after the backup", ErrBadBackup)
		}
		return fmt.Errorf("%w: %w", ErrBadBackup, err)
	}
	return nil
}
