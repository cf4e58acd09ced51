package route

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
)

func mustGRPCTable(t testing.TB, routes []GRPCRoute, adhoc []Adhoc) *GRPCTable {
	t.Helper()
	tbl, err := NewGRPCTable(routes, adhoc)
	if err != nil {
		t.Fatalf("NewGRPCTable: %v", err)
	}
	return tbl
}

func grpcBackendOf(r *GRPCRoute, ok bool) string {
	if !ok {
		return ""
	}
	return r.Backend
}

// originalGRPCRoutes follows the original router_test.go: a metadata route placed after a catch-all for "com.*" is
// shadowed by it, and "com.example." (trailing dot, no '*') matches nothing but itself.
var originalGRPCRoutes = []GRPCRoute{
	{Backend: "backend_a", Service: "com.example.a.*"},
	{Backend: "backend_b_authority", Service: "com.example.b.*", AuthorityHost: "authority_b.service.local"},
	{Backend: "backend_b_ipv6", Service: "com.example.b.*", AuthorityHost: "2001:db8::1", AuthorityPort: 1234},
	{Backend: "backend_b_port", Service: "com.example.b.*", AuthorityPort: 443},
	{Backend: "backend_dot", Service: "com.example."},
	{Backend: "backend_catch_all_com", Service: "com.*"},
	{Backend: "backend_metadata", Service: "com.example.c.*", Metadata: map[string]string{"Kedge-Route": "c"}},
	{Backend: "backend_service", Service: "org.example.Exact"},
	{Backend: "backend_method", Service: "/org.example.Other/Only"},
}

func TestGRPCMatchOriginal(t *testing.T) {
	t.Parallel()
	tbl := mustGRPCTable(t, originalGRPCRoutes, nil)
	tests := []struct {
		name, method, authority string
		md                      metadata.MD
		want                    string
	}{
		{"prefix", "/com.example.a.MyService/Method", "", nil, "backend_a"},
		{"authority host", "/com.example.b.MyService/Method", "authority_b.service.local", nil, "backend_b_authority"},
		{"authority host with port, any case", "/com.example.b.MyService/Method", "Authority_B.Service.Local:8443", nil, "backend_b_authority"},
		{"ipv6 authority with port", "/com.example.b.MyService/Method", "[2001:db8::1]:1234", nil, "backend_b_ipv6"},
		{"ipv6 authority wrong port", "/com.example.b.MyService/Method", "[2001:db8::1]:1235", nil, "backend_catch_all_com"},
		{"port-less authority counts as 443", "/com.example.b.MyService/Method", "other.local", nil, "backend_b_port"},
		{"explicit 443", "/com.example.b.MyService/Method", "other.local:443", nil, "backend_b_port"},
		{"malformed authority skips authority routes", "/com.example.b.MyService/Method", "a:b:c", nil, "backend_catch_all_com"},
		{"metadata route shadowed by catch-all", "/com.example.c.MyService/Method", "", metadata.Pairs("kedge-route", "c"), "backend_catch_all_com"},
		{"trailing dot is exact", "/com.example.", "", nil, "backend_dot"},
		{"service name matches all methods", "/org.example.Exact/Any", "", nil, "backend_service"},
		{"service name is not a prefix", "/org.example.ExactX/Any", "", nil, ""},
		{"full method", "/org.example.Other/Only", "", nil, "backend_method"},
		{"full method, other method", "/org.example.Other/Else", "", nil, ""},
		{"missing leading slash", "org.example.Exact/Any", "", nil, "backend_service"},
		{"unknown", "/io.other.Svc/M", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := grpcBackendOf(tbl.Match(&GRPCRequest{FullMethod: tt.method, Authority: tt.authority, Metadata: tt.md}))
			if got != tt.want {
				t.Errorf("Match(%s @ %s) = %q, want %q", tt.method, tt.authority, got, tt.want)
			}
		})
	}
}

func TestGRPCMatchMetadata(t *testing.T) {
	t.Parallel()
	tbl := mustGRPCTable(t, []GRPCRoute{
		{Backend: "md", Service: "pkg.Svc", Metadata: map[string]string{"X-Tenant": "blue"}},
		{Backend: "wild", Service: "pkg.*", AuthorityHost: "*.svc.example.com"},
	}, nil)
	tests := []struct {
		name      string
		md        metadata.MD
		authority string
		want      string
	}{
		{"any value", metadata.MD{"x-tenant": {"red", "blue"}}, "", "md"},
		{"value mismatch", metadata.MD{"x-tenant": {"Blue"}}, "", ""},
		{"wildcard authority", nil, "a.svc.example.com:443", "wild"},
		{"wildcard authority trailing dot", nil, "a.SVC.example.com.", "wild"},
		{"wildcard authority needs a label", nil, "svc.example.com", ""},
	}
	for _, tt := range tests {
		got := grpcBackendOf(tbl.Match(&GRPCRequest{FullMethod: "/pkg.Svc/M", Authority: tt.authority, Metadata: tt.md}))
		if got != tt.want {
			t.Errorf("%s: Match = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestNewGRPCTableErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		route GRPCRoute
		want  string
	}{
		{GRPCRoute{Service: "a.*"}, "grpc route 0 (backend \"\"): empty backend"},
		{GRPCRoute{Backend: "b", Service: "a.*.B"}, "bad wildcard"},
		{GRPCRoute{Backend: "b", Service: "**"}, "bad wildcard"},
		{GRPCRoute{Backend: "b", AuthorityHost: "a*b"}, "bad wildcard"},
		{GRPCRoute{Backend: "b", AuthorityPort: 65536}, "> 65535"},
		{GRPCRoute{Backend: "b", Metadata: map[string]string{"A": "1", "a": "2"}}, "given twice"},
	}
	for _, tt := range tests {
		_, err := NewGRPCTable([]GRPCRoute{tt.route}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewGRPCTable(%+v) error %v, want one containing %q", tt.route, err, tt.want)
		}
	}
	if _, err := NewGRPCTable(nil, []Adhoc{{NamePattern: "x*"}}); err == nil || !strings.Contains(err.Error(), "grpc adhoc rule 0") {
		t.Errorf("NewGRPCTable with a bad adhoc rule: %v", err)
	}
}

func benchGRPCRoutes(n int) []GRPCRoute {
	routes := make([]GRPCRoute, 0, n)
	for i := 0; i < n; i++ {
		r := GRPCRoute{Backend: fmt.Sprintf("backend_%d", i), Service: fmt.Sprintf("com.example.svc%d.*", i)}
		switch i % 3 {
		case 1:
			r.AuthorityHost = fmt.Sprintf("svc%d.example.com", i)
		case 2:
			r.Metadata = map[string]string{"x-env": "prod"}
			r.Service = fmt.Sprintf("com.example.svc%d.Service", i)
		}
		routes = append(routes, r)
	}
	return routes
}

func TestGRPCMatchAllocs(t *testing.T) {
	tbl := mustGRPCTable(t, benchGRPCRoutes(50), nil)
	reqs := []*GRPCRequest{
		{FullMethod: "/com.example.svc47.Service/Get", Authority: "svc47.example.com:443", Metadata: metadata.Pairs("x-env", "prod")},
		{FullMethod: "/com.example.svc46.Service/Get", Authority: "SVC46.example.com"},
		{FullMethod: "/nothing.Svc/Get", Authority: "[2001:db8::1]:443"},
	}
	want := []string{"backend_47", "backend_46", ""}
	for i, req := range reqs {
		if got := grpcBackendOf(tbl.Match(req)); got != want[i] {
			t.Errorf("Match(%s) = %q, want %q", req.FullMethod, got, want[i])
		}
		if n := testing.AllocsPerRun(200, func() { tbl.Match(req) }); n != 0 {
			t.Errorf("Match(%s): %v allocs per call, want 0", req.FullMethod, n)
		}
	}
}

func BenchmarkGRPCMatch(b *testing.B) {
	tbl := mustGRPCTable(b, benchGRPCRoutes(50), nil)
	req := &GRPCRequest{FullMethod: "/com.example.svc47.Service/Get", Authority: "svc47.example.com:443",
		Metadata: metadata.Pairs("x-env", "prod")}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := tbl.Match(req); !ok {
			b.Fatal("no match")
		}
	}
}
