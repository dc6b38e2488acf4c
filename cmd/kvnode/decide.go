package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/transport"
)

// What a node with an empty data directory does (docs/operations.md,
// "Empty data dir: bootstrap or join" in the design note):
//
//   - --join, or a pod whose ordinal is at or above --cluster-size (a
//     scale-up): join, through the given endpoints.
//   - Otherwise the node is one of the initial members: it probes every
//     other initial member. If one of them belongs to an established
//     cluster (term > 1 or commit > 1) the cluster exists and this node's
//     data was lost: it joins as a new member (under its name, so the
//     cluster replaces the old member). If every one answers and none is
//     established, nobody has ever elected a leader: bootstrap, with the
//     same first entry everywhere. If some do not answer, wait and ask
//     again. Never bootstrapping without hearing from everyone is what
//     keeps a pod that lost its volume from coming back under its old ID
//     (having forgotten its vote and log) while the others are down.

// The peer-port Cluster service's messages, as the transport defines
// them: the decision, the join and the handler all speak them.
type (
	probeInfo    = transport.ProbeInfo
	joinRequest  = transport.JoinRequest
	joinResponse = transport.JoinResponse
)

// established reports whether the answering node belongs to a cluster
// that has elected a leader at least once (bootstrap alone is term 1,
// commit 1, identical everywhere).
func established(p probeInfo) bool { return p.Term > 1 || p.Commit > 1 }

// peerDialer asks other members over the peer port (transport.ProbePeer
// and transport.JoinPeer, bounded by ctx).
type peerDialer interface {
	Probe(ctx context.Context, addr string) (probeInfo, error)
	Join(ctx context.Context, addr string, req joinRequest) (joinResponse, error)
}

// decision is what an empty data directory becomes.
type decision int

const (
	decideBootstrap decision = iota + 1
	decideJoin
)

// decideLogEvery paces the "still waiting" lines.
const decideLogEvery = 10 * time.Second

// decideRetry paces rounds of probes or joins.
const decideRetry = 500 * time.Millisecond

// probeTimeout bounds one probe or join call.
const probeTimeout = 3 * time.Second

// decideInitial probes the other initial members (peers, this node's own
// ID left out) until it can decide: bootstrap when every one answered and
// none is established, join as soon as one is established. It returns
// when ctx ends with ctx's error.
func decideInitial(ctx context.Context, log *slog.Logger, d peerDialer, clusterID, self uint64, peers map[uint64]string) (decision, error) {
	var others []uint64
	for id := range peers {
		if id != self {
			others = append(others, id)
		}
	}
	slices.Sort(others)
	if len(others) == 0 {
		return decideBootstrap, nil
	}
	lastLog := time.Now()
	for {
		answered := 0
		var missing []string
		for _, id := range others {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			info, err := d.Probe(pctx, peers[id])
			cancel()
			switch {
			case err != nil:
				missing = append(missing, fmt.Sprintf("%d (%s): %v", id, peers[id], err))
			case info.ClusterID != 0 && info.ClusterID != clusterID:
				missing = append(missing, fmt.Sprintf("%d (%s): belongs to another cluster", id, peers[id]))
			case established(info):
				log.Info("an initial member belongs to an established cluster: joining it as a new member (this data directory is empty)",
					"peer", id, "addr", peers[id], "term", info.Term, "commit", info.Commit)
				return decideJoin, nil
			default:
				answered++
			}
		}
		if answered == len(others) {
			log.Info("every initial member answered and none has data: bootstrapping the cluster", "members", len(peers))
			return decideBootstrap, nil
		}
		if time.Since(lastLog) >= decideLogEvery {
			log.Warn("empty data directory: waiting for every initial member to answer before bootstrapping or joining",
				"answered", answered, "of", len(others), "missing", missing)
			lastLog = time.Now()
		}
		if err := sleepCtx(ctx, decideRetry); err != nil {
			return 0, err
		}
	}
}

// joinCluster asks the endpoints in turn, round after round, until one
// adds this node; it returns when ctx ends with ctx's error. A refusal
// that retrying cannot fix (another cluster, a bad request) ends it.
func joinCluster(ctx context.Context, log *slog.Logger, d peerDialer, endpoints []string, req joinRequest) (joinResponse, error) {
	if len(endpoints) == 0 {
		return joinResponse{}, errors.New("no endpoint to join through")
	}
	lastLog := time.Now()
	for {
		var fails []string
		for _, ep := range endpoints {
			jctx, cancel := context.WithTimeout(ctx, probeTimeout*4)
			resp, err := d.Join(jctx, ep, req)
			cancel()
			if err == nil {
				if resp.Member.ID == core.None {
					fails = append(fails, ep+": answered without a member ID")
					continue
				}
				log.Info("joined the cluster", "id", resp.Member.ID, "name", resp.Member.Name, "through", ep,
					"replaces", resp.Member.Replaces, "auto_promote", resp.Member.AutoPromote)
				return resp, nil
			}
			var fatal *joinRefused
			if errors.As(joinErrorFatal(err), &fatal) {
				return joinResponse{}, fmt.Errorf("joining through %s: %v", ep, fatal.err)
			}
			fails = append(fails, fmt.Sprintf("%s: %v", ep, err))
		}
		if time.Since(lastLog) >= decideLogEvery {
			log.Warn("still trying to join the cluster", "endpoints", endpoints, "errors", fails)
			lastLog = time.Now()
		}
		if err := sleepCtx(ctx, decideRetry); err != nil {
			return joinResponse{}, err
		}
	}
}

// joinRefused marks a join error retrying will not fix.
type joinRefused struct{ err error }

func (e *joinRefused) Error() string { return e.err.Error() }
func (e *joinRefused) Unwrap() error { return e.err }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
