package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

// counter is a replicated counter. A command is a decimal increment; its
// result is the counter's value after applying it.
type counter struct {
	mu      sync.Mutex
	value   int64
	applied uint64
}

// Applied is 0: this counter lives in memory, so after a restart the
// driver replays the whole log into a fresh one.
func (c *counter) Applied() (uint64, error) { return 0, nil }

func (c *counter) Apply(cmds []driver.Command) ([]any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	results := make([]any, len(cmds))
	for i, cmd := range cmds {
		c.applied = cmd.Index
		delta, err := strconv.ParseInt(string(cmd.Data), 10, 64)
		if err != nil {
			// A bad command is the caller's problem, reported as its
			// result; the state machine itself is fine.
			results[i] = fmt.Errorf("counter: bad increment %q", cmd.Data)
			continue
		}
		c.value += delta
		results[i] = c.value
	}
	return results, nil
}

// Snapshot captures the value (small state: a copy is the point-in-time
// view); the driver streams it later from another goroutine.
func (c *counter) Snapshot() (driver.SnapshotSource, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return counterSnapshot{value: c.value}, nil
}

// counterSnapshot is a captured counter value.
type counterSnapshot struct{ value int64 }

func (s counterSnapshot) WriteTo(w io.Writer) (int64, error) {
	n, err := fmt.Fprint(w, s.value)
	return int64(n), err
}

func (s counterSnapshot) Close() error { return nil }

func (c *counter) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.value = v
	return nil
}

// Value reads the local state. Call Node.Read first for a linearizable
// read.
func (c *counter) Value() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value
}

// propose retries proposals that were certainly not applied (typically:
// no leader elected yet), with a short pause between attempts.
func propose(ctx context.Context, n *driver.Node, cmd string) (any, error) {
	for {
		res, err := n.Propose(ctx, []byte(cmd))
		if !errors.Is(err, driver.ErrProposalDropped) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A replicated counter on three in-process nodes. Proposals made on any
// node, followers included, return the state machine's result; Read makes
// a follower's local state linearizable.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	network := drivertest.NewNetwork() // in-memory transport
	defer network.Close()

	peers := []driver.Peer{{ID: 1}, {ID: 2}, {ID: 3}} // no addresses: the in-memory network routes by ID
	nodes := map[uint64]*driver.Node{}
	counters := map[uint64]*counter{}
	for _, p := range peers {
		id := p.ID
		counters[id] = &counter{}
		n, err := driver.Start(ctx, driver.Config{
			ID:           id,
			Peers:        peers,
			Storage:      memlog.New(), // disk.Open(...) in production
			StateMachine: counters[id],
			// Snapshots and log compaction; store.Snapshots() for a
			// disk.Store in production.
			Snapshots:    drivertest.NewSnapshotStore(),
			NewTransport: network.NewTransport(id),
			TickInterval: 10 * time.Millisecond,
		})
		if err != nil {
			fmt.Println("start:", err)
			return
		}
		defer n.Stop()
		nodes[id] = n
	}

	for i, p := range peers {
		id := p.ID
		res, err := propose(ctx, nodes[id], strconv.Itoa(i+1))
		if err != nil {
			fmt.Println("propose:", err)
			return
		}
		fmt.Printf("node %d: +%d -> %v\n", id, i+1, res)
	}

	if err := nodes[3].Read(ctx); err != nil {
		fmt.Println("read:", err)
		return
	}
	fmt.Println("node 3 reads", counters[3].Value())

	// Output:
	// node 1: +1 -> 1
	// node 2: +2 -> 3
	// node 3: +3 -> 6
	// node 3 reads 6
}
