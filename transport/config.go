package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/internal/logdefault"
)

// Defaults applied by New to zero-valued Config fields.
const (
	// DefaultBulkQueueLen is the default bound on the messages queued on
	// one peer's bulk lane. A healthy peer drains its queue every few
	// milliseconds, so the bound is only reached when the peer is slow or
	// gone, which is when dropping is right.
	DefaultBulkQueueLen = 4096
	// DefaultBulkQueueBytes is the default bound on the encoded bytes
	// queued on one peer's bulk lane: twice the core's default
	// MaxInflightBytes (32 MiB), which already bounds the appends in
	// flight to one follower, so a leader with default settings reaches
	// it only when the follower or the network is stalled.
	DefaultBulkQueueBytes = 64 << 20
	// DefaultUrgentQueueLen is the default bound on the messages queued
	// on one peer's urgent lane: as many as the bulk lane's, since read
	// rounds under a heavy read load send a heartbeat each, and a queued
	// urgent message costs little.
	DefaultUrgentQueueLen = 4096
	// DefaultUrgentQueueBytes is the default bound on the encoded bytes
	// queued on one peer's urgent lane: the lane takes messages of at most
	// MaxUrgentMessageBytes, and its usual ones are tens of bytes.
	DefaultUrgentQueueBytes = 1 << 20
	// DefaultMaxMessageBytes is the default bound on one gRPC message.
	DefaultMaxMessageBytes = 4 << 20
	// DefaultSnapshotChunkBytes is the default snapshot chunk size: large
	// enough that per-frame costs vanish, small enough that the few
	// chunks in flight on each side stay a few MiB.
	DefaultSnapshotChunkBytes = 256 << 10
	// MaxSnapshotChunkBytes is the largest allowed snapshot chunk. Larger
	// chunks buy no throughput and cost memory on both sides.
	MaxSnapshotChunkBytes = 1 << 20
	// DefaultDialTimeout is the default bound on one connection attempt.
	DefaultDialTimeout = 5 * time.Second
	// DefaultReconnectBaseDelay is the default first gRPC reconnect backoff.
	DefaultReconnectBaseDelay = 100 * time.Millisecond
	// DefaultReconnectMaxDelay is the default cap on gRPC reconnect backoff.
	// It is much lower than gRPC's own default (120 s) because a restarted
	// Raft peer should rejoin within a few election timeouts.
	DefaultReconnectMaxDelay = 5 * time.Second
	// DefaultKeepaliveInterval is the default idle time before a keepalive
	// ping; gRPC does not allow less than MinKeepaliveInterval.
	DefaultKeepaliveInterval = 10 * time.Second
	// MinKeepaliveInterval is gRPC's floor for client keepalive pings.
	MinKeepaliveInterval = 10 * time.Second
	// DefaultKeepaliveTimeout is the default wait for a ping ack before the
	// connection is declared dead.
	DefaultKeepaliveTimeout = 5 * time.Second
	// DefaultCloseTimeout is the default time Close lets in-flight snapshot
	// transfers finish before cutting them off.
	DefaultCloseTimeout = 5 * time.Second
	// DefaultStreamWindowBytes is the default HTTP/2 flow-control window per
	// stream. A fixed window (instead of gRPC's dynamic one, which grows to
	// 16 MiB) is what bounds the memory a slow receiver can be made to
	// buffer.
	DefaultStreamWindowBytes = 1 << 20

	// minMessageBytes keeps MaxMessageBytes large enough for any
	// non-append message plus batch framing.
	minMessageBytes = 4 << 10
	// maxMessageBytesLimit is far above any sane batch; it keeps size
	// arithmetic (and gRPC's int32 windows) safe.
	maxMessageBytesLimit = 1 << 30
	// minStreamWindowBytes is HTTP/2's default window; gRPC ignores
	// smaller settings.
	minStreamWindowBytes = 64 << 10
	// snapshotFrameOverheadBytes bounds the framing around one snapshot
	// data chunk (oneof tag and length varint).
	snapshotFrameOverheadBytes = 16
)

// Config configures a GRPC transport. Zero-valued limits take the
// defaults above; New reports every invalid field at once.
type Config struct {
	// ClusterID identifies the cluster; it travels on every batch and
	// snapshot, and traffic carrying another ID is refused. Required,
	// non-zero.
	ClusterID uint64
	// NodeID is this node's Raft ID, non-zero. Zero means not known yet
	// (an empty data directory that will join): the transport then
	// serves the Cluster service only, refuses Raft traffic as "starting"
	// and sends nothing, until SetNodeID. Zero is refused with a Handler.
	NodeID uint64

	// Listener, if set, is the socket to serve peers on; the transport
	// owns it from New on and closes it in Close. Exactly one of Listener
	// and ListenAddr must be set.
	Listener net.Listener
	// ListenAddr is a TCP host:port to listen on when Listener is nil.
	ListenAddr string

	// Peers are the cluster's members: the same []driver.Peer as
	// driver.Config.Peers. Each Addr is host:port with a DNS name (for
	// example a Kubernetes FQDN "rafty-1.rafty.default.svc.cluster.local:7000")
	// or an IP, or any gRPC target with a scheme ("dns:///...", "unix:...").
	// An entry for NodeID itself is allowed, so that every node can be
	// given the same list, and is not dialled; it is not required either
	// (peers may also be added later with AddPeer). IDs must be non-zero
	// and distinct, addresses distinct (see driver.Peer).
	Peers []driver.Peer

	// Handler receives incoming messages and snapshots and drop reports.
	// It may be nil here and set later with SetHandler; until then
	// incoming Raft traffic is refused with Unavailable "node N is
	// starting". If it implements interface{ RemovedBy(uint64) }, the
	// transport calls RemovedBy(peer) when a peer refuses this node's
	// traffic because this node was removed from the cluster.
	Handler driver.MessageHandler

	// Cluster serves the peer-port Cluster service (Probe, Join) that a
	// node with an empty data directory asks before it bootstraps or
	// joins. Nil: both RPCs answer Unimplemented. It may also be set
	// later with SetClusterHandler.
	Cluster ClusterHandler

	// AcceptUnknownSenders accepts message batches and snapshots from
	// senders that are not in the peer set (the cluster ID and the
	// receiver are still checked). A node whose membership changes needs
	// it: a joiner knows no member when the leader first contacts it, and
	// a member that has not yet applied a configuration change may hear
	// from a member it adds (even a new leader), whose traffic is what
	// lets it catch up. The core decides what such messages may do
	// (leader messages are taken, the rest dropped and counted), and the
	// driver refuses removed members. False keeps the static-membership
	// rule: batches from unknown senders are refused (PermissionDenied).
	// Replies to an unknown sender are dropped (DropUnknownPeer) until
	// SetPeers or AddPeer gives its address.
	AcceptUnknownSenders bool

	// BulkQueueLen and BulkQueueBytes bound the messages queued on one
	// peer's bulk lane (appends, their responses, forwarded proposals; see
	// doc.go, "Lanes"), in number and in encoded bytes; a message that
	// would exceed either is dropped (DropQueueFull) and the peer
	// reported unreachable. Defaults DefaultBulkQueueLen and
	// DefaultBulkQueueBytes; BulkQueueBytes is at least MaxMessageBytes,
	// so that any message fits an empty queue.
	BulkQueueLen int
	// BulkQueueBytes: see BulkQueueLen.
	BulkQueueBytes int
	// UrgentQueueLen and UrgentQueueBytes bound the messages queued on
	// one peer's urgent lane (heartbeats, votes, read confirmations and
	// the other small control messages), as BulkQueueLen and
	// BulkQueueBytes do the bulk lane's. Defaults DefaultUrgentQueueLen
	// and DefaultUrgentQueueBytes; UrgentQueueBytes is at least
	// MaxUrgentMessageBytes.
	UrgentQueueLen int
	// UrgentQueueBytes: see UrgentQueueLen.
	UrgentQueueBytes int
	// MaxMessageBytes bounds one gRPC message in both directions. Batches
	// are split to fit; a single Raft message that cannot fit is dropped.
	// Default DefaultMaxMessageBytes; at least 4 KiB. All peers should use
	// the same value: a receiver refuses larger messages.
	MaxMessageBytes int
	// SnapshotChunkBytes is the size of one snapshot data frame, at most
	// MaxSnapshotChunkBytes. Default DefaultSnapshotChunkBytes, or less if
	// MaxMessageBytes requires.
	SnapshotChunkBytes int
	// StreamWindowBytes is the HTTP/2 flow-control window of one stream
	// (a connection gets twice that). It bounds what the network can
	// buffer in front of a slow receiver. Default
	// DefaultStreamWindowBytes; at least 64 KiB.
	StreamWindowBytes int

	// DialTimeout bounds one connection attempt (TCP and TLS handshake).
	// Default DefaultDialTimeout.
	DialTimeout time.Duration
	// ReconnectBaseDelay and ReconnectMaxDelay configure gRPC's
	// exponential reconnect backoff. Defaults DefaultReconnectBaseDelay
	// and DefaultReconnectMaxDelay.
	ReconnectBaseDelay time.Duration
	// ReconnectMaxDelay: see ReconnectBaseDelay.
	ReconnectMaxDelay time.Duration
	// KeepaliveInterval is how long a connection may be idle before a
	// ping checks the peer is alive; KeepaliveTimeout is how long the ack
	// may take before the connection is closed. Defaults
	// DefaultKeepaliveInterval (at least MinKeepaliveInterval) and
	// DefaultKeepaliveTimeout.
	KeepaliveInterval time.Duration
	// KeepaliveTimeout: see KeepaliveInterval.
	KeepaliveTimeout time.Duration
	// CloseTimeout bounds how long Close waits for in-flight snapshot
	// transfers before cutting them off. Default DefaultCloseTimeout.
	CloseTimeout time.Duration

	// TLSCertFile, TLSKeyFile and TLSCAFile enable mutual TLS from PEM
	// files: this node's certificate (used both as server and as client
	// certificate, so it needs both extended key usages, and a SAN
	// matching the address peers dial), its key, and the CA bundle that
	// signs every peer. All three or none. The certificate and key are
	// re-read when the files change, so short-lived certificates can be
	// rotated in place; the CA bundle is read once, by New.
	TLSCertFile string
	// TLSKeyFile: see TLSCertFile.
	TLSKeyFile string
	// TLSCAFile: see TLSCertFile.
	TLSCAFile string
	// TLS, instead of the three files, enables mutual TLS with a prepared
	// configuration used for both directions: Certificates (or
	// GetCertificate and GetClientCertificate) for this node, RootCAs to
	// verify servers, ClientCAs to verify clients, and ClientAuth set to
	// tls.RequireAndVerifyClientCert. It is cloned by New.
	TLS *tls.Config

	// Registerer, if set, receives the transport's Prometheus metrics.
	// Wrap it (prometheus.WrapRegistererWith) to run several transports
	// in one process.
	Registerer prometheus.Registerer
	// Logger receives the transport's logs. Nil means warnings and errors
	// go to slog.Default() (as it is when New runs), routine progress is
	// dropped; slog.New(slog.DiscardHandler) turns logs off.
	Logger *slog.Logger
}

// withDefaults returns cfg with zero limits replaced by their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.BulkQueueLen == 0 {
		cfg.BulkQueueLen = DefaultBulkQueueLen
	}
	if cfg.BulkQueueBytes == 0 {
		cfg.BulkQueueBytes = DefaultBulkQueueBytes
	}
	if cfg.UrgentQueueLen == 0 {
		cfg.UrgentQueueLen = DefaultUrgentQueueLen
	}
	if cfg.UrgentQueueBytes == 0 {
		cfg.UrgentQueueBytes = DefaultUrgentQueueBytes
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.SnapshotChunkBytes == 0 {
		cfg.SnapshotChunkBytes = min(DefaultSnapshotChunkBytes, cfg.MaxMessageBytes-snapshotFrameOverheadBytes)
	}
	if cfg.StreamWindowBytes == 0 {
		cfg.StreamWindowBytes = DefaultStreamWindowBytes
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReconnectBaseDelay == 0 {
		cfg.ReconnectBaseDelay = DefaultReconnectBaseDelay
	}
	if cfg.ReconnectMaxDelay == 0 {
		cfg.ReconnectMaxDelay = max(DefaultReconnectMaxDelay, cfg.ReconnectBaseDelay)
	}
	if cfg.KeepaliveInterval == 0 {
		cfg.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = logdefault.Logger()
	}
	return cfg
}

// validate reports every problem of a defaulted cfg, joined.
func (cfg *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("transport: config: "+format, args...))
	}
	if cfg.ClusterID == 0 {
		bad("ClusterID is 0; every node of a cluster needs the same non-zero ID")
	}
	if cfg.NodeID == 0 && cfg.Handler != nil {
		bad("NodeID is 0 with a Handler; node IDs start at 1 (0 means not known yet: set it with SetNodeID before SetHandler)")
	}
	switch {
	case cfg.Listener != nil && cfg.ListenAddr != "":
		bad("both Listener and ListenAddr (%q) are set; set one", cfg.ListenAddr)
	case cfg.Listener == nil && cfg.ListenAddr == "":
		bad("neither Listener nor ListenAddr is set")
	case cfg.Listener == nil:
		if _, _, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
			bad("ListenAddr %q is not host:port: %v", cfg.ListenAddr, err)
		}
	}
	for _, err := range driver.CheckPeers(cfg.Peers) {
		bad("%v", err)
	}
	for i, p := range cfg.Peers {
		if err := checkPeerAddr(p.Addr); err != nil {
			bad("Peers[%d] (ID %d): %v", i, p.ID, err)
		}
	}
	if cfg.BulkQueueLen <= 0 {
		bad("BulkQueueLen is %d; it must be positive", cfg.BulkQueueLen)
	}
	if cfg.UrgentQueueLen <= 0 {
		bad("UrgentQueueLen is %d; it must be positive", cfg.UrgentQueueLen)
	}
	if cfg.BulkQueueBytes < cfg.MaxMessageBytes {
		bad("BulkQueueBytes is %d; it must be at least MaxMessageBytes (%d), so that any message fits", cfg.BulkQueueBytes, cfg.MaxMessageBytes)
	}
	if cfg.UrgentQueueBytes < MaxUrgentMessageBytes {
		bad("UrgentQueueBytes is %d; it must be at least MaxUrgentMessageBytes (%d)", cfg.UrgentQueueBytes, MaxUrgentMessageBytes)
	}
	if cfg.MaxMessageBytes < minMessageBytes || cfg.MaxMessageBytes > maxMessageBytesLimit {
		bad("MaxMessageBytes is %d; it must be between %d and %d", cfg.MaxMessageBytes, minMessageBytes, maxMessageBytesLimit)
	}
	if cfg.SnapshotChunkBytes <= 0 || cfg.SnapshotChunkBytes > MaxSnapshotChunkBytes {
		bad("SnapshotChunkBytes is %d; it must be between 1 and %d", cfg.SnapshotChunkBytes, MaxSnapshotChunkBytes)
	} else if cfg.SnapshotChunkBytes > cfg.MaxMessageBytes-snapshotFrameOverheadBytes {
		bad("SnapshotChunkBytes %d does not fit in MaxMessageBytes %d with %d bytes of framing",
			cfg.SnapshotChunkBytes, cfg.MaxMessageBytes, snapshotFrameOverheadBytes)
	}
	if cfg.StreamWindowBytes < minStreamWindowBytes || cfg.StreamWindowBytes > maxMessageBytesLimit/2 {
		bad("StreamWindowBytes is %d; it must be between %d and %d", cfg.StreamWindowBytes, minStreamWindowBytes, maxMessageBytesLimit/2)
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad("%s is %v; it must be positive", name, d)
		}
	}
	positive("DialTimeout", cfg.DialTimeout)
	positive("ReconnectBaseDelay", cfg.ReconnectBaseDelay)
	positive("KeepaliveTimeout", cfg.KeepaliveTimeout)
	positive("CloseTimeout", cfg.CloseTimeout)
	if cfg.ReconnectMaxDelay < cfg.ReconnectBaseDelay {
		bad("ReconnectMaxDelay %v is below ReconnectBaseDelay %v", cfg.ReconnectMaxDelay, cfg.ReconnectBaseDelay)
	}
	if cfg.KeepaliveInterval < MinKeepaliveInterval {
		bad("KeepaliveInterval is %v; gRPC allows no less than %v", cfg.KeepaliveInterval, MinKeepaliveInterval)
	}
	files := 0
	for _, f := range []string{cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile} {
		if f != "" {
			files++
		}
	}
	if files != 0 && files != 3 {
		bad("TLSCertFile, TLSKeyFile and TLSCAFile must be set together (got %q, %q, %q)",
			cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile)
	}
	if files != 0 && cfg.TLS != nil {
		bad("both TLS and the TLS*File paths are set; set one")
	}
	if cfg.TLS != nil {
		if err := checkTLSConfig(cfg.TLS); err != nil {
			bad("TLS: %v", err)
		}
	}
	return errors.Join(errs...)
}

// checkPeerAddr accepts host:port with a non-empty host and port, or a
// gRPC target with an explicit scheme.
func checkPeerAddr(addr string) error {
	if addr == "" {
		return errors.New("empty address")
	}
	if hasScheme(addr) {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %v", addr, err)
	}
	if host == "" || port == "" {
		return fmt.Errorf("address %q needs both a host and a port", addr)
	}
	return nil
}
