package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/rafty-db/rafty/bench/workload"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	defaultOpTimeout   = 5 * time.Second
	defaultDialTimeout = 5 * time.Second
)

// loadConfig is a parsed `etcdbench load` command line.
type loadConfig struct {
	spec        workload.Spec
	endpoints   []string
	leaderOnly  bool
	pids        []int
	opTimeout   time.Duration
	dialTimeout time.Duration
	progress    io.Writer // nil: no progress lines
	prefillOnly bool      // workload.Preload instead of workload.Run
}

// loadMain is `etcdbench load`: run one workload against an etcd cluster
// and print the result (JSON with --json).
func loadMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := loadConfig{spec: workload.DefaultSpec()}
	fs := newFlagSet("load", stderr)
	cfg.spec.RegisterFlags(fs)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "client endpoints host:port,...")
	fs.BoolVar(&cfg.leaderOnly, "leader-only", false, "send every request to the leader (found with Status before the run)")
	pids := fs.String("pids", "", "server process IDs PID,... whose CPU time over the measured window is reported")
	jsonOut := fs.Bool("json", false, "print the result as one JSON object")
	quiet := fs.Bool("quiet", false, "no progress lines on standard error")
	fs.BoolVar(&cfg.prefillOnly, "prefill-only", false, "only write every key once, as --prefill does, and report that (no warm-up, no measured window): a preload")
	fs.DurationVar(&cfg.opTimeout, "op-timeout", defaultOpTimeout, "deadline of each operation (an expired one counts as error kind \"timeout\")")
	fs.DurationVar(&cfg.dialTimeout, "dial-timeout", defaultDialTimeout, "bound on connecting and on the leader lookup")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if err := cfg.spec.Validate(); err != nil {
		return usagef("%v", err)
	}
	for ep := range strings.SplitSeq(*endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			cfg.endpoints = append(cfg.endpoints, ep)
		}
	}
	if len(cfg.endpoints) == 0 {
		return usagef("--endpoints is empty")
	}
	var err error
	if cfg.pids, err = workload.ParsePids(*pids); err != nil {
		return usagef("--pids: %v", err)
	}
	if cfg.opTimeout <= 0 || cfg.dialTimeout <= 0 {
		return usagef("--op-timeout and --dial-timeout must be positive")
	}
	if !*quiet {
		cfg.progress = stderr
	}
	res, err := runLoad(ctx, cfg)
	if err != nil {
		return err
	}
	if *jsonOut {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	_, err = fmt.Fprint(stdout, summary(res))
	return err
}

// runLoad connects cfg.spec.Conns clients and runs the workload.
func runLoad(ctx context.Context, cfg loadConfig) (workload.Result, error) {
	targets, ver, err := pickTargets(ctx, cfg)
	if err != nil {
		return workload.Result{}, err
	}
	clients := make([]*clientv3.Client, cfg.spec.Conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{targets[i%len(targets)]},
			DialTimeout: cfg.dialTimeout,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return workload.Result{}, fmt.Errorf("connect %s: %w", targets[i%len(targets)], err)
		}
		clients[i] = c
	}
	// Each worker's value is constant: convert it to a string once (a
	// worker only touches its own slot).
	values := make([]string, cfg.spec.Concurrency)
	do := func(ctx context.Context, op workload.Op) error {
		c := clients[op.Worker%len(clients)]
		ctx, cancel := context.WithTimeout(ctx, cfg.opTimeout)
		defer cancel()
		var err error
		switch op.Kind {
		case workload.OpPut:
			_, err = c.Put(ctx, op.Key, workerValue(values, op))
		case workload.OpGet:
			_, err = c.Get(ctx, op.Key)
		case workload.OpSGet:
			_, err = c.Get(ctx, op.Key, clientv3.WithSerializable())
		case workload.OpTxn:
			v := workerValue(values, op)
			_, err = c.Txn(ctx).
				If(clientv3.Compare(clientv3.Value(op.Key), "=", v)).
				Then(clientv3.OpPut(op.Key, v)).
				Else(clientv3.OpPut(op.Key, v)).
				Commit()
		default:
			err = fmt.Errorf("unknown op kind %q", op.Kind)
		}
		return err
	}
	label := fmt.Sprintf("etcd %s c=%d", cfg.spec.Op, cfg.spec.Concurrency)
	opts := []workload.Option{workload.WithClassifier(classifyEtcd), workload.WithCPUPids(cfg.pids)}
	if cfg.progress != nil {
		opts = append(opts, workload.WithProgress(cfg.progress, label))
	}
	var res workload.Result
	if cfg.prefillOnly {
		res = workload.Preload(ctx, cfg.spec, do, opts...)
	} else {
		res = workload.Run(ctx, cfg.spec, do, opts...)
	}
	res.System = workload.SystemEtcd
	res.Version = "etcd " + ver
	res.LeaderOnly = cfg.leaderOnly
	return res, nil
}

func workerValue(values []string, op workload.Op) string {
	v := values[op.Worker]
	if len(v) != len(op.Value) {
		v = string(op.Value)
		values[op.Worker] = v
	}
	return v
}

// pickTargets returns the endpoints the clients connect to (only the
// leader's with --leader-only) and the servers' version.
func pickTargets(ctx context.Context, cfg loadConfig) ([]string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.endpoints, DialTimeout: cfg.dialTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, "", err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, cfg.endpoints[0])
	if err != nil {
		return nil, "", fmt.Errorf("status of %s: %w", cfg.endpoints[0], err)
	}
	if !cfg.leaderOnly {
		return cfg.endpoints, st.Version, nil
	}
	leader, err := findLeader(ctx, cli, cfg.endpoints)
	if err != nil {
		return nil, "", fmt.Errorf("finding the leader: %w", err)
	}
	return []string{leader}, st.Version, nil
}

// etcdErrors are the etcd server errors worth telling apart, by the name
// they are counted under.
var etcdErrors = []struct {
	name string
	err  error
}{
	{"no_leader", rpctypes.ErrNoLeader},
	{"leader_changed", rpctypes.ErrLeaderChanged},
	{"too_many_requests", rpctypes.ErrTooManyRequests},
	{"no_space", rpctypes.ErrNoSpace},
	{"server_timeout", rpctypes.ErrTimeout},
	{"server_timeout_leader_fail", rpctypes.ErrTimeoutDueToLeaderFail},
	{"server_timeout_connection_lost", rpctypes.ErrTimeoutDueToConnectionLost},
	{"stopped", rpctypes.ErrStopped},
	{"not_capable", rpctypes.ErrNotCapable},
	{"unhealthy", rpctypes.ErrUnhealthy},
	{"corrupt", rpctypes.ErrCorrupt},
}

// classifyEtcd names the kind of a failed operation: the shared context
// kinds, etcd's own errors, else the gRPC status code in snake_case.
func classifyEtcd(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return workload.ErrKindTimeout
	case errors.Is(err, context.Canceled):
		return workload.ErrKindCanceled
	}
	for _, e := range etcdErrors {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK && s.Code() != codes.Unknown {
		return snakeCase(s.Code().String())
	}
	return workload.ErrKindOther
}

// snakeCase turns "DeadlineExceeded" into "deadline_exceeded".
func snakeCase(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// summary is the human-readable form of a result.
func summary(r workload.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s): %s, concurrency %d over %d connection(s), %d-byte values, %d keys\n",
		r.System, r.Version, r.Op, r.Concurrency, r.Conns, r.ValueBytes, r.Keys)
	fmt.Fprintf(&b, "  %d ops in %.1f s: %.0f ops/s\n", r.Ops, r.Seconds, r.OpsPerSec)
	fmt.Fprintf(&b, "  latency ms: p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
		msf(r.P50), msf(r.P90), msf(r.P99), msf(r.P999), msf(r.Max))
	if len(r.CPUPids) > 0 {
		fmt.Fprintf(&b, "  server CPU %.2f s (%.3f s per 1,000 ops); client CPU %.2f s\n",
			r.CPUSeconds, r.CPUPer1kOps(), r.ClientCPUSeconds)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "  errors: %v\n", r.Errors)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "  warning: %s\n", w)
	}
	if r.Interrupted {
		b.WriteString("  interrupted before the window ended\n")
	}
	return b.String()
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
