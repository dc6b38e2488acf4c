package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// snapshotData is a deterministic pseudo-random stream of n bytes that is
// generated as it is read, never held in memory.
func snapshotData(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func TestSnapshotStreamBoundedMemory(t *testing.T) {
	const size = 20 << 20
	chunk, _ := strconv.Atoi(os.Getenv("CHUNK"))
	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = chunk })
	a, b := nodes[0], nodes[1]

	type result struct {
		msg  core.Message
		sum  []byte
		n    int64
		peak uint64
		err  error
	}
	got := make(chan result, 1)
	var baseline uint64
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		var r result
		r.msg = msg
		sampled := int64(0)
		for {
			n, err := data.Read(buf)
			h.Write(buf[:n])
			r.n += int64(n)
			if r.n-sampled >= 2<<20 {
				sampled = r.n
				r.peak = max(r.peak, heapInUse())
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = err
				got <- r
				return err
			}
		}
		r.sum = h.Sum(nil)
		got <- r
		return nil
	}

	sent := sha256.New()
	msg := snapMsg(1, 2)
	baseline = heapInUse()
	must(t, a.tr.SendSnapshot(context.Background(), msg, io.TeeReader(snapshotData(1, size), sent)))
	r := <-got
	must(t, r.err)
	expectf(t, r.n == size, "received %d bytes, want %d", r.n, size)
	expectf(t, bytes.Equal(r.sum, sent.Sum(nil)), "received data differs from sent data")
	equalMessages(t, []core.Message{r.msg}, []core.Message{msg})

	growth := int64(r.peak) - int64(baseline)
	t.Logf("heap in use: baseline %.1f MiB, peak %.1f MiB during transfer (growth %.1f MiB for a %d MiB snapshot)",
		float64(baseline)/(1<<20), float64(r.peak)/(1<<20), float64(growth)/(1<<20), size>>20)
	expectf(t, growth < 8<<20, "heap grew by %d bytes during a %d-byte snapshot", growth, size)

	sa, sb := a.tr.Stats(), b.tr.Stats()
	expectf(t, sa.SnapshotBytesSent == size && sa.SnapshotsSent == 1, "sender stats %+v", sa)
	expectf(t, sb.SnapshotBytesReceived == size && sb.SnapshotsReceived == 1, "receiver stats %+v", sb)
}

func TestSnapshotChecksumMismatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(crc uint32, total uint64) (uint32, uint64)
	}{
		{"crc", func(crc uint32, total uint64) (uint32, uint64) { return crc ^ 1, total }},
		{"length", func(crc uint32, total uint64) (uint32, uint64) { return crc, total + 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
			a, b := nodes[0], nodes[1]
			a.tr.hooks.snapshotTrailer = tc.corrupt
			handlerErr := make(chan error, 1)
			b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
				_, err := io.Copy(io.Discard, data)
				handlerErr <- err
				return err
			}
			err := a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), snapshotData(2, 1<<20))
			expectf(t, errors.Is(err, ErrSnapshotChecksum), "sender: %v", err)
			herr := <-handlerErr
			expectf(t, errors.Is(herr, ErrSnapshotChecksum), "handler read: %v", herr)
			expectf(t, b.tr.Stats().SnapshotsReceived == 0, "counted as received")
		})
	}
}

func TestSnapshotHandlerError(t *testing.T) {
	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
	a, b := nodes[0], nodes[1]
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		_, _ = io.CopyN(io.Discard, data, 100<<10)
		return errors.New("no space left on device")
	}
	err := a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), snapshotData(3, 8<<20))
	expectf(t, errors.Is(err, ErrSnapshotRejected), "err %v", err)
	expectf(t, strings.Contains(err.Error(), "no space left on device"), "err %v lacks the handler's message", err)

	// A handler that returns nil without reading to EOF has not
	// installed a verified snapshot: the sender must not see success.
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		_, _ = io.CopyN(io.Discard, data, 100<<10)
		return nil
	}
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), snapshotData(3, 8<<20))
	expectf(t, err != nil && strings.Contains(err.Error(), "before reading the whole snapshot"), "err %v", err)
}

// failingReader returns its data, then (once gate is closed) err.
type failingReader struct {
	r    io.Reader
	gate chan struct{}
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		<-f.gate
		return n, f.err
	}
	return n, err
}

func TestSnapshotSenderReadError(t *testing.T) {
	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
	a, b := nodes[0], nodes[1]
	reading := make(chan struct{})
	handlerErr := make(chan error, 1)
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		buf := make([]byte, 1)
		_, err := io.ReadFull(data, buf)
		close(reading) // the sender fails only once we are reading
		if err == nil {
			_, err = io.Copy(io.Discard, data)
		}
		handlerErr <- err
		return err
	}
	diskErr := errors.New("snapshot file vanished")
	err := a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), &failingReader{snapshotData(4, 300<<10), reading, diskErr})
	expectf(t, errors.Is(err, diskErr), "sender: %v", err)
	herr := <-handlerErr
	expectf(t, herr != nil, "handler read to EOF a snapshot the sender abandoned")
}

func TestSnapshotCancelledContext(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	b.rec.snapshot = func(hctx context.Context, msg core.Message, data io.Reader) error {
		close(started)
		_, err := io.Copy(io.Discard, data)
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- a.tr.SendSnapshot(ctx, snapMsg(1, 2), endless{}) }()
	<-started
	cancel()
	err := <-errc
	expectf(t, errors.Is(err, context.Canceled), "err %v", err)
}

func TestSnapshotRefused(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a := nodes[0]
	err := a.tr.SendSnapshot(context.Background(), snapMsg(1, 9), strings.NewReader("x"))
	expectf(t, errors.Is(err, ErrUnknownPeer), "unknown peer: %v", err)
	err = a.tr.SendSnapshot(context.Background(), heartbeat(1, 2, 1), strings.NewReader("x"))
	expectf(t, errors.Is(err, core.ErrInvalidMessage), "not a MsgSnap: %v", err)

	// A receiver in another cluster refuses the header.
	lis := listen(t)
	other := testConfig(3, lis, []driver.Peer{{ID: 1, Addr: a.tr.Addr().String()}}, newRecorder())
	other.ClusterID = testCluster + 1
	startNode(t, other)
	must(t, a.tr.AddPeer(3, lis.Addr().String()))
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 3), strings.NewReader("x"))
	expectf(t, status.Code(errors.Unwrap(err)) == codes.FailedPrecondition && strings.Contains(err.Error(), "cluster"), "err %v", err)

	// After Close, SendSnapshot fails at once.
	must(t, a.tr.Close())
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), strings.NewReader("x"))
	expectf(t, errors.Is(err, ErrClosed), "after close: %v", err)
}

// TestSnapshotFromStockClient drives the Snapshot RPC with the generated
// client and protobuf codec, as another implementation would, including
// protocol violations.
func TestSnapshotFromStockClient(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	b := nodes[1]
	got := make(chan []byte, 1)
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		d, err := io.ReadAll(data)
		if err == nil {
			got <- d
		}
		return err
	}
	conn, err := grpc.NewClient(b.tr.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	defer conn.Close()
	msg := snapMsg(1, 2)
	header := &pb.SnapshotChunk{Frame: &pb.SnapshotChunk_Header{Header: &pb.SnapshotHeader{
		ClusterId: testCluster, From: 1, To: 2, Message: toPBMessage(&msg)}}}
	data := func(s string) *pb.SnapshotChunk {
		return &pb.SnapshotChunk{Frame: &pb.SnapshotChunk_Data{Data: []byte(s)}}
	}
	trailer := func(crc uint32, n uint64) *pb.SnapshotChunk {
		return &pb.SnapshotChunk{Frame: &pb.SnapshotChunk_Trailer{Trailer: &pb.SnapshotTrailer{Crc32C: crc, TotalBytes: n}}}
	}
	crc := crc32.Checksum([]byte("hello, world"), castagnoli)
	run := func(frames ...*pb.SnapshotChunk) error {
		st, err := pb.NewRaftClient(conn).Snapshot(context.Background())
		must(t, err)
		for _, f := range frames {
			if err := st.Send(f); err != nil {
				break
			}
		}
		_, err = st.CloseAndRecv()
		return err
	}

	must(t, run(header, data("hello, "), data("world"), trailer(crc, 12)))
	expectf(t, string(<-got) == "hello, world", "data mismatch")

	for _, tc := range []struct {
		name   string
		frames []*pb.SnapshotChunk
		code   codes.Code
	}{
		{"bad crc", []*pb.SnapshotChunk{header, data("hello, world"), trailer(crc+1, 12)}, codes.DataLoss},
		{"no header", []*pb.SnapshotChunk{data("x"), trailer(0, 1)}, codes.InvalidArgument},
		{"two headers", []*pb.SnapshotChunk{header, header}, codes.InvalidArgument},
		{"no trailer", []*pb.SnapshotChunk{header, data("x")}, codes.InvalidArgument},
		{"empty frame", []*pb.SnapshotChunk{header, {}}, codes.InvalidArgument},
		{"not a MsgSnap", []*pb.SnapshotChunk{{Frame: &pb.SnapshotChunk_Header{Header: &pb.SnapshotHeader{
			ClusterId: testCluster, From: 1, To: 2, Message: &pb.Message{Type: pb.MessageType_MSG_APP, From: 1, To: 2}}}}},
			codes.InvalidArgument},
		{"message from another node", []*pb.SnapshotChunk{{Frame: &pb.SnapshotChunk_Header{Header: &pb.SnapshotHeader{
			ClusterId: testCluster, From: 1, To: 2, Message: toPBMessage(&core.Message{Type: core.MsgSnap, From: 3, To: 2, Snapshot: msg.Snapshot})}}}},
			codes.PermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.frames...)
			expectf(t, status.Code(err) == tc.code, "status %v, want %v", err, tc.code)
		})
	}
}
