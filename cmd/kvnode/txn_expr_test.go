package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

func cmpValue(key string, r kvpb.Compare_Result, v string) *kvpb.Compare {
	return &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_VALUE, Result: r, Value: []byte(v)}
}

func cmpMod(key string, r kvpb.Compare_Result, idx uint64) *kvpb.Compare {
	return &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_MOD_INDEX, Result: r, ModIndex: idx}
}

func cmpExists(key string, exists bool) *kvpb.Compare {
	return &kvpb.Compare{Key: []byte(key), Target: kvpb.Compare_EXISTS, Result: kvpb.Compare_EQUAL, Exists: exists}
}

func TestParseConditions(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []*kvpb.Compare
		wantErr string
	}{
		{in: "value(k)=old", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_EQUAL, "old")}},
		{in: " value ( k ) == old ", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_EQUAL, "old")}},
		{in: "value(k)!=old", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_NOT_EQUAL, "old")}},
		{in: "value(k)<m", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_LESS, "m")}},
		{in: "value(k)>m", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_GREATER, "m")}},
		{in: `value("my key")="two words"`, want: []*kvpb.Compare{cmpValue("my key", kvpb.Compare_EQUAL, "two words")}},
		{in: `value(k)=""`, want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_EQUAL, "")}},
		{in: `value("a=b")="x\x00y"`, want: []*kvpb.Compare{cmpValue("a=b", kvpb.Compare_EQUAL, "x\x00y")}},
		{in: "value(user/1)=a,b", want: []*kvpb.Compare{cmpValue("user/1", kvpb.Compare_EQUAL, "a,b")}},
		{in: "value(k)=é", want: []*kvpb.Compare{cmpValue("k", kvpb.Compare_EQUAL, "é")}},
		{in: "mod(k)=42", want: []*kvpb.Compare{cmpMod("k", kvpb.Compare_EQUAL, 42)}},
		{in: "mod(k)<7", want: []*kvpb.Compare{cmpMod("k", kvpb.Compare_LESS, 7)}},
		{in: "exists(k)", want: []*kvpb.Compare{cmpExists("k", true)}},
		{in: "!exists(lock)", want: []*kvpb.Compare{cmpExists("lock", false)}},
		{in: "! exists (lock)", want: []*kvpb.Compare{cmpExists("lock", false)}},
		{in: "mod(cfg)=42 && value(mode)!=frozen && !exists(x)", want: []*kvpb.Compare{
			cmpMod("cfg", kvpb.Compare_EQUAL, 42), cmpValue("mode", kvpb.Compare_NOT_EQUAL, "frozen"), cmpExists("x", false)}},

		{in: "", wantErr: "expected value(KEY), mod(KEY) or exists(KEY), got end of condition"},
		{in: "k=v", wantErr: `unknown function "k" (want value, mod or exists)`},
		{in: "val(k)=v", wantErr: `unknown function "val"`},
		{in: "value k = v", wantErr: `expected ( after value, got "k"`},
		{in: "value(k=v", wantErr: `expected ) after the key, got "="`},
		{in: "value()=v", wantErr: `expected a key in value(...), got ")"`},
		{in: `value("")=v`, wantErr: "the key in value(...) must not be empty"},
		{in: "value(k)", wantErr: "expected =, !=, < or > after value(k), got end of condition"},
		{in: "value(k)=", wantErr: `expected a value after =, got end of condition (write an empty value as "")`},
		{in: "value(k)<=v", wantErr: "operator <= is not supported"},
		{in: "value(k)>=v", wantErr: "operator >= is not supported"},
		{in: "value(k)=a=b", wantErr: `unexpected "=" (join conditions with &&)`},
		{in: "value(k)=a b", wantErr: `unexpected "b" (join conditions with &&)`},
		{in: "value(k)=a & value(j)=b", wantErr: "a single '&'"},
		{in: "value(k)=a &&", wantErr: "got end of condition"},
		{in: `value(k)="open`, wantErr: "unterminated string"},
		{in: `value(k)="bad\q"`, wantErr: "bad escape"},
		{in: "mod(k)=x", wantErr: `mod(k) compares with a log index, a non-negative integer, got "x"`},
		{in: "mod(k)=-1", wantErr: "non-negative integer"},
		{in: "!value(k)=v", wantErr: "'!' applies only to exists(KEY)"},
		{in: "exists(k)=true", wantErr: `unexpected "="`},
	} {
		got, err := parseConditions(tc.in)
		if !matchErr(t, tc.in, err, tc.wantErr) {
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("parseConditions(%q) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if !proto.Equal(got[i], tc.want[i]) {
				t.Errorf("parseConditions(%q)[%d] = %v, want %v", tc.in, i, got[i], tc.want[i])
			}
		}
	}
}

func putOp(k, v string) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
}

func rangeOp(r *kvpb.RangeRequest) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Range{Range: r}}
}

func delOp(d *kvpb.DeleteRequest) *kvpb.RequestOp {
	return &kvpb.RequestOp{Op: &kvpb.RequestOp_Delete{Delete: d}}
}

func TestParseOp(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    *kvpb.RequestOp
		wantErr string
	}{
		{in: "put k new", want: putOp("k", "new")},
		{in: "  put   k   new  ", want: putOp("k", "new")},
		{in: `put "my key" "two words"`, want: putOp("my key", "two words")},
		{in: `put k ""`, want: putOp("k", "")},
		{in: `put k "line\nbreak"`, want: putOp("k", "line\nbreak")},
		{in: "put k a=b(c)", want: putOp("k", "a=b(c)")},
		{in: "get k", want: rangeOp(&kvpb.RangeRequest{Key: []byte("k")})},
		{in: "del k", want: delOp(&kvpb.DeleteRequest{Key: []byte("k")})},
		{in: "del --prefix user/", want: delOp(&kvpb.DeleteRequest{Key: []byte("user/"), Prefix: true})},
		{in: "del a c", want: delOp(&kvpb.DeleteRequest{Key: []byte("a"), RangeEnd: []byte("c")})},
		{in: "scan", want: rangeOp(&kvpb.RangeRequest{Prefix: true})},
		{in: "scan --prefix u/", want: rangeOp(&kvpb.RangeRequest{Key: []byte("u/"), Prefix: true})},
		{in: "scan b", want: rangeOp(&kvpb.RangeRequest{Key: []byte("b"), RangeEnd: []byte{0}})},
		{in: "scan a c", want: rangeOp(&kvpb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("c")})},

		{in: "", wantErr: "empty operation"},
		{in: "set k v", wantErr: `unknown operation "set"`},
		{in: "put k", wantErr: "put takes KEY VALUE"},
		{in: "put k a b", wantErr: "put takes KEY VALUE"},
		{in: `put "" v`, wantErr: "the key must not be empty"},
		{in: `put "k"v x`, wantErr: "text right after the closing quote"},
		{in: `put "k v`, wantErr: "unterminated string"},
		{in: "get", wantErr: "get takes KEY"},
		{in: "get a b", wantErr: "get takes KEY"},
		{in: "del", wantErr: "del: takes KEY, --prefix PREFIX or START END"},
		{in: `del --prefix ""`, wantErr: "refusing an empty prefix"},
		{in: "del --prefix", wantErr: "--prefix takes one PREFIX"},
		{in: "del k --prefix", wantErr: "--prefix must come first"},
		{in: "del --from k", wantErr: `unknown option "--from"`},
		{in: "del c a", wantErr: `END "a" must sort after START "c"`},
		{in: "del a b c", wantErr: "too many arguments"},
	} {
		got, err := parseOp(tc.in)
		if !matchErr(t, tc.in, err, tc.wantErr) {
			continue
		}
		if !proto.Equal(got, tc.want) {
			t.Errorf("parseOp(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestTxnRequest(t *testing.T) {
	req, err := txnRequest([]string{"value(k)=old", "exists(j)"}, []string{"put k new", "del j"}, []string{"get k"})
	if err != nil {
		t.Fatal(err)
	}
	want := &kvpb.TxnRequest{
		Compare: []*kvpb.Compare{cmpValue("k", kvpb.Compare_EQUAL, "old"), cmpExists("j", true)},
		Success: []*kvpb.RequestOp{putOp("k", "new"), delOp(&kvpb.DeleteRequest{Key: []byte("j")})},
		Failure: []*kvpb.RequestOp{rangeOp(&kvpb.RangeRequest{Key: []byte("k")})},
	}
	if !proto.Equal(req, want) {
		t.Fatalf("txnRequest = %v, want %v", req, want)
	}
	// No condition is allowed: the success branch then always runs.
	if _, err := txnRequest(nil, []string{"put a b"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ifs, thens, elses []string
		wantErr           string
	}{
		{ifs: []string{"value(k)=a"}, wantErr: "nothing to do"},
		{ifs: []string{"value(k)"}, thens: []string{"put k v"}, wantErr: `condition "value(k)"`},
		{thens: []string{"put k"}, wantErr: `--then: operation "put k"`},
		{thens: []string{"put k v"}, elses: []string{"frob"}, wantErr: `--else: operation "frob": unknown operation`},
	} {
		_, err := txnRequest(tc.ifs, tc.thens, tc.elses)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("txnRequest(%q, %q, %q) error %v, want %q", tc.ifs, tc.thens, tc.elses, err, tc.wantErr)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a", "b"}, {"user/", "user0"}, {"a\xff", "b"}, {"\xff\xff", "\x00"}, {"", "\x00"},
	} {
		if got := string(prefixEnd([]byte(tc.in))); got != tc.want {
			t.Errorf("prefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"}, {"two words", "two words"}, {"é", "é"},
		{"tab\there", `"tab\there"`}, {"nl\n", `"nl\n"`}, {"\x00", `"\x00"`}, {"\xff", `"\xff"`}, {`"q"`, `"\"q\""`},
	} {
		if got := printable([]byte(tc.in)); got != tc.want {
			t.Errorf("printable(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
