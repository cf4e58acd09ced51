//go:build unix

package serve_test

import (
	"context"
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
	stop()
	stop() // idempotent
}
