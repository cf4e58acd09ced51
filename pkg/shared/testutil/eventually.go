package testutil

import (
	"testing"
	"time"
)

// Wait is how long Eventually waits: long enough for -race tests on a loaded 2-core machine, short enough that a
// condition that never holds fails the test rather than the test binary's timeout.
const Wait = 10 * time.Second

// Eventually polls cond until it holds, and fails the test (Fatalf, so call it from the test's goroutine) if it does
// not within Wait; what names the condition in the failure ("the new route", "pod B ready").
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Wait, what, cond)
}

// EventuallyWithin is Eventually with its own deadline, for a test whose point is how soon cond holds or that waits
// on something slower than Wait allows. It polls every millisecond at first and backs off to every 50 ms, so a
// quick condition is seen at once and a slow one (an HTTP request to a child process) is not hammered.
func EventuallyWithin(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(pause)
	}
}

// Settled polls value every 50 ms until it has not changed for quiet, or within has passed, and returns its last
// value: how far a client got before backpressure stopped it, how many buffers a server holds once it is still.
func Settled(value func() int64, quiet, within time.Duration) int64 {
	last, still := value(), time.Duration(0)
	for deadline := time.Now().Add(within); still < quiet && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if v := value(); v == last {
			still += 50 * time.Millisecond
		} else {
			last, still = v, 0
		}
	}
	return last
}
