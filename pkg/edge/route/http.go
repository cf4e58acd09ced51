package route

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// HTTPRequest holds the facts of one HTTP request that routing needs. The caller fills it (no allocation needed).
type HTTPRequest struct {
	// Host is the host without port, as received. Matching is case-insensitive and ignores one trailing dot.
	Host string
	// Port is the effective port: the caller has already applied the default (443 on the TLS port, 80 for
	// X-Forwarded-Proto: http or an http:// absolute-form request).
	Port uint32
	// Path is the match form of the canonical path (Path.Match of CanonicalPath).
	Path string
	// Header is the request's header.
	Header http.Header
	// Mode is ModeReverse, ModeForward or ModeConnect.
	Mode Mode
}

// HTTPTable is a compiled, immutable list of HTTP routes plus the HTTP adhoc rules. It is safe for concurrent use.
type HTTPTable struct {
	routes   []HTTPRoute // normalised copies; Match returns pointers into it
	compiled []httpMatcher
	// byHost indexes routes with an exact host by that (lower-case) host; other lists, in order, the routes with any
	// host or a wildcard. Match walks both lists merged by index, so the first matching route still wins.
	byHost map[string][]int32
	other  []int32
	adhoc  adhocRules
}

type httpMatcher struct {
	host    hostMatcher
	port    uint32
	paths   []pathRule
	pathCI  bool // paths hold lower-case rules, compared ignoring ASCII case
	headers []kv
	mode    Mode
}

// pathRule is "/prefix*" (prefix true, s without the '*') or an exact path.
type pathRule struct {
	s      string
	prefix bool
}

// kv is one required header or metadata value.
type kv struct{ key, value string }

// NewHTTPTable validates and compiles routes (first match wins) and adhoc rules. The error lists every invalid route
// and rule by index and reason. The table does not keep references to the arguments.
func NewHTTPTable(routes []HTTPRoute, adhoc []Adhoc) (*HTTPTable, error) {
	t := &HTTPTable{
		routes:   make([]HTTPRoute, len(routes)),
		compiled: make([]httpMatcher, len(routes)),
		byHost:   make(map[string][]int32),
	}
	var errs []error
	for i, r := range routes {
		m, norm, err := compileHTTPRoute(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("route: http route %d (backend %q): %w", i, r.Backend, err))
			continue
		}
		t.routes[i], t.compiled[i] = norm, m
		if m.host.exact != "" {
			t.byHost[m.host.exact] = append(t.byHost[m.host.exact], int32(i))
		} else {
			t.other = append(t.other, int32(i))
		}
	}
	var adhocErrs []error
	t.adhoc, adhocErrs = compileAdhoc("http", adhoc)
	if err := errors.Join(append(errs, adhocErrs...)...); err != nil {
		return nil, err
	}
	return t, nil
}

func compileHTTPRoute(r HTTPRoute) (httpMatcher, HTTPRoute, error) {
	var m httpMatcher
	if r.Backend == "" {
		return m, r, errors.New("empty backend name")
	}
	host, hostNorm, err := compileHost(r.Host)
	if err != nil {
		return m, r, err
	}
	if r.Port > 65535 {
		return m, r, fmt.Errorf("port %d > 65535", r.Port)
	}
	if r.Mode > ModeConnect {
		return m, r, fmt.Errorf("unknown proxy mode %d", r.Mode)
	}
	m.host, m.port, m.mode, m.pathCI = host, r.Port, r.Mode, r.PathCaseInsensitive
	for _, p := range r.Paths {
		pr, err := compilePathRule(p)
		if err != nil {
			return m, r, err
		}
		if m.pathCI {
			pr.s = strings.ToLower(pr.s)
		}
		m.paths = append(m.paths, pr)
	}
	norm := HTTPRoute{
		Backend: r.Backend, Host: hostNorm, Port: r.Port, Paths: slices.Clone(r.Paths), Mode: r.Mode,
		PathCaseInsensitive: r.PathCaseInsensitive, AllowEncodedSlashes: r.AllowEncodedSlashes,
		Discovered: r.Discovered, RequiredPermissions: slices.Clone(r.RequiredPermissions),
		AllowedIdentities: slices.Clone(r.AllowedIdentities),
		NoIdentityHeader:  r.NoIdentityHeader, RateLimit: r.RateLimit.Clone(),
	}
	if len(r.Headers) > 0 {
		norm.Headers = make(map[string]string, len(r.Headers))
		for k, v := range r.Headers {
			if k == "" {
				return m, r, errors.New("empty header name")
			}
			ck := textproto.CanonicalMIMEHeaderKey(k)
			if _, dup := norm.Headers[ck]; dup {
				return m, r, fmt.Errorf("header %q given twice (names are case-insensitive)", ck)
			}
			norm.Headers[ck] = v
		}
		m.headers = sortedKV(norm.Headers)
	}
	return m, norm, nil
}

// compilePathRule validates a path rule: "*" (any path), "/prefix*", or an exact path, in the canonical match form
// (a rule that CanonicalPath would change could never match: no dot segments, "//", escapes or ';' parameters).
func compilePathRule(p string) (pathRule, error) {
	if p == "*" {
		return pathRule{prefix: true}, nil
	}
	s, prefix := strings.CutSuffix(p, "*")
	if !strings.HasPrefix(s, "/") {
		return pathRule{}, fmt.Errorf("path rule %q: must start with '/'", p)
	}
	if strings.Contains(s, "*") {
		return pathRule{}, fmt.Errorf("path rule %q: bad wildcard: %q is allowed only at the end", p, "*")
	}
	if strings.ContainsRune(s, '%') || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 ||
		strings.ContainsAny(s, "#?\\") || hasDotSegment(s) || strings.Contains(s, "//") {
		return pathRule{}, fmt.Errorf("path rule %q: not a canonical decoded path (no dot segments, no \"//\", no %%XX escapes)", p)
	}
	if strings.ContainsRune(s, ';') {
		return pathRule{}, fmt.Errorf("path rule %q: ';' starts segment parameters, which requests are matched without", p)
	}
	return pathRule{s: s, prefix: prefix}, nil
}

// hasDotSegment reports whether p has a complete "." or ".." segment (or a dotParam one).
func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p[1:], "/") {
		if dotSegment(seg) != notDot {
			return true
		}
	}
	return false
}

func sortedKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, kv{k, m[k]})
	}
	return out
}

// Match returns the first route whose conditions all hold. The pointer refers into the table: do not modify it.
// It does not allocate.
func (t *HTTPTable) Match(req *HTTPRequest) (*HTTPRoute, bool) {
	if t == nil || req == nil {
		return nil, false
	}
	host := trimDot(req.Host)
	if host == "" {
		return nil, false
	}
	var exact []int32
	if len(host) <= maxHostLen && len(t.byHost) > 0 {
		if hasUpper(host) {
			var buf [maxHostLen]byte
			for i := 0; i < len(host); i++ {
				c := host[i]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				buf[i] = c
			}
			exact = t.byHost[string(buf[:len(host)])] // no allocation: the compiler elides the conversion
		} else {
			exact = t.byHost[host]
		}
	}
	other := t.other
	for len(exact) > 0 || len(other) > 0 {
		var i int32
		if len(other) == 0 || len(exact) > 0 && exact[0] < other[0] {
			i, exact = exact[0], exact[1:]
		} else {
			i, other = other[0], other[1:]
		}
		if t.compiled[i].match(host, req) {
			return &t.routes[i], true
		}
	}
	return nil, false
}

func (m *httpMatcher) match(host string, req *HTTPRequest) bool {
	if m.port != 0 && m.port != req.Port {
		return false
	}
	if m.mode != req.Mode && (m.mode != ModeAny || req.Mode == ModeConnect) {
		return false // ANY covers reverse and forward requests; tunnels need an explicit CONNECT route
	}
	if !m.host.match(host) {
		return false
	}
	if len(m.paths) > 0 && !matchPaths(m.paths, req.Path, m.pathCI) {
		return false
	}
	for _, h := range m.headers {
		if !slices.Contains(req.Header[h.key], h.value) {
			return false
		}
	}
	return true
}

// matchPaths reports whether p matches one of rules; with ci the rules are lower case and ASCII case is ignored.
func matchPaths(rules []pathRule, p string, ci bool) bool {
	for _, r := range rules {
		if len(p) < len(r.s) || !r.prefix && len(p) != len(r.s) {
			continue
		}
		if ci && equalFoldLower(p[:len(r.s)], r.s) || !ci && p[:len(r.s)] == r.s {
			return true
		}
	}
	return false
}

// equalFoldLower reports whether s equals lower (which is lower case) ignoring the case of ASCII letters in s.
func equalFoldLower(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// Routes returns the normalised routes in order (for /debug/config). Callers must not modify them.
func (t *HTTPTable) Routes() []HTTPRoute {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// AdhocRules returns the normalised adhoc rules in order (for /debug/config). Callers must not modify them.
func (t *HTTPTable) AdhocRules() []Adhoc {
	if t == nil {
		return nil
	}
	return slices.Clone(t.adhoc.src)
}

// Adhoc finds the adhoc destination for a request that no route matched: host without port, and the port if the
// request named one (hasPort; otherwise the matching rule's default applies). It returns ErrNoRoute when no rule's
// name pattern matches, or an *AdhocError.
func (t *HTTPTable) Adhoc(host string, port uint32, hasPort bool) (Target, error) {
	if t == nil {
		return Target{}, ErrNoRoute
	}
	return t.adhoc.target(host, port, hasPort)
}

// AdhocHostPort is Adhoc for a "host[:port]" string (a Host header or CONNECT target, IPv6 in brackets); a malformed
// one is an *AdhocError with BadRequest set ("adhoc: malformed port number: ...").
func (t *HTTPTable) AdhocHostPort(hostport string) (Target, error) {
	if t == nil {
		return Target{}, ErrNoRoute
	}
	return t.adhoc.targetHostPort(hostport)
}
