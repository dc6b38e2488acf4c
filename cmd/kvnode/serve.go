package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v3"
	"google.golang.org/grpc"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
)

// serveCommand is `kvnode serve`: run one member until SIGTERM or SIGINT.
func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run a cluster member until SIGTERM or SIGINT",
		UsageText: "kvnode serve --id N --peers 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT [flags]\n" +
			"kvnode serve --peer-template 'rafty-{i}.rafty.default.svc.cluster.local:7000' --cluster-size 3 [flags]\n\n" +
			"Every flag has an environment twin: KVNODE_ + the flag name in upper case, dashes as underscores.\n" +
			"SIGTERM/SIGINT stop gracefully (leadership handed over, requests drained, files closed);\n" +
			"a second signal exits at once.",
		Flags: serveFlags(),
		Action: action(func(ctx context.Context, cmd *cli.Command) error {
			if err := wantArgs(cmd, 0, 0, "[flags]"); err != nil {
				return err
			}
			cfg, err := readFlagValues(cmd).config()
			if err != nil {
				return err
			}
			log := newLogger(cmd.Root().ErrWriter, cfg)
			ctx, stop := watchSignals(ctx, log, os.Exit)
			defer stop()
			return serve(ctx, cfg, log)
		}),
	}
}

// newLogger builds the node's structured logger on w (standard error).
func newLogger(w io.Writer, cfg *serveConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// server holds a running node's parts, in the order they are stopped.
type server struct {
	cfg *serveConfig
	log *slog.Logger

	reg   *prometheus.Registry
	ready *readiness
	node  nodeRef

	metricsSrv *http.Server
	clientSrv  *grpc.Server
	clientLis  net.Listener
	serveErr   chan error // the client and metrics servers' Serve errors

	wal    *disk.Store
	kv     *kv.Store
	limits kv.Limits
	// stopHealth marks the gRPC health service NOT_SERVING for good.
	stopHealth func()

	// peerSock is the peer port, shared by the transports of one run (a
	// probing one, then the node's); closed last.
	peerSock *sharedListener
	// cluster answers the peer port's Probe and Join.
	cluster      *clusterHandler
	transportReg *trackingRegisterer
	removedOnce  sync.Once
}

// serve runs a node until ctx is cancelled (the first stop signal), then
// stops it gracefully within cfg.ShutdownTimeout. It returns nil after a
// clean stop, and an error when the node could not start or failed.
func serve(ctx context.Context, cfg *serveConfig, log *slog.Logger) error {
	log.Info("starting kvnode", append(cfg.LogAttrs(), "gc_percent", tuneGC())...)
	s := &server{cfg: cfg, log: log, reg: newRegistry(), serveErr: make(chan error, 2), limits: kv.DefaultLimits()}
	s.ready = &readiness{node: &s.node}
	if err := s.start(ctx); err != nil {
		s.closeAll()
		if ctx.Err() != nil {
			// Stopped while waiting for the other members (deciding
			// whether to bootstrap or join, or joining): nothing to undo.
			log.Info("stopped before the node started", "why", err)
			return nil
		}
		return err
	}
	metricsAddr := metricsOff
	if s.metricsSrv != nil {
		metricsAddr = s.metricsSrv.Addr
	}
	log.Info("serving", "client", s.clientLis.Addr().String(), "metrics", metricsAddr)

	n := s.node.load()
	select {
	case <-ctx.Done():
		return s.shutdown()
	case <-n.Done():
		err := n.Err()
		log.Error("node stopped unexpectedly", "err", err)
		s.markStopping()
		s.clientSrv.Stop()
		s.closeAll()
		return fmt.Errorf("node stopped: %v", err)
	case err := <-s.serveErr:
		log.Error("serving failed", "err", err)
		s.markStopping()
		s.clientSrv.Stop()
		_ = n.Stop()
		s.closeAll()
		return err
	}
}

// start opens everything in dependency order: sockets first (so a port
// conflict fails fast with the flag's name, before any recovery work),
// the metrics endpoint (so /healthz answers while the WAL recovers), then
// storage, the Raft node with its transport, and the client service.
func (s *server) start(ctx context.Context) error {
	cfg := s.cfg
	// An empty MetricsListen (--metrics-listen off) serves no metrics.
	var (
		metricsLis net.Listener
		err        error
	)
	closeMetrics := func() {
		if metricsLis != nil {
			_ = metricsLis.Close()
		}
	}
	if cfg.MetricsListen != "" {
		if metricsLis, err = listen(flagMetricsListen, cfg.MetricsListen); err != nil {
			return err
		}
	}
	clientLis, err := listen(flagClientListen, cfg.ClientListen)
	if err != nil {
		closeMetrics()
		return err
	}
	s.clientLis = clientLis
	peerLis, err := listen(flagPeerListen, cfg.PeerListen)
	if err != nil {
		closeMetrics()
		return err
	}
	s.peerSock = newSharedListener(peerLis)

	leaderChanges := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rafty_node_leader_changes_total", Help: "Changes to a new known leader seen by this node.",
	})
	s.reg.MustRegister(newStatusCollector(&s.node), leaderChanges)
	if metricsLis != nil {
		s.metricsSrv = newMetricsServer(metricsLis.Addr().String(),
			newMetricsMux(s.reg, s.ready, s.log, s.cfg.EnablePprof), clientLis.Addr().String(), s.log)
		go func() {
			if err := s.metricsSrv.Serve(metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.serveErr <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}

	// Whose data is this? Another cluster's is refused; a removed
	// member's is moved aside (never deleted) and the node joins anew.
	ident, err := readIdentity(cfg.DataDir)
	if err != nil {
		return err
	}
	if ident != nil && ident.abandonedJoin(cfg.ClusterID) {
		// A join that never got an ID (refused, e.g. started with the
		// wrong --cluster-id): the driver never ran, so nothing of that
		// cluster is here, and this start may join another one.
		s.log.Warn("this data directory holds only an unfinished join to another cluster: starting afresh",
			"other_cluster", ident.ClusterName)
		ident = nil
	}
	if ident != nil {
		if err := ident.checkCluster(cfg.DataDir, cfg.ClusterName, cfg.ClusterID); err != nil {
			return err
		}
		if ident.Removed {
			dest, err := moveAside(cfg.DataDir, ident.NodeID, time.Now())
			if err != nil {
				return err
			}
			s.log.Warn("this data directory belonged to a member that was removed from the cluster: moved it aside; joining as a new member",
				"id", ident.NodeID, "moved_to", dest)
			ident = nil
		}
	}

	s.wal, s.kv, err = openStorage(cfg, s.log)
	if err != nil {
		return err
	}
	s.reg.MustRegister(newDiskCollector(s.wal), newStoreCollector(s.kv))
	empty, hs, err := storageEmpty(s.wal)
	if err != nil {
		return fmt.Errorf("reading the write-ahead log: %w", err)
	}
	s.cluster = newClusterHandler(cfg.ClusterID, s.log, s.dialer())
	plan, err := s.plan(ctx, ident, empty, hs)
	if err != nil {
		return err
	}
	t := plan.t
	if t == nil {
		if t, err = s.newTransport(plan.id, plan.peers); err != nil {
			return err
		}
	}
	// The flags' settings (validated by config), completed with this
	// run's members, storage and transport.
	dcfg := cfg.driverConfig(s.limits)
	dcfg.ID, dcfg.Peers, dcfg.Join = plan.id, plan.peers, plan.join
	dcfg.Storage = wrapStorage(s.wal, s.log) // chaos_hook.go; the chaos build wraps it (chaos_disk.go)
	dcfg.StateMachine = s.kv
	// Snapshots in the WAL directory turn on log compaction, with the
	// policy of the snapshot flags.
	dcfg.Snapshots = s.wal.Snapshots()
	// The node owns the transport (started already when it answered
	// Probe; Start is idempotent) and closes it when it stops.
	dcfg.NewTransport = func(h driver.MessageHandler) (driver.Transport, error) {
		t.SetHandler(h)
		return t, nil
	}
	dcfg.Logger, dcfg.Registerer = s.log, s.reg
	node, err := driver.Start(context.Background(), dcfg)
	if err != nil {
		_ = t.Close()
		return fmt.Errorf("starting the Raft node: %w", err)
	}
	members := driverMembers{n: node}
	if s.cfg.FromTemplate {
		members.clientPort = s.cfg.ClientPort
	}
	s.cluster.setNode(members)
	// The node owns the WAL from here on and closes it when it stops.
	s.wal = nil
	s.node.store(node)
	go watchLeader(node, leaderChanges)

	// The state machine applies without fsync, so after kill -9 the node
	// re-applies commands its store lost (up to the durable commit index)
	// before serving clients; driver.Start returns only once it has.
	svc, err := kv.NewService(s.kv, node, cfg.ClusterID, s.limits)
	if err != nil {
		// The node uses the store: stop it before closeAll closes that.
		_ = node.Stop()
		return fmt.Errorf("starting the client service: %w", err)
	}
	reqs := newRequestMetrics(s.reg)
	s.clientSrv = grpc.NewServer(append(s.limits.ServerOptions(),
		grpc.ChainUnaryInterceptor(reqs.unaryInterceptor),
		grpc.ChainStreamInterceptor(reqs.streamInterceptor),
	)...)
	svc.Register(s.clientSrv)
	csvc, err := kv.NewClusterService(s.kv, members, cfg.ClusterID, s.limits)
	if err != nil {
		_ = node.Stop()
		return fmt.Errorf("starting the membership service: %w", err)
	}
	csvc.Register(s.clientSrv)
	go s.watchRemoved(node)
	s.stopHealth = kv.RegisterHealth(s.clientSrv, node)
	go func() {
		if err := s.clientSrv.Serve(clientLis); err != nil {
			s.serveErr <- fmt.Errorf("client server: %w", err)
		}
	}()
	return nil
}

// openStorage opens (creating them if needed) a member's write-ahead log,
// which also holds its snapshot store, and its key-value store under
// cfg.DataDir. serve and `snapshot restore` both use it, so a restored
// data directory is laid out and opened exactly as serve expects.
func openStorage(cfg *serveConfig, log *slog.Logger) (*disk.Store, *kv.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("--%s: %v", flagDataDir, unwrapPathError(err))
	}
	// nil (the operating system's) unless the chaos build simulates
	// power loss (chaos_hook.go, chaos_powerloss.go).
	fsys, err := storageFS(log)
	if err != nil {
		return nil, nil, err
	}
	dopts := disk.DefaultOptions()
	dopts.Logger = log.With("component", "disk")
	dopts.FS = fsys
	wal, err := disk.Open(cfg.RaftDir(), dopts)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the write-ahead log: %w", err)
	}
	store, err := kv.OpenStore(cfg.KVDir(), kv.Options{Logger: log.With("component", "kv"), FS: fsys})
	if err != nil {
		_ = wal.Close()
		return nil, nil, fmt.Errorf("opening the key-value store: %w", err)
	}
	return wal, store, nil
}

// listen opens a TCP listener, naming the flag in the error.
func listen(flag, addr string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, fmt.Errorf("--%s %s: %v", flag, addr, err)
	}
	return lis, nil
}

// Shares of ShutdownTimeout given to each step of a graceful stop; the
// rest is left for closing Pebble and the WAL.
const (
	transferShare = 0.4
	drainShare    = 0.4
)

// shutdown stops a running node gracefully:
//
//  1. /readyz and the gRPC health service start failing, so load
//     balancers stop sending requests;
//  2. a leader hands leadership to the most up-to-date follower, so the
//     cluster does not wait out an election timeout without a leader;
//  3. the client server stops accepting calls and finishes the ones in
//     flight (a follower still forwards their proposals to the new
//     leader), then cuts whatever is left;
//  4. the node stops (closing the transport and the WAL), then Pebble.
//
// Each step has a bounded share of ShutdownTimeout.
func (s *server) shutdown() error {
	start := time.Now()
	deadline := start.Add(s.cfg.ShutdownTimeout)
	s.markStopping()
	n := s.node.load()
	if st := n.Status(); st.Removed {
		s.recordRemoved(st.ID)
	}

	budget := func(share float64) time.Duration {
		return time.Duration(float64(s.cfg.ShutdownTimeout) * share)
	}
	if err := s.handOverLeadership(n, budget(transferShare)); err != nil {
		if handoverMoot(n.Status()) {
			// A whole-cluster stop: the others are stopping too.
			s.log.Info("leadership not handed over: no other member answers or another one leads", "why", err)
		} else {
			s.log.Warn("leadership transfer did not complete; the followers will elect a leader", "err", err)
		}
	}

	drained := make(chan struct{})
	go func() {
		s.clientSrv.GracefulStop()
		close(drained)
	}()
	drainTimer := time.NewTimer(min(budget(drainShare), time.Until(deadline)))
	select {
	case <-drained:
		drainTimer.Stop()
	case <-drainTimer.C:
		s.log.Warn("client requests still running after the drain budget; cutting them off")
		s.clientSrv.Stop()
		<-drained
	}

	if err := n.Stop(); err != nil {
		s.log.Error("stopping the Raft node", "err", err)
	}
	err := s.closeAll()
	elapsed := time.Since(start)
	if err != nil {
		s.log.Error("stopped with errors", "err", err, "elapsed", elapsed.Round(time.Millisecond).String())
		return err
	}
	s.log.Info("stopped", "elapsed", elapsed.Round(time.Millisecond).String())
	return nil
}

// markStopping makes both health signals fail, HTTP /readyz and the gRPC
// health service, so load balancers and clients move away first.
func (s *server) markStopping() {
	s.ready.stopping.Store(true)
	if s.stopHealth != nil {
		s.stopHealth()
	}
}

// handOverLeadership transfers leadership away from n if it leads, to the
// voter whose log is most complete (it can take over at once), and waits
// until that voter leads or timeout passes. It gives up early when the
// transfer has become moot: another node took over, or no leader emerged
// within two election timeouts (the other members are stopping too).
func (s *server) handOverLeadership(n *driver.Node, timeout time.Duration) error {
	st := n.Status()
	if st.Role != core.RoleLeader {
		return nil
	}
	to := transferTarget(st)
	if to == core.None {
		// A cluster of one, or no other voter heard from within an
		// election timeout (they are stopping too): nobody to hand to.
		if len(st.Membership.Voters) > 1 {
			s.log.Info("no other voter has answered within an election timeout; stopping without a leadership transfer")
		}
		return nil
	}
	s.log.Info("transferring leadership before stopping", "to", to)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.TransferLeadership(ctx, to) }()
	abandon := func(why error) error {
		cancel()
		<-done
		return why
	}

	leaderless := time.NewTimer(time.Hour)
	leaderless.Stop()
	defer leaderless.Stop()
	waiting := false
	for {
		lead, changed := n.Leader()
		switch {
		case lead == core.None && !waiting:
			leaderless.Reset(2 * time.Duration(s.cfg.ElectionTicks) * s.cfg.Tick)
			waiting = true
		case lead != core.None && lead != to && lead != st.ID:
			return abandon(fmt.Errorf("node %d became leader instead", lead))
		case lead != core.None && waiting:
			leaderless.Stop()
			waiting = false
		}
		select {
		case err := <-done:
			if err != nil {
				return err
			}
			s.log.Info("leadership transferred", "to", to)
			return nil
		case <-changed:
		case <-leaderless.C:
			return abandon(errors.New("no leader emerged: the other members do not answer"))
		}
	}
}

// transferTarget picks, among the voters other than the leader that it
// has heard from within an election timeout, the one with the highest
// match index (ties to the lowest ID, for determinism), or None.
func transferTarget(st driver.Status) uint64 {
	best, bestMatch := core.None, uint64(0)
	for _, id := range st.Membership.Voters {
		if id == st.ID {
			continue
		}
		pr, ok := st.Progress[id]
		if !ok || pr.IsLearner || !pr.RecentActive {
			continue
		}
		if best == core.None || pr.Match > bestMatch || (pr.Match == bestMatch && id < best) {
			best, bestMatch = id, pr.Match
		}
	}
	return best
}

// handoverMoot reports whether a leadership transfer that failed needed
// doing at all, judged from the node's status afterwards: not if another
// member leads, nor if no other voter is live. A leader that stepped down
// with no successor heard from no quorum (CheckQuorum); a leader that
// still leads has no other voter heard from within an election timeout
// (RecentActive, which CheckQuorum, on in kvnode, keeps up to date).
// Both are what a whole-cluster stop looks like.
func handoverMoot(st driver.Status) bool {
	if st.Leader != core.None && st.Leader != st.ID {
		return true
	}
	if st.Role != core.RoleLeader {
		return true
	}
	for _, id := range st.Membership.Voters {
		if pr, ok := st.Progress[id]; ok && id != st.ID && !pr.IsLearner && pr.RecentActive {
			return false
		}
	}
	return true
}

// closeAll releases what start opened and the node does not own: Pebble,
// the WAL (only if the node never took it), the client listener and the
// metrics server. It is the last step of every exit path.
func (s *server) closeAll() error {
	var errs []error
	if s.kv != nil {
		if err := s.kv.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the key-value store: %w", err))
		}
	}
	if s.wal != nil {
		if err := s.wal.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the write-ahead log: %w", err))
		}
	}
	if s.clientSrv == nil && s.clientLis != nil {
		_ = s.clientLis.Close()
	}
	if s.metricsSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = s.metricsSrv.Shutdown(ctx)
	}
	if s.peerSock != nil {
		_ = s.peerSock.Close()
	}
	return errors.Join(errs...)
}
