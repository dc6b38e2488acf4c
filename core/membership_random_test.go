package core_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestRandomReconfigurations runs random membership changes (learners
// joining and promoted, voters removed, joint changes) with message loss,
// partitions and crash-restarts on the synchronous harness, and checks
// election safety (the harness, after every step), state machine safety
// (no two nodes apply different entries at one index) and that the
// cluster, healed, commits again. core/sim runs the large version; this
// one guards the core's own changes. A failure names its seed.
func TestRandomReconfigurations(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 30
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runRandomReconfig(t, seed)
		})
	}
}

func runRandomReconfig(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 14))
	prevote := rng.IntN(2) == 0
	tweak := func(cfg *core.Config) {
		cfg.PreVote, cfg.CheckQuorum = prevote, prevote
		cfg.RandomSeed = seed*7919 + cfg.ID
		cfg.MaxCommittedBytesPerReady = uint64(1 + rng.IntN(200))
	}
	c := newCluster(t, 1+rng.IntN(3)*2, tweak)
	c.tolerateInvalid = true
	appliedAt := map[uint64]core.Entry{}
	// Every node whose configuration came from the entry at index i has
	// the same configuration (Apply is deterministic; skips are alike).
	confAt := map[uint64]string{}
	checkApplied := func() {
		for id, n := range c.nodes {
			st := n.Status()
			enc := string(st.Membership.Marshal())
			if prev, ok := confAt[st.ConfIndex]; ok && prev != enc && st.ConfIndex != 0 {
				t.Fatalf("seed %d: node %d has configuration %+v from index %d, another node a different one",
					seed, id, st.Membership, st.ConfIndex)
			}
			confAt[st.ConfIndex] = enc
		}
		for id, ents := range c.applied {
			for _, e := range ents {
				if prev, ok := appliedAt[e.Index]; ok && (prev.Term != e.Term || string(prev.Data) != string(e.Data)) {
					t.Fatalf("seed %d: node %d applied %d/%d, another node applied %d/%d at index %d",
						seed, id, e.Term, e.Index, prev.Term, prev.Index, e.Index)
				}
				appliedAt[e.Index] = e
			}
		}
	}
	cut := map[uint64]bool{}
	loss := 0.0
	c.drop = func(m core.Message) bool {
		return cut[m.From] || cut[m.To] || rng.Float64() < loss
	}
	nextID := uint64(len(c.nodes)) + 1
	cmd := 0
	for step := range 400 {
		switch r := rng.IntN(100); {
		case r < 40:
			c.tick()
		case r < 55:
			if lead := topLeader(c); lead != 0 {
				cmd++
				_ = c.nodes[lead].Propose([]byte(fmt.Sprintf("c%d", cmd)))
			}
		case r < 70:
			lead := topLeader(c)
			if lead == 0 {
				break
			}
			m := c.nodes[lead].Status().Membership
			var cc core.ConfChange
			switch rng.IntN(5) {
			case 0: // a new learner
				if len(c.nodes) < 7 {
					c.addJoiner(nextID, tweak)
					cc = ops(addLearner(nextID))
					nextID++
				}
			case 1: // promote a learner
				if len(m.Learners) > 0 {
					cc = ops(promote(m.Learners[rng.IntN(len(m.Learners))]))
				}
			case 2: // remove anyone
				ids := m.IDs()
				cc = ops(remove(ids[rng.IntN(len(ids))]))
			case 3: // joint: promote all learners
				for _, l := range m.Learners {
					cc.Ops = append(cc.Ops, promote(l))
				}
			case 4: // joint: swap a learner in for a voter
				if len(m.Learners) > 0 {
					cc = ops(promote(m.Learners[0]), remove(m.Voters[rng.IntN(len(m.Voters))]))
				}
			}
			if len(cc.Ops) > 0 {
				// Refusals are expected under faults; the typed ones
				// are tested in TestConfChangeRefusals.
				_, _ = c.nodes[lead].ProposeConfChange(cc)
			}
		case r < 78:
			ids := slices.Sorted(func(yield func(uint64) bool) {
				for id := range c.nodes {
					if !yield(id) {
						return
					}
				}
			})
			id := ids[rng.IntN(len(ids))]
			cut[id] = !cut[id]
		case r < 83:
			loss = []float64{0, 0, 0.05, 0.2}[rng.IntN(4)]
		case r < 88: // crash-restart a node from what it persisted
			id := uint64(1 + rng.IntN(len(c.nodes)))
			cfg := testConfig(id)
			tweak(&cfg)
			cfg.Membership = core.Membership{}
			if last, _ := c.logs[id].LastIndex(); last > 0 {
				// Flags that disagree with what is persisted: ignored.
				cfg.Membership = core.Membership{Voters: []uint64{id}}
			}
			log := c.logs[id].Clone()
			n, err := core.New(cfg, log)
			if err != nil {
				t.Fatalf("seed %d step %d: restart %d: %v", seed, step, id, err)
			}
			c.logs[id], c.nodes[id] = log, n
		}
		c.stabilize()
		checkApplied()
	}
	// Heal and check that the cluster commits again.
	clear(cut)
	loss = 0
	for range 200 {
		c.tick()
		c.stabilize()
		if lead := topLeader(c); lead != 0 && !c.nodes[lead].Status().Membership.IsJoint() {
			break
		}
	}
	for i := range 400 {
		c.tick()
		c.stabilize()
		lead := topLeader(c)
		if lead == 0 {
			continue
		}
		if i%20 == 0 {
			_ = c.nodes[lead].Propose([]byte("final"))
		}
		done := true
		for _, id := range c.nodes[lead].Status().Membership.Voters {
			done = done && slices.Contains(c.appliedData(id), "final")
		}
		if done {
			checkApplied()
			return
		}
	}
	lead := topLeader(c)
	st := core.Status{}
	if lead != 0 {
		st = c.nodes[lead].Status()
	}
	t.Fatalf("seed %d: the healed cluster did not commit (leader %d: %+v)", seed, lead, st)
}

// topLeader returns the leader of the highest term (a deposed leader cut
// off in an older term may still think it leads), or 0.
func topLeader(c *cluster) uint64 {
	var lead, term uint64
	for id, n := range c.nodes {
		if n.Role() == core.RoleLeader && n.Term() > term {
			lead, term = id, n.Term()
		}
	}
	return lead
}
