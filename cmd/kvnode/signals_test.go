package main

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestWatchSignals sends this test process SIGTERM then SIGINT: the first
// starts the graceful stop (cancels the context), the second exits at
// once with 128+SIGINT.
func TestWatchSignals(t *testing.T) {
	exited := make(chan int, 1)
	ctx, stop := watchSignals(context.Background(), discardLogger(), func(code int) { exited <- code })
	defer stop()

	select {
	case <-ctx.Done():
		t.Fatal("context cancelled before any signal")
	default:
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not cancel the context")
	}
	select {
	case code := <-exited:
		t.Fatalf("exit(%d) after the first signal", code)
	default:
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exited:
		if code != 128+int(syscall.SIGINT) {
			t.Fatalf("second signal: exit(%d), want %d", code, 128+int(syscall.SIGINT))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second signal did not exit")
	}
}

func TestWatchSignalsStop(t *testing.T) {
	ctx, stop := watchSignals(context.Background(), discardLogger(), func(code int) { t.Errorf("exit(%d)", code) })
	stop()
	stop() // idempotent
	if ctx.Err() == nil {
		t.Fatal("stop left the context alive")
	}
}
