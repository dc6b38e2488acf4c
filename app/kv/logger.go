package kv

import (
	"context"
	"fmt"
	"log/slog"
)

// pebbleLogger adapts slog to pebble.Logger. Pebble's default logger
// writes every flush and compaction to the standard logger; here its
// informational messages go to Debug, so a server at the usual Info level
// stays quiet unless something is wrong.
type pebbleLogger struct{ l *slog.Logger }

// Infof logs at Debug: flushes, compactions and the like are routine.
func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

// Errorf logs at Error: Pebble reports background failures this way.
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is called by Pebble on an internal invariant violation or data
// corruption it cannot continue past; it must not return. Pebble's
// default exits the process; panicking instead keeps the stack and lets
// deferred cleanup run, and the message is logged first in case the panic
// is swallowed.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic("pebble: " + msg)
}
