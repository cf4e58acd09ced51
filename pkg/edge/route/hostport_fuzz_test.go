package route

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzSplitHostPort checks the parser of every Host header, :authority and CONNECT target: it never panics, a port
// it returns is 1-65535, a host ValidHost accepts carries nothing a URL parser reads as userinfo, path, query or
// escape, and such a host:port survives a round trip through net.JoinHostPort.
func FuzzSplitHostPort(f *testing.F) {
	for _, s := range []string{"example.com", "example.com:443", "[::1]:8443", "127.0.0.1:80", "a:443@b:443", "h:",
		"h:0443", "h:65536", "[example.com]:1", "x y:1", "evil.example.com:443@tun.example.com:443", "::1", "[fe80::1%eth0]:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostport string) {
		host, port, hasPort, err := SplitHostPort(hostport)
		if err != nil {
			return
		}
		if hasPort && (port < 1 || port > 65535) || !hasPort && port != 0 {
			t.Fatalf("SplitHostPort(%q): port %d, hasPort %v", hostport, port, hasPort)
		}
		if !ValidHost(host) {
			return
		}
		if strings.ContainsAny(host, "@/?#%\\ []") {
			t.Fatalf("ValidHost accepted %q from %q", host, hostport)
		}
		if !hasPort {
			return
		}
		joined := net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
		h2, p2, has2, err := SplitHostPort(joined)
		if err != nil || h2 != host || p2 != port || !has2 {
			t.Fatalf("round trip of %q via %q: %q %d %v %v", hostport, joined, h2, p2, has2, err)
		}
	})
}
