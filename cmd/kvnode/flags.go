package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// Defaults of the serve flags. The ports follow common practice for
// key-value stores (2379 for clients) and Prometheus exporters (9090), so
// the deploy manifests and the README can name them.
const (
	// The listeners default to loopback: the client API and the Raft port
	// must not face every network the host is on unless the operator says
	// so (the Compose file and the StatefulSet set their addresses). An
	// empty --peer-listen means "this node's own --peers entry".
	defaultPeerListen    = ""
	defaultClientListen  = "127.0.0.1:2379"
	defaultMetricsListen = "127.0.0.1:9090"
	// metricsOff as --metrics-listen turns the metrics listener off.
	metricsOff = "off"

	defaultDataDir         = "data"
	defaultClusterName     = "rafty"
	defaultTick            = 100 * time.Millisecond
	defaultElectionTicks   = 5
	defaultHeartbeatTicks  = 1
	defaultReadMode        = "safe"
	defaultMaxClockDrift   = 1
	defaultShutdownTimeout = 8 * time.Second

	// maxClusterSize bounds --cluster-size: a Raft cluster of more voters
	// than this is a configuration slip (every write waits for a majority).
	maxClusterSize = 15
	// maxShutdownTimeout keeps a stop bounded even when misconfigured;
	// orchestrators kill a process that ignores SIGTERM for long anyway.
	maxShutdownTimeout = time.Minute
)

// Names of the serve flags, shared by the flag table and the code that
// reads them back, so a typo cannot silently read an unset flag.
const (
	flagID             = "id"
	flagHostname       = "hostname"
	flagPeers          = "peers"
	flagPeerTemplate   = "peer-template"
	flagClusterSize    = "cluster-size"
	flagClusterID      = "cluster-id"
	flagDataDir        = "data-dir"
	flagPeerListen     = "peer-listen"
	flagClientListen   = "client-listen"
	flagMetricsListen  = "metrics-listen"
	flagTick           = "tick"
	flagElectionTicks  = "election-ticks"
	flagHeartbeatTicks = "heartbeat-ticks"
	flagReadMode       = "read-mode"
	flagMaxClockDrift  = "max-clock-drift-ticks"

	flagSnapshotEntries         = "snapshot-entries"
	flagSnapshotBytes           = "snapshot-bytes"
	flagCompactionMarginEntries = "compaction-margin-entries"
	flagCompactionMarginBytes   = "compaction-margin-bytes"
	flagSnapshotTimeout         = "snapshot-timeout"
	flagMaxSnapshotSends        = "max-snapshot-sends"

	flagPeerTLSCert     = "peer-tls-cert"
	flagPeerTLSKey      = "peer-tls-key"
	flagPeerTLSCA       = "peer-tls-ca"
	flagShutdownTimeout = "shutdown-timeout"
	flagLogFormat       = "log-format"
	flagLogLevel        = "log-level"
	flagEnablePprof     = "enable-pprof"

	// Membership changes (docs/operations.md).
	flagJoin       = "join"
	flagName       = "name"
	flagPeerAddr   = "peer-addr"
	flagClientAddr = "client-addr"
)

// envName returns the environment twin of a flag: KVNODE_ plus the flag
// name upper-cased with dashes as underscores (--peer-template ->
// KVNODE_PEER_TEMPLATE). Every flag has one, so a container can be
// configured entirely through its environment.
func envName(flag string) string {
	return "KVNODE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// env is the Sources value of a flag's environment twin.
func env(flag string) cli.ValueSourceChain { return cli.EnvVars(envName(flag)) }

// serveFlags returns the flags of `kvnode serve`. A fresh set per call:
// urfave/cli flags keep parse state, and tests build many apps.
func serveFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagID, Sources: env(flagID), Category: "identity",
			Usage: "this node's Raft ID (1, 2, ...); empty derives it from the StatefulSet ordinal of --hostname (rafty-2 -> 3)"},
		&cli.StringFlag{Name: flagHostname, Sources: env(flagHostname), Category: "identity",
			Usage: "host name whose -<ordinal> suffix gives the ID when --id is empty (default: the system host name)"},
		&cli.StringFlag{Name: flagPeers, Sources: env(flagPeers), Category: "cluster",
			Usage: "every member's peer address, this node included: `ID=HOST:PORT,...`"},
		&cli.StringFlag{Name: flagPeerTemplate, Sources: env(flagPeerTemplate), Category: "cluster",
			Usage: "instead of --peers: peer address with {i} (ordinal, from 0) or {id} (ordinal+1), e.g. 'rafty-{i}.rafty.default.svc.cluster.local:7000'; member i gets ID i+1"},
		&cli.IntFlag{Name: flagClusterSize, Sources: env(flagClusterSize), Category: "cluster",
			Usage: "number of initial members --peer-template expands to; a pod whose ordinal is at or above it joins the running cluster (scale-up). Used only to create the cluster: afterwards its replicated membership is the truth"},
		&cli.StringFlag{Name: flagJoin, Sources: env(flagJoin), Category: "cluster",
			Usage: "join a running cluster through the peer addresses of some of its members, `HOST:PORT,...` (used only while the data directory is empty)"},
		&cli.StringFlag{Name: flagName, Sources: env(flagName), Category: "identity",
			Usage: "this member's name, unique in the cluster (default: the pod name with --peer-template, else the host part of this node's peer address when it is a DNS name)"},
		&cli.StringFlag{Name: flagPeerAddr, Sources: env(flagPeerAddr), Category: "network",
			Usage: "this node's peer address as the others dial it, for --join (default: its --peers or --peer-template entry, else --peer-listen)"},
		&cli.StringFlag{Name: flagClientAddr, Sources: env(flagClientAddr), Category: "network",
			Usage: "this node's client address as clients dial it, published in the membership for redirects (default: --client-listen unless it is a wildcard, else the peer address's host with --client-listen's port)"},
		&cli.StringFlag{Name: flagClusterID, Sources: env(flagClusterID), Category: "cluster", Value: defaultClusterName,
			Usage: "cluster name, the same on every member; peers of another cluster are refused"},
		&cli.StringFlag{Name: flagDataDir, Sources: env(flagDataDir), Category: "storage", Value: defaultDataDir, TakesFile: true,
			Usage: "directory holding raft/ (write-ahead log) and kv/ (Pebble)"},
		&cli.StringFlag{Name: flagPeerListen, Sources: env(flagPeerListen), Category: "network", Value: defaultPeerListen,
			Usage: "host:port serving Raft traffic from peers (default: this node's own --peers entry, which must then be an IP address or localhost); its port must be that entry's port"},
		&cli.StringFlag{Name: flagClientListen, Sources: env(flagClientListen), Category: "network", Value: defaultClientListen,
			Usage: "host:port serving the client gRPC API"},
		&cli.StringFlag{Name: flagMetricsListen, Sources: env(flagMetricsListen), Category: "network", Value: defaultMetricsListen,
			Usage: "host:port serving /metrics, /healthz and /readyz, or 'off'"},
		&cli.DurationFlag{Name: flagTick, Sources: env(flagTick), Category: "raft", Value: defaultTick,
			Usage: "length of one Raft tick"},
		&cli.IntFlag{Name: flagElectionTicks, Sources: env(flagElectionTicks), Category: "raft", Value: defaultElectionTicks,
			Usage: "minimum election timeout in ticks (each timeout is drawn from [n, 2n) ticks)"},
		&cli.IntFlag{Name: flagHeartbeatTicks, Sources: env(flagHeartbeatTicks), Category: "raft", Value: defaultHeartbeatTicks,
			Usage: "leader heartbeat interval in ticks (less than --election-ticks)"},
		&cli.StringFlag{Name: flagReadMode, Sources: env(flagReadMode), Category: "raft", Value: defaultReadMode,
			Usage: "how the leader confirms a linearizable read: safe (a heartbeat round with a quorum, ReadIndex) or lease (its leader lease, no round; correct only while clocks on the members advance at rates within --max-clock-drift-ticks per election timeout)"},
		&cli.IntFlag{Name: flagMaxClockDrift, Sources: env(flagMaxClockDrift), Category: "raft", Value: defaultMaxClockDrift,
			Usage: "--read-mode lease: ticks taken off the lease for clock rate drift between members (1 to --election-ticks - 2)"},
		&cli.IntFlag{Name: flagSnapshotEntries, Sources: env(flagSnapshotEntries), Category: "snapshots", Value: driver.DefaultSnapshotEntries,
			Usage: "snapshot the state machine once this many log entries were applied since the last snapshot (or --snapshot-bytes, whichever comes first)"},
		&cli.StringFlag{Name: flagSnapshotBytes, Sources: env(flagSnapshotBytes), Category: "snapshots", Value: formatSize(driver.DefaultSnapshotBytes),
			Usage: "snapshot once the entries applied since the last snapshot total `SIZE`: bytes, or a whole number of B, KiB, MiB, GiB or TiB (or --snapshot-entries, whichever comes first)"},
		&cli.IntFlag{Name: flagCompactionMarginEntries, Sources: env(flagCompactionMarginEntries), Category: "snapshots", Value: driver.DefaultCompactionMarginEntries,
			Usage: "log entries kept below a snapshot when the log is compacted, so a follower briefly behind catches up from the log instead of receiving a snapshot (the smaller of this and --compaction-margin-bytes is kept)"},
		&cli.StringFlag{Name: flagCompactionMarginBytes, Sources: env(flagCompactionMarginBytes), Category: "snapshots", Value: formatSize(driver.DefaultCompactionMarginBytes),
			Usage: "bytes of log kept below a snapshot when the log is compacted: `SIZE` like --snapshot-bytes"},
		&cli.DurationFlag{Name: flagSnapshotTimeout, Sources: env(flagSnapshotTimeout), Category: "snapshots", Value: driver.DefaultSnapshotTimeout,
			Usage: "fail (and later retry) a snapshot transfer to a follower that makes no progress for this long"},
		&cli.IntFlag{Name: flagMaxSnapshotSends, Sources: env(flagMaxSnapshotSends), Category: "snapshots", Value: driver.DefaultMaxSnapshotSends,
			Usage: "snapshot transfers to followers running at once; others wait their turn"},
		&cli.StringFlag{Name: flagPeerTLSCert, Sources: env(flagPeerTLSCert), Category: "peer TLS", TakesFile: true,
			Usage: "PEM certificate for peer mutual TLS (server and client use); with --peer-tls-key and --peer-tls-ca"},
		&cli.StringFlag{Name: flagPeerTLSKey, Sources: env(flagPeerTLSKey), Category: "peer TLS", TakesFile: true,
			Usage: "PEM private key of --peer-tls-cert"},
		&cli.StringFlag{Name: flagPeerTLSCA, Sources: env(flagPeerTLSCA), Category: "peer TLS", TakesFile: true,
			Usage: "PEM CA bundle that signs every peer's certificate"},
		&cli.DurationFlag{Name: flagShutdownTimeout, Sources: env(flagShutdownTimeout), Category: "process", Value: defaultShutdownTimeout,
			Usage: "bound on a graceful stop (leadership transfer, draining requests, closing files) after SIGTERM"},
		&cli.StringFlag{Name: flagLogFormat, Sources: env(flagLogFormat), Category: "process", Value: "text",
			Usage: "log format: text or json"},
		&cli.StringFlag{Name: flagLogLevel, Sources: env(flagLogLevel), Category: "process", Value: "info",
			Usage: "log level: debug, info, warn or error"},
		&cli.BoolFlag{Name: flagEnablePprof, Sources: env(flagEnablePprof), Category: "process",
			Usage: "serve Go's /debug/pprof profiles on the metrics address (off by default: they expose internals)"},
	}
}

// serveConfig is the validated configuration of one node.
type serveConfig struct {
	ID uint64
	// Peers maps every member's ID to its peer address, this node's too.
	Peers map[uint64]string
	// ClusterName is what the operator typed; ClusterID is its hash,
	// which travels on every peer message.
	ClusterName string
	ClusterID   uint64

	// Join lists peer addresses of a running cluster's members to join
	// through when the data directory is empty (--join, or a pod whose
	// ordinal is at or above --cluster-size).
	Join []string
	// Joiner: with an empty data directory this node joins (--join or a
	// scale-up ordinal) instead of possibly bootstrapping.
	Joiner bool
	// IDExplicit: --id was given (not derived from a host name).
	IDExplicit bool
	// Name, SelfPeerAddr and SelfClientAddr describe this node in the
	// replicated membership when it joins.
	Name           string
	SelfPeerAddr   string
	SelfClientAddr string
	// PeerNames names the initial members (--peer-template: the pod
	// names; --peers: the hosts' first labels when they are DNS names).
	PeerNames map[uint64]string
	// FromTemplate: the initial members come from --peer-template (a
	// StatefulSet), so every pod serves clients on the same port.
	FromTemplate bool
	// ClientPort is --client-listen's port: with --peer-template every
	// pod serves clients on it, so a member's client address is its peer
	// host with this port (for redirects to a leader).
	ClientPort string

	DataDir       string
	PeerListen    string
	ClientListen  string
	MetricsListen string

	Tick           time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// ReadMode and MaxClockDriftTicks go to core.Config as is.
	ReadMode           core.ReadMode
	MaxClockDriftTicks int

	// Snapshot and compaction policy, handed to driver.Config as is; all
	// positive (the driver would read a zero as its default).
	SnapshotEntries         int
	SnapshotBytes           int64
	CompactionMarginEntries int
	CompactionMarginBytes   int64
	SnapshotTimeout         time.Duration
	MaxSnapshotSends        int

	TLSCertFile string
	TLSKeyFile  string
	TLSCAFile   string

	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        slog.Level
	// EnablePprof serves /debug/pprof on the metrics listener.
	EnablePprof bool
}

// RaftDir is where the write-ahead log lives.
func (c *serveConfig) RaftDir() string { return filepath.Join(c.DataDir, "raft") }

// KVDir is where Pebble keeps the state machine.
func (c *serveConfig) KVDir() string { return filepath.Join(c.DataDir, "kv") }

// PeerIDs returns the member IDs in ascending order.
func (c *serveConfig) PeerIDs() []uint64 {
	ids := make([]uint64, 0, len(c.Peers))
	for id := range c.Peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// LogAttrs describes the effective configuration in one log line, so an
// operator can tell from the first line of a node's log what it runs with.
func (c *serveConfig) LogAttrs() []any {
	peers := make([]string, 0, len(c.Peers))
	for _, id := range c.PeerIDs() {
		peers = append(peers, fmt.Sprintf("%d=%s", id, c.Peers[id]))
	}
	return []any{
		slog.Uint64("id", c.ID),
		slog.String("peers", strings.Join(peers, ",")),
		slog.String("cluster", c.ClusterName),
		slog.Uint64("cluster_id", c.ClusterID),
		slog.String("data_dir", c.DataDir),
		slog.String("peer_listen", c.PeerListen),
		slog.String("client_listen", c.ClientListen),
		slog.String("metrics_listen", c.MetricsListen),
		slog.String("tick", c.Tick.String()),
		slog.Int("election_ticks", c.ElectionTicks),
		slog.Int("heartbeat_ticks", c.HeartbeatTicks),
		slog.String("read_mode", c.ReadMode.String()),
		slog.Int("max_clock_drift_ticks", c.MaxClockDriftTicks),
		slog.Int("snapshot_entries", c.SnapshotEntries),
		slog.String("snapshot_bytes", formatSize(c.SnapshotBytes)),
		slog.Int("compaction_margin_entries", c.CompactionMarginEntries),
		slog.String("compaction_margin_bytes", formatSize(c.CompactionMarginBytes)),
		slog.String("snapshot_timeout", c.SnapshotTimeout.String()),
		slog.Int("max_snapshot_sends", c.MaxSnapshotSends),
		slog.Bool("peer_tls", c.TLSCertFile != ""),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("log_level", c.LogLevel.String()),
	}
}

// flagValues is what the serve flags hold, before validation. Tests fill
// it directly; the command fills it from its parsed flags.
type flagValues struct {
	ID, Hostname                      string
	Peers, PeerTemplate               string
	ClusterSize                       int
	ClusterName, DataDir              string
	PeerListen, ClientListen, Metrics string
	Tick                              time.Duration
	ElectionTicks, HeartbeatTicks     int
	ReadMode                          string
	MaxClockDriftTicks                int
	// The sizes stay text until config parses them, so a bad one is
	// reported with the other problems, naming its flag.
	SnapshotEntries, CompactionMarginEntries int
	SnapshotBytes, CompactionMarginBytes     string
	SnapshotTimeout                          time.Duration
	MaxSnapshotSends                         int
	TLSCert, TLSKey, TLSCA                   string
	ShutdownTimeout                          time.Duration
	LogFormat, LogLevel                      string
	EnablePprof                              bool
	Join, Name, PeerAddr, ClientAddr         string
	// systemHostname and statFile replace os.Hostname and os.Stat in
	// tests; nil means the real ones.
	systemHostname func() (string, error)
	statFile       func(string) (os.FileInfo, error)
}

// readFlagValues collects the serve flags of cmd.
func readFlagValues(cmd *cli.Command) flagValues {
	return flagValues{
		ID:                      cmd.String(flagID),
		Hostname:                cmd.String(flagHostname),
		Peers:                   cmd.String(flagPeers),
		PeerTemplate:            cmd.String(flagPeerTemplate),
		ClusterSize:             cmd.Int(flagClusterSize),
		ClusterName:             cmd.String(flagClusterID),
		DataDir:                 cmd.String(flagDataDir),
		PeerListen:              cmd.String(flagPeerListen),
		ClientListen:            cmd.String(flagClientListen),
		Metrics:                 cmd.String(flagMetricsListen),
		Tick:                    cmd.Duration(flagTick),
		ElectionTicks:           cmd.Int(flagElectionTicks),
		HeartbeatTicks:          cmd.Int(flagHeartbeatTicks),
		ReadMode:                cmd.String(flagReadMode),
		MaxClockDriftTicks:      cmd.Int(flagMaxClockDrift),
		SnapshotEntries:         cmd.Int(flagSnapshotEntries),
		SnapshotBytes:           cmd.String(flagSnapshotBytes),
		CompactionMarginEntries: cmd.Int(flagCompactionMarginEntries),
		CompactionMarginBytes:   cmd.String(flagCompactionMarginBytes),
		SnapshotTimeout:         cmd.Duration(flagSnapshotTimeout),
		MaxSnapshotSends:        cmd.Int(flagMaxSnapshotSends),
		TLSCert:                 cmd.String(flagPeerTLSCert),
		TLSKey:                  cmd.String(flagPeerTLSKey),
		TLSCA:                   cmd.String(flagPeerTLSCA),
		ShutdownTimeout:         cmd.Duration(flagShutdownTimeout),
		LogFormat:               cmd.String(flagLogFormat),
		LogLevel:                cmd.String(flagLogLevel),
		EnablePprof:             cmd.Bool(flagEnablePprof),
		Join:                    cmd.String(flagJoin),
		Name:                    cmd.String(flagName),
		PeerAddr:                cmd.String(flagPeerAddr),
		ClientAddr:              cmd.String(flagClientAddr),
	}
}

// defaultFlagValues returns the values the flags hold when none is given;
// tests start from it.
func defaultFlagValues() flagValues {
	return flagValues{
		ClusterName:             defaultClusterName,
		DataDir:                 defaultDataDir,
		PeerListen:              defaultPeerListen,
		ClientListen:            defaultClientListen,
		Metrics:                 defaultMetricsListen,
		Tick:                    defaultTick,
		ElectionTicks:           defaultElectionTicks,
		HeartbeatTicks:          defaultHeartbeatTicks,
		ReadMode:                defaultReadMode,
		MaxClockDriftTicks:      defaultMaxClockDrift,
		SnapshotEntries:         driver.DefaultSnapshotEntries,
		SnapshotBytes:           formatSize(driver.DefaultSnapshotBytes),
		CompactionMarginEntries: driver.DefaultCompactionMarginEntries,
		CompactionMarginBytes:   formatSize(driver.DefaultCompactionMarginBytes),
		SnapshotTimeout:         driver.DefaultSnapshotTimeout,
		MaxSnapshotSends:        driver.DefaultMaxSnapshotSends,
		ShutdownTimeout:         defaultShutdownTimeout,
		LogFormat:               "text",
		LogLevel:                "info",
	}
}

// config validates v and returns the node configuration. Every problem is
// reported, joined with "; " into one line, so an operator fixes them all
// in one go instead of one restart per mistake.
func (v flagValues) config() (*serveConfig, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	c := &serveConfig{
		DataDir:                 v.DataDir,
		Tick:                    v.Tick,
		ElectionTicks:           v.ElectionTicks,
		HeartbeatTicks:          v.HeartbeatTicks,
		MaxClockDriftTicks:      v.MaxClockDriftTicks,
		SnapshotEntries:         v.SnapshotEntries,
		CompactionMarginEntries: v.CompactionMarginEntries,
		SnapshotTimeout:         v.SnapshotTimeout,
		MaxSnapshotSends:        v.MaxSnapshotSends,
		TLSCertFile:             v.TLSCert,
		TLSKeyFile:              v.TLSKey,
		TLSCAFile:               v.TLSCA,
		ShutdownTimeout:         v.ShutdownTimeout,
	}

	// Membership: exactly one of --peers and --peer-template, or --join.
	if v.Join != "" {
		eps, err := parsePeerEndpoints(v.Join)
		if err != nil {
			bad("--%s: %v", flagJoin, err)
		}
		c.Join, c.Joiner = eps, true
	}
	template := false
	switch {
	case v.Peers != "" && v.PeerTemplate != "":
		bad("--%s and --%s are mutually exclusive; give one", flagPeers, flagPeerTemplate)
	case v.Peers == "" && v.PeerTemplate == "":
		if !c.Joiner {
			bad("no members: give --%s ID=HOST:PORT,..., --%s with --%s, or --%s to join a running cluster", flagPeers, flagPeerTemplate, flagClusterSize, flagJoin)
		}
	case v.Peers != "":
		if v.ClusterSize != 0 {
			bad("--%s applies only to --%s", flagClusterSize, flagPeerTemplate)
		}
		peers, err := parsePeers(v.Peers)
		if err != nil {
			bad("--%s: %v", flagPeers, err)
		}
		c.Peers = peers
		c.PeerNames = hostNames(peers)
	default:
		template = true
		c.FromTemplate = true
		peers, err := expandPeerTemplate(v.PeerTemplate, v.ClusterSize)
		if err != nil {
			bad("--%s: %v", flagPeerTemplate, err)
		}
		c.Peers = peers
		c.PeerNames = hostNames(peers)
	}

	// Identity: --id, or the ordinal of the host name. A joiner's ID is
	// allocated by the cluster (and read back from the data directory's
	// identity file on restart).
	host := v.Hostname
	if v.ID != "" {
		id, err := parseNodeID(v.ID)
		if err != nil {
			bad("--%s: %v", flagID, err)
		}
		if c.Joiner {
			bad("--%s and --%s: a joining member's ID is allocated by the cluster", flagID, flagJoin)
		}
		c.ID, c.IDExplicit = id, true
	} else if c.Peers != nil {
		if host == "" {
			sys := v.systemHostname
			if sys == nil {
				sys = os.Hostname
			}
			h, err := sys()
			if err != nil {
				bad("--%s is empty and the host name is unknown (%v); set --%s", flagID, err, flagID)
			}
			host = h
		}
		if host != "" {
			id, err := idFromHostname(host)
			if err != nil {
				bad("--%s is empty and %v; set --%s", flagID, err, flagID)
			}
			c.ID = id
		}
	}
	if c.ID != 0 && c.Peers != nil {
		if _, ok := c.Peers[c.ID]; !ok {
			if template && !c.IDExplicit {
				// A pod beyond the initial size: a scale-up. It joins
				// through the initial members, at the address the
				// template gives its ordinal.
				ord := int(c.ID - 1)
				c.SelfPeerAddr = strings.NewReplacer("{i}", strconv.Itoa(ord), "{id}", strconv.Itoa(ord+1)).Replace(v.PeerTemplate)
				c.Joiner = true
				if c.Join == nil {
					for _, id := range c.PeerIDs() {
						c.Join = append(c.Join, c.Peers[id])
					}
				}
				c.ID = 0
			} else {
				bad("this node's ID %d is not a member (members: %s)", c.ID, joinIDs(c.PeerIDs()))
			}
		} else {
			c.SelfPeerAddr = c.Peers[c.ID]
		}
	}
	if template && host != "" {
		// StatefulSet pods are named <set>-<ordinal>: the initial members'
		// names follow from this pod's, identically on every pod.
		short, _, _ := strings.Cut(host, ".")
		if i := strings.LastIndexByte(short, '-'); i > 0 {
			for id := range c.Peers {
				c.PeerNames[id] = short[:i+1] + strconv.FormatUint(id-1, 10)
			}
		}
	}
	if v.PeerAddr != "" {
		if err := checkDialAddr(v.PeerAddr); err != nil {
			bad("--%s: %v", flagPeerAddr, err)
		} else if c.SelfPeerAddr != "" && c.SelfPeerAddr != v.PeerAddr {
			bad("--%s %s disagrees with this node's entry %s", flagPeerAddr, v.PeerAddr, c.SelfPeerAddr)
		}
		c.SelfPeerAddr = v.PeerAddr
	}
	if c.SelfPeerAddr == "" && v.PeerListen != "" && c.Joiner {
		if h, _, err := net.SplitHostPort(v.PeerListen); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() {
			c.SelfPeerAddr = v.PeerListen
		}
	}
	if c.Joiner && c.SelfPeerAddr == "" {
		bad("a joining node needs its own peer address: give --%s HOST:PORT (the address the members dial)", flagPeerAddr)
	}
	c.Name = v.Name
	if c.Name == "" {
		switch {
		case template && host != "":
			c.Name, _, _ = strings.Cut(host, ".")
		case c.ID != 0 && c.PeerNames[c.ID] != "":
			c.Name = c.PeerNames[c.ID]
		case c.SelfPeerAddr != "":
			c.Name = dnsLabel(c.SelfPeerAddr)
		}
	}
	if _, initial := c.Peers[c.ID]; c.Name == "" && c.ID != 0 && initial {
		// The name the bootstrap entry gives an initial member without
		// a DNS name (see initialPeers), so that the node, back with an
		// empty data directory, replaces its old self by name.
		c.Name = "node-" + strconv.FormatUint(c.ID, 10)
	}

	if strings.TrimSpace(v.ClusterName) == "" {
		bad("--%s must not be empty", flagClusterID)
	}
	c.ClusterName = v.ClusterName
	c.ClusterID = clusterIDFromName(v.ClusterName)

	if strings.TrimSpace(v.DataDir) == "" {
		bad("--%s must not be empty", flagDataDir)
	}
	listens := []struct {
		flag string
		val  string
		dst  *string
	}{
		{flagPeerListen, v.PeerListen, &c.PeerListen},
		{flagClientListen, v.ClientListen, &c.ClientListen},
		{flagMetricsListen, v.Metrics, &c.MetricsListen},
	}
	seen := map[string]string{}
	for _, l := range listens {
		if l.flag == flagMetricsListen && l.val == metricsOff {
			*l.dst = ""
			continue
		}
		if l.flag == flagPeerListen {
			self := c.SelfPeerAddr
			// How the messages name this node's address: its --peers
			// entry when it has one.
			what := "peer address " + self
			if c.Peers[c.ID] == self && self != "" && !template {
				what = fmt.Sprintf("--%s entry %d=%s", flagPeers, c.ID, self)
			}
			if l.val == "" && self != "" {
				if !bindable(self) {
					bad("--%s is needed: this node's %s is a host name, not a local address to listen on (e.g. --%s 0.0.0.0:%s)",
						flagPeerListen, what, flagPeerListen, portOf(self))
					continue
				}
				l.val = self
			} else if l.val != "" && self != "" {
				if err := peerListenMatches(l.val, self); err != nil {
					bad("--%s %s disagrees with this node's %s, the address its peers dial: %v",
						flagPeerListen, l.val, what, err)
					continue
				}
			}
			if l.val == "" {
				continue // no usable ID or membership: reported above
			}
		}
		if err := checkListenAddr(l.val); err != nil {
			bad("--%s: %v", l.flag, err)
			continue
		}
		*l.dst = l.val
		if _, port, _ := net.SplitHostPort(l.val); port != "0" {
			if other, dup := seen[l.val]; dup {
				bad("--%s and --%s both listen on %s", other, l.flag, l.val)
			}
			seen[l.val] = l.flag
		}
	}

	// This node's client address as published in the membership.
	if c.ClientListen != "" {
		c.ClientPort = portOf(c.ClientListen)
	}
	switch {
	case v.ClientAddr != "":
		if err := checkDialAddr(v.ClientAddr); err != nil {
			bad("--%s: %v", flagClientAddr, err)
		}
		c.SelfClientAddr = v.ClientAddr
	case c.ClientListen != "":
		if h, _, err := net.SplitHostPort(c.ClientListen); err == nil && h != "" && !net.ParseIP(h).IsUnspecified() && c.ClientPort != "0" {
			c.SelfClientAddr = c.ClientListen
		} else if sh, _, err := net.SplitHostPort(c.SelfPeerAddr); err == nil && c.ClientPort != "0" {
			c.SelfClientAddr = net.JoinHostPort(sh, c.ClientPort)
		}
	}

	// The Raft and snapshot settings: the core and the driver check their
	// own rules (checkDriverConfig). kvnode checks only what they cannot:
	// the read mode's spelling, the sizes' syntax, and zero values, which
	// the driver would read as "use the default" but which a flag set to 0
	// means literally, so each of these flags must be positive (otherwise
	// --compaction-margin-entries 0 would silently keep 5,000 entries).
	// Nothing ties the margin to --snapshot-entries: a margin above the
	// snapshot interval only keeps more log, which is legitimate.
	reported := map[string]bool{} // flags already reported: once each
	badFlag := func(flag, format string, args ...any) {
		reported[flag] = true
		bad(format, args...)
	}
	if v.Tick == 0 {
		badFlag(flagTick, "--%s must be at least %v, got %v", flagTick, driver.MinTickInterval, v.Tick)
	}
	switch v.ReadMode {
	case "safe":
		c.ReadMode = core.ReadSafe
	case "lease":
		c.ReadMode = core.ReadLease
	default:
		badFlag(flagReadMode, "--%s must be safe or lease, got %q", flagReadMode, v.ReadMode)
	}
	for _, f := range []struct {
		flag string
		val  int
	}{
		{flagSnapshotEntries, v.SnapshotEntries},
		{flagCompactionMarginEntries, v.CompactionMarginEntries},
		{flagMaxSnapshotSends, v.MaxSnapshotSends},
	} {
		if f.val < 1 {
			badFlag(f.flag, "--%s must be at least 1, got %d", f.flag, f.val)
		}
	}
	for _, f := range []struct {
		flag string
		val  string
		dst  *int64
	}{
		{flagSnapshotBytes, v.SnapshotBytes, &c.SnapshotBytes},
		{flagCompactionMarginBytes, v.CompactionMarginBytes, &c.CompactionMarginBytes},
	} {
		n, err := parseSize(f.val)
		switch {
		case err != nil:
			badFlag(f.flag, "--%s: %v", f.flag, err)
		case n < 1:
			badFlag(f.flag, "--%s must be at least 1 byte, got %s", f.flag, f.val)
		default:
			*f.dst = n
		}
	}
	if v.SnapshotTimeout <= 0 {
		badFlag(flagSnapshotTimeout, "--%s must be positive, got %v", flagSnapshotTimeout, v.SnapshotTimeout)
	}
	for _, p := range c.checkDriverConfig() {
		if !reported[p.flag] {
			bad("%s", p.msg)
		}
	}

	tlsFiles := []struct{ flag, path string }{
		{flagPeerTLSCert, v.TLSCert}, {flagPeerTLSKey, v.TLSKey}, {flagPeerTLSCA, v.TLSCA},
	}
	var given, missing []string
	for _, f := range tlsFiles {
		if f.path == "" {
			missing = append(missing, "--"+f.flag)
		} else {
			given = append(given, "--"+f.flag)
		}
	}
	if len(given) > 0 && len(missing) > 0 {
		bad("peer TLS needs --%s, --%s and --%s together; %s missing",
			flagPeerTLSCert, flagPeerTLSKey, flagPeerTLSCA, strings.Join(missing, " and "))
	}
	stat := v.statFile
	if stat == nil {
		stat = os.Stat
	}
	for _, f := range tlsFiles {
		if f.path == "" {
			continue
		}
		if fi, err := stat(f.path); err != nil {
			bad("--%s: %v", f.flag, unwrapPathError(err))
		} else if fi.IsDir() {
			bad("--%s: %s is a directory, want a PEM file", f.flag, f.path)
		}
	}

	if v.ShutdownTimeout <= 0 || v.ShutdownTimeout > maxShutdownTimeout {
		bad("--%s must be in (0, %v], got %v", flagShutdownTimeout, maxShutdownTimeout, v.ShutdownTimeout)
	}
	switch v.LogFormat {
	case "text", "json":
		c.LogFormat = v.LogFormat
	default:
		bad("--%s must be text or json, got %q", flagLogFormat, v.LogFormat)
	}
	lvl, err := parseLogLevel(v.LogLevel)
	if err != nil {
		bad("--%s: %v", flagLogLevel, err)
	}
	c.LogLevel = lvl
	c.EnablePprof = v.EnablePprof

	if len(errs) > 0 {
		return nil, usageError(errors.New(strings.Join(errs, "; ")))
	}
	return c, nil
}

// driverConfig is the driver configuration the flags describe, with
// limits, the client service's (its largest proposal). serve completes it
// with what exists only at run time: the ID and members (which may come
// from the data directory or a join), storage, state machine, transport,
// logger and metrics. config validates it first, with stand-ins for
// those (checkDriverConfig), so the rules are the driver's and the core's
// and hold for the node serve starts.
func (c *serveConfig) driverConfig(limits kv.Limits) driver.Config {
	return driver.Config{
		TickInterval: c.Tick,
		TuneRaft:     c.tuneRaft,
		// The policy of the snapshot flags: all positive, so none is read
		// as the driver's default.
		SnapshotEntries:         c.SnapshotEntries,
		SnapshotBytes:           c.SnapshotBytes,
		CompactionMarginEntries: c.CompactionMarginEntries,
		CompactionMarginBytes:   c.CompactionMarginBytes,
		SnapshotTimeout:         c.SnapshotTimeout,
		MaxSnapshotSends:        c.MaxSnapshotSends,
		// The driver's default proposal limit is below what the client
		// service accepts (a maximal value plus its key and framing).
		MaxProposalBytes: limits.MaxProposalBytes(),
		// The leader refuses forwarded commands that would not decode.
		ValidateCommand: kv.ValidateCommand,
	}
}

// tuneRaft is driverConfig's TuneRaft: the core settings of the flags.
func (c *serveConfig) tuneRaft(rc *core.Config) {
	rc.ElectionTicks = c.ElectionTicks
	rc.HeartbeatTicks = c.HeartbeatTicks
	rc.ReadMode = c.ReadMode
	rc.MaxClockDriftTicks = c.MaxClockDriftTicks
}

// fieldFlags names the flag behind each field the flags set, as
// core.FieldErrors reports the driver's problems (the core's under
// TuneRaft).
var fieldFlags = map[string]string{
	"TickInterval":                flagTick,
	"TuneRaft.ElectionTicks":      flagElectionTicks,
	"TuneRaft.HeartbeatTicks":     flagHeartbeatTicks,
	"TuneRaft.ReadMode":           flagReadMode,
	"TuneRaft.MaxClockDriftTicks": flagMaxClockDrift,
	"SnapshotEntries":             flagSnapshotEntries,
	"SnapshotBytes":               flagSnapshotBytes,
	"CompactionMarginEntries":     flagCompactionMarginEntries,
	"CompactionMarginBytes":       flagCompactionMarginBytes,
	"SnapshotTimeout":             flagSnapshotTimeout,
	"MaxSnapshotSends":            flagMaxSnapshotSends,
}

// goFieldNames matches, as whole words, the Go names of the fields in
// fieldFlags, which the driver's and the core's messages use.
var goFieldNames = func() *regexp.Regexp {
	names := make([]string, 0, len(fieldFlags))
	for path := range fieldFlags {
		names = append(names, regexp.QuoteMeta(path[strings.LastIndexByte(path, '.')+1:]))
	}
	slices.Sort(names)
	return regexp.MustCompile(`\b(` + strings.Join(names, "|") + `)\b`)
}()

// flagNames rewrites the Go field names in a driver or core message as
// the flags that set them ("HeartbeatTicks (5) must be less than
// ElectionTicks (5)" -> "--heartbeat-ticks (5) must be less than
// --election-ticks (5)"). Only for reading: which flag a problem is about
// comes from its field, not from its words.
func flagNames(msg string) string {
	return goFieldNames.ReplaceAllStringFunc(msg, func(name string) string {
		for path, flag := range fieldFlags {
			if path == name || strings.HasSuffix(path, "."+name) {
				return "--" + flag
			}
		}
		return name
	})
}

// flagProblem is one problem the driver or the core found, with the flag
// that set the field ("" for a field no flag sets).
type flagProblem struct{ flag, msg string }

// Stand-ins for the parts of a driver.Config that exist only once serve
// has opened them, so that config can validate the rest: Validate only
// checks that they are set (Start checks the real ones again).
type (
	storageStandIn      struct{ driver.Storage }
	stateMachineStandIn struct{ driver.StateMachine }
	transportStandIn    struct{ driver.Transport }
)

// checkDriverConfig validates driverConfig with the driver's Validate
// (which runs the core's) and returns its problems, each in one line
// naming its flag.
func (c *serveConfig) checkDriverConfig() []flagProblem {
	dc := c.driverConfig(kv.DefaultLimits())
	dc.ID = c.ID
	if dc.ID == 0 {
		dc.ID = 1 // a joiner: the cluster allocates its ID
	}
	// Peers stay out: kvnode parsed and checked them (the driver checks
	// them again at Start, as part of the node's real configuration).
	dc.Storage, dc.StateMachine, dc.Transport = storageStandIn{}, stateMachineStandIn{}, transportStandIn{}
	var out []flagProblem
	for _, p := range core.FieldErrors(dc.Validate()) {
		msg := strings.ReplaceAll(p.Err.Error(), "\n", "; ")
		flag, ok := fieldFlags[p.Field]
		if !ok {
			// Not from a flag: a value kvnode sets itself is wrong.
			msg = "a setting no flag controls is invalid (a kvnode bug): " + msg
		} else {
			msg = flagNames(msg)
		}
		out = append(out, flagProblem{flag: flag, msg: msg})
	}
	return out
}

// parsePeerEndpoints parses --join: peer addresses HOST:PORT,...
func parsePeerEndpoints(s string) ([]string, error) {
	var eps []string
	for ep := range strings.SplitSeq(s, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			return nil, fmt.Errorf("empty entry in %q (want HOST:PORT,...)", s)
		}
		if err := checkDialAddr(ep); err != nil {
			return nil, err
		}
		if !slices.Contains(eps, ep) {
			eps = append(eps, ep)
		}
	}
	return eps, nil
}

// dnsLabel returns the first label of addr's host when it is a DNS name
// (rafty-0 of rafty-0.rafty.ns.svc:7000), and "" for an IP address or
// localhost, which name no member.
func dnsLabel(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" || host == "localhost" || net.ParseIP(host) != nil {
		return ""
	}
	label, _, _ := strings.Cut(host, ".")
	return label
}

// hostNames names the initial members after their peer hosts' first
// labels (the pod names of a StatefulSet), leaving out IP addresses and
// labels two members share: a name must identify one member.
func hostNames(peers map[uint64]string) map[uint64]string {
	names := map[uint64]string{}
	count := map[string]int{}
	for id, addr := range peers {
		if l := dnsLabel(addr); l != "" {
			names[id] = l
			count[l]++
		}
	}
	for id, l := range names {
		if count[l] > 1 {
			delete(names, id)
		}
	}
	return names
}

// parseNodeID parses a Raft node ID: a decimal number from 1.
func parseNodeID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("node ID %q is not a positive decimal number", s)
	}
	if id == 0 {
		return 0, errors.New("node ID 0 is reserved; IDs start at 1")
	}
	return id, nil
}

// idFromHostname derives a node ID from a StatefulSet pod's host name:
// pods are named <statefulset>-<ordinal> with ordinals from 0, and Raft IDs
// start at 1, so rafty-2 is node 3. A fully qualified name is cut at its
// first dot first (rafty-2.rafty.default.svc.cluster.local).
func idFromHostname(host string) (uint64, error) {
	short, _, _ := strings.Cut(host, ".")
	i := strings.LastIndexByte(short, '-')
	if i < 0 || i == len(short)-1 {
		return 0, fmt.Errorf("host name %q does not end in -<ordinal> (a StatefulSet pod name like rafty-0)", host)
	}
	digits := short[i+1:]
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("host name %q does not end in -<ordinal> (a StatefulSet pod name like rafty-0)", host)
		}
	}
	ord, err := strconv.ParseUint(digits, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("host name %q has an ordinal out of range", host)
	}
	return ord + 1, nil
}

// parsePeers parses ID=HOST:PORT,... into a map. Entries may be separated
// by commas and surrounding spaces; IDs and addresses must be unique.
func parsePeers(s string) (map[uint64]string, error) {
	peers := map[uint64]string{}
	byAddr := map[string]uint64{}
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("empty entry in %q (want ID=HOST:PORT,...)", s)
		}
		idText, addr, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q is not ID=HOST:PORT", entry)
		}
		id, err := parseNodeID(idText)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v", entry, err)
		}
		addr = strings.TrimSpace(addr)
		if err := checkDialAddr(addr); err != nil {
			return nil, fmt.Errorf("entry %q: %v", entry, err)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("node %d is listed twice", id)
		}
		if other, dup := byAddr[addr]; dup {
			return nil, fmt.Errorf("nodes %d and %d share address %s", other, id, addr)
		}
		peers[id] = addr
		byAddr[addr] = id
	}
	return peers, nil
}

// expandPeerTemplate turns a StatefulSet-style address template into the
// member map: member i (from 0) gets ID i+1 and the template with {i}
// replaced by i and {id} by i+1. The template must distinguish members,
// so it needs at least one placeholder; any other {...} is an error, as it
// is most likely a misspelt placeholder.
func expandPeerTemplate(tmpl string, size int) (map[uint64]string, error) {
	if size < 1 || size > maxClusterSize {
		return nil, fmt.Errorf("needs --%s between 1 and %d, got %d", flagClusterSize, maxClusterSize, size)
	}
	rest := strings.NewReplacer("{i}", "", "{id}", "").Replace(tmpl)
	if rest == tmpl {
		return nil, fmt.Errorf("template %q has no {i} or {id} placeholder, so every member would get the same address", tmpl)
	}
	if strings.ContainsAny(rest, "{}") {
		return nil, fmt.Errorf("template %q has an unknown placeholder; only {i} (ordinal from 0) and {id} (ordinal+1) exist", tmpl)
	}
	peers := make(map[uint64]string, size)
	for i := range size {
		addr := strings.NewReplacer("{i}", strconv.Itoa(i), "{id}", strconv.Itoa(i+1)).Replace(tmpl)
		if err := checkDialAddr(addr); err != nil {
			return nil, fmt.Errorf("member %d: %v", i, err)
		}
		peers[uint64(i+1)] = addr
	}
	return peers, nil
}

// checkDialAddr accepts HOST:PORT with a non-empty host and a numeric port
// from 1 to 65535: the peers' addresses must be dialable.
func checkDialAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not HOST:PORT", addr)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("address %q has an invalid port (want 1-65535)", addr)
	}
	return nil
}

// checkListenAddr accepts [HOST]:PORT with a numeric port (0 picks one).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q has an invalid port (want 0-65535)", addr)
	}
	return nil
}

// bindable reports whether this node can listen on its own peer address
// as given: an IP literal or localhost. A DNS name usually resolves to an
// address the operator means to bind through another one (0.0.0.0 in a
// container), so it needs an explicit --peer-listen.
func bindable(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return host == "localhost" || net.ParseIP(host) != nil
}

// portOf returns addr's port, or "PORT" if it has none.
func portOf(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil {
		return port
	}
	return "PORT"
}

// peerListenMatches checks that listening on listen serves the peers that
// dial self (this node's --peers entry): the ports are equal and, where
// both hosts are IP literals, the listen address is the entry's or a
// wildcard. A host name in the entry is not resolved here (DNS may not be
// ready at start, and a name may point through a load balancer).
func peerListenMatches(listen, self string) error {
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil {
		return nil // checkListenAddr reports it
	}
	shost, sport, err := net.SplitHostPort(self)
	if err != nil {
		return nil // parsePeers reported it
	}
	if lport != sport {
		return fmt.Errorf("port %s is not %s", lport, sport)
	}
	lip, sip := net.ParseIP(lhost), net.ParseIP(shost)
	if lhost == "" || (lip != nil && lip.IsUnspecified()) {
		return nil
	}
	if lip != nil && sip != nil && !lip.Equal(sip) {
		return fmt.Errorf("host %s is not %s", lhost, shost)
	}
	return nil
}

// clusterIDFromName hashes a cluster name to the non-zero 64-bit ID the
// transport puts on every message. A name is easier to keep consistent
// across manifests than a number, and a hash collision between two
// clusters that could reach each other is negligible (2^-64).
func clusterIDFromName(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

// parseLogLevel accepts the slog level names in any case.
func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		if err := l.UnmarshalText([]byte(s)); err != nil {
			return 0, err
		}
		return l, nil
	}
	return 0, fmt.Errorf("want debug, info, warn or error, got %q", s)
}

// sizeUnits are the units parseSize accepts and formatSize prints, largest
// first. Only binary ones: "MB" is read as 10^6 by some tools and 2^20 by
// others, so it is refused rather than guessed.
var sizeUnits = []struct {
	name string
	mult int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseSize parses a byte count: a decimal integer, optionally followed
// (after optional spaces) by a unit B, KiB, MiB, GiB or TiB in any case.
func parseSize(s string) (int64, error) {
	text := strings.TrimSpace(s)
	i := 0
	for i < len(text) && text[i] >= '0' && text[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q is not a size: want a number of bytes, optionally with a unit B, KiB, MiB, GiB or TiB (64MiB)", s)
	}
	n, err := strconv.ParseInt(text[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	unit := strings.TrimSpace(text[i:])
	if unit == "" {
		return n, nil
	}
	if unit[0] == '.' {
		return 0, fmt.Errorf("size %q: want a whole number of a unit (1536KiB, not 1.5MiB)", s)
	}
	for _, u := range sizeUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/u.mult {
				return 0, fmt.Errorf("size %q is out of range", s)
			}
			return n * u.mult, nil
		}
	}
	switch strings.ToUpper(unit) {
	case "K", "KB", "M", "MB", "G", "GB", "T", "TB":
		return 0, fmt.Errorf("size %q: use a binary unit (KiB, MiB, GiB, TiB); %s is ambiguous", s, unit)
	}
	return 0, fmt.Errorf("size %q has an unknown unit %q; want B, KiB, MiB, GiB or TiB", s, unit)
}

// formatSize prints n with the largest binary unit that divides it
// exactly, so parseSize reads it back unchanged (67108864 -> 64MiB).
func formatSize(n int64) string {
	for _, u := range sizeUnits[:len(sizeUnits)-1] {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// joinIDs formats IDs as "1,2,3" for messages.
func joinIDs(ids []uint64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(id, 10)
	}
	return strings.Join(parts, ",")
}

// unwrapPathError shortens "stat x: no such file or directory" to the
// path and the reason, which is all the operator needs.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}
