package disk

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestMembershipSurvivesRestart: the membership installed with a snapshot,
// names, addresses and HighestID included, is what InitialState reports
// after a reopen, also once the snapshot is only in later segments'
// checkpoints (the segments holding the marker compacted away).
func TestMembershipSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: 10}, mkEnts(1, 11, 2, 10))
	meta := core.SnapshotMeta{Index: 8, Term: 2, Membership: sampleMembership()}
	if err := s.InstallSnapshot(meta); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, when string) {
		t.Helper()
		_, got, err := s.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, meta) {
			t.Fatalf("%s: snapshot meta %+v, want %+v", when, got, meta)
		}
	}
	check(s, "before restart")
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	check(s, "after restart")
	// Fill segments so that the marker's segment is compacted away and
	// only checkpoints carry the membership.
	for i := uint64(11); i < 200; i += 10 {
		mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: i}, mkEnts(i, i+10, 2, 1000))
	}
	if err := s.Compact(8); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Segments < 2 {
		t.Fatalf("want several segments, have %d", st.Segments)
	}
	mustClose(t, s)
	s = mustOpen(t, dir, opts)
	check(s, "after compaction and restart")
	mustClose(t, s)
}

// TestMembershipInvalidRefused: a membership the codec would not decode
// again is refused at write time, never written to be found corrupt later.
func TestMembershipInvalidRefused(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions())
	defer mustClose(t, s)
	mustSave(t, s, core.HardState{Term: 1}, mkEnts(1, 3, 1, 5))
	bad := core.SnapshotMeta{Index: 2, Term: 1, Membership: core.Membership{Learners: []uint64{4}}}
	if err := s.InstallSnapshot(bad); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("InstallSnapshot of a membership without voters: %v, want ErrInvalidArgument", err)
	}
	if _, err := s.Snapshots().Create(bad); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Create of a membership without voters: %v, want ErrInvalidArgument", err)
	}
}

// TestLegacyWALStillReads: a data directory written in WAL format 2 (ID
// lists only) opens, reports its snapshot membership, and new writes go to
// a new format-3 segment; a second reopen reads both formats.
func TestLegacyWALStillReads(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions()
	legacyMeta := core.SnapshotMeta{Index: 3, Term: 1, Membership: core.Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}
	writeLegacyForTest.Store(true)
	s := mustOpen(t, dir, opts)
	mustSave(t, s, core.HardState{Term: 1, Vote: 1, Commit: 5}, mkEnts(1, 6, 1, 10))
	err := s.InstallSnapshot(legacyMeta)
	writeLegacyForTest.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)
	if v := segmentVersion(t, segPath(dir, 1)); v != checkpointVersionLegacy {
		t.Fatalf("the legacy segment has version %d", v)
	}

	s = mustOpen(t, dir, opts)
	_, got, err := s.InitialState()
	if err != nil || !reflect.DeepEqual(got, legacyMeta) {
		t.Fatalf("legacy snapshot meta %+v (%v), want %+v", got, err, legacyMeta)
	}
	if st := s.Stats(); st.Segments != 2 {
		t.Fatalf("after opening a legacy WAL: %d segments, want 2 (the old one sealed)", st.Segments)
	}
	if v := segmentVersion(t, segPath(dir, 2)); v != checkpointVersion {
		t.Fatalf("the new segment has version %d", v)
	}
	mustSave(t, s, core.HardState{Term: 2, Vote: 1, Commit: 6}, mkEnts(6, 8, 2, 10))
	newMeta := core.SnapshotMeta{Index: 6, Term: 2, Membership: sampleMembership()}
	if err := s.InstallSnapshot(newMeta); err != nil {
		t.Fatal(err)
	}
	mustClose(t, s)

	s = mustOpen(t, dir, opts)
	defer mustClose(t, s)
	_, got, err = s.InitialState()
	if err != nil || !reflect.DeepEqual(got, newMeta) {
		t.Fatalf("snapshot meta %+v (%v), want %+v", got, err, newMeta)
	}
	ents, err := s.Entries(7, 8, 1<<20)
	if err != nil || len(ents) != 1 || ents[0].Term != 2 {
		t.Fatalf("entry 7 after the upgrade: %v %v", ents, err)
	}
}

// segmentVersion reads the WAL format version of a segment's checkpoint.
func segmentVersion(t *testing.T, path string) uint32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	typ, p, _, err := decodeRecord(b, 1<<20)
	if err != nil || typ != recCheckpoint {
		t.Fatalf("%s: first record %v %v", path, typ, err)
	}
	return binary.LittleEndian.Uint32(p)
}

// TestCorruptMembershipNamesFileAndOffset: a snapshot marker whose CRC is
// valid but whose membership bytes do not decode fails Open with a
// CorruptionError naming the segment and the marker's offset, and no
// panic.
func TestCorruptMembershipNamesFileAndOffset(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(m []byte) // m: the encoded membership inside the marker
	}{
		{"unknown version", func(m []byte) { m[0] = 9 }},
		{"count past the end", func(m []byte) { m[1] = 0x7f }},
		{"bad flags", func(m []byte) { m[len(m)-3] = 0x7e }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, testOptions())
			mustSave(t, s, core.HardState{Term: 1, Commit: 3}, mkEnts(1, 4, 1, 10))
			if err := s.InstallSnapshot(core.SnapshotMeta{Index: 3, Term: 1, Membership: sampleMembership()}); err != nil {
				t.Fatal(err)
			}
			mustClose(t, s)
			path := segPath(dir, 1)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			off := -1
			for o := 0; o < len(b); {
				typ, p, n, err := decodeRecord(b[o:], 1<<20)
				if err != nil {
					break
				}
				if typ == recSnapshotV3 {
					off = o
					tc.mut(p[21:]) // keep, index, term, length
					binary.LittleEndian.PutUint32(b[o:], crc32.Checksum(b[o+4:o+n], crcTable))
					break
				}
				o += n
			}
			if off < 0 {
				t.Fatal("no snapshot marker found")
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(dir, testOptions())
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.File != path || ce.Offset != int64(off) {
				t.Fatalf("Open: %v; want a CorruptionError at %s offset %d", err, path, off)
			}
		})
	}
}

// TestSnapshotFileMembership: snapshot files keep the whole membership;
// version-1 files (ID lists only) still open; a damaged membership in a
// header whose CRC matches is reported as corruption.
func TestSnapshotFileMembership(t *testing.T) {
	ss, err := OpenSnapshotStore(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	legacy := snapMeta(5, 1)
	writeLegacyForTest.Store(true)
	writeSnapshot(t, ss, legacy, []byte("old"))
	writeLegacyForTest.Store(false)
	got, rc, err := ss.OpenLatest()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(data) != "old" || !reflect.DeepEqual(got, legacy) {
		t.Fatalf("version-1 file: %+v %q %v; want %+v", got, data, err, legacy)
	}

	meta := core.SnapshotMeta{Index: 9, Term: 2, Membership: sampleMembership()}
	writeSnapshot(t, ss, meta, []byte("new"))
	got, rc, err = ss.OpenLatest()
	if err != nil {
		t.Fatal(err)
	}
	data, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || string(data) != "new" || !reflect.DeepEqual(got, meta) {
		t.Fatalf("version-2 file: %+v %q %v; want %+v", got, data, err, meta)
	}

	// Damage the membership's version byte and fix the header CRC.
	files, err := ss.list()
	if err != nil || len(files) == 0 {
		t.Fatal(files, err)
	}
	path := ss.Dir() + "/" + files[0].name
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hend := snapPrefixBytes + int(binary.LittleEndian.Uint32(b[12:]))
	b[snapPrefixBytes+20] = 9
	binary.LittleEndian.PutUint32(b[hend:], crc32.Checksum(b[8:hend], crcTable))
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ss.OpenSnapshot(9, 2); err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
		t.Fatalf("damaged membership: %v, want corruption naming %s", err, path)
	}
}
