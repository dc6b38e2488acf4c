package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// fakeClusterSvc is a Cluster service that either leads (and records the
// changes) or refuses as a follower naming leader and leaderAddr.
type fakeClusterSvc struct {
	kvpb.UnimplementedClusterServer
	id, leader uint64
	leaderAddr string

	mu    sync.Mutex
	calls []string
}

func (f *fakeClusterSvc) refuse() error {
	st := status.New(codes.FailedPrecondition, "not the leader")
	st, _ = st.WithDetails(&kvpb.NotLeader{LeaderId: f.leader, LeaderClientAddr: f.leaderAddr})
	return st.Err()
}

func (f *fakeClusterSvc) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeClusterSvc) MemberList(context.Context, *kvpb.MemberListRequest) (*kvpb.MemberListResponse, error) {
	resp := &kvpb.MemberListResponse{Header: &kvpb.ResponseHeader{MemberId: f.id}, LeaderId: f.leader, FromLeader: f.id == f.leader}
	for _, id := range []uint64{1, 2} {
		m := &kvpb.Member{Id: id, Name: "n" + string(rune('0'+id)), PeerAddr: "p:" + string(rune('0'+id)), Leader: id == f.leader}
		if id == f.leader {
			m.ClientAddr = f.leaderAddr
		}
		if resp.FromLeader {
			m.ProgressKnown, m.MatchIndex, m.Reachable = true, 10, true
		}
		resp.Members = append(resp.Members, m)
	}
	return resp, nil
}

func (f *fakeClusterSvc) MemberAdd(_ context.Context, r *kvpb.MemberAddRequest) (*kvpb.MemberAddResponse, error) {
	if f.id != f.leader {
		return nil, f.refuse()
	}
	f.record("add " + r.Name)
	return &kvpb.MemberAddResponse{Member: &kvpb.Member{Id: 3, Name: r.Name, PeerAddr: r.PeerAddr, Learner: true}}, nil
}

func (f *fakeClusterSvc) MemberRemove(_ context.Context, r *kvpb.MemberRemoveRequest) (*kvpb.MemberRemoveResponse, error) {
	if f.id != f.leader {
		return nil, f.refuse()
	}
	f.record("remove " + r.Name)
	return &kvpb.MemberRemoveResponse{Member: &kvpb.Member{Id: 2, Name: r.Name}}, nil
}

func serveFakeCluster(t *testing.T, f *fakeClusterSvc, lis net.Listener) {
	t.Helper()
	srv := grpc.NewServer()
	kvpb.RegisterClusterServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestMemberCLIRedirect: a change sent to a follower follows its NotLeader
// redirect to the leader's client address, even one not in --endpoints;
// list prefers the leader's view; a follower whose leader's address is
// unknown makes the command fail in one line instead of waiting.
func TestMemberCLIRedirect(t *testing.T) {
	ll, fl := listenLoopback(t), listenLoopback(t)
	leader := &fakeClusterSvc{id: 1, leader: 1, leaderAddr: ll.Addr().String()}
	follower := &fakeClusterSvc{id: 2, leader: 1, leaderAddr: ll.Addr().String()}
	serveFakeCluster(t, leader, ll)
	serveFakeCluster(t, follower, fl)
	ep := "--endpoints=" + fl.Addr().String()

	code, out, errOut := runCLI(t, "member", "add", "n3", "--peer-addr", "h3:7000", ep)
	if code != exitOK || !strings.HasPrefix(out, "added member 3 (n3, peer h3:7000) as a learner, promoted") {
		t.Fatalf("add: exit %d %q %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, "member", "remove", "n2", ep)
	if code != exitOK || out != "removed member 2 (n2)\n" {
		t.Fatalf("remove: exit %d %q", code, out)
	}
	if strings.Join(leader.calls, ",") != "add n3,remove n2" {
		t.Fatalf("leader saw %v", leader.calls)
	}
	code, out, _ = runCLI(t, "member", "list", ep)
	if code != exitOK || !strings.Contains(out, "MATCH") || strings.Contains(out, "a follower") || !strings.Contains(out, "yes") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}

	// The leader's client address unknown and not among the endpoints.
	bl := listenLoopback(t)
	blind := &fakeClusterSvc{id: 2, leader: 1}
	serveFakeCluster(t, blind, bl)
	args := []string{"member", "remove", "n2", "--endpoints=" + bl.Addr().String()}
	code, out, errOut = runCLI(t, args...)
	wantOneLineError(t, args, code, out, errOut, exitFailure, "every endpoint is a follower of member 1")
	code, out, _ = runCLI(t, "member", "list", "--endpoints="+bl.Addr().String())
	if code != exitOK || !strings.Contains(out, "a follower") {
		t.Fatalf("list from a follower: exit %d\n%s", code, out)
	}
}
