package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// Bad input: garbage, truncated frames, oversized and malformed requests
// sent to one node's peer and client ports while the workload runs. The
// node must refuse each (never crash, never apply anything), keep serving,
// and count what it refused in its metrics.

// badInputResult sums what the attacks did.
type badInputResult struct {
	peerSent, clientSent int
	refused              int      // answered with an error status or a dropped connection
	accepted             []string // attacks a node took as valid requests (a bug)
	countedRejects       float64  // rafty_transport_batches_rejected_total increase
	countedInvalidMsgs   float64  // rafty_transport_messages_invalid_total increase
	countedInvalidArgs   float64  // rafty_kv_requests_total{code="InvalidArgument"} increase
	uncounted            []string // refusals no node metric shows
	err                  error
}

func (r *badInputResult) add(o badInputResult) {
	r.peerSent += o.peerSent
	r.clientSent += o.clientSent
	r.refused += o.refused
	r.accepted = append(r.accepted, o.accepted...)
	r.countedRejects += o.countedRejects
	r.countedInvalidMsgs += o.countedInvalidMsgs
	r.countedInvalidArgs += o.countedInvalidArgs
	for _, u := range o.uncounted {
		if !containsString(r.uncounted, u) {
			r.uncounted = append(r.uncounted, u)
		}
	}
	r.err = errors.Join(r.err, o.err)
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// rawCodec sends and receives raw bytes as the message (named "proto" so
// the server decodes them with its protobuf codec).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// clusterIDOf is kvnode's hash of a cluster name (cmd/kvnode/flags.go).
func clusterIDOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// rawTCP writes b to addr and reads until the server closes the
// connection or a second passes.
func rawTCP(addr string, b []byte) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write(b); err != nil {
		return nil // refused mid-write: fine
	}
	_, _ = io.Copy(io.Discard, conn)
	return nil
}

const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// metricSum scrapes node i's /metrics and sums the samples of name whose
// labels contain every given label="value" pair.
func metricSum(c cluster, i int, name string, labels ...string) (float64, error) {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + c.MetricsAddr(i) + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || len(line) <= len(name) || (line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// badInput runs every attack against node i once, with randomness from
// seed, then checks that the node still serves and counted what it
// refused.
func badInput(c cluster, i int, seed uint64) badInputResult {
	rng := rand.New(rand.NewPCG(seed, 0xbad))
	var r badInputResult
	type counters struct{ rejects, invalidMsgs, invalidArgs float64 }
	scrape := func() (counters, error) {
		var k counters
		var err1, err2, err3 error
		k.rejects, err1 = metricSum(c, i, "rafty_transport_batches_rejected_total")
		k.invalidMsgs, err2 = metricSum(c, i, "rafty_transport_messages_invalid_total")
		k.invalidArgs, err3 = metricSum(c, i, "rafty_kv_requests_total", `code="InvalidArgument"`)
		return k, errors.Join(err1, err2, err3)
	}
	before, err := scrape()
	if err != nil {
		r.err = fmt.Errorf("bad input: scraping node %d's metrics: %w", i+1, err)
		return r
	}

	wantRejects := peerAttacks(c, i, rng, &r)
	const wantInvalidMsgs = 1 // one batch of invalid messages
	wantInvalidArgs := clientAttacks(c, i, rng, &r)

	// The node must keep serving: ready, and a write and a linearizable
	// read through it succeed.
	if err := waitReady(c, i, 15*time.Second); err != nil {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d stopped serving: %w", i+1, err))
		return r
	}
	if err := writeAndRead(c, i, fmt.Sprintf("badinput-check/%d", seed)); err != nil {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d does not serve after the attacks: %w", i+1, err))
	}
	after, err := scrape()
	if err != nil {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: scraping node %d's metrics: %w", i+1, err))
		return r
	}
	r.countedRejects = after.rejects - before.rejects
	r.countedInvalidMsgs = after.invalidMsgs - before.invalidMsgs
	r.countedInvalidArgs = after.invalidArgs - before.invalidArgs
	if r.countedRejects < float64(wantRejects) {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d counted %v refused peer streams, want at least %d", i+1, r.countedRejects, wantRejects))
	}
	if r.countedInvalidMsgs < float64(wantInvalidMsgs) {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d counted %v invalid peer messages, want at least %d", i+1, r.countedInvalidMsgs, wantInvalidMsgs))
	}
	if r.countedInvalidArgs < float64(wantInvalidArgs) {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d counted %v InvalidArgument requests, want at least %d", i+1, r.countedInvalidArgs, wantInvalidArgs))
	}
	if len(r.accepted) > 0 {
		r.err = errors.Join(r.err, fmt.Errorf("bad input: node %d accepted invalid input: %s", i+1, strings.Join(r.accepted, "; ")))
	}
	return r
}

// peerAttacks attacks node i's peer port and returns how many refused
// streams its metrics must count.
func peerAttacks(c cluster, i int, rng *rand.Rand, r *badInputResult) int {
	addr := c.PeerAddr(i)
	self := uint64(i + 1)
	other := uint64((i+1)%c.Size() + 1) // a real peer of node i
	cid := clusterIDOf(c.ClusterName())

	// Garbage below gRPC: the connection is dropped before any Rafty
	// code sees it, so nothing can count it there.
	for _, b := range [][]byte{randBytes(rng, 1+rng.IntN(4096)), append([]byte(http2Preface), randBytes(rng, 1+rng.IntN(4096))...)} {
		r.peerSent++
		if err := rawTCP(addr, b); err == nil {
			r.refused++
		}
	}
	r.uncounted = append(r.uncounted, "raw garbage on the peer port (gRPC drops the connection before the transport sees it)")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		r.err = errors.Join(r.err, err)
		return 0
	}
	defer conn.Close()

	// A batch cut inside its messages field (after the field's tag and
	// length, before its end) cannot decode; cut anywhere else it could
	// be a valid, shorter batch.
	header := mustMarshal(&pb.Batch{ClusterId: cid, From: other, To: self})
	validBytes := mustMarshal(&pb.Batch{ClusterId: cid, From: other, To: self, Messages: []*pb.Message{
		{Type: pb.MessageType_MSG_HEARTBEAT, From: other, To: self, Term: 1, Commit: 1 << 40},
	}})
	cut := len(header) + 2 + rng.IntN(len(validBytes)-len(header)-2)
	frames := []struct {
		what   string
		b      []byte
		reject bool // the stream must end with a refusal
	}{
		{"random bytes as a batch", randBytes(rng, 1+rng.IntN(512)), true},
		{"a truncated batch", validBytes[:cut], true},
		{"a batch of another cluster", mustMarshal(&pb.Batch{ClusterId: cid + 1, From: other, To: self}), true},
		{"a batch from node 0", mustMarshal(&pb.Batch{ClusterId: cid, From: 0, To: self}), true},
		{"a batch claiming to come from the receiver", mustMarshal(&pb.Batch{ClusterId: cid, From: self, To: self}), true},
		// Since membership changes (issue 14) a node takes batches from
		// senders it does not know (transport AcceptUnknownSenders: a
		// joiner knows nobody, a lagging member may hear from a member it
		// has not yet added); the core takes only leader messages from
		// them and the driver refuses removed members. An empty batch
		// from a stranger is therefore accepted and changes nothing.
		{"an empty batch from an unknown sender", mustMarshal(&pb.Batch{ClusterId: cid, From: 99, To: self}), false},
		{"a batch for another node", mustMarshal(&pb.Batch{ClusterId: cid, From: other, To: 77}), true},
		// A well-formed batch whose messages are all invalid: the
		// messages are discarded and counted, the stream goes on.
		{"invalid messages in a valid batch", mustMarshal(&pb.Batch{ClusterId: cid, From: other, To: self, Messages: []*pb.Message{
			{Type: pb.MessageType(99), From: other, To: self, Term: 1},
			{Type: pb.MessageType_MESSAGE_TYPE_INVALID, From: other, To: self},
			{Type: pb.MessageType_MSG_APP, From: other, To: self, Term: 1, Entries: []*pb.Entry{{Index: 0, Term: 1}}},
		}}), false},
	}
	rejects := 0
	for _, f := range frames {
		r.peerSent++
		err := sendPeerStream(conn, "/rafty.transport.v1.Raft/Stream", f.b)
		switch {
		case f.reject && err == nil:
			r.accepted = append(r.accepted, "peer port took "+f.what)
		case f.reject:
			r.refused++
			rejects++
		}
	}
	// Snapshot streams: garbage, and a header from another cluster.
	for _, f := range [][]byte{
		randBytes(rng, 1+rng.IntN(512)),
		mustMarshal(&pb.SnapshotChunk{Frame: &pb.SnapshotChunk_Header{Header: &pb.SnapshotHeader{ClusterId: cid + 1, From: other, To: self}}}),
	} {
		r.peerSent++
		if err := sendPeerStream(conn, "/rafty.transport.v1.Raft/Snapshot", f); err == nil {
			r.accepted = append(r.accepted, "peer port took a bad snapshot stream")
		} else {
			r.refused++
			rejects++
		}
	}
	// Oversized: above the transport's message limit (4 MiB); gRPC
	// refuses it (ResourceExhausted) before the transport reads it.
	r.peerSent++
	big := make([]byte, 5<<20)
	if err := sendPeerStream(conn, "/rafty.transport.v1.Raft/Stream", big); err == nil {
		r.accepted = append(r.accepted, "peer port took a 5 MiB frame")
	} else {
		r.refused++
	}
	r.uncounted = append(r.uncounted, "peer frames over the gRPC message limit (refused by gRPC, ResourceExhausted)")
	return rejects
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

// sendPeerStream opens a client stream, sends frame, closes the sending
// side and returns the stream's final status.
func sendPeerStream(conn *grpc.ClientConn, method string, frame []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, method,
		grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20))
	if err != nil {
		return err
	}
	if err := s.SendMsg(&frame); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_ = s.CloseSend()
	var resp []byte
	return s.RecvMsg(&resp)
}

// clientAttacks attacks node i's client port and returns how many
// InvalidArgument answers its metrics must count.
func clientAttacks(c cluster, i int, rng *rand.Rand, r *badInputResult) int {
	addr := c.ClientAddr(i)
	for _, b := range [][]byte{randBytes(rng, 1+rng.IntN(4096)), append([]byte(http2Preface), randBytes(rng, 1+rng.IntN(4096))...)} {
		r.clientSent++
		if err := rawTCP(addr, b); err == nil {
			r.refused++
		}
	}
	r.uncounted = append(r.uncounted, "raw garbage on the client port (dropped by gRPC)")

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		r.err = errors.Join(r.err, err)
		return 0
	}
	defer conn.Close()
	call := func(method string, req []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var resp []byte
		return conn.Invoke(ctx, "/rafty.kv.v1.KV/"+method, &req, &resp, grpc.ForceCodec(rawCodec{}))
	}

	// Undecodable protobuf: gRPC's codec fails before the service (and
	// its metrics interceptor) runs. Writes get encodings that cannot
	// decode whatever the bytes: a length running past the end, wire type
	// 7, a truncated varint.
	undecodable := [][]byte{{0x0a, 0x05, 'a'}, {0x0f}, {0x10, 0xff, 0xff}}
	for _, m := range []string{"Put", "Txn", "Delete"} {
		for _, b := range undecodable {
			r.clientSent++
			if err := call(m, b); err == nil {
				r.accepted = append(r.accepted, fmt.Sprintf("client port took undecodable %s %x", m, b))
			} else {
				r.refused++
			}
		}
	}
	// Random bytes only to read-only methods (random bytes may decode into
	// a valid request; a valid write could change data).
	for _, m := range []string{"Get", "Range", "Status"} {
		r.clientSent++
		if err := call(m, randBytes(rng, 1+rng.IntN(256))); err != nil {
			r.refused++
			if st := status.Code(err); st == codes.Unknown || st == codes.DataLoss {
				r.accepted = append(r.accepted, fmt.Sprintf("random %s got %v", m, err))
			}
		}
	}
	r.uncounted = append(r.uncounted, "undecodable client requests (refused by gRPC's codec before the service's metrics)")

	// Requests that decode but break a rule or a limit: InvalidArgument,
	// counted. Every write here is invalid, and confined to a key space
	// the workload does not use in case one were wrongly accepted.
	key := func(s string) []byte { return []byte("zz-bad/" + s) }
	manyCmp := make([]*kvpb.Compare, 129)
	for k := range manyCmp {
		manyCmp[k] = &kvpb.Compare{Key: key("c"), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_EQUAL}
	}
	invalid := []struct {
		method string
		req    proto.Message
	}{
		{"Put", &kvpb.PutRequest{Value: []byte("no key")}},
		{"Put", &kvpb.PutRequest{Key: key(strings.Repeat("k", 4<<10)), Value: []byte("key too long")}},
		{"Put", &kvpb.PutRequest{Key: key("big"), Value: make([]byte, 1<<20+1)}},
		{"Get", &kvpb.GetRequest{}},
		{"Get", &kvpb.GetRequest{Key: key(strings.Repeat("k", 4<<10))}},
		{"Range", &kvpb.RangeRequest{Key: key("b"), RangeEnd: key("a")}},
		{"Range", &kvpb.RangeRequest{Key: key("a"), Limit: -1}},
		{"Range", &kvpb.RangeRequest{Key: key("a"), RangeEnd: key("b"), Prefix: true}},
		{"Delete", &kvpb.DeleteRequest{Key: key("b"), RangeEnd: key("a")}},
		{"Delete", &kvpb.DeleteRequest{Key: key(""), RangeEnd: key("z"), Prefix: true}},
		{"Txn", &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: key("a")}}}},
		{"Txn", &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: key("a"), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_LESS}}}},
		{"Txn", &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: key("a"), Target: kvpb.Compare_VALUE, Result: kvpb.Compare_Result(99)}}}},
		{"Txn", &kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: key("a"), Target: kvpb.Compare_Target(42)}}}},
		{"Txn", &kvpb.TxnRequest{Compare: manyCmp}},
		{"Txn", &kvpb.TxnRequest{Success: []*kvpb.RequestOp{{}}}},
		{"Txn", &kvpb.TxnRequest{Success: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{}}}}}},
		{"Txn", &kvpb.TxnRequest{Failure: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Range{Range: &kvpb.RangeRequest{Key: key("a"), Limit: -5}}}}}},
	}
	want := 0
	for _, a := range invalid {
		r.clientSent++
		b := mustMarshal(a.req)
		err := call(a.method, b)
		switch status.Code(err) {
		case codes.InvalidArgument:
			r.refused++
			want++
		case codes.OK:
			r.accepted = append(r.accepted, fmt.Sprintf("client port took an invalid %s (%d bytes)", a.method, len(b)))
		default:
			// Refused, but not as the contract says: InvalidArgument is
			// the answer for a request that breaks a rule or a limit.
			r.refused++
			r.accepted = append(r.accepted, fmt.Sprintf("invalid %s answered %v, want InvalidArgument", a.method, err))
		}
	}
	// Larger than gRPC's receive limit: ResourceExhausted from gRPC.
	r.clientSent++
	if err := call("Put", mustMarshal(&kvpb.PutRequest{Key: key("huge"), Value: make([]byte, 5<<20)})); status.Code(err) == codes.OK {
		r.accepted = append(r.accepted, "client port took a 5 MiB Put")
	} else {
		r.refused++
	}
	r.uncounted = append(r.uncounted, "client requests over gRPC's receive limit (ResourceExhausted from gRPC)")
	return want
}

// writeAndRead writes key through node i and reads it back linearizably
// there, retrying for up to 15 s.
func writeAndRead(c cluster, i int, key string) error {
	conn, err := grpc.NewClient(c.ClientAddr(i), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := kvpb.NewKVClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: []byte("ok")})
		if err == nil {
			var resp *kvpb.GetResponse
			resp, err = kv.Get(ctx, &kvpb.GetRequest{Key: []byte(key)})
			if err == nil && (!resp.GetFound() || string(resp.GetKv().GetValue()) != "ok") {
				err = fmt.Errorf("read back %v %q", resp.GetFound(), resp.GetKv().GetValue())
			}
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return last
}
