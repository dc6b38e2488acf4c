package chaos

import (
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Tests of the checker itself: it must accept what is linearizable and
// catch each kind of violation the suite looks for, or a green run would
// mean nothing.

func put(key, value string, call, ret int64) op {
	return op{Kind: opPut, Key: key, Value: value, Call: call, Return: ret, Index: uint64(ret)}
}

func get(key, got string, call, ret int64) op {
	return op{Kind: opGet, Key: key, Found: got != "", Got: got, Call: call, Return: ret, ModIndex: 1}
}

func unknown(o op) op {
	o.Out, o.Return = outUnknown, -1
	return o
}

func cas(key, expect, value string, ok bool, cur string, call, ret int64) op {
	return op{Kind: opCAS, Key: key, Expect: expect, Value: value, Succeeded: ok, Found: cur != "", Got: cur, Call: call, Return: ret}
}

func TestCheckerLinearizability(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []op
		want porcupine.CheckResult
	}{
		{"sequential", []op{put("k", "a", 0, 10), get("k", "a", 20, 30), put("k", "b", 40, 50), get("k", "b", 60, 70)}, porcupine.Ok},
		{"absent at first", []op{get("k", "", 0, 10), put("k", "a", 20, 30), get("k", "a", 40, 50)}, porcupine.Ok},
		{"concurrent read may see either", []op{put("k", "a", 0, 10), put("k", "b", 20, 60), get("k", "a", 30, 40), get("k", "b", 45, 50)}, porcupine.Ok},
		{"stale read", []op{put("k", "a", 0, 10), put("k", "b", 20, 30), get("k", "a", 40, 50)}, porcupine.Illegal},
		{"read goes back", []op{put("k", "a", 0, 10), put("k", "b", 20, 100), get("k", "b", 30, 40), get("k", "a", 50, 60)}, porcupine.Illegal},
		{"read of nothing after a write", []op{put("k", "a", 0, 10), get("k", "", 20, 30)}, porcupine.Illegal},
		{"unknown write never seen", []op{put("k", "a", 0, 10), unknown(put("k", "b", 20, 0)), get("k", "a", 40, 50)}, porcupine.Ok},
		{"unknown write seen late", []op{put("k", "a", 0, 10), unknown(put("k", "b", 20, 0)), get("k", "a", 40, 50), get("k", "b", 60, 70)}, porcupine.Ok},
		{"unknown write seen, then undone", []op{put("k", "a", 0, 10), unknown(put("k", "b", 20, 0)), get("k", "b", 40, 50), get("k", "a", 60, 70)}, porcupine.Illegal},
		{"cas chain", []op{cas("k", "", "a", true, "", 0, 10), cas("k", "", "b", false, "a", 20, 30), cas("k", "a", "c", true, "", 40, 50), get("k", "c", 60, 70)}, porcupine.Ok},
		{"cas succeeded on a stale value", []op{put("k", "a", 0, 10), put("k", "b", 20, 30), cas("k", "a", "c", true, "", 40, 50)}, porcupine.Illegal},
		{"failed cas reports a stale value", []op{put("k", "a", 0, 10), put("k", "b", 20, 30), cas("k", "x", "c", false, "a", 40, 50)}, porcupine.Illegal},
		{"failed cas whose compare held", []op{put("k", "a", 0, 10), cas("k", "a", "c", false, "a", 20, 30)}, porcupine.Illegal},
		{"unknown write never seen, dropped", []op{put("k", "a", 0, 10), unknown(put("k", "b", 20, 0)), unknown(cas("k", "a", "c", false, "", 25, 0)), get("k", "a", 40, 50), put("k", "d", 60, 70), get("k", "d", 80, 90)}, porcupine.Ok},
		{"unknown write only compared against", []op{put("k", "a", 0, 10), unknown(put("k", "b", 20, 0)), cas("k", "b", "c", true, "", 40, 50), get("k", "c", 60, 70)}, porcupine.Ok},
		{"unknown cas seen after the value moved on", []op{put("k", "a", 0, 10), unknown(cas("k", "a", "c", false, "", 20, 0)), put("k", "b", 30, 40), get("k", "c", 50, 60)}, porcupine.Illegal},
		{"unknown cas applied", []op{put("k", "a", 0, 10), unknown(cas("k", "a", "c", false, "", 20, 0)), get("k", "c", 40, 50)}, porcupine.Ok},
		{"keys are independent", []op{put("k", "a", 0, 10), put("j", "b", 20, 30), get("k", "a", 40, 50), get("j", "b", 40, 50)}, porcupine.Ok},
		{"failed write seen", []op{{Kind: opPut, Key: "k", Value: "a", Out: outFail, Call: 0, Return: 10}, get("k", "a", 20, 30)}, porcupine.Illegal},
		{"serializable reads are not porcupine's", []op{put("k", "a", 0, 10), put("k", "b", 20, 30), {Kind: opSGet, Key: "k", Found: true, Got: "a", Call: 40, Return: 50}}, porcupine.Ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkLinearizable(tc.ops, 10*time.Second).result; got != tc.want {
				t.Errorf("porcupine: %s, want %s", got, tc.want)
			}
		})
	}
}

func TestCheckerVisualization(t *testing.T) {
	lr := checkLinearizable([]op{put("k", "a", 0, 10), put("k", "b", 20, 30), get("k", "a", 40, 50)}, 10*time.Second)
	path := t.TempDir() + "/v.html"
	if err := writeVisualization(path, lr, []faultEvent{{start: 5, end: 25, desc: "kill -9 node 1"}}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckerLostWrites(t *testing.T) {
	ops := []op{
		put("k", "a", 0, 10),
		put("k", "b", 20, 30),
		unknown(put("k", "c", 40, 0)),
		{Kind: opUPut, Key: "u/1", Value: "u1", Call: 0, Return: 10, Index: 10},
		{Kind: opUPut, Key: "u/2", Value: "u2", Call: 0, Return: 10, Index: 11},
	}
	for _, tc := range []struct {
		final map[string]string
		lost  int
	}{
		{map[string]string{"k": "b", "u/1": "u1", "u/2": "u2"}, 0},
		{map[string]string{"k": "c", "u/1": "u1", "u/2": "u2"}, 0}, // superseded by the unknown write
		{map[string]string{"k": "a", "u/1": "u1", "u/2": "u2"}, 1}, // b is lost: a completed before b began
		{map[string]string{"k": "", "u/1": "u1", "u/2": "u2"}, 2},
		{map[string]string{"k": "b", "u/1": "u1", "u/2": ""}, 1},
		{map[string]string{"k": "zz", "u/1": "u1", "u/2": "u2"}, 2}, // a value nobody wrote
	} {
		lost, acked := lostWrites(ops, tc.final)
		if len(lost) != tc.lost || acked != 4 {
			t.Errorf("final %v: %d lost of %d acknowledged (%v), want %d of 4", tc.final, len(lost), acked, lost, tc.lost)
		}
	}
}

func TestCheckerSerializable(t *testing.T) {
	sget := func(node, inc int, key string, mod, applied uint64, call, ret int64) op {
		return op{Kind: opSGet, Node: node, Inc: [2]int{inc, inc}, Key: key, Found: mod > 0, ModIndex: mod, Applied: applied, Call: call, Return: ret}
	}
	same, across, cut := checkSerializable([]op{
		sget(0, 1, "k", 5, 10, 0, 10),
		sget(0, 1, "k", 7, 12, 20, 30),
		sget(1, 1, "k", 3, 8, 40, 50), // another node may be behind
		sget(0, 1, "k", 7, 12, 5, 25), // concurrent with the second read
	}, 2, nil)
	if len(same)+len(across)+len(cut) != 0 {
		t.Fatalf("monotonic reads flagged: %v %v %v", same, across, cut)
	}
	same, _, _ = checkSerializable([]op{sget(0, 1, "k", 7, 12, 0, 10), sget(0, 1, "k", 5, 12, 20, 30)}, 1, nil)
	if len(same) != 1 {
		t.Errorf("a read of an older mod_index on the same node: %v", same)
	}
	same, _, _ = checkSerializable([]op{sget(0, 1, "k", 7, 12, 0, 10), sget(0, 1, "j", 2, 11, 20, 30)}, 1, nil)
	if len(same) != 1 {
		t.Errorf("a read of an older applied index on the same node: %v", same)
	}
	same, across, cut = checkSerializable([]op{sget(0, 1, "k", 7, 12, 0, 10), sget(0, 2, "k", 0, 0, 20, 30)}, 1, nil)
	if len(same) != 0 || len(across) != 2 || len(cut) != 0 {
		t.Errorf("a regression across a restart: same %v, across %v, across a power cut %v", same, across, cut)
	}
	// Incarnation 3 of node 0 started after a power cut: a regression
	// from a read of incarnation 1 or 2 to one of 3 is across it; one
	// from 3 to 4 (restarted without a cut) is not.
	cuts := map[int][]int{0: {3}}
	same, across, cut = checkSerializable([]op{sget(0, 2, "k", 7, 12, 0, 10), sget(0, 3, "k", 6, 11, 20, 30)}, 1, cuts)
	if len(same) != 0 || len(across) != 0 || len(cut) != 2 {
		t.Errorf("a regression across a power cut: same %v, across %v, across a power cut %v", same, across, cut)
	}
	same, across, cut = checkSerializable([]op{sget(0, 3, "k", 7, 12, 0, 10), sget(0, 4, "k", 6, 11, 20, 30)}, 1, cuts)
	if len(same) != 0 || len(across) != 2 || len(cut) != 0 {
		t.Errorf("a regression across a restart after a power cut: same %v, across %v, across a power cut %v", same, across, cut)
	}
}

func TestCheckerIndexes(t *testing.T) {
	ok := []op{put("k", "a", 0, 10), {Kind: opGet, Key: "k", Found: true, Got: "a", ModIndex: 10, Call: 20, Return: 30}}
	if bad := checkIndexes(ok); len(bad) != 0 {
		t.Errorf("consistent responses flagged: %v", bad)
	}
	for name, ops := range map[string][]op{
		"one index, two values":  {put("k", "a", 0, 10), put("k", "b", 0, 10)},
		"one index, two keys":    {put("k", "a", 0, 10), put("j", "a", 0, 10)},
		"a value nobody wrote":   {{Kind: opSGet, Key: "k", Found: true, Got: "zz", ModIndex: 3, Call: 0, Return: 1}},
		"a write said not to be": {{Kind: opPut, Key: "k", Value: "a", Out: outFail}, {Kind: opSGet, Key: "k", Found: true, Got: "a", ModIndex: 3}},
		"a read at index 0":      {put("k", "a", 0, 10), {Kind: opGet, Key: "k", Found: true, Got: "a", ModIndex: 0}},
	} {
		if bad := checkIndexes(ops); len(bad) == 0 {
			t.Errorf("%s: not flagged", name)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		kind opKind
		err  error
		want outcome
	}{
		{opGet, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), outFail},
		{opSGet, errors.New("anything"), outFail},
		{opPut, status.Error(codes.DeadlineExceeded, "context deadline exceeded"), outUnknown},
		{opPut, status.Error(codes.Unavailable, "error reading from server: EOF"), outUnknown},
		{opPut, status.Error(codes.Aborted, "outcome unknown: ..."), outUnknown},
		{opCAS, status.Error(codes.DeadlineExceeded, "deadline exceeded before the write was confirmed: outcome unknown"), outUnknown},
		{opPut, status.Error(codes.Unavailable, "write not applied, safe to retry: no leader"), outFail},
		{opPut, status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), outFail},
		{opPut, status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: EOF"`), outFail},
		{opPut, status.Error(codes.DeadlineExceeded, "deadline exceeded before the write was submitted; it was not applied: x"), outFail},
		{opUPut, status.Error(codes.InvalidArgument, "invalid request"), outFail},
	} {
		if got := classify(tc.kind, tc.err); got != tc.want {
			t.Errorf("classify(%s, %v) = %s, want %s", tc.kind, tc.err, got, tc.want)
		}
	}
}

func TestPlanReplay(t *testing.T) {
	drawn := newPlan(42, 3, 8, allKinds, false)
	var kinds []faultKind
	for _, s := range drawn.steps {
		kinds = append(kinds, s.kind)
	}
	forced := newPlan(42, 3, 0, kinds, true)
	if drawn.String() != forced.String() {
		t.Fatalf("a drawn plan and its replay with forced kinds differ:\n%s\n%s", drawn, forced)
	}
	for i := range drawn.steps {
		if drawn.steps[i] != forced.steps[i] {
			t.Fatalf("step %d differs: %+v vs %+v", i+1, drawn.steps[i], forced.steps[i])
		}
	}
	if !strings.Contains(replayCommand(drawn), "-chaos.seed=42 ") {
		t.Errorf("replay command %q", replayCommand(drawn))
	}
	if _, err := parseKinds("kill-all,nonsense"); err == nil {
		t.Error("parseKinds accepted an unknown kind")
	}
}

var flagCheckHistory = flag.String("chaos.check-history", "", "TestCheckHistory: a history.jsonl (from a failed schedule's artifacts) to check again, reporting the first key porcupine rejects")

// TestCheckHistory checks a saved history again (after a change to the
// checker, or to look closer at a violation): porcupine per key, with the
// end of the longest linearization it found and the operations that
// follow it on the key it rejects, and the other checks.
func TestCheckHistory(t *testing.T) {
	if *flagCheckHistory == "" {
		t.Skip("skipping: -chaos.check-history names a history.jsonl to check")
	}
	f, err := os.Open(*flagCheckHistory)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ops []op
	dec := json.NewDecoder(f)
	for {
		var o op
		if err := dec.Decode(&o); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, o)
	}
	size := 0
	for i := range ops {
		size = max(size, ops[i].Node+1)
	}
	t.Logf("%d operations: %s", len(ops), summarizeOps(ops))
	byKey := map[string][]op{}
	for _, o := range ops {
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	for k, kops := range byKey {
		lr := checkLinearizable(kops, time.Minute)
		if lr.result == porcupine.Ok {
			continue
		}
		t.Errorf("key %s: porcupine says %s", k, lr.result)
		if lr.result != porcupine.Illegal {
			continue
		}
		var longest []porcupine.Operation
		for _, p := range lr.info.PartialLinearizationsOperations()[0] {
			if len(p) > len(longest) {
				longest = p
			}
		}
		var last int64
		for _, po := range longest[max(0, len(longest)-5):] {
			o := po.Input.(*op)
			t.Logf("  linearized: %s [%s, %s]", describeOp(o), fmtTime(o.Call), fmtTime(o.Return))
			last = max(last, o.Call)
		}
		sort.Slice(kops, func(i, j int) bool { return kops[i].Call < kops[j].Call })
		shown := 0
		for i := range kops {
			if o := &kops[i]; o.Call > last && o.Kind != opSGet && o.Out != outFail && shown < 20 {
				shown++
				t.Logf("  then: %s [%s, %s]", describeOp(o), fmtTime(o.Call), fmtTime(o.Return))
			}
		}
	}
	// A saved history does not say which restarts were power cuts: every
	// regression across a restart is reported as one.
	same, across, _ := checkSerializable(ops, size, nil)
	for _, v := range append(same, across...) {
		t.Errorf("serializable: %s", v)
	}
	for _, v := range checkIndexes(ops) {
		t.Errorf("indexes: %s", v)
	}
}
