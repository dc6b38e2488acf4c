package driver_test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// envelope builds entry data the way the driver frames a proposal
// (envelope.go), with a chosen version byte.
func envelope(version byte, node, epoch, seq uint64, cmd string) []byte {
	b := make([]byte, driver.EnvelopeOverhead, driver.EnvelopeOverhead+len(cmd))
	b[0] = version
	binary.BigEndian.PutUint64(b[1:9], node)
	binary.BigEndian.PutUint64(b[9:17], epoch)
	binary.BigEndian.PutUint64(b[17:25], seq)
	return append(b, cmd...)
}

// TestMalformedForwardedProposalRefused: the leader refuses, entry by
// entry, forwarded proposals whose envelope does not decode ("x", the
// issue's reproduction), that claim another proposer, or whose command
// Config.ValidateCommand refuses, and answers at once; a valid entry of the
// same message is appended. A follower's caller whose command the leader
// refuses gets a *DroppedError wrapping ErrInvalidProposal at once, not a
// timeout. Nothing refused reaches any state machine, and the cluster runs
// on.
func TestMalformedForwardedProposalRefused(t *testing.T) {
	var strict atomic.Uint64 // the node whose validator refuses "bad"
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
		id := cfg.ID
		cfg.ValidateCommand = func(cmd []byte) error {
			if string(cmd) == "bad" && strict.Load() == id {
				return errors.New("command \"bad\" refused by the test's validator")
			}
			return nil
		}
	}))
	lead := c.leader()
	f := c.followers(lead)[0]
	other := c.followers(lead)[1]
	c.propose(lead, "before")

	var mu sync.Mutex
	var refused []string
	c.net.SetDrop(func(m core.Message) bool {
		if m.Type == core.MsgPropResp && m.Reject && m.From == lead && m.To == f {
			mu.Lock()
			for _, e := range m.Entries {
				refused = append(refused, string(e.Data))
			}
			mu.Unlock()
		}
		return false
	})
	forged := envelope(1, other, 7, 1, "forged")
	raw := []core.Message{{Type: core.MsgProp, From: f, To: lead, Entries: []core.Entry{
		{Data: []byte("x")},
		{Data: forged},
		{Data: envelope(2, f, 7, 1, "v2")}, // a version this build does not know
		{Data: envelope(1, f, 7, 2, "raw-ok")},
	}}}
	if err := c.nodes[lead].Handler().HandleMessages(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	want := []string{"x", string(forged), string(envelope(2, f, 7, 1, "v2"))}
	await(t, "the leader to refuse the malformed entries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(refused) >= len(want)
	})
	mu.Lock()
	if !slices.Equal(refused, want) {
		t.Fatalf("leader refused %q, want %q", refused, want)
	}
	mu.Unlock()
	c.awaitConverged("before", "raw-ok")

	// A waiter on the follower: its own validator lets "bad" through, the
	// leader's refuses it.
	strict.Store(lead)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.nodes[f].Propose(ctx, []byte("bad"))
	var de *driver.DroppedError
	if !errors.Is(err, driver.ErrInvalidProposal) || !errors.As(err, &de) {
		t.Fatalf("follower's proposal refused by the leader: %v, want a *DroppedError wrapping ErrInvalidProposal", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("refusal took %v: it should come back at once", time.Since(start))
	}
	// On the validating node itself it is refused before submission.
	if _, err := c.nodes[lead].Propose(ctx, []byte("bad")); !errors.Is(err, driver.ErrInvalidProposal) {
		t.Fatalf("leader's own proposal: %v, want ErrInvalidProposal", err)
	}
	c.net.SetDrop(nil)
	c.propose(f, "after")
	c.awaitConverged("before", "raw-ok", "after")
	for _, id := range c.ids {
		for _, cmd := range c.sms[id].data() {
			if cmd == "x" || cmd == "bad" || cmd == "forged" || cmd == "v2" {
				t.Fatalf("node %d applied refused command %q", id, cmd)
			}
		}
	}
}

// TestUndecodableEntryIsFailedNoop: entries that do not decode reach the
// log anyway (written straight into two members' logs, bypassing the
// leader's check: "x", the reproduction, and an envelope of an
// unknown newer version). The leader elected among those two commits and
// replicates them; every member applies them as failed no-ops — the state
// machine never sees them, each is counted and logged — and keeps running,
// through a full restart that replays them.
func TestUndecodableEntryIsFailedNoop(t *testing.T) {
	regs := map[uint64]*prometheus.Registry{}
	c := newCluster(t, 3, withConfig(func(cfg *driver.Config) {
		reg := prometheus.NewRegistry()
		regs[cfg.ID] = reg
		cfg.Registerer = reg
	}))
	lead := c.leader()
	c.propose(lead, "before")
	c.awaitConverged("before")
	await(t, "every log to end at the same committed index", func() bool {
		want := c.nodes[lead].Status().LastIndex
		for _, id := range c.ids {
			st := c.nodes[id].Status()
			if st.LastIndex != want || st.Commit != want {
				return false
			}
		}
		return true
	})
	// Frozen time: no election (and no new entry) while the nodes stop
	// one by one.
	c.stopClock()
	for _, id := range c.ids {
		c.stop(id)
	}
	c.stopClock = c.clock.Run(testTick, tickEvery)
	last, _ := c.stores[1].LastIndex()
	for _, id := range c.ids {
		if l, _ := c.stores[id].LastIndex(); l != last {
			t.Fatalf("node %d's log ends at %d, node 1's at %d", id, l, last)
		}
	}
	bad := [][]byte{[]byte("x"), envelope(2, 1, 1, 1, "from a newer release")}
	for _, id := range []uint64{1, 2} {
		st := c.stores[id]
		hs, _, err := st.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		ents := make([]core.Entry, len(bad))
		for i, d := range bad {
			ents[i] = core.Entry{Index: last + 1 + uint64(i), Term: hs.Term, Data: d}
		}
		if err := st.Log.Save(hs, ents); err != nil {
			t.Fatal(err)
		}
	}
	badLast := last + uint64(len(bad))

	startAll := func() {
		for _, id := range c.ids {
			c.sms[id] = c.sms[id].reopen()
			c.start(id)
		}
	}
	checkApplied := func(round string) {
		t.Helper()
		await(t, round+": every member to apply past the undecodable entries", func() bool {
			for _, id := range c.ids {
				if c.nodes[id].Status().Applied < badLast {
					return false
				}
			}
			return true
		})
		for _, id := range c.ids {
			if got := counterValue(t, regs[id], "rafty_driver_undecodable_entries_total"); got != float64(len(bad)) {
				t.Fatalf("%s: node %d counted %v undecodable entries, want %d", round, id, got, len(bad))
			}
			if c.nodes[id].Status().Stopped {
				t.Fatalf("%s: node %d stopped: %v", round, id, c.nodes[id].Err())
			}
			for _, cmd := range c.sms[id].data() {
				if cmd == "x" || cmd == "from a newer release" {
					t.Fatalf("%s: node %d's state machine received undecodable entry %q", round, id, cmd)
				}
			}
		}
	}
	startAll()
	lead = c.leader()
	if lead == 3 {
		t.Fatalf("node 3 won although its log lacks committed-to-be entries\n%s", c.dump())
	}
	c.propose(lead, "after")
	checkApplied("first start")
	c.awaitConverged("before", "after")

	// A full restart replays the log from the start (the test state
	// machines are not durable): the same no-ops, no stop.
	for _, id := range c.ids {
		c.stop(id)
	}
	startAll()
	checkApplied("after a restart")
	c.propose(c.leader(), "after restart")
	c.awaitConverged("before", "after", "after restart")
}
