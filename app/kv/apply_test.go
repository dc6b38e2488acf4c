package kv

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

func TestApplyPutRecordsModIndex(t *testing.T) {
	s := openStore(t, Options{})
	res := apply(t, s, 5, putCmd("a", "1"), putCmd("b", "x"))
	if r := res[0].(*kvpb.PutResponse); r.Index != 5 || r.PrevKv != nil {
		t.Fatalf("put a: %v", r)
	}
	prev := &kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.PutRequest{Key: []byte("a"), Value: []byte("2"), PrevKv: true}}}
	res = apply(t, s, 7, prev)
	r := res[0].(*kvpb.PutResponse)
	if r.Index != 7 || r.PrevKv == nil || string(r.PrevKv.Value) != "1" || r.PrevKv.ModIndex != 5 {
		t.Fatalf("put a again: %v", r)
	}
	want := map[string]entry{"a": {"2", 7}, "b": {"x", 6}}
	if got := dump(t, s); !maps.Equal(got, want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	if a := mustApplied(t, s); a != 7 {
		t.Fatalf("applied %d, want 7", a)
	}
	// An empty value is a value: the key exists.
	apply(t, s, 8, putCmd("e", ""))
	if got := dump(t, s)["e"]; got != (entry{"", 8}) {
		t.Fatalf("empty value stored as %v", got)
	}
}

func TestApplyDelete(t *testing.T) {
	seed := []string{"a", "b", "c", "d", "p/1", "p/2", "p0", "q", "\xff\xff"}
	tests := []struct {
		name    string
		req     *kvpb.DeleteRequest
		deleted int64
		left    string // keys left, space separated
		prev    string // prev_kvs, if asked
	}{
		{"single", &kvpb.DeleteRequest{Key: []byte("b")}, 1, "a c d p/1 p/2 p0 q \xff\xff", ""},
		{"single missing", &kvpb.DeleteRequest{Key: []byte("zz")}, 0, "a b c d p/1 p/2 p0 q \xff\xff", ""},
		{"single prev", &kvpb.DeleteRequest{Key: []byte("c"), PrevKvs: true}, 1, "a b d p/1 p/2 p0 q \xff\xff", "c=v-c"},
		{"range", &kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("d")}, 2, "a d p/1 p/2 p0 q \xff\xff", ""},
		{"range prev", &kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("d"), PrevKvs: true}, 2, "a d p/1 p/2 p0 q \xff\xff", "b=v-b c=v-c"},
		{"range empty", &kvpb.DeleteRequest{Key: []byte("e"), RangeEnd: []byte("f")}, 0, "a b c d p/1 p/2 p0 q \xff\xff", ""},
		{"prefix", &kvpb.DeleteRequest{Key: []byte("p/"), Prefix: true}, 2, "a b c d p0 q \xff\xff", ""},
		{"prefix of 0xff", &kvpb.DeleteRequest{Key: []byte("\xff"), Prefix: true}, 1, "a b c d p/1 p/2 p0 q", ""},
		{"to the end", &kvpb.DeleteRequest{Key: []byte("p0"), RangeEnd: []byte{0}}, 3, "a b c d p/1 p/2", ""},
		{"everything", &kvpb.DeleteRequest{Prefix: true}, 9, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Options{})
			var cmds []*kvpb.Command
			for _, k := range seed {
				cmds = append(cmds, putCmd(k, "v-"+k))
			}
			apply(t, s, 1, cmds...)
			r := apply(t, s, 100, delCmd(tc.req))[0].(*kvpb.DeleteResponse)
			if r.Deleted != tc.deleted || r.Index != 100 {
				t.Fatalf("deleted %d at %d, want %d at 100", r.Deleted, r.Index, tc.deleted)
			}
			if got := kvString(r.PrevKvs); got != tc.prev {
				t.Fatalf("prev_kvs %q, want %q", got, tc.prev)
			}
			if got := strings.Join(keysOf(dump(t, s)), " "); got != tc.left {
				t.Fatalf("left %q, want %q", got, tc.left)
			}
		})
	}
}

func TestApplyDeletePrevKVsTruncated(t *testing.T) {
	s := openStore(t, Options{MaxResultBytes: 100})
	var cmds []*kvpb.Command
	for i := range 10 {
		cmds = append(cmds, putCmd(fmt.Sprintf("k%d", i), strings.Repeat("v", 30)))
	}
	apply(t, s, 1, cmds...)
	r := apply(t, s, 20, delCmd(&kvpb.DeleteRequest{Key: []byte("k"), Prefix: true, PrevKvs: true}))[0].(*kvpb.DeleteResponse)
	if r.Deleted != 10 || !r.PrevKvsTruncated || len(r.PrevKvs) == 0 || len(r.PrevKvs) >= 10 {
		t.Fatalf("deleted %d, %d prev_kvs, truncated %v", r.Deleted, len(r.PrevKvs), r.PrevKvsTruncated)
	}
	if n := len(dump(t, s)); n != 0 {
		t.Fatalf("%d keys left", n)
	}
}

// cmpReq builds a Compare.
func cmpReq(key string, target kvpb.Compare_Target, result kvpb.Compare_Result, operand any) *kvpb.Compare {
	c := &kvpb.Compare{Key: []byte(key), Target: target, Result: result}
	switch o := operand.(type) {
	case bool:
		c.Exists = o
	case string:
		c.Value = []byte(o)
	case uint64:
		c.ModIndex = o
	}
	return c
}

func TestApplyTxnCompares(t *testing.T) {
	// State: a="m" written at index 1, b="x" at 2; c absent.
	const (
		eq  = kvpb.Compare_EQUAL
		ne  = kvpb.Compare_NOT_EQUAL
		lt  = kvpb.Compare_LESS
		gt  = kvpb.Compare_GREATER
		ex  = kvpb.Compare_EXISTS
		val = kvpb.Compare_VALUE
		mod = kvpb.Compare_MOD_INDEX
	)
	tests := []struct {
		name string
		cmp  []*kvpb.Compare
		want bool
	}{
		{"no compares", nil, true},
		{"exists", []*kvpb.Compare{cmpReq("a", ex, eq, true)}, true},
		{"exists false", []*kvpb.Compare{cmpReq("c", ex, eq, true)}, false},
		{"absent", []*kvpb.Compare{cmpReq("c", ex, eq, false)}, true},
		{"not absent", []*kvpb.Compare{cmpReq("a", ex, ne, false)}, true},
		{"value equal", []*kvpb.Compare{cmpReq("a", val, eq, "m")}, true},
		{"value not equal", []*kvpb.Compare{cmpReq("a", val, ne, "m")}, false},
		{"value less", []*kvpb.Compare{cmpReq("a", val, lt, "n")}, true},
		{"value less false", []*kvpb.Compare{cmpReq("a", val, lt, "m")}, false},
		{"value greater", []*kvpb.Compare{cmpReq("a", val, gt, "l")}, true},
		{"value greater than empty", []*kvpb.Compare{cmpReq("a", val, gt, "")}, true},
		{"value of absent key", []*kvpb.Compare{cmpReq("c", val, ne, "m")}, false},
		{"mod equal", []*kvpb.Compare{cmpReq("b", mod, eq, uint64(2))}, true},
		{"mod less", []*kvpb.Compare{cmpReq("b", mod, lt, uint64(2))}, false},
		{"mod greater", []*kvpb.Compare{cmpReq("b", mod, gt, uint64(1))}, true},
		{"mod of absent key is 0", []*kvpb.Compare{cmpReq("c", mod, eq, uint64(0))}, true},
		{"all hold", []*kvpb.Compare{cmpReq("a", ex, eq, true), cmpReq("b", val, eq, "x")}, true},
		{"one fails", []*kvpb.Compare{cmpReq("a", ex, eq, true), cmpReq("b", val, eq, "y")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Options{})
			apply(t, s, 1, putCmd("a", "m"), putCmd("b", "x"))
			req := &kvpb.TxnRequest{
				Compare: tc.cmp,
				Success: []*kvpb.RequestOp{opPutReq("then", "1")},
				Failure: []*kvpb.RequestOp{opPutReq("else", "1")},
			}
			r := apply(t, s, 3, txnCmd(req))[0].(*kvpb.TxnResponse)
			if r.Succeeded != tc.want {
				t.Fatalf("succeeded %v, want %v", r.Succeeded, tc.want)
			}
			st := dump(t, s)
			branch, other := "then", "else"
			if !tc.want {
				branch, other = other, branch
			}
			if st[branch] != (entry{"1", 3}) {
				t.Fatalf("%s not written at index 3: %v", branch, st)
			}
			if _, ok := st[other]; ok {
				t.Fatalf("%s written too", other)
			}
		})
	}
}

func TestApplyTxnBranchOpsRunInOrder(t *testing.T) {
	s := openStore(t, Options{})
	apply(t, s, 1, putCmd("x/1", "a"), putCmd("x/2", "b"), putCmd("y", "old"))
	req := &kvpb.TxnRequest{
		Compare: []*kvpb.Compare{cmpReq("y", kvpb.Compare_VALUE, kvpb.Compare_EQUAL, "old")},
		Success: []*kvpb.RequestOp{
			opPutReq("x/3", "c"),
			opRangeReq(&kvpb.RangeRequest{Key: []byte("x/"), Prefix: true}),
			opDelReq(&kvpb.DeleteRequest{Key: []byte("x/1"), RangeEnd: []byte("x/3")}),
			opRangeReq(&kvpb.RangeRequest{Key: []byte("x/"), Prefix: true, CountOnly: true}),
			{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte("y"), Value: []byte("new"), PrevKv: true}}},
			opRangeReq(&kvpb.RangeRequest{Key: []byte("y")}),
		},
	}
	r := apply(t, s, 10, txnCmd(req))[0].(*kvpb.TxnResponse)
	if !r.Succeeded || r.Index != 10 || len(r.Responses) != 6 {
		t.Fatalf("txn: %v", r)
	}
	if got := kvString(r.Responses[1].GetRange().Kvs); got != "x/1=a x/2=b x/3=c" {
		t.Fatalf("range after put sees %q", got)
	}
	if d := r.Responses[2].GetDelete().Deleted; d != 2 {
		t.Fatalf("deleted %d", d)
	}
	if c := r.Responses[3].GetRange().Count; c != 1 {
		t.Fatalf("count after delete %d", c)
	}
	if p := r.Responses[4].GetPut().PrevKv; string(p.GetValue()) != "old" || p.GetModIndex() != 3 {
		t.Fatalf("prev kv %v", p)
	}
	if kv := r.Responses[5].GetRange().Kvs; len(kv) != 1 || kv[0].ModIndex != 10 || string(kv[0].Value) != "new" {
		t.Fatalf("read back %v", kv)
	}
	want := map[string]entry{"x/3": {"c", 10}, "y": {"new", 10}}
	if got := dump(t, s); !maps.Equal(got, want) {
		t.Fatalf("state %v, want %v", got, want)
	}
}

// TestApplyBatchIsSequential: commands in one Apply call see each other.
func TestApplyBatchIsSequential(t *testing.T) {
	s := openStore(t, Options{})
	cas := txnCmd(&kvpb.TxnRequest{
		Compare: []*kvpb.Compare{cmpReq("k", kvpb.Compare_MOD_INDEX, kvpb.Compare_EQUAL, uint64(1))},
		Success: []*kvpb.RequestOp{opPutReq("k", "2")},
	})
	res := apply(t, s, 1, putCmd("k", "1"), cas, cas, delCmd(&kvpb.DeleteRequest{Key: []byte("k")}))
	if !res[1].(*kvpb.TxnResponse).Succeeded || res[2].(*kvpb.TxnResponse).Succeeded {
		t.Fatal("second CAS should see the first one's write and fail")
	}
	if d := res[3].(*kvpb.DeleteResponse).Deleted; d != 1 {
		t.Fatalf("delete in the same batch deleted %d", d)
	}
	if n := len(dump(t, s)); n != 0 {
		t.Fatalf("%d keys left", n)
	}
}

func TestApplyRange(t *testing.T) {
	s := openStore(t, Options{MaxResultBytes: 1000})
	var cmds []*kvpb.Command
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		cmds = append(cmds, putCmd(k, "val-"+k))
	}
	cmds = append(cmds, putCmd("zbig1", strings.Repeat("x", 600)), putCmd("zbig2", strings.Repeat("y", 600)))
	apply(t, s, 1, cmds...)
	tests := []struct {
		name  string
		req   *kvpb.RangeRequest
		kvs   string
		more  bool
		count int64
	}{
		{"single", &kvpb.RangeRequest{Key: []byte("b")}, "b=val-b", false, 1},
		{"single missing", &kvpb.RangeRequest{Key: []byte("zz")}, "", false, 0},
		{"span", &kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("d")}, "b=val-b c=val-c", false, 2},
		{"limit", &kvpb.RangeRequest{Key: []byte("c"), RangeEnd: []byte{0}, Limit: 2}, "c=val-c d=val-d", true, 2},
		{"limit exact", &kvpb.RangeRequest{Key: []byte("d"), RangeEnd: []byte("z"), Limit: 2}, "d=val-d e=val-e", false, 2},
		{"keys only", &kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b\x00"), KeysOnly: true}, "a b", false, 2},
		{"count only", &kvpb.RangeRequest{Prefix: true, CountOnly: true}, "", false, 7},
		{"count single", &kvpb.RangeRequest{Key: []byte("a"), CountOnly: true}, "", false, 1},
		{"budget", &kvpb.RangeRequest{Key: []byte("zbig"), Prefix: true}, "zbig1=" + strings.Repeat("x", 600), true, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := apply(t, s, mustApplied(t, s)+1, txnCmd(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opRangeReq(tc.req)}}))
			rr := r[0].(*kvpb.TxnResponse).Responses[0].GetRange()
			if got := kvString(rr.Kvs); got != tc.kvs || rr.More != tc.more || rr.Count != tc.count {
				t.Fatalf("got %q more=%v count=%d, want %q more=%v count=%d", got, rr.More, rr.Count, tc.kvs, tc.more, tc.count)
			}
			// The service's local read answers the same.
			op := rangeOp{key: tc.req.Key, rangeEnd: tc.req.RangeEnd, prefix: tc.req.Prefix, limit: tc.req.Limit,
				keysOnly: tc.req.KeysOnly, countOnly: tc.req.CountOnly}
			local, err := s.rangeLocal(&op, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if kvString(local.Kvs) != tc.kvs || local.More != tc.more || local.Count != tc.count {
				t.Fatalf("local read %q more=%v count=%d", kvString(local.Kvs), local.More, local.Count)
			}
		})
	}
}

// TestApplyRejectsAndChangesNothing: corrupt and invalid commands are
// results, not failures; they change no key, but their index is applied.
func TestApplyRejectsAndChangesNothing(t *testing.T) {
	valid := encode(t, putCmd("k", "v"))
	invalid := []*kvpb.Command{
		putCmd("", "v"),
		delCmd(&kvpb.DeleteRequest{}),
		delCmd(&kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("a")}),
		delCmd(&kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("b")}),
		delCmd(&kvpb.DeleteRequest{Key: []byte("b"), RangeEnd: []byte("c"), Prefix: true}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a")}}}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: 9}}}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_VALUE, Result: 7}}}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{cmpReq("a", kvpb.Compare_EXISTS, kvpb.Compare_LESS, true)}}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{{Key: []byte("a"), Target: kvpb.Compare_EXISTS, Value: []byte("x")}}}),
		txnCmd(&kvpb.TxnRequest{Compare: []*kvpb.Compare{cmpReq("", kvpb.Compare_EXISTS, kvpb.Compare_EQUAL, true)}}),
		// A valid put before an invalid op: the whole txn is refused.
		txnCmd(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opPutReq("k2", "v"), opPutReq("", "v")}}),
		txnCmd(&kvpb.TxnRequest{Failure: []*kvpb.RequestOp{opRangeReq(&kvpb.RangeRequest{Key: []byte("a"), Limit: -1})}}),
		txnCmd(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{{}}}),
		{},
	}
	corrupt := [][]byte{
		{},
		{0xff},
		valid[:len(valid)-1],
		append(slices.Clone(valid), valid...),            // two operations
		append(slices.Clone(valid), 0x08, 0x01),          // unknown field 1 varint... of Command
		{0x0a, 0x03, 0x0a, 0x01},                         // put with truncated key
		{0x0a, 0x04, 0x0a, 0x00, 0x0a, 0x00},             // put key twice
		{0x0a, 0x02, 0x18, 0x80},                         // truncated varint
		{0x0a, 0x02, 0x20, 0x01},                         // unknown put field 4
		{0x0a, 0x02, 0x0d, 0x00},                         // key with fixed32 wire type
		{0x1a, 0x02, 0x08, 0x01},                         // txn field 1 as varint
		{0x1a, 0x04, 0x12, 0x02, 0x0a, 0x00},             // txn op put with empty... then junk
		{0x1a, 0x06, 0x12, 0x04, 0x0a, 0x00, 0x12, 0x00}, // op with two operations
	}
	s := openStore(t, Options{})
	apply(t, s, 1, putCmd("a", "1"))
	before := dump(t, s)
	idx := uint64(2)
	for i, c := range invalid {
		res := apply(t, s, idx, c)
		ce := cmdErr(t, res[0], ErrInvalidCommand)
		if ce.Index != idx {
			t.Fatalf("invalid %d: error index %d", i, ce.Index)
		}
		idx++
	}
	for i, data := range corrupt {
		res, err := s.Apply([]driver.Command{{Index: idx, Data: data}})
		if err != nil {
			t.Fatalf("corrupt %d: Apply failed: %v", i, err)
		}
		ce, ok := res[0].(*CommandError)
		if !ok || !(errors.Is(ce, ErrCorruptCommand) || errors.Is(ce, ErrInvalidCommand)) {
			t.Fatalf("corrupt %d (%x): result %v", i, data, res[0])
		}
		idx++
	}
	if got := dump(t, s); !maps.Equal(got, before) {
		t.Fatalf("state changed: %v, was %v", got, before)
	}
	if a := mustApplied(t, s); a != idx-1 {
		t.Fatalf("applied %d, want %d", a, idx-1)
	}
	if got, want := s.RefusedCommands(), uint64(len(invalid)+len(corrupt)); got != want {
		t.Fatalf("RefusedCommands = %d, want %d", got, want)
	}
}

// TestValidateCommand: ValidateCommand, the driver's check at the proposal
// boundary, gives Apply's verdict: it accepts what Apply executes and
// refuses, with the same error kind, what Apply turns into a failed no-op
// — "x" (issue 13's reproduction) among them. The Store keeps applying
// after such a command.
func TestValidateCommand(t *testing.T) {
	s := openStore(t, Options{})
	cases := []struct {
		data []byte
		want error // nil: valid
	}{
		{encode(t, putCmd("k", "v")), nil},
		{encode(t, txnCmd(&kvpb.TxnRequest{Success: []*kvpb.RequestOp{opPutReq("k2", "v")}})), nil},
		{[]byte("x"), ErrCorruptCommand},
		{encode(t, putCmd("", "v")), ErrInvalidCommand},
		{append(encode(t, putCmd("k", "v")), 0x08, 0x01), ErrCorruptCommand}, // a field this release does not know
	}
	for i, c := range cases {
		err := ValidateCommand(c.data)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Fatalf("case %d: ValidateCommand = %v, want %v", i, err, c.want)
		}
		res, err := s.Apply([]driver.Command{{Index: uint64(i + 1), Data: c.data}})
		if err != nil {
			t.Fatalf("case %d: Apply failed: %v", i, err)
		}
		if c.want == nil {
			if _, bad := res[0].(*CommandError); bad {
				t.Fatalf("case %d: valid command failed at apply: %v", i, res[0])
			}
			continue
		}
		cmdErr(t, res[0], c.want)
	}
	if got := s.RefusedCommands(); got != 3 {
		t.Fatalf("RefusedCommands = %d, want 3", got)
	}
	if a := mustApplied(t, s); a != uint64(len(cases)) {
		t.Fatalf("applied %d, want %d", a, len(cases))
	}
}

func TestApplyReplayIsSkipped(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, 1, putCmd("a", "1"), putCmd("b", "1"), delCmd(&kvpb.DeleteRequest{Key: []byte("a")}))
	want := dump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Applied(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Applied after Close: %v", err)
	}
	if _, err := s.Apply([]driver.Command{{Index: 9, Data: encode(t, putCmd("z", "z"))}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openStoreIn(t, dir, Options{})
	if a := mustApplied(t, s); a != 3 {
		t.Fatalf("applied after reopen %d, want 3", a)
	}
	if got := dump(t, s); !maps.Equal(got, want) {
		t.Fatalf("state after reopen %v, want %v", got, want)
	}
	// The driver re-delivers from Applied()+1; anything older (a replay)
	// is skipped, even in a batch mixing old and new.
	res := apply(t, s, 2, putCmd("b", "replayed"), delCmd(&kvpb.DeleteRequest{Key: []byte("a")}), putCmd("c", "new"))
	cmdErr(t, res[0], ErrAlreadyApplied)
	cmdErr(t, res[1], ErrAlreadyApplied)
	if r, ok := res[2].(*kvpb.PutResponse); !ok || r.Index != 4 {
		t.Fatalf("new command result %v", res[2])
	}
	want["c"] = entry{"new", 4}
	if got := dump(t, s); !maps.Equal(got, want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	res = apply(t, s, 1, putCmd("a", "again"))
	cmdErr(t, res[0], ErrAlreadyApplied)
	if a := mustApplied(t, s); a != 4 {
		t.Fatalf("applied %d after a pure replay", a)
	}
}

func TestApplyIndexesMustIncrease(t *testing.T) {
	s := openStore(t, Options{})
	data := encode(t, putCmd("a", "1"))
	_, err := s.Apply([]driver.Command{{Index: 5, Data: data}, {Index: 5, Data: data}})
	if err == nil || !strings.Contains(err.Error(), "does not follow") {
		t.Fatalf("Apply with repeated index: %v", err)
	}
	// Nothing of the failed call was committed.
	if a := mustApplied(t, s); a != 0 {
		t.Fatalf("applied %d", a)
	}
	if n := len(dump(t, s)); n != 0 {
		t.Fatalf("%d keys written", n)
	}
}
