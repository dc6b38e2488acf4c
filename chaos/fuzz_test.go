package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
	"github.com/rafty-db/rafty/transport"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// Fuzz targets for what a node reads from the network: the client gRPC
// request handlers (FuzzKVService, through a real gRPC server in front of
// a one-node cluster) and the peer message stream (FuzzPeerStream, through
// a real transport server). The seed corpora (f.Add below and
// testdata/fuzz) run with every `go test`; `go test -fuzz=FuzzKVService
// ./chaos/` explores further. The transport's and the state machine's
// decoders have their own targets (transport.FuzzDecodeBatch,
// FuzzDecodeSnapshotFrame, kv.FuzzDecodeCommand).

// kvMethods are the client RPCs, indexed by the fuzz input's first byte.
var kvMethods = []string{"Put", "Get", "Range", "Delete", "Txn", "Status"}

// inProcess is a one-node cluster serving the client API over an
// in-memory connection.
type inProcess struct {
	conn *grpc.ClientConn
	kv   kvpb.KVClient
}

// startInProcess starts a one-node kvnode (WAL, Pebble, driver and client
// service as cmd/kvnode wires them, ticking every 10 ms) in a temporary
// directory, stopped and removed when tb ends.
func startInProcess(tb testing.TB) *inProcess {
	tb.Helper()
	dir := tb.TempDir()
	wal, err := disk.Open(filepath.Join(dir, "raft"), disk.DefaultOptions())
	if err != nil {
		tb.Fatal(err)
	}
	store, err := kv.OpenStore(filepath.Join(dir, "kv"), kv.Options{})
	if err != nil {
		wal.Close()
		tb.Fatal(err)
	}
	limits := kv.DefaultLimits()
	node, err := driver.Start(context.Background(), driver.Config{
		ID: 1, Peers: []driver.Peer{{ID: 1}}, Storage: wal, StateMachine: store,
		NewTransport:     drivertest.NewNetwork().NewTransport(1),
		TickInterval:     10 * time.Millisecond,
		MaxProposalBytes: limits.MaxProposalBytes(),
	})
	if err != nil {
		store.Close()
		wal.Close()
		tb.Fatal(err)
	}
	svc, err := kv.NewService(store, node, 7, limits)
	if err != nil {
		_ = node.Stop()
		store.Close()
		tb.Fatal(err)
	}
	gs := grpc.NewServer(limits.ServerOptions()...)
	svc.Register(gs)
	lis := bufconn.Listen(1 << 20)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///kvnode",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20), grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-served
		_ = node.Stop()
		store.Close()
	})
	p := &inProcess{conn: conn, kv: kvpb.NewKVClient(conn)}
	// Wait for the node to elect itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.kv.Put(ctx, &kvpb.PutRequest{Key: []byte("ready"), Value: []byte("1")})
		cancel()
		if err == nil {
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the one-node cluster never accepted a write: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// call sends raw request bytes to a method.
func (p *inProcess) call(method string, req []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp []byte
	return p.conn.Invoke(ctx, "/rafty.kv.v1.KV/"+method, &req, &resp, grpc.ForceCodec(rawCodec{}))
}

// kvSeeds are the seed corpus of FuzzKVService besides testdata/fuzz:
// one valid and several broken requests per method.
type kvSeed struct {
	method uint8
	req    []byte
}

func kvSeeds() []kvSeed {
	m := func(i uint8, msg proto.Message) kvSeed { return kvSeed{i, mustMarshal(msg)} }
	raw := func(i uint8, b []byte) kvSeed { return kvSeed{i, b} }
	k := []byte("k")
	return []kvSeed{
		m(0, &kvpb.PutRequest{Key: k, Value: []byte("v"), PrevKv: true}),
		m(0, &kvpb.PutRequest{Value: []byte("no key")}),
		raw(0, []byte{0x0a, 0x05, 'a'}),
		raw(0, []byte{0x0f}),
		m(1, &kvpb.GetRequest{Key: k}),
		m(1, &kvpb.GetRequest{Key: k, Serializable: true}),
		m(1, &kvpb.GetRequest{}),
		m(2, &kvpb.RangeRequest{Key: k, Prefix: true, Limit: 3}),
		m(2, &kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a")}),
		m(2, &kvpb.RangeRequest{Key: k, RangeEnd: []byte{0}, CountOnly: true, KeysOnly: true}),
		m(3, &kvpb.DeleteRequest{Key: k, PrevKvs: true}),
		m(3, &kvpb.DeleteRequest{Key: k, RangeEnd: []byte("z"), Prefix: true}),
		m(4, casRequest("k", "", "v1")),
		m(4, casRequest("k", "v1", "v2")),
		m(4, &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: k, Target: kvpb.Compare_MOD_INDEX, Result: kvpb.Compare_GREATER, ModIndex: 3}},
			Success: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Delete{Delete: &kvpb.DeleteRequest{Key: k, Prefix: true}}}},
			Failure: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Range{Range: &kvpb.RangeRequest{Key: k}}}}}),
		m(4, &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: k, Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_GREATER}}}),
		m(4, &kvpb.TxnRequest{Success: []*kvpb.RequestOp{{}}}),
		m(5, &kvpb.StatusRequest{Hash: true}),
		raw(5, nil),
	}
}

// FuzzKVService sends arbitrary bytes as the request of a client RPC to a
// real one-node server. Whatever the bytes, the server must answer OK, or
// InvalidArgument (a request breaking a rule or a limit), or one of gRPC's
// own refusals of undecodable or oversized messages; never another error
// (Internal from the service is a bug), never crash; and it must still
// serve afterwards.
func FuzzKVService(f *testing.F) {
	for _, s := range kvSeeds() {
		f.Add(s.method, s.req)
	}
	p := startInProcess(f)
	f.Fuzz(func(t *testing.T, method uint8, req []byte) {
		m := kvMethods[int(method)%len(kvMethods)]
		err := p.call(m, req)
		st, _ := status.FromError(err)
		switch st.Code() {
		case codes.OK, codes.InvalidArgument, codes.ResourceExhausted:
		case codes.Internal:
			if !grpcDecodeError(st.Message()) {
				t.Errorf("%s(%x): %v", m, req, err)
			}
		default:
			t.Errorf("%s(%x): %v", m, req, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := p.kv.Put(ctx, &kvpb.PutRequest{Key: []byte("alive"), Value: []byte("yes")}); err != nil {
			t.Fatalf("after %s(%x) the server no longer takes writes: %v", m, req, err)
		}
	})
}

// grpcDecodeError reports gRPC's own Internal status for a message its
// codec could not decode (the service never saw it).
func grpcDecodeError(msg string) bool {
	return strings.HasPrefix(msg, "grpc: failed to unmarshal") || strings.HasPrefix(msg, "grpc: error unmarshalling")
}

// recordingHandler is the driver's side of a transport under fuzzing: it
// checks what the transport delivers.
type recordingHandler struct {
	mu  sync.Mutex
	bad []string
	n   int
}

func (h *recordingHandler) HandleMessages(_ context.Context, msgs []core.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		h.n++
		if m.To != 1 || (m.From != 2 && m.From != 3) {
			h.bad = append(h.bad, fmt.Sprintf("delivered %v from %d to %d", m.Type, m.From, m.To))
		}
	}
	return nil
}

func (h *recordingHandler) HandleSnapshot(_ context.Context, _ core.Message, data io.Reader) error {
	_, err := io.Copy(io.Discard, data)
	if err == nil {
		return errors.New("snapshots are not taken here")
	}
	return err
}

func (h *recordingHandler) ReportUnreachable(uint64) {}

// FuzzPeerStream sends two arbitrary frames on one peer message stream to a
// real transport server (node 1 of cluster 7, peers 2 and 3). It must
// never crash, and may deliver only messages from the stream's sender, a
// configured peer, to node 1; the server must go on serving.
func FuzzPeerStream(f *testing.F) {
	hb := func(from, to uint64) *pb.Message {
		return &pb.Message{Type: pb.MessageType_MSG_HEARTBEAT, From: from, To: to, Term: 3, Commit: 2}
	}
	valid := mustMarshal(&pb.Batch{ClusterId: 7, From: 2, To: 1, Messages: []*pb.Message{hb(2, 1)}})
	app := mustMarshal(&pb.Batch{ClusterId: 7, From: 2, To: 1, Messages: []*pb.Message{{
		Type: pb.MessageType_MSG_APP, From: 2, To: 1, Term: 3, LogTerm: 2, Index: 5, Commit: 5,
		Entries: []*pb.Entry{{Index: 6, Term: 3, Data: []byte("x")}, {Index: 7, Term: 3, Type: pb.EntryType_ENTRY_CONF_CHANGE}},
	}}})
	for _, s := range [][2][]byte{
		{valid, valid},
		{valid, app},
		{app, valid[:len(valid)/2]},
		{mustMarshal(&pb.Batch{ClusterId: 8, From: 2, To: 1}), valid},
		{valid, mustMarshal(&pb.Batch{ClusterId: 7, From: 3, To: 1, Messages: []*pb.Message{hb(3, 1)}})},
		{mustMarshal(&pb.Batch{ClusterId: 7, From: 2, To: 1, Messages: []*pb.Message{hb(3, 1)}}), nil},
		{mustMarshal(&pb.Batch{ClusterId: 7, From: 2, To: 1, Messages: []*pb.Message{{Type: pb.MessageType(99), From: 2, To: 1}}}), valid},
		{mustMarshal(&pb.Batch{ClusterId: 7, From: 1, To: 1}), nil},
		{{0xff, 0xff, 0xff}, nil},
	} {
		f.Add(s[0], s[1])
	}
	h := &recordingHandler{}
	lis := bufconn.Listen(1 << 20)
	tr, err := transport.New(transport.Config{
		ClusterID: 7, NodeID: 1, Listener: lis, Handler: h,
		Peers: []driver.Peer{{ID: 1, Addr: "127.0.0.1:1"}, {ID: 2, Addr: "127.0.0.1:2"}, {ID: 3, Addr: "127.0.0.1:3"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///peer",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		conn.Close()
		_ = tr.Close()
	})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/rafty.transport.v1.Raft/Stream", grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, fr := range [][]byte{a, b} {
			if err := s.SendMsg(&fr); err != nil {
				break // the server ended the stream
			}
		}
		_ = s.CloseSend()
		var resp []byte
		err = s.RecvMsg(&resp)
		switch status.Code(err) {
		case codes.OK, codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied, codes.Aborted, codes.ResourceExhausted:
		case codes.Internal:
			if !grpcDecodeError(status.Convert(err).Message()) {
				t.Errorf("stream of %x, %x ended with %v", a, b, err)
			}
		default:
			t.Errorf("stream of %x, %x ended with %v", a, b, err)
		}
		h.mu.Lock()
		bad := h.bad
		h.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("the transport delivered what it should have refused: %s", strings.Join(bad, "; "))
		}
		// The server still takes a valid batch.
		s2, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/rafty.transport.v1.Raft/Stream", grpc.ForceCodec(rawCodec{}))
		if err != nil {
			t.Fatal(err)
		}
		if err := s2.SendMsg(&valid); err != nil {
			t.Fatalf("sending a valid batch after %x, %x: %v", a, b, err)
		}
		_ = s2.CloseSend()
		if err := s2.RecvMsg(&resp); err != nil && status.Code(err) != codes.Aborted {
			t.Fatalf("a valid batch after %x, %x: %v", a, b, err)
		}
	})
}
