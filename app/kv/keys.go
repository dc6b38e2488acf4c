package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Key encoding (see the package documentation). Pebble holds two
// namespaces, told apart by the first byte of the Pebble key:
//
//	0x00 <name>      metadata; today only "applied" (8-byte big-endian index)
//	0x01 <user key>  user data
//
// so no user key can ever collide with metadata, and every user key sorts
// inside [0x01, 0x02). A user value is stored behind a fixed header:
//
//	0x01 (format tag) | mod index (8 bytes, big-endian) | value bytes
//
// The tag lets a later format coexist with this one.
const (
	nsMeta byte = 0x00
	nsUser byte = 0x01

	valueFormatV1 byte = 0x01
)

// valueHeaderLen is the size of the header before every stored value.
const valueHeaderLen = 9

var (
	// appliedKey holds the applied index. Invariant: it is written in the
	// same Pebble batch as the effects of the command at that index.
	appliedKey = []byte{nsMeta, 'a', 'p', 'p', 'l', 'i', 'e', 'd'}
	// userLower and userUpper bound the user namespace.
	userLower = []byte{nsUser}
	userUpper = []byte{nsUser + 1}
)

// appendUserKey appends the Pebble key of user key k to dst.
func appendUserKey(dst, k []byte) []byte {
	dst = append(dst, nsUser)
	return append(dst, k...)
}

// userKeyOf returns the user key inside Pebble key pk (aliasing pk).
func userKeyOf(pk []byte) []byte { return pk[1:] }

// putValueHeader writes the header for modIndex into dst[:valueHeaderLen].
func putValueHeader(dst []byte, modIndex uint64) {
	dst[0] = valueFormatV1
	binary.BigEndian.PutUint64(dst[1:valueHeaderLen], modIndex)
}

// decodeValue splits a stored value into its mod index and user value
// (aliasing stored). A malformed header means the database is damaged.
func decodeValue(stored []byte) (modIndex uint64, value []byte, err error) {
	if len(stored) < valueHeaderLen || stored[0] != valueFormatV1 {
		return 0, nil, fmt.Errorf("kv: stored value has a malformed header (%d bytes)", len(stored))
	}
	return binary.BigEndian.Uint64(stored[1:valueHeaderLen]), stored[valueHeaderLen:], nil
}

// prefixEnd returns the smallest key greater than every key starting with
// prefix, or nil when there is none (prefix empty or all 0xff).
func prefixEnd(prefix []byte) []byte {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			end := bytes.Clone(prefix[:i+1])
			end[i]++
			return end
		}
	}
	return nil
}

// span is a set of user keys: one key, or the keys in [start, end) where
// a nil end means "no upper bound".
type span struct {
	single bool
	start  []byte
	end    []byte
}

// noUpperBound is the range_end that means "every key from key on"
// (a range ending before "\x00" could only hold the empty key, which never
// exists, so the value is free to carry this meaning).
var noUpperBound = []byte{0}

// spanOf interprets the key / range_end / prefix triple shared by Delete
// and Range; it assumes validateSpan accepted them.
func spanOf(key, rangeEnd []byte, prefix bool) span {
	switch {
	case prefix:
		return span{start: key, end: prefixEnd(key)}
	case len(rangeEnd) == 0:
		return span{single: true, start: key}
	case bytes.Equal(rangeEnd, noUpperBound):
		return span{start: key}
	default:
		return span{start: key, end: rangeEnd}
	}
}

// validateSpan checks the key / range_end / prefix triple.
func validateSpan(key, rangeEnd []byte, prefix bool) error {
	switch {
	case prefix && len(rangeEnd) > 0:
		return invalidf("prefix and range_end are mutually exclusive")
	case prefix:
		return nil
	case len(rangeEnd) == 0:
		if len(key) == 0 {
			return invalidf("key is empty")
		}
		return nil
	case bytes.Equal(rangeEnd, noUpperBound):
		return nil
	case bytes.Compare(rangeEnd, key) <= 0:
		return invalidf("range_end %q does not sort after key %q", trunc(rangeEnd), trunc(key))
	}
	return nil
}

// bounds appends the Pebble bounds of sp to buf and returns them
// (lower inclusive, upper exclusive), for an iterator over a range span.
func (sp span) bounds(buf []byte) (lower, upper, rest []byte) {
	n := len(buf)
	buf = appendUserKey(buf, sp.start)
	lower = buf[n:len(buf):len(buf)]
	if sp.end == nil {
		return lower, userUpper, buf
	}
	n = len(buf)
	buf = appendUserKey(buf, sp.end)
	return lower, buf[n:len(buf):len(buf)], buf
}

// trunc shortens a key for an error message.
func trunc(b []byte) []byte {
	const max = 64
	if len(b) > max {
		return b[:max]
	}
	return b
}
