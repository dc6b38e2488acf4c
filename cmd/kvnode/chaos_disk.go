//go:build chaos

package main

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// The chaos build (`go build -tags chaos`, used by the chaos/ test suite
// only) can make this node's disk slow: every write of the Raft log
// (Storage.Save) is delayed by the duration written in the file named by
// the environment variable KVNODE_CHAOS_DISK_DELAY_FILE (e.g. "1.5s"; "0"
// or a missing file means no delay). The file is read every 50 ms, so a
// test changes the delay of a running node by rewriting it. A normal build
// has none of this (chaos_hook.go).

// chaosDiskDelayEnv names the control file's environment variable.
const chaosDiskDelayEnv = "KVNODE_CHAOS_DISK_DELAY_FILE"

func wrapStorage(st driver.Storage, log *slog.Logger) driver.Storage {
	path := os.Getenv(chaosDiskDelayEnv)
	if path == "" {
		log.Warn("chaos build without " + chaosDiskDelayEnv + ": the disk is not slowed down")
		return st
	}
	s := &slowStorage{Storage: st, path: path, log: log, stop: make(chan struct{}), stopped: make(chan struct{})}
	s.poll()
	go s.watch()
	log.Warn("chaos build: Raft log writes are delayed as "+path+" says", "delay", time.Duration(s.delay.Load()))
	if cw, ok := st.(driver.CommitWriter); ok {
		return &slowCommitStorage{slowStorage: s, cw: cw}
	}
	return s
}

// slowStorage delays Save; everything else goes straight to the wrapped
// storage.
type slowStorage struct {
	driver.Storage
	path  string
	log   *slog.Logger
	delay atomic.Int64 // nanoseconds

	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

func (s *slowStorage) Save(hs core.HardState, entries []core.Entry) error {
	if d := time.Duration(s.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	return s.Storage.Save(hs, entries)
}

// slowCommitStorage is a slowStorage over a Storage with the
// driver.CommitWriter extension (disk.Store), which it keeps: without it
// the wrapper would hide the extension and the chaos build would fsync
// every commit index written before applying, unlike the production build.
type slowCommitStorage struct {
	*slowStorage
	cw driver.CommitWriter
}

// WriteCommit forwards to the wrapped storage, undelayed: it only writes
// to the kernel's page cache, which a slow device does not slow.
func (s *slowCommitStorage) WriteCommit(index uint64) error { return s.cw.WriteCommit(index) }

func (s *slowStorage) Close() error {
	s.stopOnce.Do(func() {
		close(s.stop)
		<-s.stopped
	})
	return s.Storage.Close()
}

func (s *slowStorage) watch() {
	defer close(s.stopped)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.poll()
		}
	}
}

// poll reads the control file and applies a changed delay.
func (s *slowStorage) poll() {
	var d time.Duration
	if b, err := os.ReadFile(s.path); err == nil {
		v, err := time.ParseDuration(strings.TrimSpace(string(b)))
		if err != nil {
			s.log.Error("chaos build: bad disk delay", "file", s.path, "err", err)
			return
		}
		d = max(v, 0)
	}
	if old := time.Duration(s.delay.Swap(int64(d))); old != d {
		s.log.Warn("chaos build: Raft log write delay changed", "from", old, "to", d)
	}
}
