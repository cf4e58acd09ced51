package route

import (
	"errors"
	"testing"
)

func TestSplitHostPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		host    string
		port    uint32
		hasPort bool
		wantErr bool
	}{
		{in: "example.com", host: "example.com"},
		{in: "Example.COM:8443", host: "Example.COM", port: 8443, hasPort: true},
		{in: "example.com:", host: "example.com"},
		{in: "h:1", host: "h", port: 1, hasPort: true},
		{in: "h:65535", host: "h", port: 65535, hasPort: true},
		{in: "[2001:db8::1]:1234", host: "2001:db8::1", port: 1234, hasPort: true},
		{in: "[::1]", host: "::1"},
		{in: "[::1]:", host: "::1"},
		{in: "", host: ""},
		{in: ":80", host: "", port: 80, hasPort: true},
		{in: "10.0.0.1:80", host: "10.0.0.1", port: 80, hasPort: true},
		// Reliability catalog I8: ambiguous port forms are errors.
		{in: "h:0443", wantErr: true},
		{in: "h:+443", wantErr: true},
		{in: "h:443 ", wantErr: true},
		{in: "h:65536", wantErr: true},
		{in: "h:0", wantErr: true},
		{in: "h:443:80", wantErr: true},
		{in: "h:99999999999", wantErr: true},
		{in: "h:abc", wantErr: true},
		{in: "2001:db8::1", wantErr: true},
		{in: "[2001:db8::1", wantErr: true},
		{in: "[2001:db8::1]x", wantErr: true},
		{in: "[example.com]:80", wantErr: true},
		{in: "[[::1]]:80", wantErr: true},
		{in: "a]b:80", wantErr: true},
	}
	for _, tt := range tests {
		host, port, hasPort, err := SplitHostPort(tt.in)
		if tt.wantErr {
			if err == nil || !errors.Is(err, ErrBadHostPort) {
				t.Errorf("SplitHostPort(%q) = %q, %d, %v, %v; want an ErrBadHostPort error", tt.in, host, port, hasPort, err)
			}
			continue
		}
		if err != nil || host != tt.host || port != tt.port || hasPort != tt.hasPort {
			t.Errorf("SplitHostPort(%q) = %q, %d, %v, %v; want %q, %d, %v, nil",
				tt.in, host, port, hasPort, err, tt.host, tt.port, tt.hasPort)
		}
	}
}

func TestSplitHostPortAllocs(t *testing.T) {
	for _, in := range []string{"example.com:8443", "[2001:db8::1]:1234", "h:0443", "h:443:80"} {
		if n := testing.AllocsPerRun(100, func() { _, _, _, _ = SplitHostPort(in) }); n != 0 {
			t.Errorf("SplitHostPort(%q): %v allocs, want 0", in, n)
		}
	}
}

func TestCompileHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, norm string
		wantErr  bool
	}{
		{in: "", norm: ""},
		{in: "*", norm: "*"},
		{in: "Example.COM.", norm: "example.com"},
		{in: "*.Example.com", norm: "*.example.com"},
		{in: "2001:DB8:0::1", norm: "2001:db8::1"},
		{in: "10.0.0.1", norm: "10.0.0.1"},
		{in: "under_score.example.com", norm: "under_score.example.com"},
		{in: "a*.example.com", wantErr: true},
		{in: "*example.com", wantErr: true},
		{in: "*.*.example.com", wantErr: true},
		{in: "*.", wantErr: true},
		{in: ".", wantErr: true},
		{in: "a..b", wantErr: true},
		{in: "example.com:80", wantErr: true},
		{in: "[::1]", wantErr: true},
		{in: "exa mple.com", wantErr: true},
		{in: "\u212a.example.com", wantErr: true},
	}
	for _, tt := range tests {
		_, norm, err := compileHost(tt.in)
		if (err != nil) != tt.wantErr || err == nil && norm != tt.norm {
			t.Errorf("compileHost(%q) = %q, %v; want %q, error %v", tt.in, norm, err, tt.norm, tt.wantErr)
		}
	}
}

func TestValidHost(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"example.com", "a-b_c.example.com.", "10.0.0.1", "::1", "2001:db8::1", "localhost"} {
		if !ValidHost(h) {
			t.Errorf("ValidHost(%q) = false", h)
		}
	}
	for _, h := range []string{"", "evil.example.com:443@tun.example.com", "a@b", "a/b", "a b", "fe80::1%eth0", "a%2eb",
		"::g", "a?b", "a#b", "a\\b", "[::1]"} {
		if ValidHost(h) {
			t.Errorf("ValidHost(%q) = true", h)
		}
	}
}
