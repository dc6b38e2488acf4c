package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// Client flags and their defaults.
const (
	flagEndpoints      = "endpoints"
	flagTimeout        = "timeout"
	flagDialTimeout    = "dial-timeout"
	flagAttemptTimeout = "attempt-timeout"
	flagSerializable   = "serializable"
	flagPrefix         = "prefix"
	flagLimit          = "limit"
	flagKeysOnly       = "keys-only"
	flagCount          = "count"

	defaultEndpoints   = "127.0.0.1:2379"
	defaultTimeout     = 5 * time.Second
	defaultDialTimeout = 2 * time.Second
	// defaultAttemptTimeout is about one maximal election timeout at the
	// default tick: an endpoint that has not answered by then is stuck
	// (typically forwarding to a leader that just died) rather than slow.
	defaultAttemptTimeout = time.Second

	// retryBaseDelay and retryMaxDelay pace rounds over the endpoints when
	// none could take a request (typically during an election, which
	// lasts an election timeout or two): fast enough to notice the new
	// leader within a tick or two, slow enough not to spin.
	retryBaseDelay = 25 * time.Millisecond
	retryMaxDelay  = 250 * time.Millisecond
)

// clientFlags are the flags every client command takes; a fresh set per
// command (urfave/cli flags hold parse state).
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagEndpoints, Sources: env(flagEndpoints), Value: defaultEndpoints, Category: "connection",
			Usage: "client addresses of cluster members, `HOST:PORT,...`; tried in turn until one answers"},
		&cli.DurationFlag{Name: flagTimeout, Sources: env(flagTimeout), Value: defaultTimeout, Category: "connection",
			Usage: "bound on the whole command, retries included"},
		&cli.DurationFlag{Name: flagDialTimeout, Sources: env(flagDialTimeout), Value: defaultDialTimeout, Category: "connection",
			Usage: "bound on connecting to one endpoint"},
		&cli.DurationFlag{Name: flagAttemptTimeout, Sources: env(flagAttemptTimeout), Value: defaultAttemptTimeout, Category: "connection",
			Usage: "bound on one try at one endpoint of a read, put or del before the next endpoint is tried (a txn is never retried after it may have been sent)"},
	}
}

// withClientFlags prepends the client flags to a command's own.
func withClientFlags(own ...cli.Flag) []cli.Flag { return append(own, clientFlags()...) }

// parseEndpoints parses a comma-separated HOST:PORT list.
func parseEndpoints(s string) ([]string, error) {
	var eps []string
	for ep := range strings.SplitSeq(s, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			return nil, fmt.Errorf("--%s %q has an empty entry (want HOST:PORT,...)", flagEndpoints, s)
		}
		if err := checkDialAddr(ep); err != nil {
			return nil, fmt.Errorf("--%s: %v", flagEndpoints, err)
		}
		if slices.Contains(eps, ep) {
			return nil, fmt.Errorf("--%s lists %s twice", flagEndpoints, ep)
		}
		eps = append(eps, ep)
	}
	return eps, nil
}

// kvClient talks to a cluster through a list of endpoints. Requests go to
// the endpoint that answered last, and move on to the next one when an
// endpoint cannot take them; see call.
type kvClient struct {
	endpoints []string
	conns     []*grpc.ClientConn
	clients   []kvpb.KVClient
	// preferred is the index of the endpoint that answered last.
	preferred int
	// attemptTimeout bounds one try of a read or idempotent write at one
	// endpoint (0: no bound but the command's).
	attemptTimeout time.Duration
}

// dialClient prepares connections to every endpoint. Nothing is dialled
// yet: gRPC connects on the first request, so an endpoint that is down
// costs nothing until it is tried.
func dialClient(endpoints []string, dialTimeout time.Duration) (*kvClient, error) {
	c := &kvClient{endpoints: endpoints, attemptTimeout: defaultAttemptTimeout}
	for _, ep := range endpoints {
		conn, err := grpc.NewClient(ep,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{
				// A restarted member is found again within a second.
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: dialTimeout,
			}))
		if err != nil {
			c.Close()
			return nil, usagef("--%s: %s: %v", flagEndpoints, ep, err)
		}
		c.conns = append(c.conns, conn)
		c.clients = append(c.clients, kvpb.NewKVClient(conn))
	}
	return c, nil
}

// clientFromFlags validates the client flags of cmd and prepares a client.
func clientFromFlags(cmd *cli.Command) (*kvClient, error) {
	eps, err := parseEndpoints(cmd.String(flagEndpoints))
	if err != nil {
		return nil, usageError(err)
	}
	for _, f := range []string{flagTimeout, flagDialTimeout, flagAttemptTimeout} {
		if d := cmd.Duration(f); d <= 0 {
			return nil, usagef("--%s must be positive, got %v", f, d)
		}
	}
	c, err := dialClient(eps, cmd.Duration(flagDialTimeout))
	if err != nil {
		return nil, err
	}
	c.attemptTimeout = cmd.Duration(flagAttemptTimeout)
	return c, nil
}

// Close closes every connection.
func (c *kvClient) Close() {
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// retryPolicy says which failures call may retry on another endpoint.
type retryPolicy int

const (
	// readRetry: reads have no effect, so any failure to get an answer is
	// retried elsewhere.
	readRetry retryPolicy = iota
	// idempotentRetry: put and delete leave the same state when applied
	// twice, so they are retried elsewhere even when the request may have
	// been applied already: the connection broke mid-call, the server
	// answered Aborted (outcome unknown), or the attempt timed out.
	idempotentRetry
	// onceRetry: a transaction applied twice could act on its own effects
	// (a compare-and-swap would report failure after succeeding), so it is
	// retried only when it certainly was not applied: the server said so
	// (Unavailable) or the endpoint could not be reached at all.
	onceRetry
)

// call runs fn against the endpoints until one gives an answer: an
// endpoint that cannot take the request (unreachable, no leader, not
// caught up, overloaded: gRPC Unavailable) passes it to the next, and
// after a full round without an answer call waits (backing off) and
// starts another, until ctx ends. Any other error is final.
func (c *kvClient) call(ctx context.Context, policy retryPolicy, fn func(context.Context, kvpb.KVClient) error) error {
	last := make([]error, len(c.clients))
	delay := retryBaseDelay
	for {
		for k := range c.clients {
			if ctx.Err() != nil {
				return c.gaveUp(ctx, last, nil, -1, policy)
			}
			i := (c.preferred + k) % len(c.clients)
			err := c.attempt(ctx, policy, c.clients[i], fn)
			if err == nil {
				c.preferred = i
				return nil
			}
			if isContextCode(err) {
				if ctx.Err() == nil && policy != onceRetry {
					// Only the attempt timed out: the endpoint is stuck
					// (say, forwarding to a leader that died); try the
					// next one.
					last[i] = status.Errorf(codes.DeadlineExceeded, "no answer within %v", c.attemptTimeout)
					continue
				}
				// The command's own deadline (the server may notice it a
				// moment before the client does).
				return c.gaveUp(ctx, last, err, i, policy)
			}
			if !retryable(err, policy) {
				return endpointError(c.endpoints[i], err)
			}
			last[i] = err
		}
		if err := c.noneListening(last); err != nil {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.gaveUp(ctx, last, nil, -1, policy)
		case <-t.C:
		}
		delay = min(2*delay, retryMaxDelay)
	}
}

// noneListening returns the error for a round in which every endpoint
// refused the connection, and nil otherwise. Nothing listens at any of
// them: waiting out --timeout would only delay the same answer (a
// cluster in an election or a member restarting answers, or refuses only
// some connections), so the command fails at once.
func (c *kvClient) noneListening(last []error) error {
	for _, err := range last {
		if !refused(err) {
			return nil
		}
	}
	return fmt.Errorf("connection refused at every endpoint (%s): is the cluster running, and are these its client addresses (--%s, %s)?",
		strings.Join(c.endpoints, ", "), flagEndpoints, envName(flagEndpoints))
}

// refused reports whether err is gRPC's failure to connect because
// nothing listens at the address. Only the client's own transport error
// counts: a server's answer that mentions a refused connection (to its
// leader, say) came from a listening server.
func refused(err error) bool {
	st, ok := status.FromError(err)
	return ok && err != nil && st.Code() == codes.Unavailable &&
		strings.HasPrefix(st.Message(), "connection error:") && strings.Contains(st.Message(), "connection refused")
}

// attempt runs fn against one endpoint. Reads and idempotent writes get
// at most attemptTimeout there, so that one stuck endpoint does not use up
// the whole command's time; a transaction keeps the command's deadline,
// since abandoning it would leave its outcome unknown.
func (c *kvClient) attempt(ctx context.Context, policy retryPolicy, kv kvpb.KVClient, fn func(context.Context, kvpb.KVClient) error) error {
	if policy != onceRetry && c.attemptTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.attemptTimeout)
		defer cancel()
	}
	return fn(ctx, kv)
}

// gaveUp builds the error for a call whose context ended: the last error
// of every endpoint tried, and for a write cut off in flight the warning
// that it may have been applied.
func (c *kvClient) gaveUp(ctx context.Context, last []error, inflight error, at int, policy retryPolicy) error {
	var parts []string
	for i, err := range last {
		if err != nil && i != at {
			parts = append(parts, c.endpoints[i]+": "+describeRPCError(err))
		}
	}
	reason := "timed out"
	if errors.Is(ctx.Err(), context.Canceled) {
		reason = "cancelled"
	}
	if inflight != nil && policy != readRetry {
		msg := fmt.Sprintf("%s waiting for %s: the write may or may not have been applied", reason, c.endpoints[at])
		if len(parts) > 0 {
			msg += " (earlier: " + strings.Join(parts, "; ") + ")"
		}
		return errors.New(msg)
	}
	if len(parts) == 0 {
		return fmt.Errorf("%s before any endpoint answered", reason)
	}
	return fmt.Errorf("%s: no endpoint could answer: %s", reason, strings.Join(parts, "; "))
}

// isContextCode reports whether err is what gRPC returns when the call's
// own context ended.
func isContextCode(err error) bool {
	c := status.Code(err)
	return c == codes.DeadlineExceeded || c == codes.Canceled
}

// retryable applies policy to err.
func retryable(err error, policy retryPolicy) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return policy != onceRetry || !maybeSent(err)
	case codes.Aborted:
		// The server lost track of a write it had submitted (it was
		// stopping): harmless to repeat only if applying twice is.
		return policy == idempotentRetry
	}
	return false
}

// maybeSent reports whether an Unavailable error may have happened after
// the server received the request: the connection broke mid-call. gRPC
// does not tell this apart by code, only by message; the server's own
// Unavailable answers (no leader, overload) and failures to connect or
// to start the call (connection refused, GOAWAY) mean nothing was applied.
func maybeSent(err error) bool {
	msg := status.Convert(err).Message()
	for _, s := range []string{"error reading from server", "transport is closing", "connection reset", "broken pipe", "stream terminated by RST_STREAM"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// endpointError reports a final error from one endpoint. Bad input the
// server refused is a usage error.
func endpointError(endpoint string, err error) error {
	e := fmt.Errorf("%s: %s", endpoint, describeRPCError(err))
	switch status.Code(err) {
	case codes.InvalidArgument, codes.OutOfRange:
		return usageError(e)
	case codes.Aborted, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("%w (a write may or may not have been applied)", e)
	}
	return e
}

// describeRPCError turns a gRPC error into a short phrase: the code in
// words and the message, with gRPC's transport boilerplate cut so that
// "connection refused" reads as such.
func describeRPCError(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	for _, noise := range []string{`connection error: desc = "transport: Error while dialing: `, `connection error: desc = "transport: `} {
		if rest, found := strings.CutPrefix(msg, noise); found {
			msg = strings.TrimSuffix(rest, `"`)
			break
		}
	}
	if strings.Contains(msg, "connect: connection refused") {
		msg = "connection refused"
	}
	return codeWords(st.Code()) + ": " + msg
}

// codeWords spells a gRPC code the way people say it ("deadline exceeded").
func codeWords(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// runClient validates the client flags, runs fn with a client and a
// context bounded by --timeout, and closes the client.
func runClient(ctx context.Context, cmd *cli.Command, fn func(context.Context, *kvClient) error) error {
	c, err := clientFromFlags(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, cmd.Duration(flagTimeout))
	defer cancel()
	return fn(ctx, c)
}

// flagFile is put's --file.
const flagFile = "file"

// stdinValue is the VALUE argument of put that means "read standard input".
const stdinValue = "-"

func putCommand() *cli.Command {
	return &cli.Command{
		Name:  "put",
		Usage: "set KEY to VALUE, to standard input (VALUE -) or to a file's contents (--file F); prints OK",
		UsageText: "kvnode put KEY VALUE | kvnode put KEY - | kvnode put KEY --file F [--endpoints ...]\n\n" +
			"A value is at most " + humanBytes(kv.DefaultMaxValueBytes) + " (the server's limit); a longer one is refused before anything is sent.\n" +
			"The value \"-\" itself is put with: printf - | kvnode put KEY -",
		Flags: withClientFlags(
			&cli.StringFlag{Name: flagFile, Usage: "read the value from `FILE` (the whole file, as is)"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			file := cmd.String(flagFile)
			usage, n := "KEY VALUE", 2
			if cmd.IsSet(flagFile) {
				usage, n = "KEY --file F", 1
			}
			if err := wantArgs(cmd, n, n, usage); err != nil {
				return err
			}
			key := cmd.Args().Get(0)
			if key == "" {
				return usagef("put: the key must not be empty")
			}
			value, err := putValue(cmd, file)
			if err != nil {
				return err
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				err := c.call(ctx, idempotentRetry, func(ctx context.Context, kv kvpb.KVClient) error {
					_, err := kv.Put(ctx, &kvpb.PutRequest{Key: []byte(key), Value: value})
					return err
				})
				if err != nil {
					return fmt.Errorf("put: %w", err)
				}
				fmt.Fprintln(cmd.Writer, "OK")
				return nil
			})
		}),
	}
}

// putValue returns put's value: the VALUE argument, standard input for
// "-", or the contents of file (--file). A value over the server's limit
// (kv.DefaultMaxValueBytes, what serve enforces) is a usage error, found
// by reading at most one byte past the limit, so a huge input costs no
// more memory than a maximal value.
func putValue(cmd *cli.Command, file string) ([]byte, error) {
	const limit = kv.DefaultMaxValueBytes
	var (
		src  io.Reader
		from string
	)
	switch {
	case cmd.IsSet(flagFile):
		if file == "" {
			return nil, usagef("put: --%s must not be empty", flagFile)
		}
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("put: --%s: %v", flagFile, unwrapPathError(err))
		}
		defer f.Close()
		src, from = f, file
	case cmd.Args().Get(1) == stdinValue:
		src, from = cmd.Root().Reader, "standard input"
		if src == nil {
			src = os.Stdin
		}
	default:
		v := cmd.Args().Get(1)
		if len(v) > limit {
			return nil, usagef("put: the value is %d bytes, over the server's limit of %s (%d bytes)", len(v), humanBytes(limit), limit)
		}
		return []byte(v), nil
	}
	value, err := io.ReadAll(io.LimitReader(src, limit+1))
	if err != nil {
		return nil, fmt.Errorf("put: reading the value from %s: %v", from, unwrapPathError(err))
	}
	if len(value) > limit {
		return nil, usagef("put: the value from %s is over the server's limit of %s (%d bytes)", from, humanBytes(limit), limit)
	}
	return value, nil
}

func getCommand() *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "print KEY's value (exit status 3 if there is no such key)",
		UsageText: "kvnode get KEY [--serializable] [--endpoints ...]",
		Flags: withClientFlags(
			&cli.BoolFlag{Name: flagSerializable,
				Usage: "read this member's state without a linearizability check: faster, possibly stale"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 1, 1, "KEY"); err != nil {
				return err
			}
			key := cmd.Args().First()
			if key == "" {
				return usagef("get: the key must not be empty")
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				var resp *kvpb.GetResponse
				err := c.call(ctx, readRetry, func(ctx context.Context, kv kvpb.KVClient) error {
					var err error
					resp, err = kv.Get(ctx, &kvpb.GetRequest{Key: []byte(key), Serializable: cmd.Bool(flagSerializable)})
					return err
				})
				if err != nil {
					return fmt.Errorf("get: %w", err)
				}
				if !resp.GetFound() {
					return falseError(fmt.Errorf("get: key %q not found", key))
				}
				// The value exactly as stored, for scripts; the newline
				// keeps a terminal prompt on its own line.
				_, err = fmt.Fprintf(cmd.Writer, "%s\n", resp.GetKv().GetValue())
				return err
			})
		}),
	}
}

func delCommand() *cli.Command {
	return &cli.Command{
		Name:      "del",
		Usage:     "delete a key, every key with a prefix, or the keys in [START, END) (prints how many)",
		UsageText: "kvnode del KEY | kvnode del --prefix PREFIX | kvnode del START END",
		Flags: withClientFlags(
			&cli.BoolFlag{Name: flagPrefix, Usage: "delete every key starting with the argument (which must not be empty)"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			args := cmd.Args().Slice()
			if cmd.Bool(flagPrefix) {
				args = append([]string{"--prefix"}, args...)
			}
			sp, err := parseSpan(args, false)
			if err != nil {
				return usagef("del: %v (usage: kvnode del KEY | --prefix PREFIX | START END)", err)
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				var resp *kvpb.DeleteResponse
				err := c.call(ctx, idempotentRetry, func(ctx context.Context, kv kvpb.KVClient) error {
					var err error
					resp, err = kv.Delete(ctx, &kvpb.DeleteRequest{Key: sp.key, RangeEnd: sp.end, Prefix: sp.prefix})
					return err
				})
				if err != nil {
					return fmt.Errorf("del: %w", err)
				}
				fmt.Fprintln(cmd.Writer, resp.GetDeleted())
				return nil
			})
		}),
	}
}

func scanCommand() *cli.Command {
	return &cli.Command{
		Name:  "scan",
		Usage: "list keys in order: all, a prefix, or [START, END)",
		UsageText: "kvnode scan [--prefix PREFIX | START [END]] [--limit N] [--keys-only | --count] [--serializable]\n\n" +
			"Prints KEY<TAB>VALUE per line (keys only with --keys-only, the number of keys with --count).\n" +
			"A key or value that is not printable text, or holds a tab or newline, is printed as a Go-quoted string.\n" +
			"Long results are fetched in pages, each a separate read.",
		Flags: withClientFlags(
			&cli.BoolFlag{Name: flagPrefix, Usage: "list every key starting with the argument"},
			&cli.Int64Flag{Name: flagLimit, Usage: "print at most `N` pairs (0: no limit)"},
			&cli.BoolFlag{Name: flagKeysOnly, Usage: "print keys only"},
			&cli.BoolFlag{Name: flagCount, Usage: "print only the number of keys"},
			&cli.BoolFlag{Name: flagSerializable, Usage: "read this member's state without a linearizability check"},
		),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			args := cmd.Args().Slice()
			if cmd.Bool(flagPrefix) {
				args = append([]string{"--prefix"}, args...)
			}
			sp, err := parseSpan(args, true)
			if err != nil {
				return usagef("scan: %v (usage: kvnode scan [--prefix PREFIX | START [END]])", err)
			}
			limit := cmd.Int64(flagLimit)
			if limit < 0 {
				return usagef("scan: --%s must not be negative, got %d", flagLimit, limit)
			}
			if cmd.Bool(flagCount) && (cmd.Bool(flagKeysOnly) || limit != 0) {
				return usagef("scan: --%s cannot be combined with --%s or --%s", flagCount, flagKeysOnly, flagLimit)
			}
			opts := scanOptions{limit: limit, keysOnly: cmd.Bool(flagKeysOnly), count: cmd.Bool(flagCount), serializable: cmd.Bool(flagSerializable)}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				if err := scan(ctx, c, cmd.Writer, sp, opts); err != nil {
					return fmt.Errorf("scan: %w", err)
				}
				return nil
			})
		}),
	}
}

// scanOptions are scan's output choices.
type scanOptions struct {
	limit                         int64
	keysOnly, count, serializable bool
}

// scan prints the pairs in sp, page by page: the server bounds each
// response, and says when more keys follow (RangeResponse.more).
func scan(ctx context.Context, c *kvClient, out io.Writer, sp span, o scanOptions) error {
	req := &kvpb.RangeRequest{Key: sp.key, RangeEnd: sp.end, Prefix: sp.prefix,
		KeysOnly: o.keysOnly, CountOnly: o.count, Serializable: o.serializable}
	printed := int64(0)
	for {
		if o.limit > 0 {
			req.Limit = o.limit - printed
		}
		var resp *kvpb.RangeResponse
		err := c.call(ctx, readRetry, func(ctx context.Context, kv kvpb.KVClient) error {
			var err error
			resp, err = kv.Range(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		if o.count {
			_, err := fmt.Fprintln(out, resp.GetCount())
			return err
		}
		for _, kv := range resp.GetKvs() {
			var err error
			if o.keysOnly {
				_, err = fmt.Fprintln(out, printable(kv.GetKey()))
			} else {
				_, err = fmt.Fprintf(out, "%s\t%s\n", printable(kv.GetKey()), printable(kv.GetValue()))
			}
			if err != nil {
				return err
			}
		}
		printed += int64(len(resp.GetKvs()))
		kvs := resp.GetKvs()
		if !resp.GetMore() || len(kvs) == 0 || (o.limit > 0 && printed >= o.limit) {
			return nil
		}
		// Continue right after the last key, within the same span.
		next := append(slices.Clone(kvs[len(kvs)-1].GetKey()), 0)
		if req.Prefix {
			req.Prefix, req.RangeEnd = false, prefixEnd(req.Key)
		}
		req.Key = next
	}
}

// prefixEnd returns the smallest key after every key with prefix p: p with
// its last byte below 0xff incremented and the rest cut, or "no upper
// bound" when there is none (p empty or all 0xff).
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return noUpperBound
}

// printable returns b as is when it is printable UTF-8 text without tabs
// or newlines (so scan's KEY<TAB>VALUE lines stay parseable), and as a
// Go-quoted string otherwise. Text starting with a double quote is quoted
// too, so a quoted form is never ambiguous.
func printable(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) || strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// Flags of `kvnode txn`.
const (
	flagIf   = "if"
	flagThen = "then"
	flagElse = "else"
)

func txnCommand() *cli.Command {
	return &cli.Command{
		Name:  "txn",
		Usage: "atomically run --then operations if every --if condition holds, else the --else ones",
		UsageText: "kvnode txn [--if COND]... [--then OP]... [--else OP]...\n\n" +
			"  COND: value(KEY) OP VALUE | mod(KEY) OP INDEX | exists(KEY) | !exists(KEY)\n" +
			"        OP is =, !=, < or >; join several with && (or repeat --if)\n" +
			"  OP:   put KEY VALUE | get KEY | del KEY | del --prefix PREFIX | del START END |\n" +
			"        scan [--prefix PREFIX | START [END]]\n" +
			"  Words with spaces or special characters go in double quotes, with Go escapes.\n\n" +
			"  kvnode txn --if 'value(k)=old' --then 'put k new' --else 'get k'\n\n" +
			"Prints SUCCEEDED or FAILED, then one result per operation that ran: OK for put,\n" +
			"the number of keys for del, KEY<TAB>VALUE lines for get and scan.\n" +
			"Exit status 0 if the conditions held, 3 if not (the --else operations ran).",
		Flags: withClientFlags(
			&cli.StringSliceFlag{Name: flagIf, Usage: "a `CONDITION` that must hold (repeatable)"},
			&cli.StringSliceFlag{Name: flagThen, Usage: "an `OPERATION` to run if every condition holds (repeatable)"},
			&cli.StringSliceFlag{Name: flagElse, Usage: "an `OPERATION` to run otherwise (repeatable)"},
		),
		// A comma is part of a condition or a value, never a separator.
		DisableSliceFlagSeparator: true,
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "--if COND --then OP --else OP"); err != nil {
				return err
			}
			req, err := txnRequest(cmd.StringSlice(flagIf), cmd.StringSlice(flagThen), cmd.StringSlice(flagElse))
			if err != nil {
				return usagef("txn: %v", err)
			}
			return runClient(ctx, cmd, func(ctx context.Context, c *kvClient) error {
				var resp *kvpb.TxnResponse
				err := c.call(ctx, onceRetry, func(ctx context.Context, kv kvpb.KVClient) error {
					var err error
					resp, err = kv.Txn(ctx, req)
					return err
				})
				if err != nil {
					return fmt.Errorf("txn: %w", err)
				}
				if err := printTxn(cmd.Writer, resp); err != nil {
					return err
				}
				if !resp.GetSucceeded() {
					return falseError(nil)
				}
				return nil
			})
		}),
	}
}

// printTxn prints a transaction's outcome and the result of each
// operation of the branch that ran.
func printTxn(out io.Writer, resp *kvpb.TxnResponse) error {
	var b strings.Builder
	if resp.GetSucceeded() {
		b.WriteString("SUCCEEDED\n")
	} else {
		b.WriteString("FAILED\n")
	}
	for _, r := range resp.GetResponses() {
		switch op := r.GetOp().(type) {
		case *kvpb.ResponseOp_Put:
			b.WriteString("OK\n")
		case *kvpb.ResponseOp_Delete:
			fmt.Fprintln(&b, op.Delete.GetDeleted())
		case *kvpb.ResponseOp_Range:
			for _, kv := range op.Range.GetKvs() {
				fmt.Fprintf(&b, "%s\t%s\n", printable(kv.GetKey()), printable(kv.GetValue()))
			}
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}
