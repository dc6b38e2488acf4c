package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/transport"
)

// joinNode is what the peer-port Cluster service needs of the running
// Raft node (a driver.Node through driverMembers).
type joinNode interface {
	Status() driver.Status
	AddMember(ctx context.Context, mi core.MemberInfo, learnerOnly bool) (core.MemberInfo, error)
}

// maxJoinHops bounds forwards of a join (the transport refuses more): a
// follower passes it to the leader it knows, once; a second hop means the
// two disagree about who leads (an election is under way), and the
// joiner retries.
const maxJoinHops = transport.MaxJoinHops

// clusterHandler serves the peer port's Cluster service (Probe and Join)
// for kvnode: transport.ClusterHandler through clusterHandlerAdapter. It
// answers before the Raft node runs (Probe from what the data directory
// holds, node ID 0 while it is empty; Join refused as starting), and from
// the node once it runs.
type clusterHandler struct {
	clusterID uint64
	log       *slog.Logger
	dialer    peerDialer
	node      atomic.Pointer[joinNodeBox]
	// before is the Probe answer while no node runs (set before the
	// transport starts; replaced as the node decides).
	before atomic.Pointer[probeInfo]
}

// joinNodeBox lets an interface live in an atomic.Pointer.
type joinNodeBox struct{ n joinNode }

func newClusterHandler(clusterID uint64, log *slog.Logger, d peerDialer) *clusterHandler {
	h := &clusterHandler{clusterID: clusterID, log: log, dialer: d}
	h.setBefore(probeInfo{ClusterID: clusterID})
	return h
}

// setBefore sets the Probe answer for the time before the node runs.
func (h *clusterHandler) setBefore(p probeInfo) {
	p.ClusterID = h.clusterID
	h.before.Store(&p)
}

// setNode makes the handler answer from n.
func (h *clusterHandler) setNode(n joinNode) { h.node.Store(&joinNodeBox{n}) }

func (h *clusterHandler) current() joinNode {
	if b := h.node.Load(); b != nil {
		return b.n
	}
	return nil
}

// probe answers Probe.
func (h *clusterHandler) Probe(context.Context) (probeInfo, error) {
	n := h.current()
	if n == nil {
		return *h.before.Load(), nil
	}
	st := n.Status()
	return probeInfo{
		ClusterID: h.clusterID, NodeID: st.ID, Term: st.Term, Commit: st.Commit,
		LeaderID: st.Leader, Membership: st.Membership,
	}, nil
}

// join answers Join: the leader adds the caller (or finds the member an
// earlier try, or an operator's `member add`, made for it); a follower
// forwards the request to the leader's peer address, once.
func (h *clusterHandler) Join(ctx context.Context, req joinRequest) (joinResponse, error) {
	if req.PeerAddr == "" {
		return joinResponse{}, status.Error(codes.InvalidArgument, "join: the request has no peer address")
	}
	n := h.current()
	if n == nil {
		return joinResponse{}, status.Error(codes.Unavailable, "join: this member is starting; retry")
	}
	st := n.Status()
	if st.Removed {
		return joinResponse{}, status.Error(codes.Unavailable, "join: this member was removed from the cluster; ask another")
	}
	if st.Role != core.RoleLeader {
		return h.forward(ctx, st, st.Leader, req)
	}
	if mi, ok := adoptable(st.Membership, req); ok {
		h.log.Info("join: the member added for this node by `kvnode member add` takes it", "id", mi.ID, "name", mi.Name)
		return joinResponse{Member: mi, Membership: st.Membership}, nil
	}
	added, err := n.AddMember(ctx, core.MemberInfo{
		Name: req.Name, PeerAddr: req.PeerAddr, ClientAddr: req.ClientAddr,
		Incarnation: req.Incarnation, AutoPromote: !req.LearnerOnly,
	}, req.LearnerOnly)
	var nl *core.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return h.forward(ctx, n.Status(), nl.Leader, req)
	case err != nil:
		return joinResponse{}, joinStatus(err)
	}
	m := n.Status().Membership
	if !m.Contains(added.ID) {
		// Active, but the status is published a moment later: the
		// joiner needs the member's address among its hints only.
		m = m.Clone()
		m.Members = append(m.Members, added)
	}
	h.log.Info("join: added a member", "id", added.ID, "name", added.Name, "peer_addr", added.PeerAddr,
		"replaces", added.Replaces, "auto_promote", added.AutoPromote)
	return joinResponse{Member: added, Membership: m}, nil
}

// forward passes a join to leader's peer address.
func (h *clusterHandler) forward(ctx context.Context, st driver.Status, leader uint64, req joinRequest) (joinResponse, error) {
	if leader == core.None || leader == st.ID {
		return joinResponse{}, status.Error(codes.Unavailable, "join: no leader known (an election is under way); retry")
	}
	if req.Hops >= maxJoinHops {
		return joinResponse{}, status.Errorf(codes.Unavailable, "join: not the leader (member %d leads) and the request was forwarded already; retry", leader)
	}
	mi, _ := st.Membership.Info(leader)
	if mi.PeerAddr == "" {
		return joinResponse{}, status.Errorf(codes.Unavailable, "join: member %d leads, but its peer address is unknown here; retry another member", leader)
	}
	req.Hops++
	resp, err := h.dialer.Join(ctx, mi.PeerAddr, req)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return joinResponse{}, err
		}
		return joinResponse{}, status.Errorf(codes.Unavailable, "join: forwarding to the leader %d at %s: %v", leader, mi.PeerAddr, err)
	}
	return resp, nil
}

// adoptable finds the member an operator added for the joining node
// (`kvnode member add NAME --peer-addr A`, then the node started with
// --join): same name and peer address, no incarnation, still a learner.
// Taking over a learner's ID is always safe: a learner never voted and
// never counted toward a commit, so nothing depends on what it stored.
// A voter is never adopted: a node that lost a voter's data must come
// back under a new ID (the driver adds it with Replaces).
func adoptable(m core.Membership, req joinRequest) (core.MemberInfo, bool) {
	if req.Name == "" {
		return core.MemberInfo{}, false
	}
	mi, ok := m.ByName(req.Name)
	if !ok || mi.Incarnation != 0 || mi.PeerAddr != req.PeerAddr || !slices.Contains(m.Learners, mi.ID) {
		return core.MemberInfo{}, false
	}
	return mi, true
}

// joinStatus maps an AddMember error to the status the joiner sees;
// codes it must not retry are InvalidArgument, AlreadyExists and
// PermissionDenied.
func joinStatus(err error) error {
	switch {
	case errors.Is(err, core.ErrIDReused):
		return status.Errorf(codes.AlreadyExists, "join: %v", err)
	case errors.Is(err, core.ErrInvalidConfChange):
		return status.Errorf(codes.InvalidArgument, "join: refused: %v", err)
	case errors.Is(err, core.ErrConfChangeInProgress), errors.Is(err, core.ErrQuorumUnreachable),
		errors.Is(err, core.ErrNoLeader), errors.Is(err, driver.ErrStopped), errors.Is(err, driver.ErrBusy),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.Errorf(codes.Unavailable, "join: not now, retry: %v", err)
	}
	return status.Errorf(codes.Internal, "join: %v", err)
}

// joinErrorFatal classifies a Join call's error for joinCluster: a
// refusal no retry can change becomes *joinRefused.
func joinErrorFatal(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.AlreadyExists, codes.PermissionDenied:
		return &joinRefused{err: fmt.Errorf("%s", status.Convert(err).Message())}
	}
	return err
}
