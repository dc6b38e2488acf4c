package main

import (
	"errors"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
)

func openTestWAL(t *testing.T, dir string) *disk.Store {
	t.Helper()
	opts := disk.DefaultOptions()
	opts.Logger = slog.New(slog.DiscardHandler)
	w, err := disk.Open(filepath.Join(dir, "raft"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestForceNewCluster: the committed log is kept, the uncommitted tail
// superseded, and one Replace entry makes the member the only voter with
// its info and the cluster's HighestID kept.
func TestForceNewCluster(t *testing.T) {
	dir := t.TempDir()
	boot := core.Membership{Voters: []uint64{1, 2, 3}, HighestID: 3, Members: []core.MemberInfo{
		{ID: 1, Name: "a", PeerAddr: "a:1"}, {ID: 2, Name: "b", PeerAddr: "b:1", ClientAddr: "b:2"}, {ID: 3, Name: "c", PeerAddr: "c:1"},
	}}
	add := core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: core.MemberInfo{ID: 5, Name: "e", PeerAddr: "e:1"}}}}
	w := openTestWAL(t, dir)
	ents := []core.Entry{
		{Index: 1, Term: 1, Type: core.EntryConfChange, Data: core.ConfChange{Replace: &boot}.Marshal()},
		{Index: 2, Term: 2, Type: core.EntryNormal, Data: []byte("x")},
		{Index: 3, Term: 2, Type: core.EntryConfChange, Data: add.Marshal()},
		{Index: 4, Term: 3, Type: core.EntryNormal, Data: []byte("uncommitted")},
	}
	if err := w.Save(core.HardState{Term: 3, Vote: 1, Commit: 3}, ents); err != nil {
		t.Fatal(err)
	}
	// Running (the WAL locked): refused.
	if _, err := forceNewCluster(dir, 2); err == nil || !strings.Contains(err.Error(), "stop its kvnode first") {
		t.Fatalf("while running: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := forceNewCluster(dir, 0); err == nil || !strings.Contains(err.Error(), "no identity file") {
		t.Fatalf("no id: %v", err)
	}
	if err := writeIdentity(dir, identity{ClusterName: "x", ClusterID: 7, NodeID: 2, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	r, err := forceNewCluster(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.id != 2 || r.commit != 3 || r.index != 4 || r.term != 4 || r.dropped != 1 {
		t.Fatalf("recovered %+v", r)
	}

	w = openTestWAL(t, dir)
	defer w.Close()
	hs, _, err := w.InitialState()
	if err != nil {
		t.Fatal(err)
	}
	if hs != (core.HardState{Term: 4, Vote: 2, Commit: 4}) {
		t.Fatalf("hard state %+v", hs)
	}
	got, err := w.Entries(1, 5, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || string(got[1].Data) != "x" || got[3].Type != core.EntryConfChange || got[3].Term != 4 {
		t.Fatalf("log %v", got)
	}
	cc, err := core.UnmarshalConfChange(got[3].Data)
	if err != nil || cc.Replace == nil {
		t.Fatalf("entry 4: %v %v", cc, err)
	}
	m := *cc.Replace
	if len(m.Voters) != 1 || m.Voters[0] != 2 || m.HighestID != 5 || len(m.Members) != 1 || m.Members[0].ClientAddr != "b:2" {
		t.Fatalf("new configuration %+v", m)
	}

	// A member not in the configuration is refused.
	if err := writeIdentity(dir, identity{ClusterName: "x", ClusterID: 7, NodeID: 9}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := forceNewCluster(dir, 0); err == nil || !strings.Contains(err.Error(), "member 9 is not in the configuration") {
		t.Fatalf("not a member: %v", err)
	}
	if _, err := forceNewCluster(t.TempDir(), 1); err == nil || errors.Is(err, disk.ErrLocked) || !strings.Contains(err.Error(), "no Raft state") {
		t.Fatalf("empty: %v", err)
	}
}
