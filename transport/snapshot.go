package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and
// arm64), the checksum disk/ uses for WAL records as well.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SendSnapshot streams a snapshot to msg.To and returns nil only once the
// receiver's HandleSnapshot has returned nil after reading the data in
// full and the checksum has matched. msg must be a MsgSnap with its
// metadata (a zero From is filled in). data is read in
// SnapshotChunkBytes pieces, one at a time, so memory use does not depend
// on the snapshot's size. The transfer uses its own connection, so that a
// large snapshot does not delay heartbeats on the message stream.
//
// Errors: ErrSnapshotRejected (the receiver's handler failed; its message
// follows), ErrSnapshotChecksum, ErrUnknownPeer, ErrClosed, ctx's error,
// a data read error, or the gRPC status of a transport failure.
func (t *GRPC) SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	if msg.From == core.None {
		msg.From = t.cfg.NodeID
	}
	switch {
	case msg.Type != core.MsgSnap || msg.Snapshot == nil:
		return fmt.Errorf("%w: SendSnapshot needs a MsgSnap with snapshot metadata, got %v", core.ErrInvalidMessage, msg)
	case msg.From != t.cfg.NodeID:
		return fmt.Errorf("%w: From is %d, this node is %d", core.ErrInvalidMessage, msg.From, t.cfg.NodeID)
	case len(msg.Entries) > 0:
		return fmt.Errorf("%w: MsgSnap with entries", core.ErrInvalidMessage)
	}
	if t.closedFlg.Load() {
		return ErrClosed
	}
	to := msg.To
	p := t.peer(to)
	if p == nil {
		return fmt.Errorf("%w: node %d", ErrUnknownPeer, to)
	}
	if !t.track() {
		return ErrClosed
	}
	defer t.wg.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()

	header := outChunk{
		kind:    chunkHeader,
		hdr:     batchHeader{clusterID: t.cfg.ClusterID, from: t.cfg.NodeID, to: to},
		msg:     &msg,
		msgSize: messageSize(&msg),
	}
	if n := header.wireSize(); n > t.cfg.MaxMessageBytes {
		return fmt.Errorf("transport: snapshot to node %d: metadata of %d bytes exceeds MaxMessageBytes %d", to, n, t.cfg.MaxMessageBytes)
	}

	conn, err := t.dial(p.addr)
	if err != nil {
		return fmt.Errorf("transport: snapshot to node %d: %w", to, err)
	}
	defer conn.Close()
	st, err := pb.NewRaftClient(conn).Snapshot(ctx)
	if err != nil {
		return t.snapshotSendError(ctx, to, err)
	}
	_ = st.Context() // commit the attempt: no replay buffer of 1 MiB chunks
	if err := st.SendMsg(&header); err != nil {
		return t.snapshotSendError(ctx, to, finalStatus(st, err))
	}

	buf := make([]byte, t.cfg.SnapshotChunkBytes)
	// Frames get buffers of exactly their size from a pool of this
	// transfer's own, dropped with it.
	frame := outChunk{kind: chunkData, pool: mem.NewTieredBufferPool(sizeLenField(len(buf)))}
	var crc uint32
	var total uint64
	for {
		n, rerr := io.ReadFull(data, buf)
		if n > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:n])
			total += uint64(n)
			frame.data = buf[:n]
			// The codec copies the chunk into a pooled buffer, so buf
			// can be refilled as soon as SendMsg returns; SendMsg blocks
			// while the stream's flow-control window is full, which is
			// what bounds the sender's memory.
			if err := st.SendMsg(&frame); err != nil {
				return t.snapshotSendError(ctx, to, finalStatus(st, err))
			}
			t.counters.snapshotBytes(to, true, n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			// Returning cancels the stream: the receiver's reader fails.
			return fmt.Errorf("transport: snapshot to node %d: reading data: %w", to, rerr)
		}
	}
	trailer := outChunk{kind: chunkTrailer, crc: crc, total: total}
	if t.hooks.snapshotTrailer != nil {
		trailer.crc, trailer.total = t.hooks.snapshotTrailer(crc, total)
	}
	if err := st.SendMsg(&trailer); err != nil {
		return t.snapshotSendError(ctx, to, finalStatus(st, err))
	}
	if _, err := st.CloseAndRecv(); err != nil {
		return t.snapshotSendError(ctx, to, err)
	}
	t.counters.snapshotDone(to, true)
	t.log.Info("snapshot sent", "peer", to, "index", msg.Snapshot.Index, "term", msg.Snapshot.Term, "bytes", total)
	return nil
}

// finalStatus turns SendMsg's io.EOF (the receiver ended the stream) into
// the status the receiver ended it with.
func finalStatus(st pb.Raft_SnapshotClient, err error) error {
	if errors.Is(err, io.EOF) {
		if rerr := st.RecvMsg(new(pb.SnapshotResponse)); rerr != nil {
			return rerr
		}
		return errors.New("receiver ended the snapshot stream early")
	}
	return err
}

// snapshotSendError maps a receiver's status to the transport's errors.
func (t *GRPC) snapshotSendError(ctx context.Context, to uint64, err error) error {
	switch {
	case t.ctx.Err() != nil:
		return ErrClosed
	case ctx.Err() != nil:
		return fmt.Errorf("transport: snapshot to node %d: %w", to, context.Cause(ctx))
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Aborted:
		return fmt.Errorf("%w: node %d: %s", ErrSnapshotRejected, to, st.Message())
	case codes.DataLoss:
		return fmt.Errorf("%w: node %d: %s", ErrSnapshotChecksum, to, st.Message())
	}
	return fmt.Errorf("transport: snapshot to node %d: %w", to, err)
}

// errHandlerReturned makes the receive loop's pipe writes fail once the
// handler has stopped reading.
var errHandlerReturned = errors.New("transport: snapshot handler returned")

// receiveSnapshot runs one incoming transfer: it validates the header,
// hands the handler an io.Reader fed chunk by chunk through a pipe (so at
// most one chunk is held here, whatever the snapshot's size), verifies
// the trailer before the handler may see io.EOF, and reports the
// handler's result to the sender.
func (t *GRPC) receiveSnapshot(ss pb.Raft_SnapshotServer) error {
	ctx := ss.Context()
	self := t.cfg.NodeID
	f := rawFrame{reuse: true}
	if err := ss.RecvMsg(&f); err != nil {
		return err
	}
	first, err := decodeSnapshotFrame(f.b)
	if err != nil || first.kind != chunkHeader {
		if err == nil {
			err = errors.New("first frame is not a header")
		}
		return t.reject(RejectMalformed, codes.InvalidArgument, "transport: node %d: bad snapshot stream: %v", self, err)
	}
	if err := t.checkHeader(first.hdr, 0); err != nil {
		return err
	}
	from := first.hdr.from
	msg, err := decodeSnapshotMessage(first.msg)
	switch {
	case err != nil:
		return t.reject(RejectMalformed, codes.InvalidArgument, "transport: node %d: bad snapshot message from node %d: %v", self, from, err)
	case msg.Type != core.MsgSnap:
		return t.reject(RejectMalformed, codes.InvalidArgument, "transport: node %d: snapshot stream from node %d carries %v, not MsgSnap", self, from, msg.Type)
	case msg.From != from:
		return t.reject(RejectSenderMismatch, codes.PermissionDenied, "transport: snapshot message from node %d on the stream of node %d (received by node %d)", msg.From, from, self)
	case msg.To != self:
		return t.reject(RejectWrongReceiver, codes.FailedPrecondition, "transport: snapshot message for node %d reached node %d", msg.To, self)
	}
	h := t.currentHandler()
	if h == nil {
		return status.Errorf(codes.Unavailable, "transport: node %d has no handler yet", self)
	}

	pr, pw := io.Pipe()
	result := make(chan error, 1)
	t.wg.Go(func() {
		err := h.HandleSnapshot(ctx, msg, pr)
		pr.CloseWithError(errHandlerReturned)
		result <- err
	})

	var (
		crc      uint32
		total    uint64
		failure  error // a status that takes precedence over the handler's result
		verified bool
	)
loop:
	for {
		if err := ss.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Errorf(codes.InvalidArgument, "transport: snapshot stream from node %d ended before its trailer", from)
			}
			pw.CloseWithError(fmt.Errorf("transport: snapshot from node %d interrupted: %w", from, err))
			failure = err
			break
		}
		fr, err := decodeSnapshotFrame(f.b)
		if err == nil && fr.kind == chunkHeader {
			err = errors.New("second header")
		}
		if err != nil {
			failure = t.reject(RejectMalformed, codes.InvalidArgument, "transport: node %d: bad snapshot frame from node %d: %v", self, from, err)
			pw.CloseWithError(failure)
			break
		}
		switch fr.kind {
		case chunkData:
			crc = crc32.Update(crc, castagnoli, fr.data)
			total += uint64(len(fr.data))
			t.counters.snapshotBytes(from, false, len(fr.data))
			// Write returns once the handler has read all of it, so the
			// frame buffer can be reused for the next frame.
			if _, err := pw.Write(fr.data); err != nil {
				break loop // the handler returned; its result decides
			}
		case chunkTrailer:
			if fr.crc != crc || fr.total != total {
				cerr := fmt.Errorf("%w: node %d received %d bytes with CRC-32C %08x from node %d, which sent %d bytes with %08x",
					ErrSnapshotChecksum, self, total, crc, from, fr.total, fr.crc)
				pw.CloseWithError(cerr)
				failure = status.Error(codes.DataLoss, cerr.Error())
			} else {
				verified = true
				pw.Close()
			}
			break loop
		}
	}
	herr := <-result
	switch {
	case failure != nil:
		t.log.Warn("snapshot transfer failed", "peer", from, "err", failure, "handler_err", herr)
		return failure
	case herr != nil:
		t.log.Warn("snapshot handler failed", "peer", from, "err", herr)
		return status.Errorf(codes.Aborted, "snapshot handler on node %d: %v", self, herr)
	case !verified:
		return status.Errorf(codes.FailedPrecondition,
			"snapshot handler on node %d returned before reading the whole snapshot", self)
	}
	t.counters.snapshotDone(from, false)
	t.log.Info("snapshot received", "peer", from, "index", msg.Snapshot.Index, "term", msg.Snapshot.Term, "bytes", total)
	return ss.SendAndClose(&pb.SnapshotResponse{})
}
