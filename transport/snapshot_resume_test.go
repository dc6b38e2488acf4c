package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/internal/proctest"
)

// resumingHandler is a snapshot handler that keeps what an interrupted
// transfer delivered and resumes from it, as the driver's does.
type resumingHandler struct {
	mu      sync.Mutex
	partial []byte // data held from an interrupted transfer
	resumes []uint64
	done    chan []byte // complete snapshots
	// stopAfter, if > 0, makes the first transfer fail (as an interrupted
	// one) once this many bytes were received.
	stopAfter int
	// badCRC makes the resume claim a wrong checksum for the prefix.
	badCRC bool
}

func (h *resumingHandler) handle(ctx context.Context, msg core.Message, data io.Reader) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	held := h.partial
	h.partial = nil
	if len(held) > 0 {
		crc := crc32.Checksum(held, castagnoli)
		if h.badCRC {
			crc ^= 1
		}
		if err := data.(driver.SnapshotResumer).ResumeAt(uint64(len(held)), crc); err != nil {
			return err
		}
		h.resumes = append(h.resumes, uint64(len(held)))
	}
	buf := make([]byte, 32<<10)
	got := held
	for {
		n, err := data.Read(buf)
		got = append(got, buf[:n]...)
		if h.stopAfter > 0 && len(got) >= h.stopAfter {
			h.stopAfter = 0
			h.partial = got
			return errors.New("simulated interruption")
		}
		if err == io.EOF {
			h.done <- got
			return nil
		}
		if err != nil {
			if !errors.Is(err, driver.ErrSnapshotCorrupt) {
				h.partial = got // interrupted: keep for resuming
			}
			return err
		}
	}
}

// cutReader returns an error once left bytes were read: a sender whose
// transfer breaks mid-way. It waits a little first, so that the receiver
// gets what was sent before the break.
type cutReader struct {
	r    io.Reader
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		time.Sleep(300 * time.Millisecond)
		return 0, errors.New("connection lost")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func TestSnapshotResume(t *testing.T) {
	const size = 4 << 20
	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
	a, b := nodes[0], nodes[1]
	h := &resumingHandler{done: make(chan []byte, 1)}
	b.rec.snapshot = h.handle
	want, err := io.ReadAll(snapshotData(7, size))
	must(t, err)

	// The first transfer breaks after about 1.5 MiB.
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), &cutReader{r: bytes.NewReader(want), left: 3 << 19})
	expectf(t, err != nil, "interrupted transfer succeeded")
	waitFor(t, "the receiver to notice the interruption", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.partial) > 0
	})
	sentBefore := a.tr.Stats().SnapshotBytesSent

	// The retry resumes: only the rest crosses the network.
	must(t, a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), bytes.NewReader(want)))
	got := <-h.done
	expectf(t, bytes.Equal(got, want), "resumed snapshot differs (%d bytes, want %d)", len(got), len(want))
	h.mu.Lock()
	resumes := h.resumes
	h.mu.Unlock()
	expectf(t, len(resumes) == 1 && resumes[0] > 0, "resumes %v", resumes)
	sent := a.tr.Stats().SnapshotBytesSent - sentBefore
	expectf(t, sent == size-resumes[0], "the retry sent %d bytes, want %d (resumed at %d)", sent, size-resumes[0], resumes[0])
	t.Logf("resumed at byte %d of %d; the retry sent %d bytes", resumes[0], size, sent)
}

func TestSnapshotResumeVerifiesPrefix(t *testing.T) {
	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = 64 << 10 })
	a, b := nodes[0], nodes[1]
	h := &resumingHandler{done: make(chan []byte, 1), stopAfter: 1 << 20, badCRC: true}
	b.rec.snapshot = h.handle
	want, err := io.ReadAll(snapshotData(8, 2<<20))
	must(t, err)
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), bytes.NewReader(want))
	expectf(t, errors.Is(err, ErrSnapshotRejected), "first transfer: %v", err)

	// The receiver claims a wrong checksum for what it holds: the
	// end-to-end check catches it and the handler sees corruption.
	err = a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), bytes.NewReader(want))
	expectf(t, errors.Is(err, ErrSnapshotChecksum), "resumed transfer with a bad prefix: %v", err)
	h.mu.Lock()
	kept := len(h.partial)
	h.mu.Unlock()
	expectf(t, kept == 0, "the handler kept %d corrupt bytes for resuming", kept)

	// And starts over.
	h.badCRC = false
	must(t, a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), bytes.NewReader(want)))
	expectf(t, bytes.Equal(<-h.done, want), "data differs")
}

func TestSnapshotRefusedBeforeReading(t *testing.T) {
	nodes := newCluster(t, 2, nil)
	a, b := nodes[0], nodes[1]
	b.rec.snapshot = func(context.Context, core.Message, io.Reader) error {
		return errors.New("not needed")
	}
	start := time.Now()
	err := a.tr.SendSnapshot(context.Background(), snapMsg(1, 2), endless{})
	expectf(t, errors.Is(err, ErrSnapshotRejected) && strings.Contains(err.Error(), "not needed"), "err %v", err)
	t.Logf("refused in %v", time.Since(start))
}

// A client that does not ask for a resumable stream (another
// implementation) gets a handler that cannot resume.
func TestSnapshotResumeNeedsResumableClient(t *testing.T) {
	s := &snapshotStream{start: make(chan streamStart, 1)}
	err := s.ResumeAt(10, 1)
	expectf(t, errors.Is(err, ErrResumeUnsupported), "err %v", err)
	s = &snapshotStream{resumable: true, start: make(chan streamStart, 1)}
	must(t, s.ResumeAt(10, 1))
	expectf(t, errors.Is(s.ResumeAt(10, 1), ErrResumeUnsupported), "second ResumeAt accepted")
}

var rssSnapshotBytes = flag.Int64("snapshot.rss.bytes", 64<<20,
	"size of the snapshot TestSnapshotTransferRSS transfers (1<<30 for the 1 GiB measurement)")

// TestSnapshotTransferRSS measures the resident memory a snapshot transfer
// costs, both sides together (they run in this one process), with the
// driver's I/O on either end: the sender streams a snapshot file from a
// disk.SnapshotStore (OpenLatest: a verifying pass, then the stream), the
// receiver writes it into another one (CreateSnapshot, Sync, Commit). The
// peak RSS (VmHWM, reset first through /proc/self/clear_refs) must stay
// within 64 MiB of the RSS before the transfer, whatever the size:
//
//	go test ./transport -run TestSnapshotTransferRSS -v -snapshot.rss.bytes=1073741824
func TestSnapshotTransferRSS(t *testing.T) {
	size := *rssSnapshotBytes
	src, err := disk.OpenSnapshotStore(t.TempDir(), nil)
	must(t, err)
	dst, err := disk.OpenSnapshotStore(t.TempDir(), nil)
	must(t, err)
	meta := core.SnapshotMeta{Index: 100, Term: 3, Membership: core.Membership{Voters: []uint64{1, 2}}}
	w, err := src.CreateSnapshot(meta)
	must(t, err)
	_, err = io.Copy(w, snapshotData(9, size))
	must(t, err)
	must(t, w.Commit())

	nodes := newCluster(t, 2, func(c *Config) { c.SnapshotChunkBytes = MaxSnapshotChunkBytes })
	a, b := nodes[0], nodes[1]
	b.rec.snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
		w, err := dst.CreateSnapshot(*msg.Snapshot)
		if err != nil {
			return err
		}
		if _, err := io.CopyBuffer(w, data, make([]byte, 256<<10)); err != nil {
			_ = w.Abort()
			return err
		}
		if err := w.Sync(); err != nil {
			_ = w.Abort()
			return err
		}
		return w.Commit()
	}

	var elapsed time.Duration
	idle, peak := proctest.PeakRSS(t, func() {
		start := time.Now()
		m, rc, err := src.OpenLatest()
		must(t, err)
		msg := snapMsg(1, 2)
		msg.Snapshot = &m
		err = a.tr.SendSnapshot(context.Background(), msg, rc)
		rc.Close()
		must(t, err)
		elapsed = time.Since(start)
	})

	gotMeta, grc, err := dst.OpenLatest() // verifies the copy's checksum
	must(t, err)
	h := sha256.New()
	n, err := io.Copy(h, grc)
	grc.Close()
	must(t, err)
	expectf(t, n == size && gotMeta.Index == meta.Index, "received %d bytes of snapshot %d", n, gotMeta.Index)
	wantH := sha256.New()
	_, _ = io.Copy(wantH, snapshotData(9, size))
	expectf(t, bytes.Equal(h.Sum(nil), wantH.Sum(nil)), "received data differs")

	growth := peak - idle
	t.Logf("snapshot of %d MiB in %v (%.0f MiB/s): RSS idle %.1f MiB, peak %.1f MiB, growth %.1f MiB (sender and receiver together)",
		size>>20, elapsed.Round(time.Millisecond), float64(size)/(1<<20)/elapsed.Seconds(),
		float64(idle)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20))
	fmt.Fprintf(os.Stderr, "RSS_RESULT size_mib=%d idle_mib=%.1f peak_mib=%.1f growth_mib=%.1f seconds=%.2f\n",
		size>>20, float64(idle)/(1<<20), float64(peak)/(1<<20), float64(growth)/(1<<20), elapsed.Seconds())
	expectf(t, growth < 64<<20, "peak RSS grew by %d MiB over idle during a %d MiB snapshot transfer", growth>>20, size>>20)
}
