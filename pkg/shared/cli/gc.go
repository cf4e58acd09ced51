package cli

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the GOGC kedge and winch serve with when the environment sets none.
const DefaultGCPercent = 200

// SetDefaultGC sets the garbage collector to DefaultGCPercent unless GOGC is set: a proxy's heap is small and
// churns per request, so collecting at 3x the live heap instead of Go's 2x halves the collections for a few MB.
// GOGC and GOMEMLIMIT override it as usual.
func SetDefaultGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
	}
}
