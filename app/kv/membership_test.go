package kv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// fakeMembers is a MembershipNode whose status and change results the
// test sets.
type fakeMembers struct {
	mu     sync.Mutex
	st     driver.Status
	err    error // returned by every change when set
	added  []core.MemberInfo
	learn  []bool
	promo  []uint64
	remove []uint64
}

func (f *fakeMembers) ID() uint64 { return f.Status().ID }

func (f *fakeMembers) Status() driver.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeMembers) AddMember(_ context.Context, mi core.MemberInfo, learnerOnly bool) (core.MemberInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return core.MemberInfo{}, f.err
	}
	mi.ID = f.st.Membership.HighestID + 1
	f.added = append(f.added, mi)
	f.learn = append(f.learn, learnerOnly)
	m, err := f.st.Membership.Apply(core.ConfChange{Ops: []core.ConfChangeOp{{Type: core.ConfAddLearner, Member: mi}}})
	if err != nil {
		return core.MemberInfo{}, err
	}
	f.st.Membership = m
	return mi, nil
}

func (f *fakeMembers) PromoteMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.promo = append(f.promo, id)
	return nil
}

func (f *fakeMembers) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.remove = append(f.remove, id)
	return nil
}

// threeMembers is a configuration of voters 1-3 (3 with a client
// address) and learner 4, as seen by member self, led by leader.
func threeMembers(self, leader uint64) driver.Status {
	var st driver.Status
	st.ID, st.Leader, st.Term = self, leader, 3
	st.Role = core.RoleFollower
	st.LastIndex = 100
	st.ConfIndex = 7
	st.Membership = core.Membership{
		Voters: []uint64{1, 2, 3}, Learners: []uint64{4}, HighestID: 5,
		Members: []core.MemberInfo{
			{ID: 1, Name: "a", PeerAddr: "h1:7000"},
			{ID: 2, Name: "b", PeerAddr: "h2:7000"},
			{ID: 3, Name: "c", PeerAddr: "h3:7000", ClientAddr: "h3:2379"},
			{ID: 4, Name: "d", PeerAddr: "h4:7000", AutoPromote: true},
		},
	}
	if self == leader {
		st.Role = core.RoleLeader
		st.Progress = map[uint64]core.Progress{
			1: {Match: 100, RecentActive: true},
			2: {Match: 90, RecentActive: false},
			3: {Match: 100, RecentActive: true},
			4: {Match: 40, RecentActive: true, IsLearner: true},
		}
	}
	return st
}

func newTestClusterService(t *testing.T, st driver.Status) (*ClusterService, *fakeMembers) {
	t.Helper()
	f := &fakeMembers{st: st}
	s, err := NewClusterService(nil, f, testClusterID, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

func TestMemberListLeader(t *testing.T) {
	s, _ := newTestClusterService(t, threeMembers(1, 1))
	resp, err := s.MemberList(context.Background(), &kvpb.MemberListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.FromLeader || resp.LeaderId != 1 || resp.ConfIndex != 7 || len(resp.Members) != 4 {
		t.Fatalf("response %v", resp)
	}
	got := map[uint64]string{}
	for _, m := range resp.Members {
		got[m.Id] = fmt.Sprintf("%s learner=%v leader=%v match=%d lag=%d reach=%v known=%v",
			m.Name, m.Learner, m.Leader, m.MatchIndex, m.Lag, m.Reachable, m.ProgressKnown)
	}
	want := map[uint64]string{
		1: "a learner=false leader=true match=100 lag=0 reach=true known=true",
		2: "b learner=false leader=false match=90 lag=10 reach=false known=true",
		3: "c learner=false leader=false match=100 lag=0 reach=true known=true",
		4: "d learner=true leader=false match=40 lag=60 reach=true known=true",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("member %d: %s, want %s", id, got[id], w)
		}
	}
}

func TestMemberListFollower(t *testing.T) {
	s, _ := newTestClusterService(t, threeMembers(2, 3))
	resp, err := s.MemberList(context.Background(), &kvpb.MemberListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.FromLeader || resp.LeaderId != 3 || len(resp.Members) != 4 {
		t.Fatalf("response %v", resp)
	}
	for _, m := range resp.Members {
		if m.ProgressKnown || m.MatchIndex != 0 {
			t.Errorf("a follower reported progress for %d: %v", m.Id, m)
		}
		if m.Leader != (m.Id == 3) {
			t.Errorf("member %d leader=%v", m.Id, m.Leader)
		}
	}
}

// TestMemberChangesOnFollower: every change on a follower is refused with
// FailedPrecondition and a NotLeader detail naming the leader (and its
// client address when the configuration has one); without a leader,
// Unavailable.
func TestMemberChangesOnFollower(t *testing.T) {
	for _, tc := range []struct {
		leader   uint64
		code     codes.Code
		wantAddr string
	}{{3, codes.FailedPrecondition, "h3:2379"}, {1, codes.FailedPrecondition, ""}, {0, codes.Unavailable, ""}} {
		s, f := newTestClusterService(t, threeMembers(2, tc.leader))
		ctx := context.Background()
		_, e1 := s.MemberAdd(ctx, &kvpb.MemberAddRequest{Name: "x", PeerAddr: "hx:7000"})
		_, e2 := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: 4})
		_, e3 := s.MemberRemove(ctx, &kvpb.MemberRemoveRequest{Name: "a"})
		for _, err := range []error{e1, e2, e3} {
			if status.Code(err) != tc.code {
				t.Fatalf("leader %d: %v, want %v", tc.leader, err, tc.code)
			}
			if tc.code != codes.FailedPrecondition {
				continue
			}
			nl, ok := NotLeaderOf(err)
			if !ok || nl.LeaderId != tc.leader || nl.LeaderClientAddr != tc.wantAddr {
				t.Fatalf("leader %d: detail %v %v in %v", tc.leader, nl, ok, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("member %d leads", tc.leader)) {
				t.Fatalf("message %q does not name the leader", err)
			}
		}
		if len(f.added)+len(f.promo)+len(f.remove) != 0 {
			t.Fatal("a follower passed a change to the node")
		}
	}
}

func TestMemberAdd(t *testing.T) {
	s, f := newTestClusterService(t, threeMembers(1, 1))
	ctx := context.Background()
	resp, err := s.MemberAdd(ctx, &kvpb.MemberAddRequest{Name: "e", PeerAddr: "h5:7000", ClientAddr: "h5:2379"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Member.Id != 6 || !resp.Member.Learner || !resp.Member.AutoPromote || resp.Member.ClientAddr != "h5:2379" {
		t.Fatalf("added %v", resp.Member)
	}
	if f.learn[0] || !f.added[0].AutoPromote {
		t.Fatalf("add without --learner: learnerOnly=%v autoPromote=%v", f.learn[0], f.added[0].AutoPromote)
	}
	resp, err = s.MemberAdd(ctx, &kvpb.MemberAddRequest{Name: "f", PeerAddr: "h6:7000", Learner: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Member.AutoPromote || !f.learn[1] {
		t.Fatalf("--learner add auto-promotes: %v", resp.Member)
	}

	for _, tc := range []struct {
		req  *kvpb.MemberAddRequest
		code codes.Code
		msg  string
	}{
		{&kvpb.MemberAddRequest{PeerAddr: "h9:7000"}, codes.InvalidArgument, "name is empty"},
		{&kvpb.MemberAddRequest{Name: "z"}, codes.InvalidArgument, "peer_addr is empty"},
		{&kvpb.MemberAddRequest{Name: "z", PeerAddr: strings.Repeat("x", core.MaxMemberFieldBytes+1)}, codes.InvalidArgument, "at most"},
		{&kvpb.MemberAddRequest{Name: "z", PeerAddr: "h", ClientAddr: "\xff"}, codes.InvalidArgument, "not UTF-8"},
		{&kvpb.MemberAddRequest{Name: "a", PeerAddr: "h9:7000"}, codes.AlreadyExists, `named "a" exists (ID 1)`},
		{&kvpb.MemberAddRequest{Name: "z", PeerAddr: "h2:7000"}, codes.AlreadyExists, "member 2"},
	} {
		_, err := s.MemberAdd(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v: %v, want %v %q", tc.req, err, tc.code, tc.msg)
		}
	}
}

func TestMemberPromoteRemove(t *testing.T) {
	s, f := newTestClusterService(t, threeMembers(1, 1))
	ctx := context.Background()
	if _, err := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MemberRemove(ctx, &kvpb.MemberRemoveRequest{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if resp, err := s.MemberRemove(ctx, &kvpb.MemberRemoveRequest{Id: 1}); err != nil || resp.Member.Name != "a" {
		t.Fatal(resp, err)
	}
	if fmt.Sprint(f.promo, f.remove) != "[4] [2 1]" {
		t.Fatalf("promoted %v removed %v", f.promo, f.remove)
	}
	for _, tc := range []struct {
		call func() error
		code codes.Code
		msg  string
	}{
		{func() error { _, err := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{}); return err }, codes.InvalidArgument, "ID 0"},
		{func() error { _, err := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: 2}); return err }, codes.FailedPrecondition, "already a voter"},
		{func() error { _, err := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: 5}); return err }, codes.NotFound, "was removed"},
		{func() error { _, err := s.MemberPromote(ctx, &kvpb.MemberPromoteRequest{Id: 9}); return err }, codes.NotFound, "no member has ID 9"},
		{func() error { _, err := s.MemberRemove(ctx, &kvpb.MemberRemoveRequest{}); return err }, codes.InvalidArgument, "ID or name"},
		{func() error { _, err := s.MemberRemove(ctx, &kvpb.MemberRemoveRequest{Name: "nope"}); return err }, codes.NotFound, `"nope"`},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%v, want %v %q", err, tc.code, tc.msg)
		}
	}
}

// TestMemberChangeErrors: the typed refusals of a change become the
// documented codes.
func TestMemberChangeErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", core.ErrIDReused), codes.AlreadyExists},
		{fmt.Errorf("x: %w", core.ErrInvalidConfChange), codes.InvalidArgument},
		{fmt.Errorf("x: %w", core.ErrConfChangeInProgress), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", core.ErrLearnerBehind), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", core.ErrQuorumUnreachable), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", &core.NotLeaderError{Leader: 3}), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", &core.NotLeaderError{}), codes.Unavailable},
		{driver.ErrStopped, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("boom"), codes.Internal},
	} {
		s, f := newTestClusterService(t, threeMembers(1, 1))
		f.err = tc.err
		_, err := s.MemberPromote(context.Background(), &kvpb.MemberPromoteRequest{Id: 4})
		if status.Code(err) != tc.code {
			t.Errorf("%v: %v, want %v", tc.err, err, tc.code)
		}
	}
}
