package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// This file reads the metric names out of PromQL expressions, for
// dashboard_test.go. It is a tokenizer, not a parser (the Prometheus
// parser would bring the whole Prometheus module into this one): it
// skips what cannot name a metric (strings, label matchers, range and
// subquery brackets, numbers and durations, Grafana variables, the label
// lists of by/without/on/ignoring/group_left/group_right), knows which
// identifiers are keywords, aggregations and functions, and reports every
// other identifier as a metric name together with the functions it is
// nested in. It rejects what it cannot vouch for: unbalanced brackets,
// unterminated strings, unknown functions, a selector without a metric
// name ({__name__="x"} or a bare {...}), characters PromQL does not have.

// metricRef is one metric name in an expression and the functions and
// aggregations it is an argument of, outermost first.
type metricRef struct {
	name  string
	funcs []string
}

// in reports whether the reference is (at any depth) inside fn.
func (r metricRef) in(fn string) bool { return slices.Contains(r.funcs, fn) }

// promqlAggregations may be followed by a by/without clause before their
// parenthesised argument.
var promqlAggregations = setOf("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
	"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio")

// promqlFunctions are PromQL's functions (Prometheus 3.x).
var promqlFunctions = setOf("abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh",
	"atan", "atanh", "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos",
	"cosh", "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
	"delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
	"histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
	"histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate",
	"label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time",
	"max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
	"present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn",
	"sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt",
	"stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp",
	"vector", "year", "start", "end")

// promqlLabelLists are keywords followed by a parenthesised list of label
// names (optional after group_left and group_right).
var promqlLabelLists = setOf("by", "without", "on", "ignoring", "group_left", "group_right")

// promqlWords are the other keywords: binary operators, modifiers and
// the special float values.
var promqlWords = setOf("and", "or", "unless", "bool", "offset", "atan2", "inf", "nan")

func setOf(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// promqlMetricNames returns the metric names expr refers to, in order.
func promqlMetricNames(expr string) ([]metricRef, error) {
	var (
		refs []metricRef
		// stack holds, for each open parenthesis, the function or
		// aggregation it belongs to ("" for grouping).
		stack   []string
		pending string // a function or aggregation waiting for its "("
		// afterName: the last token was a metric name, so "{" is its
		// matcher list rather than a selector without a name.
		afterName bool
	)
	skipSpace := func(i int) int {
		for i < len(expr) && strings.IndexByte(" \t\r\n", expr[i]) >= 0 {
			i++
		}
		return i
	}
	// closing returns the index just past the bracket closing the one at
	// i, skipping strings inside.
	closing := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				end, err := skipString(expr, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unclosed %q at offset %d", open, i)
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		wasName := afterName
		afterName = false
		switch {
		case strings.IndexByte(" \t\r\n", c) >= 0:
			afterName = wasName
			i++
		case c == '#': // a comment, to the end of the line
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, err := closing(i, '{', '}')
			if err != nil {
				return nil, err
			}
			if !wasName {
				return nil, fmt.Errorf("selector %s at offset %d has no metric name", expr[i:end], i)
			}
			if strings.Contains(expr[i:end], "__name__") {
				return nil, fmt.Errorf("selector %s at offset %d matches __name__: name the metric instead", expr[i:end], i)
			}
			i = end
		case c == '[':
			end, err := closing(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '$': // a Grafana variable: $name or ${name[:format]}
			if i+1 < len(expr) && expr[i+1] == '{' {
				end := strings.IndexByte(expr[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("unclosed ${ at offset %d", i)
				}
				i += end + 1
				continue
			}
			i++
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
		case isDigit(c) || (c == '.' && i+1 < len(expr) && isDigit(expr[i+1])):
			// A number or a duration: 0.99, 1e3, 0x1f, 5m, 1h30m.
			for i < len(expr) && (isIdentChar(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
			word := expr[start:i]
			// Keywords are case-insensitive (Inf, BY); names are not.
			lower := strings.ToLower(word)
			next := skipSpace(i)
			nextIsParen := next < len(expr) && expr[next] == '('
			switch {
			case promqlLabelLists[lower]:
				if !nextIsParen {
					if lower == "group_left" || lower == "group_right" {
						continue
					}
					return nil, fmt.Errorf("%q at offset %d is not followed by a label list", word, start)
				}
				end, err := closing(next, '(', ')')
				if err != nil {
					return nil, err
				}
				i = end
			case promqlWords[lower]:
			case promqlAggregations[lower]:
				// sum(...), sum by (l) (...), or a metric called sum.
				if nw := strings.ToLower(wordAt(expr, next)); nextIsParen || nw == "by" || nw == "without" {
					pending = word
				} else {
					refs = append(refs, metricRef{name: word, funcs: activeFuncs(stack)})
					afterName = true
				}
			case nextIsParen:
				if !promqlFunctions[word] {
					return nil, fmt.Errorf("unknown function %s at offset %d", word, start)
				}
				pending = word
			default:
				refs = append(refs, metricRef{name: word, funcs: activeFuncs(stack)})
				afterName = true
			}
		case c == '(':
			stack = append(stack, pending)
			pending = ""
			i++
		case c == ')':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced ) at offset %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case strings.IndexByte("+-*/%^=!<>,@:", c) >= 0:
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d", c, i)
		}
	}
	if len(stack) > 0 {
		return nil, fmt.Errorf("%d unclosed (", len(stack))
	}
	if pending != "" {
		return nil, fmt.Errorf("%s without its arguments", pending)
	}
	return refs, nil
}

// activeFuncs returns the named functions on the stack, outermost first.
func activeFuncs(stack []string) []string {
	var fns []string
	for _, f := range stack {
		if f != "" {
			fns = append(fns, f)
		}
	}
	return fns
}

// wordAt returns the identifier starting at i, if any.
func wordAt(s string, i int) string {
	j := i
	for j < len(s) && isIdentChar(s[j]) {
		j++
	}
	if j == i || !isIdentStart(s[i]) {
		return ""
	}
	return s[i:j]
}

// skipString returns the index just past the string literal starting at
// i ("..." and '...' with backslash escapes, `...` raw).
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d", i)
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string // name@innermost function
	}{
		{`rafty_node_term`, []string{"rafty_node_term@"}},
		{`rafty_node_term{job=~"$job", instance=~"$instance"}`, []string{"rafty_node_term@"}},
		{`sum by (job, instance) (rate(a_total{x="}{[(by"}[$__rate_interval]))`, []string{"a_total@rate"}},
		{`sum(rate(a_total[5m])) without (peer)`, []string{"a_total@rate"}},
		{`histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[5m:30s] offset 1h)))`, []string{"h_seconds_bucket@rate"}},
		{`max by (job) (c) - on (job) group_right b > 10000`, []string{"c@max", "b@"}},
		{`a / on (x) group_left (y, z) b`, []string{"a@", "b@"}},
		{`a and bool b unless c or d`, []string{"a@", "b@", "c@", "d@"}},
		{"predict_linear(free_bytes[6h], 24 * 3600) < 0 # a comment naming nothing_here", []string{"free_bytes@predict_linear"}},
		{`label_replace(up, "a", "$1", "b", "(.*)")`, []string{"up@label_replace"}},
		{`-sum(rate(x_total[${__rate_interval}])) + 1e3 + 0x1f + .5 + Inf`, []string{"x_total@rate"}},
		{`sum(x @ start())`, []string{"x@sum"}},
		{`count_values("v", build_info)`, []string{"build_info@count_values"}},
		{"topk(3, `raw` , m:recorded:rate5m)", []string{"m:recorded:rate5m@topk"}},
	} {
		refs, err := promqlMetricNames(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, r := range refs {
			inner := ""
			if len(r.funcs) > 0 {
				inner = r.funcs[len(r.funcs)-1]
			}
			got = append(got, r.name+"@"+inner)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %v, want %v", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{
		`rate(x[5m]`, `x)`, `{job="a"}`, `x{__name__="y"}`, `rte(x[5m])`, `x{a="b}`, `sum by job (x)`,
		`x[5m`, `x ; y`, `sum by (a)`, `${unclosed`,
	} {
		if refs, err := promqlMetricNames(bad); err == nil {
			t.Errorf("%q: no error (refs %v)", bad, refs)
		}
	}
}
