package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
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

// memberConfig is one member's command line.
type memberConfig struct {
	name, dataDir      string
	peerURL, clientURL string
	initialCluster     string
	logLevel           string
	quotaBytes         int64
}

func (m memberConfig) args() []string {
	return []string{"member",
		"--name", m.name, "--data-dir", m.dataDir,
		"--peer-url", m.peerURL, "--client-url", m.clientURL,
		"--initial-cluster", m.initialCluster, "--log-level", m.logLevel,
		"--quota-bytes", fmt.Sprint(m.quotaBytes),
	}
}

// memberMain is `etcdbench member`: one embedded etcd member with fsync on
// (UnsafeNoFsync is never set), logging at --log-level to stderr. It
// returns when the member stops by itself (an error) or after a clean stop
// on SIGTERM/SIGINT (ctx).
func memberMain(ctx context.Context, args []string, stderr io.Writer) error {
	var m memberConfig
	fs := newFlagSet("member", stderr)
	fs.StringVar(&m.name, "name", "", "member name (required)")
	fs.StringVar(&m.dataDir, "data-dir", "", "data directory, created if missing (required)")
	fs.StringVar(&m.peerURL, "peer-url", "", "peer URL to listen on and advertise, http://127.0.0.1:PORT (required)")
	fs.StringVar(&m.clientURL, "client-url", "", "client URL to listen on and advertise, http://127.0.0.1:PORT (required)")
	fs.StringVar(&m.initialCluster, "initial-cluster", "", "every member: NAME=PEER-URL,... (required)")
	fs.StringVar(&m.logLevel, "log-level", "warn", "debug, info, warn or error")
	fs.Int64Var(&m.quotaBytes, "quota-bytes", defaultQuotaBytes, "backend quota in bytes")
	if err := parseFlags(fs, args, false); err != nil {
		return err
	}
	if m.name == "" || m.dataDir == "" || m.peerURL == "" || m.clientURL == "" || m.initialCluster == "" {
		return usagef("--name, --data-dir, --peer-url, --client-url and --initial-cluster are required")
	}
	cfg, err := m.embedConfig()
	if err != nil {
		return usagef("%v", err)
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
		return fmt.Errorf("member stopped by itself")
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
		return nil, fmt.Errorf("internal error: fsync is off")
	}
	return cfg, nil
}
