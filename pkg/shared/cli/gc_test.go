package cli

import (
	"runtime/debug"
	"testing"
)

func TestSetDefaultGC(t *testing.T) { // not parallel: the GC percent and the environment are the process's
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "")
	SetDefaultGC()
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, DefaultGCPercent)
	}

	t.Setenv("GOGC", "50") // the runtime read GOGC at start; SetDefaultGC must only leave the percent alone
	SetDefaultGC()
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent changed to %d", got)
	}
}
