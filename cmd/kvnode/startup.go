package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/disk"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/transport"
)

// startPlan is how the Raft node starts: under which ID, bootstrapping
// or joining, with which peers (members to bootstrap, or dial hints).
type startPlan struct {
	id    uint64
	join  bool
	peers []driver.Peer
	// t is a peer transport started early (to answer Probe while the
	// node decided), to be handed to the driver.
	t *transport.GRPC
}

// storageEmpty reports whether the WAL holds nothing: no hard state, no
// snapshot, no entry. Only then may the node bootstrap or join.
func storageEmpty(w *disk.Store) (bool, core.HardState, error) {
	hs, snap, err := w.InitialState()
	if err != nil {
		return false, hs, err
	}
	last, err := w.LastIndex()
	if err != nil {
		return false, hs, err
	}
	return hs.IsZero() && snap.IsEmpty() && last == 0, hs, nil
}

// initialPeers is the bootstrap membership of the flags: every initial
// member with its name (identical bytes on every member: the names come
// from the addresses, never from a member's own flags).
func (s *server) initialPeers() []driver.Peer {
	cfg := s.cfg
	peers := make([]driver.Peer, 0, len(cfg.Peers))
	for _, id := range cfg.PeerIDs() {
		name := cfg.PeerNames[id]
		if name == "" {
			name = "node-" + strconv.FormatUint(id, 10)
		}
		peers = append(peers, driver.Peer{ID: id, Addr: cfg.Peers[id], Name: name})
	}
	return peers
}

// plan decides how the node starts, from the identity file, the WAL and
// the flags; for an empty data directory it probes and joins as the
// design says (decide.go). It returns when ctx ends (a stop signal while
// waiting for the other members) with ctx's error.
func (s *server) plan(ctx context.Context, ident *identity, empty bool, hs core.HardState) (*startPlan, error) {
	cfg := s.cfg
	if !empty {
		return s.planRestart(ident, hs)
	}
	if (ident != nil && ident.Incarnation != 0) || cfg.Joiner {
		return s.planJoin(ctx, ident)
	}
	// An initial member with an empty data directory: answer Probe as
	// node 0 under the ordinal's ID while asking the others.
	t, err := s.newTransport(cfg.ID, s.initialPeers())
	if err != nil {
		return nil, err
	}
	if err := t.Start(context.Background()); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("starting the peer transport: %w", err)
	}
	d, err := decideInitial(ctx, s.log, s.dialer(), cfg.ClusterID, cfg.ID, cfg.Peers)
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("deciding whether to bootstrap or join: %w", err)
	}
	if d == decideJoin {
		// Under a new ID: this transport's is the old one.
		if err := t.Close(); err != nil {
			s.log.Warn("closing the probing transport", "err", err)
		}
		s.transportReg.unregisterAll()
		return s.planJoin(ctx, ident)
	}
	if err := writeIdentity(cfg.DataDir, identity{ClusterName: cfg.ClusterName, ClusterID: cfg.ClusterID, NodeID: cfg.ID, Name: cfg.Name}); err != nil {
		_ = t.Close()
		return nil, err
	}
	return &startPlan{id: cfg.ID, peers: s.initialPeers(), t: t}, nil
}

// planRestart starts a data directory that has Raft state under its
// persisted ID.
func (s *server) planRestart(ident *identity, hs core.HardState) (*startPlan, error) {
	cfg := s.cfg
	if ident == nil {
		// A data directory from before identity files: an initial
		// member's, whose ID the flags give.
		if cfg.ID == 0 {
			return nil, fmt.Errorf("%s holds Raft state but no %s (written by kvnode since membership changes): give this member's --%s",
				cfg.DataDir, identityFile, flagID)
		}
		id := identity{ClusterName: cfg.ClusterName, ClusterID: cfg.ClusterID, NodeID: cfg.ID, Name: cfg.Name}
		if err := writeIdentity(cfg.DataDir, id); err != nil {
			return nil, err
		}
		ident = &id
	}
	if ident.NodeID == 0 {
		return nil, fmt.Errorf("%s holds Raft state of a join that never got an ID (%s): move the data directory aside and start again", cfg.DataDir, identityFile)
	}
	// An explicit --id that differs is refused (another member's data),
	// unless the data is this member's under the same name: it joined as
	// a new member with the same flags (its data directory was empty
	// while the others had already bootstrapped) and keeps them.
	if cfg.IDExplicit && cfg.ID != ident.NodeID && (ident.Name == "" || ident.Name != cfg.Name) {
		return nil, fmt.Errorf("--%s %d disagrees with %s, which holds member %d: this data belongs to member %d",
			flagID, cfg.ID, cfg.DataDir, ident.NodeID, ident.NodeID)
	}
	if cfg.ID != 0 && cfg.ID != ident.NodeID {
		s.log.Info("this data directory's member ID differs from the host name's ordinal: it joined the cluster after it was created",
			"id", ident.NodeID, "ordinal_id", cfg.ID)
	}
	s.cluster.setBefore(probeInfo{NodeID: ident.NodeID, Term: hs.Term, Commit: hs.Commit})
	p := &startPlan{id: ident.NodeID}
	if _, initial := cfg.Peers[ident.NodeID]; initial && ident.Incarnation == 0 {
		// Flags bootstrap nothing here: the driver logs one line when
		// they disagree with the persisted membership, and uses that.
		p.peers = s.initialPeers()
	} else {
		// A member that joined: the flags' members are dial hints.
		p.join = true
		for _, peer := range s.initialPeers() {
			if peer.ID != ident.NodeID {
				p.peers = append(p.peers, peer)
			}
		}
	}
	return p, nil
}

// planJoin joins the cluster: the incarnation is persisted first, so a
// retry after a crash is recognised as the same node, then the ID the
// cluster allocated.
func (s *server) planJoin(ctx context.Context, ident *identity) (*startPlan, error) {
	cfg := s.cfg
	inc := uint64(0)
	if ident != nil {
		inc = ident.Incarnation
	}
	if inc == 0 {
		var err error
		if inc, err = newIncarnation(); err != nil {
			return nil, err
		}
	}
	name := cfg.Name
	if ident != nil && ident.Name != "" {
		name = ident.Name
	}
	if name == "" {
		name = cfg.SelfPeerAddr
	}
	selfAddr := cfg.SelfPeerAddr
	if selfAddr == "" {
		return nil, fmt.Errorf("joining needs this node's peer address: give --%s", flagPeerAddr)
	}
	pending := identity{ClusterName: cfg.ClusterName, ClusterID: cfg.ClusterID, Name: name, Incarnation: inc}
	if err := writeIdentity(cfg.DataDir, pending); err != nil {
		return nil, err
	}
	endpoints := cfg.Join
	if len(endpoints) == 0 {
		for _, id := range cfg.PeerIDs() {
			if cfg.Peers[id] != selfAddr {
				endpoints = append(endpoints, cfg.Peers[id])
			}
		}
	}
	s.log.Info("joining the cluster", "name", name, "peer_addr", selfAddr, "client_addr", cfg.SelfClientAddr, "through", endpoints)
	resp, err := joinCluster(ctx, s.log, s.dialer(), endpoints, joinRequest{
		Name: name, PeerAddr: selfAddr, ClientAddr: cfg.SelfClientAddr, Incarnation: inc,
	})
	if err != nil {
		return nil, fmt.Errorf("joining the cluster: %w", err)
	}
	pending.NodeID = resp.Member.ID
	if err := writeIdentity(cfg.DataDir, pending); err != nil {
		return nil, err
	}
	p := &startPlan{id: resp.Member.ID, join: true}
	for _, mi := range resp.Membership.Members {
		if mi.ID != resp.Member.ID && mi.PeerAddr != "" {
			p.peers = append(p.peers, driver.Peer{ID: mi.ID, Addr: mi.PeerAddr, Name: mi.Name, ClientAddr: mi.ClientAddr})
		}
	}
	return p, nil
}

// newTransport builds (not starts) a peer transport for node id on a new
// phase of the shared peer socket, with s.cluster answering Probe and
// Join.
func (s *server) newTransport(id uint64, peers []driver.Peer) (*transport.GRPC, error) {
	cfg := s.cfg
	t, err := transport.New(transport.Config{
		ClusterID:            cfg.ClusterID,
		NodeID:               id,
		Listener:             s.peerSock.phase(),
		Peers:                peers,
		Cluster:              s.cluster,
		AcceptUnknownSenders: true,
		TLSCertFile:          cfg.TLSCertFile,
		TLSKeyFile:           cfg.TLSKeyFile,
		TLSCAFile:            cfg.TLSCAFile,
		Registerer:           s.transportRegisterer(),
		Logger:               s.log,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the peer transport: %w", err)
	}
	return t, nil
}

// transportRegisterer registers a transport's collectors in the node's
// registry and remembers them, so that the probing transport's can be
// unregistered when a transport under another ID replaces it (the same
// metric names cannot be registered twice).
func (s *server) transportRegisterer() prometheus.Registerer {
	if s.transportReg == nil {
		s.transportReg = &trackingRegisterer{reg: s.reg}
	}
	return s.transportReg
}

// trackingRegisterer is a prometheus.Registerer that can take back what
// it registered.
type trackingRegisterer struct {
	reg  prometheus.Registerer
	mu   sync.Mutex
	regd []prometheus.Collector
}

func (r *trackingRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.regd = append(r.regd, c)
	r.mu.Unlock()
	return nil
}

func (r *trackingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err) // the prometheus.Registerer contract; only a bug registers twice
		}
	}
}

func (r *trackingRegisterer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// unregisterAll takes back every collector registered so far.
func (r *trackingRegisterer) unregisterAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.regd {
		r.reg.Unregister(c)
	}
	r.regd = nil
}

// dialer is the peer-port Cluster client of this node.
func (s *server) dialer() peerDialer {
	return transportDialer{opts: transport.DialOptions{
		ClusterID: s.cfg.ClusterID, TLSCertFile: s.cfg.TLSCertFile, TLSKeyFile: s.cfg.TLSKeyFile, TLSCAFile: s.cfg.TLSCAFile,
		Timeout: probeTimeout * 4,
	}}
}

// transportDialer is peerDialer over transport.ProbePeer and JoinPeer.
type transportDialer struct{ opts transport.DialOptions }

func (d transportDialer) Probe(ctx context.Context, addr string) (probeInfo, error) {
	return transport.ProbePeer(ctx, addr, d.opts)
}

func (d transportDialer) Join(ctx context.Context, addr string, req joinRequest) (joinResponse, error) {
	r, err := transport.JoinPeer(ctx, addr, req, d.opts)
	if err != nil {
		if errors.Is(err, transport.ErrClusterMismatch) {
			return joinResponse{}, &joinRefused{err: err}
		}
		return joinResponse{}, err
	}
	return r, nil
}

// driverMembers adapts a driver.Node to kv.MembershipNode and joinNode.
// Members without a client address in the configuration (the initial
// members: the bootstrap entry holds only what every member derives
// alike) get one derived like this node's own when the flags allow it
// (--peer-template: every pod serves clients on the same port), so that
// a follower can redirect clients to the leader.
type driverMembers struct {
	n          *driver.Node
	clientPort string
}

func (d driverMembers) ID() uint64 { return d.n.ID() }

func (d driverMembers) Status() driver.Status {
	st := d.n.Status()
	if d.clientPort == "" {
		return st
	}
	m := st.Membership.Clone()
	for i := range m.Members {
		if m.Members[i].ClientAddr == "" {
			if host, _, err := net.SplitHostPort(m.Members[i].PeerAddr); err == nil {
				m.Members[i].ClientAddr = net.JoinHostPort(host, d.clientPort)
			}
		}
	}
	st.Membership = m
	return st
}

func (d driverMembers) AddMember(ctx context.Context, mi core.MemberInfo, learnerOnly bool) (core.MemberInfo, error) {
	return d.n.AddMember(ctx, mi, driver.AddOptions{LearnerOnly: learnerOnly})
}

func (d driverMembers) PromoteMember(ctx context.Context, id uint64) error {
	return d.n.PromoteMember(ctx, id)
}

func (d driverMembers) RemoveMember(ctx context.Context, id uint64) error {
	return d.n.RemoveMember(ctx, id)
}

// watchRemoved waits until the node learns it was removed from the
// cluster, then records it (recordRemoved). The node stays up, passive
// (the core never campaigns as a non-member) and not ready.
func (s *server) watchRemoved(n *driver.Node) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.Done():
			return
		case <-t.C:
		}
		if st := n.Status(); st.Removed {
			s.recordRemoved(st.ID)
			return
		}
	}
}

// recordRemoved says once, in one line, that this member was removed,
// and records it in the identity file so that the next start moves this
// data aside and joins anew; then /readyz reports it. Called by
// watchRemoved, and by shutdown in case the removal was seen by the node
// but not yet by watchRemoved.
func (s *server) recordRemoved(id uint64) {
	s.removedOnce.Do(func() {
		s.log.Warn("this member was removed from the cluster: it stays up but passive and not ready; restart it to join again as a new member (this data will be moved aside)",
			"id", id)
		ident, err := readIdentity(s.cfg.DataDir)
		if err != nil || ident == nil {
			ident = &identity{ClusterName: s.cfg.ClusterName, ClusterID: s.cfg.ClusterID, NodeID: id, Name: s.cfg.Name}
		}
		ident.Removed = true
		if err := writeIdentity(s.cfg.DataDir, *ident); err != nil {
			s.log.Error("recording the removal in the identity file", "err", err)
		}
		s.ready.removed.Store(true)
	})
}
