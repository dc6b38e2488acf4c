package driver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"reflect"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// backupMembership is a joint configuration with names, addresses and a
// HighestID above its members: every field a backup header must keep.
func backupMembership() core.Membership {
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

// readBackup reads a whole backup stream: its metadata and data.
func readBackup(b []byte) (core.SnapshotMeta, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(b))
	meta, err := readBackupHeader(br)
	if err != nil {
		return core.SnapshotMeta{}, nil, err
	}
	var data bytes.Buffer
	if err := copyBackupData(&data, br); err != nil {
		return core.SnapshotMeta{}, nil, err
	}
	return meta, data.Bytes(), nil
}

func writeTestBackup(t testing.TB, meta core.SnapshotMeta, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteBackup(context.Background(), &buf, meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// legacyBackup is a version-1 backup ("RFTYBAK1", ID lists only), as a
// build before membership changes wrote it.
func legacyBackup(t testing.TB, meta core.SnapshotMeta, data []byte) []byte {
	t.Helper()
	b := writeTestBackup(t, core.SnapshotMeta{Index: meta.Index, Term: meta.Term, Membership: core.Membership{Voters: []uint64{1}}}, data)
	h := binary.LittleEndian.Uint32(b[8:])
	hdr := appendLegacyBackupMeta(nil, meta)
	var out []byte
	out = append(out, backupMagicLegacy...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(hdr)))
	out = append(out, hdr...)
	out = binary.LittleEndian.AppendUint32(out, crc32.Checksum(hdr, castagnoli))
	return append(out, b[12+h+4:]...) // the same frames and trailer
}

// TestBackupKeepsMembership: a backup's header round-trips the whole
// membership, names and addresses included.
func TestBackupKeepsMembership(t *testing.T) {
	meta := core.SnapshotMeta{Index: 42, Term: 7, Membership: backupMembership()}
	data := bytes.Repeat([]byte("state "), 50000)
	got, gotData, err := readBackup(writeTestBackup(t, meta, data))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, meta) || !bytes.Equal(gotData, data) {
		t.Fatalf("round trip: %+v (%d bytes), want %+v (%d bytes)", got, len(gotData), meta, len(data))
	}
}

// TestBackupVersion1StillRestores: a backup written before membership
// changes (ID lists only) still reads.
func TestBackupVersion1StillRestores(t *testing.T) {
	meta := core.SnapshotMeta{Index: 9, Term: 2, Membership: core.Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}
	got, data, err := readBackup(legacyBackup(t, meta, []byte("old state")))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, meta) || string(data) != "old state" {
		t.Fatalf("version 1: %+v %q, want %+v", got, data, meta)
	}
}

// TestBackupBadMembership: damaged membership bytes under a valid header
// CRC are ErrBadBackup, never a panic; an invalid membership is refused
// when writing.
func TestBackupBadMembership(t *testing.T) {
	b := writeTestBackup(t, core.SnapshotMeta{Index: 3, Term: 1, Membership: backupMembership()}, []byte("x"))
	h := binary.LittleEndian.Uint32(b[8:])
	for name, mut := range map[string]func(hdr []byte){
		"version":   func(hdr []byte) { hdr[16] = 9 },
		"count":     func(hdr []byte) { hdr[17] = 0x7f },
		"last byte": func(hdr []byte) { hdr[len(hdr)-1] = 0xff },
	} {
		bad := bytes.Clone(b)
		hdr := bad[12 : 12+h]
		mut(hdr)
		binary.LittleEndian.PutUint32(bad[12+h:], crc32.Checksum(hdr, castagnoli))
		if _, _, err := readBackup(bad); !errors.Is(err, ErrBadBackup) {
			t.Errorf("%s: %v, want ErrBadBackup", name, err)
		}
	}
	invalid := core.SnapshotMeta{Index: 3, Term: 1, Membership: core.Membership{Learners: []uint64{2}}}
	if err := WriteBackup(context.Background(), io.Discard, invalid, bytes.NewReader(nil)); err == nil {
		t.Fatal("WriteBackup took a membership without voters")
	}
}

// FuzzReadBackup: reading any stream never panics, and what reads
// re-encodes to a stream that reads the same.
func FuzzReadBackup(f *testing.F) {
	meta := core.SnapshotMeta{Index: 42, Term: 7, Membership: backupMembership()}
	f.Add(writeTestBackup(f, meta, []byte("some state")))
	f.Add(legacyBackup(f, core.SnapshotMeta{Index: 2, Term: 1, Membership: core.Membership{Voters: []uint64{1, 2}}}, []byte("old")))
	f.Add(writeTestBackup(f, core.SnapshotMeta{Index: 1, Term: 1}, nil))
	f.Add([]byte("RFTYBAK2\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		meta, data, err := readBackup(b)
		if err != nil {
			if !errors.Is(err, ErrBadBackup) {
				t.Fatalf("error %v does not wrap ErrBadBackup", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := WriteBackup(context.Background(), &buf, meta, bytes.NewReader(data)); err != nil {
			if meta.Membership.Validate() == nil {
				t.Fatalf("re-encoding a valid backup: %v", err)
			}
			return // a version-1 header with an unusable membership
		}
		again, data2, err := readBackup(buf.Bytes())
		if err != nil || !reflect.DeepEqual(again, meta) || !bytes.Equal(data, data2) {
			t.Fatalf("re-encoded backup reads %+v, %v; want %+v", again, err, meta)
		}
	})
}
