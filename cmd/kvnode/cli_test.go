package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// runCLI runs the CLI in-process with an empty standard input and returns
// its exit status and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLIInput(t, strings.NewReader(""), args...)
}

// runCLIInput is runCLI reading stdin.
func runCLIInput(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"kvnode"}, args...), stdin, &out, &errOut)
	return code, out.String(), errOut.String()
}

// wantOneLineError checks the CLI failed with code and one stderr line
// containing want, and printed nothing else.
func wantOneLineError(t *testing.T, args []string, code int, stdout, stderr string, wantCode int, want string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("kvnode %q: exit %d, want %d (stderr %q)", args, code, wantCode, stderr)
	}
	if !strings.HasPrefix(stderr, "kvnode: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("kvnode %q: stderr is not one \"kvnode: ...\" line: %q", args, stderr)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("kvnode %q: stderr %q does not contain %q", args, stderr, want)
	}
	if stdout != "" {
		t.Errorf("kvnode %q: unexpected stdout %q", args, stdout)
	}
}

func TestCLIBadInput(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dead := freeAddr(t) // nothing listens there

	serve := []string{"serve", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", t.TempDir()}
	for _, tc := range []struct {
		args     []string
		env      map[string]string
		wantCode int
		want     string
		logged   bool // a log line precedes the error
	}{
		{args: []string{"frob"}, wantCode: exitUsage, want: `unknown command "frob"`},
		{args: []string{"--nope"}, wantCode: exitUsage, want: "unknown flag --nope"},
		{args: []string{"put", "--bogus", "k", "v"}, wantCode: exitUsage, want: "unknown flag --bogus"},
		{args: []string{"put"}, wantCode: exitUsage, want: "usage: kvnode put KEY VALUE (got 0 arguments)"},
		{args: []string{"put", "k"}, wantCode: exitUsage, want: "(got 1 argument)"},
		{args: []string{"put", "k", "v", "w"}, wantCode: exitUsage, want: "(got 3 arguments)"},
		{args: []string{"put", "", "v"}, wantCode: exitUsage, want: "the key must not be empty"},
		{args: []string{"put", "k", "v", "--endpoints", "nohost"}, wantCode: exitUsage, want: `--endpoints: address "nohost" is not HOST:PORT`},
		{args: []string{"put", "k", "v", "--endpoints", "a:1,,b:2"}, wantCode: exitUsage, want: "has an empty entry"},
		{args: []string{"put", "k", "v", "--endpoints", "a:1,a:1"}, wantCode: exitUsage, want: "lists a:1 twice"},
		{args: []string{"put", "k", "v", "--timeout", "0s"}, wantCode: exitUsage, want: "--timeout must be positive"},
		{args: []string{"put", "k", "v", "--timeout", "soon"}, wantCode: exitUsage, want: `invalid value "soon" for flag --timeout`},
		{args: []string{"put", "k", "v"}, env: map[string]string{"KVNODE_TIMEOUT": "soon"}, wantCode: exitUsage,
			want: `"soon" as time.Duration value from environment variable "KVNODE_TIMEOUT"`},
		// Nothing listens: fails at once (TestCLIRefusedFailsFast times it).
		{args: []string{"put", "k", "v", "--endpoints", dead}, wantCode: exitFailure,
			want: "put: connection refused at every endpoint (" + dead + "): is the cluster running, and are these its client addresses (--endpoints, KVNODE_ENDPOINTS)?"},
		{args: []string{"put", "k", "--file", "/nonexistent/v"}, wantCode: exitUsage, want: "put: --file: /nonexistent/v: no such file or directory"},
		{args: []string{"put", "k", "--file", ""}, wantCode: exitUsage, want: "put: --file must not be empty"},
		{args: []string{"put", "k", "v", "--file", "/dev/null"}, wantCode: exitUsage, want: "usage: kvnode put KEY --file F (got 2 arguments)"},
		{args: []string{"put", "k", strings.Repeat("v", kv.DefaultMaxValueBytes+1)}, wantCode: exitUsage,
			want: "put: the value is 1048577 bytes, over the server's limit of 1.0 MiB (1048576 bytes)"},
		{args: []string{"version", "x"}, wantCode: exitUsage, want: "usage: kvnode version"},
		{args: []string{"get"}, wantCode: exitUsage, want: "usage: kvnode get KEY"},
		{args: []string{"get", "a", "b"}, wantCode: exitUsage, want: "(got 2 arguments)"},
		{args: []string{"get", "k", "--serializable=maybe"}, wantCode: exitUsage, want: "--serializable"},
		{args: []string{"get", "k", "--endpoints", dead + "," + freeAddr(t)}, wantCode: exitFailure, want: "get: connection refused at every endpoint (" + dead + ", "},
		{args: []string{"del"}, wantCode: exitUsage, want: "del: takes KEY, --prefix PREFIX or START END"},
		{args: []string{"del", "--prefix", ""}, wantCode: exitUsage, want: "refusing an empty prefix"},
		{args: []string{"del", "c", "a"}, wantCode: exitUsage, want: `END "a" must sort after START "c"`},
		{args: []string{"del", "a", "b", "c"}, wantCode: exitUsage, want: "too many arguments"},
		{args: []string{"scan", "--limit", "-1"}, wantCode: exitUsage, want: "--limit must not be negative"},
		{args: []string{"scan", "--limit", "x"}, wantCode: exitUsage, want: `invalid value "x" for flag --limit`},
		{args: []string{"scan", "--count", "--keys-only"}, wantCode: exitUsage, want: "--count cannot be combined"},
		{args: []string{"scan", "--prefix", "a", "b"}, wantCode: exitUsage, want: "--prefix takes one PREFIX"},
		{args: []string{"scan", "a", "b", "c"}, wantCode: exitUsage, want: "too many arguments"},
		{args: []string{"txn"}, wantCode: exitUsage, want: "txn: nothing to do"},
		{args: []string{"txn", "extra"}, wantCode: exitUsage, want: "usage: kvnode txn"},
		{args: []string{"txn", "--if", "value(k)", "--then", "put k v"}, wantCode: exitUsage, want: `txn: condition "value(k)": at offset 8: expected =, !=, < or >`},
		{args: []string{"txn", "--then", "put k"}, wantCode: exitUsage, want: `txn: --then: operation "put k": put takes KEY VALUE`},
		{args: []string{"txn", "--then", "put k v", "--else", "get"}, wantCode: exitUsage, want: "--else"},
		{args: []string{"status", "x"}, wantCode: exitUsage, want: "usage: kvnode status"},
		{args: []string{"status", "--endpoints", ""}, wantCode: exitUsage, want: "--endpoints"},
		{args: []string{"health", "--url", "ftp://x/readyz"}, wantCode: exitUsage, want: "is not an http:// or https:// URL"},
		{args: []string{"health", "--url", "http://" + dead + "/readyz"}, wantCode: exitFailure, want: "connection refused"},
		{args: []string{"health", "--timeout", "0s"}, wantCode: exitUsage, want: "--timeout must be positive"},
		{args: []string{"health", "x"}, wantCode: exitUsage, want: "usage: kvnode health"},
		{args: []string{"serve", "extra"}, wantCode: exitUsage, want: "usage: kvnode serve"},
		{args: []string{"serve", "--id", "1"}, wantCode: exitUsage, want: "no members: give --peers"},
		{args: []string{"serve", "--id", "1", "--peers", "1=a"}, wantCode: exitUsage, want: `--peers: entry "1=a": address "a" is not HOST:PORT`},
		{args: []string{"serve", "--peer-template", "r-{i}:7000", "--cluster-size", "3", "--hostname", "laptop"}, wantCode: exitUsage,
			want: `--id is empty and host name "laptop" does not end in -<ordinal>`},
		{args: []string{"serve", "--peer-template", "r-{i}:7000", "--cluster-size", "x"}, wantCode: exitUsage, want: "--cluster-size"},
		{args: []string{"serve"}, env: map[string]string{"KVNODE_PEERS": "1=r-0:7000,2=r-1:7000,3=r-2:7000", "KVNODE_HOSTNAME": "r-5"},
			wantCode: exitUsage, want: "this node's ID 6 is not a member (members: 1,2,3)"},
		// With the template, a pod beyond --cluster-size is a scale-up joiner.
		{args: []string{"serve"}, env: map[string]string{"KVNODE_PEER_TEMPLATE": "r-{i}:7000", "KVNODE_CLUSTER_SIZE": "3", "KVNODE_HOSTNAME": "r-5"},
			wantCode: exitUsage, want: "--peer-listen is needed: this node's peer address r-5:7000 is a host name"},
		{args: []string{"member", "add", "n4"}, wantCode: exitUsage, want: "member add: --peer-addr is required"},
		{args: []string{"member", "add", "n4", "--peer-addr", "x"}, wantCode: exitUsage, want: `member add: --peer-addr: address "x" is not HOST:PORT`},
		{args: []string{"member", "promote", "zero"}, wantCode: exitUsage, want: "member promote: node ID"},
		{args: []string{"member", "remove"}, wantCode: exitUsage, want: "usage: kvnode member remove ID|NAME"},
		{args: []string{"member", "remove", "0"}, wantCode: exitUsage, want: "IDs start at 1"},
		{args: []string{"member", "frob"}, wantCode: exitUsage, want: `unknown command "member frob"`},
		{args: []string{"recover", "--data-dir", "x"}, wantCode: exitUsage, want: "--force-new-cluster is required"},
		{args: serve, env: map[string]string{"KVNODE_TICK": "fast"}, wantCode: exitUsage,
			want: `"fast" as time.Duration value from environment variable "KVNODE_TICK"`},
		{args: append(slices.Clone(serve), "--election-ticks", "1", "--log-format", "xml"), wantCode: exitUsage,
			want: `--election-ticks must be at least 2, got 1; --log-format must be text or json, got "xml"`},
		{args: append(slices.Clone(serve), "--snapshot-entries", "0"), wantCode: exitUsage, want: "--snapshot-entries must be at least 1, got 0"},
		{args: serve, env: map[string]string{"KVNODE_SNAPSHOT_ENTRIES": "many"}, wantCode: exitUsage,
			want: `"many" as int value from environment variable "KVNODE_SNAPSHOT_ENTRIES"`},
		{args: append(slices.Clone(serve), "--snapshot-bytes", "64MB"), wantCode: exitUsage,
			want: `--snapshot-bytes: size "64MB": use a binary unit (KiB, MiB, GiB, TiB); MB is ambiguous`},
		{args: serve, env: map[string]string{"KVNODE_SNAPSHOT_BYTES": "0"}, wantCode: exitUsage, want: "--snapshot-bytes must be at least 1 byte, got 0"},
		{args: append(slices.Clone(serve), "--compaction-margin-entries", "-1"), wantCode: exitUsage,
			want: "--compaction-margin-entries must be at least 1, got -1"},
		{args: serve, env: map[string]string{"KVNODE_COMPACTION_MARGIN_ENTRIES": "0"}, wantCode: exitUsage,
			want: "--compaction-margin-entries must be at least 1, got 0"},
		{args: serve, env: map[string]string{"KVNODE_COMPACTION_MARGIN_BYTES": "lots"}, wantCode: exitUsage,
			want: `--compaction-margin-bytes: "lots" is not a size`},
		{args: append(slices.Clone(serve), "--snapshot-timeout", "0s"), wantCode: exitUsage, want: "--snapshot-timeout must be positive, got 0s"},
		{args: serve, env: map[string]string{"KVNODE_SNAPSHOT_TIMEOUT": "-5s"}, wantCode: exitUsage, want: "--snapshot-timeout must be positive, got -5s"},
		{args: serve, env: map[string]string{"KVNODE_MAX_SNAPSHOT_SENDS": "0"}, wantCode: exitUsage, want: "--max-snapshot-sends must be at least 1, got 0"},
		{args: append(slices.Clone(serve), "--snapshot-entries", "0", "--compaction-margin-bytes", "1.5MiB", "--snapshot-timeout", "0s"), wantCode: exitUsage,
			want: `--snapshot-entries must be at least 1, got 0; --compaction-margin-bytes: size "1.5MiB": want a whole number of a unit (1536KiB, not 1.5MiB); --snapshot-timeout must be positive, got 0s`},
		// Past flag validation, the node logs its configuration first.
		{args: append(slices.Clone(serve), "--metrics-listen", busy.Addr().String()), wantCode: exitFailure, logged: true,
			want: "--metrics-listen " + busy.Addr().String() + ": bind: address already in use"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, stdout, stderr := runCLI(t, tc.args...)
			if tc.logged {
				first, rest, _ := strings.Cut(stderr, "\n")
				if !strings.Contains(first, `msg="starting kvnode"`) {
					t.Errorf("first stderr line %q is not the startup log line", first)
				}
				stderr = rest
			}
			wantOneLineError(t, tc.args, code, stdout, stderr, tc.wantCode, tc.want)
		})
	}
}

func TestCLIHelp(t *testing.T) {
	code, stdout, stderr := runCLI(t, "--help")
	if code != exitOK || stderr != "" || !strings.Contains(stdout, "txn") {
		t.Fatalf("kvnode --help: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "serve", "--help")
	if code != exitOK || !strings.Contains(stdout, "KVNODE_PEER_TEMPLATE") {
		t.Fatalf("kvnode serve --help: exit %d, no env twin in %q", code, stdout)
	}
	if !strings.Contains(stdout, "snapshots") || !strings.Contains(stdout, `--snapshot-bytes SIZE`) ||
		!strings.Contains(stdout, `(default: "64MiB") [$KVNODE_SNAPSHOT_BYTES]`) {
		t.Fatalf("kvnode serve --help lacks the snapshots category or its size flag:\n%s", stdout)
	}
}

// freeAddr returns a loopback address nothing listens on (it was free a
// moment ago; the kernel does not hand it out again at once).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// fakeKV is an in-memory KV service: enough of the real one's behaviour
// to check what the CLI sends and prints. Range returns pages of at most
// pageSize pairs, to exercise scan's paging.
type fakeKV struct {
	kvpb.UnimplementedKVServer
	pageSize int

	mu    sync.Mutex
	data  map[string]string
	mods  map[string]uint64
	index uint64
	// failures are returned, in order, by the next calls.
	failures []error
	calls    int
}

func newFakeKV() *fakeKV {
	return &fakeKV{pageSize: 2, data: map[string]string{}, mods: map[string]uint64{}}
}

// errHang makes a call block until its context ends, like a member
// forwarding to a leader that died.
var errHang = errors.New("hang")

// fail returns the next injected failure, if any; it must be called
// without f.mu held.
func (f *fakeKV) fail(ctx context.Context) error {
	f.mu.Lock()
	f.calls++
	var err error
	if len(f.failures) > 0 {
		err = f.failures[0]
		f.failures = f.failures[1:]
	}
	f.mu.Unlock()
	if err == errHang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

func inSpan(k string, key, end []byte, prefix bool) bool {
	switch {
	case prefix:
		return strings.HasPrefix(k, string(key))
	case len(end) == 0:
		return k == string(key)
	case bytes.Equal(end, noUpperBound):
		return k >= string(key)
	default:
		return k >= string(key) && k < string(end)
	}
}

func (f *fakeKV) sortedKeys() []string {
	keys := make([]string, 0, len(f.data))
	for k := range f.data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (f *fakeKV) put(r *kvpb.PutRequest) *kvpb.PutResponse {
	f.index++
	f.data[string(r.Key)] = string(r.Value)
	f.mods[string(r.Key)] = f.index
	return &kvpb.PutResponse{Index: f.index}
}

func (f *fakeKV) del(r *kvpb.DeleteRequest) *kvpb.DeleteResponse {
	f.index++
	var n int64
	for _, k := range f.sortedKeys() {
		if inSpan(k, r.Key, r.RangeEnd, r.Prefix) {
			delete(f.data, k)
			delete(f.mods, k)
			n++
		}
	}
	return &kvpb.DeleteResponse{Index: f.index, Deleted: n}
}

func (f *fakeKV) rng(r *kvpb.RangeRequest) *kvpb.RangeResponse {
	resp := &kvpb.RangeResponse{}
	for _, k := range f.sortedKeys() {
		if !inSpan(k, r.Key, r.RangeEnd, r.Prefix) {
			continue
		}
		if r.CountOnly {
			resp.Count++
			continue
		}
		if (r.Limit > 0 && int64(len(resp.Kvs)) == r.Limit) || len(resp.Kvs) == f.pageSize {
			resp.More = true
			break
		}
		kv := &kvpb.KeyValue{Key: []byte(k), ModIndex: f.mods[k]}
		if !r.KeysOnly {
			kv.Value = []byte(f.data[k])
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	if !r.CountOnly {
		resp.Count = int64(len(resp.Kvs))
	}
	return resp
}

func (f *fakeKV) Put(ctx context.Context, r *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.put(r), nil
}

func (f *fakeKV) Get(ctx context.Context, r *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.data[string(r.Key)]
	if !ok {
		return &kvpb.GetResponse{}, nil
	}
	return &kvpb.GetResponse{Found: true, Kv: &kvpb.KeyValue{Key: r.Key, Value: []byte(v), ModIndex: f.mods[string(r.Key)]}}, nil
}

func (f *fakeKV) Delete(ctx context.Context, r *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.del(r), nil
}

func (f *fakeKV) Range(ctx context.Context, r *kvpb.RangeRequest) (*kvpb.RangeResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng(r), nil
}

func (f *fakeKV) Txn(ctx context.Context, r *kvpb.TxnRequest) (*kvpb.TxnResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ok := true
	for _, c := range r.Compare {
		v, exists := f.data[string(c.Key)]
		var holds bool
		switch c.Target {
		case kvpb.Compare_EXISTS:
			holds = exists == c.Exists
		case kvpb.Compare_VALUE:
			holds = exists && cmpHolds(strings.Compare(v, string(c.Value)), c.Result)
		case kvpb.Compare_MOD_INDEX:
			m := f.mods[string(c.Key)]
			holds = cmpHolds(compareUint(m, c.ModIndex), c.Result)
		}
		ok = ok && holds
	}
	ops := r.Success
	if !ok {
		ops = r.Failure
	}
	resp := &kvpb.TxnResponse{Succeeded: ok}
	for _, op := range ops {
		switch o := op.Op.(type) {
		case *kvpb.RequestOp_Put:
			resp.Responses = append(resp.Responses, &kvpb.ResponseOp{Op: &kvpb.ResponseOp_Put{Put: f.put(o.Put)}})
		case *kvpb.RequestOp_Delete:
			resp.Responses = append(resp.Responses, &kvpb.ResponseOp{Op: &kvpb.ResponseOp_Delete{Delete: f.del(o.Delete)}})
		case *kvpb.RequestOp_Range:
			resp.Responses = append(resp.Responses, &kvpb.ResponseOp{Op: &kvpb.ResponseOp_Range{Range: f.rng(o.Range)}})
		}
	}
	return resp, nil
}

func (f *fakeKV) Status(ctx context.Context, r *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	if err := f.fail(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	st := &kvpb.StatusResponse{MemberId: 1, Leader: 1, Term: 4, Role: "leader", CommitIndex: f.index, AppliedIndex: f.index, DbSizeBytes: 3 << 20}
	if r.Hash {
		st.Hash, st.HashIndex, st.HashKeys = 0xabc, f.index, uint64(len(f.data))
	}
	return st, nil
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpHolds(c int, r kvpb.Compare_Result) bool {
	switch r {
	case kvpb.Compare_EQUAL:
		return c == 0
	case kvpb.Compare_NOT_EQUAL:
		return c != 0
	case kvpb.Compare_LESS:
		return c < 0
	case kvpb.Compare_GREATER:
		return c > 0
	}
	return false
}

// startFakeKV serves f on a loopback port until the test ends.
func startFakeKV(t *testing.T, f *fakeKV) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	kvpb.RegisterKVServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

func TestCLIAgainstFakeServer(t *testing.T) {
	f := newFakeKV()
	ep := "--endpoints=" + freeAddr(t) + "," + startFakeKV(t, f) // the first endpoint is down
	steps := []struct {
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{args: []string{"put", "greeting", "hello"}, wantStdout: "OK\n"},
		{args: []string{"get", "greeting"}, wantStdout: "hello\n"},
		{args: []string{"get", "greeting", "--serializable"}, wantStdout: "hello\n"},
		{args: []string{"get", "missing"}, wantCode: exitFalse, wantStderr: "kvnode: get: key \"missing\" not found\n"},
		{args: []string{"put", "user/1", "ann"}, wantStdout: "OK\n"},
		{args: []string{"put", "user/2", "bob\tby"}, wantStdout: "OK\n"},
		{args: []string{"put", "user/3", "cy"}, wantStdout: "OK\n"},
		{args: []string{"put", "v", "a,b"}, wantStdout: "OK\n"},
		{args: []string{"get", "v"}, wantStdout: "a,b\n"},
		// Three keys, two per page: scan must continue after the first page.
		{args: []string{"scan", "--prefix", "user/"}, wantStdout: "user/1\tann\nuser/2\t\"bob\\tby\"\nuser/3\tcy\n"},
		{args: []string{"scan", "--prefix", "user/", "--keys-only"}, wantStdout: "user/1\nuser/2\nuser/3\n"},
		{args: []string{"scan", "--prefix", "user/", "--limit", "1"}, wantStdout: "user/1\tann\n"},
		{args: []string{"scan", "--prefix", "user/", "--count"}, wantStdout: "3\n"},
		{args: []string{"scan", "user/2"}, wantStdout: "user/2\t\"bob\\tby\"\nuser/3\tcy\nv\ta,b\n"},
		{args: []string{"scan", "greeting", "user/2"}, wantStdout: "greeting\thello\nuser/1\tann\n"},
		{args: []string{"scan", "--limit", "3"}, wantStdout: "greeting\thello\nuser/1\tann\nuser/2\t\"bob\\tby\"\n"},
		{args: []string{"txn", "--if", "value(greeting)=hello", "--then", "put greeting bye", "--else", "get greeting"},
			wantStdout: "SUCCEEDED\nOK\n"},
		{args: []string{"txn", "--if", "value(greeting)=hello", "--then", "put greeting bye", "--else", "get greeting"},
			wantCode: exitFalse, wantStdout: "FAILED\ngreeting\tbye\n"},
		{args: []string{"txn", "--if", "!exists(lock) && exists(greeting)", "--then", "put lock me", "--then", "del --prefix user/"},
			wantStdout: "SUCCEEDED\nOK\n3\n"},
		{args: []string{"txn", "--if", `value("v")="a,b"`, "--then", `put "two words" "x y"`}, wantStdout: "SUCCEEDED\nOK\n"},
		{args: []string{"get", "two words"}, wantStdout: "x y\n"},
		{args: []string{"del", "lock"}, wantStdout: "1\n"},
		{args: []string{"del", "lock"}, wantStdout: "0\n"},
		{args: []string{"del", "a", "w"}, wantStdout: "3\n"},
	}
	for _, s := range steps {
		code, stdout, stderr := runCLI(t, append(s.args, ep, "--timeout=5s")...)
		if code != s.wantCode || stdout != s.wantStdout || stderr != s.wantStderr {
			t.Errorf("kvnode %q: exit %d stdout %q stderr %q; want exit %d stdout %q stderr %q",
				s.args, code, stdout, stderr, s.wantCode, s.wantStdout, s.wantStderr)
		}
	}
}

// put takes its value from standard input (VALUE -) or a file (--file),
// byte for byte, up to the server's limit; a longer value is refused
// before anything is sent.
func TestCLIPutFromStdinAndFile(t *testing.T) {
	f := newFakeKV()
	ep := "--endpoints=" + startFakeKV(t, f)
	value := func(key string) string {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.data[key]
	}
	calls := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.calls
	}

	maximal := strings.Repeat("0123456789abcdef", kv.DefaultMaxValueBytes/16)
	for _, v := range []string{"line one\nline two\n", "\x00\xff binary\r\n", "", maximal} {
		if code, stdout, stderr := runCLIInput(t, strings.NewReader(v), "put", "k", "-", ep); code != exitOK || stdout != "OK\n" {
			t.Fatalf("put k - of %d bytes: exit %d stdout %q stderr %q", len(v), code, stdout, stderr)
		}
		if got := value("k"); got != v {
			t.Fatalf("put k - stored %d bytes, want %d", len(got), len(v))
		}
	}
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, []byte("from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, "put", "f", "--file", file, ep); code != exitOK || stdout != "OK\n" || value("f") != "from a file\n" {
		t.Fatalf("put --file: exit %d stdout %q stderr %q value %q", code, stdout, stderr, value("f"))
	}

	before := calls()
	over := strings.NewReader(maximal + "!")
	args := []string{"put", "k", "-", ep}
	code, stdout, stderr := runCLIInput(t, over, args...)
	wantOneLineError(t, args, code, stdout, stderr, exitUsage,
		"put: the value from standard input is over the server's limit of 1.0 MiB (1048576 bytes)")
	if err := os.WriteFile(file, []byte(maximal+"!"), 0o600); err != nil {
		t.Fatal(err)
	}
	args = []string{"put", "k", "--file", file, ep}
	code, stdout, stderr = runCLI(t, args...)
	wantOneLineError(t, args, code, stdout, stderr, exitUsage, "put: the value from "+file+" is over the server's limit of 1.0 MiB")
	if calls() != before {
		t.Errorf("an oversized value reached the server")
	}
}

// Connection refused at every endpoint fails the command at once with
// one line, instead of retrying until --timeout.
func TestCLIRefusedFailsFast(t *testing.T) {
	dead1, dead2 := freeAddr(t), freeAddr(t)
	for _, args := range [][]string{
		{"put", "k", "v"}, {"get", "k"}, {"txn", "--then", "put k v"}, {"snapshot", "save", filepath.Join(t.TempDir(), "b.rbak")},
	} {
		args = append(args, "--endpoints", dead1+","+dead2, "--timeout", "20s")
		start := time.Now()
		code, stdout, stderr := runCLI(t, args...)
		took := time.Since(start)
		wantOneLineError(t, args, code, stdout, stderr, exitFailure,
			"connection refused at every endpoint ("+dead1+", "+dead2+"): is the cluster running")
		// One round over the endpoints: milliseconds; the bound is
		// for a loaded machine, far below the 20 s timeout.
		if took > 5*time.Second {
			t.Errorf("kvnode %q took %v to fail", args, took)
		}
	}
}

// version prints the version, the commit and the Go version;
// readBuildVersion takes them from -ldflags or the binary's build
// information.
func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "version")
	lines := strings.Split(stdout, "\n")
	if code != exitOK || stderr != "" || len(lines) != 5 || !strings.HasPrefix(lines[0], "kvnode ") ||
		!strings.HasPrefix(lines[1], "commit:   ") || lines[2] != "go:       "+runtime.Version() ||
		lines[3] != "platform: "+runtime.GOOS+"/"+runtime.GOARCH {
		t.Fatalf("version: exit %d stderr %q stdout:\n%s", code, stderr, stdout)
	}

	info := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		name             string
		ldVersion, ldRev string
		info             *debug.BuildInfo
		want             buildVersion
		short            string
	}{
		{"build information", "", "", info,
			buildVersion{Version: "v0.3.0", Commit: "0123456789abcdef0123456789abcdef01234567", Time: "2026-01-02T03:04:05Z", Modified: true, GoVersion: "go1.99.1"},
			"v0.3.0 0123456789ab+ go1.99.1"},
		{"-ldflags win", "v1.0.0", "fedcba", info,
			buildVersion{Version: "v1.0.0", Commit: "fedcba", GoVersion: "go1.99.1"}, "v1.0.0 fedcba go1.99.1"},
		{"a source build without VCS stamp", "", "", &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "(devel)"}},
			buildVersion{Version: "(devel)", GoVersion: "go1.99.1"}, "(devel) go1.99.1"},
		{"no build information", "", "", nil, buildVersion{Version: "(devel)", GoVersion: runtime.Version()}, "(devel) " + runtime.Version()},
	} {
		got := readBuildVersion(tc.ldVersion, tc.ldRev, tc.info, tc.info != nil)
		tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
		if got != tc.want || got.short() != tc.short {
			t.Errorf("%s: %+v (%q), want %+v (%q)", tc.name, got, got.short(), tc.want, tc.short)
		}
	}
}

func TestCLIRetriesAndFailures(t *testing.T) {
	f := newFakeKV()
	addr := startFakeKV(t, f)
	inject := func(errs ...error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.failures, f.calls = errs, 0
	}
	calls := func() int {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.calls
	}
	ep := "--endpoints=" + addr

	// Unavailable (no leader, overload): retried until it works.
	inject(status.Error(codes.Unavailable, "write not applied, safe to retry: no leader"),
		status.Error(codes.Unavailable, "write not applied, safe to retry: no leader"))
	if code, stdout, stderr := runCLI(t, "put", "k", "v", ep); code != exitOK || stdout != "OK\n" || calls() != 3 {
		t.Errorf("put after two Unavailable: exit %d stdout %q stderr %q calls %d", code, stdout, stderr, calls())
	}
	// A transaction is retried after the server's own Unavailable...
	inject(status.Error(codes.Unavailable, "write not applied, safe to retry: leader changed"))
	if code, _, stderr := runCLI(t, "txn", "--then", "put a b", ep); code != exitOK || calls() != 2 {
		t.Errorf("txn after Unavailable: exit %d stderr %q calls %d", code, stderr, calls())
	}
	// ...but not when the connection broke after it may have been sent.
	inject(status.Error(codes.Unavailable, "error reading from server: EOF"))
	code, stdout, stderr := runCLI(t, "txn", "--then", "put a b", ep)
	wantOneLineError(t, []string{"txn"}, code, stdout, stderr, exitFailure, "unavailable: error reading from server: EOF")
	// Outcome unknown: a put is repeated (applying it twice does no harm)...
	inject(status.Error(codes.Aborted, "outcome unknown"))
	if code, _, stderr := runCLI(t, "put", "k", "v", ep); code != exitOK || calls() != 2 {
		t.Errorf("put after Aborted: exit %d stderr %q calls %d", code, stderr, calls())
	}
	// ...a transaction is reported, never repeated.
	inject(status.Error(codes.Aborted, "outcome unknown"))
	code, stdout, stderr = runCLI(t, "txn", "--then", "put a b", ep)
	wantOneLineError(t, []string{"txn"}, code, stdout, stderr, exitFailure, "aborted: outcome unknown (a write may or may not have been applied)")
	if calls() != 1 {
		t.Errorf("Aborted txn was tried %d times, want 1", calls())
	}
	// A stuck endpoint is abandoned after --attempt-timeout for a put...
	inject(errHang)
	if code, _, stderr := runCLI(t, "put", "k", "v", ep, "--attempt-timeout", "100ms"); code != exitOK || calls() != 2 {
		t.Errorf("put after a stuck attempt: exit %d stderr %q calls %d", code, stderr, calls())
	}
	// ...but a transaction waits: abandoning it would leave its outcome unknown.
	inject(errHang)
	code, stdout, stderr = runCLI(t, "txn", "--then", "put a b", ep, "--attempt-timeout", "100ms", "--timeout", "500ms")
	wantOneLineError(t, []string{"txn"}, code, stdout, stderr, exitFailure, "txn: timed out waiting for "+addr+": the write may or may not have been applied")
	// Bad input refused by the server is a usage error.
	inject(status.Error(codes.InvalidArgument, "invalid request: key is 5000 bytes, over the limit of 4096"))
	code, stdout, stderr = runCLI(t, "put", "k", "v", ep)
	wantOneLineError(t, []string{"put"}, code, stdout, stderr, exitUsage, "invalid argument: invalid request: key is 5000 bytes")
	// Reads retry on anything Unavailable, including a broken connection.
	inject(status.Error(codes.Unavailable, "error reading from server: EOF"))
	if code, _, stderr := runCLI(t, "get", "k", ep); code != exitOK {
		t.Errorf("get after a broken connection: exit %d stderr %q", code, stderr)
	}
}

func TestCLIStatus(t *testing.T) {
	f := newFakeKV()
	addr := startFakeKV(t, f)
	if code, _, stderr := runCLI(t, "put", "k", "v", "--endpoints", addr); code != exitOK {
		t.Fatalf("put: exit %d stderr %q", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "status", "--hash", "--endpoints", addr)
	if code != exitOK || stderr != "" {
		t.Fatalf("status: exit %d stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ENDPOINT") || !strings.Contains(lines[0], "DB SIZE") || !strings.Contains(lines[0], "HASH") {
		t.Fatalf("status table:\n%s", stdout)
	}
	if f := strings.Fields(lines[1]); len(f) != 12 || f[0] != addr || f[1] != "1" || f[2] != "leader" || f[7] != "3.0" || f[8] != "MiB" || f[9] != "0000000000000abc" {
		t.Fatalf("status row %q", lines[1])
	}

	// Rows of members that did not answer keep every column, so the
	// table stays aligned; why they did not answer follows it.
	dead := freeAddr(t)
	wrong := serveKV(t, &kvpb.UnimplementedKVServer{})
	code, stdout, stderr = runCLI(t, "status", "--endpoints", dead+","+addr+","+wrong, "--timeout", "1s")
	if code != exitFailure {
		t.Fatalf("status with a dead endpoint: exit %d stdout %q", code, stdout)
	}
	table, notes, _ := strings.Cut(stdout, "\n\n")
	lines = strings.Split(table, "\n")
	if len(lines) != 4 {
		t.Fatalf("status table:\n%s", stdout)
	}
	header := columnStarts(lines[0])
	for _, l := range lines[1:] {
		if got := columnStarts(l); !slices.Equal(got, header) {
			t.Errorf("row %q: columns start at %v, the header's at %v\n%s", l, got, header, table)
		}
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != dead+" - unreachable - - - - -" {
		t.Errorf("unreachable row %q", lines[1])
	}
	if f := strings.Fields(lines[3]); len(f) != 8 || f[2] != "error" {
		t.Errorf("row of a server without Status: %q", lines[3])
	}
	wantNotes := dead + ": unavailable: connection refused\n" + wrong + ": unimplemented: method Status not implemented\n"
	if notes != wantNotes {
		t.Errorf("notes under the table %q, want %q", notes, wantNotes)
	}
	if stderr != "kvnode: status: 2 of 3 endpoints did not answer\n" {
		t.Fatalf("status stderr %q", stderr)
	}
}

// columnStarts returns where each cell of a tabwriter row starts (cells
// are separated by two spaces or more; "DB SIZE" is one cell).
func columnStarts(row string) []int {
	var starts []int
	for _, loc := range regexp.MustCompile(`\S+(?: \S+)*`).FindAllStringIndex(row, -1) {
		starts = append(starts, loc[0])
	}
	return starts
}

// statusKV answers Status with a fixed response.
type statusKV struct {
	kvpb.UnimplementedKVServer
	resp *kvpb.StatusResponse
}

func (s *statusKV) Status(context.Context, *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	return s.resp, nil
}

// A member that answers with applied above commit (read a moment apart,
// see printStatus) has its row marked and the reason given.
func TestCLIStatusAppliedAboveCommit(t *testing.T) {
	ahead := serveKV(t, &statusKV{resp: &kvpb.StatusResponse{MemberId: 2, Leader: 1, Term: 3, Role: "follower", CommitIndex: 40, AppliedIndex: 41}})
	even := serveKV(t, &statusKV{resp: &kvpb.StatusResponse{MemberId: 1, Leader: 1, Term: 3, Role: "leader", CommitIndex: 41, AppliedIndex: 41}})
	code, stdout, stderr := runCLI(t, "status", "--endpoints", even+","+ahead)
	if code != exitOK || stderr != "" {
		t.Fatalf("status: exit %d stderr %q", code, stderr)
	}
	table, notes, _ := strings.Cut(stdout, "\n\n")
	lines := strings.Split(table, "\n")
	if f := strings.Fields(lines[1]); len(f) < 6 || f[4] != "41" || f[5] != "41" {
		t.Errorf("row without the mark: %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 6 || f[4] != "40" || f[5] != "41*" {
		t.Errorf("row with applied above commit: %q", lines[2])
	}
	if !strings.HasPrefix(notes, "* applied above commit: ") || !strings.Contains(notes, "its commit is at least its applied index") {
		t.Errorf("no explanation under the table: %q", notes)
	}
	// Without such a row, no note.
	_, stdout, _ = runCLI(t, "status", "--endpoints", even)
	if strings.Contains(stdout, "*") {
		t.Errorf("a note without a marked row:\n%s", stdout)
	}
}

func TestHealthCommand(t *testing.T) {
	ready := true
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("no leader known\n"))
			return
		}
		_, _ = w.Write([]byte("ok: leader 2, applied 7\n"))
	}))
	defer srv.Close()

	code, stdout, stderr := runCLI(t, "health", "--url", srv.URL+"/readyz")
	if code != exitOK || stdout != "ok: leader 2, applied 7\n" || stderr != "" {
		t.Fatalf("health: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	mu.Lock()
	ready = false
	mu.Unlock()
	args := []string{"health", "--url", srv.URL + "/readyz"}
	code, stdout, stderr = runCLI(t, args...)
	wantOneLineError(t, args, code, stdout, stderr, exitFailure, "/readyz: 503 Service Unavailable: no leader known")
}

func TestMetricsEndpoints(t *testing.T) {
	r := &readiness{node: &nodeRef{}}
	reg := newRegistry()
	reg.MustRegister(newStatusCollector(r.node))
	srv := httptest.NewServer(newMetricsMux(reg, r, discardLogger(), false))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "starting\n" {
		t.Errorf("/readyz before the node runs: %d %q", code, body)
	}
	r.stopping.Store(true)
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "shutting down\n" {
		t.Errorf("/readyz while stopping: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d, no Go metrics", code)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestServeSnapshotFlags: a node started with a small --snapshot-entries
// and --compaction-margin-entries snapshots and compacts its log as they
// say. The flags are given through their environment twins, which the
// node processes inherit, so startCluster serves unchanged.
func TestServeSnapshotFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end snapshot test in -short mode")
	}
	const every, margin, writes = 100, 10, 300
	t.Setenv(envName(flagSnapshotEntries), strconv.Itoa(every))
	t.Setenv(envName(flagCompactionMarginEntries), strconv.Itoa(margin))
	kvnodeBinary(t) // built once per run; not part of what is timed below
	start := time.Now()
	c := startCluster(t, 1)
	n := c.nodes[0]
	logs, _ := os.ReadFile(n.log)
	first, _, _ := strings.Cut(string(logs), "\n")
	if !strings.Contains(first, fmt.Sprintf("snapshot_entries=%d", every)) ||
		!strings.Contains(first, fmt.Sprintf("compaction_margin_entries=%d", margin)) {
		t.Fatalf("startup log line does not show the snapshot policy: %q", first)
	}
	t.Logf("node ready after %v", time.Since(start))

	start = time.Now()
	cl := c.client(t)
	for i := range writes {
		if err := put(cl, fmt.Sprintf("k/%03d", i), strconv.Itoa(i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	t.Logf("%d writes took %v", writes, time.Since(start))

	// Each sync of the store (every snapshot-entries applied) is followed
	// by a compaction to the margin below the synced index (the byte
	// margin, 16 MiB by default, is far from binding here). No snapshot
	// is written: kv is a driver.Syncer and no follower needs one. With
	// the default policy no compaction would have happened yet.
	start = time.Now()
	var m map[string]float64
	waitFor(t, 5*time.Second, "a compaction margin entries below the synced index", func() bool {
		m = scrapeMetrics(n)
		return m["rafty_driver_compactions_total"] >= 1 &&
			m["rafty_driver_compacted_index"] >= every-margin && m["rafty_driver_snapshots_total"] == 0
	})
	t.Logf("after %v: %v snapshots, %v compactions, log compacted to %v", time.Since(start),
		m["rafty_driver_snapshots_total"], m["rafty_driver_compactions_total"], m["rafty_driver_compacted_index"])
}

// scrapeMetrics returns the unlabelled samples n's /metrics exposes, by
// name; an empty map if it does not answer.
func scrapeMetrics(n *node) map[string]float64 {
	samples := map[string]float64{}
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + n.metrics + "/metrics")
	if err != nil {
		return samples
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			samples[f[0]] = v
		}
	}
	return samples
}
