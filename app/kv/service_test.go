package kv

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// retry repeats call while it fails with Unavailable, which promises that
// nothing happened (a leader change under a loaded test machine).
func retry[T any](t *testing.T, what string, call func(ctx context.Context) (T, error)) T {
	t.Helper()
	deadline := time.Now().Add(awaitTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := call(ctx)
		cancel()
		if err == nil {
			return res
		}
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func checkHeader(t *testing.T, h *kvpb.ResponseHeader, member uint64, minApplied uint64) {
	t.Helper()
	if h == nil || h.ClusterId != testClusterID || h.MemberId != member || h.RaftTerm == 0 || h.AppliedIndex < minApplied {
		t.Fatalf("header %v, want cluster %d member %d term > 0 applied >= %d", h, testClusterID, member, minApplied)
	}
}

func TestServiceEndToEnd(t *testing.T) {
	c := newTestCluster(t, 3, Limits{})
	lead := c.leader()
	fs := c.followers(lead)
	f1, f2 := c.members[fs[0]], c.members[fs[1]]
	leader := c.members[lead]

	t.Run("put on a follower, linearizable get on another", func(t *testing.T) {
		put := retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return f1.client.Put(ctx, &kvpb.PutRequest{Key: []byte("k1"), Value: []byte("v1")})
		})
		checkHeader(t, put.Header, f1.id, put.Index)
		// No waiting: a linearizable read anywhere must see the write.
		get := retry(t, "get", func(ctx context.Context) (*kvpb.GetResponse, error) {
			return f2.client.Get(ctx, &kvpb.GetRequest{Key: []byte("k1")})
		})
		if !get.Found || string(get.Kv.Value) != "v1" || get.Kv.ModIndex != put.Index {
			t.Fatalf("get on follower %d: %v (put at %d)", f2.id, get, put.Index)
		}
		checkHeader(t, get.Header, f2.id, put.Index)
		missing := retry(t, "get missing", func(ctx context.Context) (*kvpb.GetResponse, error) {
			return leader.client.Get(ctx, &kvpb.GetRequest{Key: []byte("nope")})
		})
		if missing.Found || missing.Kv != nil {
			t.Fatalf("missing key: %v", missing)
		}
	})

	t.Run("serializable get", func(t *testing.T) {
		put := retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return leader.client.Put(ctx, &kvpb.PutRequest{Key: []byte("s"), Value: []byte("1"), PrevKv: true})
		})
		for _, m := range c.members {
			await(t, fmt.Sprintf("member %d to apply the put locally", m.id), func() bool {
				get, err := m.client.Get(ctxT(t), &kvpb.GetRequest{Key: []byte("s"), Serializable: true})
				if err != nil {
					t.Fatalf("serializable get: %v", err)
				}
				return get.Found && get.Kv.ModIndex == put.Index
			})
		}
	})

	t.Run("range", func(t *testing.T) {
		for _, k := range []string{"r/a", "r/b", "r/c", "r/d", "r/e", "s/x"} {
			retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
				return f2.client.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte("v-" + k)})
			})
		}
		tests := []struct {
			req   *kvpb.RangeRequest
			kvs   string
			more  bool
			count int64
		}{
			{&kvpb.RangeRequest{Key: []byte("r/"), Prefix: true}, "r/a=v-r/a r/b=v-r/b r/c=v-r/c r/d=v-r/d r/e=v-r/e", false, 5},
			{&kvpb.RangeRequest{Key: []byte("r/"), Prefix: true, Limit: 2}, "r/a=v-r/a r/b=v-r/b", true, 2},
			{&kvpb.RangeRequest{Key: []byte("r/"), Prefix: true, CountOnly: true}, "", false, 5},
			{&kvpb.RangeRequest{Key: []byte("r/"), Prefix: true, KeysOnly: true, Limit: 3}, "r/a r/b r/c", true, 3},
			{&kvpb.RangeRequest{Key: []byte("r/b"), RangeEnd: []byte("r/d")}, "r/b=v-r/b r/c=v-r/c", false, 2},
			{&kvpb.RangeRequest{Key: []byte("r/e"), RangeEnd: []byte{0}, Serializable: true}, "", false, 0},
		}
		for i, tc := range tests {
			resp := retry(t, "range", func(ctx context.Context) (*kvpb.RangeResponse, error) {
				return f1.client.Range(ctx, tc.req)
			})
			if i == len(tests)-1 {
				// Serializable: f1 may lag; check it catches up.
				await(t, "serializable range", func() bool {
					resp, _ = f1.client.Range(ctxT(t), tc.req)
					return resp != nil && resp.Count == 3
				})
				if kvString(resp.Kvs) != "r/e=v-r/e s=1 s/x=v-s/x" {
					t.Fatalf("serializable range: %q", kvString(resp.Kvs))
				}
				continue
			}
			if got := kvString(resp.Kvs); got != tc.kvs || resp.More != tc.more || resp.Count != tc.count {
				t.Fatalf("range %v: %q more=%v count=%d, want %q more=%v count=%d", tc.req, got, resp.More, resp.Count, tc.kvs, tc.more, tc.count)
			}
			checkHeader(t, resp.Header, f1.id, 1)
			if tc.req.KeysOnly {
				for _, kv := range resp.Kvs {
					if len(kv.Value) != 0 || kv.ModIndex == 0 {
						t.Fatalf("keys-only pair %v", kv)
					}
				}
			}
		}
	})

	t.Run("txn compare-and-swap", func(t *testing.T) {
		cas := func(from, to string) *kvpb.TxnRequest {
			return &kvpb.TxnRequest{
				Compare: []*kvpb.Compare{{Key: []byte("cas"), Target: kvpb.Compare_VALUE, Result: kvpb.Compare_EQUAL, Value: []byte(from)}},
				Success: []*kvpb.RequestOp{opPutReq("cas", to)},
				Failure: []*kvpb.RequestOp{opRangeReq(&kvpb.RangeRequest{Key: []byte("cas")})},
			}
		}
		create := &kvpb.TxnRequest{
			Compare: []*kvpb.Compare{{Key: []byte("cas"), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_EQUAL, Exists: false}},
			Success: []*kvpb.RequestOp{opPutReq("cas", "1")},
		}
		r := retry(t, "create", func(ctx context.Context) (*kvpb.TxnResponse, error) { return f1.client.Txn(ctx, create) })
		if !r.Succeeded {
			t.Fatalf("create: %v", r)
		}
		checkHeader(t, r.Header, f1.id, r.Index)
		r = retry(t, "cas ok", func(ctx context.Context) (*kvpb.TxnResponse, error) { return f2.client.Txn(ctx, cas("1", "2")) })
		if !r.Succeeded || r.Responses[0].GetPut().Index != r.Index {
			t.Fatalf("cas 1->2: %v", r)
		}
		r = retry(t, "cas stale", func(ctx context.Context) (*kvpb.TxnResponse, error) { return leader.client.Txn(ctx, cas("1", "3")) })
		if r.Succeeded {
			t.Fatalf("stale cas succeeded: %v", r)
		}
		if got := r.Responses[0].GetRange().Kvs; len(got) != 1 || string(got[0].Value) != "2" {
			t.Fatalf("failure branch read %v", got)
		}
	})

	t.Run("delete", func(t *testing.T) {
		d := retry(t, "delete prefix", func(ctx context.Context) (*kvpb.DeleteResponse, error) {
			return f2.client.Delete(ctx, &kvpb.DeleteRequest{Key: []byte("r/"), Prefix: true, PrevKvs: true})
		})
		if d.Deleted != 5 || len(d.PrevKvs) != 5 {
			t.Fatalf("delete prefix: %v", d)
		}
		checkHeader(t, d.Header, f2.id, d.Index)
		cnt := retry(t, "count", func(ctx context.Context) (*kvpb.RangeResponse, error) {
			return f1.client.Range(ctx, &kvpb.RangeRequest{Key: []byte("r/"), Prefix: true, CountOnly: true})
		})
		if cnt.Count != 0 {
			t.Fatalf("%d keys left", cnt.Count)
		}
	})

	t.Run("status and convergence", func(t *testing.T) {
		var want uint64
		await(t, "all members to apply the same index", func() bool {
			want = leader.store.AppliedIndex()
			for _, m := range c.members {
				if m.store.AppliedIndex() != want {
					return false
				}
			}
			return true
		})
		// The test clock runs on wall time, so on a loaded machine an
		// election can happen at any moment: lead (captured at the start)
		// need not lead now, and members can disagree while one is under
		// way. What must hold is that the members settle on one leader in
		// one term, which alone reports the leader role; so poll until a
		// sweep of Status calls agrees, while checking on every sweep what
		// holds regardless of elections.
		hashes := map[uint64]*kvpb.StatusResponse{} // by hash index
		await(t, "every member to report the same leader and term", func() bool {
			var ldr, term uint64
			agree := true
			for _, m := range c.members {
				st, err := m.client.Status(ctxT(t), &kvpb.StatusRequest{Hash: true})
				if err != nil {
					t.Fatal(err)
				}
				if st.MemberId != m.id || st.Term == 0 ||
					st.AppliedIndex < want || st.DbSizeBytes == 0 || st.HashKeys == 0 {
					t.Fatalf("status of %d: %v", m.id, st)
				}
				checkHeader(t, st.Header, m.id, want)
				if h := hashes[st.HashIndex]; h != nil && (h.Hash != st.Hash || h.HashKeys != st.HashKeys) {
					t.Fatalf("members disagree at index %d: %v vs %v", st.HashIndex, h, st)
				}
				hashes[st.HashIndex] = st
				if ldr == 0 {
					ldr, term = st.Leader, st.Term
				}
				if st.Leader == 0 || st.Leader != ldr || st.Term != term || (m.id == st.Leader) != (st.Role == "leader") {
					agree = false // an election under way
				}
				// The commit index comes from the node's published status,
				// which the loop refreshes after the store applied (seen:
				// commit 12, applied 13 on a loaded machine): it catches up.
				if st.CommitIndex < want {
					agree = false
				}
			}
			return agree
		})
	})

	t.Run("health", func(t *testing.T) {
		for _, m := range c.members {
			for _, svc := range []string{"", "rafty.kv.v1.KV"} {
				await(t, "SERVING", func() bool {
					r, err := m.health.Check(ctxT(t), &healthpb.HealthCheckRequest{Service: svc})
					return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
				})
			}
		}
	})

	t.Run("maximal put", func(t *testing.T) {
		lim := c.limits.withDefaults()
		key := bytes.Repeat([]byte("k"), lim.MaxKeyBytes)
		val := bytes.Repeat([]byte("v"), lim.MaxValueBytes)
		put := retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return f1.client.Put(ctx, &kvpb.PutRequest{Key: key, Value: val})
		})
		get := retry(t, "get", func(ctx context.Context) (*kvpb.GetResponse, error) {
			return f2.client.Get(ctx, &kvpb.GetRequest{Key: key})
		})
		if !get.Found || !bytes.Equal(get.Kv.Value, val) || get.Kv.ModIndex != put.Index {
			t.Fatalf("maximal pair read back wrong (found %v, %d bytes)", get.Found, len(get.Kv.GetValue()))
		}
	})

	t.Run("bad input", func(t *testing.T) { testBadInput(t, c, f1) })
}

// testBadInput sends every RPC malformed or oversized requests: each
// fails with InvalidArgument naming the problem, and nothing changes.
func testBadInput(t *testing.T, c *testCluster, m *member) {
	lim := c.limits.withDefaults()
	long := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	put := func(r *kvpb.PutRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := m.client.Put(ctx, r); return err }
	}
	get := func(r *kvpb.GetRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := m.client.Get(ctx, r); return err }
	}
	del := func(r *kvpb.DeleteRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := m.client.Delete(ctx, r); return err }
	}
	rng := func(r *kvpb.RangeRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := m.client.Range(ctx, r); return err }
	}
	txn := func(r *kvpb.TxnRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := m.client.Txn(ctx, r); return err }
	}
	manyCompares := &kvpb.TxnRequest{}
	for range lim.MaxTxnOps + 1 {
		manyCompares.Compare = append(manyCompares.Compare, &kvpb.Compare{Key: []byte("a"), Target: kvpb.Compare_EXISTS})
	}
	manyOps := &kvpb.TxnRequest{}
	for range lim.MaxTxnOps + 1 {
		manyOps.Failure = append(manyOps.Failure, opPutReq("a", "b"))
	}
	half := string(long(lim.MaxValueBytes * 6 / 10))
	tests := []struct {
		name string
		call func(context.Context) error
		msg  string
	}{
		{"Put empty key", put(&kvpb.PutRequest{Value: []byte("v")}), "put: key is empty"},
		{"Put long key", put(&kvpb.PutRequest{Key: long(lim.MaxKeyBytes + 1)}), fmt.Sprintf("key is %d bytes, over the limit of %d", lim.MaxKeyBytes+1, lim.MaxKeyBytes)},
		{"Put long value", put(&kvpb.PutRequest{Key: []byte("k"), Value: long(lim.MaxValueBytes + 1)}), fmt.Sprintf("value is %d bytes, over the limit of %d", lim.MaxValueBytes+1, lim.MaxValueBytes)},
		{"Put request too large", put(&kvpb.PutRequest{Key: []byte("k"), Value: long(lim.MaxRequestBytes)}), "over the limit of " + fmt.Sprint(lim.MaxRequestBytes)},
		{"Get empty key", get(&kvpb.GetRequest{}), "key is empty"},
		{"Get long key", get(&kvpb.GetRequest{Key: long(lim.MaxKeyBytes + 1)}), "over the limit"},
		{"Delete empty key", del(&kvpb.DeleteRequest{}), "delete: key is empty"},
		{"Delete backwards range", del(&kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("a")}), "does not sort after key"},
		{"Delete prefix and range_end", del(&kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("c"), Prefix: true}), "mutually exclusive"},
		{"Delete long key", del(&kvpb.DeleteRequest{Key: long(lim.MaxKeyBytes + 1), Prefix: true}), "over the limit"},
		{"Range negative limit", rng(&kvpb.RangeRequest{Key: []byte("a"), Limit: -1}), "limit -1 is negative"},
		{"Range empty key", rng(&kvpb.RangeRequest{}), "key is empty"},
		{"Range backwards", rng(&kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a")}), "does not sort after key"},
		{"Range prefix and range_end", rng(&kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("c"), Prefix: true}), "mutually exclusive"},
		{"Range long range_end", rng(&kvpb.RangeRequest{Key: []byte("a"), RangeEnd: long(lim.MaxKeyBytes + 1)}), "range_end is"},
		{"Txn too many compares", txn(manyCompares), fmt.Sprintf("%d compares, over the limit of %d", lim.MaxTxnOps+1, lim.MaxTxnOps)},
		{"Txn too many ops", txn(manyOps), "failure ops, over the limit"},
		{"Txn unspecified target", txn(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a")}}}), "compare[0]: target is unspecified"},
		{"Txn EXISTS with LESS", txn(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_LESS}}}), "allows only EQUAL and NOT_EQUAL"},
		{"Txn unknown result", txn(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_VALUE, Result: 9}}}), "unknown result 9"},
		{"Txn compare empty key", txn(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Target: kvpb.Compare_EXISTS}}}), "compare[0]: key is empty"},
		{"Txn compare long value", txn(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_VALUE, Value: long(lim.MaxValueBytes + 1)}}}), "compare[0]: value is"},
		{"Txn empty op", txn(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opPutReq("ok", "1"), {}}}), "success[1]: operation is empty"},
		{"Txn op empty key", txn(&kvpb.TxnRequest{Failure: []*kvpb.RequestOp{opPutReq("", "1")}}), "failure[0]: put: key is empty"},
		{"Txn op bad range", txn(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opRangeReq(&kvpb.RangeRequest{Key: []byte("a"), Limit: -5})}}), "success[0]: range: limit -5 is negative"},
		{"Txn op long key", txn(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opDelReq(&kvpb.DeleteRequest{Key: long(lim.MaxKeyBytes + 1)})}}), "success[0]: delete: key is"},
		{"Txn request too large", txn(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opPutReq("a", half), opPutReq("b", half)}}), "request is"},
		// Status takes no input that could be invalid (one bool).
	}
	// A leader whose log holds nothing uncommitted or unapplied: while it
	// leads in this term, its last index moves only if something is
	// proposed. (The store's applied index is no measure: empty entries
	// do not reach it.)
	var (
		leader *member
		ns     driver.Status
	)
	await(t, "a leader with its whole log applied", func() bool {
		leader = c.members[c.leader()]
		ns = leader.node.Status()
		return ns.Role == core.RoleLeader && ns.Applied == ns.Commit && ns.Commit == ns.LastIndex
	})
	before, err := leader.client.Status(ctxT(t), &kvpb.StatusRequest{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctxT(t))
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.msg) ||
				!strings.HasPrefix(st.Message(), "invalid request: ") {
				t.Fatalf("got %v, want InvalidArgument containing %q", err, tc.msg)
			}
		})
	}
	after, err := leader.client.Status(ctxT(t), &kvpb.StatusRequest{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if after.Hash != before.Hash || after.HashKeys != before.HashKeys {
		t.Fatal("bad requests changed the data")
	}
	// An election (the clock runs on wall time) appends an empty entry,
	// but also moves the term on.
	if ns2 := leader.node.Status(); ns2.LastIndex != ns.LastIndex && ns2.Term == ns.Term {
		t.Fatalf("last index moved from %d to %d in term %d: something was proposed", ns.LastIndex, ns2.LastIndex, ns.Term)
	}
}

// TestServiceWithoutLeader: one member of three running can never elect
// a leader. Writes and linearizable reads fail fast with Unavailable;
// serializable reads and Status still answer; health says NOT_SERVING.
func TestServiceWithoutLeader(t *testing.T) {
	c := newTestCluster(t, 3, Limits{}, 1)
	m := c.members[1]
	// Let a few election timeouts pass so the member has tried and failed.
	start := c.clock.Now()
	await(t, "election timeouts to pass", func() bool { return c.clock.Now().Sub(start) > 3*testElectionTicks*testTick })

	calls := map[string]func(context.Context) error{
		"Put": func(ctx context.Context) error {
			_, err := m.client.Put(ctx, &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
			return err
		},
		"Delete": func(ctx context.Context) error {
			_, err := m.client.Delete(ctx, &kvpb.DeleteRequest{Key: []byte("k")})
			return err
		},
		"Txn": func(ctx context.Context) error {
			_, err := m.client.Txn(ctx, &kvpb.TxnRequest{Success: []*kvpb.RequestOp{opPutReq("k", "v")}})
			return err
		},
		"Get": func(ctx context.Context) error {
			_, err := m.client.Get(ctx, &kvpb.GetRequest{Key: []byte("k")})
			return err
		},
		"Range": func(ctx context.Context) error {
			_, err := m.client.Range(ctx, &kvpb.RangeRequest{Prefix: true})
			return err
		},
	}
	for name, call := range calls {
		err := call(ctxT(t))
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
			t.Fatalf("%s without leader: %v, want Unavailable", name, err)
		}
		if name == "Put" && !strings.Contains(err.Error(), "safe to retry") {
			t.Fatalf("Put error does not say it is safe to retry: %v", err)
		}
	}
	// A member that never heard from a leader since it started cannot know
	// whether its state is older than one it served before a power cut.
	_, err := m.client.Get(ctxT(t), &kvpb.GetRequest{Key: []byte("k"), Serializable: true})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not caught up since restart") {
		t.Fatalf("serializable get before catching up: %v, want Unavailable (not caught up since restart)", err)
	}
	st, err := m.client.Status(ctxT(t), &kvpb.StatusRequest{})
	if err != nil || st.Leader != 0 || st.Role == "leader" {
		t.Fatalf("status: %v, %v", st, err)
	}
	r, err := m.health.Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health: %v, %v", r, err)
	}
	if a := m.store.AppliedIndex(); a != 0 {
		t.Fatalf("applied %d", a)
	}
}

// TestServiceDeadline: a leader cut off from its followers, with protocol
// time frozen so it cannot notice, accepts a write it can never commit.
// The deadline (here Limits.RequestTimeout, as the client sets none) ends
// the wait with DeadlineExceeded and a message saying the outcome is
// unknown; a linearizable read times out too.
func TestServiceDeadline(t *testing.T) {
	c := newTestCluster(t, 3, Limits{RequestTimeout: 200 * time.Millisecond})
	lead := c.leader()
	m := c.members[lead]
	c.stopClock()
	c.net.Isolate(lead, c.ids...)
	defer func() {
		c.net.HealAll()
		c.stopClock = c.clock.Run(testTick, tickEvery)
	}()

	// No client deadline: the server's RequestTimeout applies.
	_, err := m.client.Put(context.Background(), &kvpb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "may or may not have been applied") {
		t.Fatalf("put on isolated leader: %v", err)
	}
	_, err = m.client.Get(context.Background(), &kvpb.GetRequest{Key: []byte("k")})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("linearizable get on isolated leader: %v", err)
	}
}

// TestServiceFollowerSeesOwnWrite: a write acknowledged by a member is
// visible to a serializable read on that member at once (the response is
// sent only after the local apply).
func TestServiceFollowerSeesOwnWrite(t *testing.T) {
	c := newTestCluster(t, 3, Limits{})
	f := c.members[c.followers(c.leader())[0]]
	for i := range 20 {
		k := []byte(fmt.Sprintf("own-%d", i))
		put := retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return f.client.Put(ctx, &kvpb.PutRequest{Key: k, Value: k})
		})
		get, err := f.client.Get(ctxT(t), &kvpb.GetRequest{Key: k, Serializable: true})
		if err != nil || !get.Found || get.Kv.ModIndex != put.Index {
			t.Fatalf("own write %d not visible: %v %v", i, get, err)
		}
	}
}

// TestNewServiceValidates covers constructor errors.
func TestNewServiceValidates(t *testing.T) {
	if _, err := NewService(nil, nil, 1, Limits{}); err == nil {
		t.Fatal("nil node accepted")
	}
	s := openStore(t, Options{})
	if _, err := newService(s, &fakeNode{}, 1, Limits{MaxKeyBytes: -1}); err == nil || !strings.Contains(err.Error(), "MaxKeyBytes") {
		t.Fatalf("bad limits: %v", err)
	}
	if _, err := newService(nil, &fakeNode{}, 1, Limits{}); err == nil {
		t.Fatal("nil store accepted")
	}
	if err := (Limits{MaxKeyBytes: 10, MaxRequestBytes: 5}).Validate(); err == nil {
		t.Fatal("key limit above request limit accepted")
	}
	if DefaultLimits().MaxProposalBytes() <= DefaultMaxRequestBytes {
		t.Fatal("MaxProposalBytes leaves no room for the command envelope")
	}
}

// TestServiceMemberRestart: a member restarted on its Raft log and Pebble
// store resumes from its stored applied index (the driver re-delivers only
// later commands; a replayed one would be skipped), catches up with the
// writes it missed, and converges to the same data as the others.
func TestServiceMemberRestart(t *testing.T) {
	c := newTestCluster(t, 3, Limits{})
	lead := c.leader()
	f := c.followers(lead)[0]
	put := func(k, v string) {
		retry(t, "put", func(ctx context.Context) (*kvpb.PutResponse, error) {
			return c.members[lead].client.Put(ctx, &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)})
		})
	}
	for i := range 10 {
		put(fmt.Sprint("a", i), "1")
	}
	await(t, "the follower to apply", func() bool {
		return c.members[f].store.AppliedIndex() == c.members[lead].store.AppliedIndex()
	})
	old := c.members[f]
	before := old.store.AppliedIndex()
	c.stop(f)
	for i := range 10 {
		put(fmt.Sprint("b", i), "2")
	}
	reopened, err := OpenStore(old.dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a := mustApplied(t, reopened); a != before {
		t.Fatalf("reopened store at applied %d, was %d", a, before)
	}
	if err := reopened.Close(); err != nil {
		t.Fatal(err)
	}
	m := c.startOn(f, old.dir, old.log)
	put("c", "3")
	lead = c.leader()
	await(t, "the restarted member to catch up", func() bool {
		return m.store.AppliedIndex() == c.members[lead].store.AppliedIndex()
	})
	want, got := mustHash(t, c.members[lead].store), mustHash(t, m.store)
	if want != got || got.Keys != 21 {
		t.Fatalf("restarted member hash %+v, leader %+v", got, want)
	}
}
