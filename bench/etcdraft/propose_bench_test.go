package etcdraft

// BenchmarkPropose: proposal throughput of go.etcd.io/raft/v3 (v3.7.0) in a
// 3-node in-memory cluster. A twin benchmark runs the IDENTICAL workload on
// Rafty's own core; keep the two in step.
//
// Workload definition
//
//   - Cluster: 3 nodes, IDs 1, 2, 3, all in one goroutine (raft.RawNode, not
//     the goroutine-based raft.Node). No I/O, no network, no ticks during the
//     benchmark.
//   - Per-node config: raft.MemoryStorage, ElectionTick 10, HeartbeatTick 1,
//     MaxSizePerMsg 1 MiB, MaxInflightMsgs 256, MaxUncommittedEntriesSize 0
//     (unlimited), PreVote true, CheckQuorum true, logger discards output
//     (Fatal/Panic still panic). Everything else is the library default
//     (synchronous storage writes, Ready/Advance interface).
//   - Initial membership: each MemoryStorage starts from a snapshot at index 1,
//     term 1, with voters {1,2,3} (the library's recommended bootstrap; no
//     conf-change entries in the log).
//   - Pump: repeat rounds until a round does nothing. A round is:
//     (1) for each node in ID order (1,2,3) that HasReady: take Ready; if the
//     snapshot is non-empty, ApplySnapshot it to the node's MemoryStorage;
//     Append Ready.Entries; SetHardState if non-empty; append Ready.Messages
//     to one shared in-memory FIFO queue; "apply" CommittedEntries by only
//     counting them (no state machine: the node's applied index becomes the
//     index of the last committed entry, and entries of type EntryNormal with
//     non-empty data are counted as applied proposals); call Advance.
//     (2) deliver every message in the queue in FIFO order by calling Step on
//     the recipient; the queue is then empty. Messages are handed over as
//     in-memory values (pointers), never serialized or copied.
//     The pump ends when no node HasReady and the queue is empty.
//   - Setup (not timed): build the cluster, node 1 Campaigns, pump; node 1 must
//     be leader and have applied its first entry of its term (the empty entry,
//     index 2).
//   - One iteration (b.N times, timed): the leader Proposes B entries, each
//     with the same 256-byte payload (one buffer allocated before the timer
//     and reused for every proposal, so its allocation is not counted), then
//     pumps to quiescence. By then all B proposals must have been applied on
//     the leader (checked; a shortfall fails the benchmark). Quiescence also
//     means followers have learnt the new commit index and applied the
//     entries too, so that work is part of the iteration.
//   - Log compaction (timed, inside the loop): MemoryStorage keeps every entry,
//     so after an iteration in which the leader's count of applied proposals
//     crosses a multiple of 10,000, each node's storage is Compacted up to its
//     applied index minus 1,000 (skipped if that is not above the storage's
//     current compaction point). Its cost is part of the measurement.
//   - Sub-benchmarks: batch=1 (B=1) and batch=64 (B=64).
//   - Metrics: ns/op and allocs/op are per iteration (B proposals).
//     proposals/s = b.N*B / elapsed timed seconds; allocs/proposal and
//     B/proposal = (runtime.MemStats Mallocs and TotalAlloc after the timed
//     loop minus before it) / (b.N*B). runtime.GC() runs once after setup,
//     before the first MemStats reading and the timer start.

import (
	"fmt"
	"runtime"
	"testing"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

const (
	payloadSize     = 256
	compactEvery    = 10_000
	compactRetained = 1_000
)

// discardLogger drops all log output; Fatal and Panic still panic so that a
// broken invariant is not hidden.
type discardLogger struct{}

func (discardLogger) Debug(...any)            {}
func (discardLogger) Debugf(string, ...any)   {}
func (discardLogger) Error(...any)            {}
func (discardLogger) Errorf(string, ...any)   {}
func (discardLogger) Info(...any)             {}
func (discardLogger) Infof(string, ...any)    {}
func (discardLogger) Warning(...any)          {}
func (discardLogger) Warningf(string, ...any) {}
func (discardLogger) Fatal(v ...any)          { panic(fmt.Sprint(v...)) }
func (discardLogger) Fatalf(f string, v ...any) {
	panic(fmt.Sprintf(f, v...))
}
func (discardLogger) Panic(v ...any) { panic(fmt.Sprint(v...)) }
func (discardLogger) Panicf(f string, v ...any) {
	panic(fmt.Sprintf(f, v...))
}

// member is one node of the in-memory cluster.
type member struct {
	id      uint64
	rn      *raft.RawNode
	storage *raft.MemoryStorage
	applied uint64 // index of the last committed entry handed to us
	props   uint64 // applied EntryNormal entries with non-empty data
}

// cluster is a 3-node cluster driven from a single goroutine.
type cluster struct {
	members []*member // index i holds ID i+1
	queue   []*pb.Message
}

func newCluster(tb testing.TB) *cluster {
	tb.Helper()
	ids := []uint64{1, 2, 3}
	c := &cluster{}
	for _, id := range ids {
		st := raft.NewMemoryStorage()
		snap := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
			Index:     new(uint64(1)),
			Term:      new(uint64(1)),
			ConfState: &pb.ConfState{Voters: ids},
		}}
		if err := st.ApplySnapshot(snap); err != nil {
			tb.Fatalf("node %d: bootstrap snapshot: %v", id, err)
		}
		rn, err := raft.NewRawNode(&raft.Config{
			ID:                        id,
			ElectionTick:              10,
			HeartbeatTick:             1,
			Storage:                   st,
			MaxSizePerMsg:             1 << 20,
			MaxInflightMsgs:           256,
			MaxUncommittedEntriesSize: 0,
			PreVote:                   true,
			CheckQuorum:               true,
			Logger:                    discardLogger{},
		})
		if err != nil {
			tb.Fatalf("node %d: NewRawNode: %v", id, err)
		}
		c.members = append(c.members, &member{id: id, rn: rn, storage: st, applied: 1})
	}
	return c
}

// handleReady processes one Ready of m: persist, queue messages, count
// committed entries, Advance.
func (c *cluster) handleReady(m *member) {
	rd := m.rn.Ready()
	if rd.Snapshot != nil && !raft.IsEmptySnap(rd.Snapshot) {
		if err := m.storage.ApplySnapshot(rd.Snapshot); err != nil {
			panic(fmt.Sprintf("node %d: ApplySnapshot: %v", m.id, err))
		}
		m.applied = rd.Snapshot.GetMetadata().GetIndex()
	}
	if err := m.storage.Append(rd.Entries); err != nil {
		panic(fmt.Sprintf("node %d: Append: %v", m.id, err))
	}
	if !raft.IsEmptyHardState(rd.HardState) {
		if err := m.storage.SetHardState(rd.HardState); err != nil {
			panic(fmt.Sprintf("node %d: SetHardState: %v", m.id, err))
		}
	}
	c.queue = append(c.queue, rd.Messages...)
	for _, e := range rd.CommittedEntries {
		if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
			m.props++
		}
	}
	if n := len(rd.CommittedEntries); n > 0 {
		m.applied = rd.CommittedEntries[n-1].GetIndex()
	}
	m.rn.Advance(rd)
}

// pump runs rounds until no node has a Ready and no message is queued.
func (c *cluster) pump() {
	for {
		progress := false
		for _, m := range c.members {
			if m.rn.HasReady() {
				c.handleReady(m)
				progress = true
			}
		}
		if len(c.queue) > 0 {
			progress = true
			for i, msg := range c.queue {
				to := msg.GetTo()
				if to < 1 || to > uint64(len(c.members)) {
					panic(fmt.Sprintf("message to unknown node %d: %v", to, msg))
				}
				if err := c.members[to-1].rn.Step(msg); err != nil {
					panic(fmt.Sprintf("node %d: Step %v: %v", to, msg.GetType(), err))
				}
				c.queue[i] = nil
			}
			c.queue = c.queue[:0]
		}
		if !progress {
			return
		}
	}
}

// compact discards each node's log up to applied-compactRetained.
func (c *cluster) compact() {
	for _, m := range c.members {
		if m.applied <= compactRetained {
			continue
		}
		idx := m.applied - compactRetained
		first, err := m.storage.FirstIndex()
		if err != nil {
			panic(err)
		}
		if idx < first {
			continue // already compacted at or past idx
		}
		if err := m.storage.Compact(idx); err != nil {
			panic(fmt.Sprintf("node %d: Compact(%d): %v", m.id, idx, err))
		}
	}
}

// electLeader makes node 1 leader and waits until it applied its first entry.
func (c *cluster) electLeader(tb testing.TB) *member {
	tb.Helper()
	leader := c.members[0]
	if err := leader.rn.Campaign(); err != nil {
		tb.Fatalf("campaign: %v", err)
	}
	c.pump()
	st := leader.rn.BasicStatus()
	if st.RaftState != raft.StateLeader {
		tb.Fatalf("node 1 is %v after campaign, want leader", st.RaftState)
	}
	if leader.applied < 2 || st.GetCommit() < 2 {
		tb.Fatalf("leader applied %d, commit %d after election; want >= 2", leader.applied, st.Commit)
	}
	return leader
}

func BenchmarkPropose(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			benchmarkPropose(b, batch)
		})
	}
}

func benchmarkPropose(b *testing.B, batch int) {
	c := newCluster(b)
	leader := c.electLeader(b)
	payload := make([]byte, payloadSize)
	for i := range payload {
		payload[i] = byte(i)
	}
	want := leader.props
	nextCompact := want + compactEvery

	b.ReportAllocs()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < batch; j++ {
			if err := leader.rn.Propose(payload); err != nil {
				b.Fatalf("propose: %v", err)
			}
		}
		c.pump()
		want += uint64(batch)
		if leader.props != want {
			b.Fatalf("iteration %d: leader applied %d proposals, want %d", i, leader.props, want)
		}
		if leader.props >= nextCompact {
			c.compact()
			nextCompact += compactEvery
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)

	props := float64(b.N) * float64(batch)
	if secs := b.Elapsed().Seconds(); secs > 0 {
		b.ReportMetric(props/secs, "proposals/s")
	}
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/props, "allocs/proposal")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/props, "B/proposal")
}

// TestWorkload checks the harness itself: every proposal reaches every node,
// and compaction actually trims the logs without disturbing replication.
func TestWorkload(t *testing.T) {
	c := newCluster(t)
	leader := c.electLeader(t)
	payload := make([]byte, payloadSize)
	const batch, iters = 64, 400 // 25,600 proposals: two compactions
	nextCompact := leader.props + compactEvery
	for i := 0; i < iters; i++ {
		for j := 0; j < batch; j++ {
			if err := leader.rn.Propose(payload); err != nil {
				t.Fatalf("propose: %v", err)
			}
		}
		c.pump()
		if leader.props >= nextCompact {
			c.compact()
			nextCompact += compactEvery
		}
	}
	const want = batch * iters
	for _, m := range c.members {
		if m.props != want {
			t.Errorf("node %d applied %d proposals, want %d", m.id, m.props, want)
		}
		if m.applied != leader.applied {
			t.Errorf("node %d applied index %d, leader %d", m.id, m.applied, leader.applied)
		}
		first, _ := m.storage.FirstIndex()
		if first < 2*compactEvery-compactRetained {
			t.Errorf("node %d storage first index %d: log was not compacted", m.id, first)
		}
	}
	if st := leader.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.Applied != leader.applied {
		t.Errorf("leader status %+v, harness applied %d", st, leader.applied)
	}
}
