package core_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// BenchmarkPropose: proposal throughput of Rafty's core in a 3-node
// in-memory cluster. It is the twin of bench/etcdraft's BenchmarkPropose
// and runs the identical workload (see that file's comment):
//
//   - 3 nodes in one goroutine, memlog storage, no I/O, no ticks timed.
//     ElectionTicks 10, HeartbeatTicks 1, MaxMsgBytes 1 MiB, MaxInflightMsgs
//     256, PreVote and CheckQuorum on; MaxUncommittedBytes is set high
//     (1 GiB) as the twin's is unlimited.
//   - Pump: rounds until nothing happens; in a round each node in ID order
//     that HasReady persists to its memlog, queues Messages and
//     MessagesAfterPersist on one FIFO, counts committed entries with data
//     as applied proposals, and Advances; then every queued message is
//     Stepped into its recipient.
//   - Setup (untimed): node 1 campaigns and the pump runs until it has
//     applied its term's no-op.
//   - Iteration: the leader proposes B entries of 256 bytes (one reused
//     buffer), each with its own Propose call, then pumps to quiescence;
//     all B must be applied on the leader.
//   - Compaction (timed): after the leader's applied proposals cross a
//     multiple of 10,000, each node's log is compacted to applied-1000.
//   - Metrics: proposals/s, allocs/proposal, B/proposal.
func BenchmarkPropose(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchPropose(b, batch) })
	}
}

type benchCluster struct {
	nodes   [3]*core.Node
	logs    [3]*memlog.Log
	queue   []core.Message
	spare   []core.Message
	applied [3]uint64 // applied index per node
	props   int       // proposals applied on the leader
}

func newBenchCluster(b *testing.B) *benchCluster {
	c := &benchCluster{}
	for i := range 3 {
		cfg := core.DefaultConfig(uint64(i+1), 1, 2, 3)
		cfg.ElectionTicks = 10
		cfg.MaxMsgBytes = 1 << 20
		cfg.MaxInflightMsgs = 256
		cfg.MaxInflightBytes = 256 << 20
		cfg.MaxUncommittedBytes = 1 << 30
		c.logs[i] = memlog.New()
		n, err := core.New(cfg, c.logs[i])
		if err != nil {
			b.Fatal(err)
		}
		c.nodes[i] = n
	}
	return c
}

func (c *benchCluster) pump(b *testing.B) {
	for {
		did := false
		for i, n := range c.nodes {
			if !n.HasReady() {
				continue
			}
			did = true
			rd, err := n.Ready()
			if err != nil {
				b.Fatal(err)
			}
			c.queue = append(c.queue, rd.Messages...)
			if err := c.logs[i].Save(rd.HardState, rd.Entries); err != nil {
				b.Fatal(err)
			}
			c.queue = append(c.queue, rd.MessagesAfterPersist...)
			for j := range rd.CommittedEntries {
				if i == 0 && len(rd.CommittedEntries[j].Data) > 0 {
					c.props++
				}
			}
			if k := len(rd.CommittedEntries); k > 0 {
				c.applied[i] = rd.CommittedEntries[k-1].Index
			}
			if err := n.Advance(rd); err != nil {
				b.Fatal(err)
			}
		}
		if !did && len(c.queue) == 0 {
			return
		}
		q := c.queue
		c.queue = c.spare[:0]
		for _, m := range q {
			if err := c.nodes[m.To-1].Step(m); err != nil {
				b.Fatal(err)
			}
		}
		c.spare = q[:0]
	}
}

func (c *benchCluster) compact(b *testing.B) {
	for i, log := range c.logs {
		if c.applied[i] <= 1000 {
			continue
		}
		idx := c.applied[i] - 1000
		first, _ := log.FirstIndex()
		if idx < first {
			continue
		}
		term, err := log.Term(idx)
		if err != nil {
			b.Fatal(err)
		}
		log.SetSnapshot(core.SnapshotMeta{Index: idx, Term: term, Membership: core.Membership{Voters: []uint64{1, 2, 3}}})
		if err := log.Compact(idx); err != nil {
			b.Fatal(err)
		}
	}
}

func benchPropose(b *testing.B, batch int) {
	c := newBenchCluster(b)
	for c.nodes[0].Role() != core.RoleLeader {
		if err := c.nodes[0].Tick(); err != nil {
			b.Fatal(err)
		}
		c.pump(b)
	}
	c.pump(b)
	if c.applied[0] == 0 {
		b.Fatal("leader did not apply its no-op")
	}
	payload := make([]byte, 256)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	nextCompact := 10000
	for range b.N {
		want := c.props + batch
		for range batch {
			if err := c.nodes[0].Propose(payload); err != nil {
				b.Fatal(err)
			}
		}
		c.pump(b)
		if c.props != want {
			b.Fatalf("applied %d proposals, want %d", c.props, want)
		}
		if c.props >= nextCompact {
			c.compact(b)
			nextCompact += 10000
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(b.N * batch)
	b.ReportMetric(total/b.Elapsed().Seconds(), "proposals/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/proposal")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/total, "B/proposal")
}
