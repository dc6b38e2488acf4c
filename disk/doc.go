// Package disk is Rafty's durable storage: an append-only, segmented
// write-ahead log holding the Raft log entries, the hard state and snapshot
// markers, plus a store of snapshot files. Store implements core.LogReader
// and driver.Storage; SnapshotStore keeps state-machine snapshots.
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
//     one fdatasync of the segment being sealed when it had a zero tail.
//   - Preallocation. The active segment file is extended with zeros ahead
//     of the log, a chunk (Options.PreallocateBytes) at a time, by an extra
//     pwrite covered by the same fdatasync as the batch that needed it. Most
//     Saves therefore overwrite allocated space without changing the file
//     size, and their fdatasync flushes data only, with no file-system
//     journal commit.
//   - Crash atomicity. After kill -9 or power loss every Save that returned
//     is recovered in full, and a Save that had not returned is recovered
//     entirely or not at all (its batch is the unit of truncation).
//   - Supersession. Writing entry i replaces every stored entry >= i; reads
//     never return a superseded entry.
//   - No silent loss. Recovery cuts only the torn final write of the last
//     segment and logs what it cut (Options.Logger). Any other bad CRC, bad
//     length or inconsistency fails Open with a *CorruptionError naming the
//     file and byte offset. Reads verify the CRC of every record they load.
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
// # Assumptions
//
//   - The file system honours fdatasync/fsync (no lying write cache), and a
//     torn write damages only the bytes of the write in flight; previously
//     synced bytes are not changed by a later crash.
//   - Damage to synced data (bit rot, a bad sector) is detected, not
//     repaired: the operator restores the node from its peers.
//   - Only this package writes the data directory. Linux is the target;
//     elsewhere fdatasync falls back to fsync.
//   - A failed write or sync makes the Store refuse further writes
//     (ErrFailed): after a failed fsync the page cache may no longer hold
//     the data, so the only honest recovery is to reopen and replay.
//
// # Directory layout
//
//	<dir>/LOCK                          flock'ed by the open Store
//	<dir>/wal/<seq:016x>.wal            WAL segments, seq = 1, 2, 3, ... (no gaps)
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
//	1 checkpoint  version u32, segment seq u64, next batch seq u64,
//	              last index u64, hard state (term, vote, commit u64),
//	              snapshot meta (see below)
//	2 batch       batch seq u64, body length u32, record count u32
//	3 entry       index u64, term u64, entry type u8, data
//	4 hard state  term u64, vote u64, commit u64
//	5 snapshot    keep u8 (1: the entries after the snapshot index were
//	              kept), snapshot meta
//
//	snapshot meta: index u64, term u64, then voters, outgoing voters and
//	learners, each a count u32 followed by that many u64 node IDs.
//
// # Segment structure
//
// A segment starts with a checkpoint record: the state (hard state,
// snapshot, last index, next batch sequence number) after every record of
// the earlier segments. That makes any suffix of segments self-describing,
// so Compact can delete old segments. After the checkpoint come batches: a
// batch record followed by exactly count records in body-length bytes,
// hard state first, then entries, or a lone snapshot marker. Batch
// sequence numbers increase by one across the whole WAL. Each batch is
// written with one pwrite and synced before the next is written; a batch is
// never split across segments, so a segment exceeds Options.SegmentBytes
// only when it holds a single batch larger than that.
//
// The last (active) segment's file may continue past its last batch with
// zero bytes, up to a multiple of Options.PreallocateBytes (at most
// SegmentBytes): space preallocated for the next batches. A zero-filled
// record header never decodes (type 0 is invalid, and the CRC does not
// match), so replay stops where the zeros start. Before a new segment
// is created, the previous one is truncated to its last batch and synced,
// so every other segment ends exactly at its last batch.
//
// Recovery treats damage (bad CRC, length or type) as a torn tail only in
// the last segment and only when it lies in the final batch: no valid batch
// header with a later sequence number exists anywhere after the damaged
// batch's start (every byte offset is tried), or the batch's valid header
// declares a body running past the end of the file. Since each batch is
// synced before the next is written, such a batch was never reported
// durable. The torn batch is cut whole (the file is truncated at its start
// and synced) and the cut is logged. A last segment whose checkpoint is
// torn is removed: its creation never completed. When everything from a
// batch boundary of the last segment to its end is zero, that is
// preallocated space (or an unsynced batch none of whose bytes arrived):
// it is cut the same way but logged only at Debug level. Zeros after a
// batch with any nonzero byte do not hide it: that batch is torn as above.
// In any other segment a zero tail is corruption.
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
