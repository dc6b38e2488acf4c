package driver

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/internal/logdefault"
)

// Clock is the loop's source of time. Production uses the wall clock (nil
// Config.Clock); tests inject a manual clock (drivertest.Clock) so that
// elections happen when the test lets time pass.
type Clock interface {
	// Now returns the current time. The loop measures elapsed time with
	// it to feed the core every tick it is owed (see Config.TickInterval),
	// so Now must be monotonic.
	Now() time.Time
	// NewTicker returns a ticker firing every d. Like time.Ticker it may
	// drop ticks for a slow receiver; the loop does not count fires, it
	// only wakes up on them.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of time.Ticker the loop uses.
type Ticker interface {
	// C returns the channel ticks are delivered on.
	C() <-chan time.Time
	// Stop ends the ticker; no tick is delivered afterwards.
	Stop()
}

// wallClock is the real Clock.
type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func (wallClock) NewTicker(d time.Duration) Ticker { return wallTicker{time.NewTicker(d)} }

type wallTicker struct{ t *time.Ticker }

func (t wallTicker) C() <-chan time.Time { return t.t.C }
func (t wallTicker) Stop()               { t.t.Stop() }

// Defaults applied by Start to zero-valued Config fields.
const (
	DefaultTickInterval        = 100 * time.Millisecond
	DefaultMaxPendingProposals = 4096
	DefaultMaxProposalBytes    = 1 << 20
	DefaultMaxBatchProposals   = 1024
	DefaultMaxBatchBytes       = 8 << 20
	DefaultMaxPendingReads     = 4096
	DefaultMaxStepMessages     = 4096
	DefaultInboxSize           = 1024
	// Pipelines between the loop and its persist and apply goroutines.
	DefaultMaxPersistQueueBytes = 64 << 20
	DefaultMaxApplyQueueBytes   = 64 << 20

	// Snapshots and log compaction (Config.Snapshots).
	DefaultSnapshotEntries         = 10_000
	DefaultSnapshotBytes           = 64 << 20
	DefaultCompactionMarginEntries = 5_000
	DefaultCompactionMarginBytes   = 16 << 20
	DefaultSnapshotTimeout         = time.Minute
	DefaultMaxSnapshotSends        = 2
	DefaultSnapshotRetryDelay      = time.Second
	// maxSnapshotRetryDelayFactor caps the doubling retry delay at this
	// multiple of Config.SnapshotRetryDelay (32 s with the default).
	maxSnapshotRetryDelayFactor = 32
)

// MinTickInterval is the shortest Config.TickInterval Validate accepts.
// It guards against a unit slip (TickInterval: 100 meaning 100 ns): a loop
// ticking that fast would do nothing but tick.
const MinTickInterval = time.Millisecond

// Config describes one node. Zero-valued limits take the defaults above;
// negative ones are errors. Validate reports every problem at once.
type Config struct {
	// ID is this node's ID, non-zero and unique in the cluster.
	ID uint64
	// Peers are the bootstrap voters, this node included; the same slice
	// configures transport.Config.Peers. They bootstrap a brand-new
	// cluster and nothing else (see membership.go): a node with empty
	// Storage writes them, with their names and addresses, as the first
	// log entry, and from then on the replicated configuration is the
	// only truth. A restarted node whose Peers disagree with its persisted
	// membership logs one warning and uses the persisted one. With Join
	// they are only hints of where to reach members. See Peer for what
	// Validate checks.
	Peers []Peer
	// Join starts a node with empty Storage as a joiner: it does not
	// bootstrap, it has no membership, and it waits for a leader that
	// added it (Node.AddMember on the leader, usually through the
	// embedder's join request) to send it a snapshot or the log. Peers
	// are then dial hints only (they need not include this node). On a
	// node whose Storage is not empty Join changes nothing but that, so a
	// node that joined keeps it set when it restarts (its ID is in no
	// bootstrap list) and is spared the warning about Peers disagreeing
	// with its persisted membership.
	Join bool
	// AutoPromoteMaxLag and AutoPromoteStableFor drive the learner-first
	// join: the leader promotes a learner added with AutoPromote once its
	// match index has stayed within AutoPromoteMaxLag entries of the
	// leader's last index, and the leader heard from it, for
	// AutoPromoteStableFor of Clock time without interruption (a learner
	// that Replaces a member is promoted and that member removed in one
	// change). Defaults DefaultAutoPromoteMaxLag and
	// DefaultAutoPromoteStableFor; AutoPromoteMaxLag must not exceed the
	// core's MaxPromoteLagEntries, or the core would refuse the promotion.
	AutoPromoteMaxLag    int
	AutoPromoteStableFor time.Duration

	// Storage is the durable log. The node owns it once Start succeeds
	// and closes it when it stops; on a Start error the caller keeps it.
	Storage Storage
	// StateMachine is the replicated application; see StateMachine.
	StateMachine StateMachine

	// Exactly one of Transport and NewTransport is set.
	//
	// NewTransport builds a transport that delivers to the given handler
	// (this node). The node owns what it returns: if it implements
	// Starter (transport.GRPC does), Start starts it, so NewTransport must
	// only build it; a Start error fails driver.Start at once. The node
	// closes it when it stops, after the loop has exited and before
	// closing Storage. This is the usual way, since a transport needs its
	// handler at construction.
	NewTransport func(MessageHandler) (Transport, error)
	// Transport is a transport the embedder owns: the node neither starts
	// nor closes it. After Start returns, the embedder routes inbound
	// traffic to Node.Handler() (transport.GRPC.SetHandler) and starts
	// the transport; it closes it after Stop returns. Until then the node
	// hears nobody, and after ten election timeouts without a leader it
	// logs a warning saying so (see Start).
	Transport Transport

	// TickInterval is the length of one Raft tick (design §5: 100 ms).
	// core.Config's ElectionTicks and HeartbeatTicks count these. The loop
	// feeds the core one tick per TickInterval of Clock time that has
	// passed, including time it spent blocked (a slow fsync), so the
	// core's notion of time, and with it any read lease, never lags the
	// clock by more than one iteration.
	TickInterval time.Duration
	// Clock is the time source; nil means the wall clock.
	Clock Clock

	// TuneRaft, when set, adjusts the protocol settings. It receives
	// core.DefaultConfig(ID) with the bootstrap Membership built from
	// Peers (none with Join), MaxApplyingBytes from MaxApplyQueueBytes,
	// and Applied and RandomSeed zero; it must not change ID, Membership
	// or Applied. Use it for ElectionTicks, CheckQuorum, ReadMode, flow
	// control and the like. Start then fills in Applied from the state
	// machine, and RandomSeed with a random value unless TuneRaft set one
	// (to replay elections). It is called while the Config is validated:
	// exactly once by Start, and once by each Validate call, so it must
	// only set fields.
	TuneRaft func(*core.Config)

	// MaxPendingProposals bounds Propose calls in flight on this node
	// (queued for the loop or waiting to be applied). A Propose beyond it
	// fails at once with ErrBusy rather than block: the caller learns
	// about overload immediately and can shed load or retry with backoff.
	MaxPendingProposals int
	// MaxProposalBytes bounds one command (without the envelope); larger
	// commands fail with a DroppedError wrapping core.ErrProposalTooLarge.
	MaxProposalBytes int
	// MaxBatchProposals bounds how many queued proposals the loop hands
	// to the core at once, i.e. appends in one disk write. Batching is
	// natural: everything queued while the previous write ran goes into
	// the next one, up to this count and MaxBatchBytes.
	MaxBatchProposals int
	// MaxBatchBytes bounds the entry bytes of one such batch. It must not
	// exceed core.Config.MaxUncommittedBytes and must hold one maximal
	// proposal.
	MaxBatchBytes int
	// MaxPendingReads bounds Read calls in flight on this node; beyond it
	// Read fails at once with ErrBusy.
	MaxPendingReads int
	// MaxStepMessages bounds how many inbound messages the loop steps
	// between two Readies, so a flood of traffic cannot postpone
	// persisting and applying indefinitely (whole batches are stepped, so
	// it may be exceeded by one batch).
	MaxStepMessages int
	// MaxPersistQueueBytes bounds the entry bytes handed to the persist
	// goroutine and not yet durable. At the limit the loop stops taking
	// Readies (it keeps stepping messages and ticks) until a write
	// completes, so a slow disk throttles proposals instead of growing
	// memory. Default DefaultMaxPersistQueueBytes.
	MaxPersistQueueBytes int64
	// MaxApplyQueueBytes bounds the bytes of committed entries handed to
	// the apply goroutine and not yet applied (core.Config's
	// MaxApplyingBytes): past it the core hands out no more committed
	// entries until the state machine catches up, so a slow Apply
	// throttles commits instead of delaying heartbeats or appends.
	// Default DefaultMaxApplyQueueBytes.
	MaxApplyQueueBytes int64
	// InboxSize is the capacity, in message batches, of the queue between
	// the transport and the loop. When it is full the handler drops the
	// batch and returns ErrInboxFull instead of blocking the transport.
	InboxSize int

	// Snapshots stores snapshots (disk.Store.Snapshots() for a disk.Store).
	// With it the node takes a snapshot of its state machine every
	// SnapshotEntries entries or SnapshotBytes bytes applied, compacts its
	// log up to a margin below it, streams the latest snapshot to a
	// follower that needs compacted entries, installs snapshots it
	// receives, and restores from snapshot plus log tail on restart (see
	// snapshot.go). nil turns all of that off: the log grows without
	// bound and a follower that needs compacted entries cannot be caught
	// up (ErrSnapshotUnsupported). The embedder owns it; the node does not
	// close it.
	Snapshots SnapshotStore
	// SnapshotEntries: once this many log entries were applied since the
	// last compaction, compact. With a state machine implementing Syncer
	// the driver syncs it and compacts the log below the synced index (no
	// snapshot data is written; a snapshot is produced only for a
	// follower that needs one); without, it takes a snapshot and compacts
	// below it.
	SnapshotEntries int
	// SnapshotBytes: the same once the entries applied since the last
	// compaction total this many bytes (as core.Entry.Size counts them),
	// whichever of the two comes first.
	SnapshotBytes int64
	// CompactionMarginEntries and CompactionMarginBytes: once the state
	// machine holds index S durably (Syncer.Sync's index, or a snapshot's
	// without a Syncer), the log is compacted up to S minus a margin
	// of at most this many entries and at most this many bytes, so that a
	// follower briefly behind catches up from the log instead of needing a
	// snapshot. The log then holds at most the margin plus what the
	// snapshot thresholds allow.
	CompactionMarginEntries int
	CompactionMarginBytes   int64
	// SnapshotTimeout fails an outgoing snapshot transfer that makes no
	// progress for this long: no data read for the receiver, or, after the
	// last byte, no answer while the receiver installs. A failed transfer
	// is reported to the core and retried.
	SnapshotTimeout time.Duration
	// MaxSnapshotSends bounds the outgoing snapshot transfers running at
	// once (one per follower at most); others wait their turn.
	MaxSnapshotSends int
	// SnapshotRetryDelay is the pause before retrying a snapshot transfer
	// to a follower after a failure (and before retrying a failed local
	// snapshot); it doubles with each consecutive failure, up to 32 times
	// this.
	SnapshotRetryDelay time.Duration

	// Logger receives the node's logs. Nil means warnings and errors go
	// to slog.Default() (as it is when Start runs) and routine progress is
	// dropped, so that a problem is never silent; pass
	// slog.New(slog.DiscardHandler) for no logs at all.
	Logger *slog.Logger
	// Registerer, when set, receives the node's metrics (see metrics.go).
	// Several nodes in one process need distinct labels: wrap it with
	// prometheus.WrapRegistererWith. The metrics are unregistered when
	// the node stops.
	Registerer prometheus.Registerer

	// hook, set only by tests (export_test.go), runs at each step of
	// snapshot installation; an error it returns crashes the node there.
	hook func(step string) error
	// raft is the core configuration validated built, TuneRaft applied:
	// Start uses it (raftConfig) instead of calling TuneRaft again.
	raft core.Config

	// ValidateCommand, when set, checks a command before it can enter the
	// log: at Propose on this node, and on the leader for every proposal a
	// follower forwards (whose envelope the driver checks itself). It must
	// depend on nothing but cmd. A refused command fails with a
	// *DroppedError wrapping ErrInvalidProposal and the validator's error.
	// app/kv supplies kv.ValidateCommand. Entries that reach the log
	// undecodable anyway are applied as failed no-ops (see envelope.go).
	ValidateCommand func(cmd []byte) error
	// MaxMessageBytes is the largest message the transport carries
	// (transport.Config.MaxMessageBytes; default DefaultMaxMessageBytes,
	// at least 4 KiB). Proposals a follower forwards to the leader are
	// split into messages that fit it, and a proposal that could never fit
	// one message (with its envelope and framing) is refused at Propose
	// with a *DroppedError wrapping core.ErrProposalTooLarge. A transport
	// that reports a smaller limit (MessageLimiter) lowers it.
	MaxMessageBytes int
	// DiskStallTimeout: a Storage write that has not completed after this
	// long marks the disk stalled: Status.DiskStalled is set (kvnode's
	// /readyz fails) and a leader hands leadership to its most up-to-date
	// follower (see watchDisk in loop.go). Default DefaultDiskStallTimeout.
	DiskStallTimeout time.Duration
}

// MaxPeerAddrBytes bounds Peer.Addr. A DNS name has at most 253 bytes;
// the rest leaves room for a port and a gRPC scheme. Addresses are
// bootstrap configuration today and part of the replicated membership
// later, so the bound is set before any is stored.
const MaxPeerAddrBytes = 512

// Peer is one member of the cluster: its Raft ID and the address its
// transport listens on. One []Peer describes the cluster to both the
// driver (Config.Peers) and transport.GRPC (transport.Config.Peers), so
// the two cannot disagree about who the members are; membership changes
// carry a Peer per member.
//
// Validate requires non-zero, distinct IDs, this node's among them, and
// addresses that are either all empty (a transport that routes by ID, such
// as drivertest.Network) or all set, distinct, at most MaxPeerAddrBytes,
// valid UTF-8 without spaces or control characters. The driver does not
// dial addresses; their syntax is the transport's to check (host:port or
// a gRPC target for transport.GRPC).
type Peer struct {
	// ID is the member's Raft ID: non-zero and never reused.
	ID uint64
	// Addr is where the other members reach it.
	Addr string
	// Name optionally names the member (a pod or host name); names are
	// unique. It is replicated in the membership (core.MemberInfo.Name).
	Name string
	// ClientAddr optionally says where the member serves clients; it is
	// replicated too, so that a follower can redirect a client to the
	// leader.
	ClientAddr string
}

// MaxPeerNameBytes bounds Peer.Name and Peer.ClientAddr, as the
// replicated membership does (core.MaxMemberFieldBytes).
const MaxPeerNameBytes = core.MaxMemberFieldBytes

// peerIDs returns the IDs of peers, in order.
func peerIDs(peers []Peer) []uint64 {
	ids := make([]uint64, len(peers))
	for i, p := range peers {
		ids[i] = p.ID
	}
	return ids
}

// CheckPeers reports every problem with a peer list (see Peer), each a
// *core.FieldError on Peers whose message names the entry, or nil.
// transport.Config validation calls it too.
func CheckPeers(peers []Peer) []error {
	var errs []error
	bad := func(i int, p Peer, format string, args ...any) {
		//lint:ignore ST1005 the message starts with the field as the embedder spells it
		errs = append(errs, fieldError("Peers", fmt.Errorf("Peers[%d] (ID %d, %q): %s", i, p.ID, quotable(p.Addr), fmt.Sprintf(format, args...))))
	}
	ids := make(map[uint64]int, len(peers))
	addrs := make(map[string]int, len(peers))
	names := make(map[string]int, len(peers))
	withAddr := 0
	for i, p := range peers {
		for _, f := range []struct{ what, v string }{{"name", p.Name}, {"client address", p.ClientAddr}} {
			switch {
			case len(f.v) > MaxPeerNameBytes:
				bad(i, p, "%s is %d bytes; at most %d", f.what, len(f.v), MaxPeerNameBytes)
			case !utf8.ValidString(f.v):
				bad(i, p, "%s is not valid UTF-8", f.what)
			}
		}
		if p.Name != "" {
			if j, dup := names[p.Name]; dup {
				bad(i, p, "name %q shared with Peers[%d]", p.Name, j)
			} else {
				names[p.Name] = i
			}
		}
		if p.ID == 0 {
			bad(i, p, "ID 0 is reserved; node IDs start at 1")
		} else if j, dup := ids[p.ID]; dup {
			bad(i, p, "ID listed twice (also Peers[%d])", j)
		} else {
			ids[p.ID] = i
		}
		if p.Addr == "" {
			continue
		}
		withAddr++
		if err := checkPeerAddr(p.Addr); err != nil {
			bad(i, p, "%v", err)
		} else if j, dup := addrs[p.Addr]; dup {
			bad(i, p, "address shared with Peers[%d]", j)
		} else {
			addrs[p.Addr] = i
		}
	}
	if withAddr != 0 && withAddr != len(peers) {
		//lint:ignore ST1005 the message starts with the field as the embedder spells it
		errs = append(errs, fieldError("Peers", fmt.Errorf("Peers: %d of %d entries have an address; give every peer one, or none (a transport that routes by ID)",
			withAddr, len(peers))))
	}
	return errs
}

// quotable shortens an address for an error message: one that is too
// long is shown by its first 64 bytes.
func quotable(addr string) string {
	if len(addr) > 64 {
		return addr[:64] + "..."
	}
	return addr
}

// checkPeerAddr checks what the driver can know about an address without
// knowing the transport's syntax.
func checkPeerAddr(addr string) error {
	if len(addr) > MaxPeerAddrBytes {
		return fmt.Errorf("address is %d bytes; at most %d (MaxPeerAddrBytes)", len(addr), MaxPeerAddrBytes)
	}
	if !utf8.ValidString(addr) {
		return errors.New("address is not valid UTF-8")
	}
	for _, r := range addr {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("address contains %q; spaces and control characters are not allowed", r)
		}
	}
	return nil
}

// Defaults of the fields added last to Config.
const (
	DefaultMaxMessageBytes  = 4 << 20
	DefaultDiskStallTimeout = 5 * time.Second
	// Learner auto-promotion (Config.AutoPromoteMaxLag, AutoPromoteStableFor).
	DefaultAutoPromoteMaxLag    = 100
	DefaultAutoPromoteStableFor = 2 * time.Second
	// minMaxMessageBytes keeps MaxMessageBytes above the framing a
	// forwarded proposal needs (forwardFramingBytes).
	minMaxMessageBytes = 4 << 10
)

// entryOverheadBytes is what core.Entry.Size adds to the data length; the
// batch limits count entries the way the core's uncommitted limit does.
const entryOverheadBytes = 24

// withDefaults returns c with zero limits replaced by the defaults.
func (c Config) withDefaults() Config {
	setDefault := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	setDefault(&c.MaxPendingProposals, DefaultMaxPendingProposals)
	setDefault(&c.MaxProposalBytes, DefaultMaxProposalBytes)
	setDefault(&c.MaxBatchProposals, DefaultMaxBatchProposals)
	setDefault(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	setDefault(&c.MaxPendingReads, DefaultMaxPendingReads)
	setDefault(&c.MaxStepMessages, DefaultMaxStepMessages)
	setDefault(&c.InboxSize, DefaultInboxSize)
	if c.MaxPersistQueueBytes == 0 {
		c.MaxPersistQueueBytes = DefaultMaxPersistQueueBytes
	}
	if c.MaxApplyQueueBytes == 0 {
		c.MaxApplyQueueBytes = DefaultMaxApplyQueueBytes
	}
	setDefault(&c.SnapshotEntries, DefaultSnapshotEntries)
	setDefault(&c.CompactionMarginEntries, DefaultCompactionMarginEntries)
	setDefault(&c.MaxSnapshotSends, DefaultMaxSnapshotSends)
	if c.SnapshotBytes == 0 {
		c.SnapshotBytes = DefaultSnapshotBytes
	}
	if c.CompactionMarginBytes == 0 {
		c.CompactionMarginBytes = DefaultCompactionMarginBytes
	}
	if c.SnapshotTimeout == 0 {
		c.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if c.SnapshotRetryDelay == 0 {
		c.SnapshotRetryDelay = DefaultSnapshotRetryDelay
	}
	if c.Logger == nil {
		c.Logger = logdefault.Logger()
	}
	setDefault(&c.MaxMessageBytes, DefaultMaxMessageBytes)
	if c.DiskStallTimeout == 0 {
		c.DiskStallTimeout = DefaultDiskStallTimeout
	}
	setDefault(&c.AutoPromoteMaxLag, DefaultAutoPromoteMaxLag)
	if c.AutoPromoteStableFor == 0 {
		c.AutoPromoteStableFor = DefaultAutoPromoteStableFor
	}
	return c
}

// tuneRaft builds the core configuration for c (defaults applied): the
// only place TuneRaft is called (see Config.TuneRaft).
func (c *Config) tuneRaft() core.Config {
	rc := core.DefaultConfig(c.ID)
	rc.Membership = c.bootstrapMembership()
	// Start draws a seed unless TuneRaft sets one.
	rc.RandomSeed = 0
	if c.MaxApplyQueueBytes > 0 {
		rc.MaxApplyingBytes = uint64(c.MaxApplyQueueBytes)
	}
	if c.TuneRaft != nil {
		c.TuneRaft(&rc)
	}
	// The driver persists and applies off its loop (persist.go,
	// apply.go), so the core must follow the asynchronous contract
	// whatever TuneRaft set: it then says in each Ready what to write,
	// sync and apply, and bounds what is being applied.
	rc.AsyncStorageWrites = true
	return rc
}

// raftConfig returns the core configuration validated built, with
// Applied and, unless TuneRaft chose one, RandomSeed filled in. It does not
// call TuneRaft: c must come from validated.
func (c *Config) raftConfig(applied, seed uint64) core.Config {
	rc := c.raft
	rc.Applied = applied
	if rc.RandomSeed == 0 {
		rc.RandomSeed = seed
	}
	return rc
}

// fieldError is a problem with field, as core.FieldErrors reports it.
func fieldError(field string, err error) error { return &core.FieldError{Field: field, Err: err} }

// Validate reports every problem with c (after applying defaults to zero
// fields), joined into one error, or nil. Each problem is a
// *core.FieldError naming the field; the core settings' (from TuneRaft)
// are nested under TuneRaft, so core.FieldErrors reports them as
// TuneRaft.ElectionTicks and the like. Start calls it too. Each call calls
// TuneRaft once.
func (c Config) Validate() error {
	_, err := c.validated()
	return err
}

// validated applies defaults, builds the core configuration (calling
// TuneRaft), checks everything, and returns the result, which Start uses.
func (c Config) validated() (Config, error) {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fieldError(field, fmt.Errorf(format, args...)))
	}

	if c.ID == 0 {
		bad("ID", "ID must be non-zero")
	}
	peerErrs := CheckPeers(c.Peers)
	errs = append(errs, peerErrs...)
	if c.ID != 0 && !c.Join && len(c.Peers) > 0 && !slices.ContainsFunc(c.Peers, func(p Peer) bool { return p.ID == c.ID }) {
		bad("Peers", "Peers %v does not include this node's ID %d; list every bootstrap voter, this node too", peerIDs(c.Peers), c.ID)
	}
	if c.Storage == nil {
		bad("Storage", "Storage is required")
	}
	if c.StateMachine == nil {
		bad("StateMachine", "StateMachine is required")
	}
	switch {
	case c.Transport == nil && c.NewTransport == nil:
		bad("Transport", "one of Transport and NewTransport is required")
	case c.Transport != nil && c.NewTransport != nil:
		bad("Transport", "set only one of Transport (embedder-owned) and NewTransport (node-owned)")
	}
	if c.TickInterval < MinTickInterval {
		bad("TickInterval", "TickInterval must be at least %v, got %v", MinTickInterval, c.TickInterval)
	}
	notNegative := func(name string, v int64) {
		if v < 0 {
			bad(name, "%s must not be negative, got %d", name, v)
		}
	}
	notNegativeDuration := func(name string, v time.Duration) {
		if v < 0 {
			bad(name, "%s must not be negative, got %v", name, v)
		}
	}
	notNegative("MaxPendingProposals", int64(c.MaxPendingProposals))
	notNegative("MaxProposalBytes", int64(c.MaxProposalBytes))
	notNegative("MaxBatchProposals", int64(c.MaxBatchProposals))
	notNegative("MaxBatchBytes", int64(c.MaxBatchBytes))
	notNegative("MaxPendingReads", int64(c.MaxPendingReads))
	notNegative("MaxStepMessages", int64(c.MaxStepMessages))
	notNegative("MaxPersistQueueBytes", c.MaxPersistQueueBytes)
	notNegative("MaxApplyQueueBytes", c.MaxApplyQueueBytes)
	notNegative("InboxSize", int64(c.InboxSize))
	notNegative("SnapshotEntries", int64(c.SnapshotEntries))
	notNegative("SnapshotBytes", c.SnapshotBytes)
	notNegative("CompactionMarginEntries", int64(c.CompactionMarginEntries))
	notNegative("CompactionMarginBytes", c.CompactionMarginBytes)
	notNegativeDuration("SnapshotTimeout", c.SnapshotTimeout)
	notNegative("MaxSnapshotSends", int64(c.MaxSnapshotSends))
	notNegativeDuration("SnapshotRetryDelay", c.SnapshotRetryDelay)

	if c.MaxMessageBytes < minMaxMessageBytes {
		bad("MaxMessageBytes", "MaxMessageBytes must be at least %d, got %d", minMaxMessageBytes, c.MaxMessageBytes)
	}
	notNegativeDuration("DiskStallTimeout", c.DiskStallTimeout)
	notNegative("AutoPromoteMaxLag", int64(c.AutoPromoteMaxLag))
	notNegativeDuration("AutoPromoteStableFor", c.AutoPromoteStableFor)

	maxEntry := c.MaxProposalBytes + EnvelopeOverhead + entryOverheadBytes
	if c.MaxProposalBytes > 0 && c.MaxBatchBytes > 0 && maxEntry > c.MaxBatchBytes {
		bad("MaxBatchBytes", "MaxBatchBytes (%d) must hold one maximal proposal: MaxProposalBytes (%d) + %d bytes of overhead",
			c.MaxBatchBytes, c.MaxProposalBytes, EnvelopeOverhead+entryOverheadBytes)
	}

	if c.ID != 0 {
		rc := c.tuneRaft()
		if c.TuneRaft != nil && rc.ID != c.ID {
			bad("TuneRaft", "TuneRaft must not change ID (%d -> %d)", c.ID, rc.ID)
		}
		if rc.Applied != 0 {
			bad("TuneRaft", "TuneRaft must not set Applied: the state machine reports it")
		}
		if c.TuneRaft != nil && !membershipEqual(rc.Membership, c.bootstrapMembership()) {
			bad("TuneRaft", "TuneRaft must not change Membership: Peers (or Join) say who bootstraps the cluster")
		}
		check := rc
		if len(peerErrs) > 0 {
			// The bootstrap membership comes from Peers, reported above:
			// one mistake, one problem.
			check.Membership = core.Membership{}
		}
		if err := check.Validate(); err != nil {
			errs = append(errs, fieldError("TuneRaft", err))
		}
		if c.AutoPromoteMaxLag > 0 && uint64(c.AutoPromoteMaxLag) > rc.MaxPromoteLagEntries {
			bad("AutoPromoteMaxLag", "AutoPromoteMaxLag (%d) must not exceed the core's MaxPromoteLagEntries (%d), or the core would refuse every automatic promotion",
				c.AutoPromoteMaxLag, rc.MaxPromoteLagEntries)
		}
		if c.MaxBatchBytes > 0 && uint64(c.MaxBatchBytes) > rc.MaxUncommittedBytes {
			bad("MaxBatchBytes", "MaxBatchBytes (%d) must not exceed the core's MaxUncommittedBytes (%d), or a full batch could never be accepted",
				c.MaxBatchBytes, rc.MaxUncommittedBytes)
		}
		c.raft = rc
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("invalid driver config: %w", errors.Join(errs...))
	}
	return c, nil
}

// bootstrapMembership is the configuration a node with empty Storage
// bootstraps with: every peer a voter, with its name and addresses, and
// HighestID the largest peer ID (IDs above it are allocated to members
// added later). A joiner (Join) has none. Every bootstrapping node must
// compute the same bytes from the same Peers (the core writes them as log
// entry 1 on each), so the result is sorted and depends on nothing else.
func (c *Config) bootstrapMembership() core.Membership {
	if c.Join || len(c.Peers) == 0 {
		return core.Membership{}
	}
	var m core.Membership
	for _, p := range c.Peers {
		m.Voters = append(m.Voters, p.ID)
		m.Members = append(m.Members, core.MemberInfo{ID: p.ID, Name: p.Name, PeerAddr: p.Addr, ClientAddr: p.ClientAddr})
		m.HighestID = max(m.HighestID, p.ID)
	}
	slices.Sort(m.Voters)
	slices.SortFunc(m.Members, func(a, b core.MemberInfo) int { return cmpID(a.ID, b.ID) })
	return m
}

func cmpID(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
