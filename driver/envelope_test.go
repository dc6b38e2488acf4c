package driver

import (
	"bytes"
	"errors"
	"testing"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	id := proposalID{node: 3, epoch: 0xdeadbeefcafef00d, seq: 42}
	for _, cmd := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte{0xff}, 1000)} {
		buf := encodeEnvelope(id, cmd)
		if len(buf) != EnvelopeOverhead+len(cmd) {
			t.Fatalf("encoded length %d, want %d", len(buf), EnvelopeOverhead+len(cmd))
		}
		got, gotCmd, err := decodeEnvelope(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got != id || !bytes.Equal(gotCmd, cmd) {
			t.Fatalf("decoded %+v %q, want %+v %q", got, gotCmd, id, cmd)
		}
	}
	// The envelope copies the command: the caller may reuse its buffer.
	cmd := []byte("abc")
	buf := encodeEnvelope(id, cmd)
	cmd[0] = 'z'
	if _, got, _ := decodeEnvelope(buf); string(got) != "abc" {
		t.Fatalf("envelope aliases the caller's command: %q", got)
	}
}

func TestEnvelopeRejectsGarbage(t *testing.T) {
	good := encodeEnvelope(proposalID{node: 1, epoch: 2, seq: 3}, []byte("cmd"))
	bad := map[string][]byte{
		"empty":       nil,
		"short":       good[:EnvelopeOverhead-1],
		"version":     append([]byte{9}, good[1:]...),
		"zero node":   encodeEnvelope(proposalID{node: 0, epoch: 2, seq: 3}, nil),
		"zero seq":    encodeEnvelope(proposalID{node: 1, epoch: 2, seq: 0}, nil),
		"text":        []byte("this is not an envelope at all"),
		"header only": good[:1],
	}
	for name, data := range bad {
		if _, _, err := decodeEnvelope(data); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: err %v, want ErrCorruptEntry", name, err)
		}
	}
}

// FuzzDecodeEnvelope: decoding arbitrary bytes never panics, and whatever
// decodes re-encodes to the same bytes.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(encodeEnvelope(proposalID{node: 1, epoch: 2, seq: 3}, []byte("cmd")))
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		id, cmd, err := decodeEnvelope(data)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeEnvelope(id, cmd), data) {
			t.Fatalf("re-encoding %x differs", data)
		}
	})
}

// TestOurSeqAgreesWithDecode: the loop's fast ownership test matches the
// full decoder.
func TestOurSeqAgreesWithDecode(t *testing.T) {
	n := &Node{cfg: Config{ID: 5}, epoch: 77}
	l := &loop{n: n}
	mine := encodeEnvelope(proposalID{node: 5, epoch: 77, seq: 9}, []byte("x"))
	if seq, ok := l.ourSeq(mine); !ok || seq != 9 {
		t.Fatalf("own envelope: %d %v", seq, ok)
	}
	for _, other := range [][]byte{
		encodeEnvelope(proposalID{node: 5, epoch: 78, seq: 9}, nil), // previous incarnation
		encodeEnvelope(proposalID{node: 6, epoch: 77, seq: 9}, nil), // another node
		nil,
		mine[:10],
	} {
		if _, ok := l.ourSeq(other); ok {
			t.Fatalf("%x taken for ours", other)
		}
	}
}
