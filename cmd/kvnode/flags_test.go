package main

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

func TestIDFromHostname(t *testing.T) {
	for _, tc := range []struct {
		host    string
		want    uint64
		wantErr string
	}{
		{host: "rafty-0", want: 1},
		{host: "rafty-2", want: 3},
		{host: "my-db-rafty-10", want: 11},
		{host: "rafty-2.rafty.default.svc.cluster.local", want: 3},
		{host: "rafty", wantErr: `host name "rafty" does not end in -<ordinal>`},
		{host: "rafty-", wantErr: "does not end in -<ordinal>"},
		{host: "rafty-x1", wantErr: "does not end in -<ordinal>"},
		{host: "rafty-1a", wantErr: "does not end in -<ordinal>"},
		{host: "rafty-99999999999999999999", wantErr: "ordinal out of range"},
		{host: "", wantErr: "does not end in -<ordinal>"},
	} {
		got, err := idFromHostname(tc.host)
		if !matchErr(t, tc.host, err, tc.wantErr) {
			continue
		}
		if got != tc.want {
			t.Errorf("idFromHostname(%q) = %d, want %d", tc.host, got, tc.want)
		}
	}
}

func TestParsePeers(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[uint64]string
		wantErr string
	}{
		{in: "1=a:7000", want: map[uint64]string{1: "a:7000"}},
		{in: "1=127.0.0.1:7001, 2=127.0.0.1:7002 ,3=127.0.0.1:7003",
			want: map[uint64]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}},
		{in: "7=[::1]:7000", want: map[uint64]string{7: "[::1]:7000"}},
		{in: "", wantErr: "empty entry"},
		{in: "1=a:1,", wantErr: "empty entry"},
		{in: "a:7000", wantErr: `entry "a:7000" is not ID=HOST:PORT`},
		{in: "0=a:7000", wantErr: "node ID 0 is reserved"},
		{in: "x=a:7000", wantErr: `node ID "x" is not a positive decimal number`},
		{in: "-1=a:7000", wantErr: "not a positive decimal number"},
		{in: "1=a", wantErr: `address "a" is not HOST:PORT`},
		{in: "1=:7000", wantErr: "has no host"},
		{in: "1=a:0", wantErr: "invalid port"},
		{in: "1=a:70000", wantErr: "invalid port"},
		{in: "1=a:http", wantErr: "invalid port"},
		{in: "1=a:1,1=b:1", wantErr: "node 1 is listed twice"},
		{in: "1=a:1,2=a:1", wantErr: "nodes 1 and 2 share address a:1"},
	} {
		got, err := parsePeers(tc.in)
		if !matchErr(t, tc.in, err, tc.wantErr) {
			continue
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("parsePeers(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestExpandPeerTemplate(t *testing.T) {
	for _, tc := range []struct {
		tmpl    string
		size    int
		want    map[uint64]string
		wantErr string
	}{
		{tmpl: "rafty-{i}.rafty.default.svc.cluster.local:7000", size: 3, want: map[uint64]string{
			1: "rafty-0.rafty.default.svc.cluster.local:7000",
			2: "rafty-1.rafty.default.svc.cluster.local:7000",
			3: "rafty-2.rafty.default.svc.cluster.local:7000",
		}},
		{tmpl: "127.0.0.1:700{id}", size: 2, want: map[uint64]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}},
		{tmpl: "n{i}-{id}:1", size: 1, want: map[uint64]string{1: "n0-1:1"}},
		{tmpl: "rafty-{i}:7000", size: 0, wantErr: "needs --cluster-size between 1 and 15, got 0"},
		{tmpl: "rafty-{i}:7000", size: 16, wantErr: "between 1 and 15"},
		{tmpl: "rafty:7000", size: 3, wantErr: "no {i} or {id} placeholder"},
		{tmpl: "rafty-{ordinal}:7000", size: 3, wantErr: "no {i} or {id} placeholder"},
		{tmpl: "rafty-{i}.{ns}:7000", size: 3, wantErr: "unknown placeholder"},
		{tmpl: "rafty-{i}", size: 3, wantErr: `member 0: address "rafty-0" is not HOST:PORT`},
		{tmpl: "{i}", size: 1, wantErr: "is not HOST:PORT"},
	} {
		got, err := expandPeerTemplate(tc.tmpl, tc.size)
		if !matchErr(t, tc.tmpl, err, tc.wantErr) {
			continue
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("expandPeerTemplate(%q, %d) = %v, want %v", tc.tmpl, tc.size, got, tc.want)
		}
	}
}

// fakeFile is what the test's stat reports for paths under "certs/".
type fakeFile struct{ fs.FileInfo }

func (fakeFile) IsDir() bool { return false }

func testStat(path string) (os.FileInfo, error) {
	if strings.HasPrefix(path, "certs/") {
		return fakeFile{}, nil
	}
	return nil, &os.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}
}

func TestFlagValuesConfig(t *testing.T) {
	base := func() flagValues {
		v := defaultFlagValues()
		v.Peers = "1=a:7000,2=b:7000,3=c:7000"
		v.ID = "2"
		v.PeerListen = "0.0.0.0:7000" // b is a host name: an explicit bind address is needed
		v.statFile = testStat
		v.systemHostname = func() (string, error) { return "laptop", nil }
		return v
	}
	for _, tc := range []struct {
		name    string
		edit    func(*flagValues)
		check   func(*testing.T, *serveConfig)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c *serveConfig) {
			if c.ID != 2 || len(c.Peers) != 3 || c.PeerListen != "0.0.0.0:7000" || c.Tick != 100*time.Millisecond ||
				c.ElectionTicks != 5 || c.HeartbeatTicks != 1 || c.LogLevel != slog.LevelInfo || c.ClusterID == 0 {
				t.Errorf("unexpected config %+v", c)
			}
			if c.RaftDir() != "data/raft" || c.KVDir() != "data/kv" {
				t.Errorf("dirs %q %q", c.RaftDir(), c.KVDir())
			}
			// Unset snapshot flags give exactly the driver's policy.
			if c.SnapshotEntries != driver.DefaultSnapshotEntries || c.SnapshotBytes != driver.DefaultSnapshotBytes ||
				c.CompactionMarginEntries != driver.DefaultCompactionMarginEntries ||
				c.CompactionMarginBytes != driver.DefaultCompactionMarginBytes ||
				c.SnapshotTimeout != driver.DefaultSnapshotTimeout || c.MaxSnapshotSends != driver.DefaultMaxSnapshotSends {
				t.Errorf("snapshot policy %+v is not the driver's default", c)
			}
		}},
		{name: "snapshot policy", edit: func(v *flagValues) {
			v.SnapshotEntries, v.SnapshotBytes, v.CompactionMarginEntries, v.CompactionMarginBytes = 100, "1GiB", 20000, "512 kib"
			v.SnapshotTimeout, v.MaxSnapshotSends = 5*time.Second, 1
		}, check: func(t *testing.T, c *serveConfig) {
			// A margin above --snapshot-entries only keeps more log: allowed.
			if c.SnapshotEntries != 100 || c.SnapshotBytes != 1<<30 || c.CompactionMarginEntries != 20000 ||
				c.CompactionMarginBytes != 512<<10 || c.SnapshotTimeout != 5*time.Second || c.MaxSnapshotSends != 1 {
				t.Errorf("snapshot policy %+v", c)
			}
		}},
		{name: "snapshot bytes plain", edit: func(v *flagValues) { v.SnapshotBytes = "1000" }, check: func(t *testing.T, c *serveConfig) {
			if c.SnapshotBytes != 1000 {
				t.Errorf("snapshot bytes %d", c.SnapshotBytes)
			}
		}},
		{name: "read mode lease", edit: func(v *flagValues) { v.ReadMode, v.MaxClockDriftTicks = "lease", 2 }, check: func(t *testing.T, c *serveConfig) {
			if c.ReadMode != core.ReadLease || c.MaxClockDriftTicks != 2 {
				t.Fatalf("read mode %v drift %d, want lease and 2", c.ReadMode, c.MaxClockDriftTicks)
			}
		}},
		{name: "read mode default", check: func(t *testing.T, c *serveConfig) {
			if c.ReadMode != core.ReadSafe || c.MaxClockDriftTicks != 1 {
				t.Fatalf("read mode %v drift %d, want safe and 1", c.ReadMode, c.MaxClockDriftTicks)
			}
		}},
		{name: "read mode unknown", edit: func(v *flagValues) { v.ReadMode = "fast" }, wantErr: `--read-mode must be safe or lease, got "fast"`},
		{name: "lease without drift margin", edit: func(v *flagValues) { v.ReadMode, v.MaxClockDriftTicks = "lease", 0 },
			wantErr: "--read-mode lease requires --max-clock-drift-ticks of at least 1 (no two clocks tick at exactly the same rate), got 0"},
		{name: "lease shorter than a tick", edit: func(v *flagValues) { v.ReadMode, v.MaxClockDriftTicks = "lease", 4 },
			wantErr: "--read-mode lease requires --max-clock-drift-ticks (4) at most --election-ticks - 2 (3)"},
		{name: "clock drift negative", edit: func(v *flagValues) { v.MaxClockDriftTicks = -1 },
			wantErr: "--max-clock-drift-ticks must be in [0, --election-ticks), got -1"},
		{name: "clock drift too large", edit: func(v *flagValues) { v.MaxClockDriftTicks = 5 },
			wantErr: "--max-clock-drift-ticks must be in [0, --election-ticks), got 5"},
		{name: "snapshot entries zero", edit: func(v *flagValues) { v.SnapshotEntries = 0 }, wantErr: "--snapshot-entries must be at least 1, got 0"},
		{name: "snapshot entries negative", edit: func(v *flagValues) { v.SnapshotEntries = -5 }, wantErr: "--snapshot-entries must be at least 1, got -5"},
		{name: "snapshot bytes zero", edit: func(v *flagValues) { v.SnapshotBytes = "0" }, wantErr: "--snapshot-bytes must be at least 1 byte, got 0"},
		{name: "snapshot bytes negative", edit: func(v *flagValues) { v.SnapshotBytes = "-1" }, wantErr: `--snapshot-bytes: "-1" is not a size`},
		{name: "snapshot bytes decimal unit", edit: func(v *flagValues) { v.SnapshotBytes = "64MB" },
			wantErr: `--snapshot-bytes: size "64MB": use a binary unit (KiB, MiB, GiB, TiB); MB is ambiguous`},
		// The driver would read 0 as its default (5,000 entries, 16 MiB),
		// the opposite of what the operator asked for.
		{name: "margin entries zero", edit: func(v *flagValues) { v.CompactionMarginEntries = 0 },
			wantErr: "--compaction-margin-entries must be at least 1, got 0"},
		{name: "margin bytes zero", edit: func(v *flagValues) { v.CompactionMarginBytes = "0KiB" },
			wantErr: "--compaction-margin-bytes must be at least 1 byte, got 0KiB"},
		{name: "margin bytes garbage", edit: func(v *flagValues) { v.CompactionMarginBytes = "16 megs" },
			wantErr: `--compaction-margin-bytes: size "16 megs" has an unknown unit "megs"`},
		{name: "snapshot timeout zero", edit: func(v *flagValues) { v.SnapshotTimeout = 0 }, wantErr: "--snapshot-timeout must be positive, got 0s"},
		{name: "snapshot timeout negative", edit: func(v *flagValues) { v.SnapshotTimeout = -time.Second },
			wantErr: "--snapshot-timeout must be positive, got -1s"},
		{name: "max snapshot sends zero", edit: func(v *flagValues) { v.MaxSnapshotSends = 0 }, wantErr: "--max-snapshot-sends must be at least 1, got 0"},
		{name: "every snapshot problem at once", edit: func(v *flagValues) {
			v.SnapshotEntries, v.SnapshotBytes, v.CompactionMarginEntries, v.CompactionMarginBytes = 0, "x", -1, "1EiB"
			v.SnapshotTimeout, v.MaxSnapshotSends = 0, -1
		}, wantErr: "--snapshot-entries must be at least 1, got 0; --compaction-margin-entries must be at least 1, got -1; " +
			"--max-snapshot-sends must be at least 1, got -1; --snapshot-bytes: \"x\" is not a size: want a number of bytes, " +
			"optionally with a unit B, KiB, MiB, GiB or TiB (64MiB); --compaction-margin-bytes: size \"1EiB\" has an unknown unit \"EiB\"; " +
			"want B, KiB, MiB, GiB or TiB; --snapshot-timeout must be positive, got 0s"},
		{name: "ID from StatefulSet hostname", edit: func(v *flagValues) {
			v.ID, v.Peers, v.PeerTemplate, v.ClusterSize = "", "", "rafty-{i}.rafty.ns.svc.cluster.local:7000", 3
			v.Hostname = "rafty-2"
		}, check: func(t *testing.T, c *serveConfig) {
			if c.ID != 3 || c.Peers[3] != "rafty-2.rafty.ns.svc.cluster.local:7000" {
				t.Errorf("ID %d peers %v", c.ID, c.Peers)
			}
		}},
		{name: "ID from system hostname", edit: func(v *flagValues) {
			v.ID = ""
			v.systemHostname = func() (string, error) { return "rafty-0.rafty.default.svc.cluster.local", nil }
		}, check: func(t *testing.T, c *serveConfig) {
			if c.ID != 1 {
				t.Errorf("ID %d", c.ID)
			}
		}},
		{name: "hostname without ordinal", edit: func(v *flagValues) { v.ID = "" },
			wantErr: `--id is empty and host name "laptop" does not end in -<ordinal>`},
		{name: "hostname unknown", edit: func(v *flagValues) {
			v.ID = ""
			v.systemHostname = func() (string, error) { return "", errors.New("uname failed") }
		}, wantErr: "the host name is unknown (uname failed)"},
		{name: "bad id", edit: func(v *flagValues) { v.ID = "two" }, wantErr: `--id: node ID "two" is not a positive decimal number`},
		{name: "id not a member", edit: func(v *flagValues) { v.ID = "4" }, wantErr: "this node's ID 4 is not a member (members: 1,2,3)"},
		{name: "ordinal beyond cluster size joins", edit: func(v *flagValues) {
			v.ID, v.Peers, v.PeerTemplate, v.ClusterSize, v.Hostname = "", "", "r-{i}.r.ns:7000", 3, "r-3"
		}, check: func(t *testing.T, c *serveConfig) {
			if !c.Joiner || c.ID != 0 || c.SelfPeerAddr != "r-3.r.ns:7000" || c.Name != "r-3" ||
				strings.Join(c.Join, ",") != "r-0.r.ns:7000,r-1.r.ns:7000,r-2.r.ns:7000" || c.PeerNames[2] != "r-1" {
				t.Errorf("joiner %+v", c)
			}
			if c.SelfClientAddr != "r-3.r.ns:2379" && c.SelfClientAddr != "127.0.0.1:2379" {
				t.Errorf("client addr %q", c.SelfClientAddr)
			}
		}},
		{name: "explicit id beyond peers", edit: func(v *flagValues) {
			v.ID, v.Peers, v.PeerTemplate, v.ClusterSize = "4", "", "r-{i}:7000", 3
		}, wantErr: "this node's ID 4 is not a member"},
		{name: "join", edit: func(v *flagValues) {
			v.ID, v.Peers, v.Join, v.PeerListen, v.Name = "", "", "a:7000, b:7000", "127.0.0.1:7009", "n9"
		}, check: func(t *testing.T, c *serveConfig) {
			if !c.Joiner || c.ID != 0 || c.SelfPeerAddr != "127.0.0.1:7009" || c.Name != "n9" || len(c.Join) != 2 || c.PeerListen != "127.0.0.1:7009" {
				t.Errorf("joiner %+v", c)
			}
		}},
		{name: "join with id", edit: func(v *flagValues) { v.Join = "a:7000" }, wantErr: "--id and --join"},
		{name: "join without own address", edit: func(v *flagValues) {
			v.ID, v.Peers, v.Join = "", "", "a:7000"
		}, wantErr: "a joining node needs its own peer address"},
		{name: "names from hosts", check: func(t *testing.T, c *serveConfig) {
			if c.Name != "b" || c.PeerNames[1] != "a" || c.SelfPeerAddr != "b:7000" {
				t.Errorf("names %q %v", c.Name, c.PeerNames)
			}
		}},
		{name: "peers and template", edit: func(v *flagValues) { v.PeerTemplate = "r-{i}:1" }, wantErr: "mutually exclusive"},
		{name: "no members", edit: func(v *flagValues) { v.Peers = "" }, wantErr: "no members: give --peers"},
		{name: "cluster size with peers", edit: func(v *flagValues) { v.ClusterSize = 3 }, wantErr: "--cluster-size applies only to --peer-template"},
		{name: "bad peers", edit: func(v *flagValues) { v.Peers = "1=a" }, wantErr: `--peers: entry "1=a": address "a" is not HOST:PORT`},
		{name: "template without size", edit: func(v *flagValues) { v.Peers, v.PeerTemplate = "", "r-{i}:1" },
			wantErr: "--peer-template: needs --cluster-size"},
		{name: "empty cluster id", edit: func(v *flagValues) { v.ClusterName = " " }, wantErr: "--cluster-id must not be empty"},
		{name: "empty data dir", edit: func(v *flagValues) { v.DataDir = "" }, wantErr: "--data-dir must not be empty"},
		{name: "bad listen", edit: func(v *flagValues) { v.PeerListen = "7000" }, wantErr: `--peer-listen: "7000" is not HOST:PORT`},
		{name: "bad listen port", edit: func(v *flagValues) { v.ClientListen = ":99999" }, wantErr: "--client-listen: \":99999\" has an invalid port"},
		{name: "same listen twice", edit: func(v *flagValues) { v.Metrics = v.ClientListen },
			wantErr: "--client-listen and --metrics-listen both listen on 127.0.0.1:2379"},
		{name: "client and metrics on loopback by default", check: func(t *testing.T, c *serveConfig) {
			if c.ClientListen != "127.0.0.1:2379" || c.MetricsListen != "127.0.0.1:9090" {
				t.Errorf("client %q, metrics %q: want loopback", c.ClientListen, c.MetricsListen)
			}
		}},
		{name: "metrics off", edit: func(v *flagValues) { v.Metrics = "off" }, check: func(t *testing.T, c *serveConfig) {
			if c.MetricsListen != "" {
				t.Errorf("metrics listen %q, want none", c.MetricsListen)
			}
		}},
		{name: "peer listen from own entry", edit: func(v *flagValues) {
			v.Peers, v.PeerListen = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", ""
		}, check: func(t *testing.T, c *serveConfig) {
			if c.PeerListen != "127.0.0.1:7002" {
				t.Errorf("peer listen %q, want this node's entry 127.0.0.1:7002", c.PeerListen)
			}
		}},
		{name: "peer listen needed for a host name", edit: func(v *flagValues) { v.PeerListen = "" },
			wantErr: "--peer-listen is needed: this node's --peers entry 2=b:7000 is a host name, not a local address to listen on (e.g. --peer-listen 0.0.0.0:7000)"},
		{name: "peer listen on another port", edit: func(v *flagValues) { v.PeerListen = "0.0.0.0:7001" },
			wantErr: "--peer-listen 0.0.0.0:7001 disagrees with this node's --peers entry 2=b:7000, the address its peers dial: port 7001 is not 7000"},
		{name: "peer listen on another address", edit: func(v *flagValues) {
			v.Peers, v.PeerListen = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", "127.0.0.9:7002"
		}, wantErr: "host 127.0.0.9 is not 127.0.0.1"},
		{name: "peer listen on a wildcard", edit: func(v *flagValues) {
			v.Peers, v.PeerListen = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", "[::]:7002"
		}},
		{name: "port 0 twice is fine", edit: func(v *flagValues) { v.Metrics, v.ClientListen = "127.0.0.1:0", "127.0.0.1:0" }},
		{name: "tick too short", edit: func(v *flagValues) { v.Tick = time.Microsecond }, wantErr: "--tick must be at least 1ms, got 1µs"},
		{name: "election ticks", edit: func(v *flagValues) { v.ElectionTicks = 1 }, wantErr: "--election-ticks must be at least 2, got 1"},
		{name: "heartbeat zero", edit: func(v *flagValues) { v.HeartbeatTicks = 0 }, wantErr: "--heartbeat-ticks must be at least 1"},
		{name: "heartbeat not below election", edit: func(v *flagValues) { v.HeartbeatTicks = 5 },
			wantErr: "--heartbeat-ticks (5) must be less than --election-ticks (5)"},
		{name: "tls complete", edit: func(v *flagValues) { v.TLSCert, v.TLSKey, v.TLSCA = "certs/n.pem", "certs/n.key", "certs/ca.pem" },
			check: func(t *testing.T, c *serveConfig) {
				if c.TLSCAFile != "certs/ca.pem" {
					t.Errorf("TLS CA %q", c.TLSCAFile)
				}
			}},
		{name: "tls partial", edit: func(v *flagValues) { v.TLSCert = "certs/n.pem" },
			wantErr: "peer TLS needs --peer-tls-cert, --peer-tls-key and --peer-tls-ca together; --peer-tls-key and --peer-tls-ca missing"},
		{name: "tls file missing", edit: func(v *flagValues) { v.TLSCert, v.TLSKey, v.TLSCA = "certs/n.pem", "nope.key", "certs/ca.pem" },
			wantErr: "--peer-tls-key: nope.key: file does not exist"},
		{name: "shutdown timeout", edit: func(v *flagValues) { v.ShutdownTimeout = 0 }, wantErr: "--shutdown-timeout must be in (0, 1m0s], got 0s"},
		{name: "log format", edit: func(v *flagValues) { v.LogFormat = "xml" }, wantErr: `--log-format must be text or json, got "xml"`},
		{name: "log level", edit: func(v *flagValues) { v.LogLevel = "loud" }, wantErr: `--log-level: want debug, info, warn or error, got "loud"`},
		{name: "log level case", edit: func(v *flagValues) { v.LogLevel = "DEBUG" }, check: func(t *testing.T, c *serveConfig) {
			if c.LogLevel != slog.LevelDebug {
				t.Errorf("level %v", c.LogLevel)
			}
		}},
		{name: "every problem at once", edit: func(v *flagValues) { v.Tick, v.LogFormat = 0, "xml" },
			wantErr: `--tick must be at least 1ms, got 0s; --log-format must be text or json, got "xml"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := base()
			if tc.edit != nil {
				tc.edit(&v)
			}
			c, err := v.config()
			if !matchErr(t, tc.name, err, tc.wantErr) {
				if err != nil && tc.wantErr != "" && strings.Contains(err.Error(), tc.wantErr) {
					if code := exitCodeOf(err); code != exitUsage {
						t.Errorf("exit code %d, want %d", code, exitUsage)
					}
					if strings.Contains(err.Error(), "\n") {
						t.Errorf("error spans lines: %q", err)
					}
				}
				return
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// TestFlagValuesConfigRaftRules: the Raft and snapshot rules are the
// driver's and the core's, reported one problem per mistake, each naming
// its flag, and a flag kvnode already refused is not reported again.
func TestFlagValuesConfigRaftRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*flagValues)
		want string // the whole message
	}{
		{"election ticks alone", func(v *flagValues) { v.ElectionTicks = 1 }, "--election-ticks must be at least 2, got 1"},
		{"both ticks", func(v *flagValues) { v.ElectionTicks, v.HeartbeatTicks = 0, 0 },
			"--election-ticks must be at least 2, got 0; --heartbeat-ticks must be at least 1, got 0"},
		{"tick below the driver's floor", func(v *flagValues) { v.Tick = -time.Second }, "--tick must be at least 1ms, got -1s"},
		{"read mode misspelt and drift", func(v *flagValues) { v.ReadMode, v.MaxClockDriftTicks = "fast", 9 },
			`--read-mode must be safe or lease, got "fast"; --max-clock-drift-ticks must be in [0, --election-ticks), got 9`},
		{"lease drift", func(v *flagValues) { v.ReadMode, v.ElectionTicks, v.MaxClockDriftTicks = "lease", 10, 9 },
			"--read-mode lease requires --max-clock-drift-ticks (9) at most --election-ticks - 2 (8): the lease lasts --election-ticks - 1 - --max-clock-drift-ticks ticks"},
		// Refused by kvnode (a flag must be positive): not again by the driver.
		{"negative snapshot settings", func(v *flagValues) { v.SnapshotEntries, v.SnapshotTimeout = -1, -time.Second },
			"--snapshot-entries must be at least 1, got -1; --snapshot-timeout must be positive, got -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := defaultFlagValues()
			v.Peers, v.ID = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", "2"
			tc.edit(&v)
			_, err := v.config()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error %v\nwant       %s", err, tc.want)
			}
			if code := exitCodeOf(err); code != exitUsage {
				t.Fatalf("exit code %d, want %d", code, exitUsage)
			}
		})
	}
}

// TestDriverConfigFromFlags: what config validated is what serve starts
// the node with: driverConfig carries every Raft and snapshot flag.
func TestDriverConfigFromFlags(t *testing.T) {
	v := defaultFlagValues()
	v.Peers, v.ID = "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", "2"
	v.Tick, v.ElectionTicks, v.HeartbeatTicks, v.ReadMode, v.MaxClockDriftTicks = 20*time.Millisecond, 12, 3, "lease", 2
	v.SnapshotEntries, v.SnapshotBytes, v.CompactionMarginEntries, v.CompactionMarginBytes = 7, "3KiB", 5, "2KiB"
	v.SnapshotTimeout, v.MaxSnapshotSends = 9*time.Second, 4
	c, err := v.config()
	if err != nil {
		t.Fatal(err)
	}
	limits := kv.DefaultLimits()
	dc := c.driverConfig(limits)
	if dc.TickInterval != 20*time.Millisecond || dc.SnapshotEntries != 7 || dc.SnapshotBytes != 3<<10 ||
		dc.CompactionMarginEntries != 5 || dc.CompactionMarginBytes != 2<<10 || dc.SnapshotTimeout != 9*time.Second ||
		dc.MaxSnapshotSends != 4 || dc.MaxProposalBytes != limits.MaxProposalBytes() || dc.ValidateCommand == nil {
		t.Fatalf("driver config %+v", dc)
	}
	rc := core.DefaultConfig(2)
	dc.TuneRaft(&rc)
	if rc.ElectionTicks != 12 || rc.HeartbeatTicks != 3 || rc.ReadMode != core.ReadLease || rc.MaxClockDriftTicks != 2 {
		t.Fatalf("core config %+v", rc)
	}
	// Every field the flags set is mapped back to its flag.
	for _, flag := range fieldFlags {
		if !slices.ContainsFunc(serveFlags(), func(f cli.Flag) bool { return f.Names()[0] == flag }) {
			t.Errorf("fieldFlags names --%s, which is not a serve flag", flag)
		}
	}
	if got := flagNames("ReadMode lease requires MaxClockDriftTicks; MaxSnapshotSendsX, ElectionTicksum"); got !=
		"--read-mode lease requires --max-clock-drift-ticks; MaxSnapshotSendsX, ElectionTicksum" {
		t.Fatalf("flagNames rewrote %q", got)
	}
}

func TestClusterIDFromName(t *testing.T) {
	a, b := clusterIDFromName("rafty"), clusterIDFromName("rafty-staging")
	if a == 0 || b == 0 || a == b {
		t.Fatalf("cluster IDs %x %x", a, b)
	}
	if a != clusterIDFromName("rafty") {
		t.Fatal("cluster ID not deterministic")
	}
}

func TestEnvName(t *testing.T) {
	if got := envName(flagPeerTemplate); got != "KVNODE_PEER_TEMPLATE" {
		t.Fatalf("envName = %q", got)
	}
}

// TestServeFlagsHaveEnvTwins: every serve flag, new ones included, reads
// its KVNODE_* twin, so a container can be configured by environment only.
func TestServeFlagsHaveEnvTwins(t *testing.T) {
	for _, f := range serveFlags() {
		name := f.Names()[0]
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			t.Errorf("--%s: cannot inspect its sources", name)
			continue
		}
		if got := df.GetEnvVars(); len(got) != 1 || got[0] != envName(name) {
			t.Errorf("--%s reads environment %v, want [%s]", name, got, envName(name))
		}
	}
}

// parseServeFlags parses args with serve's flags (and the environment the
// test set) and returns what readFlagValues collects, without serving.
func parseServeFlags(t *testing.T, args ...string) flagValues {
	t.Helper()
	var got flagValues
	cmd := &cli.Command{Name: "serve", Flags: serveFlags(), Action: func(_ context.Context, c *cli.Command) error {
		got = readFlagValues(c)
		return nil
	}}
	if err := cmd.Run(context.Background(), append([]string{"serve"}, args...)); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	return got
}

func TestServeFlagDefaultsAndEnvTwins(t *testing.T) {
	// The flags' own defaults are what defaultFlagValues (used by the
	// table tests and by snapshot restore) says they are.
	if got, want := parseServeFlags(t), defaultFlagValues(); !reflect.DeepEqual(got, want) {
		t.Errorf("flag defaults\n%+v\ndiffer from defaultFlagValues\n%+v", got, want)
	}

	t.Setenv("KVNODE_SNAPSHOT_ENTRIES", "100")
	t.Setenv("KVNODE_SNAPSHOT_BYTES", "8MiB")
	t.Setenv("KVNODE_COMPACTION_MARGIN_ENTRIES", "10")
	t.Setenv("KVNODE_COMPACTION_MARGIN_BYTES", "4096")
	t.Setenv("KVNODE_SNAPSHOT_TIMEOUT", "15s")
	t.Setenv("KVNODE_MAX_SNAPSHOT_SENDS", "3")
	v := parseServeFlags(t)
	if v.SnapshotEntries != 100 || v.SnapshotBytes != "8MiB" || v.CompactionMarginEntries != 10 ||
		v.CompactionMarginBytes != "4096" || v.SnapshotTimeout != 15*time.Second || v.MaxSnapshotSends != 3 {
		t.Errorf("from the environment: %+v", v)
	}
	// A flag on the command line wins over its twin.
	v = parseServeFlags(t, "--snapshot-entries", "7", "--snapshot-bytes", "1GiB", "--max-snapshot-sends", "1")
	if v.SnapshotEntries != 7 || v.SnapshotBytes != "1GiB" || v.MaxSnapshotSends != 1 || v.CompactionMarginEntries != 10 {
		t.Errorf("flags over the environment: %+v", v)
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "67108864", want: 64 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: " 64 mib ", want: 64 << 20},
		{in: "1B", want: 1},
		{in: "3KiB", want: 3 << 10},
		{in: "2GiB", want: 2 << 30},
		{in: "1TiB", want: 1 << 40},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "8388608TiB", wantErr: "out of range"},
		{in: "99999999999999999999", wantErr: "out of range"},
		{in: "", wantErr: `"" is not a size`},
		{in: "MiB", wantErr: `"MiB" is not a size`},
		{in: "-1", wantErr: `"-1" is not a size`},
		{in: "1.5MiB", wantErr: `size "1.5MiB": want a whole number of a unit (1536KiB, not 1.5MiB)`},
		{in: "64MB", wantErr: "use a binary unit"},
		{in: "64k", wantErr: "use a binary unit"},
		{in: "64 bytes", wantErr: `unknown unit "bytes"`},
	} {
		got, err := parseSize(tc.in)
		if !matchErr(t, tc.in, err, tc.wantErr) {
			continue
		}
		if got != tc.want {
			t.Errorf("parseSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1: "1", 1000: "1000", 1 << 10: "1KiB", 1536: "1536", driver.DefaultSnapshotBytes: "64MiB",
		driver.DefaultCompactionMarginBytes: "16MiB", 3 << 30: "3GiB", 5 << 40: "5TiB",
	} {
		got := formatSize(n)
		if got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		// What it prints reads back unchanged: it is the flags' default text.
		if back, err := parseSize(got); err != nil || back != n {
			t.Errorf("parseSize(formatSize(%d)) = %d, %v", n, back, err)
		}
	}
}

// matchErr checks err against wantErr (a substring; "" means no error)
// and reports whether the caller should go on checking the result.
func matchErr(t *testing.T, what string, err error, wantErr string) bool {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
		return false
	case wantErr != "" && err == nil:
		t.Errorf("%s: no error, want one containing %q", what, wantErr)
		return false
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s: error %q does not contain %q", what, err, wantErr)
		return false
	}
	return wantErr == ""
}

// exitCodeOf returns the exit status err would end the process with.
func exitCodeOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitUsage
}
