package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// The peer-port Cluster service (transportpb.Cluster): what a node with an
// empty data directory asks the members it knows before it bootstraps or
// joins. The transport checks the cluster ID, bounds and validates the
// requests, and hands them to Config.Cluster (a ClusterHandler the
// application implements); ProbePeer and JoinPeer are the client side.

// Limits of the Cluster service.
const (
	// MaxClusterRequestBytes bounds an encoded Probe or Join request: a
	// JoinRequest's three strings are at most core.MaxMemberFieldBytes
	// each. A larger request is refused before it is decoded (gRPC
	// reports the codec's refusal as Internal, with this limit in the
	// message).
	MaxClusterRequestBytes = 8 << 10
	// MaxClusterResponseBytes bounds an encoded Probe or Join response a
	// client accepts: a membership of core.MaxMembers members with every
	// field at its limit, and room to spare.
	MaxClusterResponseBytes = 1 << 20
	// MaxJoinHops bounds how often a Join may be forwarded between
	// members (a follower forwards to the leader once). A request that
	// arrives with more hops is refused (InvalidArgument) before the
	// handler sees it, so forwarding can never loop.
	MaxJoinHops = 1
	// DefaultClusterCallTimeout bounds one ProbePeer or JoinPeer call,
	// connection included, when DialOptions.Timeout is zero.
	DefaultClusterCallTimeout = 10 * time.Second
)

// ErrClusterMismatch: ProbePeer or JoinPeer reached a node of another
// cluster (the server refused the request, or answered with another
// cluster ID).
var ErrClusterMismatch = errors.New("transport: the peer belongs to another cluster")

// ClusterHandler answers the Cluster service. Errors that carry a gRPC
// status are returned to the caller as they are; context errors become
// their status; errors wrapping core.ErrInvalidConfChange or
// core.ErrIDReused become InvalidArgument and AlreadyExists; anything else
// Unavailable (the caller retries, possibly at another member).
type ClusterHandler interface {
	// Probe describes this node.
	Probe(ctx context.Context) (ProbeInfo, error)
	// Join adds the caller as a member (see JoinRequest), or returns the
	// member an earlier identical request added.
	Join(ctx context.Context, req JoinRequest) (JoinResponse, error)
}

// ProbeInfo describes a node, as Probe answers.
type ProbeInfo struct {
	// ClusterID is the node's cluster. The transport fills it in from
	// Config.ClusterID when the handler leaves it zero.
	ClusterID uint64
	// NodeID is the node's ID, 0 while its data directory is empty (it
	// has neither bootstrapped nor joined).
	NodeID uint64
	// Term and Commit are the node's current term and commit index: an
	// established cluster has Term > 1 or Commit > 1.
	Term   uint64
	Commit uint64
	// LeaderID is the leader the node knows of, 0 if none.
	LeaderID uint64
	// Membership is the node's active configuration (empty if none).
	Membership core.Membership
}

// JoinRequest asks the cluster to add the caller.
type JoinRequest struct {
	// Name is the caller's member name (a pod name). Required.
	Name string
	// PeerAddr is where the caller's transport listens. Required.
	PeerAddr string
	// ClientAddr is where the caller serves clients, if it does.
	ClientAddr string
	// Incarnation is drawn once per empty data directory: a retry
	// carries the same one, a replacement (same name, data lost) a new
	// one (core.MemberInfo.Incarnation).
	Incarnation uint64
	// LearnerOnly asks to stay a learner (no automatic promotion).
	LearnerOnly bool
	// Hops counts forwards between members; a caller sends 0, a member
	// forwarding the request to the leader sends Hops+1.
	Hops uint32
}

// JoinResponse is the member the cluster added, and a configuration that
// holds it.
type JoinResponse struct {
	Member     core.MemberInfo
	Membership core.Membership
}

// validate checks what a JoinRequest must satisfy before a handler sees
// it.
func (r *JoinRequest) validate() error {
	if r.Name == "" {
		return errors.New("name is empty")
	}
	if err := checkPeerAddr(r.PeerAddr); err != nil {
		return fmt.Errorf("peer address: %w", err)
	}
	for _, f := range []struct{ name, v string }{{"name", r.Name}, {"peer address", r.PeerAddr}, {"client address", r.ClientAddr}} {
		if len(f.v) > core.MaxMemberFieldBytes {
			return fmt.Errorf("%s is %d bytes, at most %d", f.name, len(f.v), core.MaxMemberFieldBytes)
		}
		if !utf8.ValidString(f.v) {
			return fmt.Errorf("%s is not UTF-8", f.name)
		}
	}
	if r.Hops > MaxJoinHops {
		return fmt.Errorf("forwarded %d times, at most %d", r.Hops, MaxJoinHops)
	}
	return nil
}

// clusterRef boxes the interface so it can live in an atomic.Pointer.
type clusterRef struct{ h ClusterHandler }

// SetClusterHandler sets the handler of the Cluster service, for when it
// is built after the transport. A nil h is ignored.
func (t *GRPC) SetClusterHandler(h ClusterHandler) {
	if h != nil {
		t.cluster.Store(&clusterRef{h})
	}
}

func (t *GRPC) clusterHandler() ClusterHandler {
	if r := t.cluster.Load(); r != nil {
		return r.h
	}
	return nil
}

// clusterServer implements transportpb.ClusterServer.
type clusterServer struct {
	pb.UnimplementedClusterServer
	t *GRPC
}

// checkCluster refuses a request of another cluster, as checkHeader does
// for batches.
func (t *GRPC) checkCluster(rpc string, clusterID uint64) error {
	if clusterID != t.cfg.ClusterID {
		return t.reject(RejectClusterMismatch, codes.FailedPrecondition,
			"transport: cluster ID mismatch: a %s request for cluster %d reached node %d of cluster %d",
			rpc, clusterID, t.nodeID(), t.cfg.ClusterID)
	}
	return nil
}

func (s *clusterServer) Probe(ctx context.Context, req *pb.ProbeRequest) (*pb.ProbeResponse, error) {
	t := s.t
	if err := t.checkCluster("Probe", req.GetClusterId()); err != nil {
		return nil, err
	}
	h := t.clusterHandler()
	if h == nil {
		return nil, status.Errorf(codes.Unimplemented, "transport: node %d serves no Cluster service", t.nodeID())
	}
	info, err := h.Probe(ctx)
	if err != nil {
		return nil, clusterStatus("Probe", err)
	}
	if info.ClusterID == 0 {
		info.ClusterID = t.cfg.ClusterID
	}
	resp := &pb.ProbeResponse{
		ClusterId: info.ClusterID, NodeId: info.NodeID, Term: info.Term, Commit: info.Commit, LeaderId: info.LeaderID,
	}
	if !info.Membership.IsEmpty() {
		resp.Membership = info.Membership.Marshal()
	}
	return resp, nil
}

func (s *clusterServer) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	t := s.t
	if err := t.checkCluster("Join", req.GetClusterId()); err != nil {
		return nil, err
	}
	jr := JoinRequest{
		Name: req.GetName(), PeerAddr: req.GetPeerAddr(), ClientAddr: req.GetClientAddr(),
		Incarnation: req.GetIncarnation(), LearnerOnly: req.GetLearnerOnly(), Hops: req.GetHops(),
	}
	if err := jr.validate(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "transport: node %d: bad Join request: %v", t.nodeID(), err)
	}
	h := t.clusterHandler()
	if h == nil {
		return nil, status.Errorf(codes.Unimplemented, "transport: node %d serves no Cluster service", t.nodeID())
	}
	resp, err := h.Join(ctx, jr)
	if err != nil {
		return nil, clusterStatus("Join", err)
	}
	mi := resp.Member
	return &pb.JoinResponse{
		Member: &pb.Member{
			Id: mi.ID, Name: mi.Name, PeerAddr: mi.PeerAddr, ClientAddr: mi.ClientAddr,
			AutoPromote: mi.AutoPromote, Replaces: mi.Replaces, Incarnation: mi.Incarnation,
		},
		Membership: resp.Membership.Marshal(),
	}, nil
}

// clusterStatus maps a ClusterHandler error to a status (see
// ClusterHandler).
func clusterStatus(rpc string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, core.ErrIDReused):
		return status.Errorf(codes.AlreadyExists, "%s: %v", rpc, err)
	case errors.Is(err, core.ErrInvalidConfChange):
		return status.Errorf(codes.InvalidArgument, "%s: %v", rpc, err)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", rpc, err)
}

// DialOptions configure ProbePeer and JoinPeer.
type DialOptions struct {
	// ClusterID is the cluster the caller belongs to; the server refuses
	// another. Required, non-zero.
	ClusterID uint64
	// TLSCertFile, TLSKeyFile and TLSCAFile enable mutual TLS from PEM
	// files, as in Config (all three or none); TLS instead gives a
	// prepared configuration (its client side is used).
	TLSCertFile string
	// TLSKeyFile: see TLSCertFile.
	TLSKeyFile string
	// TLSCAFile: see TLSCertFile.
	TLSCAFile string
	// TLS: see TLSCertFile.
	TLS *tls.Config
	// Timeout bounds the whole call, connection included. Default
	// DefaultClusterCallTimeout.
	Timeout time.Duration
}

// ProbePeer asks the node at addr (host:port of its peer port, or a gRPC
// target with a scheme) to describe itself. Errors: ErrClusterMismatch,
// the context's or the timeout's error, or the gRPC status of a failure
// (codes.Unimplemented: the node serves no Cluster service; Unavailable:
// not reachable, or not ready).
func ProbePeer(ctx context.Context, addr string, opts DialOptions) (ProbeInfo, error) {
	var resp *pb.ProbeResponse
	err := callCluster(ctx, addr, opts, func(ctx context.Context, c pb.ClusterClient) (err error) {
		resp, err = c.Probe(ctx, &pb.ProbeRequest{ClusterId: opts.ClusterID})
		return err
	})
	if err != nil {
		return ProbeInfo{}, fmt.Errorf("transport: probing %s: %w", addr, err)
	}
	if resp.GetClusterId() != opts.ClusterID {
		return ProbeInfo{}, fmt.Errorf("transport: probing %s: %w (cluster %d, this node's is %d)",
			addr, ErrClusterMismatch, resp.GetClusterId(), opts.ClusterID)
	}
	m, err := core.UnmarshalMembership(resp.GetMembership())
	if err != nil {
		return ProbeInfo{}, fmt.Errorf("transport: probing %s: %w", addr, err)
	}
	return ProbeInfo{
		ClusterID: resp.GetClusterId(), NodeID: resp.GetNodeId(), Term: resp.GetTerm(), Commit: resp.GetCommit(),
		LeaderID: resp.GetLeaderId(), Membership: m,
	}, nil
}

// JoinPeer asks the node at addr to add the caller to its cluster. The
// request is idempotent for the same Name and Incarnation, so a caller may
// retry it, at the same or another member. The answer's membership must
// hold the member it names, or JoinPeer fails. Errors: as ProbePeer, plus
// InvalidArgument (a bad request, or a change the cluster refuses) and
// FailedPrecondition (from the handler, e.g. no leader to forward to).
func JoinPeer(ctx context.Context, addr string, req JoinRequest, opts DialOptions) (JoinResponse, error) {
	if err := req.validate(); err != nil {
		return JoinResponse{}, fmt.Errorf("transport: join via %s: %w", addr, err)
	}
	var resp *pb.JoinResponse
	err := callCluster(ctx, addr, opts, func(ctx context.Context, c pb.ClusterClient) (err error) {
		resp, err = c.Join(ctx, &pb.JoinRequest{
			ClusterId: opts.ClusterID, Name: req.Name, PeerAddr: req.PeerAddr, ClientAddr: req.ClientAddr,
			Incarnation: req.Incarnation, LearnerOnly: req.LearnerOnly, Hops: req.Hops,
		})
		return err
	})
	if err != nil {
		return JoinResponse{}, fmt.Errorf("transport: join via %s: %w", addr, err)
	}
	m, err := core.UnmarshalMembership(resp.GetMembership())
	if err != nil {
		return JoinResponse{}, fmt.Errorf("transport: join via %s: %w", addr, err)
	}
	pm := resp.GetMember()
	mi := core.MemberInfo{
		ID: pm.GetId(), Name: pm.GetName(), PeerAddr: pm.GetPeerAddr(), ClientAddr: pm.GetClientAddr(),
		AutoPromote: pm.GetAutoPromote(), Replaces: pm.GetReplaces(), Incarnation: pm.GetIncarnation(),
	}
	if mi.ID == core.None || !m.Contains(mi.ID) {
		return JoinResponse{}, fmt.Errorf("transport: join via %s: the answer names member %d, which its membership does not hold", addr, mi.ID)
	}
	return JoinResponse{Member: mi, Membership: m}, nil
}

// callCluster dials addr with opts, runs call under the timeout and
// closes the connection. A refusal for another cluster comes back as
// ErrClusterMismatch.
func callCluster(ctx context.Context, addr string, opts DialOptions, call func(context.Context, pb.ClusterClient) error) error {
	if opts.ClusterID == 0 {
		return errors.New("DialOptions.ClusterID is 0")
	}
	if err := checkPeerAddr(addr); err != nil {
		return err
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultClusterCallTimeout
	}
	cfg := Config{TLSCertFile: opts.TLSCertFile, TLSKeyFile: opts.TLSKeyFile, TLSCAFile: opts.TLSCAFile, TLS: opts.TLS}
	files := 0
	for _, f := range []string{opts.TLSCertFile, opts.TLSKeyFile, opts.TLSCAFile} {
		if f != "" {
			files++
		}
	}
	if files != 0 && files != 3 {
		return errors.New("DialOptions: TLSCertFile, TLSKeyFile and TLSCAFile must be set together")
	}
	if files != 0 && opts.TLS != nil {
		return errors.New("DialOptions: both TLS and the TLS*File paths are set; set one")
	}
	_, clientTLS, err := tlsConfigs(&cfg)
	if err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if clientTLS != nil {
		creds = credentials.NewTLS(clientTLS)
	}
	if !hasScheme(addr) {
		addr = "passthrough:///" + addr
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxClusterResponseBytes),
			grpc.MaxCallSendMsgSize(MaxClusterRequestBytes),
		),
		grpc.WithDisableRetry(),
	)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = call(ctx, pb.NewClusterClient(conn))
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition &&
		strings.Contains(st.Message(), clusterMismatchText) {
		return fmt.Errorf("%w: %w", ErrClusterMismatch, err)
	}
	return err
}

// clusterMismatchText is in the message checkCluster (and checkHeader)
// refuse another cluster's traffic with.
const clusterMismatchText = "cluster ID mismatch"
