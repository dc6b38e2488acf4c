package logdefault

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLoggerPassesWarningsOnly: the default logger writes warnings and
// errors, with attributes and groups, to slog.Default() and drops Info and
// Debug.
func TestLoggerPassesWarningsOnly(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(prev)

	log := Logger().With("node", 1).WithGroup("g")
	log.Debug("debug line")
	log.Info("info line")
	log.Warn("warn line", "k", "v")
	log.Error("error line")
	out := buf.String()
	for _, want := range []string{"level=WARN msg=\"warn line\" node=1 g.k=v", "level=ERROR msg=\"error line\" node=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"debug line", "info line"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, out)
		}
	}
}
