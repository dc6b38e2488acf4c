package kv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// fakeNode returns canned answers, to drive every error path of the
// service without a cluster.
type fakeNode struct {
	proposeRes any
	proposeErr error
	readErr    error
	proposed   int
}

func (f *fakeNode) ID() uint64 { return 7 }
func (f *fakeNode) Propose(ctx context.Context, cmd []byte) (any, error) {
	f.proposed++
	return f.proposeRes, f.proposeErr
}
func (f *fakeNode) Read(ctx context.Context) error { return f.readErr }
func (f *fakeNode) Status() driver.Status {
	return driver.Status{Status: core.Status{ID: 7, Term: 3, Role: core.RoleFollower, Leader: 2}}
}

func TestWriteErrorMapping(t *testing.T) {
	tests := []struct {
		name string
		err  error
		res  any
		code codes.Code
		msg  string
	}{
		{"no leader", &driver.DroppedError{Reason: core.ErrNoLeader}, nil, codes.Unavailable, "safe to retry"},
		{"not leader", &driver.DroppedError{Reason: &core.NotLeaderError{Leader: 3}}, nil, codes.Unavailable, "leader is 3"},
		{"step down", &driver.DroppedError{Reason: core.ErrStepDown}, nil, codes.Unavailable, "safe to retry"},
		{"uncommitted backlog", &driver.DroppedError{Reason: core.ErrTooManyUncommitted}, nil, codes.Unavailable, "safe to retry"},
		{"too large for raft", &driver.DroppedError{Reason: core.ErrProposalTooLarge}, nil, codes.InvalidArgument, "MaxProposalBytes"},
		{"busy", fmt.Errorf("%w: 4096 pending", driver.ErrBusy), nil, codes.Unavailable, "overloaded"},
		{"stopped", driver.ErrStopped, nil, codes.Unavailable, "stopping"},
		{"unknown, stopped", &driver.OutcomeUnknownError{Cause: driver.ErrStopped}, nil, codes.Aborted, "may or may not have been applied"},
		{"unknown, deadline", &driver.OutcomeUnknownError{Cause: context.DeadlineExceeded}, nil, codes.DeadlineExceeded, "may or may not have been applied"},
		{"unknown, cancelled", &driver.OutcomeUnknownError{Cause: context.Canceled}, nil, codes.Canceled, "may or may not have been applied"},
		{"not submitted, deadline", fmt.Errorf("driver: proposal not submitted: %w", context.DeadlineExceeded), nil, codes.DeadlineExceeded, "it was not applied"},
		{"not submitted, cancelled", fmt.Errorf("driver: proposal not submitted: %w", context.Canceled), nil, codes.Canceled, "it was not applied"},
		{"other", errors.New("boom"), nil, codes.Internal, "boom"},
		{"command rejected", nil, &CommandError{Index: 4, Err: invalidf("key is empty")}, codes.InvalidArgument, "key is empty"},
		{"command corrupt", nil, &CommandError{Index: 4, Err: corruptf("x")}, codes.InvalidArgument, "malformed"},
		{"wrong result type", nil, "surprise", codes.Internal, "string"},
	}
	s := openStore(t, Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := newService(s, &fakeNode{proposeErr: tc.err, proposeRes: tc.res}, 1, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			_, perr := svc.Put(ctx, &kvpb.PutRequest{Key: []byte("k")})
			_, derr := svc.Delete(ctx, &kvpb.DeleteRequest{Key: []byte("k")})
			_, terr := svc.Txn(ctx, &kvpb.TxnRequest{})
			for _, err := range []error{perr, derr, terr} {
				st, _ := status.FromError(err)
				if st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
					t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
				}
			}
		})
	}
}

func TestReadErrorMapping(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{core.ErrNoLeader, codes.Unavailable},
		{fmt.Errorf("driver: read: %w", core.ErrStepDown), codes.Unavailable},
		{fmt.Errorf("driver: read: %w", core.ErrLeaderNotReady), codes.Unavailable},
		{&core.NotLeaderError{Leader: 2}, codes.Unavailable},
		{driver.ErrBusy, codes.Unavailable},
		{driver.ErrStopped, codes.Unavailable},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("boom"), codes.Internal},
	}
	s := openStore(t, Options{})
	for _, tc := range tests {
		node := &fakeNode{readErr: tc.err}
		svc, err := newService(s, node, 1, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		_, gerr := svc.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k")})
		_, rerr := svc.Range(context.Background(), &kvpb.RangeRequest{Prefix: true})
		for _, err := range []error{gerr, rerr} {
			if status.Code(err) != tc.code {
				t.Errorf("read error %v: got %v, want %v", tc.err, err, tc.code)
			}
		}
	}
}

// TestSerializableReadsWaitForCatchUp: a member's first serializable read
// in a process lifetime waits for a linearizable barrier (so a state that
// went back in time in a power cut is never served); once one barrier has
// succeeded, serializable reads are local and never call Read again, even
// if the member is then cut off.
func TestSerializableReadsWaitForCatchUp(t *testing.T) {
	s := openStore(t, Options{})
	node := &countingNode{fakeNode: fakeNode{readErr: core.ErrNoLeader}}
	svc, err := newService(s, node, 1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	get := func() error {
		_, err := svc.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k"), Serializable: true})
		return err
	}
	scan := func() error {
		_, err := svc.Range(context.Background(), &kvpb.RangeRequest{Prefix: true, Serializable: true})
		return err
	}
	for _, read := range []func() error{get, scan} {
		err := read()
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not caught up since restart") {
			t.Fatalf("serializable read without a leader since start: %v, want Unavailable (not caught up since restart)", err)
		}
	}
	if node.reads != 2 {
		t.Fatalf("%d barriers for 2 reads before catching up, want 2", node.reads)
	}
	node.readErr = nil
	if err := get(); err != nil {
		t.Fatalf("serializable read once a leader answers: %v", err)
	}
	node.readErr = core.ErrNoLeader // cut off again: the member's state cannot go back any more
	for _, read := range []func() error{get, scan, get} {
		if err := read(); err != nil {
			t.Fatalf("serializable read after catching up, leader gone: %v", err)
		}
	}
	if node.reads != 3 {
		t.Fatalf("%d barriers, want 3: serializable reads after the catch-up must stay local", node.reads)
	}
	// A successful linearizable read is a catch-up too.
	node2 := &countingNode{}
	svc2, err := newService(s, node2, 1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc2.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	node2.readErr = core.ErrNoLeader
	if _, err := svc2.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k"), Serializable: true}); err != nil {
		t.Fatalf("serializable read after a linearizable one: %v", err)
	}
}

// countingNode counts Read barriers.
type countingNode struct {
	fakeNode
	reads int
}

func (c *countingNode) Read(ctx context.Context) error {
	c.reads++
	return c.readErr
}

// TestStoreClosedIsUnavailable: a member whose store is closed (stopping)
// answers Unavailable, not Internal, and never panics.
func TestStoreClosedIsUnavailable(t *testing.T) {
	s, err := OpenStore(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := newService(s, &fakeNode{}, 1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, gerr := svc.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k")})
	_, rerr := svc.Range(context.Background(), &kvpb.RangeRequest{Prefix: true})
	_, serr := svc.Status(context.Background(), &kvpb.StatusRequest{Hash: true})
	for _, err := range []error{gerr, rerr, serr} {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("closed store: %v", err)
		}
	}
}

// TestRequestTimeoutApplied: a request without deadline gets one.
func TestRequestTimeoutApplied(t *testing.T) {
	s := openStore(t, Options{})
	node := &deadlineNode{}
	svc, err := newService(s, node, 1, Limits{RequestTimeout: 12345e6})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k")}); err == nil {
		t.Fatal("expected the node's error")
	}
	if !node.had {
		t.Fatal("Propose got a context without deadline")
	}
}

type deadlineNode struct {
	fakeNode
	had bool
}

func (d *deadlineNode) Propose(ctx context.Context, _ []byte) (any, error) {
	_, d.had = ctx.Deadline()
	return nil, driver.ErrStopped
}

// fakeLeader drives RegisterHealth.
type fakeLeader struct {
	mu     sync.Mutex
	leader uint64
	ch     chan struct{}
	done   chan struct{}
}

func (f *fakeLeader) Leader() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.ch
}

func (f *fakeLeader) set(l uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = l
	close(f.ch)
	f.ch = make(chan struct{})
}

func (f *fakeLeader) Done() <-chan struct{} { return f.done }

// healthRecorder captures the health server RegisterHealth creates.
type healthRecorder struct{ srv grpc_health_v1.HealthServer }

func (h *healthRecorder) RegisterService(sd *grpc.ServiceDesc, impl any) {
	h.srv = impl.(grpc_health_v1.HealthServer)
}

func TestHealthFollowsLeader(t *testing.T) {
	node := &fakeLeader{ch: make(chan struct{}), done: make(chan struct{})}
	rec := &healthRecorder{}
	stop := registerHealth(rec, node)
	defer stop()
	check := func(want grpc_health_v1.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for _, svc := range []string{"", "rafty.kv.v1.KV"} {
			await(t, want.String()+" for "+svc, func() bool {
				r, err := rec.srv.Check(context.Background(), &grpc_health_v1.HealthCheckRequest{Service: svc})
				return err == nil && r.Status == want
			})
		}
	}
	check(grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	node.set(2)
	check(grpc_health_v1.HealthCheckResponse_SERVING)
	node.set(0)
	check(grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	node.set(3)
	check(grpc_health_v1.HealthCheckResponse_SERVING)
	close(node.done)
	check(grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	stop()
	stop() // idempotent
}
