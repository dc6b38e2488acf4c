package kv

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// backupChunkBytes is the data carried by one BackupResponse: well under
// gRPC's default 4 MiB receive limit, so any client can take the stream,
// and large enough that per-message overhead does not matter.
const backupChunkBytes = 256 << 10

// backupNode is what Backup needs of the node besides raftNode.
// *driver.Node has it; the service's test fakes need not, so it is
// checked when a backup is asked for rather than required by NewService.
type backupNode interface {
	Backup(ctx context.Context, w io.Writer) (core.SnapshotMeta, error)
}

// Backup implements kvpb.KVServer. The read barrier first makes the
// backup linearizable: the applied index it captures is at least the
// commit index when the call arrived, so a backup taken from a lagging
// follower still holds every acknowledged write. Streaming then happens on
// this goroutine from a Pebble snapshot, so writes go on meanwhile, and
// gRPC flow control bounds the memory used by a slow client.
func (s *Service) Backup(_ *kvpb.BackupRequest, stream kvpb.KV_BackupServer) error {
	bn, ok := s.node.(backupNode)
	if !ok {
		return status.Error(codes.Unimplemented, "this member's node cannot take backups")
	}
	ctx := stream.Context()
	if err := s.barrier(ctx); err != nil {
		return err
	}
	cw := &chunkSender{send: stream.Send}
	meta, err := bn.Backup(ctx, cw)
	if err == nil {
		err = cw.flush()
	}
	if err != nil {
		return backupStatus(err)
	}
	return stream.Send(&kvpb.BackupResponse{
		Header: s.header(),
		Meta: &kvpb.BackupMeta{
			Index:          meta.Index,
			Term:           meta.Term,
			Voters:         meta.Membership.Voters,
			OutgoingVoters: meta.Membership.OutgoingVoters,
			Learners:       meta.Membership.Learners,
			SizeBytes:      cw.total,
			Membership:     meta.Membership.Marshal(),
		},
	})
}

// chunkSender cuts what the driver writes into BackupResponse messages of
// backupChunkBytes. Each message gets a buffer of its own: gRPC may still
// hold a sent message (stats handlers read it lazily), so a buffer is
// never reused after Send.
type chunkSender struct {
	send  func(*kvpb.BackupResponse) error
	buf   []byte
	total uint64
}

func (c *chunkSender) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.buf == nil {
			c.buf = make([]byte, 0, backupChunkBytes)
		}
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// flush sends what is buffered, if anything.
func (c *chunkSender) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	if err := c.send(&kvpb.BackupResponse{Data: c.buf}); err != nil {
		return err
	}
	c.total += uint64(len(c.buf))
	c.buf = nil
	return nil
}

// backupStatus maps an error of driver.Node.Backup or of sending: a gRPC
// status (the client went away) is passed on as is.
func backupStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, driver.ErrStopped), errors.Is(err, ErrClosed):
		return status.Errorf(codes.Unavailable, "no backup taken, member stopping: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "deadline exceeded during the backup: %v", err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "backup cancelled: %v", err)
	}
	return status.Errorf(codes.Internal, "backup failed: %v", err)
}
