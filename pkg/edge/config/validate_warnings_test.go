package config

import (
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

func TestConfigWarnings(t *testing.T) {
	t.Parallel()
	guarded := &Dynamic{
		HTTPRoutes: []route.HTTPRoute{{Backend: "open"}, {Backend: "ops", RequiredPermissions: []string{"ops"}}},
		GRPCRoutes: []route.GRPCRoute{{Backend: "api", RequiredPermissions: []string{"x"}, AllowedIdentities: []string{"robot"}}},
		HTTPAdhoc:  []route.Adhoc{{NamePattern: "*.pods", RequiredPermissions: []string{"pods"}}},
		Warnings:   []string{"director.yaml: http.routes[0]: from the documents"},
	}
	withClaim := AuthConfig{OIDCProviderURL: "https://issuer.example.com", OIDCClientIDs: []string{"k"}, OIDCPermsClaim: "perms"}
	director := Source{DirectorPath: "director.yaml", BackendpoolPath: "pool.yaml"}
	token := AuthConfig{StaticToken: "t0ken"}
	open := &Dynamic{HTTPRoutes: []route.HTTPRoute{{Backend: "open"}}}
	noAuth := "no authentication configured: kedge proxies for anyone who can reach it (identity anonymous); " +
		"set --server_oidc_provider_url, --unsafe_bearer_token_proxy_auth_file or --server_tls_client_ca_files"
	tests := []struct {
		name string
		cfg  Config
		dyn  *Dynamic
		want []string
	}{
		{"permissions without a claim", Config{Documents: director, Auth: token}, guarded, []string{
			"director.yaml: http.routes[0]: from the documents",
			`http route 1 (backend "ops") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): nobody can use it`,
			`grpc route 0 (backend "api") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): only the allowed client certificates can use it`,
			`http adhoc rule 0 ("*.pods") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): nobody can use it`,
		}},
		{"with a claim only the documents' own", Config{Documents: director, Auth: withClaim}, guarded, []string{
			"director.yaml: http.routes[0]: from the documents",
		}},
		{"a director without routes", Config{Documents: director, Auth: token}, &Dynamic{}, []string{
			"the director config has no routes and no adhoc rules and Kubernetes discovery is off (--kedge_dynamic_routings_enabled): every proxied request gets no-route",
		}},
		{"no director at all", Config{Auth: token}, &Dynamic{}, []string{
			"no director config is given (--kedge_config_director_config_path) and Kubernetes discovery is off (--kedge_dynamic_routings_enabled): every proxied request gets no-route",
		}},
		{"adhoc rules only", Config{Documents: director, Auth: token}, &Dynamic{GRPCAdhoc: []route.Adhoc{{NamePattern: "*.svc"}}}, nil},
		{"no routes but discovery", Config{K8s: K8sConfig{DynamicRoutings: true}, Auth: token}, &Dynamic{}, nil},
		{"no authentication at all", Config{Documents: director}, open, []string{noAuth}},
		{"client certificates only", Config{Documents: director, TLSClientCAFiles: []string{"ca.pem"}}, open, nil},
		{"OIDC only", Config{Documents: director, Auth: withClaim}, open, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.cfg.Warnings(tt.dyn)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	if len(guarded.Warnings) != 1 {
		t.Error("Warnings changed dyn.Warnings")
	}
}

// TestRoutesSomething is --check-config's "routes nothing" error: the same condition and words as the warning.
func TestRoutesSomething(t *testing.T) {
	t.Parallel()
	director := Source{DirectorPath: "director.yaml"}
	tests := []struct {
		name    string
		cfg     Config
		dyn     *Dynamic
		wantErr string
	}{
		{"empty director", Config{Documents: director}, &Dynamic{}, "the director config has no routes and no adhoc rules"},
		{"no director", Config{}, &Dynamic{}, "no director config is given"},
		{"a route", Config{Documents: director}, &Dynamic{HTTPRoutes: []route.HTTPRoute{{Backend: "b"}}}, ""},
		{"discovery", Config{K8s: K8sConfig{DynamicRoutings: true}}, &Dynamic{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.RoutesSomething(tt.dyn)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("RoutesSomething = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
