package wire_test

import (
	"net/netip"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

func TestNumericHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"::1", true},
		{"fe80::1%eth0", true},
		{"::ffff:127.0.0.1", true},
		{"127.1", true},
		{"2130706433", true},
		{"0x7f.1", true},
		{"0X7F000001", true},
		{"0x", true},
		{"0177.0.0.1", true},
		{"a.b.10.", true},
		{"example.com", false},
		{"10.example.com", false},
		{"0xg1", false},
		{"a.0xzz", false},
		{"localhost", false},
		{"1a", false},
		{"", false},
		{".", false},
	}
	for _, tt := range tests {
		if got := wire.NumericHost(tt.host); got != tt.want {
			t.Errorf("NumericHost(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

// FuzzNumericHost checks that every IP literal netip parses is numeric, whatever shortcut NumericHost takes.
func FuzzNumericHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4%x", "a:1", "example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if _, err := netip.ParseAddr(host); err == nil && !wire.NumericHost(host) {
			t.Errorf("NumericHost(%q) = false for an IP literal", host)
		}
	})
}
