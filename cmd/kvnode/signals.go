package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// stopSignals are the signals that ask a node to stop: SIGTERM from an
// orchestrator (Kubernetes, Docker, systemd), SIGINT from Ctrl-C.
var stopSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}

// watchSignals returns a context cancelled by the first SIGTERM or SIGINT,
// which starts a graceful stop. A second signal means the operator does
// not want to wait: it calls exit at once with 128+signal number (the
// shell's convention for death by signal, non-zero so a supervisor sees
// an unclean stop). stop undoes the handlers.
func watchSignals(parent context.Context, log *slog.Logger, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	// Buffered for both signals: signal.Notify drops what it cannot send.
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, stopSignals...)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case sig := <-ch:
			log.Info("stopping gracefully; send the signal again to exit at once", "signal", sig.String())
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			log.Warn("second signal: exiting without finishing the graceful stop", "signal", sig.String())
			exit(128 + signalNumber(sig))
		case <-done:
		}
	})
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
			wg.Wait()
			cancel()
		})
	}
}

// signalNumber returns sig's number, or 15 (SIGTERM) for a signal that is
// not a syscall.Signal.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return int(syscall.SIGTERM)
}
