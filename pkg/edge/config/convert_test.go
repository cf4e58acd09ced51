package config

import (
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

func TestRouteIdentityAndRateLimit(t *testing.T) {
	t.Parallel()
	dir := `{"http": {"routes": [
	   {"backend_name": "web", "identity_header": false, "rate_limit": {"requests_per_second": 2.5}},
	   {"backend_name": "web", "identity_header": true, "rate_limit": {"requests_per_second": 0.5, "burst": 3}},
	   {"backend_name": "web"}]},
	 "grpc": {"routes": [{"backend_name": "api", "identity_header": false, "rate_limit": {"requests_per_second": 10, "burst": 20}}]}}`
	d, err := Parse([]byte(dir), []byte(basePool), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		noIdentity bool
		limit      *route.RateLimit
		gotNo      bool
		got        *route.RateLimit
	}{
		{"opt-out, burst defaults to the rate rounded up", true, &route.RateLimit{RequestsPerSecond: 2.5, Burst: 3}, d.HTTPRoutes[0].NoIdentityHeader, d.HTTPRoutes[0].RateLimit},
		{"explicit true, fractional rate", false, &route.RateLimit{RequestsPerSecond: 0.5, Burst: 3}, d.HTTPRoutes[1].NoIdentityHeader, d.HTTPRoutes[1].RateLimit},
		{"defaults", false, nil, d.HTTPRoutes[2].NoIdentityHeader, d.HTTPRoutes[2].RateLimit},
		{"gRPC", true, &route.RateLimit{RequestsPerSecond: 10, Burst: 20}, d.GRPCRoutes[0].NoIdentityHeader, d.GRPCRoutes[0].RateLimit},
	}
	for _, tt := range tests {
		if tt.gotNo != tt.noIdentity {
			t.Errorf("%s: NoIdentityHeader = %v, want %v", tt.name, tt.gotNo, tt.noIdentity)
		}
		if (tt.got == nil) != (tt.limit == nil) || tt.got != nil && *tt.got != *tt.limit {
			t.Errorf("%s: RateLimit = %+v, want %+v", tt.name, tt.got, tt.limit)
		}
	}
}

// TestRouteIdentityAndRateLimitSurvive: the compiled routing tables (what admission reads) and the documents
// written back (kedge discover) keep identity_header and rate_limit.
func TestRouteIdentityAndRateLimitSurvive(t *testing.T) {
	t.Parallel()
	dir := `{"http": {"routes": [{"backend_name": "web", "identity_header": false, "rate_limit": {"requests_per_second": 2, "burst": 4}}]},
	 "grpc": {"routes": [{"backend_name": "api", "identity_header": false, "rate_limit": {"requests_per_second": 1, "burst": 1}}]}}`
	d, err := Parse([]byte(dir), []byte(basePool), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	h, err := route.NewHTTPTable(d.HTTPRoutes, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := route.NewGRPCTable(d.GRPCRoutes, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := h.Routes()[0]; !r.NoIdentityHeader || r.RateLimit == nil || *r.RateLimit != (route.RateLimit{RequestsPerSecond: 2, Burst: 4}) {
		t.Errorf("compiled HTTP route: identity off %v, limit %+v", r.NoIdentityHeader, r.RateLimit)
	}
	if r := g.Routes()[0]; !r.NoIdentityHeader || r.RateLimit == nil || *r.RateLimit != (route.RateLimit{RequestsPerSecond: 1, Burst: 1}) {
		t.Errorf("compiled gRPC route: identity off %v, limit %+v", r.NoIdentityHeader, r.RateLimit)
	}
	docDir, _ := documents(d)
	hr, gr := docDir.GetHttp().GetRoutes()[0], docDir.GetGrpc().GetRoutes()[0]
	if hr.IdentityHeader == nil || *hr.IdentityHeader || hr.GetRateLimit().GetBurst() != 4 {
		t.Errorf("http document route: identity_header %v, rate_limit %v", hr.IdentityHeader, hr.GetRateLimit())
	}
	if gr.IdentityHeader == nil || *gr.IdentityHeader || gr.GetRateLimit().GetRequestsPerSecond() != 1 {
		t.Errorf("grpc document route: identity_header %v, rate_limit %v", gr.IdentityHeader, gr.GetRateLimit())
	}
}
