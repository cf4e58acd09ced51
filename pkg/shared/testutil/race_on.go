//go:build race

package testutil

// RaceExtraAllocs is what the race detector adds to an allocation count of a request path (testing.AllocsPerRun).
const RaceExtraAllocs = 1
