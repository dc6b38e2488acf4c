package kv

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
)

// TestMaxConcurrentStreams: at the limit, one more request on the same
// connection waits (in the client's transport) until a stream ends; it is
// not refused and not served early.
func TestMaxConcurrentStreams(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(Limits{MaxConcurrentStreams: 1, StreamWorkers: 2}.ServerOptions()...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)

	// A Watch stream stays open: it takes the only stream slot.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watch, err := client.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a request over MaxConcurrentStreams: %v, want it held until its deadline", err)
	}

	stopWatch()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("after the open stream ended: %v", err)
	}
}

func TestLimitsValidateStreams(t *testing.T) {
	for _, l := range []Limits{{MaxConcurrentStreams: -1}, {StreamWorkers: -1}, {MaxConcurrentStreams: 1<<20 + 1}, {StreamWorkers: 1<<20 + 1}} {
		err := l.Validate()
		if err == nil || !strings.Contains(err.Error(), "Stream") {
			t.Errorf("Validate(%+v) = %v, want an error naming the field", l, err)
		}
	}
	if d := DefaultLimits(); d.MaxConcurrentStreams != DefaultMaxConcurrentStreams || d.StreamWorkers != DefaultStreamWorkers {
		t.Fatalf("defaults: %+v", d)
	}
}
