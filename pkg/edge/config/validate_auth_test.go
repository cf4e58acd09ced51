package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

func TestAuthFieldsConvert(t *testing.T) {
	t.Parallel()
	director := `{
  "http": {
    "routes": [{"backend_name": "web", "host_matcher": "k8s.example.com", "port_matcher": 443, "proxy_mode": "CONNECT",
                "required_permissions": ["ops", "admin"], "allowed_client_identities": ["robot.example.com"]}],
    "adhoc_rules": [{"dns_name_matcher": "*.pods.local", "port": {"allowed": [443]},
                     "required_permissions": ["pods"], "allowed_client_identities": ["spiffe://example.org/a"]}]
  },
  "grpc": {
    "routes": [{"backend_name": "api", "required_permissions": ["grpc"], "allowed_client_identities": ["svc"]}],
    "adhoc_rules": [{"dns_name_matcher": "*.grpc.local", "port": {"allowed": [81]}, "requiredPermissions": ["g"]}]
  }
}`
	dyn, err := Parse([]byte(director), []byte(basePool), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	h := dyn.HTTPRoutes[0]
	if h.Mode != route.ModeConnect || !slices.Equal(h.RequiredPermissions, []string{"ops", "admin"}) ||
		!slices.Equal(h.AllowedIdentities, []string{"robot.example.com"}) {
		t.Errorf("http route = %+v", h)
	}
	if a := dyn.HTTPAdhoc[0]; !slices.Equal(a.RequiredPermissions, []string{"pods"}) ||
		!slices.Equal(a.AllowedIdentities, []string{"spiffe://example.org/a"}) {
		t.Errorf("http adhoc = %+v", a)
	}
	if g := dyn.GRPCRoutes[0]; !slices.Equal(g.RequiredPermissions, []string{"grpc"}) || !slices.Equal(g.AllowedIdentities, []string{"svc"}) {
		t.Errorf("grpc route = %+v", g)
	}
	if a := dyn.GRPCAdhoc[0]; !slices.Equal(a.RequiredPermissions, []string{"g"}) || a.AllowedIdentities != nil {
		t.Errorf("grpc adhoc = %+v", a)
	}
	// The tables accept what the loader produced.
	if _, err := route.NewHTTPTable(dyn.HTTPRoutes, dyn.HTTPAdhoc); err != nil {
		t.Errorf("route table: %v", err)
	}
}

func TestAuthFieldErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, director, pool string
		wantFields           []string
		wantReason           string
	}{
		{"empty permission", httpRoute(`, "required_permissions": ["ok", ""]`), "",
			[]string{"d http.routes[0].required_permissions[1]"}, "is empty"},
		{"identity with a space", grpcRoute(`, "allowed_client_identities": ["robot "]`), "",
			[]string{"d grpc.routes[0].allowed_client_identities[0]"}, "must not contain spaces"},
		{"adhoc permission with a control character", adhoc(`"dns_name_matcher": "a.com", "port": {"allowed": [80]}, "required_permissions": ["a\tb"]`), "",
			[]string{"d http.adhoc_rules[0].required_permissions[0]"}, "control characters"},
		{"CONNECT route with paths", httpRoute(`, "proxy_mode": "CONNECT", "path_rules": ["/x"]`), "",
			[]string{"d http.routes[0].path_rules"}, "a CONNECT request has no path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool := tt.pool
			if pool == "" {
				pool = basePool
			}
			_, err := Parse([]byte(tt.director), []byte(pool), "d", "b")
			if got := fieldsOf(err); !slices.Equal(got, tt.wantFields) {
				t.Fatalf("fields = %q, want %q (error: %v)", got, tt.wantFields, err)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Errorf("error %q lacks %q", err, tt.wantReason)
			}
		})
	}
}

func TestAuthFieldWarnings(t *testing.T) {
	t.Parallel()
	pool := `{"http": {"backends": [{"name": "web", "host": {"dns_name": "web.example.com", "port": 443},
  "security": {"insecure_skip_verify": true}}]}}`
	director := httpRoute(`, "proxy_mode": "CONNECT", "required_permissions": ["a", "a"]`)
	dyn, err := Parse([]byte(director), []byte(pool), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`d: http.routes[0].required_permissions[1]: "a" is listed twice`,
		`d: http.routes[0].backend_name: backend "web" has security (TLS) settings, which CONNECT tunnels do not use: the client's own TLS runs through the tunnel`,
	}
	if !slices.Equal(dyn.Warnings, want) {
		t.Errorf("warnings = %q\nwant %q", dyn.Warnings, want)
	}
}
