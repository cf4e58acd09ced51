package route

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

var fuzzHTTPRoutes = []HTTPRoute{
	{Backend: "exact_hdr", Host: "a.example.com", Headers: map[string]string{"X-Env": "canary"}},
	{Backend: "wild_path", Host: "*.example.com", Paths: []string{"/api/*", "/health"}},
	{Backend: "exact_port", Host: "a.example.com", Port: 8443},
	{Backend: "fwd", Mode: ModeForward, Paths: []string{"/fwd*"}},
	{Backend: "exact_plain", Host: "b.example.com"},
	{Backend: "star", Host: "*", Paths: []string{"/star"}},
	{Backend: "wild_deep", Host: "*.b.example.com", Mode: ModeReverse},
	{Backend: "ip", Host: "10.0.0.1"},
}

// asciiLower is the reference lower-casing: host matching folds ASCII only.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// refHTTPMatch is a naive linear matcher over the normalised routes, the reference for the indexed Match.
func refHTTPMatch(routes []HTTPRoute, req *HTTPRequest) int {
	host := asciiLower(strings.TrimSuffix(req.Host, "."))
	if host == "" {
		return -1
	}
	for i, r := range routes {
		switch {
		case r.Host == "" || r.Host == "*":
		case strings.HasPrefix(r.Host, "*."):
			if !strings.HasSuffix(host, r.Host[1:]) || host == r.Host[1:] {
				continue
			}
		case host != r.Host:
			continue
		}
		if r.Port != 0 && r.Port != req.Port || r.Mode != ModeAny && r.Mode != req.Mode {
			continue
		}
		if len(r.Paths) > 0 && !slices.ContainsFunc(r.Paths, func(p string) bool {
			if s, ok := strings.CutSuffix(p, "*"); ok {
				return strings.HasPrefix(req.Path, s)
			}
			return req.Path == p
		}) {
			continue
		}
		ok := true
		for k, v := range r.Headers {
			ok = ok && slices.Contains(req.Header.Values(k), v)
		}
		if ok {
			return i
		}
	}
	return -1
}

func FuzzHTTPMatch(f *testing.F) {
	f.Add("a.example.com", uint16(443), "/", "canary", false)
	f.Add("A.EXAMPLE.COM.", uint16(8443), "/x", "", false)
	f.Add("x.example.com", uint16(80), "/api/../health", "", false)
	f.Add("x.b.example.com", uint16(80), "/api/%2e%2e/fwd", "", true)
	f.Add("10.0.0.1", uint16(1), "/star", "", true)
	f.Add("", uint16(0), "", "", false)
	f.Add(".", uint16(0), "/star", "", false)
	f.Add(".example.com", uint16(0), "/health", "", false)
	tbl := mustHTTPTable(f, fuzzHTTPRoutes, nil)
	f.Fuzz(func(t *testing.T, host string, port uint16, escPath, env string, forward bool) {
		p, err := CanonicalPath(escPath)
		if err != nil {
			return
		}
		req := &HTTPRequest{Host: host, Port: uint32(port), Path: p.Match, Header: http.Header{"X-Env": {env}}, Mode: ModeReverse}
		if forward {
			req.Mode = ModeForward
		}
		r, ok := tbl.Match(req)
		got := -1
		if ok {
			for i := range tbl.routes {
				if &tbl.routes[i] == r {
					got = i
				}
			}
			if got < 0 {
				t.Fatalf("Match returned a route outside the table")
			}
		}
		if want := refHTTPMatch(tbl.Routes(), req); got != want {
			t.Fatalf("Match(%+v) = route %d, reference %d", req, got, want)
		}
		upper := *req
		upper.Host = asciiUpper(host)
		if r2, ok2 := tbl.Match(&upper); ok2 != ok || r2 != r {
			t.Fatalf("Match(%q) and Match(%q) differ", host, upper.Host)
		}
	})
}

func FuzzGRPCMatch(f *testing.F) {
	f.Add("/com.example.b.Svc/M", "authority_b.service.local:443", "c")
	f.Add("com.example./", "[2001:db8::1]:1234", "")
	f.Add("/org.example.Exact/", "x", "")
	f.Add("//org.example.Other/Only", "", "")
	tbl := mustGRPCTable(f, originalGRPCRoutes, nil)
	f.Fuzz(func(t *testing.T, method, authority, md string) {
		req := &GRPCRequest{FullMethod: method, Authority: authority, Metadata: metadata.MD{"kedge-route": {md}}}
		r, ok := tbl.Match(req)
		// "pkg.Svc/M" and "/pkg.Svc/M" route alike (but "//pkg.Svc/M" is a different name).
		if bare := strings.TrimPrefix(method, "/"); !strings.HasPrefix(bare, "/") {
			a, b := *req, *req
			a.FullMethod, b.FullMethod = bare, "/"+bare
			r1, ok1 := tbl.Match(&a)
			if r2, ok2 := tbl.Match(&b); ok1 != ok2 || r1 != r2 {
				t.Fatalf("Match(%q) and Match(%q) differ", a.FullMethod, b.FullMethod)
			}
		}
		upper := *req
		upper.Authority = asciiUpper(authority)
		if r2, ok2 := tbl.Match(&upper); ok2 != ok || r2 != r {
			t.Fatalf("Match(@%q) and Match(@%q) differ", authority, upper.Authority)
		}
	})
}

// refAdhocRule returns the index of the first rule that a valid request name may match, by the documented rules.
func refAdhocRule(rules []Adhoc, name string) int {
	addr, ipErr := netip.ParseAddr(name)
	special := ipErr == nil || looksNumeric(name)
	for i, r := range rules {
		pat := asciiLower(r.NamePattern)
		if s, ok := strings.CutPrefix(pat, "*"); ok {
			if !special && strings.HasSuffix(name, s) {
				return i
			}
			continue
		}
		if p, err := netip.ParseAddr(pat); err == nil && ipErr == nil && p == addr || pat == name {
			return i
		}
	}
	return -1
}

func FuzzAdhocTarget(f *testing.F) {
	for _, s := range []string{"pod-0.namespace.pods.cluster.local:11201", "a.default.port", "127.1", "2130706433:9999",
		"[::1]:80", "10.0.0.7:80", "Exact.Example.COM.:443", "x.pods.cluster.local:0443", "a.failing.replace:80",
		"pod.pods.cluster.local.with.replace", "localhost:9999", "[2001:db8::7]", "nonsecure.backends.test:1023"} {
		f.Add(s)
	}
	tbl := mustHTTPTable(f, nil, originalAdhocRules)
	f.Fuzz(func(t *testing.T, hostport string) {
		got, err := tbl.AdhocHostPort(hostport)
		if err != nil {
			return
		}
		host, _, _, serr := SplitHostPort(hostport)
		if serr != nil {
			t.Fatalf("AdhocHostPort(%q) = %+v although SplitHostPort fails: %v", hostport, got, serr)
		}
		name := asciiLower(strings.TrimSuffix(host, "."))
		if a, err := netip.ParseAddr(name); err == nil {
			name = a.String()
		}
		i := refAdhocRule(originalAdhocRules, name)
		if i < 0 {
			t.Fatalf("AdhocHostPort(%q) = %+v, but no rule matches %q", hostport, got, name)
		}
		r := originalAdhocRules[i]
		allowed := slices.Contains(r.AllowedPorts, got.Port) || slices.ContainsFunc(r.AllowedRanges,
			func(pr PortRange) bool { return pr.From <= got.Port && got.Port <= pr.To })
		if !allowed || got.Port == 0 || got.Port > 65535 {
			t.Fatalf("AdhocHostPort(%q) = %+v: port not allowed by rule %d (%q)", hostport, got, i, r.NamePattern)
		}
		if r.Replace == nil && got.Host != name {
			t.Fatalf("AdhocHostPort(%q) = %+v, want host %q", hostport, got, name)
		}
	})
}
