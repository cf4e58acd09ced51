//go:build unix

package serve_test

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/serve"
)

// TestOnSIGHUP sends the test process SIGHUP: reload runs once per signal, and stop ends the goroutine (goleak
// checks). Not parallel: the signal goes to the whole process, and no other test here catches it.
func TestOnSIGHUP(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	calls := make(chan struct{}, 10)
	stop := serve.OnSIGHUP(ctx, func() { calls <- struct{}{} })
	for i := range 3 {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("SIGHUP %d did not call reload", i+1)
		}
	}
	cancel()
	// Until stop, SIGHUP stays caught: this one, during "shutdown", must not end the test process.
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered asynchronously: if it arrives only after stop, nothing would catch it and it would end
	// the test process. This guard takes over before stop, and keeps it until the signal has surely come.
	guard := make(chan os.Signal, 1)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	stop()
	stop() // idempotent
	select {
	case <-guard:
	case <-time.After(200 * time.Millisecond):
	}
}

// TestOnRepeatedSignal: a signal after ctx is done calls fn. The test catches SIGUSR1
// itself throughout, so a signal sent before OnRepeatedSignal listens cannot end the process; it resends until fn
// runs. Not parallel: the signal goes to the whole process.
func TestOnRepeatedSignal(t *testing.T) {
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGUSR1)
	defer signal.Stop(guard)

	ctx, cancel := context.WithCancel(t.Context())
	calls := make(chan struct{}, 100)
	stop := serve.OnRepeatedSignal(ctx, func() { calls <- struct{}{} }, syscall.SIGUSR1)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	<-guard // delivered while ctx is live: not for fn

	cancel()
	deadline := time.After(5 * time.Second)
	for called := false; !called; {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		select {
		case <-calls:
			called = true
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("a signal after ctx was done did not call fn")
		}
	}
	stop()
	stop() // idempotent
}
