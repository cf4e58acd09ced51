package e2e

import (
	"testing"
	"time"
)

// The /proc parsers behind the benchmarks' CPU and memory figures.

func TestParseProcCPU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, stat string
		want       time.Duration
		ok         bool
	}{
		// utime 150 and stime 50 ticks of 10 ms; the command name holds a space and a parenthesis.
		{"plain", "42 (kedge) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 9 0 100 0 0", 2 * time.Second, true},
		{"odd name", "42 (nginx: worker) S) S 1 42 42 0 -1 4194560 100 0 0 0 3 4 0 0 20 0 9 0", 70 * time.Millisecond, true},
		{"short", "42 (kedge) S 1 42", 0, false},
		{"not numbers", "42 (kedge) S 1 42 42 0 -1 4194560 100 0 0 0 x y 0 0", 0, false},
	}
	for _, tc := range tests {
		got, err := parseProcCPU([]byte(tc.stat))
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%s: parseProcCPU = %v, %v; want %v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseProcRSS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, status string
		want         int64
		ok           bool
	}{
		{"plain", "Name:\tkedge\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n", 12345 << 10, true},
		{"kernel thread", "Name:\tkthreadd\nState:\tS (sleeping)\n", 0, false},
		{"other unit", "VmRSS:\t 12 MB\n", 0, false},
		{"not a number", "VmRSS:\t 1x kB\n", 0, false},
	}
	for _, tc := range tests {
		got, err := parseProcRSS([]byte(tc.status))
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("%s: parseProcRSS = %v, %v; want %v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}
