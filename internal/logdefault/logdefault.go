// Package logdefault is the logger Rafty's packages use when the embedder
// configures none: warnings and errors go to slog.Default(), routine
// progress (Info, Debug) is dropped. A library that discarded everything
// by default would hide exactly what a newcomer needs to see (a peer that
// cannot be reached, a transport that refuses traffic, a node that never
// finds a leader); one that logged everything would flood the embedder's
// log.
package logdefault

import (
	"context"
	"log/slog"
)

// Level is the least severe level the default logger passes on.
const Level = slog.LevelWarn

// Logger returns a logger writing records of Level and above to the
// handler of slog.Default() as it is now (a later slog.SetDefault is not
// followed).
func Logger() *slog.Logger {
	return slog.New(minLevel{slog.Default().Handler()})
}

// minLevel passes records of Level and above to h.
type minLevel struct{ h slog.Handler }

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= Level && m.h.Enabled(ctx, l)
}

func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler { return minLevel{m.h.WithAttrs(as)} }

func (m minLevel) WithGroup(name string) slog.Handler { return minLevel{m.h.WithGroup(name)} }
