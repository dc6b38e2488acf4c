package kv

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

// raftNode is what the service needs of a driver.Node; tests substitute
// fakes to exercise every error path.
type raftNode interface {
	ID() uint64
	Propose(ctx context.Context, cmd []byte) (any, error)
	Read(ctx context.Context) error
	Status() driver.Status
}

// Service is the client gRPC service (kvpb.KVServer) of one member.
// Writes become Raft proposals through the node, on any member (a follower
// forwards them); linearizable reads run the node's Read barrier, on any
// member, then read the local store. It is safe for concurrent use.
type Service struct {
	kvpb.UnimplementedKVServer

	store     *Store
	node      raftNode
	clusterID uint64
	limits    Limits

	// caughtUp is set once a linearizable barrier has succeeded in this
	// process's lifetime; until then serializable reads run one (see
	// serializableGate). It is never cleared: applied only grows while the
	// process lives.
	caughtUp atomic.Bool
}

// NewService returns the service of the member running node over store
// (the node's state machine). clusterID is reported in every response
// header. Zero fields of limits take the defaults; the driver node must
// accept proposals of limits.MaxProposalBytes().
func NewService(store *Store, node *driver.Node, clusterID uint64, limits Limits) (*Service, error) {
	if node == nil {
		return nil, errors.New("kv: NewService: node is nil")
	}
	return newService(store, node, clusterID, limits)
}

func newService(store *Store, node raftNode, clusterID uint64, limits Limits) (*Service, error) {
	if store == nil {
		return nil, errors.New("kv: NewService: store is nil")
	}
	if err := limits.Validate(); err != nil {
		return nil, err
	}
	return &Service{store: store, node: node, clusterID: clusterID, limits: limits.withDefaults()}, nil
}

// Register registers the service on a gRPC server.
func (s *Service) Register(gs grpc.ServiceRegistrar) { kvpb.RegisterKVServer(gs, s) }

// Limits returns the limits in force (defaults filled in).
func (s *Service) Limits() Limits { return s.limits }

// header describes this member now. The applied index is read last, so it
// covers whatever the response reports.
func (s *Service) header() *kvpb.ResponseHeader {
	return &kvpb.ResponseHeader{
		ClusterId:    s.clusterID,
		MemberId:     s.node.ID(),
		RaftTerm:     s.node.Status().Term,
		AppliedIndex: s.store.AppliedIndex(),
	}
}

// withTimeout applies Limits.RequestTimeout to a context without deadline.
func (s *Service) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.limits.RequestTimeout)
}

// propose checks a write, proposes it and returns the state machine's
// result. The checks run the state machine's own decoder and rules on the
// exact bytes that would be proposed, so whatever passes here applies
// without a rule error on every member.
func (s *Service) propose(ctx context.Context, req proto.Message, cmd *kvpb.Command) (any, error) {
	if n := proto.Size(req); n > s.limits.MaxRequestBytes {
		return nil, invalidStatus(fmt.Errorf("request is %d bytes, over the limit of %d", n, s.limits.MaxRequestBytes))
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, invalidStatus(fmt.Errorf("encoding: %w", err))
	}
	var c command
	if err := decodeCommand(data, &c); err != nil {
		return nil, invalidStatus(err)
	}
	if err := s.limits.checkCommand(&c); err != nil {
		return nil, invalidStatus(err)
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	res, err := s.node.Propose(ctx, data)
	if err != nil {
		return nil, writeStatus(err)
	}
	if err, ok := res.(error); ok {
		return nil, storeStatus(err)
	}
	return res, nil
}

// barrier waits until the local store reflects every write committed
// before it was called (linearizable read).
func (s *Service) barrier(ctx context.Context) error {
	if err := s.read(ctx); err != nil {
		return readStatus(err)
	}
	return nil
}

// read runs the node's Read barrier under the request timeout; a success
// is also this process's catch-up for serializable reads.
func (s *Service) read(ctx context.Context) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	if err := s.node.Read(ctx); err != nil {
		return err
	}
	s.caughtUp.Store(true)
	return nil
}

// readGate runs what a read must wait for before it reads the local
// store: the linearizable barrier, or for a serializable read the
// once-per-process catch-up of serializableGate.
func (s *Service) readGate(ctx context.Context, serializable bool) error {
	if serializable {
		return s.serializableGate(ctx)
	}
	return s.barrier(ctx)
}

// serializableGate keeps serializable reads monotonic per member across
// restarts and power loss. A power cut can take a member's unsynced commit
// index and its state machine's unsynced writes back to the last fsync, so
// a restarted member can hold an older state than one it served before
// the cut. Its first serializable read therefore waits for one
// linearizable barrier (ReadIndex): the read index is the commit index of
// a leader that has committed an entry of its own term, so it covers every
// entry ever committed — in particular everything this member had applied
// and served — and the barrier returns only once this member has applied
// up to it. After one success the member's state can never again be older
// than anything it served, so later serializable reads skip the barrier
// (they stay local and fast, and keep working through a partition). A
// member that cannot reach a leader after a restart — isolated, or in a
// cluster without a quorum — refuses serializable reads with Unavailable
// until it can, rather than serve a state that may have gone back in
// time; clients retry another member.
func (s *Service) serializableGate(ctx context.Context) error {
	if s.caughtUp.Load() {
		return nil
	}
	if err := s.read(ctx); err != nil {
		if errors.Is(err, context.Canceled) {
			return status.Errorf(codes.Canceled, "cancelled waiting to catch up since restart: %v", err)
		}
		return status.Errorf(codes.Unavailable,
			"not caught up since restart: this member serves serializable reads once it has applied what a leader confirms committed (%v); retry another member", err)
	}
	return nil
}

// Put implements kvpb.KVServer.
func (s *Service) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	res, err := s.propose(ctx, req, &kvpb.Command{Op: &kvpb.Command_Put{Put: req}})
	if err != nil {
		return nil, err
	}
	resp, ok := res.(*kvpb.PutResponse)
	if !ok {
		return nil, unexpectedResult(res)
	}
	resp.Header = s.header()
	return resp, nil
}

// Delete implements kvpb.KVServer.
func (s *Service) Delete(ctx context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	res, err := s.propose(ctx, req, &kvpb.Command{Op: &kvpb.Command_Delete{Delete: req}})
	if err != nil {
		return nil, err
	}
	resp, ok := res.(*kvpb.DeleteResponse)
	if !ok {
		return nil, unexpectedResult(res)
	}
	resp.Header = s.header()
	return resp, nil
}

// Txn implements kvpb.KVServer.
func (s *Service) Txn(ctx context.Context, req *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	res, err := s.propose(ctx, req, &kvpb.Command{Op: &kvpb.Command_Txn{Txn: req}})
	if err != nil {
		return nil, err
	}
	resp, ok := res.(*kvpb.TxnResponse)
	if !ok {
		return nil, unexpectedResult(res)
	}
	resp.Header = s.header()
	return resp, nil
}

// Get implements kvpb.KVServer.
func (s *Service) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	if len(req.Key) == 0 {
		return nil, invalidStatus(errors.New("key is empty"))
	}
	if err := s.limits.checkKey("key", req.Key); err != nil {
		return nil, invalidStatus(err)
	}
	if err := s.readGate(ctx, req.Serializable); err != nil {
		return nil, err
	}
	kv, err := s.store.get(req.Key)
	if err != nil {
		return nil, storeStatus(err)
	}
	return &kvpb.GetResponse{Header: s.header(), Found: kv != nil, Kv: kv}, nil
}

// Range implements kvpb.KVServer.
func (s *Service) Range(ctx context.Context, req *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	op := rangeOp{
		key: req.Key, rangeEnd: req.RangeEnd, prefix: req.Prefix, limit: req.Limit,
		keysOnly: req.KeysOnly, countOnly: req.CountOnly,
	}
	if err := op.validate(); err != nil {
		return nil, invalidStatus(err)
	}
	if err := s.limits.checkSpan(op.key, op.rangeEnd); err != nil {
		return nil, invalidStatus(err)
	}
	if err := s.readGate(ctx, req.Serializable); err != nil {
		return nil, err
	}
	resp, err := s.store.rangeLocal(&op, s.limits.MaxResponseBytes)
	if err != nil {
		return nil, storeStatus(err)
	}
	resp.Header = s.header()
	return resp, nil
}

// Status implements kvpb.KVServer. It never waits for the Raft loop; with
// hash set it reads the whole keyspace (see Store.Hash).
func (s *Service) Status(ctx context.Context, req *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	st := s.node.Status()
	resp := &kvpb.StatusResponse{
		MemberId:     s.node.ID(),
		Leader:       st.Leader,
		Term:         st.Term,
		Role:         st.Role.String(),
		CommitIndex:  st.Commit,
		AppliedIndex: s.store.AppliedIndex(),
		DiskStalled:  st.DiskStalled,
		// A write in flight is reported stalled only past the timeout.
		DiskWriteBlockedMs: uint64(st.DiskWriteBlocked.Milliseconds()),
	}
	size, err := s.store.DiskSize()
	if err != nil {
		return nil, storeStatus(err)
	}
	resp.DbSizeBytes = size
	if req.Hash {
		ctx, cancel := s.withTimeout(ctx)
		defer cancel()
		h, err := s.store.Hash(ctx)
		if err != nil {
			return nil, storeStatus(err)
		}
		resp.Hash, resp.HashIndex, resp.HashKeys = h.Hash, h.Index, h.Keys
	}
	resp.Header = s.header()
	return resp, nil
}
