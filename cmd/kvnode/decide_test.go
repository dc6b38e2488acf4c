package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// fakeDialer answers Probe and Join from tables; a missing address is
// unreachable.
type fakeDialer struct {
	mu     sync.Mutex
	probes map[string]probeInfo
	joins  map[string]func(joinRequest) (joinResponse, error)
	calls  []string
}

func (f *fakeDialer) Probe(_ context.Context, addr string) (probeInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "probe "+addr)
	p, ok := f.probes[addr]
	if !ok {
		return probeInfo{}, errors.New("connection refused")
	}
	return p, nil
}

func (f *fakeDialer) Join(_ context.Context, addr string, req joinRequest) (joinResponse, error) {
	f.mu.Lock()
	fn, ok := f.joins[addr]
	f.calls = append(f.calls, "join "+addr)
	f.mu.Unlock()
	if !ok {
		return joinResponse{}, status.Error(codes.Unavailable, "connection refused")
	}
	return fn(req)
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestDecideInitial(t *testing.T) {
	peers := map[uint64]string{1: "a", 2: "b", 3: "c"}
	ctx := context.Background()

	// Every other member answers, none established: bootstrap.
	d := &fakeDialer{probes: map[string]probeInfo{"b": {ClusterID: 9}, "c": {ClusterID: 9, NodeID: 3, Term: 1, Commit: 1}}}
	if got, err := decideInitial(ctx, quietLog(), d, 9, 1, peers); err != nil || got != decideBootstrap {
		t.Fatalf("all fresh: %v %v", got, err)
	}
	// One is established: join, even if another does not answer.
	d = &fakeDialer{probes: map[string]probeInfo{"c": {ClusterID: 9, NodeID: 3, Term: 4, Commit: 20}}}
	if got, err := decideInitial(ctx, quietLog(), d, 9, 1, peers); err != nil || got != decideJoin {
		t.Fatalf("established: %v %v", got, err)
	}
	// One does not answer and none is established: wait (until ctx ends).
	d = &fakeDialer{probes: map[string]probeInfo{"b": {ClusterID: 9}}}
	tctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
	defer cancel()
	if got, err := decideInitial(tctx, quietLog(), d, 9, 1, peers); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("one missing: %v %v, want to wait", got, err)
	}
	if n := strings.Count(strings.Join(d.calls, ","), "probe c"); n < 2 {
		t.Fatalf("probed the missing member %d times, want retries", n)
	}
	// Another cluster's member counts as no answer.
	d = &fakeDialer{probes: map[string]probeInfo{"b": {ClusterID: 9}, "c": {ClusterID: 8, Term: 9}}}
	tctx2, cancel2 := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel2()
	if _, err := decideInitial(tctx2, quietLog(), d, 9, 1, peers); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("foreign member: %v, want to wait", err)
	}
	// A cluster of one bootstraps at once.
	if got, _ := decideInitial(ctx, quietLog(), &fakeDialer{}, 9, 1, map[uint64]string{1: "a"}); got != decideBootstrap {
		t.Fatalf("single: %v", got)
	}
}

func TestJoinCluster(t *testing.T) {
	ctx := context.Background()
	tries := 0
	d := &fakeDialer{joins: map[string]func(joinRequest) (joinResponse, error){
		"b": func(r joinRequest) (joinResponse, error) {
			tries++
			if tries < 2 {
				return joinResponse{}, status.Error(codes.Unavailable, "no leader")
			}
			return joinResponse{Member: core.MemberInfo{ID: 7, Name: r.Name}}, nil
		},
	}}
	resp, err := joinCluster(ctx, quietLog(), d, []string{"a", "b"}, joinRequest{Name: "n", PeerAddr: "x"})
	if err != nil || resp.Member.ID != 7 {
		t.Fatalf("join: %v %v", resp, err)
	}
	d.joins["b"] = func(joinRequest) (joinResponse, error) {
		return joinResponse{}, status.Error(codes.PermissionDenied, "another cluster")
	}
	if _, err := joinCluster(ctx, quietLog(), d, []string{"b"}, joinRequest{}); err == nil || !strings.Contains(err.Error(), "another cluster") {
		t.Fatalf("refused join: %v", err)
	}
}

// fakeJoinNode is a joinNode whose status the test sets.
type fakeJoinNode struct {
	st    driver.Status
	err   error
	added []core.MemberInfo
}

func (f *fakeJoinNode) Status() driver.Status { return f.st }

func (f *fakeJoinNode) AddMember(_ context.Context, mi core.MemberInfo, _ bool) (core.MemberInfo, error) {
	if f.err != nil {
		return core.MemberInfo{}, f.err
	}
	mi.ID = f.st.Membership.HighestID + 1
	f.added = append(f.added, mi)
	return mi, nil
}

func TestClusterHandler(t *testing.T) {
	ctx := context.Background()
	m := core.Membership{Voters: []uint64{1, 2}, Learners: []uint64{3}, HighestID: 3, Members: []core.MemberInfo{
		{ID: 1, Name: "a", PeerAddr: "a:1"}, {ID: 2, Name: "b", PeerAddr: "b:1"}, {ID: 3, Name: "c", PeerAddr: "c:1"},
	}}
	d := &fakeDialer{joins: map[string]func(joinRequest) (joinResponse, error){}}
	h := newClusterHandler(9, quietLog(), d)

	// Before the node runs: Probe says node 0, Join is refused as starting.
	if p, _ := h.Probe(ctx); p.NodeID != 0 || p.ClusterID != 9 {
		t.Fatalf("probe before start: %+v", p)
	}
	if _, err := h.Join(ctx, joinRequest{PeerAddr: "x:1"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("join before start: %v", err)
	}

	leader := &fakeJoinNode{}
	leader.st.ID, leader.st.Leader, leader.st.Role, leader.st.Term, leader.st.Commit, leader.st.Membership = 1, 1, core.RoleLeader, 3, 10, m
	h.setNode(leader)
	if p, _ := h.Probe(ctx); p.NodeID != 1 || p.Term != 3 || !established(p) {
		t.Fatalf("probe: %+v", p)
	}
	// A new node is added with auto-promotion.
	resp, err := h.Join(ctx, joinRequest{Name: "d", PeerAddr: "d:1", Incarnation: 5})
	if err != nil || resp.Member.ID != 4 || !resp.Member.AutoPromote || resp.Member.Incarnation != 5 {
		t.Fatalf("join: %+v %v", resp, err)
	}
	// The learner an operator added for "c" at c:1 is adopted as is.
	resp, err = h.Join(ctx, joinRequest{Name: "c", PeerAddr: "c:1", Incarnation: 6})
	if err != nil || resp.Member.ID != 3 || len(leader.added) != 1 {
		t.Fatalf("adopt: %+v %v (added %v)", resp, err, leader.added)
	}
	// A voter's name is never adopted: the driver adds a replacement.
	if _, err := h.Join(ctx, joinRequest{Name: "b", PeerAddr: "b:1", Incarnation: 7}); err != nil || len(leader.added) != 2 {
		t.Fatalf("replacement: %v %v", err, leader.added)
	}
	leader.err = core.ErrInvalidConfChange
	if _, err := h.Join(ctx, joinRequest{Name: "e", PeerAddr: "e:1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("refused: %v", err)
	}
	// A join from another cluster never reaches the handler: the
	// transport's Cluster service refuses it (transport TestClusterService).

	// A follower forwards once to the leader's peer address.
	follower := &fakeJoinNode{}
	follower.st.ID, follower.st.Leader, follower.st.Role, follower.st.Membership = 2, 1, core.RoleFollower, m
	h.setNode(follower)
	var fwd joinRequest
	d.joins["a:1"] = func(r joinRequest) (joinResponse, error) {
		fwd = r
		return joinResponse{Member: core.MemberInfo{ID: 9}}, nil
	}
	if resp, err := h.Join(ctx, joinRequest{Name: "f", PeerAddr: "f:1"}); err != nil || resp.Member.ID != 9 || fwd.Hops != 1 {
		t.Fatalf("forward: %+v %v hops %d", resp, err, fwd.Hops)
	}
	if _, err := h.Join(ctx, joinRequest{Name: "f", PeerAddr: "f:1", Hops: 1}); status.Code(err) != codes.Unavailable {
		t.Fatalf("second hop: %v", err)
	}
}

func TestIdentityFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if id, err := readIdentity(dir); id != nil || err != nil {
		t.Fatalf("absent: %v %v", id, err)
	}
	want := identity{ClusterName: "prod", ClusterID: clusterIDFromName("prod"), NodeID: 4, Name: "rafty-3", Incarnation: 77}
	if err := writeIdentity(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := readIdentity(dir)
	if err != nil || got.NodeID != 4 || got.Name != "rafty-3" || got.Incarnation != 77 || got.ClusterID != want.ClusterID {
		t.Fatalf("read back %+v %v", got, err)
	}
	if err := got.checkCluster(dir, "prod", clusterIDFromName("prod")); err != nil {
		t.Fatal(err)
	}
	err = got.checkCluster(dir, "staging", clusterIDFromName("staging"))
	if !errors.Is(err, errForeignCluster) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), `cluster "prod"`) {
		t.Fatalf("foreign: %v", err)
	}
	// A member of prod is never an abandoned join; a join to prod that
	// got no ID is, for any other cluster (and not for prod itself).
	if got.abandonedJoin(clusterIDFromName("staging")) {
		t.Fatal("a member's identity counted as an abandoned join")
	}
	pending := identity{ClusterName: "prod", ClusterID: clusterIDFromName("prod"), Incarnation: 77}
	if !pending.abandonedJoin(clusterIDFromName("staging")) || pending.abandonedJoin(clusterIDFromName("prod")) {
		t.Fatalf("unfinished join: abandoned for staging %v, for prod %v",
			pending.abandonedJoin(clusterIDFromName("staging")), pending.abandonedJoin(clusterIDFromName("prod")))
	}
	if _, err := os.Stat(filepath.Join(dir, identityFile+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte("{bad"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readIdentity(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged: %v", err)
	}
}

func TestMoveAside(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"raft/wal", "kv/x", identityFile, "lost+found/y"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("z"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dest, err := moveAside(dir, 3, time.Unix(1000, 0))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(dest) != "removed-3-1000" {
		t.Fatalf("dest %s", dest)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "lost+found,removed-3-1000" {
		t.Fatalf("left %v", names)
	}
	if _, err := os.Stat(filepath.Join(dest, "raft", "wal")); err != nil {
		t.Fatal(err)
	}
}
