package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"strings"
	"testing"
	"time"
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
			if c.ID != 2 || len(c.Peers) != 3 || c.PeerListen != defaultPeerListen || c.Tick != 100*time.Millisecond ||
				c.ElectionTicks != 5 || c.HeartbeatTicks != 1 || c.LogLevel != slog.LevelInfo || c.ClusterID == 0 {
				t.Errorf("unexpected config %+v", c)
			}
			if c.RaftDir() != "data/raft" || c.KVDir() != "data/kv" {
				t.Errorf("dirs %q %q", c.RaftDir(), c.KVDir())
			}
		}},
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
		{name: "ordinal beyond cluster size", edit: func(v *flagValues) {
			v.ID, v.Peers, v.PeerTemplate, v.ClusterSize, v.Hostname = "", "", "r-{i}:1", 3, "r-3"
		}, wantErr: "this node's ID 4 is not a member"},
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
			wantErr: "--client-listen and --metrics-listen both listen on 0.0.0.0:2379"},
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
