package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Target is an adhoc destination: the name to resolve (after dns_name_replace) and the port to dial. Host is lower
// case without a trailing dot; an IP literal (only when a rule names it exactly) is in netip.Addr.String() form.
// The caller still checks the resolved address at dial time (loopback, link-local, metadata) unless Explicit.
type Target struct {
	Host string
	Port uint32
	// Explicit marks a destination the operator wrote down: a rule whose pattern is this IP literal matched, and no
	// replace rewrote it. Only such a target may reach an address the dial guard refuses (loopback, link-local,
	// metadata), and only at exactly Host:Port. A name, even one a rule names exactly ("localhost", "127.1"), is
	// never explicit: what it resolves to is not written in the rule.
	Explicit bool
	// RequiredPermissions and AllowedIdentities are the requirement of the rule that allowed the destination (as
	// Adhoc's). They are shared with the table: read-only.
	RequiredPermissions []string
	AllowedIdentities   []string
}

// ErrNoRoute means that no route and no adhoc rule matched. The message is the original kedge's.
var ErrNoRoute = errors.New("unknown route to service")

// AdhocError is an adhoc rule's refusal or failure. BadRequest marks errors caused by the request (malformed or
// disallowed port, invalid host name), answered with 400 / InvalidArgument; others are configuration errors.
type AdhocError struct {
	Msg        string
	BadRequest bool
}

// Error returns Msg, e.g. "adhoc: port 19000 is not allowed".
func (e *AdhocError) Error() string { return e.Msg }

// defaultAdhocPort is the port of a port-less request when the rule's DefaultPort is 0 (HTTP and gRPC alike; the
// original used 81 for gRPC by mistake).
const defaultAdhocPort = 80

// adhocRule is one compiled Adhoc.
type adhocRule struct {
	exact    string     // exact lower-case name; "" for wildcards
	ip       netip.Addr // valid when exact is an IP literal
	suffix   string     // for "*suffix" patterns (may be "" for "*")
	wildcard bool
	defPort  uint32
	ports    []uint32
	ranges   []PortRange
	replace  *NameReplace // lower case
	perms    []string     // required permissions (any-of)
	idents   []string     // allowed client-certificate names
}

// adhocRules is an ordered, immutable list of compiled rules.
type adhocRules struct {
	rules []adhocRule
	src   []Adhoc
}

// compileAdhoc validates rules; kind ("http" or "grpc") names them in errors.
func compileAdhoc(kind string, in []Adhoc) (adhocRules, []error) {
	var errs []error
	out := adhocRules{rules: make([]adhocRule, 0, len(in)), src: make([]Adhoc, 0, len(in))}
	for i, a := range in {
		r, norm, err := compileAdhocRule(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("route: %s adhoc rule %d (%q): %w", kind, i, a.NamePattern, err))
			continue
		}
		out.rules = append(out.rules, r)
		out.src = append(out.src, norm)
	}
	return out, errs
}

func compileAdhocRule(a Adhoc) (adhocRule, Adhoc, error) {
	var r adhocRule
	pat := trimDot(lowerASCII(a.NamePattern))
	switch {
	case pat == "":
		return r, a, errors.New("empty name pattern")
	case strings.HasPrefix(pat, "*"):
		r.wildcard, r.suffix = true, pat[1:]
		if strings.Contains(r.suffix, "*") {
			return r, a, errors.New(`bad wildcard: "*" is allowed only in the leading position`)
		}
		if err := checkNameChars(r.suffix); err != nil {
			return r, a, err
		}
	case strings.Contains(pat, "*"):
		return r, a, errors.New(`bad wildcard: "*" is allowed only in the leading position`)
	default:
		if ip, err := netip.ParseAddr(pat); err == nil {
			r.ip, pat = ip, ip.String()
		} else if err := checkDNSName(pat); err != nil {
			return r, a, err
		}
		r.exact = pat
	}
	if a.DefaultPort > 65535 {
		return r, a, fmt.Errorf("default port %d > 65535", a.DefaultPort)
	}
	r.defPort = a.DefaultPort
	if r.defPort == 0 {
		r.defPort = defaultAdhocPort
	}
	for _, p := range a.AllowedPorts {
		if p == 0 || p > 65535 {
			return r, a, fmt.Errorf("allowed port %d outside 1-65535", p)
		}
	}
	for _, pr := range a.AllowedRanges {
		if pr.From > pr.To {
			return r, a, fmt.Errorf("port range %d-%d: from > to", pr.From, pr.To)
		}
		if pr.To > 65535 {
			return r, a, fmt.Errorf("port range %d-%d: port > 65535", pr.From, pr.To)
		}
	}
	r.ports, r.ranges = slices.Clone(a.AllowedPorts), slices.Clone(a.AllowedRanges)
	if a.Replace != nil {
		rep := NameReplace{Pattern: lowerASCII(a.Replace.Pattern), Substitution: lowerASCII(a.Replace.Substitution)}
		if rep.Pattern == "" {
			return r, a, errors.New("empty replace pattern")
		}
		if err := checkNameChars(rep.Substitution); err != nil {
			return r, a, fmt.Errorf("replace substitution: %w", err)
		}
		r.replace = &rep
	}
	r.perms, r.idents = slices.Clone(a.RequiredPermissions), slices.Clone(a.AllowedIdentities)
	norm := Adhoc{NamePattern: pat, DefaultPort: a.DefaultPort, AllowedPorts: r.ports, AllowedRanges: r.ranges,
		RequiredPermissions: r.perms, AllowedIdentities: r.idents}
	if r.wildcard {
		norm.NamePattern = "*" + r.suffix
	}
	if r.replace != nil {
		rep := *r.replace
		norm.Replace = &rep
	}
	return r, norm, nil
}

// checkNameChars accepts the characters of a lower-case DNS name (for suffixes and substitutions, which may be
// partial names).
func checkNameChars(s string) error {
	if len(s) > maxHostLen {
		return fmt.Errorf("longer than %d characters", maxHostLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("character %q not allowed in a host name", c)
		}
	}
	if strings.Contains(s, "..") {
		return errors.New("empty label")
	}
	return nil
}

// allows reports whether port is in the rule's allow list or ranges.
func (r *adhocRule) allows(port uint32) bool {
	if slices.Contains(r.ports, port) {
		return true
	}
	for _, pr := range r.ranges {
		if pr.From <= port && port <= pr.To {
			return true
		}
	}
	return false
}

// target applies the rules to a request for host (without port) and port. The first rule whose name pattern
// matches decides; a port it does not allow is an error, later rules are not tried.
func (a *adhocRules) target(host string, port uint32, hasPort bool) (Target, error) {
	name := trimDot(lowerASCII(host))
	if name == "" {
		return Target{}, &AdhocError{Msg: "adhoc: empty host name", BadRequest: true}
	}
	ip, ipErr := netip.ParseAddr(name)
	isIP := ipErr == nil
	if !isIP {
		if err := checkDNSName(name); err != nil {
			return Target{}, &AdhocError{Msg: fmt.Sprintf("adhoc: invalid host name %q: %v", host, err), BadRequest: true}
		}
	}
	// Names the resolver may turn into loopback or another address ("127.1", "2130706433", "0x7f.1", "localhost")
	// match only a rule that names them exactly, never a wildcard.
	special := isIP || looksNumeric(name)
	for i := range a.rules {
		r := &a.rules[i]
		switch {
		case r.wildcard:
			if special || !strings.HasSuffix(name, r.suffix) {
				continue
			}
		case isIP:
			if !r.ip.IsValid() || r.ip != ip {
				continue
			}
			name = ip.String()
		case name != r.exact:
			continue
		}
		if !hasPort {
			port = r.defPort
		}
		if !r.allows(port) {
			return Target{}, &AdhocError{Msg: fmt.Sprintf("adhoc: port %d is not allowed", port), BadRequest: true}
		}
		if r.replace != nil {
			if !strings.Contains(name, r.replace.Pattern) {
				return Target{}, &AdhocError{Msg: fmt.Sprintf(
					"adhoc: replace pattern %q does not match host %q: configuration error", r.replace.Pattern, name)}
			}
			name = strings.ReplaceAll(name, r.replace.Pattern, r.replace.Substitution)
			if looksNumeric(name) || checkDNSName(name) != nil { // IP literals included
				return Target{}, &AdhocError{Msg: fmt.Sprintf("adhoc: host %q rewritten to %q, which is not a DNS name", host, name)}
			}
		}
		// A replace never yields an IP literal (refused above), so an IP host is the rule's own literal.
		return Target{Host: name, Port: port, Explicit: isIP && r.replace == nil,
			RequiredPermissions: r.perms, AllowedIdentities: r.idents}, nil
	}
	return Target{}, ErrNoRoute
}

// HostPort returns the "host:port" to dial, IPv6 literals in brackets.
func (t Target) HostPort() string {
	return net.JoinHostPort(t.Host, strconv.FormatUint(uint64(t.Port), 10))
}

// targetHostPort is target for a "host[:port]" string (an :authority, a CONNECT target, a Host header).
func (a *adhocRules) targetHostPort(hostport string) (Target, error) {
	host, port, hasPort, err := SplitHostPort(hostport)
	switch {
	case err == errMalformedPort:
		return Target{}, &AdhocError{Msg: fmt.Sprintf("adhoc: malformed port number: %q", hostport), BadRequest: true}
	case err != nil:
		return Target{}, &AdhocError{Msg: fmt.Sprintf("adhoc: malformed host:port %q", hostport), BadRequest: true}
	}
	return a.target(host, port, hasPort)
}

// looksNumeric reports whether a valid DNS name is one that resolvers may treat as an address (wire.NumericHost:
// "127.1", "2130706433", "0x7f000001") or as the local host: it is or ends in "localhost".
func looksNumeric(name string) bool {
	return wire.NumericHost(name) || name == "localhost" || strings.HasSuffix(name, ".localhost")
}
