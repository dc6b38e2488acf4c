package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
)

// A backup streamed over the Backup RPC from a follower is the driver's
// backup format: it restores into a new member's storage with the same
// data, and its final message describes it.
func TestBackupRPC(t *testing.T) {
	c := newTestCluster(t, 3, Limits{})
	lead := c.leader()
	cl := c.members[lead].client
	// 2 KiB values: the backup spans several messages.
	value := strings.Repeat("v", 2<<10)
	// The test clock runs on wall time: on a loaded machine a member can
	// miss heartbeats and call an election, and a put then fails with
	// Unavailable (not applied, safe to retry), which retry repeats.
	var last uint64 // the index of the last acknowledged put
	for i := range 300 {
		put := retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return cl.Put(ctx, &kvpb.PutRequest{Key: fmt.Appendf(nil, "k%03d", i), Value: []byte(value)})
		})
		last = put.Index
	}
	f := c.followers(lead)[0]
	// The read barrier can meet a leader change too (Unavailable before
	// any data): take the whole backup again then.
	type backup struct {
		data  bytes.Buffer
		msgs  int
		final *kvpb.BackupResponse
	}
	b := retry(t, "backup", func(ctx context.Context) (*backup, error) {
		stream, err := c.members[f].client.Backup(ctx, &kvpb.BackupRequest{})
		if err != nil {
			return nil, err
		}
		b := &backup{}
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				return b, nil
			}
			if err != nil {
				return nil, err
			}
			if b.final != nil {
				t.Fatal("a message after the one carrying the metadata")
			}
			if msg.GetMeta() != nil {
				b.final = msg
				continue
			}
			b.msgs++
			b.data.Write(msg.GetData())
		}
	})
	data, msgs, final := &b.data, b.msgs, b.final
	if final == nil || len(final.GetData()) != 0 {
		t.Fatalf("final message %v: want metadata and no data", final)
	}
	meta := final.GetMeta()
	if msgs < 2 || meta.GetSizeBytes() != uint64(data.Len()) || final.GetHeader().GetMemberId() != f {
		t.Fatalf("%d data messages, %d bytes, meta %v, header %v", msgs, data.Len(), meta, final.GetHeader())
	}
	// The read barrier: every acknowledged put is in the backup. (Not
	// compared with the leader's applied index read now: a leader change
	// after the backup appends an empty entry the backup need not hold.)
	if meta.GetIndex() < last || !slices.Equal(meta.GetVoters(), []uint64{1, 2, 3}) {
		t.Fatalf("backup at %d with voters %v; the last put was acknowledged at %d", meta.GetIndex(), meta.GetVoters(), last)
	}

	wal, err := disk.Open(t.TempDir(), disk.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer wal.Close()
	st := openStore(t, Options{})
	got, err := driver.RestoreBackup(data, driver.RestoreTarget{Storage: wal, Snapshots: wal.Snapshots(), StateMachine: st})
	if err != nil {
		t.Fatal(err)
	}
	if got.Index != meta.GetIndex() || got.Term != meta.GetTerm() {
		t.Fatalf("restored %d/%d, the RPC said %d/%d", got.Term, got.Index, meta.GetTerm(), meta.GetIndex())
	}
	want, have := mustHash(t, c.members[f].store), mustHash(t, st)
	if want.Hash != have.Hash || have.Keys != 300 || have.Index != meta.GetIndex() {
		t.Fatalf("restored %+v, the member holds %+v", have, want)
	}
}

// backupFake is a node whose Backup fails or writes given bytes.
type backupFake struct {
	fakeNode
	data       []byte
	err        error
	membership *core.Membership // nil: voter 7 alone
}

func (b *backupFake) Backup(_ context.Context, w io.Writer) (core.SnapshotMeta, error) {
	if b.err != nil {
		return core.SnapshotMeta{}, b.err
	}
	if _, err := w.Write(b.data); err != nil {
		return core.SnapshotMeta{}, err
	}
	m := core.Membership{Voters: []uint64{7}}
	if b.membership != nil {
		m = *b.membership
	}
	return core.SnapshotMeta{Index: 9, Term: 2, Membership: m}, nil
}

// TestBackupRPCMembership: the backup's metadata carries the whole
// membership, names and addresses included, besides the ID lists.
func TestBackupRPCMembership(t *testing.T) {
	m := core.Membership{
		Voters: []uint64{7, 8}, Learners: []uint64{9},
		Members: []core.MemberInfo{
			{ID: 7, Name: "rafty-0", PeerAddr: "rafty-0.rafty:7000", ClientAddr: "rafty-0.rafty:8000"},
			{ID: 9, Name: "rafty-2", PeerAddr: "10.0.0.9:7000", AutoPromote: true, Incarnation: 5},
		},
		HighestID: 11,
	}
	svc, err := newService(openStore(t, Options{}), &backupFake{data: []byte("x"), membership: &m}, 1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeBackupStream{}
	if err := svc.Backup(&kvpb.BackupRequest{}, st); err != nil {
		t.Fatal(err)
	}
	meta := st.sent[len(st.sent)-1].GetMeta()
	got, err := core.UnmarshalMembership(meta.GetMembership())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) || !slices.Equal(meta.GetVoters(), m.Voters) || !slices.Equal(meta.GetLearners(), m.Learners) {
		t.Fatalf("backup meta %v decodes to %+v, want %+v", meta, got, m)
	}
}

// fakeBackupStream collects what the service sends, failing Send with
// sendErr.
type fakeBackupStream struct {
	grpc.ServerStream
	sent    []*kvpb.BackupResponse
	sendErr error
}

func (s *fakeBackupStream) Context() context.Context { return context.Background() }
func (s *fakeBackupStream) Send(m *kvpb.BackupResponse) error {
	if s.sendErr != nil {
		return s.sendErr
	}
	s.sent = append(s.sent, m)
	return nil
}

func TestBackupRPCErrors(t *testing.T) {
	s := openStore(t, Options{})
	gone := status.Error(codes.Canceled, "context canceled")
	for _, tc := range []struct {
		name    string
		node    raftNode
		sendErr error
		code    codes.Code
	}{
		{"node without backups", &fakeNode{}, nil, codes.Unimplemented},
		{"no leader for the barrier", &backupFake{fakeNode: fakeNode{readErr: core.ErrNoLeader}}, nil, codes.Unavailable},
		{"node stopping", &backupFake{err: fmt.Errorf("driver: %w", driver.ErrStopped)}, nil, codes.Unavailable},
		{"store failure", &backupFake{err: errors.New("disk on fire")}, nil, codes.Internal},
		{"client gone", &backupFake{data: []byte("x")}, gone, codes.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := newService(s, tc.node, 1, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			err = svc.Backup(&kvpb.BackupRequest{}, &fakeBackupStream{sendErr: tc.sendErr})
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want code %v", err, tc.code)
			}
		})
	}

	// Chunking: exactly backupChunkBytes per message, the rest in one
	// more, then the metadata alone.
	data := bytes.Repeat([]byte{1}, 2*backupChunkBytes+5)
	svc, err := newService(s, &backupFake{data: data}, 1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeBackupStream{}
	if err := svc.Backup(&kvpb.BackupRequest{}, st); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, m := range st.sent {
		sizes = append(sizes, len(m.GetData()))
	}
	last := st.sent[len(st.sent)-1]
	if !slices.Equal(sizes, []int{backupChunkBytes, backupChunkBytes, 5, 0}) || last.GetMeta().GetSizeBytes() != uint64(len(data)) ||
		last.GetMeta().GetIndex() != 9 || last.GetHeader().GetMemberId() != 7 {
		t.Fatalf("message sizes %v, last %v", sizes, last)
	}
}
