package main

// The transaction language of `kvnode txn`, designed to be typed in a
// shell inside single quotes:
//
//	kvnode txn --if 'value(k)=old' --then 'put k new' --else 'get k'
//
// Conditions (--if, repeatable; all must hold):
//
//	value(KEY) OP VALUE     the key's value compared bytewise; false if
//	                        the key does not exist
//	mod(KEY) OP INDEX       the Raft index of the key's last write (0 if
//	                        the key does not exist)
//	exists(KEY)             the key exists
//	!exists(KEY)            the key does not exist
//
// with OP one of = (or ==), !=, < and >. Several conditions may also be
// joined with && inside one --if.
//
// Operations (--then and --else, repeatable; run in order, atomically):
//
//	put KEY VALUE
//	get KEY
//	del KEY | del --prefix PREFIX | del START END
//	scan [--prefix PREFIX | START [END]]
//
// KEY, VALUE, PREFIX, START and END are bare words, or double-quoted
// strings with Go escapes for anything else: spaces, the characters
// ( ) = ! < > & " in conditions, empty strings, bytes like "\x00".
//
//	kvnode txn --if 'value("my key")="two words"' --then 'put "my key" ""'
//	kvnode txn --if '!exists(lock)' --then 'put lock me' --else 'get lock'
//	kvnode txn --if 'mod(cfg)=42 && value(mode)!=frozen' --then 'put cfg v2'

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// condToken is one lexical element of a condition.
type condToken struct {
	kind condKind
	text string // word, string contents (unquoted) or operator
	pos  int    // byte offset in the condition, for messages
}

type condKind int

const (
	tokWord condKind = iota
	tokString
	tokLParen
	tokRParen
	tokOp
	tokNot
	tokAnd
	tokEOF
)

// condSpecial are the characters that end a bare word in a condition.
const condSpecial = `()=!<>&"`

// lexCondition splits a condition into tokens.
func lexCondition(s string) ([]condToken, error) {
	var toks []condToken
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsSpace(r):
			i += size
		case r == '(':
			toks = append(toks, condToken{tokLParen, "(", i})
			i++
		case r == ')':
			toks = append(toks, condToken{tokRParen, ")", i})
			i++
		case r == '&':
			if !strings.HasPrefix(s[i:], "&&") {
				return nil, fmt.Errorf("at offset %d: a single '&' (join conditions with &&)", i)
			}
			toks = append(toks, condToken{tokAnd, "&&", i})
			i += 2
		case r == '=' || r == '<' || r == '>':
			op := string(r)
			if strings.HasPrefix(s[i:], "==") {
				op = "=="
			} else if (r == '<' || r == '>') && strings.HasPrefix(s[i+1:], "=") {
				return nil, fmt.Errorf("at offset %d: operator %s= is not supported (use =, !=, < or >)", i, string(r))
			}
			toks = append(toks, condToken{tokOp, op, i})
			i += len(op)
		case r == '!':
			if strings.HasPrefix(s[i:], "!=") {
				toks = append(toks, condToken{tokOp, "!=", i})
				i += 2
			} else {
				toks = append(toks, condToken{tokNot, "!", i})
				i++
			}
		case r == '"':
			text, n, err := lexQuoted(s[i:])
			if err != nil {
				return nil, fmt.Errorf("at offset %d: %v", i, err)
			}
			toks = append(toks, condToken{tokString, text, i})
			i += n
		default:
			start := i
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if unicode.IsSpace(r) || strings.ContainsRune(condSpecial, r) {
					break
				}
				i += size
			}
			toks = append(toks, condToken{tokWord, s[start:i], start})
		}
	}
	return append(toks, condToken{tokEOF, "", len(s)}), nil
}

// lexQuoted reads the double-quoted Go string literal at the start of s
// and returns its value and its length in s.
func lexQuoted(s string) (string, int, error) {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character; Unquote checks the escape
		case '"':
			v, err := strconv.Unquote(s[:i+1])
			if err != nil {
				return "", 0, fmt.Errorf("bad escape in %s (Go string syntax: \\\" \\\\ \\n \\x00 ...)", s[:i+1])
			}
			return v, i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unterminated string %s", s)
}

// condParser is a recursive-descent parser over condition tokens.
type condParser struct {
	toks []condToken
	i    int
}

func (p *condParser) peek() condToken { return p.toks[p.i] }

func (p *condParser) next() condToken {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

// describe names a token for error messages.
func (t condToken) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of condition"
	case tokString:
		return "string " + strconv.Quote(t.text)
	default:
		return strconv.Quote(t.text)
	}
}

// parseConditions parses one --if value: conditions joined by &&.
func parseConditions(s string) ([]*kvpb.Compare, error) {
	toks, err := lexCondition(s)
	if err != nil {
		return nil, fmt.Errorf("condition %q: %v", s, err)
	}
	p := &condParser{toks: toks}
	var out []*kvpb.Compare
	for {
		c, err := p.parseCompare()
		if err != nil {
			return nil, fmt.Errorf("condition %q: %v", s, err)
		}
		out = append(out, c)
		t := p.next()
		switch t.kind {
		case tokEOF:
			return out, nil
		case tokAnd:
		default:
			return nil, fmt.Errorf("condition %q: at offset %d: unexpected %s (join conditions with &&)", s, t.pos, t.describe())
		}
	}
}

// parseCompare parses one comparison.
func (p *condParser) parseCompare() (*kvpb.Compare, error) {
	negated := false
	if p.peek().kind == tokNot {
		p.next()
		negated = true
	}
	fn := p.next()
	if fn.kind != tokWord {
		return nil, fmt.Errorf("at offset %d: expected value(KEY), mod(KEY) or exists(KEY), got %s", fn.pos, fn.describe())
	}
	var target kvpb.Compare_Target
	switch fn.text {
	case "value":
		target = kvpb.Compare_VALUE
	case "mod":
		target = kvpb.Compare_MOD_INDEX
	case "exists":
		target = kvpb.Compare_EXISTS
	default:
		return nil, fmt.Errorf("at offset %d: unknown function %q (want value, mod or exists)", fn.pos, fn.text)
	}
	if negated && target != kvpb.Compare_EXISTS {
		return nil, fmt.Errorf("at offset %d: '!' applies only to exists(KEY); negate %s with !=", fn.pos, fn.text)
	}
	if t := p.next(); t.kind != tokLParen {
		return nil, fmt.Errorf("at offset %d: expected ( after %s, got %s", t.pos, fn.text, t.describe())
	}
	key := p.next()
	if key.kind != tokWord && key.kind != tokString {
		return nil, fmt.Errorf("at offset %d: expected a key in %s(...), got %s", key.pos, fn.text, key.describe())
	}
	if key.text == "" {
		return nil, fmt.Errorf("at offset %d: the key in %s(...) must not be empty", key.pos, fn.text)
	}
	if t := p.next(); t.kind != tokRParen {
		return nil, fmt.Errorf("at offset %d: expected ) after the key, got %s (quote keys with special characters)", t.pos, t.describe())
	}
	c := &kvpb.Compare{Key: []byte(key.text), Target: target}
	if target == kvpb.Compare_EXISTS {
		c.Result, c.Exists = kvpb.Compare_EQUAL, !negated
		return c, nil
	}

	op := p.next()
	if op.kind != tokOp {
		return nil, fmt.Errorf("at offset %d: expected =, !=, < or > after %s(%s), got %s", op.pos, fn.text, key.text, op.describe())
	}
	switch op.text {
	case "=", "==":
		c.Result = kvpb.Compare_EQUAL
	case "!=":
		c.Result = kvpb.Compare_NOT_EQUAL
	case "<":
		c.Result = kvpb.Compare_LESS
	case ">":
		c.Result = kvpb.Compare_GREATER
	}
	operand := p.next()
	if operand.kind != tokWord && operand.kind != tokString {
		return nil, fmt.Errorf("at offset %d: expected a value after %s, got %s (write an empty value as \"\")", operand.pos, op.text, operand.describe())
	}
	if target == kvpb.Compare_VALUE {
		c.Value = []byte(operand.text)
		return c, nil
	}
	idx, err := strconv.ParseUint(operand.text, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("at offset %d: mod(%s) compares with a log index, a non-negative integer, got %s", operand.pos, key.text, operand.describe())
	}
	c.ModIndex = idx
	return c, nil
}

// splitWords splits an operation shell-style: words are separated by
// white space, and a word starting with a double quote is a Go string
// literal (so it may hold spaces or be empty).
func splitWords(s string) ([]string, error) {
	var words []string
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			i += size
			continue
		}
		if r == '"' {
			w, n, err := lexQuoted(s[i:])
			if err != nil {
				return nil, err
			}
			i += n
			if i < len(s) {
				if r, _ := utf8.DecodeRuneInString(s[i:]); !unicode.IsSpace(r) {
					return nil, fmt.Errorf("text right after the closing quote at offset %d (separate words with spaces)", i-1)
				}
			}
			words = append(words, w)
			continue
		}
		start := i
		for i < len(s) {
			r, size := utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				break
			}
			i += size
		}
		words = append(words, s[start:i])
	}
	return words, nil
}

// opUsage lists the operation forms for error messages.
const opUsage = "put KEY VALUE | get KEY | del KEY | del --prefix PREFIX | del START END | scan [--prefix PREFIX | START [END]]"

// parseOp parses one --then or --else operation.
func parseOp(s string) (*kvpb.RequestOp, error) {
	words, err := splitWords(s)
	if err != nil {
		return nil, fmt.Errorf("operation %q: %v", s, err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("empty operation (want %s)", opUsage)
	}
	verb, args := words[0], words[1:]
	bad := func(format string, a ...any) error {
		return fmt.Errorf("operation %q: %s", s, fmt.Sprintf(format, a...))
	}
	switch verb {
	case "put":
		if len(args) != 2 {
			return nil, bad("put takes KEY VALUE")
		}
		if args[0] == "" {
			return nil, bad("the key must not be empty")
		}
		return &kvpb.RequestOp{Op: &kvpb.RequestOp_Put{Put: &kvpb.PutRequest{Key: []byte(args[0]), Value: []byte(args[1])}}}, nil
	case "get":
		if len(args) != 1 {
			return nil, bad("get takes KEY")
		}
		if args[0] == "" {
			return nil, bad("the key must not be empty")
		}
		return &kvpb.RequestOp{Op: &kvpb.RequestOp_Range{Range: &kvpb.RangeRequest{Key: []byte(args[0])}}}, nil
	case "del":
		sp, err := parseSpan(args, false)
		if err != nil {
			return nil, bad("del: %v", err)
		}
		return &kvpb.RequestOp{Op: &kvpb.RequestOp_Delete{Delete: &kvpb.DeleteRequest{Key: sp.key, RangeEnd: sp.end, Prefix: sp.prefix}}}, nil
	case "scan":
		sp, err := parseSpan(args, true)
		if err != nil {
			return nil, bad("scan: %v", err)
		}
		return &kvpb.RequestOp{Op: &kvpb.RequestOp_Range{Range: &kvpb.RangeRequest{Key: sp.key, RangeEnd: sp.end, Prefix: sp.prefix}}}, nil
	}
	return nil, bad("unknown operation %q (want %s)", verb, opUsage)
}

// span is a key selection as the KV API takes it (see kv.proto).
type span struct {
	key, end []byte
	prefix   bool
}

// noUpperBound is the range end meaning "to the end of the key space".
var noUpperBound = []byte{0}

// parseSpan reads the key arguments of del and scan: KEY, --prefix
// PREFIX, or START END; scan also accepts nothing (every key) and START
// alone (START to the end). del refuses an empty prefix, which would
// delete every key on a typo.
func parseSpan(args []string, scan bool) (span, error) {
	if len(args) > 0 && args[0] == "--prefix" {
		if len(args) != 2 {
			return span{}, errors.New("--prefix takes one PREFIX")
		}
		if args[1] == "" && !scan {
			return span{}, errors.New("refusing an empty prefix: it would delete every key")
		}
		return span{key: []byte(args[1]), prefix: true}, nil
	}
	for _, a := range args {
		if a == "--prefix" {
			return span{}, errors.New("--prefix must come first: --prefix PREFIX")
		}
		if strings.HasPrefix(a, "--") {
			return span{}, fmt.Errorf("unknown option %q (only --prefix)", a)
		}
	}
	switch len(args) {
	case 0:
		if scan {
			return span{prefix: true}, nil
		}
		return span{}, errors.New("takes KEY, --prefix PREFIX or START END")
	case 1:
		if args[0] == "" {
			return span{}, errors.New("the key must not be empty")
		}
		if scan {
			return span{key: []byte(args[0]), end: noUpperBound}, nil
		}
		return span{key: []byte(args[0])}, nil
	case 2:
		if args[1] <= args[0] {
			return span{}, fmt.Errorf("END %q must sort after START %q", args[1], args[0])
		}
		return span{key: []byte(args[0]), end: []byte(args[1])}, nil
	}
	return span{}, errors.New("too many arguments")
}

// txnRequest builds a transaction from the --if, --then and --else
// values.
func txnRequest(ifs, thens, elses []string) (*kvpb.TxnRequest, error) {
	req := &kvpb.TxnRequest{}
	for _, s := range ifs {
		cs, err := parseConditions(s)
		if err != nil {
			return nil, err
		}
		req.Compare = append(req.Compare, cs...)
	}
	for _, s := range thens {
		op, err := parseOp(s)
		if err != nil {
			return nil, fmt.Errorf("--then: %v", err)
		}
		req.Success = append(req.Success, op)
	}
	for _, s := range elses {
		op, err := parseOp(s)
		if err != nil {
			return nil, fmt.Errorf("--else: %v", err)
		}
		req.Failure = append(req.Failure, op)
	}
	if len(req.Success) == 0 && len(req.Failure) == 0 {
		return nil, errors.New("nothing to do: give at least one --then or --else operation")
	}
	return req, nil
}
