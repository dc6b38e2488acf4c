package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv"
	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
)

// testBackupKeys, testBackupTerm and testBackupVoters describe the backup
// writeTestBackup makes: one put per index, so its index is the key count.
const (
	testBackupKeys = 500
	testBackupTerm = 3
)

var testBackupVoters = []uint64{1, 2, 3}

// writeTestBackup writes to dir/name a backup of a store holding
// testBackupKeys keys, made without a cluster (the driver's WriteBackup
// over the store's snapshot source, as Node.Backup does), and returns its
// path and the store's hash.
func writeTestBackup(t *testing.T, dir, name string) (string, kv.HashResult) {
	t.Helper()
	st, err := kv.OpenStore(t.TempDir(), kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var cmds []driver.Command
	for i := range testBackupKeys {
		data, err := proto.Marshal(&kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.PutRequest{
			Key: fmt.Appendf(nil, "key/%04d", i), Value: fmt.Appendf(nil, "value %d %s", i, strings.Repeat("x", i%97)),
		}}})
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, driver.Command{Index: uint64(i + 1), Data: data})
	}
	if _, err := st.Apply(cmds); err != nil {
		t.Fatal(err)
	}
	src, err := st.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var buf bytes.Buffer
	meta := core.SnapshotMeta{Index: testBackupKeys, Term: testBackupTerm, Membership: core.Membership{Voters: testBackupVoters}}
	if err := driver.WriteBackup(context.Background(), &buf, meta, src); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := st.Hash(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return path, h
}

// testPeers is a --peers value for restores that start no server.
const testPeers = "4=127.0.0.1:7004,5=127.0.0.1:7005,6=127.0.0.1:7006"

// A backup file is inspected and restored offline into a data directory
// that then holds exactly the backed-up data, at the backup's index, with
// the membership of --peers (not the backup's).
func TestSnapshotInspectAndRestore(t *testing.T) {
	base := t.TempDir()
	file, want := writeTestBackup(t, base, "b.rbak")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()

	code, stdout, stderr := runCLI(t, "snapshot", "inspect", file)
	wantOut := fmt.Sprintf("%s: index %d, term %d, members 1,2,3, %d bytes, checksums OK\n", file, testBackupKeys, testBackupTerm, size)
	if code != exitOK || stdout != wantOut || stderr != "" {
		t.Fatalf("inspect: exit %d stdout %q stderr %q; want %q", code, stdout, stderr, wantOut)
	}

	// Into a directory that does not exist yet, and into a volume's
	// mount point, empty but for lost+found.
	mount := filepath.Join(base, "mount")
	if err := os.MkdirAll(filepath.Join(mount, lostFound), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{filepath.Join(base, "new", "member5"), mount} {
		code, stdout, stderr := runCLI(t, "snapshot", "restore", file, "--id", "5", "--peers", testPeers, "--data-dir", dir)
		prefix := fmt.Sprintf("restored %s into %s as member 5: index %d, term %d, members 4,5,6, %d bytes, ", file, dir, testBackupKeys, testBackupTerm, size)
		if code != exitOK || !strings.HasPrefix(stdout, prefix) || strings.Count(stdout, "\n") != 1 || stderr != "" {
			t.Fatalf("restore into %s: exit %d stdout %q stderr %q; want a line starting %q", dir, code, stdout, stderr, prefix)
		}

		// What serve will open: the same opener, as serve calls it.
		wal, st, err := openStorage(&serveConfig{DataDir: dir}, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		hs, snap, err := wal.InitialState()
		if err != nil {
			t.Fatal(err)
		}
		got, err := st.Hash(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = st.Close()
		_ = wal.Close()
		if hs.Commit != testBackupKeys || hs.Term != testBackupTerm || snap.Index != testBackupKeys ||
			!slices.Equal(snap.Membership.Voters, []uint64{4, 5, 6}) {
			t.Errorf("%s: hard state %+v, snapshot %+v", dir, hs, snap)
		}
		if got != want {
			t.Errorf("%s: restored store %+v, backed-up store %+v", dir, got, want)
		}
	}
}

// backupKV serves a canned Backup stream: data in small messages, then
// the metadata; or only the first failAfter bytes and then Unavailable;
// or nothing until the client gives up (hang).
type backupKV struct {
	kvpb.UnimplementedKVServer
	data      []byte
	failAfter int
	hang      bool
}

func (b *backupKV) Backup(_ *kvpb.BackupRequest, s kvpb.KV_BackupServer) error {
	if b.hang {
		<-s.Context().Done()
		return status.FromContextError(s.Context().Err()).Err()
	}
	data := b.data
	if b.failAfter > 0 {
		data = data[:b.failAfter]
	}
	for len(data) > 0 {
		k := min(len(data), 4096)
		if err := s.Send(&kvpb.BackupResponse{Data: data[:k]}); err != nil {
			return err
		}
		data = data[k:]
	}
	if b.failAfter > 0 {
		return status.Error(codes.Unavailable, "member stopping")
	}
	return s.Send(&kvpb.BackupResponse{
		Header: &kvpb.ResponseHeader{MemberId: 2},
		Meta: &kvpb.BackupMeta{Index: testBackupKeys, Term: testBackupTerm, Voters: testBackupVoters,
			SizeBytes: uint64(len(b.data))},
	})
}

// serveKV serves srv on a loopback port until the test ends.
func serveKV(t *testing.T, srv kvpb.KVServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	kvpb.RegisterKVServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return lis.Addr().String()
}

// Save against servers that send a good backup, a damaged one, half of
// one, or nothing: FILE appears only with a verified backup, and no
// FILE.tmp is ever left behind.
func TestSnapshotSaveStreams(t *testing.T) {
	base := t.TempDir()
	good, _ := writeTestBackup(t, base, "good.rbak")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x10
	dead := freeAddr(t)

	// The first endpoint is down: save moves on to the second.
	out := filepath.Join(base, "saved.rbak")
	ep := dead + "," + serveKV(t, &backupKV{data: data})
	code, stdout, stderr := runCLI(t, "snapshot", "save", out, "--endpoints", ep)
	line := regexp.MustCompile(`^saved ` + regexp.QuoteMeta(out) + `: index 500, term 3, members 1,2,3, ` +
		strconv.Itoa(len(data)) + ` bytes, \S+ \(from member 2 at 127\.0\.0\.1:\d+\)\n$`)
	if code != exitOK || !line.MatchString(stdout) || stderr != "" {
		t.Fatalf("save: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("saved file differs from the stream (%v)", err)
	}
	// --force replaces it.
	if code, _, stderr := runCLI(t, "snapshot", "save", out, "--force", "--endpoints", ep); code != exitOK {
		t.Fatalf("save --force: exit %d stderr %q", code, stderr)
	}

	for _, tc := range []struct {
		name string
		srv  kvpb.KVServer
		args []string
		want string
	}{
		{"damaged", &backupKV{data: flipped}, nil, "does not verify, nothing saved: "},
		{"broken off", &backupKV{data: data, failAfter: 10000}, nil,
			"the transfer broke off after 10000 bytes: unavailable: member stopping; nothing was saved, run the command again"},
		{"silent", &backupKV{hang: true}, []string{"--attempt-timeout", "100ms", "--timeout", "500ms"},
			"snapshot save: timed out: no endpoint could answer: "},
		{"a server without backups", &kvpb.UnimplementedKVServer{}, nil, "unimplemented: method Backup not implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "b.rbak")
			args := append([]string{"snapshot", "save", file, "--endpoints", serveKV(t, tc.srv)}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			wantOneLineError(t, args, code, stdout, stderr, exitFailure, tc.want)
			assertNoFile(t, file)
			assertNoFile(t, file+".tmp")
		})
	}
}

// assertNoFile fails the test if path exists.
func assertNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil || !os.IsNotExist(err) {
		t.Errorf("%s exists (or cannot be checked: %v); want it absent", path, err)
	}
}

// Every bad input exits non-zero with one readable line and loses
// nothing: an existing FILE keeps its bytes, no FILE.tmp is left, a data
// directory is left as it was found.
func TestSnapshotBadInput(t *testing.T) {
	base := t.TempDir()
	good, _ := writeTestBackup(t, base, "good.rbak")
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	truncated := write("truncated.rbak", data[:len(data)/2])
	headless := write("headless.rbak", data[:10])
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x10
	corrupt := write("flipped.rbak", flipped)
	notBackup := write("notes.txt", []byte("shopping list: eggs, milk, flour\n"))
	precious := write("precious.rbak", []byte("an older backup"))
	missing := filepath.Join(base, "missing.rbak")
	used := filepath.Join(base, "used")
	if err := os.MkdirAll(filepath.Join(used, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	mount := filepath.Join(base, "mount") // empty but for lost+found: restorable
	if err := os.MkdirAll(filepath.Join(mount, lostFound), 0o700); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(base, "fresh") // never created
	dead := freeAddr(t)
	restore := func(file, dir string) []string {
		return []string{"snapshot", "restore", file, "--id", "1", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002", "--data-dir", dir}
	}

	for _, tc := range []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"snapshot", "frob"}, exitUsage, `unknown command "snapshot frob" (want save, inspect or restore)`},
		{[]string{"snapshot", "save"}, exitUsage, "usage: kvnode snapshot save FILE (got 0 arguments)"},
		{[]string{"snapshot", "save", "a", "b"}, exitUsage, "(got 2 arguments)"},
		{[]string{"snapshot", "save", ""}, exitUsage, "FILE must not be empty"},
		{[]string{"snapshot", "save", fresh, "--transfer-timeout", "0s"}, exitUsage, "--transfer-timeout must be positive"},
		{[]string{"snapshot", "save", fresh, "--endpoints", "nohost"}, exitUsage, `--endpoints: address "nohost" is not HOST:PORT`},
		{[]string{"snapshot", "save", precious, "--endpoints", dead}, exitFailure,
			"snapshot save: " + precious + " exists; pass --force to replace it"},
		{[]string{"snapshot", "save", base, "--force", "--endpoints", dead}, exitFailure, base + " is a directory"},
		{[]string{"snapshot", "save", precious, "--force", "--endpoints", dead}, exitFailure,
			"snapshot save: connection refused at every endpoint (" + dead + "): is the cluster running"},
		{[]string{"snapshot", "inspect"}, exitUsage, "usage: kvnode snapshot inspect FILE (got 0 arguments)"},
		{[]string{"snapshot", "inspect", missing}, exitFailure, "snapshot inspect: " + missing + ": no such file or directory"},
		{[]string{"snapshot", "inspect", base}, exitFailure, base + " is a directory, want a backup file"},
		{[]string{"snapshot", "inspect", truncated}, exitFailure,
			"snapshot inspect: " + truncated + ": driver: bad backup stream: data truncated after "},
		{[]string{"snapshot", "inspect", headless}, exitFailure, headless + ": driver: bad backup stream: reading the header: unexpected EOF"},
		{[]string{"snapshot", "inspect", corrupt}, exitFailure, corrupt + ": driver: bad backup stream: data checksum mismatch"},
		{[]string{"snapshot", "inspect", notBackup}, exitFailure, `not a Rafty backup (magic "shopping")`},
		{[]string{"snapshot", "restore"}, exitUsage, "usage: kvnode snapshot restore FILE --id N"},
		{[]string{"snapshot", "restore", good, "--data-dir", fresh}, exitUsage, "no members: give --peers"},
		{[]string{"snapshot", "restore", good, "--id", "3", "--peers", "1=127.0.0.1:7001", "--data-dir", fresh}, exitUsage,
			"this node's ID 3 is not a member (members: 1)"},
		{restore(missing, fresh), exitFailure, "snapshot restore: " + missing + ": no such file or directory"},
		{restore(truncated, fresh), exitFailure, "snapshot restore: " + truncated + ": driver: bad backup stream: data truncated after "},
		{restore(corrupt, fresh), exitFailure, "data checksum mismatch"},
		{restore(notBackup, fresh), exitFailure, "not a Rafty backup"},
		{restore(corrupt, mount), exitFailure, "data checksum mismatch"},
		{restore(good, used), exitFailure, "snapshot restore: --data-dir " + used + " is not empty (it holds raft): a restore only seeds a new member"},
		{restore(good, precious), exitFailure, "--data-dir: " + precious + ": not a directory"},
	} {
		t.Run(strings.ReplaceAll(strings.Join(tc.args, " "), base+string(filepath.Separator), ""), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			wantOneLineError(t, tc.args, code, stdout, stderr, tc.wantCode, tc.want)

			if b, err := os.ReadFile(precious); err != nil || string(b) != "an older backup" {
				t.Errorf("%s was changed: %q %v", precious, b, err)
			}
			if b, err := os.ReadFile(good); err != nil || !bytes.Equal(b, data) {
				t.Errorf("%s was changed (%v)", good, err)
			}
			assertNoFile(t, precious+".tmp")
			assertNoFile(t, fresh)
			assertNoFile(t, fresh+".tmp")
			if names := dirNames(t, used); !slices.Equal(names, []string{"raft"}) {
				t.Errorf("%s holds %v after the failure, want only raft", used, names)
			}
			if names := dirNames(t, mount); !slices.Equal(names, []string{lostFound}) {
				t.Errorf("%s holds %v after the failure, want only %s", mount, names, lostFound)
			}
		})
	}
}

// dirNames lists a directory's entries.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// txnOps writes ops in one transaction (no conditions: idempotent, so
// retried like a put).
func txnOps(t *testing.T, cl *kvClient, ops []*kvpb.RequestOp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cl.call(ctx, idempotentRetry, func(ctx context.Context, kv kvpb.KVClient) error {
		_, err := kv.Txn(ctx, &kvpb.TxnRequest{Success: ops})
		return err
	})
	if err != nil {
		t.Fatalf("txn of %d operations: %v", len(ops), err)
	}
}

// backupWorkload writes 2,000 keys, overwrites every third, deletes every
// seventh one by one and a range of 50 at once, and returns what the
// cluster must then hold.
func backupWorkload(t *testing.T, cl *kvClient) map[string]string {
	t.Helper()
	const keys, batch = 2000, 100 // kv's MaxTxnOps is 128
	model := map[string]string{}
	key := func(i int) string { return fmt.Sprintf("k/%04d", i) }
	var ops []*kvpb.RequestOp
	flush := func() {
		if len(ops) > 0 {
			txnOps(t, cl, ops)
			ops = nil
		}
	}
	add := func(op *kvpb.RequestOp) {
		ops = append(ops, op)
		if len(ops) == batch {
			flush()
		}
	}
	put := func(k, v string) {
		model[k] = v
		add(&kvpb.RequestOp{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}})
	}
	for i := range keys {
		put(key(i), fmt.Sprintf("first %d", i))
	}
	for i := 0; i < keys; i += 3 {
		put(key(i), fmt.Sprintf("second %d", i))
	}
	for i := 0; i < keys; i += 7 {
		delete(model, key(i))
		add(&kvpb.RequestOp{Op: &kvpb.RequestOp_Delete{Delete: &kvpb.DeleteRequest{Key: []byte(key(i))}}})
	}
	flush()
	// A range delete, through the CLI's own path.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cl.call(ctx, idempotentRetry, func(ctx context.Context, kv kvpb.KVClient) error {
		_, err := kv.Delete(ctx, &kvpb.DeleteRequest{Key: []byte(key(1900)), RangeEnd: []byte(key(1950))})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1900; i < 1950; i++ {
		delete(model, key(i))
	}
	return model
}

// dumpAll lists every pair through cl as scan prints them.
func dumpAll(t *testing.T, cl *kvClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := scan(ctx, cl, &out, span{prefix: true}, scanOptions{}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// modelDump renders a model as dumpAll prints the cluster.
func modelDump(model map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range model {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%s\t%s\n", k, model[k])
	}
	return b.String()
}

// awaitSameHash waits until every member of c reports the same hash of
// its key space at the same applied index, and returns one's status.
func awaitSameHash(t *testing.T, c *e2eCluster) *kvpb.StatusResponse {
	t.Helper()
	var first *kvpb.StatusResponse
	waitFor(t, 20*time.Second, "every member to hold the same data", func() bool {
		first = nil
		for _, n := range c.nodes {
			st, err := c.status(n, true)
			if err != nil {
				return false
			}
			if first == nil {
				first = st
			} else if st.GetHash() != first.GetHash() || st.GetHashIndex() != first.GetHashIndex() {
				return false
			}
		}
		return true
	})
	return first
}

// A backup saved from a live three-process cluster seeds a new cluster on
// other ports and directories, through the CLI binary: every key reads
// back as it was, the hashes match the old cluster's at the backup's
// index, and the new cluster takes writes.
func TestSnapshotEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end backup test in -short mode")
	}
	old := startCluster(t, 3)
	model := backupWorkload(t, old.client(t))
	before := awaitSameHash(t, old)
	if before.GetHashKeys() != uint64(len(model)) {
		t.Fatalf("the cluster holds %d keys, the model %d", before.GetHashKeys(), len(model))
	}

	file := filepath.Join(t.TempDir(), "cluster.rbak")
	eps := "--endpoints=" + old.endpoints()
	code, stdout, stderr := old.cli(t, "snapshot", "save", file, eps)
	m := regexp.MustCompile(`^saved \S+: index (\d+), term (\d+), members 1,2,3, (\d+) bytes, \S+ \(from member \d at \S+\)\n$`).FindStringSubmatch(stdout)
	if code != exitOK || m == nil || stderr != "" {
		t.Fatalf("snapshot save: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	t.Logf("%s", strings.TrimSpace(stdout))
	index, term, size := m[1], m[2], m[3]
	// Nothing was written after the hashes agreed: the backup is at
	// their index.
	if index != strconv.FormatUint(before.GetHashIndex(), 10) {
		t.Fatalf("backup at index %s, the members' hashes at %d", index, before.GetHashIndex())
	}
	saved, err := os.ReadFile(file)
	if err != nil || strconv.Itoa(len(saved)) != size {
		t.Fatalf("%s: %d bytes, the save reported %s (%v)", file, len(saved), size, err)
	}
	old.mustCLI(t, exitOK, fmt.Sprintf("%s: index %s, term %s, members 1,2,3, %s bytes, checksums OK\n", file, index, term, size),
		"snapshot", "inspect", file)
	// A second save does not replace the first.
	code, stdout, stderr = old.cli(t, "snapshot", "save", file, eps)
	wantOneLineError(t, []string{"snapshot", "save", file}, code, stdout, stderr, exitFailure, "exists; pass --force to replace it")
	if again, _ := os.ReadFile(file); !bytes.Equal(again, saved) {
		t.Fatal("a refused save changed the existing backup")
	}
	for _, n := range old.nodes {
		n.kill()
	}

	// The new cluster: its own ports and directories, laid out and
	// started by startCluster, then stopped and wiped, so each member is
	// restored into a directory that does not exist.
	nc := startCluster(t, 3)
	for _, n := range nc.nodes {
		n.kill()
	}
	code, stdout, stderr = nc.cli(t, "snapshot", "restore", file, "--id", "1", "--peers", nc.peers, "--data-dir", nc.nodes[0].dir)
	wantOneLineError(t, []string{"snapshot", "restore"}, code, stdout, stderr, exitFailure, "is not empty")
	for _, n := range nc.nodes {
		if err := os.RemoveAll(n.dir); err != nil {
			t.Fatal(err)
		}
		prefix := fmt.Sprintf("restored %s into %s as member %d: index %s, term %s, members 1,2,3, %s bytes, ", file, n.dir, n.id, index, term, size)
		code, stdout, stderr := nc.cli(t, "snapshot", "restore", file, "--id", strconv.Itoa(n.id), "--peers", nc.peers, "--data-dir", n.dir)
		if code != exitOK || !strings.HasPrefix(stdout, prefix) || stderr != "" {
			t.Fatalf("restore of member %d: exit %d stdout %q stderr %q; want a line starting %q", n.id, code, stdout, stderr, prefix)
		}
	}
	for _, n := range nc.nodes {
		nc.start(t, n)
	}
	for _, n := range nc.nodes {
		nc.waitReady(t, n, 20*time.Second)
	}

	want := modelDump(model)
	for _, n := range nc.nodes {
		if got := dumpAll(t, nc.client(t, n)); got != want {
			t.Fatalf("member %d holds %d lines of data, want %d:\n%s", n.id, strings.Count(got, "\n"), len(model), firstDiff(got, want))
		}
	}
	after := awaitSameHash(t, nc)
	if after.GetHash() != before.GetHash() || after.GetHashKeys() != before.GetHashKeys() {
		t.Fatalf("restored cluster: hash %016x over %d keys; backed-up cluster: %016x over %d keys",
			after.GetHash(), after.GetHashKeys(), before.GetHash(), before.GetHashKeys())
	}
	if after.GetHashIndex() < before.GetHashIndex() {
		t.Fatalf("restored cluster at index %d, below the backup's %d", after.GetHashIndex(), before.GetHashIndex())
	}
	deleted := "k/0007"
	ncEps := "--endpoints=" + nc.endpoints()
	code, _, stderr = nc.cli(t, "get", deleted, ncEps)
	if code != exitFalse {
		t.Fatalf("get of deleted key %s on the restored cluster: exit %d stderr %q", deleted, code, stderr)
	}
	nc.mustCLI(t, exitOK, "OK\n", "put", "after-restore", "yes", ncEps)
	nc.mustCLI(t, exitOK, "yes\n", "get", "after-restore", ncEps)
	nc.mustCLI(t, exitOK, "second 3\n", "get", "k/0003", ncEps)
}

// firstDiff shows where two dumps first differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d: got %q, want %q", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("one is a prefix of the other (%d and %d lines)", len(g), len(w))
}
