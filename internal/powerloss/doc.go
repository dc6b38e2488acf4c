// Package powerloss simulates power cuts under real files, for the chaos
// suite (kvnode's chaos build puts it under the WAL, the snapshot store
// and Pebble). kill -9 keeps the kernel's page cache, so a test that only
// kills processes never loses a byte that was written but not synced;
// this package makes those bytes losable.
//
// # The crash model
//
// What a power cut may leave, per the design contract (§3, rule 5): of the
// data written to a file since its last completed sync (Sync, SyncData,
// or a SyncTo that reports a full sync), any subset of the 4 KiB pages
// may have reached the disk, in any order, and a page may be torn into
// its 512-byte sectors; each page or sector then holds what it held at
// some instant since the sync (the version written back). Directory
// entries (creates, removes, renames, links, mkdirs) are durable only
// once their directory is synced; unsynced ones survive as a prefix of
// their order (journaling file systems commit metadata in order). A
// file's size is at least its size at the last sync and extends to the
// last byte kept; unkept bytes below that read as zeros (holes) or as
// what they held before.
//
// # How
//
// FS wraps a vfs.FS. Before each mutation it appends to an undo journal —
// a plain file outside the data directories — how to undo it: a write's
// offset, length, the file's size and the bytes it overwrites; a
// truncation's cut-off bytes; a create, remove or rename of a regular file
// keeps the replaced or removed file as a hard link (a "grave") beside the
// journal. A sync drops the records it made durable: those journaled
// before the sync started, of the synced file (by device and inode, which
// survive renames and restarts) or, for a directory sync, of entries in
// that directory (a rename waits for both of its directories).
//
// Why this is sound: the record is written before its mutation, both
// with plain writes, so after kill -9 (page cache kept) the journal lists
// every mutation that happened — a record cut short by the kill is at the
// tail, and its mutation never started (records are applied tolerantly:
// one whose mutation did not happen changes nothing). A record is dropped
// only after a sync that began after its mutation completed (FS holds
// one lock across a record and its mutation, and reads the sequence
// number under it before syncing), so everything dropped is durable by
// the model. Cut then undoes records newest first: each finds its file as
// it was just after its mutation (except for granules a later write
// reached the disk with, which stay frozen), so every page or sector ends
// up holding one of the versions it had since the last sync. A kept
// truncation freezes the granule its new end falls in and cuts off what
// older writes left beyond it.
//
// Bounds: the journal's live records (old bytes of unsynced overwrites,
// ~100 bytes per mutation) are limited by Options.MaxUndoBytes (default
// 256 MiB; over it a mutation fails with ErrUndoLimit), and a sync
// rewrites the journal once it exceeds twice its live records plus 4 MiB.
//
// File descriptors are hidden (Fd returns vfs.InvalidFd) so no caller can
// sync around the journal. A process started again on a journal (after a
// kill -9 without a cut) takes its records over: what they list is still
// unsynced.
package powerloss
