package workload

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Operation kinds. OpMixed is only a Spec.Op: each operation of a mixed
// run is one of the other four, drawn by weight from Spec.Mix.
const (
	OpPut   = "put"
	OpGet   = "get"
	OpSGet  = "sget"
	OpTxn   = "txn"
	OpMixed = "mixed"
)

// Kinds are the operation kinds a run issues, in the fixed order the mix
// draw uses.
var Kinds = []string{OpPut, OpGet, OpSGet, OpTxn}

// Defaults of the Spec fields (and of the flags RegisterFlags defines).
const (
	DefaultOp          = OpPut
	DefaultConcurrency = 16
	DefaultConns       = 1
	DefaultValueBytes  = 256
	DefaultKeys        = 10_000
	DefaultWarmup      = 2 * time.Second
	DefaultDuration    = 10 * time.Second
	DefaultSeed        = 1
	// DefaultMix is the mix of --op mixed when --mix is not given.
	DefaultMix = "put=30,get=50,sget=10,txn=10"
)

// Bounds that catch typos rather than express limits of either system.
const (
	MaxConcurrency = 100_000
	MaxValueBytes  = 64 << 20
	MaxKeys        = 1 << 31
)

// Spec is one benchmark run: what to send and for how long. The rules that
// turn a Spec into operations are in the package documentation.
type Spec struct {
	Op          string         `json:"op"` // put|get|sget|txn|mixed
	Concurrency int            `json:"concurrency"`
	Conns       int            `json:"conns"`
	ValueBytes  int            `json:"value_bytes"`
	Keys        int            `json:"keys"`
	Warmup      time.Duration  `json:"-"`
	Duration    time.Duration  `json:"-"`
	Mix         map[string]int `json:"mix,omitempty"` // weights by kind; used when Op is "mixed"
	Seed        int64          `json:"seed"`
	// Prefill writes every key once before the warm-up (not measured).
	Prefill bool `json:"prefill,omitempty"`
}

// DefaultSpec returns a Spec with every field at its default.
func DefaultSpec() Spec {
	mix, _ := ParseMix(DefaultMix)
	return Spec{
		Op:          DefaultOp,
		Concurrency: DefaultConcurrency,
		Conns:       DefaultConns,
		ValueBytes:  DefaultValueBytes,
		Keys:        DefaultKeys,
		Warmup:      DefaultWarmup,
		Duration:    DefaultDuration,
		Mix:         mix,
		Seed:        DefaultSeed,
	}
}

// Flag names RegisterFlags defines. A tool whose flags are not a
// flag.FlagSet (kvnode uses urfave/cli) must spell them the same way, with
// the same defaults and meanings, so one command line drives either system.
const (
	FlagOp          = "op"
	FlagConcurrency = "concurrency"
	FlagConns       = "conns"
	FlagValueBytes  = "value-bytes"
	FlagKeys        = "keys"
	FlagWarmup      = "warmup"
	FlagDuration    = "duration"
	FlagMix         = "mix"
	FlagSeed        = "seed"
	FlagPrefill     = "prefill"
)

// RegisterFlags defines the workload flags on fs, storing into s. Fields
// already set in s are the defaults shown (start from DefaultSpec).
func (s *Spec) RegisterFlags(fs *flag.FlagSet) {
	if s.Mix == nil {
		s.Mix, _ = ParseMix(DefaultMix)
	}
	fs.StringVar(&s.Op, FlagOp, s.Op, "operation: put, get (linearizable), sget (serializable), txn (compare-and-swap) or mixed")
	fs.IntVar(&s.Concurrency, FlagConcurrency, s.Concurrency, "closed-loop clients (goroutines), each with one operation in flight")
	fs.IntVar(&s.Conns, FlagConns, s.Conns, "client connections; client w uses connection w mod conns")
	fs.IntVar(&s.ValueBytes, FlagValueBytes, s.ValueBytes, "bytes per written value")
	fs.IntVar(&s.Keys, FlagKeys, s.Keys, "keyspace: keys key-00000000 .. key-<keys-1>, chosen uniformly")
	fs.DurationVar(&s.Warmup, FlagWarmup, s.Warmup, "warm-up before the measured window (not recorded)")
	fs.DurationVar(&s.Duration, FlagDuration, s.Duration, "length of the measured window")
	fs.Var((*mixFlag)(&s.Mix), FlagMix, "weights of --op mixed: kind=weight,... over put, get, sget, txn")
	fs.Int64Var(&s.Seed, FlagSeed, s.Seed, "seed of the per-client random sources")
	fs.BoolVar(&s.Prefill, FlagPrefill, s.Prefill, "write every key once before the warm-up (not measured)")
}

// Validate reports the first problem with s, naming the flag.
func (s Spec) Validate() error {
	if !slices.Contains(Kinds, s.Op) && s.Op != OpMixed {
		return fmt.Errorf("--%s %q: want put, get, sget, txn or mixed", FlagOp, s.Op)
	}
	if s.Concurrency < 1 || s.Concurrency > MaxConcurrency {
		return fmt.Errorf("--%s %d: want 1..%d", FlagConcurrency, s.Concurrency, MaxConcurrency)
	}
	if s.Conns < 1 || s.Conns > s.Concurrency {
		return fmt.Errorf("--%s %d: want 1..%d (at most --%s)", FlagConns, s.Conns, s.Concurrency, FlagConcurrency)
	}
	if s.ValueBytes < 0 || s.ValueBytes > MaxValueBytes {
		return fmt.Errorf("--%s %d: want 0..%d", FlagValueBytes, s.ValueBytes, MaxValueBytes)
	}
	if s.Keys < 1 || s.Keys > MaxKeys {
		return fmt.Errorf("--%s %d: want 1..%d", FlagKeys, s.Keys, MaxKeys)
	}
	if s.Warmup < 0 {
		return fmt.Errorf("--%s %v: must not be negative", FlagWarmup, s.Warmup)
	}
	if s.Duration <= 0 {
		return fmt.Errorf("--%s %v: must be positive", FlagDuration, s.Duration)
	}
	if s.Op == OpMixed {
		if err := validateMix(s.Mix); err != nil {
			return fmt.Errorf("--%s: %w", FlagMix, err)
		}
	}
	return nil
}

// EffectiveMix returns the weights a run draws from: Mix for "mixed",
// otherwise the one kind Op with weight 1.
func (s Spec) EffectiveMix() map[string]int {
	if s.Op == OpMixed {
		return s.Mix
	}
	return map[string]int{s.Op: 1}
}

func validateMix(m map[string]int) error {
	total := 0
	for k, w := range m {
		if !slices.Contains(Kinds, k) {
			return fmt.Errorf("unknown kind %q (want put, get, sget, txn)", k)
		}
		if w < 0 {
			return fmt.Errorf("weight of %s is negative", k)
		}
		total += w
	}
	if total <= 0 {
		return errors.New("no positive weight")
	}
	return nil
}

// ParseMix parses "put=30,get=50,..." into weights by kind.
func ParseMix(s string) (map[string]int, error) {
	m := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want kind=weight", part)
		}
		k = strings.TrimSpace(k)
		w, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: weight is not an integer", part)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%q: kind given twice", k)
		}
		m[k] = w
	}
	if err := validateMix(m); err != nil {
		return nil, err
	}
	return m, nil
}

// FormatMix is the inverse of ParseMix, kinds in the order of Kinds (then
// any unknown ones sorted).
func FormatMix(m map[string]int) string {
	var parts []string
	for _, k := range Kinds {
		if w, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", k, w))
		}
	}
	var rest []string
	for k := range m {
		if !slices.Contains(Kinds, k) {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// mixFlag adapts a weights map to flag.Value.
type mixFlag map[string]int

func (f *mixFlag) String() string {
	if f == nil || *f == nil {
		return ""
	}
	return FormatMix(*f)
}

func (f *mixFlag) Set(s string) error {
	m, err := ParseMix(s)
	if err != nil {
		return err
	}
	*f = m
	return nil
}
