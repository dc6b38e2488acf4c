package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// opKind is what an operation does.
type opKind uint8

const (
	opPut  opKind = iota // Put on a contended key
	opGet                // linearizable Get
	opSGet               // serializable Get (checked per node, not by porcupine)
	opCAS                // Txn: if value(k) = expect (or !exists) then put k new else range k
	opUPut               // Put of a fresh key written once (the lost-write check)
)

func (k opKind) String() string {
	return [...]string{"put", "get", "sget", "cas", "uput"}[k]
}

// outcome is what the client learned of an operation.
type outcome uint8

const (
	outOK      outcome = iota // completed, with a result
	outFail                   // certainly had no effect (writes), or failed (reads)
	outUnknown                // a write that may or may not have taken effect
)

func (o outcome) String() string { return [...]string{"ok", "fail", "unknown"}[o] }

// op is one recorded operation. Times are nanoseconds since the history's
// start; an unknown outcome has Return -1 (it is checked as if it
// returned after everything else).
type op struct {
	Proc   int    `json:"proc"`   // porcupine client: a worker gets a new one after an unknown outcome
	Worker int    `json:"worker"` // -1 for the harness's own reads
	Kind   opKind `json:"kind"`
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`  // put and cas: the value written
	Expect string `json:"expect,omitempty"` // cas: expected value, "" = key absent
	Node   int    `json:"node"`             // node index the request went to
	Inc    [2]int `json:"inc"`              // the node's incarnation when the request was sent and when it returned
	Call   int64  `json:"call"`
	Return int64  `json:"return"`

	Out       outcome `json:"out"`
	Found     bool    `json:"found,omitempty"`     // get, sget, failed cas: the key existed
	Got       string  `json:"got,omitempty"`       // its value
	ModIndex  uint64  `json:"mod_index,omitempty"` // its mod_index
	Applied   uint64  `json:"applied,omitempty"`   // response header's applied index
	Succeeded bool    `json:"succeeded,omitempty"` // cas
	Index     uint64  `json:"index,omitempty"`     // a successful write's log index
	Err       string  `json:"err,omitempty"`
}

// history collects the operations of one schedule.
type history struct {
	base time.Time
	mu   sync.Mutex
	ops  []op
	proc atomic.Int64 // next porcupine client ID
}

func newHistory(workers int) *history {
	h := &history{base: time.Now()}
	h.proc.Store(int64(workers) + 1) // 0..workers-1 are the workers, `workers` the harness
	return h
}

func (h *history) now() int64 { return int64(time.Since(h.base)) }

func (h *history) add(o op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

func (h *history) snapshot() []op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]op(nil), h.ops...)
}

// nodeClients holds one gRPC connection per node slot, shared by every
// worker. Reconnection backoff is short, so a restarted node is used again
// soon. Clients send to the slots of targets when set (the members as the
// cluster lists them, followMembers), else to the cluster's Members.
type nodeClients struct {
	c       cluster
	conns   []*grpc.ClientConn
	kv      []kvpb.KVClient
	targets atomic.Pointer[[]int]
}

// nodes returns the slots clients send to now.
func (nc *nodeClients) nodes() []int {
	if t := nc.targets.Load(); t != nil && len(*t) > 0 {
		return *t
	}
	return nc.c.Members()
}

// nodeAt returns the k-th slot clients send to (modulo their number).
func (nc *nodeClients) nodeAt(k int) int {
	ns := nc.nodes()
	return ns[k%len(ns)]
}

func dialNodes(c cluster) (*nodeClients, error) {
	nc := &nodeClients{c: c}
	for i := range c.Size() {
		conn, err := grpc.NewClient(c.ClientAddr(i),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 300 * time.Millisecond},
				MinConnectTimeout: time.Second,
			}))
		if err != nil {
			nc.Close()
			return nil, err
		}
		nc.conns = append(nc.conns, conn)
		nc.kv = append(nc.kv, kvpb.NewKVClient(conn))
	}
	return nc, nil
}

func (nc *nodeClients) Close() {
	for _, c := range nc.conns {
		_ = c.Close()
	}
}

// workloadConfig shapes the client load of one schedule.
type workloadConfig struct {
	workers   int           // concurrent clients (at least 10)
	keys      int           // contended keys
	prefix    string        // key namespace of the schedule
	opTimeout time.Duration // per operation; longer than any pause
	think     time.Duration // random pause between a worker's operations, up to this
	maxOps    int           // bound on operations per worker
}

// key returns contended key k of the schedule.
func (w *workloadConfig) key(k int) string { return fmt.Sprintf("%sk%d", w.prefix, k) }

// workload runs the workers until stopped.
type workload struct {
	cfg  workloadConfig
	h    *history
	nc   *nodeClients
	size int

	stop chan struct{}
	wg   sync.WaitGroup

	acked atomic.Int64 // writes acknowledged so far (progress)
	// unexpected counts errors the workload's well-formed requests must
	// never get (InvalidArgument, Internal, ...).
	unexpected atomic.Int64
	mu         sync.Mutex
	firstUnexp string
}

func startWorkload(cfg workloadConfig, nc *nodeClients, size int, seed uint64) *workload {
	w := &workload{cfg: cfg, h: newHistory(cfg.workers), nc: nc, size: size, stop: make(chan struct{})}
	for i := range cfg.workers {
		w.wg.Add(1)
		go w.worker(i, rand.New(rand.NewPCG(seed, uint64(i)+1)))
	}
	return w
}

// Stop ends the workers after their operation in flight (bounded by the
// operation timeout).
func (w *workload) Stop() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

func (w *workload) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

func (w *workload) worker(id int, rng *rand.Rand) {
	defer w.wg.Done()
	proc := id
	known := map[string]string{} // last value this worker saw per key, "" = absent
	seq := 0
	for n := 0; n < w.cfg.maxOps && !w.stopped(); n++ {
		seq++
		o := op{Proc: proc, Worker: id, Node: w.nc.nodeAt(rng.IntN(1 << 20)), Key: w.cfg.key(rng.IntN(w.cfg.keys))}
		switch r := rng.IntN(100); {
		case r < 25:
			o.Kind, o.Value = opPut, fmt.Sprintf("w%d.%d", id, seq)
		case r < 50:
			o.Kind = opGet
		case r < 70:
			o.Kind = opSGet
		case r < 90:
			o.Kind, o.Value, o.Expect = opCAS, fmt.Sprintf("w%d.%d", id, seq), known[o.Key]
		default:
			o.Kind, o.Key, o.Value = opUPut, fmt.Sprintf("%su/w%d.%d", w.cfg.prefix, id, seq), fmt.Sprintf("u.w%d.%d", id, seq)
		}
		o = w.do(o)
		if o.Out == outUnknown {
			proc = int(w.h.proc.Add(1)) // the old process may still act: give the worker a new one
		}
		if o.Out == outOK {
			switch o.Kind {
			case opPut:
				known[o.Key] = o.Value
			case opGet, opSGet:
				known[o.Key] = o.Got
			case opCAS:
				if o.Succeeded {
					known[o.Key] = o.Value
				} else {
					known[o.Key] = o.Got
				}
			}
		}
		if w.cfg.think > 0 {
			time.Sleep(time.Duration(rng.Int64N(int64(w.cfg.think))))
		}
		if o.Out != outOK {
			time.Sleep(20 * time.Millisecond) // do not spin on a dead node
		}
	}
}

// do runs one operation and records it.
func (w *workload) do(o op) op {
	o = execute(w.nc, w.h, o, w.cfg.opTimeout)
	if o.Out == outOK && (o.Kind == opPut || o.Kind == opUPut || (o.Kind == opCAS && o.Succeeded)) {
		w.acked.Add(1)
	}
	if o.Err != "" && unexpectedError(o.Err) {
		if w.unexpected.Add(1) == 1 {
			w.mu.Lock()
			w.firstUnexp = fmt.Sprintf("%s %s on node %d: %s", o.Kind, o.Key, o.Node+1, o.Err)
			w.mu.Unlock()
		}
	}
	w.h.add(o)
	return o
}

// execute sends o to its node once (never retried: a retry would blur what
// the client knows) and fills in the result.
func execute(nc *nodeClients, h *history, o op, timeout time.Duration) op {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	kv := nc.kv[o.Node]
	var err error
	o.Inc[0] = nc.c.Incarnation(o.Node)
	o.Call = h.now()
	switch o.Kind {
	case opPut, opUPut:
		var resp *kvpb.PutResponse
		resp, err = kv.Put(ctx, &kvpb.PutRequest{Key: []byte(o.Key), Value: []byte(o.Value)})
		if err == nil {
			o.Index, o.Applied = resp.GetIndex(), resp.GetHeader().GetAppliedIndex()
		}
	case opGet, opSGet:
		var resp *kvpb.GetResponse
		resp, err = kv.Get(ctx, &kvpb.GetRequest{Key: []byte(o.Key), Serializable: o.Kind == opSGet})
		if err == nil {
			o.Found, o.Got, o.ModIndex = resp.GetFound(), string(resp.GetKv().GetValue()), resp.GetKv().GetModIndex()
			o.Applied = resp.GetHeader().GetAppliedIndex()
		}
	case opCAS:
		var resp *kvpb.TxnResponse
		resp, err = kv.Txn(ctx, casRequest(o.Key, o.Expect, o.Value))
		if err == nil {
			o.Succeeded, o.Applied = resp.GetSucceeded(), resp.GetHeader().GetAppliedIndex()
			if o.Succeeded {
				o.Index = resp.GetIndex()
			} else if rs := resp.GetResponses(); len(rs) == 1 {
				if kvs := rs[0].GetRange().GetKvs(); len(kvs) == 1 {
					o.Found, o.Got, o.ModIndex = true, string(kvs[0].GetValue()), kvs[0].GetModIndex()
				}
			} else {
				err = fmt.Errorf("cas: %d responses in the failure branch, want 1", len(rs))
			}
		}
	}
	o.Return = h.now()
	o.Inc[1] = nc.c.Incarnation(o.Node)
	if err != nil {
		o.Err = err.Error()
		o.Out = classify(o.Kind, err)
		if o.Out == outUnknown {
			o.Return = -1
		}
	}
	return o
}

// casRequest is the compare-and-swap transaction: if key's value is expect
// (absent if expect is "") put value, else read the key.
func casRequest(key, expect, value string) *kvpb.TxnRequest {
	cmp := &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_VALUE, Result: kvpb.Compare_EQUAL, Value: []byte(expect)}
	if expect == "" {
		cmp = &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_EQUAL, Exists: false}
	}
	return &kvpb.TxnRequest{
		Compare: []*kvpb.Compare{cmp},
		Success: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte(key), Value: []byte(value)}}}},
		Failure: []*kvpb.RequestOp{{Op: &kvpb.RequestOp_Range{Range: &kvpb.RangeRequest{Key: []byte(key)}}}},
	}
}

// classify decides what a failed operation tells the client. A read that
// failed did nothing. A write is certainly not applied only when the server
// said so in its own words (kv's status messages, app/kv/grpcstatus.go) or
// when the request never left the client (the connection could not be
// made); everything else — a timeout, a connection lost mid-call, Aborted
// — leaves its outcome unknown.
func classify(k opKind, err error) outcome {
	if k == opGet || k == opSGet {
		return outFail
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.InvalidArgument:
		return outFail
	case codes.Unavailable:
		// gRPC sends a call only on a connection whose server preface it
		// has received: a call failing to dial or to read that preface
		// (Docker's port proxy accepts connections for a dead container)
		// never left the client.
		if strings.HasPrefix(msg, "write not applied") || strings.Contains(msg, "Error while dialing") ||
			strings.Contains(msg, "error reading server preface") {
			return outFail
		}
	case codes.DeadlineExceeded, codes.Canceled:
		if strings.Contains(msg, "before the write was submitted; it was not applied") {
			return outFail
		}
	}
	return outUnknown
}

// unexpectedError reports errors a well-formed request must never get,
// whatever the faults: the server rejecting valid input, or reporting a
// bug.
func unexpectedError(msg string) bool {
	for _, c := range []string{"code = InvalidArgument", "code = Internal", "code = Unimplemented", "code = DataLoss", "code = Unknown", "cas: "} {
		if strings.Contains(msg, c) {
			return true
		}
	}
	return false
}

// readKey reads key linearizably through any node, trying each in turn
// until one answers or ctx ends, and records the successful read.
func readKey(ctx context.Context, nc *nodeClients, h *history, size int, key string, start int) (op, error) {
	var last error
	for attempt := 0; ctx.Err() == nil; attempt++ {
		o := execute(nc, h, op{Proc: int(h.proc.Add(1)), Worker: -1, Kind: opGet, Key: key, Node: nc.nodeAt(start + attempt)}, 3*time.Second)
		if o.Out == outOK {
			h.add(o)
			return o, nil
		}
		last = errors.New(o.Err)
		sleepCtx(ctx, 100*time.Millisecond)
	}
	return op{}, fmt.Errorf("reading %s: %v (last error: %v)", key, ctx.Err(), last)
}
