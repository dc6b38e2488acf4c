// Package disk is Rafty's durable storage: an append-only, segmented
// write-ahead log holding the Raft log entries, the hard state and snapshot
// markers, a commit marker file, plus a store of snapshot files. Store
// implements core.LogReader, driver.Storage and driver.CommitWriter;
// SnapshotStore keeps state-machine snapshots.
//
// # Guarantees
//
//   - Durable on return. Save, InstallSnapshot and Compact return only after
//     what they wrote is on stable storage (fdatasync of the segment, and an
//     fsync of the directory after creating, renaming or removing a file).
//     The LogReader methods reflect only durable state: once Save returns,
//     LastIndex covers its entries; nothing is visible earlier.
//   - Group commit. Everything Saved while the previous write was syncing is
//     written with one pwrite and one fdatasync. A single caller gets
//     exactly one fdatasync per Save; concurrent callers share them (see
//     group_commit.go; Stats counts them). Rotating to a new segment adds
//     one fdatasync of the new segment's checkpoint.
//   - Preallocation. The active segment file is extended with zeros ahead
//     of the log, a chunk (Options.PreallocateBytes) at a time, by an extra
//     pwrite covered by the same fdatasync as the batch that needed it. Most
//     Saves therefore overwrite allocated space without changing the file
//     size, and their fdatasync flushes data only, with no file-system
//     journal commit.
//   - Crash atomicity. After kill -9 or a power loss (the crash model
//     below) every Save, InstallSnapshot and Compact that returned is
//     recovered in full, and recovery returns the state after some prefix
//     of the writes: a write that had not returned is recovered entirely
//     or not at all (its batch is the unit of cutting).
//   - Commit index without waiting. WriteCommit (driver.CommitWriter)
//     records a commit index with one pwrite of a slot of <dir>/wal/commit,
//     under its own lock, never waiting for a Save, InstallSnapshot or
//     Compact in flight, and never synced (after creation): it survives
//     kill -9, not necessarily a power loss. Indexes only go up; one past
//     LastIndex is refused. InitialState reports as the commit index the
//     larger of the last Saved one and the marker, capped at LastIndex
//     and at least the snapshot index: never an entry the log does not
//     hold, never less than a Save that returned recorded (Raft never
//     truncates committed entries). See commit_marker.go.
//   - Supersession. Writing entry i replaces every stored entry >= i; reads
//     never return a superseded entry.
//   - No silent loss. Recovery cuts only what follows the last batch of
//     the last segment that nothing proves synced, and logs what it cut
//     (Options.Logger). A damaged commit marker slot is ignored, and a
//     marker past the last durable entry clamped, each with a warning
//     naming the file (and the slot's offset), and the corrected marker
//     rewritten durably: the marker is a hint for restart, never data, so
//     its damage never stops the node (a slot of a newer format version
//     does: ErrFormatVersion). Damage to data a later batch header proves synced,
//     and any other bad CRC, bad length or inconsistency, fails Open with
//     a *CorruptionError naming the file and byte offset. Recovery never
//     accepts a header found by scanning data bytes (a client value may
//     hold one). Reads verify the CRC of every record they load.
//     Decoding never panics and never allocates more than the configured
//     limits (Options.MaxRecordBytes, bounded again by the bytes actually
//     left in the file).
//   - Bounded memory. Payloads are never kept in memory except in the entry
//     cache (Options.CacheBytes). The index keeps 4 bytes per live entry
//     (its record offset) plus one run per change of term. Recovery streams
//     each segment through a fixed buffer and stages at most one batch
//     (Options.MaxBatchBytes).
//   - Exclusive. A lock on <dir>/LOCK (vfs.FS.Lock: an fcntl write lock
//     on the operating system's file system, plus a table of the locks
//     held in this process) keeps a second Store, in this or another
//     process, from opening the directory; Open fails with ErrLocked
//     naming the directory.
//   - Private. Files are created with mode 0600 and directories with
//     0700: the log holds every client value.
//   - One file layer. Every file operation goes through Options.FS, a
//     Pebble vfs.FS (the operating system's by default), so that tests
//     and the chaos suite can put a simulated power loss under the WAL,
//     the snapshots and the state machine alike.
//
// # Crash model
//
// After a power loss, for each file, any subset of the 512-byte sectors
// written since the last completed fdatasync (or fsync) of that file may
// have reached the disk, in any order; the others keep their previous
// contents (zeros, for space never written), and the file's size may or
// may not include space written past its synced size. Bytes covered by a
// completed fdatasync never change. A directory entry created, removed or
// renamed survives only once the directory has been fsynced. kill -9 is
// the easy case of this: the page cache keeps every write.
//
// # Assumptions
//
//   - The file system honours fdatasync/fsync (no lying write cache) and
//     the crash model above.
//   - Damage to synced data (bit rot, a bad sector) is detected, not
//     repaired: the operator restores the node from its peers. One case
//     cannot be detected: damage to the final batch of the log, which no
//     later header proves synced, looks like a torn write and is cut.
//   - Only this package writes the data directory. Linux is the target;
//     elsewhere fdatasync falls back to fsync.
//   - A failed write or sync makes the Store refuse further writes
//     (ErrFailed): after a failed fsync the page cache may no longer hold
//     the data, so the only honest recovery is to reopen and replay.
//
// # Directory layout
//
//	<dir>/LOCK                          locked by the open Store
//	<dir>/wal/<seq:016x>.wal            WAL segments, seq = 1, 2, 3, ... (no gaps once open)
//	<dir>/wal/commit                    commit marker (WriteCommit), 1 KiB
//	<dir>/snap/<index:016x>-<term:016x>.snap   snapshot files
//	<dir>/snap/tmp-*                    snapshot being written (removed on open)
//
// # Record framing
//
// Every WAL record is
//
//	uint32  CRC-32C (Castagnoli) of the next 5 bytes and the payload
//	uint32  payload length (<= Options.MaxRecordBytes)
//	uint8   type
//	[]byte  payload
//
// with integers little endian. Types and payloads:
//
//	1 checkpoint  version u32 (3; 2 is still read), segment seq u64, salt u64,
//	              next batch seq u64, last index u64,
//	              hard state (term, vote, commit u64),
//	              previous segment's log end u64 and chain value u32,
//	              snapshot meta (see below)
//	2 batch       batch seq u64, salt u64, synced end u64,
//	              body length u32, record count u32, previous chain u32
//	3 entry       index u64, term u64, entry type u8, data
//	4 hard state  term u64, vote u64, commit u64
//	5 snapshot    keep u8 (1: the entries after the snapshot index were
//	              kept), legacy snapshot meta (written by format 2 only)
//	6 snapshot-v3 keep u8, snapshot meta
//
//	snapshot meta: index u64, term u64, membership length u32, then the
//	membership as core.Membership.Marshal encodes it (voters, outgoing
//	voters, learners, HighestID and every member's name, addresses and
//	flags), in canonical form only.
//	legacy snapshot meta (format 2, snapshot files version 1): index u64,
//	term u64, then voters, outgoing voters and learners, each a count u32
//	followed by that many u64 node IDs.
//
// A Store that opens a WAL whose last segment is of format 2 seals that
// segment and writes on in a new format-3 segment, so no segment mixes
// the two; the old segments are read as they are until Compact removes
// them.
//
// # Segment structure
//
// A segment starts with a checkpoint record: the state (hard state,
// snapshot, last index, next batch sequence number) after every record of
// the earlier segments. That makes any suffix of segments self-describing,
// so Compact can delete old segments. It also holds a random salt, chosen
// when the segment is created and never shown to clients, and the end and
// final chain value of the previous segment's log. After the checkpoint
// come batches: a batch record followed by exactly count records in
// body-length bytes, hard state first, then entries, or a lone snapshot
// marker. Batch sequence numbers increase by one across the whole WAL.
// Each batch header repeats the segment's salt, holds the chain value
// before it (the CRC of the previous batch header record, or of the
// checkpoint record for the first batch) and its synced end: how far the
// file was known fdatasynced when the batch was written. Each batch is
// written with one pwrite, into space that holds zeros, and fdatasynced
// before the next one is written. (A WAL written before issue 15 may also
// hold commit-only batches that SaveCommitUnsynced wrote without a sync,
// covered by the next batch's; they are ordinary batches and recovery
// reads them like any other.) A batch is never split across segments, so a segment exceeds Options.SegmentBytes only when it holds a
// single batch larger than that.
//
// A segment's checkpoint is fdatasynced, and the directory too, before any
// batch is written to it; the segment before it is synced up to its log
// end first. A segment's file may continue past its log with zero bytes,
// up to a multiple of Options.PreallocateBytes (at most SegmentBytes):
// space preallocated for the next batches, kept when the segment is
// sealed. A sealed segment's log ends exactly where the next checkpoint
// says; whatever its file holds after that is never read.
//
// Recovery (recovery.go has the argument in full) walks each segment's
// batches from its checkpoint, accepting a batch only where it continues
// the chain with the segment's salt and the next sequence number, and
// every record of its body is intact. A sealed segment must be whole up to
// its recorded end: anything else is a *CorruptionError. In the last
// segment the walk stops at the first batch that is not whole. If only
// zeros follow, writing continues there. Otherwise, if a batch header
// further on with the segment's salt records a synced end past the stop,
// the stopped batch had been synced and Open fails with a
// *CorruptionError naming its file and offset; if none does, the rest is a
// torn tail: it is logged, the segment is synced and sealed at its last
// valid batch, and a new segment continues the log. Nothing is truncated
// or overwritten. A last segment whose checkpoint is damaged and that
// holds no valid batch header is a creation that never completed and is
// removed. A hole in the segment numbering is what a Compact interrupted
// before its directory fsync can leave (its removals survive in any
// subset): recovery replays the segments after the last hole, fails if a
// live entry was in a missing one, and otherwise removes those before it.
//
// # Commit marker file
//
// <dir>/wal/commit holds two slots of 32 bytes, at offsets 0 and 512
// (one sector each), the rest zeros:
//
//	magic "RFTYCMIT" | version u32 (1) | zero u32 | commit index u64 |
//	CRC-32C u32 of the 24 bytes before | zero u32
//
// WriteCommit overwrites the older slot in place and never syncs; the
// value is the larger index of the valid slots. Two slots so that a write
// torn inside its sector (on a device without atomic sector writes) costs
// only that write, not the marker. The file and its directory entry are
// synced once, when Open creates it; Close syncs it if written.
//
// # Snapshot files
//
// Snapshot data is streamed, never held in memory:
//
//	"RFTYSNAP" | version u32 | header length u32 | snapshot meta |
//	CRC-32C u32 of version..meta | data | data length u64 | CRC-32C u32 of data
//
// A snapshot is written to snap/tmp-*, synced, renamed to its final name and
// the directory synced. The newest snapshot and one older are kept.
// OpenLatest verifies the whole file before returning it and falls back to
// the older one, with an error in the log, if the newest is damaged.
package disk
