package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// ErrBadHostPort is matched (errors.Is) by every error SplitHostPort returns.
var ErrBadHostPort = errors.New("route: malformed host:port")

// hostPortError is a constant error so that SplitHostPort never allocates, even when it fails.
type hostPortError string

const (
	errMalformedPort hostPortError = "route: malformed port number"
	errMalformedHost hostPortError = "route: malformed host"
)

func (e hostPortError) Error() string { return string(e) }

// Is makes every hostPortError match ErrBadHostPort.
func (e hostPortError) Is(target error) bool { return target == ErrBadHostPort }

// SplitHostPort splits "host[:port]" (IPv6 in brackets) without allocating; hasPort is false if no port is given.
// The host is returned as received (brackets removed, case kept). A port must be 1-65535 in plain decimal digits
// without sign or leading zeros ("h:0443", "h:+443", "h:65536", "h:443:80" are errors). An empty port ("h:") counts
// as no port (RFC 3986 §6.2.3). An unbracketed host with several colons (a bare IPv6 address) is an error.
func SplitHostPort(hostport string) (host string, port uint32, hasPort bool, err error) {
	var rest string
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", 0, false, errMalformedHost
		}
		host, rest = hostport[1:end], hostport[end+1:]
		// Brackets are for IPv6 literals only; "[example.com]" would slip past checks that look at the name.
		if !strings.Contains(host, ":") || strings.ContainsAny(host, "[]") {
			return "", 0, false, errMalformedHost
		}
		if rest != "" && rest[0] != ':' {
			return "", 0, false, errMalformedHost
		}
	} else {
		i := strings.IndexByte(hostport, ':')
		if i < 0 {
			host = hostport
		} else {
			if strings.LastIndexByte(hostport, ':') != i {
				return "", 0, false, errMalformedHost
			}
			host, rest = hostport[:i], hostport[i:]
		}
		if strings.ContainsAny(host, "[]") {
			return "", 0, false, errMalformedHost
		}
	}
	if len(rest) <= 1 { // no port, or an empty one after ':'
		return host, 0, false, nil
	}
	port, ok := parsePort(rest[1:])
	if !ok {
		return "", 0, false, errMalformedPort
	}
	return host, port, true, nil
}

// parsePort parses a decimal port 1-65535 without sign or leading zeros.
func parsePort(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	var n uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint32(c-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return n, true
}

// trimDot removes one trailing dot: "example.com." names the same host as "example.com".
func trimDot(host string) string {
	return strings.TrimSuffix(host, ".")
}

// lowerASCII lower-cases ASCII letters only (strings.ToLower would turn the Kelvin sign into 'k'). It allocates
// only when s has upper-case letters.
func lowerASCII(s string) string {
	if !hasUpper(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// hasUpper reports whether s contains an ASCII upper-case letter.
func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// hostMatcher is a compiled host condition: any host, one exact host, or a "*.suffix" wildcard.
type hostMatcher struct {
	any    bool
	exact  string // lower case, no trailing dot
	suffix string // ".suffix", lower case; set for wildcards
}

// match reports whether host (port-less, any case, trailing dot already removed) satisfies m. An empty host never
// matches, not even "any": a request must name a host to be routed.
func (m *hostMatcher) match(host string) bool {
	switch {
	case host == "":
		return false
	case m.any:
		return true
	case m.suffix != "":
		return len(host) > len(m.suffix) && wire.EqualFoldASCII(host[len(host)-len(m.suffix):], m.suffix)
	default:
		return wire.EqualFoldASCII(host, m.exact)
	}
}

// maxHostLen bounds host names (RFC 1035: 253 characters without the trailing dot).
const maxHostLen = 253

// compileHost validates and normalises a route host: "" or "*" (any), "*.suffix", an exact DNS name, or an IP
// literal (IPv6 without brackets). It returns the normalised spelling for Routes().
func compileHost(h string) (hostMatcher, string, error) {
	lower := lowerASCII(h)
	norm := trimDot(lower)
	switch {
	case strings.HasPrefix(lower, "*."):
		name := trimDot(lower[2:])
		if err := checkDNSName(name); err != nil {
			return hostMatcher{}, "", fmt.Errorf("host %q: %w", h, err)
		}
		return hostMatcher{suffix: "." + name}, "*." + name, nil
	case norm == "" && h != "":
		return hostMatcher{}, "", fmt.Errorf("host %q: empty name", h)
	case norm == "" || norm == "*":
		return hostMatcher{any: true}, norm, nil
	case strings.Contains(norm, "*"):
		return hostMatcher{}, "", fmt.Errorf("host %q: bad wildcard: %q is allowed only as a leading \"*.\"", h, "*")
	}
	if addr, err := netip.ParseAddr(norm); err == nil {
		norm = addr.String()
		return hostMatcher{exact: norm}, norm, nil
	}
	if err := checkDNSName(norm); err != nil {
		return hostMatcher{}, "", fmt.Errorf("host %q: %w", h, err)
	}
	return hostMatcher{exact: norm}, norm, nil
}

// checkDNSName accepts lower-case names of letters, digits, '-' and '_' in dot-separated labels of 1-63 characters,
// at most 253 characters in all.
func checkDNSName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if len(name) > maxHostLen {
		return fmt.Errorf("name longer than %d characters", maxHostLen)
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return errors.New("empty label")
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("character %q not allowed in a host name", c)
		}
		label++
		if label > 63 {
			return errors.New("label longer than 63 characters")
		}
	}
	if label == 0 {
		return errors.New("empty label")
	}
	return nil
}

// ValidHost reports whether host (as SplitHostPort returns it) is an IP literal without a zone or a DNS name made of
// letters, digits, '-', '_' and '.': nothing a URL parser could read as userinfo, a path or a second authority.
func ValidHost(host string) bool {
	if host == "" || len(host) > 253+1 {
		return false
	}
	if strings.IndexByte(host, ':') >= 0 {
		a, err := netip.ParseAddr(host)
		return err == nil && a.Zone() == ""
	}
	for i := 0; i < len(host); i++ {
		switch c := host[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
