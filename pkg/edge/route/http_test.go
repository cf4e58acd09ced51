package route

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func mustHTTPTable(t testing.TB, routes []HTTPRoute, adhoc []Adhoc) *HTTPTable {
	t.Helper()
	tbl, err := NewHTTPTable(routes, adhoc)
	if err != nil {
		t.Fatalf("NewHTTPTable: %v", err)
	}
	return tbl
}

func backendOf(r *HTTPRoute, ok bool) string {
	if !ok {
		return ""
	}
	return r.Backend
}

// TestHTTPMatchOriginal ports the original router_test.go table. The original inferred a port-less request's port
// from the URL scheme; here the caller passes the effective port, so those cases use 80 and 443 explicitly.
func TestHTTPMatchOriginal(t *testing.T) {
	t.Parallel()
	tbl := mustHTTPTable(t, []HTTPRoute{
		{Backend: "backend_a", Host: "nopath.example.com", Port: 80},
		{Backend: "backend_b", Host: "nopath.example.com"},
		{Backend: "backend_c", Host: "nopath.port.example.com", Port: 8343},
		{Backend: "backend_d", Host: "path.port.example.com", Port: 83, Paths: []string{"/some/strict/path"}},
		{Backend: "backend_e", Host: "path.httpsdefport.example.com", Port: 443, Paths: []string{"/some/strict/path"}},
	}, nil)
	tests := []struct {
		name, host string
		port       uint32
		path, want string
	}{
		{"no port means 80 on plain http", "nopath.example.com", 80, "/", "backend_a"},
		{"explicit 80", "nopath.example.com", 80, "/", "backend_a"},
		{"explicit 80 with path", "nopath.example.com", 80, "/test/path", "backend_a"},
		{"other port falls to any-port route", "nopath.example.com", 83, "/", "backend_b"},
		{"specific port", "nopath.port.example.com", 8343, "/", "backend_c"},
		{"strict path and port", "path.port.example.com", 83, "/some/strict/path", "backend_d"},
		{"https explicit 443", "path.httpsdefport.example.com", 443, "/some/strict/path", "backend_e"},
		{"wrong host", "unknown.example.com", 80, "/", ""},
		{"wrong port", "nopath.port.example.com", 8344, "/", ""},
		{"wrong strict path", "path.port.example.com", 83, "/some/strict/path/more", ""},
		{"strict path without port match", "path.port.example.com", 80, "/some/strict/path", ""},
		{"https default port does not match port 80", "path.httpsdefport.example.com", 80, "/some/strict/path", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := backendOf(tbl.Match(&HTTPRequest{Host: tt.host, Port: tt.port, Path: tt.path, Mode: ModeReverse}))
			if got != tt.want {
				t.Errorf("Match(%s:%d%s) = %q, want %q", tt.host, tt.port, tt.path, got, tt.want)
			}
		})
	}
}

func TestHTTPMatchConditions(t *testing.T) {
	t.Parallel()
	tbl := mustHTTPTable(t, []HTTPRoute{
		{Backend: "hdr", Host: "hdr.example.com", Headers: map[string]string{"x-env": "canary"}},
		{Backend: "hdr_default", Host: "HDR.example.com"},
		{Backend: "api", Host: "*.api.example.com", Paths: []string{"/v1/*", "/health"}},
		{Backend: "fwd", Host: "proxied.example.com", Mode: ModeForward},
		{Backend: "rev", Host: "proxied.example.com", Mode: ModeReverse},
		{Backend: "star", Host: "*", Paths: []string{"/star*"}},
		{Backend: "any_path", Paths: []string{"*"}, Port: 9000},
		{Backend: "catch_all", Host: "*.example.com"},
	}, nil)
	canary := http.Header{"X-Env": {"stable", "canary"}}
	tests := []struct {
		name string
		req  HTTPRequest
		want string
	}{
		{"header any value", HTTPRequest{Host: "hdr.example.com", Header: canary}, "hdr"},
		{"header missing", HTTPRequest{Host: "hdr.example.com"}, "hdr_default"},
		{"header value case-sensitive", HTTPRequest{Host: "hdr.example.com", Header: http.Header{"X-Env": {"Canary"}}}, "hdr_default"},
		{"host case-insensitive", HTTPRequest{Host: "HDR.Example.COM", Header: canary}, "hdr"},
		{"host trailing dot", HTTPRequest{Host: "hdr.example.com.", Header: canary}, "hdr"},
		{"wildcard", HTTPRequest{Host: "eu.api.example.com", Path: "/v1/users"}, "api"},
		{"wildcard deep and upper case", HTTPRequest{Host: "A.B.API.example.com", Path: "/health"}, "api"},
		{"wildcard needs a label", HTTPRequest{Host: "api.example.com", Path: "/health"}, "catch_all"},
		{"wildcard suffix is label-aligned", HTTPRequest{Host: "eu.xapi.example.com", Path: "/health"}, "catch_all"},
		{"path exact only", HTTPRequest{Host: "eu.api.example.com", Path: "/health/x"}, "catch_all"},
		{"path prefix needs the slash", HTTPRequest{Host: "eu.api.example.com", Path: "/v1"}, "catch_all"},
		{"forward mode", HTTPRequest{Host: "proxied.example.com", Mode: ModeForward}, "fwd"},
		{"reverse mode", HTTPRequest{Host: "proxied.example.com", Mode: ModeReverse}, "rev"},
		{"star host", HTTPRequest{Host: "other.org", Path: "/start"}, "star"},
		{"any host, path star, port", HTTPRequest{Host: "other.org", Port: 9000, Path: "/x"}, "any_path"},
		{"no match", HTTPRequest{Host: "other.org", Port: 9001, Path: "/x"}, ""},
		{"empty host never matches", HTTPRequest{Host: "", Port: 9000, Path: "/x"}, ""},
		{"unicode fold is not ASCII fold", HTTPRequest{Host: "hdr.example.\u212aom", Header: canary}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := backendOf(tbl.Match(&tt.req)); got != tt.want {
				t.Errorf("Match(%+v) = %q, want %q", tt.req, got, tt.want)
			}
		})
	}
}

// TestHTTPMatchOrder checks that the host index keeps "first match wins" across exact and wildcard routes.
func TestHTTPMatchOrder(t *testing.T) {
	t.Parallel()
	tbl := mustHTTPTable(t, []HTTPRoute{
		{Backend: "exact_path", Host: "a.example.com", Paths: []string{"/only"}},
		{Backend: "wild", Host: "*.example.com", Paths: []string{"/w*"}},
		{Backend: "exact", Host: "a.example.com"},
		{Backend: "any"},
	}, nil)
	tests := []struct{ host, path, want string }{
		{"a.example.com", "/only", "exact_path"},
		{"a.example.com", "/w", "wild"},
		{"a.example.com", "/x", "exact"},
		{"b.example.com", "/x", "any"},
		{"b.example.com", "/w", "wild"},
	}
	for _, tt := range tests {
		if got := backendOf(tbl.Match(&HTTPRequest{Host: tt.host, Path: tt.path})); got != tt.want {
			t.Errorf("Match(%s%s) = %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestNewHTTPTableErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		route HTTPRoute
		adhoc Adhoc
		want  string // substring of the error
	}{
		{name: "empty backend", route: HTTPRoute{Host: "a.example.com"}, want: "http route 0 (backend \"\"): empty backend"},
		{name: "bad wildcard", route: HTTPRoute{Backend: "b", Host: "a.*.example.com"}, want: "bad wildcard"},
		{name: "port", route: HTTPRoute{Backend: "b", Port: 65536}, want: "port 65536 > 65535"},
		{name: "mode", route: HTTPRoute{Backend: "b", Mode: 7}, want: "unknown proxy mode"},
		{name: "empty path rule", route: HTTPRoute{Backend: "b", Paths: []string{""}}, want: "must start with '/'"},
		{name: "path wildcard", route: HTTPRoute{Backend: "b", Paths: []string{"/a*/b"}}, want: "bad wildcard"},
		{name: "dot path", route: HTTPRoute{Backend: "b", Paths: []string{"/a/../b*"}}, want: "not a canonical"},
		{name: "escaped path", route: HTTPRoute{Backend: "b", Paths: []string{"/a%20b"}}, want: "not a canonical"},
		{name: "duplicate header", route: HTTPRoute{Backend: "b", Headers: map[string]string{"x-a": "1", "X-A": "2"}}, want: "given twice"},
		{name: "adhoc range", adhoc: Adhoc{NamePattern: "*.x", AllowedRanges: []PortRange{{From: 20, To: 10}}}, want: "http adhoc rule 0 (\"*.x\"): port range 20-10: from > to"},
		{name: "adhoc range port", adhoc: Adhoc{NamePattern: "*.x", AllowedRanges: []PortRange{{From: 20, To: 70000}}}, want: "> 65535"},
		{name: "adhoc port", adhoc: Adhoc{NamePattern: "*.x", AllowedPorts: []uint32{70000}}, want: "outside 1-65535"},
		{name: "adhoc default port", adhoc: Adhoc{NamePattern: "*.x", DefaultPort: 70000}, want: "default port"},
		{name: "adhoc wildcard", adhoc: Adhoc{NamePattern: "a*.x"}, want: "bad wildcard"},
		{name: "adhoc double wildcard", adhoc: Adhoc{NamePattern: "**.x"}, want: "bad wildcard"},
		{name: "adhoc empty", adhoc: Adhoc{NamePattern: ""}, want: "empty name pattern"},
		{name: "adhoc replace", adhoc: Adhoc{NamePattern: "*.x", Replace: &NameReplace{}}, want: "empty replace pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var routes []HTTPRoute
			var adhoc []Adhoc
			if tt.route.Backend != "" || tt.route.Host != "" {
				routes = []HTTPRoute{tt.route}
			} else {
				adhoc = []Adhoc{tt.adhoc}
			}
			tbl, err := NewHTTPTable(routes, adhoc)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewHTTPTable: %v, %v; want error containing %q", tbl, err, tt.want)
			}
		})
	}
}

func TestNewHTTPTableReportsAll(t *testing.T) {
	t.Parallel()
	_, err := NewHTTPTable([]HTTPRoute{{Backend: "ok"}, {}, {Backend: "b", Host: "x*"}}, []Adhoc{{}})
	if err == nil {
		t.Fatal("NewHTTPTable accepted invalid routes")
	}
	for _, want := range []string{"http route 1 ", "http route 2 ", "http adhoc rule 0 "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestHTTPRoutesNormalised(t *testing.T) {
	t.Parallel()
	in := []HTTPRoute{{Backend: "b", Host: "A.Example.COM.", Headers: map[string]string{"x-env": "1"}, Paths: []string{"/a*"}}}
	tbl := mustHTTPTable(t, in, nil)
	in[0].Paths[0] = "/mutated"
	got := tbl.Routes()
	if len(got) != 1 || got[0].Host != "a.example.com" || got[0].Headers["X-Env"] != "1" || got[0].Paths[0] != "/a*" {
		t.Fatalf("Routes() = %+v", got)
	}
	r, ok := tbl.Match(&HTTPRequest{Host: "a.example.com", Path: "/a", Header: http.Header{"X-Env": {"1"}}})
	if !ok || r != &tbl.routes[0] {
		t.Fatalf("Match did not return the table's route: %v %v", r, ok)
	}
}

// benchHTTPRoutes makes n routes; the request of BenchmarkHTTPMatch matches the one before last.
func benchHTTPRoutes(n int) []HTTPRoute {
	routes := make([]HTTPRoute, 0, n)
	for i := 0; i < n; i++ {
		r := HTTPRoute{Backend: fmt.Sprintf("backend_%d", i), Host: fmt.Sprintf("svc%d.ns.example.com", i),
			Paths: []string{"/api/*", "/health"}, Headers: map[string]string{"X-Env": "prod"}}
		if i%5 == 0 {
			r.Host = fmt.Sprintf("*.zone%d.example.com", i)
		}
		routes = append(routes, r)
	}
	return routes
}

func benchHTTPRequest(n int) *HTTPRequest {
	return &HTTPRequest{Host: fmt.Sprintf("SVC%d.ns.Example.com", n-2), Port: 443, Path: "/api/v1/users",
		Header: http.Header{"X-Env": {"prod"}, "Accept": {"*/*"}}, Mode: ModeReverse}
}

func TestHTTPMatchAllocs(t *testing.T) {
	tbl := mustHTTPTable(t, benchHTTPRoutes(50), nil)
	reqs := []*HTTPRequest{benchHTTPRequest(50), {Host: "nothing.example.org", Path: "/"},
		{Host: "a.zone45.example.com", Path: "/health", Header: http.Header{"X-Env": {"prod"}}}}
	for _, req := range reqs {
		if n := testing.AllocsPerRun(200, func() { tbl.Match(req) }); n != 0 {
			t.Errorf("Match(%s): %v allocs per call, want 0", req.Host, n)
		}
	}
	if got := backendOf(tbl.Match(reqs[0])); got != "backend_48" {
		t.Fatalf("Match = %q, want backend_48", got)
	}
	if got := backendOf(tbl.Match(reqs[2])); got != "backend_45" {
		t.Fatalf("Match = %q, want backend_45", got)
	}
}

func BenchmarkHTTPMatch(b *testing.B) {
	tbl := mustHTTPTable(b, benchHTTPRoutes(50), nil)
	req := benchHTTPRequest(50)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tbl.Match(req); !ok {
			b.Fatal("no match")
		}
	}
}

// BenchmarkHTTPMatchWildcard matches a wildcard route near the end, which the host index cannot shortcut.
func BenchmarkHTTPMatchWildcard(b *testing.B) {
	tbl := mustHTTPTable(b, benchHTTPRoutes(50), nil)
	req := &HTTPRequest{Host: "a.zone45.example.com", Path: "/health", Header: http.Header{"X-Env": {"prod"}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tbl.Match(req); !ok {
			b.Fatal("no match")
		}
	}
}
