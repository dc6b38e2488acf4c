package main

import (
	"os"
	"runtime/debug"
)

// serverGCPercent is the garbage collector's target a server runs with
// when the environment does not set GOGC. A kvnode's live Go heap is
// small (Pebble keeps its block cache and memtables outside it), so the
// default of 100 makes the collector run every few megabytes of
// allocation: after a restart, with a 4 MB live heap, about three times as
// often as on a node that had just written 100,000 keys, which cost reads
// a quarter of their throughput (scripts/bench-restart.sh; issue 15). At
// 400 the heap peaks near five times the live one, a few tens of
// megabytes, and the collection rate no longer depends on how much the
// process happened to allocate earlier. GOMEMLIMIT, if set, still bounds
// the total.
const serverGCPercent = 400

// tuneGC sets serverGCPercent unless GOGC is set (an operator's choice
// wins) and returns the percentage in force.
func tuneGC() int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		p := debug.SetGCPercent(100) // read the current value...
		debug.SetGCPercent(p)        // ...and put it back
		return p
	}
	debug.SetGCPercent(serverGCPercent)
	return serverGCPercent
}
