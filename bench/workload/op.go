package workload

import (
	"fmt"
	"math/rand/v2"
)

// Op is one operation handed to the system under test.
type Op struct {
	Kind string // OpPut, OpGet, OpSGet or OpTxn
	Key  string
	// Value is the worker's value (ValueBytes bytes) for put and txn; nil
	// for reads. It is shared by all operations of the worker: the callee
	// must not modify it or keep it after returning.
	Value []byte
	// Worker is the index of the closed-loop client issuing the
	// operation, 0..Concurrency-1; connection Worker mod Conns serves it.
	Worker int
}

// KeyName returns the key of index i: "key-%08d".
func KeyName(i int) string { return fmt.Sprintf("key-%08d", i) }

// maxPrecomputedKeys bounds the key table built up front; larger
// keyspaces format keys on the fly.
const maxPrecomputedKeys = 1 << 20

// keyTable returns the names of keys 0..n-1, or nil when n is too large to
// keep.
func keyTable(n int) []string {
	if n > maxPrecomputedKeys {
		return nil
	}
	t := make([]string, n)
	for i := range t {
		t[i] = KeyName(i)
	}
	return t
}

// Picker generates one worker's operations: the sequence depends only on
// the Spec and the worker index.
type Picker struct {
	rng     *rand.Rand
	kinds   []string
	cum     []int // cumulative weights, parallel to kinds
	total   int
	keys    int
	names   []string
	value   []byte
	worker  int
	prefill int // next prefill key index (worker, worker+C, ...)
	conc    int
}

// NewPicker returns the operation source of worker w under spec (which
// must be valid).
func NewPicker(spec Spec, w int) *Picker {
	return newPicker(spec, w, keyTable(spec.Keys))
}

func newPicker(spec Spec, w int, names []string) *Picker {
	p := &Picker{
		rng:     rand.New(rand.NewPCG(uint64(spec.Seed), uint64(w))),
		keys:    spec.Keys,
		names:   names,
		worker:  w,
		prefill: w,
		conc:    spec.Concurrency,
	}
	mix := spec.EffectiveMix()
	for _, k := range Kinds {
		if wt := mix[k]; wt > 0 {
			p.total += wt
			p.kinds = append(p.kinds, k)
			p.cum = append(p.cum, p.total)
		}
	}
	p.value = make([]byte, spec.ValueBytes)
	for i := range p.value {
		p.value[i] = byte('a' + p.rng.IntN(26))
	}
	return p
}

func (p *Picker) key(i int) string {
	if p.names != nil {
		return p.names[i]
	}
	return KeyName(i)
}

// Next returns the worker's next operation.
func (p *Picker) Next() Op {
	r := p.rng.IntN(p.total)
	kind := p.kinds[len(p.kinds)-1]
	for i, c := range p.cum {
		if r < c {
			kind = p.kinds[i]
			break
		}
	}
	k := p.rng.IntN(p.keys)
	op := Op{Kind: kind, Key: p.key(k), Worker: p.worker}
	if kind == OpPut || kind == OpTxn {
		op.Value = p.value
	}
	return op
}

// NextPrefill returns the worker's next prefill put and true, or false
// when the worker has written all of its share of the keys.
func (p *Picker) NextPrefill() (Op, bool) {
	if p.prefill >= p.keys {
		return Op{}, false
	}
	op := Op{Kind: OpPut, Key: p.key(p.prefill), Value: p.value, Worker: p.worker}
	p.prefill += p.conc
	return op, true
}
