package kv

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
)

// Defaults applied to zero-valued Limits fields.
const (
	DefaultMaxKeyBytes   = 4 << 10
	DefaultMaxValueBytes = 1 << 20
	// DefaultMaxRequestBytes holds one maximal value and key with room
	// to spare for a small transaction around them.
	DefaultMaxRequestBytes  = DefaultMaxValueBytes + 64<<10
	DefaultMaxTxnOps        = 128
	DefaultMaxResponseBytes = 3 << 20
	DefaultRequestTimeout   = 10 * time.Second
	// DefaultMaxConcurrentStreams bounds the requests in flight on one
	// client connection; more wait in the client's gRPC transport.
	DefaultMaxConcurrentStreams = 1024
	// DefaultStreamWorkers is the pool of goroutines that serve requests;
	// see Limits.StreamWorkers.
	DefaultStreamWorkers = 256
)

// commandOverhead is what wrapping a request in a kvpb.Command adds: one
// tag byte and a length of at most 10 bytes.
const commandOverhead = 11

// Limits bound what the service accepts and returns. They are checked by
// the service before anything is proposed (a request over a limit fails
// with InvalidArgument and changes nothing); they are per-member
// configuration and never influence how a command is applied, so members
// may be configured differently. Zero fields take the defaults above.
type Limits struct {
	// MaxKeyBytes bounds every key in a request (keys, range ends,
	// compare keys).
	MaxKeyBytes int
	// MaxValueBytes bounds every value in a request (puts, compare
	// operands).
	MaxValueBytes int
	// MaxRequestBytes bounds a request's encoded size. Writes are Raft
	// proposals: the driver must accept commands this large, see
	// MaxProposalBytes.
	MaxRequestBytes int
	// MaxTxnOps bounds a transaction's compares, and the operations of
	// each of its branches.
	MaxTxnOps int
	// MaxResponseBytes bounds the keys and values one Range returns; the
	// rest is left for the next page (RangeResponse.more). Keep it under
	// the clients' gRPC receive limit (4 MiB by default).
	MaxResponseBytes int
	// RequestTimeout bounds a request whose caller set no deadline, so
	// that no request waits forever on a cluster without a leader.
	RequestTimeout time.Duration
	// MaxConcurrentStreams bounds the requests in flight on one client
	// connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS): what one client
	// can make this member hold at once.
	MaxConcurrentStreams int
	// StreamWorkers is the number of long-lived goroutines gRPC serves
	// requests on (grpc.NumStreamWorkers). Without them every request
	// starts a goroutine whose stack grows from 8 KiB through the
	// handler's depth again (runtime.newstack was 11% of the leader's CPU
	// profile under 128 concurrent puts; with workers, server CPU per put
	// fell by about 5%). When all are busy a request gets a goroutine of
	// its own, so this is not a limit.
	StreamWorkers int
}

// DefaultLimits returns the limits with every default filled in.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxKeyBytes, DefaultMaxKeyBytes)
	def(&l.MaxValueBytes, DefaultMaxValueBytes)
	def(&l.MaxRequestBytes, DefaultMaxRequestBytes)
	def(&l.MaxTxnOps, DefaultMaxTxnOps)
	def(&l.MaxResponseBytes, DefaultMaxResponseBytes)
	def(&l.MaxConcurrentStreams, DefaultMaxConcurrentStreams)
	def(&l.StreamWorkers, DefaultStreamWorkers)
	if l.RequestTimeout == 0 {
		l.RequestTimeout = DefaultRequestTimeout
	}
	return l
}

// Validate reports every problem with l (after defaults), joined.
func (l Limits) Validate() error {
	l = l.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxKeyBytes", l.MaxKeyBytes}, {"MaxValueBytes", l.MaxValueBytes},
		{"MaxRequestBytes", l.MaxRequestBytes}, {"MaxTxnOps", l.MaxTxnOps},
		{"MaxResponseBytes", l.MaxResponseBytes},
		{"MaxConcurrentStreams", l.MaxConcurrentStreams}, {"StreamWorkers", l.StreamWorkers},
	} {
		if f.v < 0 {
			bad("%s must not be negative, got %d", f.name, f.v)
		}
	}
	// gRPC takes both as uint32; beyond a million they mean nothing.
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxConcurrentStreams", l.MaxConcurrentStreams}, {"StreamWorkers", l.StreamWorkers}} {
		if f.v > 1<<20 {
			bad("%s must be at most %d, got %d", f.name, 1<<20, f.v)
		}
	}
	if l.RequestTimeout < 0 {
		bad("RequestTimeout must not be negative, got %v", l.RequestTimeout)
	}
	if l.MaxRequestBytes > 0 && l.MaxKeyBytes > l.MaxRequestBytes {
		bad("MaxKeyBytes (%d) exceeds MaxRequestBytes (%d)", l.MaxKeyBytes, l.MaxRequestBytes)
	}
	if len(errs) > 0 {
		return fmt.Errorf("kv: invalid limits: %w", errors.Join(errs...))
	}
	return nil
}

// MaxProposalBytes is the largest command the service proposes under l:
// set driver.Config.MaxProposalBytes to at least this (the driver's
// default, 1 MiB, is smaller than the default limits need).
func (l Limits) MaxProposalBytes() int {
	return l.withDefaults().MaxRequestBytes + commandOverhead
}

// ServerOptions returns the gRPC server options matching l: message size
// limits comfortably above MaxRequestBytes (twice it) and
// MaxResponseBytes, so that an oversized request reaches the service and
// gets a precise InvalidArgument rather than gRPC's generic
// ResourceExhausted, which only much larger messages get.
func (l Limits) ServerOptions() []grpc.ServerOption {
	l = l.withDefaults()
	const slack = 64 << 10 // headers, framing, a key beside the value
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(2*l.MaxRequestBytes + slack),
		grpc.MaxSendMsgSize(l.MaxResponseBytes + l.MaxValueBytes + slack),
		grpc.MaxConcurrentStreams(uint32(l.MaxConcurrentStreams)),
		grpc.NumStreamWorkers(uint32(l.StreamWorkers)),
	}
}

// checkKey and checkValue enforce the size limits on one field.
func (l *Limits) checkKey(what string, k []byte) error {
	if len(k) > l.MaxKeyBytes {
		return invalidf("%s is %d bytes, over the limit of %d", what, len(k), l.MaxKeyBytes)
	}
	return nil
}

func (l *Limits) checkValue(what string, v []byte) error {
	if len(v) > l.MaxValueBytes {
		return invalidf("%s is %d bytes, over the limit of %d", what, len(v), l.MaxValueBytes)
	}
	return nil
}

// checkCommand enforces the size limits on a decoded (and structurally
// valid) command.
func (l *Limits) checkCommand(c *command) error {
	switch c.kind {
	case opPut:
		return wrapRule("put", l.checkPut(&c.put))
	case opDelete:
		return wrapRule("delete", l.checkSpan(c.del.key, c.del.rangeEnd))
	case opTxn:
		return wrapRule("txn", l.checkTxn(&c.txn))
	}
	return nil
}

func (l *Limits) checkPut(p *putOp) error {
	if err := l.checkKey("key", p.key); err != nil {
		return err
	}
	return l.checkValue("value", p.value)
}

func (l *Limits) checkSpan(key, rangeEnd []byte) error {
	if err := l.checkKey("key", key); err != nil {
		return err
	}
	return l.checkKey("range_end", rangeEnd)
}

func (l *Limits) checkTxn(t *txnOp) error {
	for _, n := range []struct {
		what string
		n    int
	}{{"compares", len(t.compares)}, {"success ops", len(t.success)}, {"failure ops", len(t.failure)}} {
		if n.n > l.MaxTxnOps {
			return invalidf("%d %s, over the limit of %d", n.n, n.what, l.MaxTxnOps)
		}
	}
	for i := range t.compares {
		c := &t.compares[i]
		if err := l.checkKey("key", c.key); err != nil {
			return wrapRule(fmt.Sprintf("compare[%d]", i), err)
		}
		if err := l.checkValue("value", c.value); err != nil {
			return wrapRule(fmt.Sprintf("compare[%d]", i), err)
		}
	}
	for _, br := range []struct {
		name string
		ops  []requestOp
	}{{"success", t.success}, {"failure", t.failure}} {
		for i := range br.ops {
			if err := l.checkOp(&br.ops[i]); err != nil {
				return wrapRule(fmt.Sprintf("%s[%d]", br.name, i), err)
			}
		}
	}
	return nil
}

func (l *Limits) checkOp(op *requestOp) error {
	switch op.kind {
	case opPut:
		return wrapRule("put", l.checkPut(&op.put))
	case opDelete:
		return wrapRule("delete", l.checkSpan(op.del.key, op.del.rangeEnd))
	case opRange:
		return wrapRule("range", l.checkSpan(op.rng.key, op.rng.rangeEnd))
	}
	return nil
}
