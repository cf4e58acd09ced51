package mapper

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Sentinel errors of Map, for errors.Is.
var (
	// ErrNotKedgeDestination: no route matches; the caller decides whether to go direct or refuse.
	ErrNotKedgeDestination = errors.New("mapper: not a kedge destination")
	// ErrIPLiteral: the destination is an IP address, which kedge cannot route (it routes by name).
	ErrIPLiteral = errors.New("mapper: IP address destination")
	// ErrInvalidDestination: the destination is not a host name with an optional port.
	ErrInvalidDestination = errors.New("mapper: invalid destination")
)

// NotDestinationError is returned by Map when no route matches. Its message is part of winch's contract: the gRPC
// proxy returns it to clients as is.
type NotDestinationError struct {
	// HostPort is the destination as given to Map.
	HostPort string
}

// Error returns "<hostport> is not a kedge destination".
func (e *NotDestinationError) Error() string { return e.HostPort + " is not a kedge destination" }

// Is makes errors.Is(err, ErrNotKedgeDestination) true.
func (e *NotDestinationError) Is(target error) bool { return target == ErrNotKedgeDestination }

// IPLiteralError is returned by Map for an IP-address destination.
type IPLiteralError struct {
	// IP is the address as the client wrote it, without port and brackets.
	IP string
}

// Error returns the original's message, "kedge requires hostname to proxy to but was given IP address <ip>".
func (e *IPLiteralError) Error() string {
	return "kedge requires hostname to proxy to but was given IP address " + e.IP
}

// Is makes errors.Is(err, ErrIPLiteral) true.
func (e *IPLiteralError) Is(target error) bool { return target == ErrIPLiteral }

// maxHostLen is the longest DNS name (RFC 1035), plus a trailing dot.
const maxHostLen = 254

// CheckDestination returns the error Map returns for a destination that is not a host name with an optional port:
// *IPLiteralError for an IP address, ErrInvalidDestination for anything else that is not "host" or "host:port".
// The config loader uses it for direct route keys.
func CheckDestination(hostport string) error { return checkDestination(hostport) }

// checkDestination accepts "host" and "host:port" where host is a DNS-style name. Rejecting every other character
// matters for regexp routes: the text of a group lands in the kedge URL, so a destination like
// "evil.example/x.internal.example.com" must never turn "https://${cluster}.kedge.example.com" into a URL whose host
// is "evil.example".
func checkDestination(hostport string) error {
	if ip, ok := ipLiteral(hostport); ok {
		return &IPLiteralError{IP: ip}
	}
	host, port, hasPort := strings.Cut(hostport, ":")
	if hasPort && !validPort(port) {
		return fmt.Errorf("%w: %q: port must be a number from 1 to 65535", ErrInvalidDestination, hostport)
	}
	if !validHost(host) {
		return fmt.Errorf("%w: %q is not a host name", ErrInvalidDestination, hostport)
	}
	return nil
}

// validHost accepts letters, digits, '-', '_' and '.', without empty labels (a single trailing dot is allowed).
func validHost(h string) bool {
	if h == "" || len(h) > maxHostLen || h[0] == '.' || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// validPort accepts decimal 1..65535 without sign or spaces.
func validPort(p string) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n >= 1 && n <= 65535
}

// ipLiteral reports whether hostport's host is an IP address and returns the address as written. Besides IPv4 and
// IPv6 (bracketed or bare, with or without zone and port), a host whose last label is numeric ("127.1",
// "2130706433", "0x7f.1") counts as an address, as kedge reads it too (wire.NumericHost).
func ipLiteral(hostport string) (string, bool) {
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", false
		}
		inner := hostport[1:end]
		if _, err := netip.ParseAddr(inner); err == nil {
			return inner, true
		}
		return "", false
	}
	if strings.Count(hostport, ":") > 1 {
		if _, err := netip.ParseAddr(hostport); err == nil {
			return hostport, true
		}
		return "", false
	}
	host, _, _ := strings.Cut(hostport, ":")
	if wire.NumericHost(host) {
		return host, true
	}
	return "", false
}

// lowerHost lower-cases the ASCII letters of s (the port part has none), allocating only when there are some.
func lowerHost(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
