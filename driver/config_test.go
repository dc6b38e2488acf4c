package driver_test

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/core/memlog"
	"github.com/rafty-db/rafty/driver"
	"github.com/rafty-db/rafty/driver/drivertest"
)

// idPeers lists ids as peers without addresses, for the in-memory network,
// which routes by ID.
func idPeers(ids ...uint64) []driver.Peer {
	peers := make([]driver.Peer, len(ids))
	for i, id := range ids {
		peers[i] = driver.Peer{ID: id}
	}
	return peers
}

// addrPeers lists a cluster's addresses as peers, by ID.
func addrPeers(addrs map[uint64]string) []driver.Peer {
	peers := make([]driver.Peer, 0, len(addrs))
	for _, id := range slices.Sorted(maps.Keys(addrs)) {
		peers = append(peers, driver.Peer{ID: id, Addr: addrs[id]})
	}
	return peers
}

func TestConfigValidate(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	valid := func() driver.Config {
		return driver.Config{
			ID:           1,
			Peers:        idPeers(1, 2, 3),
			Storage:      memlog.New(),
			StateMachine: &testSM{},
			NewTransport: nw.NewTransport(1),
		}
	}
	tests := []struct {
		name   string
		mutate func(*driver.Config)
		want   []string // substrings of the error; none means valid
	}{
		{"valid defaults", func(*driver.Config) {}, nil},
		{"embedder-owned transport", func(c *driver.Config) {
			c.NewTransport = nil
			c.Transport = nw.Join(1, nil)
		}, nil},
		{"zero ID", func(c *driver.Config) { c.ID = 0 }, []string{"ID must be non-zero"}},
		{"no peers: restart from persisted membership", func(c *driver.Config) { c.Peers = nil }, nil},
		{"peers with addresses", func(c *driver.Config) {
			c.Peers = []driver.Peer{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "dns:///c:1"}}
		}, nil},
		{"zero peer", func(c *driver.Config) { c.Peers = idPeers(1, 0) }, []string{`Peers[1] (ID 0, ""): ID 0 is reserved; node IDs start at 1`}},
		{"duplicate peer", func(c *driver.Config) { c.Peers = idPeers(1, 2, 2) }, []string{`Peers[2] (ID 2, ""): ID listed twice (also Peers[1])`}},
		{"self missing", func(c *driver.Config) { c.Peers = idPeers(2, 3) },
			[]string{"Peers [2 3] does not include this node's ID 1"}},
		{"some addresses missing", func(c *driver.Config) { c.Peers = []driver.Peer{{ID: 1, Addr: "a:1"}, {ID: 2}, {ID: 3}} },
			[]string{"Peers: 1 of 3 entries have an address; give every peer one, or none"}},
		{"shared address", func(c *driver.Config) {
			c.Peers = []driver.Peer{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "a:1"}}
		}, []string{`Peers[2] (ID 3, "a:1"): address shared with Peers[0]`}},
		{"bad addresses", func(c *driver.Config) {
			c.Peers = []driver.Peer{{ID: 1, Addr: "a :1"}, {ID: 2, Addr: "b:1\n"}, {ID: 3, Addr: strings.Repeat("c", driver.MaxPeerAddrBytes+1)}}
		}, []string{
			`Peers[0] (ID 1, "a :1"): address contains ' '; spaces and control characters are not allowed`,
			`Peers[1] (ID 2, "b:1\n"): address contains '\n'`,
			`Peers[2] (ID 3, "` + strings.Repeat("c", 64) + `..."): address is 513 bytes; at most 512 (MaxPeerAddrBytes)`,
		}},
		{"invalid UTF-8 address", func(c *driver.Config) {
			c.Peers = []driver.Peer{{ID: 1, Addr: "a\xff:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}}
		},
			[]string{`Peers[0] (ID 1, "a\xff:1"): address is not valid UTF-8`}},
		{"no storage", func(c *driver.Config) { c.Storage = nil }, []string{"Storage is required"}},
		{"no state machine", func(c *driver.Config) { c.StateMachine = nil }, []string{"StateMachine is required"}},
		{"no transport", func(c *driver.Config) { c.NewTransport = nil }, []string{"one of Transport and NewTransport is required"}},
		{"both transports", func(c *driver.Config) { c.Transport = nw.Join(9, nil) }, []string{"set only one of Transport"}},
		{"tick too short", func(c *driver.Config) { c.TickInterval = 100 }, []string{"TickInterval must be at least 1ms, got 100ns"}},
		{"negative limits", func(c *driver.Config) {
			c.MaxPendingProposals = -1
			c.MaxPendingReads = -2
			c.InboxSize = -3
			c.MaxStepMessages = -4
			c.MaxBatchProposals = -5
		}, []string{
			"MaxPendingProposals must not be negative, got -1",
			"MaxPendingReads must not be negative, got -2",
			"InboxSize must not be negative, got -3",
			"MaxStepMessages must not be negative, got -4",
			"MaxBatchProposals must not be negative, got -5",
		}},
		{"snapshots", func(c *driver.Config) {
			c.Snapshots = drivertest.NewSnapshotStore()
			c.SnapshotEntries = 100
			c.CompactionMarginEntries = 10
		}, nil},
		{"negative snapshot settings", func(c *driver.Config) {
			c.SnapshotEntries = -1
			c.SnapshotBytes = -2
			c.CompactionMarginEntries = -3
			c.CompactionMarginBytes = -4
			c.MaxSnapshotSends = -5
			c.SnapshotTimeout = -time.Second
			c.SnapshotRetryDelay = -time.Second
		}, []string{
			"SnapshotEntries must not be negative, got -1",
			"SnapshotBytes must not be negative, got -2",
			"CompactionMarginEntries must not be negative, got -3",
			"CompactionMarginBytes must not be negative, got -4",
			"MaxSnapshotSends must not be negative, got -5",
			"SnapshotTimeout must not be negative, got -1s",
			"SnapshotRetryDelay must not be negative, got -1s",
		}},
		{"batch smaller than a proposal", func(c *driver.Config) {
			c.MaxProposalBytes = 4096
			c.MaxBatchBytes = 4096
		}, []string{"MaxBatchBytes (4096) must hold one maximal proposal"}},
		{"batch larger than the uncommitted limit", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.MaxUncommittedBytes = 1 << 20 }
			c.MaxProposalBytes = 1000
			c.MaxBatchBytes = 2 << 20
		}, []string{"MaxBatchBytes (2097152) must not exceed the core's MaxUncommittedBytes (1048576)"}},
		{"bad core settings", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.ElectionTicks = 1 }
		}, []string{"ElectionTicks must be at least 2"}},
		{"tune changes ID", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.ID = 7 }
		}, []string{"TuneRaft must not change ID"}},
		{"tune sets Applied", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.Applied = 7 }
		}, []string{"TuneRaft must not set Applied"}},
		{"several problems at once", func(c *driver.Config) {
			c.ID = 0
			c.Storage = nil
			c.TickInterval = time.Microsecond
		}, []string{"ID must be non-zero", "Storage is required", "TickInterval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "invalid driver config: ") {
				t.Errorf("error %q lacks the common prefix", err)
			}
			for _, p := range core.FieldErrors(err) {
				if p.Field == "" {
					t.Errorf("problem %q names no field", p.Err)
				}
			}
		})
	}
}

// TestConfigValidateFields: every problem names its field, the core's
// nested under TuneRaft, so that an embedder maps it to its own setting
// (kvnode's flags) without reading messages.
func TestConfigValidateFields(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	tests := []struct {
		name   string
		mutate func(*driver.Config)
		want   []string
	}{
		{"valid", func(*driver.Config) {}, nil},
		{"identity and parts", func(c *driver.Config) {
			c.ID, c.Storage, c.StateMachine, c.NewTransport = 0, nil, nil, nil
		}, []string{"ID", "Storage", "StateMachine", "Transport"}},
		{"peers", func(c *driver.Config) { c.Peers = idPeers(2, 2) }, []string{"Peers", "Peers"}},
		{"tick", func(c *driver.Config) { c.TickInterval = time.Microsecond }, []string{"TickInterval"}},
		{"pipeline limits", func(c *driver.Config) { c.MaxPersistQueueBytes, c.MaxApplyQueueBytes = -1, -2 },
			[]string{"MaxPersistQueueBytes", "MaxApplyQueueBytes"}},
		{"snapshot policy", func(c *driver.Config) { c.SnapshotEntries, c.SnapshotTimeout = -1, -time.Second },
			[]string{"SnapshotEntries", "SnapshotTimeout"}},
		{"core settings", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.ElectionTicks, rc.ReadMode, rc.MaxClockDriftTicks = 4, core.ReadLease, 3 }
		}, []string{"TuneRaft.MaxClockDriftTicks"}},
		{"tune breaks its contract", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.Applied, rc.HeartbeatTicks = 3, 0 }
		}, []string{"TuneRaft", "TuneRaft.HeartbeatTicks"}},
		{"batch against the core", func(c *driver.Config) {
			c.TuneRaft = func(rc *core.Config) { rc.MaxUncommittedBytes = 1 << 20 }
			c.MaxProposalBytes, c.MaxBatchBytes = 1000, 2<<20
		}, []string{"MaxBatchBytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := driver.Config{ID: 1, Peers: idPeers(1, 2, 3), Storage: memlog.New(), StateMachine: &testSM{}, NewTransport: nw.NewTransport(1)}
			tt.mutate(&cfg)
			err := cfg.Validate()
			var got []string
			for _, p := range core.FieldErrors(err) {
				got = append(got, p.Field)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("fields %q, want %q (error: %v)", got, tt.want, err)
			}
		})
	}
}

// TestTuneRaftCalledOncePerStart: Start builds the core configuration once,
// while validating, and uses it; TuneRaft sees Applied and RandomSeed zero
// (Start fills them in) and MaxApplyingBytes from MaxApplyQueueBytes.
func TestTuneRaftCalledOncePerStart(t *testing.T) {
	nw := drivertest.NewNetwork()
	defer nw.Close()
	var (
		calls atomic.Int32
		mu    sync.Mutex
		seen  core.Config
	)
	cfg := driver.Config{
		ID: 1, Peers: idPeers(1), Storage: memlog.New(), StateMachine: &testSM{}, NewTransport: nw.NewTransport(1),
		TickInterval: 5 * time.Millisecond, MaxApplyQueueBytes: 5 << 20,
		Logger: slog.New(slog.DiscardHandler),
		TuneRaft: func(rc *core.Config) {
			calls.Add(1)
			mu.Lock()
			seen = *rc
			mu.Unlock()
			rc.ReadMode = core.ReadLease
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("Validate called TuneRaft %d times, want once", got)
	}
	n, err := driver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if got := calls.Load() - 1; got != 1 {
		t.Fatalf("Start called TuneRaft %d times, want once", got)
	}
	mu.Lock()
	got := seen
	mu.Unlock()
	if got.ID != 1 || got.Applied != 0 || got.RandomSeed != 0 || got.MaxApplyingBytes != 5<<20 ||
		!slices.Equal(got.Membership.Voters, []uint64{1}) || got.ElectionTicks != core.DefaultConfig(1).ElectionTicks {
		t.Fatalf("TuneRaft saw %+v", got)
	}
	// The node runs on that configuration (the suites that tune elections
	// and leases show TuneRaft's settings take effect).
	await(t, "leadership", func() bool { return n.Status().Role == core.RoleLeader })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Read(ctx); err != nil {
		t.Fatalf("read: %v", err)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("TuneRaft called %d times in all, want 2 (Validate, Start)", got)
	}
}
