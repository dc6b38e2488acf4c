// Command etcd-member runs one embedded etcd member (go.etcd.io/etcd/server/v3
// embed) for Rafty's side by side benchmark; `etcdbench cluster` starts three
// of them.
//
// It is a Go module of its own that requires go.etcd.io/etcd/server/v3 and
// nothing else, so the etcd server in the comparison is built with the
// dependency versions etcd 3.7.3 pins (grpc, protobuf, bbolt, ...), not with
// the versions Rafty's main module would raise them to through minimal version
// selection. TestBuiltWithEtcdsVersions checks that on the built binary.
//
//	etcd-member --name m1 --data-dir DIR --peer-url http://127.0.0.1:P \
//	  --client-url http://127.0.0.1:C --initial-cluster m1=http://127.0.0.1:P,...
//	etcd-member --verify-deps ETCD-GO.MOD   # compare the linked modules with etcd's go.mod
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Member settings shared by every member of a benchmark cluster.
const (
	// defaultQuotaBytes is the backend quota: 8 GiB, etcd's documented
	// maximum suggestion, far above what a benchmark run writes (a fresh
	// cluster per round), so the quota alarm never fires mid-run.
	defaultQuotaBytes = 8 << 30
	// memberStartTimeout bounds waiting for the member to join a quorum.
	memberStartTimeout = 60 * time.Second
	// memberStopTimeout bounds a graceful stop (leadership transfer,
	// closing the backend); the process exits with status 1 past it.
	memberStopTimeout = 15 * time.Second
	clusterToken      = "etcdbench"
)

// errUsage marks bad input: exit status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run starts the member and returns the exit status: 0 after a clean stop,
// 1 on failure, 2 on bad input.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	m, err := parseArgs(args, stderr)
	if err == nil {
		if m.verifyDeps != "" {
			err = verifyDeps(m.verifyDeps, stdout)
		} else {
			err = serve(ctx, m)
		}
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "etcd-member: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "etcd-member: %v\n", err)
		return 1
	}
}

// memberConfig is one member's command line.
type memberConfig struct {
	name, dataDir      string
	peerURL, clientURL string
	initialCluster     string
	logLevel           string
	quotaBytes         int64
	verifyDeps         string // a go.mod path: check the build instead of serving
}

// parseArgs reads the command line.
func parseArgs(args []string, stderr io.Writer) (memberConfig, error) {
	var m memberConfig
	fs := flag.NewFlagSet("etcd-member", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&m.name, "name", "", "member name (required)")
	fs.StringVar(&m.dataDir, "data-dir", "", "data directory, created if missing (required)")
	fs.StringVar(&m.peerURL, "peer-url", "", "peer URL to listen on and advertise, http://127.0.0.1:PORT (required)")
	fs.StringVar(&m.clientURL, "client-url", "", "client URL to listen on and advertise, http://127.0.0.1:PORT (required)")
	fs.StringVar(&m.initialCluster, "initial-cluster", "", "every member: NAME=PEER-URL,... (required)")
	fs.StringVar(&m.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.Int64Var(&m.quotaBytes, "quota-bytes", defaultQuotaBytes, "backend quota in bytes")
	fs.StringVar(&m.verifyDeps, "verify-deps", "", "instead of serving: compare the modules linked into this binary with the go.mod `FILE` of "+
		etcdModule+"@"+etcdVersion+" (go list -m -f '{{.GoMod}}' "+etcdModule+"), print them and exit 1 on any difference")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return m, err
		}
		return m, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return m, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if m.verifyDeps != "" {
		return m, nil
	}
	if m.name == "" || m.dataDir == "" || m.peerURL == "" || m.clientURL == "" || m.initialCluster == "" {
		return m, fmt.Errorf("%w: --name, --data-dir, --peer-url, --client-url and --initial-cluster are required", errUsage)
	}
	if m.quotaBytes <= 0 {
		return m, fmt.Errorf("%w: --quota-bytes %d: must be positive", errUsage, m.quotaBytes)
	}
	return m, nil
}

// verifyDeps is --verify-deps: the modules linked into this binary (its
// build information, what `go version -m` prints) against etcd's go.mod.
func verifyDeps(gomodPath string, stdout io.Writer) error {
	gomod, err := os.ReadFile(gomodPath)
	if err != nil {
		return err
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("no build information in this binary")
	}
	report, err := checkDeps(fromBuildInfo(info.Deps), gomod)
	fmt.Fprintf(stdout, "etcd-member built by %s; modules linked in, against %s:\n%s", info.GoVersion, gomodPath, report)
	if err != nil {
		return fmt.Errorf("not built with etcd %s's own dependency versions: %w", etcdVersion, err)
	}
	return nil
}

// serve runs one embedded etcd member with fsync on (UnsafeNoFsync is never
// set), logging at --log-level to stderr. It returns when the member stops
// by itself (an error) or after a clean stop on SIGTERM/SIGINT (ctx).
func serve(ctx context.Context, m memberConfig) error {
	cfg, err := m.embedConfig()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	stopped := make(chan struct{})
	stop := func() error {
		go func() { e.Close(); close(stopped) }()
		select {
		case <-stopped:
			return nil
		case <-time.After(memberStopTimeout):
			return fmt.Errorf("stop did not finish within %v", memberStopTimeout)
		}
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		_ = stop()
		return fmt.Errorf("member failed while starting: %w", err)
	case <-time.After(memberStartTimeout):
		_ = stop()
		return fmt.Errorf("not ready within %v", memberStartTimeout)
	case <-ctx.Done():
		return stop()
	}
	select {
	case err := <-e.Err():
		_ = stop()
		return fmt.Errorf("member failed: %w", err)
	case <-e.Server.StopNotify():
		_ = stop()
		return errors.New("member stopped by itself")
	case <-ctx.Done():
		return stop()
	}
}

// embedConfig turns the command line into etcd's configuration: etcd's
// defaults (100 ms heartbeat, 1 s election timeout, snapshot every 10,000
// entries, no auto-compaction) except for the names and URLs, the log
// level and the quota. fsync stays on: UnsafeNoFsync is never set.
func (m memberConfig) embedConfig() (*embed.Config, error) {
	peer, err := url.Parse(m.peerURL)
	if err != nil {
		return nil, fmt.Errorf("--peer-url: %v", err)
	}
	client, err := url.Parse(m.clientURL)
	if err != nil {
		return nil, fmt.Errorf("--client-url: %v", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = m.name
	cfg.Dir = m.dataDir
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.InitialCluster = m.initialCluster
	cfg.InitialClusterToken = clusterToken
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.Logger = "zap"
	cfg.LogLevel = m.logLevel
	cfg.LogOutputs = []string{"stderr"}
	cfg.QuotaBackendBytes = m.quotaBytes
	if cfg.UnsafeNoFsync {
		return nil, errors.New("internal error: fsync is off")
	}
	return cfg, nil
}
