package serve

import (
	"net"
	"net/netip"
	"testing"
)

func TestClientKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr  net.Addr
		want  string
		keyed bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32", true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32", true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::/64", true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1}, "2001:db8:1:2::/64", true},
		{&net.UnixAddr{Name: "/tmp/s", Net: "unix"}, "invalid Prefix", false},
	}
	for _, tt := range tests {
		got, keyed := clientKey(tt.addr)
		if got.String() != tt.want || keyed != tt.keyed {
			t.Errorf("clientKey(%v) = %v, %v; want %s, %v", tt.addr, got, keyed, tt.want, tt.keyed)
		}
	}
}

func TestConnLimiterPerClientBuckets(t *testing.T) {
	t.Parallel()
	l, err := NewConnLimiter(ConnLimits{PerIP: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	if r := l.acquire(a, true); r != "" {
		t.Fatalf("first from a: %q", r)
	}
	if r := l.acquire(a, true); r != RejectPerIP {
		t.Errorf("second from a: %q, want %q", r, RejectPerIP)
	}
	if r := l.acquire(b, true); r != "" {
		t.Errorf("first from b: %q", r)
	}
	if r := l.acquire(netip.Prefix{}, false); r != "" {
		t.Errorf("unkeyed: %q", r)
	}
	l.release(a, true)
	if r := l.acquire(a, true); r != "" {
		t.Errorf("a after a release: %q", r)
	}
	if len(l.byIP) != 2 || l.Open() != 3 {
		t.Errorf("byIP %v, open %d", l.byIP, l.Open())
	}
}

func TestHTTPServerPingsHTTP2(t *testing.T) {
	t.Parallel()
	if s := HTTPServer(nil, HTTPOptions{}, nil); s.HTTP2.SendPingTimeout != DefaultSendPingTimeout {
		t.Errorf("default SendPingTimeout = %v", s.HTTP2.SendPingTimeout)
	}
	if s := HTTPServer(nil, HTTPOptions{SendPingTimeout: -1}, nil); s.HTTP2.SendPingTimeout != 0 {
		t.Errorf("SendPingTimeout -1 gives %v, want 0 (off)", s.HTTP2.SendPingTimeout)
	}
}
