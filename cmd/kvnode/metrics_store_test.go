package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rafty-db/rafty/app/kv"
)

// TestStoreCollectorExportsPebbleStats: a scrape carries the Pebble
// statistics and the applied index, and a closed store (during a stop)
// still scrapes without error.
func TestStoreCollectorExportsPebbleStats(t *testing.T) {
	store, err := kv.OpenStore(t.TempDir(), kv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStoreCollector(store))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	for _, name := range []string{
		"rafty_kv_applied_index", "rafty_pebble_disk_usage_bytes", "rafty_pebble_l0_files",
		"rafty_pebble_read_amplification", "rafty_pebble_compaction_debt_bytes",
		"rafty_pebble_block_cache_hits_total", "rafty_pebble_flushes_total",
	} {
		if !got[name] {
			t.Errorf("scrape lacks %s (has %v)", name, got)
		}
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	families, err = reg.Gather()
	if err != nil {
		t.Fatalf("scrape of a closed store: %v", err)
	}
	if len(families) != 1 || families[0].GetName() != "rafty_kv_applied_index" {
		t.Fatalf("closed store exported %d families, want only the applied index", len(families))
	}
}

// TestPprofOnlyWhenEnabled: profiles are served on the metrics address
// only with --enable-pprof.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		mux := newMetricsMux(prometheus.NewRegistry(), &readiness{}, discardLogger(), enabled)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/debug/pprof/", nil))
		if got := rec.Code == http.StatusOK; got != enabled {
			t.Errorf("enable-pprof=%v: GET /debug/pprof/ answered %d", enabled, rec.Code)
		}
	}
}
