package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and
// arm64), the checksum disk/ uses for WAL records as well.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Resuming. The client marks its stream resumable with the request
// metadata key resumeKey. After the header frame it waits for the
// receiver's response headers, which carry offsetKey: how many leading
// bytes of the data the receiver's handler already holds from an
// interrupted transfer of the same snapshot (driver.SnapshotResumer), 0 to
// start over. The sender reads and checksums those bytes locally without
// sending them, then streams the rest; the trailer's CRC-32C and length
// still cover the whole data, and the receiver's checksum continues from
// the handler's CRC of its prefix, so every byte is verified end to end. A
// client that does not mark its stream resumable (another implementation)
// gets no early headers and must send everything; its handler cannot
// resume.
const (
	resumeKey = "rafty-snapshot-resume"
	offsetKey = "rafty-snapshot-offset"
)

// ErrResumeUnsupported is returned by SnapshotResumer.ResumeAt when the
// sender did not ask for a resumable transfer, or data was already read.
var ErrResumeUnsupported = errors.New("transport: this snapshot transfer cannot resume")

// SendSnapshot streams a snapshot to msg.To and returns nil only once the
// receiver's HandleSnapshot has returned nil after reading the data in
// full and the checksum has matched. msg must be a MsgSnap with its
// metadata (a zero From is filled in). data is read in
// SnapshotChunkBytes pieces, one at a time, so memory use does not depend
// on the snapshot's size. The transfer uses its own connection, so that a
// large snapshot does not delay heartbeats on the message stream. If the
// receiver resumes an interrupted transfer, the data it already holds is
// read (and checksummed) here but not sent.
//
// Errors: ErrSnapshotRejected (the receiver's handler failed; its message
// follows), core.ErrRemoved (the receiver refused this node as removed
// from the cluster; the handler's RemovedBy was called), ErrSnapshotChecksum, ErrUnknownPeer, ErrClosed, ctx's error,
// a data read error, or the gRPC status of a transport failure.
func (t *GRPC) SendSnapshot(ctx context.Context, msg core.Message, data io.Reader) error {
	if msg.From == core.None {
		msg.From = t.nodeID()
	}
	switch {
	case msg.Type != core.MsgSnap || msg.Snapshot == nil:
		return fmt.Errorf("%w: SendSnapshot needs a MsgSnap with snapshot metadata, got %v", core.ErrInvalidMessage, msg)
	case msg.From != t.nodeID():
		return fmt.Errorf("%w: From is %d, this node is %d", core.ErrInvalidMessage, msg.From, t.nodeID())
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
		hdr:     batchHeader{clusterID: t.cfg.ClusterID, from: t.nodeID(), to: to},
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
	st, err := pb.NewRaftClient(conn).Snapshot(metadata.AppendToOutgoingContext(ctx, resumeKey, "1"))
	if err != nil {
		return t.snapshotSendError(ctx, to, err)
	}
	_ = st.Context() // commit the attempt: no replay buffer of 1 MiB chunks
	if err := st.SendMsg(&header); err != nil {
		return t.snapshotSendError(ctx, to, finalStatus(st, err))
	}
	offset, err := resumeOffset(st)
	if err != nil {
		return t.snapshotSendError(ctx, to, err)
	}

	buf := make([]byte, t.cfg.SnapshotChunkBytes)
	// Frames get buffers of exactly their size from a pool of this
	// transfer's own, dropped with it.
	frame := outChunk{kind: chunkData, pool: mem.NewTieredBufferPool(sizeLenField(len(buf)))}
	var crc uint32
	var total uint64
	if offset > 0 {
		// The receiver holds the first offset bytes: checksum them here,
		// send the rest.
		for total < offset {
			n, rerr := io.ReadFull(data, buf[:min(uint64(len(buf)), offset-total)])
			crc = crc32.Update(crc, castagnoli, buf[:n])
			total += uint64(n)
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				return fmt.Errorf("transport: snapshot to node %d: the receiver resumes at byte %d, the data ends at %d", to, offset, total)
			}
			if rerr != nil {
				return fmt.Errorf("transport: snapshot to node %d: reading data: %w", to, rerr)
			}
		}
		t.logger().Info("resuming snapshot transfer", "peer", to, "index", msg.Snapshot.Index, "offset", offset)
	}
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
	t.logger().Info("snapshot sent", "peer", to, "index", msg.Snapshot.Index, "term", msg.Snapshot.Term, "bytes", total)
	return nil
}

// resumeOffset waits for the receiver's response headers and returns the
// offset it resumes at. A stream the receiver ended instead (its handler
// refused the snapshot) yields the receiver's status.
func resumeOffset(st pb.Raft_SnapshotClient) (uint64, error) {
	md, err := st.Header()
	if err != nil {
		return 0, err
	}
	vals := md.Get(offsetKey)
	if len(vals) == 0 {
		if rerr := st.RecvMsg(new(pb.SnapshotResponse)); rerr != nil {
			return 0, rerr
		}
		return 0, errors.New("receiver ended the snapshot stream before its data")
	}
	off, err := strconv.ParseUint(vals[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("receiver sent a bad resume offset %q", vals[0])
	}
	return off, nil
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
	if peerRemovedUs(err) {
		t.notifyRemoved(to)
		return fmt.Errorf("transport: snapshot to node %d: %w (%s)", to, core.ErrRemoved, status.Convert(err).Message())
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
	self := t.nodeID()
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
		return t.starting()
	}

	md, _ := metadata.FromIncomingContext(ctx)
	pr, pw := io.Pipe()
	stream := &snapshotStream{pr: pr, resumable: slices.Contains(md.Get(resumeKey), "1"), start: make(chan streamStart, 1)}
	result := make(chan error, 1)
	t.wg.Go(func() {
		err := h.HandleSnapshot(ctx, msg, stream)
		pr.CloseWithError(errHandlerReturned)
		stream.begin(streamStart{}) // unblock the wait below if it never read
		result <- err
	})

	// Wait until the handler decides where the data starts: its first
	// Read (from the beginning) or ResumeAt.
	var start streamStart
	select {
	case start = <-stream.start:
	case <-ctx.Done():
		pw.CloseWithError(ctx.Err())
		<-result
		return status.FromContextError(ctx.Err()).Err()
	}
	var (
		crc      = start.crc
		total    = start.offset
		failure  error // a status that takes precedence over the handler's result
		verified bool
		herr     error
		returned bool
	)
	if !start.read {
		// The handler returned without reading: it refused the snapshot.
		herr, returned = <-result, true
		failure = t.handlerStatus(self, from, herr, false)
	} else if stream.resumable {
		if err := ss.SendHeader(metadata.Pairs(offsetKey, strconv.FormatUint(start.offset, 10))); err != nil {
			pw.CloseWithError(fmt.Errorf("transport: snapshot from node %d interrupted: %w", from, err))
			failure = err
		}
	}
loop:
	for failure == nil {
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
				cerr := fmt.Errorf("%w (%w): node %d received %d bytes with CRC-32C %08x from node %d, which sent %d bytes with %08x",
					ErrSnapshotChecksum, driver.ErrSnapshotCorrupt, self, total, crc, from, fr.total, fr.crc)
				pw.CloseWithError(cerr)
				failure = status.Error(codes.DataLoss, cerr.Error())
			} else {
				verified = true
				pw.Close()
			}
			break loop
		}
	}
	if !returned {
		herr = <-result
	}
	switch {
	case failure != nil:
		t.logger().Warn("snapshot transfer failed", "peer", from, "err", failure, "handler_err", herr)
		return failure
	case herr != nil || !verified:
		return t.handlerStatus(self, from, herr, true)
	}
	t.counters.snapshotDone(from, false)
	t.logger().Info("snapshot received", "peer", from, "index", msg.Snapshot.Index, "term", msg.Snapshot.Term, "bytes", total)
	return ss.SendAndClose(&pb.SnapshotResponse{})
}

// handlerStatus is the status reporting a handler that failed (herr), or
// returned nil without having read the whole snapshot.
func (t *GRPC) handlerStatus(self, from uint64, herr error, logIt bool) error {
	if herr == nil {
		return status.Errorf(codes.FailedPrecondition,
			"snapshot handler on node %d returned before reading the whole snapshot", self)
	}
	if errors.Is(herr, core.ErrRemoved) {
		return t.refuseRemoved(from, herr)
	}
	if logIt {
		t.logger().Warn("snapshot handler failed", "peer", from, "err", herr)
	}
	return status.Errorf(codes.Aborted, "snapshot handler on node %d: %v", self, herr)
}

// streamStart is where the handler's data begins: offset bytes it already
// holds, whose CRC-32C is crc. read is false when the handler returned
// without reading.
type streamStart struct {
	offset uint64
	crc    uint32
	read   bool
}

// snapshotStream is the reader a handler receives: the pipe fed by the
// receive loop, and driver.SnapshotResumer when the sender can resume.
type snapshotStream struct {
	pr        *io.PipeReader
	resumable bool
	once      sync.Once
	start     chan streamStart // buffered; receives exactly one value
}

var _ driver.SnapshotResumer = (*snapshotStream)(nil)

func (s *snapshotStream) begin(st streamStart) bool {
	first := false
	s.once.Do(func() {
		first = true
		s.start <- st
	})
	return first
}

func (s *snapshotStream) Read(p []byte) (int, error) {
	s.begin(streamStart{read: true})
	return s.pr.Read(p)
}

// ResumeAt implements driver.SnapshotResumer.
func (s *snapshotStream) ResumeAt(offset uint64, crc uint32) error {
	if !s.resumable {
		return ErrResumeUnsupported
	}
	if !s.begin(streamStart{offset: offset, crc: crc, read: true}) {
		return fmt.Errorf("%w: data was already read", ErrResumeUnsupported)
	}
	return nil
}
