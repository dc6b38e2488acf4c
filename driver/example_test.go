package driver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
	"github.com/rafty-db/rafty/transport"
)

// A replicated counter on three nodes in one process, over the real gRPC
// transport on loopback, each with a write-ahead log on disk. This is the
// README's embedding example, and examples/counter runs it as a program:
// the code between the embed markers is the same in all three places
// (examples/counter's TestReadmeMatchesExamples checks it).
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "rafty-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	if err := run(ctx, dir, os.Stdout); err != nil {
		fmt.Println(err)
	}
	// Output:
	// node 1: counter = 1
	// node 2: counter = 2
	// node 3: counter = 3
	// node 3 reads 3
}

// embed:begin

// counter is the replicated state machine: each command adds one. In memory (Applied 0: replay
// the log on restart), no snapshots (Config.Snapshots is nil: the driver never asks for one).
type counter struct{ n atomic.Int64 }

func (c *counter) Applied() (uint64, error)                 { return 0, nil }
func (c *counter) Snapshot() (driver.SnapshotSource, error) { return nil, errors.ErrUnsupported }
func (c *counter) Restore(io.Reader) error                  { return errors.ErrUnsupported }
func (c *counter) Apply(cmds []driver.Command) (results []any, _ error) {
	for range cmds {
		results = append(results, c.n.Add(1)) // returned by the Propose of that command
	}
	return results, nil
}

// run starts three nodes with logs under dir, proposes on each, reads on node 3, stops them.
func run(ctx context.Context, dir string, out io.Writer) error {
	peers, listeners := []driver.Peer{}, []net.Listener{} // one peer list for driver and transport
	for id := uint64(1); id <= 3; id++ {
		l, err := net.Listen("tcp", "127.0.0.1:0") // a free port, known before any node starts
		if err != nil {
			return err
		}
		defer l.Close() // the transport owns it once built; this covers early returns
		peers, listeners = append(peers, driver.Peer{ID: id, Addr: l.Addr().String()}), append(listeners, l)
	}
	nodes, counters := []*driver.Node{}, []*counter{{}, {}, {}}
	for i, p := range peers {
		store, err := disk.Open(filepath.Join(dir, fmt.Sprint(p.ID)), disk.DefaultOptions())
		if err != nil {
			return err
		}
		node, err := driver.Start(ctx, driver.Config{ID: p.ID, Peers: peers, Storage: store, StateMachine: counters[i],
			NewTransport: func(h driver.MessageHandler) (driver.Transport, error) { // the node starts and closes it
				return transport.New(transport.Config{ClusterID: 7, NodeID: p.ID, Listener: listeners[i], Peers: peers, Handler: h})
			}})
		if err != nil {
			return errors.Join(err, store.Close()) // the node owns the store only once started
		}
		defer node.Stop() // waits for its goroutines, closes its transport and store
		nodes = append(nodes, node)
	}
	for _, node := range nodes {
		res, err := node.Propose(ctx, []byte("+1"))
		for errors.Is(err, driver.ErrProposalDropped) { // certainly not applied (no leader yet): retry
			time.Sleep(50 * time.Millisecond)
			res, err = node.Propose(ctx, []byte("+1"))
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "node %d: counter = %d\n", node.ID(), res)
	}
	if err := nodes[2].Read(ctx); err != nil { // linearizable: node 3 has applied every write above
		return err
	}
	fmt.Fprintln(out, "node 3 reads", counters[2].n.Load())
	return nil
}

// embed:end

// The same counter on three nodes in one process with drivertest's
// in-memory network and core/memlog's in-memory log instead of gRPC and
// disk: how an embedder tests its state machine in a whole cluster
// without sockets or files (drivertest.Clock adds control over time).
// Proposals made on any node, followers included, return the state
// machine's result; Read makes a follower's local state linearizable.
func Example_inMemory() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	network := drivertest.NewNetwork()
	defer network.Close()

	peers := []driver.Peer{{ID: 1}, {ID: 2}, {ID: 3}} // no addresses: the network routes by ID
	nodes, counters := []*driver.Node{}, []*counter{{}, {}, {}}
	for i, p := range peers {
		n, err := driver.Start(ctx, driver.Config{
			ID: p.ID, Peers: peers, Storage: memlog.New(), StateMachine: counters[i],
			NewTransport: network.NewTransport(p.ID),
			TickInterval: 10 * time.Millisecond, // a faster cluster for tests
		})
		if err != nil {
			fmt.Println("start:", err)
			return
		}
		defer n.Stop()
		nodes = append(nodes, n)
	}
	if _, err := nodes[0].WaitLeader(ctx); err != nil {
		fmt.Println("no leader:", err)
		return
	}
	for _, n := range nodes {
		res, err := n.Propose(ctx, []byte("+1"))
		for errors.Is(err, driver.ErrProposalDropped) { // a leader change: not applied, retry
			time.Sleep(10 * time.Millisecond)
			res, err = n.Propose(ctx, []byte("+1"))
		}
		if err != nil {
			fmt.Println("propose:", err)
			return
		}
		fmt.Printf("node %d: counter = %d\n", n.ID(), res)
	}
	if err := nodes[2].Read(ctx); err != nil {
		fmt.Println("read:", err)
		return
	}
	fmt.Println("node 3 reads", counters[2].n.Load())

	// Output:
	// node 1: counter = 1
	// node 2: counter = 2
	// node 3: counter = 3
	// node 3 reads 3
}
