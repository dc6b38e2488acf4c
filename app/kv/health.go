package kv

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

// leaderWatcher is what RegisterHealth needs of a driver.Node.
type leaderWatcher interface {
	Leader() (uint64, <-chan struct{})
	Done() <-chan struct{}
}

// RegisterHealth registers the standard grpc.health.v1 service on gs (the
// client port) and keeps it in step with node: SERVING while the node
// knows a leader (so writes and linearizable reads can succeed),
// NOT_SERVING otherwise and once the node has stopped. The status is
// published for the whole server ("") and for "rafty.kv.v1.KV".
//
// It starts one goroutine, which ends when node stops or when stop is
// called; stop waits for it, marks everything NOT_SERVING (so load
// balancers drain this member before it goes away) and is idempotent.
func RegisterHealth(gs grpc.ServiceRegistrar, node *driver.Node) (stop func()) {
	return registerHealth(gs, node)
}

func registerHealth(gs grpc.ServiceRegistrar, node leaderWatcher) (stop func()) {
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	set := func(st healthpb.HealthCheckResponse_ServingStatus) {
		hs.SetServingStatus("", st)
		hs.SetServingStatus(kvpb.KV_ServiceDesc.ServiceName, st)
	}
	set(healthpb.HealthCheckResponse_NOT_SERVING)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			lead, changed := node.Leader()
			if lead != 0 {
				set(healthpb.HealthCheckResponse_SERVING)
			} else {
				set(healthpb.HealthCheckResponse_NOT_SERVING)
			}
			select {
			case <-changed:
			case <-node.Done():
				set(healthpb.HealthCheckResponse_NOT_SERVING)
				return
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
			// Shutdown sets NOT_SERVING everywhere and ignores later
			// updates.
			hs.Shutdown()
		})
	}
}
