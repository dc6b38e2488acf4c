package main

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestRefusedMessageCounters: the core's refusal counters (forged or
// corrupt terms and indexes among them) are exported from the start, one
// series per reason at 0, so an alert on out_of_range sees 0, not no data.
func TestRefusedMessageCounters(t *testing.T) {
	e := parseExposition(t, startedNode(t))
	f := e.families["rafty_node_refused_messages_total"]
	if f == nil || f.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("rafty_node_refused_messages_total missing or not a counter: %v", f)
	}
	seen := map[string]float64{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reason" {
				seen[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	for _, r := range refusedReasons {
		if v, ok := seen[r.label]; !ok || v != 0 {
			t.Errorf("reason %q: present %v, value %v; want present at 0", r.label, ok, v)
		}
	}
	for _, name := range []string{"rafty_node_refused_campaigns_total", "rafty_node_ignored_votes_total"} {
		if g := e.families[name]; g == nil || g.GetType() != dto.MetricType_COUNTER {
			t.Errorf("%s missing or not a counter", name)
		}
	}
}
