package transport

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// wireMessage is an outgoing frame that encodes itself (outBatch,
// outChunk). Its wire format is protobuf, so the codec below presents
// itself to gRPC as "proto" and stock protobuf peers interoperate.
type wireMessage interface {
	wireSize() int
	appendWire(b []byte) []byte
}

// pooledMessage is a wireMessage that brings its own buffer pool. Snapshot
// chunks do: all but the last have the same size, just above a power of
// two, which gRPC's default pool would round up to its next tier (up to
// four times the size).
type pooledMessage interface {
	bufferPool() mem.BufferPool
}

// rawFrame receives an incoming frame undecoded, so that decoding (and
// its errors) happens in the handler, where it can be counted and turned
// into a precise status, rather than in gRPC, which would report any
// failure as Internal. With reuse set the frame's previous buffer is
// overwritten (snapshot chunks, consumed before the next Recv); otherwise
// a fresh buffer is allocated (batches, whose entry data the handler may
// keep).
type rawFrame struct {
	b     []byte
	reuse bool
}

// codec encodes wireMessage and decodes rawFrame itself and hands every
// other value (the generated response messages) to gRPC's proto codec.
type codec struct {
	fallback encoding.CodecV2
}

func newCodec() codec {
	return codec{fallback: encoding.GetCodecV2("proto")}
}

// Name is "proto": the bytes are protobuf, whoever produced them.
func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	w, ok := v.(wireMessage)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := w.wireSize()
	if mem.IsBelowBufferPoolingThreshold(size) {
		b := w.appendWire(make([]byte, 0, size))
		if len(b) != size {
			return nil, fmt.Errorf("transport: encoded %d bytes, computed %d", len(b), size)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	// Large frames use a buffer pool; gRPC frees the buffer (and so
	// returns it to the pool) once it is written to the connection.
	pool := mem.DefaultBufferPool()
	if pm, ok := v.(pooledMessage); ok && pm.bufferPool() != nil {
		pool = pm.bufferPool()
	}
	buf := pool.Get(size)
	b := w.appendWire((*buf)[:0])
	if len(b) != size {
		pool.Put(buf)
		return nil, fmt.Errorf("transport: encoded %d bytes, computed %d", len(b), size)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*rawFrame)
	if !ok {
		switch v.(type) {
		case *pb.ProbeRequest, *pb.JoinRequest:
			// The Cluster service is open to nodes that are not members
			// yet: bound what one request can make the server decode,
			// far below MaxMessageBytes.
			if n := data.Len(); n > MaxClusterRequestBytes {
				return status.Errorf(codes.ResourceExhausted, "transport: a Cluster request of %d bytes, at most %d", n, MaxClusterRequestBytes)
			}
		}
		return c.fallback.Unmarshal(data, v)
	}
	n := data.Len()
	if !r.reuse || cap(r.b) < n {
		r.b = make([]byte, n)
	}
	r.b = r.b[:n]
	data.CopyTo(r.b)
	return nil
}
