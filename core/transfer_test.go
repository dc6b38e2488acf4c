package core_test

import (
	"errors"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// TestTransferLeadership: the target campaigns at once on MsgTimeoutNow,
// bypassing PreVote and the voters' leader lease (thesis §3.10).
func TestTransferLeadership(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	term := c.nodes[1].Term()
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if c.leader() != 3 || c.nodes[3].Term() != term+1 {
		t.Fatalf("leader %d term %d after transfer, want 3 in term %d", c.leader(), c.nodes[3].Term(), term+1)
	}
}

// TestTransferCatchesUpLaggingTarget: the leader first brings the target's
// log up to date, then hands over.
func TestTransferCatchesUpLaggingTarget(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.drop = func(m core.Message) bool { return m.To == 3 }
	for i := range 5 {
		if err := c.nodes[1].Propose([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c.stabilize()
	c.drop = nil
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].Propose([]byte("during")); !errors.Is(err, core.ErrTransferInProgress) {
		t.Fatalf("Propose during transfer: %v, want ErrTransferInProgress", err)
	}
	for range 10 {
		c.tick()
		c.stabilize()
		if c.leader() == 3 {
			break
		}
	}
	if c.leader() != 3 {
		t.Fatalf("lagging target not leader after catching up: leader %d", c.leader())
	}
	if got := len(c.appliedData(3)); got != 5 {
		t.Fatalf("new leader applied %d of 5 entries", got)
	}
}

// TestTransferAbortsAfterElectionTimeout: an unreachable target does not
// block proposals forever.
func TestTransferAbortsAfterElectionTimeout(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	c.drop = func(m core.Message) bool { return m.To == 3 || m.From == 3 }
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].Propose([]byte("x")); !errors.Is(err, core.ErrTransferInProgress) {
		t.Fatalf("Propose during transfer: %v", err)
	}
	for range 10 {
		if err := c.nodes[1].Tick(); err != nil {
			t.Fatal(err)
		}
		c.stabilize()
	}
	if c.leader() != 1 {
		t.Fatalf("leader changed to %d", c.leader())
	}
	if err := c.nodes[1].Propose([]byte("x")); err != nil {
		t.Fatalf("Propose after abort: %v", err)
	}
}

// TestTransferErrors: typed errors for impossible targets.
func TestTransferErrors(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.elect(1)
	if err := c.nodes[1].TransferLeadership(9); !errors.Is(err, core.ErrUnknownNode) {
		t.Fatalf("transfer to non-member: %v", err)
	}
	if err := c.nodes[1].TransferLeadership(1); err != nil {
		t.Fatalf("transfer to self: %v", err)
	}
	// From a follower the request is forwarded.
	if err := c.nodes[2].TransferLeadership(2); err != nil {
		t.Fatal(err)
	}
	c.stabilize()
	if c.leader() != 2 {
		t.Fatalf("forwarded transfer: leader %d, want 2", c.leader())
	}
}
