package edge

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestAuthWarnings(t *testing.T) {
	t.Parallel()
	dyn := &config.Dynamic{
		HTTPRoutes: []route.HTTPRoute{{Backend: "open"}, {Backend: "ops", RequiredPermissions: []string{"ops"}}},
		GRPCRoutes: []route.GRPCRoute{{Backend: "api", RequiredPermissions: []string{"x"}, AllowedIdentities: []string{"robot"}}},
		HTTPAdhoc:  []route.Adhoc{{NamePattern: "*.pods", RequiredPermissions: []string{"pods"}}},
	}
	got := authWarnings(dyn, config.AuthConfig{})
	want := []string{
		`http route 1 (backend "ops") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): nobody can use it`,
		`grpc route 0 (backend "api") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): only the allowed client certificates can use it`,
		`http adhoc rule 0 ("*.pods") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): nobody can use it`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	withClaim := config.AuthConfig{OIDCProviderURL: "https://issuer.example.com", OIDCClientID: "k", OIDCPermsClaim: "perms"}
	if got := authWarnings(dyn, withClaim); len(got) != 0 {
		t.Errorf("with a permissions claim: %q", got)
	}
}

func TestProtectDebug(t *testing.T) {
	t.Parallel()
	a, err := authn.New(authn.Config{StaticToken: "dbg"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gate, err := authz.NewGate(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := protectDebug(gate)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	tests := []struct {
		name   string
		header http.Header
		status int
	}{
		{"no token", nil, 401},
		{"Authorization", http.Header{"Authorization": {"Bearer dbg"}}, 200},
		{"Proxy-Authorization", http.Header{"Proxy-Authorization": {"Bearer dbg"}}, 200},
		{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, 401},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/debug/config", nil)
		req.Header = tt.header
		if req.Header == nil {
			req.Header = http.Header{}
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tt.status {
			t.Errorf("%s: %d, want %d", tt.name, rec.Code, tt.status)
		}
		if tt.status == 401 && rec.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
		}
	}
}
