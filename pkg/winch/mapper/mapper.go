// Package mapper decides, without I/O, which kedge serves a destination that a client asked winch for: ordered
// direct and regexp routes, per protocol, with named regexp groups templated into the kedge URL. A Mapper is
// immutable once built and safe for concurrent use.
package mapper

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Protocol says which of winch's proxies a route serves, and which proxy is asking in Map.
type Protocol uint8

// Protocols. A route with ProtocolAny serves both proxies.
const (
	ProtocolAny  Protocol = iota // both the HTTP and the gRPC proxy
	ProtocolHTTP                 // the HTTP proxy: absolute-form requests and CONNECT tunnels
	ProtocolGRPC                 // the gRPC proxy, by :authority
)

// String returns the protocol's name as written in the mapper document.
func (p Protocol) String() string {
	switch p {
	case ProtocolAny:
		return "ANY"
	case ProtocolHTTP:
		return "HTTP"
	case ProtocolGRPC:
		return "GRPC"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// Route is one mapping rule. Exactly one of Direct and Regexp is set; the config loader guarantees that and that
// URL is a valid kedge URL (after substitution, for regexp routes).
type Route struct {
	// Direct is the destination "host" or "host:port" this route serves. The host part is compared
	// case-insensitively, the port exactly; a key without a port matches only destinations without one.
	Direct string
	// Regexp is searched for (unanchored) in the destination, whose host part is lower-cased first.
	Regexp *regexp.Regexp
	// URL is the kedge URL. For regexp routes every "${name}" naming a group of Regexp is replaced with the text
	// that group matched ("" if it took no part in the match); any other "${...}" stays as written.
	URL string
	// ProxyAuth names the auth source whose token goes to kedge in Proxy-Authorization; "" for none.
	ProxyAuth string
	// BackendAuth names the auth source whose token goes to the destination in Authorization; "" for none.
	BackendAuth string
	// Protocol restricts the route to one proxy; ProtocolAny serves both.
	Protocol Protocol
	// MITM asks the HTTP proxy to terminate CONNECT tunnels to this destination with winch's local CA.
	MITM bool
}

// Destination is the result of a successful Map.
type Destination struct {
	// KedgeURL is the kedge to forward to. It is a fresh value that the caller may modify.
	KedgeURL *url.URL
	// ProxyAuth and BackendAuth are the route's auth source names ("" for none).
	ProxyAuth, BackendAuth string
	// MITM is the route's MITM setting.
	MITM bool
	// Route is the index of the matching route in the slice given to New.
	Route int
}

// Mapper maps destinations to kedges. Build it with New.
type Mapper struct {
	routes []compiled
	// Indexes into routes, in config order, of the routes each protocol consults.
	http, grpc, all []int
}

// compiled is a Route prepared for cheap matching.
type compiled struct {
	Route
	// directKey is Direct with its host part lower-cased.
	directKey string
	// kedgeURL is the parsed URL of a direct route (nil if urlErr is set).
	kedgeURL *url.URL
	urlErr   error
	// template is the regexp route's URL split into literal text and group references.
	template []segment
}

// segment is a piece of a URL template: literal text, or (group >= 0) the text of a regexp group.
type segment struct {
	text  string
	group int
}

// New prepares routes for matching; they are tried in the given order. New never fails: a route whose URL cannot
// be used (which the config loader prevents) makes Map return an error for the destinations it matches.
func New(routes []Route) *Mapper {
	m := &Mapper{routes: make([]compiled, len(routes))}
	for i, r := range routes {
		c := compiled{Route: r}
		if r.Regexp != nil {
			c.template = parseTemplate(r.URL, r.Regexp)
		} else {
			c.directKey = lowerHost(r.Direct)
			c.kedgeURL, c.urlErr = kedgeURL(r.URL)
		}
		m.routes[i] = c
		m.all = append(m.all, i)
		if r.Protocol == ProtocolAny || r.Protocol == ProtocolHTTP {
			m.http = append(m.http, i)
		}
		if r.Protocol == ProtocolAny || r.Protocol == ProtocolGRPC {
			m.grpc = append(m.grpc, i)
		}
	}
	return m
}

// Len returns the number of routes in the mapper.
func (m *Mapper) Len() int { return len(m.routes) }

// Map finds the kedge for hostport, the destination exactly as the client wrote it ("host" or "host:port"; an IPv6
// literal in brackets), using the routes of proto (ProtocolAny consults every route). The first matching route
// wins.
//
// Errors: *IPLiteralError (errors.Is ErrIPLiteral) for an IP address, ErrInvalidDestination for anything that is
// not a host name with an optional port, *NotDestinationError (errors.Is ErrNotKedgeDestination) when no route
// matches, and a plain error when the matching route's URL is unusable for this destination.
func (m *Mapper) Map(hostport string, proto Protocol) (Destination, error) {
	if err := checkDestination(hostport); err != nil {
		return Destination{}, err
	}
	var list []int
	switch proto {
	case ProtocolHTTP:
		list = m.http
	case ProtocolGRPC:
		list = m.grpc
	default:
		list = m.all
	}
	lower := lowerHost(hostport)
	for _, i := range list {
		r := &m.routes[i]
		var u *url.URL
		if r.Regexp == nil {
			if r.directKey != lower {
				continue
			}
			if r.urlErr != nil {
				return Destination{}, fmt.Errorf("mapper: route %d: %w", i, r.urlErr)
			}
			cp := *r.kedgeURL
			u = &cp
		} else {
			match := r.Regexp.FindStringSubmatchIndex(lower)
			if match == nil {
				continue
			}
			var err error
			if u, err = kedgeURL(expand(r.template, lower, match)); err != nil {
				return Destination{}, fmt.Errorf("mapper: route %d for %s: %w", i, hostport, err)
			}
		}
		return Destination{KedgeURL: u, ProxyAuth: r.ProxyAuth, BackendAuth: r.BackendAuth, MITM: r.MITM, Route: i}, nil
	}
	return Destination{}, &NotDestinationError{HostPort: hostport}
}

// ParseKedgeURL parses s and checks that it can name a kedge: an http or https URL with a host. Map applies it to
// every URL it returns; the config loader uses it to check route URLs.
func ParseKedgeURL(s string) (*url.URL, error) { return kedgeURL(s) }

func kedgeURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("kedge URL %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("kedge URL %q: scheme must be http or https", s)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("kedge URL %q: no host", s)
	}
	return u, nil
}

// parseTemplate splits tmpl at every "${name}" that names a group of re. Other "${...}" stay literal text.
func parseTemplate(tmpl string, re *regexp.Regexp) []segment {
	var segs []segment
	lit := 0 // start of the pending literal text
	for i := 0; i < len(tmpl); {
		j := strings.Index(tmpl[i:], "${")
		if j < 0 {
			break
		}
		start := i + j
		end := strings.IndexByte(tmpl[start+2:], '}')
		if end < 0 {
			break
		}
		name := tmpl[start+2 : start+2+end]
		next := start + 2 + end + 1
		if g := groupIndex(re, name); g > 0 {
			if start > lit {
				segs = append(segs, segment{text: tmpl[lit:start], group: -1})
			}
			segs = append(segs, segment{group: g})
			lit = next
			i = next
			continue
		}
		i = start + 2 // not a group: keep scanning after "${", the text stays literal
	}
	if lit < len(tmpl) {
		segs = append(segs, segment{text: tmpl[lit:], group: -1})
	}
	return segs
}

// groupIndex returns the index of re's group called name, or -1. Unnamed groups have no name and never match.
func groupIndex(re *regexp.Regexp, name string) int {
	if name == "" {
		return -1
	}
	return re.SubexpIndex(name)
}

// expand builds the URL from segs with the groups of match (a FindStringSubmatchIndex result on s).
func expand(segs []segment, s string, match []int) string {
	var b strings.Builder
	for _, seg := range segs {
		if seg.group < 0 {
			b.WriteString(seg.text)
			continue
		}
		if lo, hi := match[2*seg.group], match[2*seg.group+1]; lo >= 0 {
			b.WriteString(s[lo:hi])
		}
	}
	return b.String()
}
