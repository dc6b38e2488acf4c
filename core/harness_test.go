package core_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
)

// cluster is a tiny synchronous test network: every node persists to a
// memlog and messages are delivered in FIFO order when the test asks.
type cluster struct {
	t       testing.TB
	nodes   map[uint64]*core.Node
	logs    map[uint64]*memlog.Log
	applied map[uint64][]core.Entry
	reads   map[uint64][]core.ReadState
	rejects map[uint64][]core.RejectedProposal
	queue   []core.Message
	// drop, when set, decides whether a message is lost.
	drop func(core.Message) bool
	// sent records every message delivered, for assertions.
	sent []core.Message
	// tolerateInvalid: a Step refused as ErrInvalidMessage is recorded in
	// refused instead of failing the test (for forged-input scenarios).
	tolerateInvalid bool
	refused         []error
	// leaderOf and lastTerm check, after every Ready, that no term has two
	// leaders (paper §5.2, Election Safety) and that no node's term goes
	// backwards (§5.1: terms increase monotonically).
	leaderOf map[uint64]uint64
	lastTerm map[uint64]uint64
}

func testConfig(id uint64, voters ...uint64) core.Config {
	cfg := core.DefaultConfig(id, voters...)
	cfg.ElectionTicks = 10
	cfg.HeartbeatTicks = 1
	return cfg
}

func newCluster(t testing.TB, size int, tweak func(*core.Config)) *cluster {
	t.Helper()
	voters := make([]uint64, size)
	for i := range voters {
		voters[i] = uint64(i + 1)
	}
	c := &cluster{
		t: t, nodes: map[uint64]*core.Node{}, logs: map[uint64]*memlog.Log{},
		applied: map[uint64][]core.Entry{}, reads: map[uint64][]core.ReadState{},
		rejects: map[uint64][]core.RejectedProposal{},
	}
	for _, id := range voters {
		cfg := testConfig(id, voters...)
		if tweak != nil {
			tweak(&cfg)
		}
		log := memlog.New()
		n, err := core.New(cfg, log)
		if err != nil {
			t.Fatalf("New(%d): %v", id, err)
		}
		c.nodes[id], c.logs[id] = n, log
	}
	// Persist each node's bootstrap entry (index 1, term 1) now, so tests
	// start from a bootstrapped cluster.
	for _, id := range voters {
		c.process(id)
	}
	return c
}

// checkTerms enforces Election Safety and monotonic terms for node id.
func (c *cluster) checkTerms(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	if c.leaderOf == nil {
		c.leaderOf, c.lastTerm = map[uint64]uint64{}, map[uint64]uint64{}
	}
	term := n.Term()
	if term < c.lastTerm[id] {
		c.t.Fatalf("node %d term went back from %d to %d", id, c.lastTerm[id], term)
	}
	c.lastTerm[id] = term
	if n.Role() != core.RoleLeader {
		return
	}
	if prev, ok := c.leaderOf[term]; ok && prev != id {
		c.t.Fatalf("election safety: nodes %d and %d both led term %d", prev, id, term)
	}
	c.leaderOf[term] = id
}

// process drains Ready from node id following the Ready contract.
func (c *cluster) process(id uint64) bool {
	n := c.nodes[id]
	c.checkTerms(id)
	did := false
	for n.HasReady() {
		did = true
		rd, err := n.Ready()
		if err != nil {
			c.t.Fatalf("node %d Ready: %v", id, err)
		}
		c.queue = append(c.queue, rd.Messages...)
		if rd.Snapshot != nil {
			if err := c.logs[id].InstallSnapshot(*rd.Snapshot); err != nil {
				c.t.Fatalf("node %d install snapshot: %v", id, err)
			}
		}
		if err := c.logs[id].Save(rd.HardState, rd.Entries); err != nil {
			c.t.Fatalf("node %d save: %v", id, err)
		}
		c.queue = append(c.queue, rd.MessagesAfterPersist...)
		c.applied[id] = append(c.applied[id], rd.CommittedEntries...)
		c.reads[id] = append(c.reads[id], rd.ReadStates...)
		c.rejects[id] = append(c.rejects[id], rd.RejectedProposals...)
		if err := n.Advance(rd); err != nil {
			c.t.Fatalf("node %d Advance: %v", id, err)
		}
	}
	return did
}

// stabilize processes every node and delivers every message until quiet.
func (c *cluster) stabilize() {
	for range 10000 {
		did := false
		for id := uint64(1); id <= uint64(len(c.nodes)); id++ {
			if c.nodes[id] != nil && c.process(id) {
				did = true
			}
		}
		if len(c.queue) == 0 && !did {
			return
		}
		q := c.queue
		c.queue = nil
		for _, m := range q {
			c.deliver(m)
		}
	}
	c.t.Fatalf("cluster did not stabilize")
}

func (c *cluster) deliver(m core.Message) {
	if c.drop != nil && c.drop(m) {
		return
	}
	n := c.nodes[m.To]
	if n == nil {
		return
	}
	c.sent = append(c.sent, m)
	if err := n.Step(m); err != nil {
		if c.tolerateInvalid && errors.Is(err, core.ErrInvalidMessage) {
			c.refused = append(c.refused, err)
			return
		}
		c.t.Fatalf("node %d Step(%v): %v", m.To, m, err)
	}
	c.checkTerms(m.To)
}

// tick advances every node's clock once.
func (c *cluster) tick() {
	for _, n := range c.nodes {
		if err := n.Tick(); err != nil {
			c.t.Fatalf("tick: %v", err)
		}
	}
}

// elect makes node id leader by letting its election timeout fire.
func (c *cluster) elect(id uint64) {
	c.t.Helper()
	n := c.nodes[id]
	for range 100 {
		if err := n.Tick(); err != nil {
			c.t.Fatal(err)
		}
		c.stabilize()
		if n.Status().Role == core.RoleLeader {
			return
		}
	}
	c.t.Fatalf("node %d did not become leader: %+v", id, n.Status())
}

func (c *cluster) leader() uint64 {
	var lead uint64
	for id, n := range c.nodes {
		if n.Status().Role == core.RoleLeader {
			if lead != 0 {
				c.t.Fatalf("two leaders: %d and %d", lead, id)
			}
			lead = id
		}
	}
	return lead
}

// appliedData returns the non-empty commands node id applied, as strings.
func (c *cluster) appliedData(id uint64) []string {
	var out []string
	for _, e := range c.applied[id] {
		if len(e.Data) > 0 && e.Type == core.EntryNormal {
			out = append(out, string(e.Data))
		}
	}
	return out
}

func TestSmokeThreeNodesCommit(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	for i := range 5 {
		if err := c.nodes[1].Propose([]byte(fmt.Sprintf("cmd%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	for id := uint64(1); id <= 3; id++ {
		got := c.appliedData(id)
		if len(got) != 5 || got[0] != "cmd0" || got[4] != "cmd4" {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
}
