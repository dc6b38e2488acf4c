package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/transport"
)

// The Grafana dashboard and the Prometheus alert rules in deploy/ may only
// name metrics a running kvnode exports, and every counter they use must
// exist from the node's start (at 0), or a rule on a quiet cluster sees
// "no data" instead of 0 and never fires or resolves.

const (
	dashboardFile  = "../../deploy/grafana/rafty-dashboard.json"
	alertRulesFile = "../../deploy/prometheus/rafty-alerts.yaml"
)

// prometheusSeries are series Prometheus itself makes for every scrape
// target; rules may use them although kvnode does not export them.
var prometheusSeries = map[string]bool{"up": true}

// query is one PromQL expression and where it was found.
type query struct {
	where, expr string
}

// grafanaPanel is the part of a Grafana panel this test reads; rows keep
// their panels in Panels when collapsed.
type grafanaPanel struct {
	ID      int            `json:"id"`
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	Panels  []grafanaPanel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// labelValues matches Grafana's label_values(METRIC_SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// dashboardQueries returns every PromQL expression of the dashboard:
// panel targets and template variable queries.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string         `json:"uid"`
		Panels     []grafanaPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" {
		t.Errorf("%s: no uid (links to the dashboard would break on every import)", dashboardFile)
	}
	var qs []query
	ids := map[int]string{}
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
				}
				qs = append(qs, query{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// Grafana writes the query as a string or as {"query": "..."}.
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %s: query %s: %v", v.Name, v.Query, err)
			}
			q = obj.Query
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(METRIC, LABEL)", v.Name, q)
			continue
		}
		qs = append(qs, query{"variable " + v.Name, m[1]})
	}
	return qs
}

// alertRule is one rule of a Prometheus rule file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// alertQueries returns the expressions of every alert rule, checking that
// each rule says how bad it is and what it means.
func alertQueries(t *testing.T) ([]query, []alertRule) {
	t.Helper()
	data, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true) // a misspelt field is an error, as in Prometheus
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertRulesFile, err)
	}
	var qs []query
	var rules []alertRule
	names := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a rule without an alert name (recording rules do not belong here)", g.Name)
				continue
			}
			if names[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			names[r.Alert] = true
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, sev)
			}
			if _, err := model.ParseDuration(r.For); err != nil {
				t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
			}
			if len(r.Annotations["summary"]) < 20 || len(r.Annotations["description"]) < 80 {
				t.Errorf("alert %s: summary and description must say what is wrong and what to check", r.Alert)
			}
			qs = append(qs, query{"alert " + r.Alert, r.Expr})
			rules = append(rules, r)
		}
	}
	return qs, rules
}

// exported is what a kvnode's /metrics exposes.
type exported struct {
	families map[string]*dto.MetricFamily
	// series maps every series name (a histogram's _bucket, _sum and
	// _count too) to its family.
	series map[string]*dto.MetricFamily
}

func parseExposition(t *testing.T, text string) exported {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	e := exported{families: fams, series: map[string]*dto.MetricFamily{}}
	for name, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				e.series[name+s] = f
			}
		case dto.MetricType_SUMMARY:
			e.series[name] = f
			e.series[name+"_sum"] = f
			e.series[name+"_count"] = f
		default:
			e.series[name] = f
		}
	}
	return e
}

// labelSets returns the label sets of family name's series, each as
// "k=v,k=v" sorted by key.
func (e exported) labelSets(name string) map[string]bool {
	sets := map[string]bool{}
	f := e.families[name]
	if f == nil {
		return sets
	}
	for _, m := range f.GetMetric() {
		var kv []string
		for _, l := range m.GetLabel() {
			kv = append(kv, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(kv)
		sets[strings.Join(kv, ",")] = true
	}
	return sets
}

// startedNode runs a kvnode in this process: member 1 of a three-member
// cluster whose other two members never start, so it has configured peers
// but no traffic, no leader and no client requests. It returns the body of
// its /metrics scraped as soon as it has finished starting.
func startedNode(t *testing.T) string {
	t.Helper()
	addrs := freePorts(t, 6)
	v := defaultFlagValues()
	v.ID = "1"
	v.Peers = fmt.Sprintf("1=%s,2=%s,3=%s", addrs[0], addrs[3], addrs[4])
	v.PeerListen, v.ClientListen, v.Metrics = addrs[0], addrs[1], addrs[2]
	v.DataDir = filepath.Join(t.TempDir(), "node1")
	v.ShutdownTimeout = 2 * time.Second
	cfg, err := v.config()
	if err != nil {
		t.Fatal(err)
	}
	// A member of an existing cluster: a brand-new one would wait for
	// the other two to answer before bootstrapping (docs/operations.md).
	seedBootstrapped(t, cfg)
	serving := make(chan struct{})
	log := slog.New(&watchHandler{msg: "serving", seen: serving, once: new(sync.Once)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-serving:
	case err := <-done:
		done <- err
		t.Fatalf("kvnode stopped while starting: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("kvnode did not finish starting within 30 s")
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addrs[2] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s, %v: %s", resp.Status, err, body)
	}
	return string(body)
}

// watchHandler is a slog.Handler that discards records and closes seen at
// the first record with message msg.
type watchHandler struct {
	msg  string
	seen chan struct{}
	once *sync.Once
}

func (h *watchHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *watchHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}
func (h *watchHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *watchHandler) WithGroup(string) slog.Handler      { return h }

// TestDashboardAndAlertsUseExportedMetrics: every metric the dashboard
// and the alert rules name is exported by a kvnode right after it starts,
// with the right type for how it is used (rate and increase only of
// counters and histogram series, histogram_quantile only of buckets), and
// the counters they use have their series, at 0, for every configured
// peer, drop and refusal reason and request kind.
func TestDashboardAndAlertsUseExportedMetrics(t *testing.T) {
	dq := dashboardQueries(t)
	aq, rules := alertQueries(t)
	if len(dq) < 20 || len(rules) < 5 {
		t.Fatalf("found %d dashboard queries and %d alert rules: did the files' layout change?", len(dq), len(rules))
	}
	for _, want := range []string{"RaftyNoLeader", "RaftyFrequentElections", "RaftyApplyLag", "RaftyFsyncSlow", "RaftyDiskSpaceLow"} {
		if !slices.ContainsFunc(rules, func(r alertRule) bool { return r.Alert == want }) {
			t.Errorf("alert %s is missing", want)
		}
	}

	e := parseExposition(t, startedNode(t))
	used := map[string]string{} // metric name -> first place that uses it
	for _, q := range append(dq, aq...) {
		refs, err := promqlMetricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		if len(refs) == 0 {
			t.Errorf("%s: %q names no metric", q.where, q.expr)
		}
		for _, r := range refs {
			if prometheusSeries[r.name] {
				continue
			}
			if _, ok := used[r.name]; !ok {
				used[r.name] = q.where
			}
			f := e.series[r.name]
			if f == nil {
				t.Errorf("%s: %s is not exported by kvnode (right after start)", q.where, r.name)
				continue
			}
			typ := f.GetType()
			cumulative := typ == dto.MetricType_COUNTER ||
				((typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_SUMMARY) && r.name != f.GetName())
			if (r.in("rate") || r.in("irate") || r.in("increase")) && !cumulative {
				t.Errorf("%s: rate/increase of %s, a %s", q.where, r.name, typ)
			}
			if r.in("histogram_quantile") && (typ != dto.MetricType_HISTOGRAM || !strings.HasSuffix(r.name, "_bucket")) {
				t.Errorf("%s: histogram_quantile over %s, not a histogram's buckets", q.where, r.name)
			}
		}
	}
	t.Logf("%d dashboard queries and %d alert rules use %d metrics", len(dq), len(rules), len(used))

	// Counters the queries use have series from the start, with the label
	// values the node knows: its configured peers (2 and 3), every drop and
	// refusal reason, every request kind, every failed-write code.
	peers := []string{"2", "3"}
	var dropReasons []string
	for _, r := range []transport.DropReason{transport.DropQueueFull, transport.DropTooLarge, transport.DropInvalid,
		transport.DropUnreachable, transport.DropRejected, transport.DropClosed} {
		dropReasons = append(dropReasons, string(r))
	}
	want := map[string][]string{} // family -> label sets that must exist
	for _, p := range peers {
		for _, f := range []string{"rafty_transport_bytes_sent_total", "rafty_transport_bytes_received_total",
			"rafty_transport_snapshot_bytes_sent_total"} {
			want[f] = append(want[f], "peer="+p)
		}
		for _, r := range dropReasons {
			want["rafty_transport_messages_dropped_total"] = append(want["rafty_transport_messages_dropped_total"], "peer="+p+",reason="+r)
		}
	}
	for _, r := range []transport.RejectReason{transport.RejectClusterMismatch, transport.RejectWrongReceiver,
		transport.RejectUnknownSender, transport.RejectSenderMismatch, transport.RejectMalformed} {
		want["rafty_transport_batches_rejected_total"] = append(want["rafty_transport_batches_rejected_total"], "reason="+string(r))
	}
	for _, m := range []string{"Put", "Get", "Delete", "Range", "Txn"} {
		want["rafty_kv_requests_total"] = append(want["rafty_kv_requests_total"], "code=OK,method="+m)
	}
	for _, c := range []codes.Code{codes.Unavailable, codes.Aborted, codes.DeadlineExceeded} {
		want["rafty_kv_proposal_failures_total"] = append(want["rafty_kv_proposal_failures_total"], "code="+c.String())
	}
	for name, where := range used {
		f := e.series[name]
		if f == nil || f.GetType() != dto.MetricType_COUNTER {
			continue
		}
		sets := e.labelSets(f.GetName())
		if len(sets) == 0 {
			t.Errorf("counter %s (used by %s) has no series right after start", name, where)
		}
		for _, ls := range want[name] {
			if !sets[ls] {
				t.Errorf("counter %s (used by %s) has no series {%s} right after start (has %v)", name, where, ls, sets)
			}
		}
	}
	for name := range want {
		if _, ok := used[name]; !ok {
			t.Errorf("%s is not used by the dashboard or the alerts: drop it from this test or use it", name)
		}
	}
	// Nothing has happened yet that these count: they are there at 0.
	for _, name := range []string{"rafty_transport_batches_rejected_total", "rafty_kv_proposal_failures_total",
		"rafty_driver_snapshot_sends_total", "rafty_kv_proposals_total", "rafty_transport_snapshot_bytes_sent_total"} {
		f := e.families[name]
		if f == nil {
			t.Errorf("%s not exported", name)
			continue
		}
		for _, m := range f.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s%v = %v right after start, want 0", name, m.GetLabel(), v)
			}
		}
	}
	// Memory and CPU come from the Go and process collectors.
	for _, name := range []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines"} {
		if e.series[name] == nil {
			t.Errorf("%s is not exported: the process and Go collectors are not registered", name)
		}
	}
}

// seedBootstrapped writes into cfg's empty data directory what a member's
// first start writes once every initial member has answered: the
// bootstrap entry (term 1, the flags' members, committed) and the
// identity file. serve then starts it as a restart, without probing.
func seedBootstrapped(t *testing.T, cfg *serveConfig) {
	t.Helper()
	s := &server{cfg: cfg}
	var m core.Membership
	for _, p := range s.initialPeers() {
		m.Voters = append(m.Voters, p.ID)
		m.Members = append(m.Members, core.MemberInfo{ID: p.ID, Name: p.Name, PeerAddr: p.Addr})
		m.HighestID = max(m.HighestID, p.ID)
	}
	w := openTestWAL(t, cfg.DataDir)
	err := w.Save(core.HardState{Term: 1, Commit: 1}, []core.Entry{
		{Index: 1, Term: 1, Type: core.EntryConfChange, Data: core.ConfChange{Replace: &m}.Marshal()},
	})
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := writeIdentity(cfg.DataDir, identity{ClusterName: cfg.ClusterName, ClusterID: cfg.ClusterID, NodeID: cfg.ID, Name: cfg.Name}); err != nil {
		t.Fatal(err)
	}
}
