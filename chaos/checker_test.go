package chaos

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The porcupine model: one register per key (partitioned by key), holding
// a value or nothing (""; the workload never writes an empty value).
// Operations are *op: put, get, and cas, whose failure branch also reads
// the register. An operation with an unknown outcome may have happened or
// not: porcupine places it anywhere after its invocation, at the very end
// included, where its effect is invisible, so the step may always apply
// it.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(*op).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		sort.Strings(keys)
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() any { return "" },
	Step: func(state, input, _ any) (bool, any) {
		st, o := state.(string), input.(*op)
		return stepModel(st, o)
	},
	DescribeOperation: func(input, _ any) string { return describeOp(input.(*op)) },
	DescribeState: func(state any) string {
		if state.(string) == "" {
			return "(absent)"
		}
		return state.(string)
	},
}

// stepModel applies o to a register holding st ("" = absent) and reports
// whether o's result is possible there.
func stepModel(st string, o *op) (bool, string) {
	switch o.Kind {
	case opPut, opUPut:
		return true, o.Value
	case opGet:
		return o.Found == (st != "") && (!o.Found || o.Got == st), st
	case opCAS:
		if o.Out == outUnknown {
			if st == o.Expect {
				return true, o.Value
			}
			return true, st
		}
		if o.Succeeded {
			return st == o.Expect, o.Value
		}
		if st == o.Expect {
			return false, st
		}
		return o.Found == (st != "") && (!o.Found || o.Got == st), st
	}
	return false, st
}

func describeOp(o *op) string {
	res := ""
	switch {
	case o.Out == outUnknown:
		res = "unknown"
	case o.Kind == opGet || o.Kind == opSGet || (o.Kind == opCAS && !o.Succeeded):
		got := "absent"
		if o.Found {
			got = fmt.Sprintf("%s@%d", o.Got, o.ModIndex)
		}
		if o.Kind == opCAS {
			res = "failed, " + got
		} else {
			res = got
		}
	case o.Kind == opCAS:
		res = fmt.Sprintf("ok@%d", o.Index)
	default:
		res = fmt.Sprintf("ok@%d", o.Index)
	}
	switch o.Kind {
	case opPut, opUPut:
		return fmt.Sprintf("n%d put(%s, %s) -> %s", o.Node+1, o.Key, o.Value, res)
	case opCAS:
		exp := o.Expect
		if exp == "" {
			exp = "absent"
		}
		return fmt.Sprintf("n%d cas(%s, %s -> %s) -> %s", o.Node+1, o.Key, exp, o.Value, res)
	}
	return fmt.Sprintf("n%d %s(%s) -> %s", o.Node+1, o.Kind, o.Key, res)
}

// porcupineOps converts the operations porcupine checks: every put, get
// and cas that did not certainly fail. Unknown outcomes return after
// everything else — except writes of a value that no checked operation
// read or compared against, which are left out: placed last they change
// nothing, and no linearization needs them anywhere else (whatever follows
// them before the next write would have to read their value or compare
// against it). Most unknown writes are such, and each one left in makes
// porcupine's search wider.
func porcupineOps(ops []op) []porcupine.Operation {
	var end int64
	seen := map[string]bool{}
	for i := range ops {
		o := &ops[i]
		end = max(end, o.Return, o.Call)
		if o.Out == outOK && o.Found && (o.Kind == opGet || (o.Kind == opCAS && !o.Succeeded)) {
			seen[o.Got] = true
		}
		if o.Kind == opCAS && o.Out != outFail && o.Expect != "" {
			seen[o.Expect] = true // a swap from a value depends on it (the value may have been learnt elsewhere)
		}
	}
	var out []porcupine.Operation
	for i := range ops {
		o := &ops[i]
		if o.Kind == opSGet || o.Out == outFail || (o.Out == outUnknown && !seen[o.Value]) {
			continue
		}
		ret := o.Return
		if o.Out == outUnknown {
			ret = end + 1
		}
		out = append(out, porcupine.Operation{ClientId: o.Proc, Input: o, Output: o, Call: o.Call, Return: ret})
	}
	return out
}

// linResult is porcupine's verdict on one history.
type linResult struct {
	result  porcupine.CheckResult
	info    porcupine.LinearizationInfo
	checked int // operations given to porcupine
	took    time.Duration
}

func checkLinearizable(ops []op, timeout time.Duration) linResult {
	pops := porcupineOps(ops)
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(kvModel, pops, timeout)
	return linResult{result: res, info: info, checked: len(pops), took: time.Since(start)}
}

// checkSerializable checks that serializable reads never go back in time on
// one member (issue 18, item 1): a read that started after another one on
// the same node returned sees the key at the same or a later mod_index,
// and the node's applied index (in the response header) does not
// decrease — within one incarnation of the node (same process), across
// its restarts, and across its power cuts (cutIncs: per node, the
// incarnations that started on a data directory a power cut went
// through), each reported separately.
func checkSerializable(ops []op, size int, cutIncs map[int][]int) (same, acrossRestart, acrossPowerCut []string) {
	type best struct{ mod, applied *op }
	for n := range size {
		var reads []*op
		for i := range ops {
			if o := &ops[i]; o.Kind == opSGet && o.Out == outOK && o.Node == n {
				reads = append(reads, o)
			}
		}
		byReturn := append([]*op(nil), reads...)
		sort.Slice(byReturn, func(i, j int) bool { return byReturn[i].Return < byReturn[j].Return })
		sort.Slice(reads, func(i, j int) bool { return reads[i].Call < reads[j].Call })
		// The newest state seen by reads that returned so far: over all
		// of them (key "" holds the applied index), and per incarnation.
		type kk struct {
			inc int
			key string
		}
		all := map[string]*best{}
		perInc := map[kk]*best{}
		get := func(m map[string]*best, k string) *best {
			if m[k] == nil {
				m[k] = &best{}
			}
			return m[k]
		}
		getInc := func(k kk) *best {
			if perInc[k] == nil {
				perInc[k] = &best{}
			}
			return perInc[k]
		}
		note := func(b *best, p *op) {
			if b.mod == nil || p.ModIndex > b.mod.ModIndex {
				b.mod = p
			}
			if b.applied == nil || p.Applied > b.applied.Applied {
				b.applied = p
			}
		}
		next := 0
		for _, r := range reads {
			for ; next < len(byReturn) && byReturn[next].Return < r.Call; next++ {
				p := byReturn[next]
				note(get(all, p.Key), p)
				note(get(all, ""), p)
				if p.Inc[0] == p.Inc[1] {
					note(getInc(kk{p.Inc[0], p.Key}), p)
					note(getInc(kk{p.Inc[0], ""}), p)
				}
			}
			// cut reports whether node n lost power between the
			// incarnation that answered p and the one answering r.
			cut := func(p *op) bool {
				for _, inc := range cutIncs[n] {
					if p.Inc[1] < inc && inc <= r.Inc[1] {
						return true
					}
				}
				return false
			}
			report := func(b *best, in *[]string, restart bool) bool {
				bad := false
				suffix := ""
				into := func(p *op) *[]string {
					if !restart {
						return in
					}
					if cut(p) {
						suffix = " (node lost power in between)"
						return &acrossPowerCut
					}
					suffix = " (node restarted in between)"
					return in
				}
				if m := b.mod; m != nil && r.ModIndex < m.ModIndex && m.Key == r.Key {
					to := into(m)
					*to = append(*to, fmt.Sprintf("node %d: serializable read of %s at %s saw mod_index %d (%q), but a read that returned at %s saw mod_index %d (%q)%s",
						n+1, r.Key, fmtTime(r.Call), r.ModIndex, r.Got, fmtTime(m.Return), m.ModIndex, m.Got, suffix))
					bad = true
				}
				if a := b.applied; a != nil && r.Applied < a.Applied {
					to := into(a)
					*to = append(*to, fmt.Sprintf("node %d: serializable read at %s reported applied index %d, but a read that returned at %s reported %d%s",
						n+1, fmtTime(r.Call), r.Applied, fmtTime(a.Return), a.Applied, suffix))
					bad = true
				}
				return bad
			}
			if r.Inc[0] == r.Inc[1] {
				bk, ba := getInc(kk{r.Inc[0], r.Key}), getInc(kk{r.Inc[0], ""})
				if report(&best{mod: bk.mod, applied: ba.applied}, &same, false) {
					continue
				}
			}
			report(&best{mod: get(all, r.Key).mod, applied: get(all, "").applied}, &acrossRestart, true)
		}
	}
	return same, acrossRestart, acrossPowerCut
}

// checkIndexes checks what every response says about log indexes: one log
// index holds one command, so a (key, mod_index) pair names one value, and
// an index one write; and no read returns a value that no write could
// have produced, or one from a write the server said it did not apply.
func checkIndexes(ops []op) []string {
	var bad []string
	type kvAt struct{ key, value string }
	seen := map[uint64]kvAt{}
	note := func(idx uint64, key, value, what string) {
		if idx == 0 {
			bad = append(bad, fmt.Sprintf("%s: %s=%q reported at index 0", what, key, value))
			return
		}
		if prev, ok := seen[idx]; ok && prev != (kvAt{key, value}) {
			bad = append(bad, fmt.Sprintf("index %d holds %s=%q according to one response and %s=%q according to another (%s)",
				idx, prev.key, prev.value, key, value, what))
			return
		}
		seen[idx] = kvAt{key, value}
	}
	written := map[string]outcome{} // value -> outcome of its write (every value is written once)
	for i := range ops {
		if o := &ops[i]; o.Kind == opPut || o.Kind == opUPut || o.Kind == opCAS {
			written[o.Value] = o.Out
			if o.Kind == opCAS && o.Out == outOK && !o.Succeeded {
				written[o.Value] = outFail // the compare failed: nothing written
			}
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.Out != outOK {
			continue
		}
		switch {
		case o.Kind == opPut || o.Kind == opUPut || (o.Kind == opCAS && o.Succeeded):
			note(o.Index, o.Key, o.Value, describeOp(o))
		case o.Found:
			note(o.ModIndex, o.Key, o.Got, describeOp(o))
			if out, ok := written[o.Got]; !ok {
				bad = append(bad, fmt.Sprintf("%s at %s: read a value nobody wrote", describeOp(o), fmtTime(o.Call)))
			} else if out == outFail {
				bad = append(bad, fmt.Sprintf("%s at %s: read a value whose write was reported as not applied", describeOp(o), fmtTime(o.Call)))
			}
		}
	}
	return bad
}

// lostWrites checks every acknowledged write against the final state,
// read linearizably after healing: a write to a contended key is lost if
// the key's final value was written by an operation that completed before
// the acknowledged one started (so the acknowledged one must come later),
// or the key is absent; a write of a key written once is lost if the key
// is absent. final maps each key to its final value ("" = absent).
func lostWrites(ops []op, final map[string]string) (lost []string, acked int) {
	writer := map[string]*op{} // value -> the operation that wrote it
	for i := range ops {
		o := &ops[i]
		if mayHaveWritten(o) {
			writer[o.Value] = o
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.Out != outOK || !(o.Kind == opPut || o.Kind == opUPut || (o.Kind == opCAS && o.Succeeded)) {
			continue
		}
		acked++
		fv, ok := final[o.Key]
		if !ok {
			continue // not read back (no final read of this key was possible)
		}
		if fv == "" {
			lost = append(lost, fmt.Sprintf("%s acknowledged at %s, but %s is absent at the end", describeOp(o), fmtTime(o.Return), o.Key))
			continue
		}
		if o.Kind == opUPut {
			continue
		}
		w := writer[fv]
		if w == nil {
			lost = append(lost, fmt.Sprintf("%s: the final value %q of %s was written by no operation", describeOp(o), fv, o.Key))
			continue
		}
		if w != o && w.Out == outOK && w.Return < o.Call {
			lost = append(lost, fmt.Sprintf("%s acknowledged at %s, but the final value of %s is %q, written by %s which completed at %s, before it started",
				describeOp(o), fmtTime(o.Return), o.Key, fv, describeOp(w), fmtTime(w.Return)))
		}
	}
	return lost, acked
}

// mayHaveWritten reports whether o may have written o.Value.
func mayHaveWritten(o *op) bool {
	switch o.Kind {
	case opPut, opUPut:
		return o.Out != outFail
	case opCAS:
		return o.Out == outUnknown || (o.Out == outOK && o.Succeeded)
	}
	return false
}

func fmtTime(ns int64) string {
	if ns < 0 {
		return "(never)"
	}
	return fmt.Sprintf("%.3fs", float64(ns)/1e9)
}

// writeVisualization writes porcupine's HTML view of a checked history,
// with the faults as annotations.
func writeVisualization(path string, lr linResult, faults []faultEvent) error {
	var anns []porcupine.Annotation
	for _, f := range faults {
		anns = append(anns, porcupine.Annotation{
			Tag: "faults", Start: f.start, End: f.end,
			Description: f.desc, BackgroundColor: "#fdd",
		})
	}
	lr.info.AddAnnotations(anns)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := porcupine.Visualize(kvModel, lr.info, f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// summarizeOps counts a history's operations by kind and outcome.
func summarizeOps(ops []op) string {
	type kk struct {
		k opKind
		o outcome
	}
	n := map[kk]int{}
	for i := range ops {
		n[kk{ops[i].Kind, ops[i].Out}]++
	}
	var parts []string
	for k := opPut; k <= opUPut; k++ {
		parts = append(parts, fmt.Sprintf("%s %d/%d/%d", k, n[kk{k, outOK}], n[kk{k, outFail}], n[kk{k, outUnknown}]))
	}
	return strings.Join(parts, ", ") + " (ok/failed/unknown)"
}
