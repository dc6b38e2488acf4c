package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/bench/workload"
)

// Flags of kvnode bench beyond the shared workload flags.
const (
	flagLeaderOnly = "leader-only"
	flagPids       = "pids"
	flagJSON       = "json"
	flagQuiet      = "quiet"
	flagOpTimeout  = "op-timeout"
	// flagPrefillOnly is shared with etcdbench load (bench/etcd): the
	// comparison preloads both systems' keyspaces with it.
	flagPrefillOnly = "prefill-only"

	defaultOpTimeout = 5 * time.Second
)

// benchCommand is the closed-loop load generator. Its workload flags have
// the names, defaults and meanings of bench/workload.RegisterFlags, so one
// command line drives Rafty and etcd (bench/etcd) alike, and its --json
// output is a workload.Result.
func benchCommand() *cli.Command {
	def := workload.DefaultSpec()
	return &cli.Command{
		Name:  "bench",
		Usage: "closed-loop load: C clients over N connections for a fixed duration; prints throughput and latency",
		UsageText: "kvnode bench [--op put|get|sget|txn|mixed] [--concurrency C] [--conns N] [--value-bytes V]\n" +
			"  [--keys K] [--warmup D] [--duration D] [--mix put=30,get=50,...] [--leader-only] [--json] [--endpoints ...]\n\n" +
			"Exit status 1 if any measured operation failed: stderr then counts the failures by kind, with the first message of each.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: workload.FlagOp, Value: def.Op, Category: "workload",
				Usage: "operation: put, get (linearizable), sget (serializable), txn (compare-and-swap) or mixed"},
			&cli.IntFlag{Name: workload.FlagConcurrency, Value: def.Concurrency, Category: "workload",
				Usage: "closed-loop clients, each with one operation in flight"},
			&cli.IntFlag{Name: workload.FlagConns, Value: def.Conns, Category: "workload",
				Usage: "gRPC connections; client w uses connection w mod conns"},
			&cli.IntFlag{Name: workload.FlagValueBytes, Value: def.ValueBytes, Category: "workload", Usage: "bytes per written value"},
			&cli.IntFlag{Name: workload.FlagKeys, Value: def.Keys, Category: "workload", Usage: "keyspace size, keys chosen uniformly"},
			&cli.DurationFlag{Name: workload.FlagWarmup, Value: def.Warmup, Category: "workload", Usage: "warm-up before the measured window"},
			&cli.DurationFlag{Name: workload.FlagDuration, Value: def.Duration, Category: "workload", Usage: "length of the measured window"},
			&cli.StringFlag{Name: workload.FlagMix, Value: workload.DefaultMix, Category: "workload",
				Usage: "weights of --op mixed: kind=weight,... over put, get, sget, txn"},
			&cli.Int64Flag{Name: workload.FlagSeed, Value: def.Seed, Category: "workload", Usage: "seed of the per-client random sources"},
			&cli.BoolFlag{Name: workload.FlagPrefill, Category: "workload", Usage: "write every key once before the warm-up (not measured)"},
			&cli.BoolFlag{Name: flagPrefillOnly, Category: "workload",
				Usage: "only write every key once, as --prefill does, and report that (no warm-up, no measured window): a preload"},
			&cli.BoolFlag{Name: flagLeaderOnly, Usage: "send everything to the leader (found with the Status RPC)"},
			&cli.StringFlag{Name: flagPids, Usage: "server process IDs `P1,P2,...` whose CPU time the result reports"},
			&cli.BoolFlag{Name: flagJSON, Usage: "print the result as one JSON line (a bench/workload Result)"},
			&cli.BoolFlag{Name: flagQuiet, Usage: "no progress line on stderr"},
			&cli.DurationFlag{Name: flagOpTimeout, Value: defaultOpTimeout, Usage: "deadline of one operation"},
			&cli.StringFlag{Name: flagEndpoints, Sources: env(flagEndpoints), Value: defaultEndpoints, Category: "connection",
				Usage: "client addresses of cluster members, `HOST:PORT,...`"},
			&cli.DurationFlag{Name: flagDialTimeout, Sources: env(flagDialTimeout), Value: defaultDialTimeout, Category: "connection",
				Usage: "bound on finding the leader"},
		},
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() > 0 {
				return usagef("bench: unexpected argument %q (bench takes flags only)", cmd.Args().First())
			}
			spec, err := benchSpec(cmd)
			if err != nil {
				return err
			}
			eps, err := parseEndpoints(cmd.String(flagEndpoints))
			if err != nil {
				return usageError(err)
			}
			var pids []int
			if s := cmd.String(flagPids); s != "" {
				if pids, err = workload.ParsePids(s); err != nil {
					return usagef("--%s: %v", flagPids, err)
				}
			}
			if cmd.Duration(flagOpTimeout) <= 0 {
				return usagef("--%s must be positive", flagOpTimeout)
			}
			return runBench(ctx, cmd, spec, eps, pids)
		}),
	}
}

// benchSpec builds and validates the workload from the flags.
func benchSpec(cmd *cli.Command) (workload.Spec, error) {
	spec := workload.DefaultSpec()
	spec.Op = cmd.String(workload.FlagOp)
	spec.Concurrency = int(cmd.Int(workload.FlagConcurrency))
	spec.Conns = int(cmd.Int(workload.FlagConns))
	spec.ValueBytes = int(cmd.Int(workload.FlagValueBytes))
	spec.Keys = int(cmd.Int(workload.FlagKeys))
	spec.Warmup = cmd.Duration(workload.FlagWarmup)
	spec.Duration = cmd.Duration(workload.FlagDuration)
	spec.Seed = cmd.Int64(workload.FlagSeed)
	spec.Prefill = cmd.Bool(workload.FlagPrefill)
	mix, err := workload.ParseMix(cmd.String(workload.FlagMix))
	if err != nil {
		return spec, usagef("--%s: %v", workload.FlagMix, err)
	}
	spec.Mix = mix
	if err := spec.Validate(); err != nil {
		return spec, usageError(err)
	}
	return spec, nil
}

func runBench(ctx context.Context, cmd *cli.Command, spec workload.Spec, eps []string, pids []int) error {
	targets := eps
	if cmd.Bool(flagLeaderOnly) {
		leader, err := findLeader(ctx, eps, cmd.Duration(flagDialTimeout))
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		targets = []string{leader}
	}
	clients := make([]kvpb.KVClient, spec.Conns)
	for i := range clients {
		conn, err := grpc.NewClient(targets[i%len(targets)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return usagef("--%s: %v", flagEndpoints, err)
		}
		defer conn.Close()
		clients[i] = kvpb.NewKVClient(conn)
	}
	opTimeout := cmd.Duration(flagOpTimeout)
	do := func(ctx context.Context, op workload.Op) error {
		ctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		return benchOp(ctx, clients[op.Worker%len(clients)], op)
	}
	samples := &errorSamples{}
	opts := []workload.Option{workload.WithClassifier(samples.classify)}
	if !cmd.Bool(flagQuiet) {
		opts = append(opts, workload.WithProgress(cmd.Root().ErrWriter, fmt.Sprintf("rafty %s c=%d", spec.Op, spec.Concurrency)))
	}
	if len(pids) > 0 {
		opts = append(opts, workload.WithCPUPids(pids))
	}
	var res workload.Result
	if cmd.Bool(flagPrefillOnly) {
		res = workload.Preload(ctx, spec, do, opts...)
	} else {
		res = workload.Run(ctx, spec, do, opts...)
	}
	res.System = "rafty"
	res.Version = "rafty " + currentVersion().short()
	res.LeaderOnly = cmd.Bool(flagLeaderOnly)
	if cmd.Bool(flagJSON) {
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("bench: encoding the result: %w", err)
		}
		if _, err = fmt.Fprintf(cmd.Writer, "%s\n", b); err != nil {
			return err
		}
		return samples.failure(res)
	}
	if res.Prefill && cmd.Bool(flagPrefillOnly) {
		fmt.Fprintf(cmd.Writer, "preload c=%d conns=%d: %d keys written in %.1fs (%.0f/s); errors %v\n",
			res.Concurrency, res.Conns, res.Ops, res.Seconds, res.OpsPerSec, res.Errors)
		return samples.failure(res)
	}
	fmt.Fprintf(cmd.Writer, "%s c=%d conns=%d: %.0f ops/s over %.1fs; latency p50 %v p90 %v p99 %v p99.9 %v; errors %v\n",
		res.Op, res.Concurrency, res.Conns, res.OpsPerSec, res.Seconds,
		res.P50.Round(time.Microsecond), res.P90.Round(time.Microsecond),
		res.P99.Round(time.Microsecond), res.P999.Round(time.Microsecond), res.Errors)
	return samples.failure(res)
}

// Bounds on what errorSamples keeps: kinds are gRPC codes and a few
// client-side names, and one message per kind is enough to say what
// went wrong.
const (
	maxErrorKinds       = 32
	maxErrorSampleBytes = 200
)

// errorSamples classifies failed operations for the workload and keeps
// the first message of each kind, so a run with failures can say what
// they were, not only how many.
type errorSamples struct {
	mu    sync.Mutex
	first map[string]string
}

// classify is classifyBenchError, remembering a sample of each kind.
func (e *errorSamples) classify(err error) string {
	kind := classifyBenchError(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.first == nil {
		e.first = map[string]string{}
	}
	if _, ok := e.first[kind]; !ok && len(e.first) < maxErrorKinds {
		msg := err.Error()
		if st, ok := status.FromError(err); ok {
			msg = st.Message()
		}
		if len(msg) > maxErrorSampleBytes {
			msg = msg[:maxErrorSampleBytes] + "..."
		}
		e.first[kind] = msg
	}
	return kind
}

// failure is nil when measured operations completed and none failed, and
// otherwise the error that makes bench exit non-zero: how many failed, of
// each kind, most frequent first, with a sample message of each; or that
// none completed.
func (e *errorSamples) failure(res workload.Result) error {
	var failed int64
	kinds := make([]string, 0, len(res.Errors))
	for k, n := range res.Errors {
		failed += n
		kinds = append(kinds, k)
	}
	if failed == 0 {
		if res.Ops == 0 {
			// Nothing failed, and nothing finished either: every
			// operation outlived the window (a stuck cluster).
			return fmt.Errorf("bench: no operation completed within the measured %.1fs (those still running at its end are not counted): is the cluster answering?", res.Seconds)
		}
		return nil
	}
	slices.SortFunc(kinds, func(a, b string) int {
		if c := cmp.Compare(res.Errors[b], res.Errors[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s %d", k, res.Errors[k])
		if msg, ok := e.first[k]; ok && msg != "" {
			parts[i] += fmt.Sprintf(" (first: %q)", msg)
		}
	}
	return fmt.Errorf("bench: %d of %d measured operations failed: %s", failed, failed+res.Ops, strings.Join(parts, ", "))
}

// benchOp issues one operation. The txn compares the key's value with the
// worker's value and puts it in either branch, so both branches cost one
// write and throughput does not depend on the data (as in bench/etcd).
func benchOp(ctx context.Context, c kvpb.KVClient, op workload.Op) error {
	key := []byte(op.Key)
	var err error
	switch op.Kind {
	case workload.OpPut:
		_, err = c.Put(ctx, &kvpb.PutRequest{Key: key, Value: op.Value})
	case workload.OpGet:
		_, err = c.Get(ctx, &kvpb.GetRequest{Key: key})
	case workload.OpSGet:
		_, err = c.Get(ctx, &kvpb.GetRequest{Key: key, Serializable: true})
	case workload.OpTxn:
		put := &kvpb.RequestOp{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: key, Value: op.Value}}}
		_, err = c.Txn(ctx, &kvpb.TxnRequest{
			Compare: []*kvpb.Compare{{Key: key, Target: kvpb.Compare_VALUE, Result: kvpb.Compare_EQUAL, Value: op.Value}},
			Success: []*kvpb.RequestOp{put},
			Failure: []*kvpb.RequestOp{put},
		})
	default:
		return fmt.Errorf("unknown operation %q", op.Kind)
	}
	return err
}

// classifyBenchError names an error's kind for the result: the gRPC code
// in snake_case, with the client's own deadline as "timeout".
func classifyBenchError(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return workload.ErrKindTimeout
	case errors.Is(err, context.Canceled):
		return workload.ErrKindCanceled
	}
	st, ok := status.FromError(err)
	if !ok {
		return workload.ErrKindOther
	}
	switch st.Code() {
	case codes.DeadlineExceeded:
		return workload.ErrKindTimeout
	case codes.Canceled:
		return workload.ErrKindCanceled
	}
	return snakeCase(st.Code().String())
}

// snakeCase turns a gRPC code name (DeadlineExceeded) into deadline_exceeded.
func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// findLeader asks each endpoint for its status and returns the endpoint of
// the member that reports itself leader.
func findLeader(ctx context.Context, eps []string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	for _, ep := range eps {
		conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, err := kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{}, grpc.WaitForReady(true))
		conn.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", ep, status.Convert(err).Message()))
			continue
		}
		if st.GetLeader() != 0 && st.GetLeader() == st.GetMemberId() {
			return ep, nil
		}
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("no endpoint is the leader (%v)", errors.Join(errs...))
	}
	return "", fmt.Errorf("none of %s is the leader", strings.Join(eps, ","))
}
