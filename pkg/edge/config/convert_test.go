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
