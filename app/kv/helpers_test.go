package kv

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv/kvpb"
	"github.com/rafty-db/rafty/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openStore opens a store in a fresh temporary directory, closed when the
// test ends.
func openStore(t testing.TB, opts Options) *Store {
	t.Helper()
	return openStoreIn(t, t.TempDir(), opts)
}

func openStoreIn(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := OpenStore(dir, opts)
	if err != nil {
		t.Fatalf("OpenStore: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func encode(t testing.TB, c *kvpb.Command) []byte {
	t.Helper()
	b, err := proto.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Command builders.

func putCmd(k, v string) *kvpb.Command {
	return &kvpb.Command{Op: &kvpb.Command_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func delCmd(d *kvpb.DeleteRequest) *kvpb.Command {
	return &kvpb.Command{Op: &kvpb.Command_Delete{Delete: d}}
}

func txnCmd(t *kvpb.TxnRequest) *kvpb.Command { return &kvpb.Command{Op: &kvpb.Command_Txn{Txn: t}} }

func opPutReq(k, v string) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func opRangeReq(r *kvpb.RangeRequest) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Range{Range: r}}
}

func opDelReq(d *kvpb.DeleteRequest) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Delete{Delete: d}}
}

// apply applies cmds at consecutive indexes from first and returns the
// results; it fails the test on an Apply error.
func apply(t testing.TB, s *Store, first uint64, cmds ...*kvpb.Command) []any {
	t.Helper()
	dc := make([]driver.Command, len(cmds))
	for i, c := range cmds {
		dc[i] = driver.Command{Index: first + uint64(i), Data: encode(t, c)}
	}
	res, err := s.Apply(dc)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(res) != len(cmds) {
		t.Fatalf("Apply returned %d results for %d commands", len(res), len(cmds))
	}
	return res
}

// entry is a stored pair, for comparing states.
type entry struct {
	value string
	mod   uint64
}

// dump returns the store's whole user keyspace.
func dump(t testing.TB, s *Store) map[string]entry {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[string]entry{}
	err := scanUser(s.db, func(k, stored []byte) error {
		mod, v, err := decodeValue(stored)
		if err != nil {
			return err
		}
		out[string(k)] = entry{string(v), mod}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

func keysOf(m map[string]entry) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func mustHash(t testing.TB, s *Store) HashResult {
	t.Helper()
	h, err := s.Hash(context.Background())
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return h
}

func mustApplied(t testing.TB, s *Store) uint64 {
	t.Helper()
	a, err := s.Applied()
	if err != nil {
		t.Fatalf("Applied: %v", err)
	}
	return a
}

// cmdErr asserts that res is a *CommandError matching target.
func cmdErr(t testing.TB, res any, target error) *CommandError {
	t.Helper()
	ce, ok := res.(*CommandError)
	if !ok {
		t.Fatalf("result %T (%v), want *CommandError", res, res)
	}
	if !errors.Is(ce, target) {
		t.Fatalf("result %v does not match %v", ce, target)
	}
	return ce
}

func kvString(kvs []*kvpb.KeyValue) string {
	var b bytes.Buffer
	for i, kv := range kvs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.Write(kv.Key)
		if len(kv.Value) > 0 {
			b.WriteByte('=')
			b.Write(kv.Value)
		}
	}
	return b.String()
}
