package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rafty-db/rafty/core"
)

const fuzzMaxPayload = 4096

// FuzzDecodeRecord: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range sampleRecords() {
		f.Add(rec)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, p, n, err := decodeRecord(data, fuzzMaxPayload)
		if err != nil {
			if !isDecodeErr(err) {
				t.Fatalf("decode error %v is not a framing error", err)
			}
			return
		}
		if n > len(data) || n != recordHeaderSize+len(p) {
			t.Fatalf("decoded size %d of %d bytes", n, len(data))
		}
		buf, start := beginRecord(nil)
		buf = append(buf, p...)
		if buf = endRecord(buf, start, typ); !bytes.Equal(buf, data[:n]) {
			t.Fatalf("re-encoding differs")
		}
		// Payload decoders must reject, not panic.
		switch typ {
		case recEntry:
			decodeEntry(p)
		case recHardState:
			decodeHardState(p)
		case recBatch:
			decodeBatch(p)
		case recSnapshot, recSnapshotV3:
			if mk, err := decodeSnapshotMarker(typ, p); err == nil {
				if got := appendSnapshotRecord(nil, mk); !bytes.Equal(got, data[:n]) {
					t.Fatalf("snapshot marker re-encodes differently")
				}
			}
		case recCheckpoint:
			if cp, err := decodeCheckpoint(p); err == nil {
				if got, _ := appendCheckpointRecord(nil, &cp); !bytes.Equal(got, data[:n]) {
					t.Fatalf("checkpoint re-encodes differently")
				}
			}
		}
	})
}

// FuzzOpenSegment: a data directory whose only segment holds arbitrary
// bytes either opens into a consistent, usable Store or fails with a
// *CorruptionError; it never panics and never allocates past the limits.
func FuzzOpenSegment(f *testing.F) {
	for _, seg := range sampleSegments(f) {
		f.Add(seg)
	}
	noSyncForFuzzing.Store(true)
	defer noSyncForFuzzing.Store(false)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, walDirName), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(segPath(dir, 1), data, 0o644); err != nil {
			t.Fatal(err)
		}
		opts := testOptions()
		opts.MaxRecordBytes = fuzzMaxPayload
		s, err := Open(dir, opts)
		if err != nil {
			var ce *CorruptionError
			if !errors.As(err, &ce) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrFormatVersion) {
				t.Fatalf("Open failed with a non-corruption error: %v", err)
			}
			return
		}
		defer s.Close()
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if last+1 < first {
			t.Fatalf("range [%d, %d]", first, last)
		}
		if _, err := s.Term(first - 1); err != nil {
			t.Fatalf("Term(first-1): %v", err)
		}
		// Read everything back (bounded: the segment is small).
		if last >= first {
			ents, err := s.Entries(first, last+1, 1<<40)
			if err != nil {
				t.Fatalf("Entries: %v", err)
			}
			for k := range ents {
				tm, err := s.Term(ents[k].Index)
				if ents[k].Index != first+uint64(k) || err != nil || tm != ents[k].Term {
					t.Fatalf("entry %d: index %d term %d vs Term %d, %v", k, ents[k].Index, ents[k].Term, tm, err)
				}
			}
		}
		// The Store still works and what it writes survives a reopen.
		hs, _, _ := s.InitialState()
		hs.Term++
		if err := s.Save(hs, []core.Entry{{Index: last + 1, Term: hs.Term, Data: []byte("x")}}); err != nil {
			t.Fatalf("Save after recovery: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("reopen after Save: %v", err)
		}
		defer s2.Close()
		if l, _ := s2.LastIndex(); l != last+1 {
			t.Fatalf("after reopen last index %d, want %d", l, last+1)
		}
	})
}

// sampleRecords returns one record of each type plus damaged ones.
func sampleRecords() [][]byte {
	cp := checkpoint{segSeq: 1, salt: 0x5a17, nextBatchSeq: 1, last: 7, prevEnd: 99, prevChain: 0xc0ffee, hs: core.HardState{Term: 2, Vote: 1, Commit: 5},
		snap: core.SnapshotMeta{Index: 3, Term: 1, Membership: sampleMembership()}}
	batchRec := make([]byte, batchRecordBytes)
	putBatchRecord(batchRec, batchHeader{seq: 9, salt: 0x5a17, syncedEnd: 40, bodyLen: 100, count: 3, prev: 7})
	cpRec, _ := appendCheckpointRecord(nil, &cp)
	legacyCP := cp
	legacyCP.version = checkpointVersionLegacy
	legacyCPRec, _ := appendCheckpointRecord(nil, &legacyCP)
	recs := [][]byte{
		cpRec,
		legacyCPRec,
		appendSnapshotRecord(nil, snapshotMarker{meta: cp.snap, legacy: true}),
		batchRec,
		appendEntryRecord(nil, &core.Entry{Index: 8, Term: 2, Data: []byte("hello")}),
		appendEntryRecord(nil, &core.Entry{Index: 9, Term: 2, Type: core.EntryConfChange}),
		appendHardStateRecord(nil, core.HardState{Term: 3, Vote: 2, Commit: 8}),
		appendSnapshotRecord(nil, snapshotMarker{meta: cp.snap, keep: true}),
	}
	ent := appendEntryRecord(nil, &core.Entry{Index: 1, Term: 1, Data: []byte("abc")})
	flipped := bytes.Clone(ent)
	flipped[recordHeaderSize+3] ^= 1
	huge := bytes.Clone(ent)
	huge[7] = 0xff
	return append(recs, ent[:5], ent[:len(ent)-1], flipped, huge, make([]byte, 16), nil)
}

// sampleMembership is a joint configuration with names, addresses and a
// HighestID above its members, so every field of the codec is exercised.
func sampleMembership() core.Membership {
	return core.Membership{
		Voters: []uint64{1, 2, 5}, OutgoingVoters: []uint64{1, 2, 3}, Learners: []uint64{6},
		Members: []core.MemberInfo{
			{ID: 1, Name: "rafty-0", PeerAddr: "rafty-0.rafty:7000", ClientAddr: "rafty-0.rafty:8000"},
			{ID: 3, Name: "rafty-2", PeerAddr: "10.0.0.3:7000"},
			{ID: 5, Name: "rafty-2", PeerAddr: "10.0.0.9:7000", Replaces: 3, Incarnation: 0xfeed},
			{ID: 6, Name: "rafty-3", PeerAddr: "[::1]:7000", AutoPromote: true, Incarnation: 42},
		},
		HighestID: 9,
	}
}

// sampleSegments builds real segments (entries, hard states, overwrites,
// snapshot markers) and damaged variants of them.
func sampleSegments(tb testing.TB) [][]byte {
	dir, err := os.MkdirTemp("", "disk-fuzz-seed-")
	if err != nil {
		tb.Fatal(err)
	}
	defer os.RemoveAll(dir)
	opts := testOptions()
	opts.MaxRecordBytes = fuzzMaxPayload
	s := mustOpen(tb, dir, opts)
	mustSave(tb, s, core.HardState{Term: 1, Vote: 1}, mkEnts(1, 4, 1, 5))
	mustSave(tb, s, core.HardState{Term: 2, Commit: 2}, mkEnts(3, 6, 2, 0))
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: 2, Term: 1, Membership: core.Membership{Voters: []uint64{1}}}); err != nil {
		tb.Fatal(err)
	}
	mustSave(tb, s, core.HardState{}, mkEnts(6, 8, 2, 20))
	if err := s.InstallSnapshot(core.SnapshotMeta{Index: 4, Term: 2, Membership: sampleMembership()}); err != nil {
		tb.Fatal(err)
	}
	mustClose(tb, s)
	full, err := os.ReadFile(segPath(dir, 1))
	if err != nil {
		tb.Fatal(err)
	}
	flip := func(off int) []byte { b := bytes.Clone(full); b[off] ^= 0x20; return b }
	return [][]byte{
		full,
		full[:len(full)-7],
		append(bytes.Clone(full), make([]byte, 100)...),
		flip(len(full) / 2),
		flip(len(full) - 3),
		flip(5),
		nil,
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/<FuzzName>/ when run with
// -disk.update-corpus; plain `go test` runs the committed files as seeds.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*flagUpdateCorpus {
		t.Skip("regenerates the committed corpus; run with -disk.update-corpus")
	}
	write := func(name string, inputs [][]byte) {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for k, in := range inputs {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", in)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", k)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("FuzzDecodeRecord", sampleRecords())
	write("FuzzOpenSegment", sampleSegments(t))
}
