//go:build !race

package httpproxy

// raceExtraAllocs is what the race detector adds to an allocation count of the proxy path.
const raceExtraAllocs = 0
