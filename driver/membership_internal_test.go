package driver

import (
	"slices"
	"strings"
	"testing"

	"github.com/rafty-db/rafty/core"
)

// The bootstrap configuration depends on nothing but the peer set: every
// bootstrapping node must write identical bytes as entry 1.
func TestBootstrapMembershipIsCanonical(t *testing.T) {
	a := Config{ID: 1, Peers: []Peer{{ID: 3, Addr: "c:1", Name: "c"}, {ID: 1, Addr: "a:1", Name: "a", ClientAddr: "a:2"}, {ID: 2, Addr: "b:1"}}}
	b := Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a:1", Name: "a", ClientAddr: "a:2"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1", Name: "c"}}}
	ma, mb := a.bootstrapMembership(), b.bootstrapMembership()
	if string(ma.Marshal()) != string(mb.Marshal()) {
		t.Fatalf("peer order changed the bootstrap membership:\n%+v\n%+v", ma, mb)
	}
	if !slices.Equal(ma.Voters, []uint64{1, 2, 3}) || ma.HighestID != 3 || len(ma.Learners) != 0 {
		t.Fatalf("bootstrap membership %+v", ma)
	}
	if mi, _ := ma.Info(1); mi.Name != "a" || mi.PeerAddr != "a:1" || mi.ClientAddr != "a:2" {
		t.Fatalf("member 1 info %+v", mi)
	}
	if err := ma.Validate(); err != nil {
		t.Fatal(err)
	}
	a.Join = true
	if m := a.bootstrapMembership(); !m.IsEmpty() {
		t.Fatalf("a joiner bootstraps with %+v", m)
	}
}

func TestPeersFor(t *testing.T) {
	m := core.Membership{
		Voters: []uint64{1, 2}, Learners: []uint64{5}, HighestID: 5,
		Members: []core.MemberInfo{{ID: 1, PeerAddr: "a:1", Name: "a"}, {ID: 2}, {ID: 5, PeerAddr: "e:1", Name: "e", ClientAddr: "e:2"}},
	}
	hints := []Peer{{ID: 1, Addr: "old-a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}, {ID: 9, Addr: "i:1"}}
	got := peersFor(m, hints)
	want := []Peer{
		{ID: 1, Addr: "a:1", Name: "a"}, // the replicated address wins
		{ID: 2, Addr: "b:1"},            // no replicated address: the hint
		{ID: 5, Addr: "e:1", Name: "e", ClientAddr: "e:2"},
		{ID: 9, Addr: "i:1"}, // not a member, never was one: a hint (3 was removed)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("peersFor:\n got %+v\nwant %+v", got, want)
	}
	// A joiner knows no members: its hints.
	if got := peersFor(core.Membership{}, hints); !slices.Equal(got, hints) {
		t.Fatalf("joiner: %+v", got)
	}
	// A transport routing by ID: members without addresses are kept.
	byID := peersFor(core.Membership{Voters: []uint64{1, 2}}, []Peer{{ID: 1}, {ID: 2}})
	if !slices.Equal(byID, []Peer{{ID: 1}, {ID: 2}}) {
		t.Fatalf("by ID: %+v", byID)
	}
}

func TestPeersDisagree(t *testing.T) {
	m := core.Membership{Voters: []uint64{1, 2, 3}, HighestID: 3,
		Members: []core.MemberInfo{{ID: 1, PeerAddr: "a:1", Name: "a"}, {ID: 2, PeerAddr: "b:1"}, {ID: 3}}}
	for _, tc := range []struct {
		peers []Peer
		want  string
	}{
		{[]Peer{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:1"}, {ID: 3, Addr: "c:1"}}, ""},
		{[]Peer{{ID: 3}, {ID: 2}, {ID: 1}}, ""},
		{[]Peer{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}}, "peers [1 2 3 4]"},
		{[]Peer{{ID: 1, Addr: "x:1"}, {ID: 2}, {ID: 3}}, "address"},
		{[]Peer{{ID: 1, Name: "z"}, {ID: 2}, {ID: 3}}, "name"},
	} {
		got := peersDisagree(tc.peers, m)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("peersDisagree(%+v) = %q, want %q", tc.peers, got, tc.want)
		}
	}
}

// The configuration at a compaction point comes from the history, never
// from a later change.
func TestMembershipAtCompactionPoint(t *testing.T) {
	m1 := core.Membership{Voters: []uint64{1, 2, 3}, HighestID: 3}
	m2 := core.Membership{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}, HighestID: 4}
	m3 := core.Membership{Voters: []uint64{1, 2, 3, 4}, HighestID: 4}
	l := &loop{n: &Node{snaps: nil}, membership: m3}
	l.n.snaps = &snapshotLogStub{}
	l.confHist = []confPoint{{index: 10, m: m1}}
	l.noteConf(20, m2)
	l.noteConf(30, m3)
	for _, tc := range []struct {
		at   uint64
		want core.Membership
	}{{5, m1}, {10, m1}, {19, m1}, {20, m2}, {29, m2}, {30, m3}, {99, m3}} {
		if got := l.membershipAt(tc.at); !membershipEqual(got, tc.want) {
			t.Errorf("membershipAt(%d) = %+v, want %+v", tc.at, got, tc.want)
		}
	}
	l.pruneConfHistory(25)
	if len(l.confHist) != 2 || l.confHist[0].index != 20 {
		t.Fatalf("after pruning at 25: %+v", l.confHist)
	}
	if got := l.membershipAt(25); !membershipEqual(got, m2) {
		t.Fatalf("membershipAt(25) after pruning = %+v", got)
	}
}

// snapshotLogStub is a non-nil SnapshotStore for noteConf.
type snapshotLogStub struct{ SnapshotStore }

func TestConfigMembershipFields(t *testing.T) {
	base := func() Config {
		return Config{ID: 1, Peers: []Peer{{ID: 1}, {ID: 2}}, Storage: nilStorage{}, StateMachine: nilSM{}, Transport: nilTransport{}}
	}
	c := base()
	got, err := c.validated()
	if err != nil {
		t.Fatal(err)
	}
	if got.AutoPromoteMaxLag != DefaultAutoPromoteMaxLag || got.AutoPromoteStableFor != DefaultAutoPromoteStableFor {
		t.Fatalf("defaults: %d %v", got.AutoPromoteMaxLag, got.AutoPromoteStableFor)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // "" = valid
	}{
		{"join without self", func(c *Config) { c.Join, c.Peers = true, []Peer{{ID: 2, Addr: "b:1"}} }, ""},
		{"join without peers", func(c *Config) { c.Join, c.Peers = true, nil }, ""},
		{"bootstrap without self", func(c *Config) { c.Peers = []Peer{{ID: 2}} }, "does not include"},
		{"negative lag", func(c *Config) { c.AutoPromoteMaxLag = -1 }, "AutoPromoteMaxLag"},
		{"lag above the core's", func(c *Config) { c.AutoPromoteMaxLag = 5000 }, "MaxPromoteLagEntries"},
		{"negative stable", func(c *Config) { c.AutoPromoteStableFor = -1 }, "AutoPromoteStableFor"},
		{"duplicate names", func(c *Config) { c.Peers = []Peer{{ID: 1, Name: "x"}, {ID: 2, Name: "x"}} }, "name"},
		{"long name", func(c *Config) { c.Peers = []Peer{{ID: 1, Name: strings.Repeat("n", 600)}, {ID: 2}} }, "name is 600 bytes"},
		{"bad client addr", func(c *Config) { c.Peers = []Peer{{ID: 1, ClientAddr: "\xff"}, {ID: 2}} }, "client address is not valid UTF-8"},
		{"TuneRaft changes membership", func(c *Config) {
			c.TuneRaft = func(rc *core.Config) { rc.Membership = core.Membership{Voters: []uint64{1}} }
		}, "Membership"},
	} {
		c := base()
		tc.mod(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// Placeholders that satisfy Validate's non-nil checks; never used.
type (
	nilStorage   struct{ Storage }
	nilSM        struct{ StateMachine }
	nilTransport struct{ Transport }
)
