package main

import (
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	if got := tuneGC(); got != serverGCPercent {
		t.Fatalf("GOGC unset: tuneGC = %d, want %d", got, serverGCPercent)
	}
	if p := debug.SetGCPercent(50); p != serverGCPercent {
		t.Fatalf("GOGC unset: collector at %d%%, want %d%%", p, serverGCPercent)
	}
	// An operator's GOGC (applied by the runtime at start; simulated
	// here by setting it) is left alone.
	t.Setenv("GOGC", "50")
	if got := tuneGC(); got != 50 {
		t.Fatalf("GOGC=50: tuneGC = %d, want 50 (left alone)", got)
	}
}
