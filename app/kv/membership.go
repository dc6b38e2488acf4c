package kv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// MembershipNode is what the Cluster service needs of a member's Raft
// node: its status (membership, leader, the leader's progress) and the
// membership changes, which the leader carries out and a follower refuses
// with an error wrapping *core.NotLeaderError. Every change returns once
// it is active or ctx ends. kvnode adapts a driver.Node to it.
type MembershipNode interface {
	ID() uint64
	Status() driver.Status
	// AddMember adds mi as a learner (mi.ID 0: the leader allocates one)
	// and returns it as added. Unless learnerOnly, the leader promotes it
	// once it has stayed caught up.
	AddMember(ctx context.Context, mi core.MemberInfo, learnerOnly bool) (core.MemberInfo, error)
	PromoteMember(ctx context.Context, id uint64) error
	// RemoveMember removes id; the leader hands leadership over first
	// when id is itself.
	RemoveMember(ctx context.Context, id uint64) error
}

// ClusterService is the client gRPC membership service
// (kvpb.ClusterServer) of one member. It is safe for concurrent use.
type ClusterService struct {
	kvpb.UnimplementedClusterServer

	node      MembershipNode
	store     *Store
	clusterID uint64
	limits    Limits
}

// NewClusterService returns the membership service of the member running
// node over store (for response headers). Zero fields of limits take the
// defaults (RequestTimeout bounds a change without a deadline).
func NewClusterService(store *Store, node MembershipNode, clusterID uint64, limits Limits) (*ClusterService, error) {
	if node == nil {
		return nil, errors.New("kv: NewClusterService: node is nil")
	}
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	return &ClusterService{node: node, store: store, clusterID: clusterID, limits: limits.withDefaults()}, nil
}

// Register registers the service on a gRPC server.
func (s *ClusterService) Register(gs grpc.ServiceRegistrar) { kvpb.RegisterClusterServer(gs, s) }

func (s *ClusterService) header() *kvpb.ResponseHeader {
	h := &kvpb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.node.ID(), RaftTerm: s.node.Status().Term}
	if s.store != nil {
		h.AppliedIndex = s.store.AppliedIndex()
	}
	return h
}

func (s *ClusterService) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.limits.RequestTimeout)
}

// MemberList implements kvpb.ClusterServer. It never waits for the Raft
// loop: it reads the node's published status.
func (s *ClusterService) MemberList(context.Context, *kvpb.MemberListRequest) (*kvpb.MemberListResponse, error) {
	st := s.node.Status()
	resp := &kvpb.MemberListResponse{
		Header:     s.header(),
		LeaderId:   st.Leader,
		FromLeader: st.Role == core.RoleLeader,
		ConfIndex:  st.ConfIndex,
		Joint:      st.Membership.IsJoint(),
		LastIndex:  st.LastIndex,
	}
	for _, id := range sortedIDs(st.Membership) {
		resp.Members = append(resp.Members, describeMember(st, id))
	}
	return resp, nil
}

// sortedIDs lists every member of m (voters, outgoing voters, learners)
// once, in ascending order.
func sortedIDs(m core.Membership) []uint64 {
	seen := map[uint64]bool{}
	var ids []uint64
	for _, id := range m.IDs() {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// describeMember builds the Member of id from a status; progress only
// when the status is a leader's.
func describeMember(st driver.Status, id uint64) *kvpb.Member {
	mi, _ := st.Membership.Info(id)
	m := &kvpb.Member{
		Id: id, Name: mi.Name, PeerAddr: mi.PeerAddr, ClientAddr: mi.ClientAddr,
		Learner:     contains(st.Membership.Learners, id),
		Leader:      id == st.Leader && id != core.None,
		AutoPromote: mi.AutoPromote, Replaces: mi.Replaces,
	}
	m.Outgoing = !contains(st.Membership.Voters, id) && contains(st.Membership.OutgoingVoters, id)
	if st.Role == core.RoleLeader {
		m.ProgressKnown = true
		if id == st.ID {
			m.MatchIndex, m.Reachable = st.LastIndex, true
		} else if pr, ok := st.Progress[id]; ok {
			m.MatchIndex, m.Reachable = pr.Match, pr.RecentActive
		}
		if st.LastIndex > m.MatchIndex {
			m.Lag = st.LastIndex - m.MatchIndex
		}
	}
	return m
}

func contains(ids []uint64, id uint64) bool { return slices.Contains(ids, id) }

// MemberAdd implements kvpb.ClusterServer.
func (s *ClusterService) MemberAdd(ctx context.Context, req *kvpb.MemberAddRequest) (*kvpb.MemberAddResponse, error) {
	if err := checkMemberField("name", req.Name, true); err != nil {
		return nil, err
	}
	if err := checkMemberField("peer_addr", req.PeerAddr, true); err != nil {
		return nil, err
	}
	if err := checkMemberField("client_addr", req.ClientAddr, false); err != nil {
		return nil, err
	}
	st := s.node.Status()
	if err := s.leaderOnly(st); err != nil {
		return nil, err
	}
	// An operator's add under a taken name is a mistake, not the
	// replacement a joining node with an empty data directory asks for
	// (the driver would add it with Replaces set).
	if mi, ok := st.Membership.ByName(req.Name); ok {
		return nil, status.Errorf(codes.AlreadyExists, "a member named %q exists (ID %d); remove it first to add another under that name", req.Name, mi.ID)
	}
	for _, mi := range st.Membership.Members {
		if mi.PeerAddr == req.PeerAddr {
			return nil, status.Errorf(codes.AlreadyExists, "member %d (%q) already has peer address %s", mi.ID, mi.Name, req.PeerAddr)
		}
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	added, err := s.node.AddMember(ctx, core.MemberInfo{
		Name: req.Name, PeerAddr: req.PeerAddr, ClientAddr: req.ClientAddr, AutoPromote: !req.Learner,
	}, req.Learner)
	if err != nil {
		return nil, s.changeStatus("adding "+req.Name, err)
	}
	st = s.node.Status()
	m := describeMember(st, added.ID)
	if !st.Membership.Contains(added.ID) {
		// The status is published a moment after the change is active.
		m = &kvpb.Member{Id: added.ID, Name: added.Name, PeerAddr: added.PeerAddr, ClientAddr: added.ClientAddr,
			Learner: true, AutoPromote: added.AutoPromote, Replaces: added.Replaces}
	}
	return &kvpb.MemberAddResponse{Header: s.header(), Member: m}, nil
}

// MemberPromote implements kvpb.ClusterServer.
func (s *ClusterService) MemberPromote(ctx context.Context, req *kvpb.MemberPromoteRequest) (*kvpb.MemberPromoteResponse, error) {
	if req.Id == core.None {
		return nil, status.Error(codes.InvalidArgument, "invalid request: member ID 0 (IDs start at 1)")
	}
	st := s.node.Status()
	if err := s.leaderOnly(st); err != nil {
		return nil, err
	}
	switch {
	case !st.Membership.Contains(req.Id):
		return nil, notMember(st.Membership, req.Id)
	case !contains(st.Membership.Learners, req.Id):
		return nil, status.Errorf(codes.FailedPrecondition, "member %d is already a voter", req.Id)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.node.PromoteMember(ctx, req.Id); err != nil {
		return nil, s.changeStatus(fmt.Sprintf("promoting %d", req.Id), err)
	}
	st = s.node.Status()
	return &kvpb.MemberPromoteResponse{Header: s.header(), Member: describeMember(st, req.Id)}, nil
}

// MemberRemove implements kvpb.ClusterServer.
func (s *ClusterService) MemberRemove(ctx context.Context, req *kvpb.MemberRemoveRequest) (*kvpb.MemberRemoveResponse, error) {
	if req.Id == core.None && req.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "invalid request: give the member's ID or name")
	}
	st := s.node.Status()
	if err := s.leaderOnly(st); err != nil {
		return nil, err
	}
	id := req.Id
	if id == core.None {
		mi, ok := st.Membership.ByName(req.Name)
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no member is named %q", req.Name)
		}
		id = mi.ID
	} else if !st.Membership.Contains(id) {
		return nil, notMember(st.Membership, id)
	}
	gone := describeMember(st, id)
	gone.ProgressKnown, gone.MatchIndex, gone.Lag, gone.Reachable = false, 0, 0, false
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.node.RemoveMember(ctx, id); err != nil {
		return nil, s.changeStatus(fmt.Sprintf("removing %d", id), err)
	}
	return &kvpb.MemberRemoveResponse{Header: s.header(), Member: gone}, nil
}

// leaderOnly refuses a change on a member that does not lead, with the
// NotLeader detail a client redirects by. The driver would refuse it too;
// checking first answers without a trip to the Raft loop and lets the
// pre-checks below use the leader's view.
func (s *ClusterService) leaderOnly(st driver.Status) error {
	if st.Role == core.RoleLeader {
		return nil
	}
	return notLeaderStatus(st, st.Leader)
}

// notLeaderStatus is FailedPrecondition with a NotLeader detail naming
// leader and, when the configuration knows it, its client address.
func notLeaderStatus(st driver.Status, leader uint64) error {
	if leader == core.None || leader == st.ID {
		return status.Error(codes.Unavailable, "no leader known (an election is under way, or no quorum); retry")
	}
	mi, _ := st.Membership.Info(leader)
	msg := fmt.Sprintf("not the leader: member %d leads", leader)
	if mi.ClientAddr != "" {
		msg += " at client address " + mi.ClientAddr
	}
	stt := status.New(codes.FailedPrecondition, msg)
	if d, err := stt.WithDetails(&kvpb.NotLeader{LeaderId: leader, LeaderClientAddr: mi.ClientAddr}); err == nil {
		stt = d
	}
	return stt.Err()
}

// NotLeaderOf extracts the NotLeader detail of a status error, if any.
func NotLeaderOf(err error) (*kvpb.NotLeader, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return nil, false
	}
	for _, d := range st.Details() {
		if nl, ok := d.(*kvpb.NotLeader); ok {
			return nl, true
		}
	}
	return nil, false
}

func notMember(m core.Membership, id uint64) error {
	if m.WasRemoved(id) {
		return status.Errorf(codes.NotFound, "member %d was removed (IDs are never reused)", id)
	}
	return status.Errorf(codes.NotFound, "no member has ID %d", id)
}

// checkMemberField checks one string of a MemberAdd request against the
// limits the core enforces, so the answer names the field.
func checkMemberField(field, v string, required bool) error {
	switch {
	case required && strings.TrimSpace(v) == "":
		return status.Errorf(codes.InvalidArgument, "invalid request: %s is empty", field)
	case len(v) > core.MaxMemberFieldBytes:
		return status.Errorf(codes.InvalidArgument, "invalid request: %s is %d bytes, at most %d", field, len(v), core.MaxMemberFieldBytes)
	case !utf8.ValidString(v):
		return status.Errorf(codes.InvalidArgument, "invalid request: %s is not UTF-8", field)
	}
	return nil
}

// changeStatus maps an error of a membership change.
func (s *ClusterService) changeStatus(what string, err error) error {
	var nl *core.NotLeaderError
	switch {
	case errors.As(err, &nl):
		return notLeaderStatus(s.node.Status(), nl.Leader)
	case errors.Is(err, core.ErrIDReused):
		return status.Errorf(codes.AlreadyExists, "%s: %v", what, err)
	case errors.Is(err, core.ErrInvalidConfChange):
		return status.Errorf(codes.InvalidArgument, "%s: refused: %v", what, err)
	case errors.Is(err, core.ErrConfChangeInProgress):
		return status.Errorf(codes.FailedPrecondition, "%s: another membership change is not yet active; retry in a moment: %v", what, err)
	case errors.Is(err, core.ErrLearnerBehind):
		return status.Errorf(codes.FailedPrecondition, "%s: the learner has not caught up with the leader's log; retry once its lag is small (kvnode member list): %v", what, err)
	case errors.Is(err, core.ErrQuorumUnreachable):
		return status.Errorf(codes.FailedPrecondition, "%s: the leader does not hear from a quorum of the resulting configuration; bring the unreachable members back first: %v", what, err)
	case errors.Is(err, core.ErrNoLeader), errors.Is(err, core.ErrTransferInProgress),
		errors.Is(err, driver.ErrStopped), errors.Is(err, driver.ErrBusy):
		return status.Errorf(codes.Unavailable, "%s: not carried out, retry: %v", what, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: not seen active before the deadline; it may still take effect (kvnode member list): %v", what, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: cancelled; it may still take effect: %v", what, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", what, err)
}
