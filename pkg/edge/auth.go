package edge

import (
	"fmt"
	"net/http"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// debugRoute labels debug-port decisions in kedge_authz_decisions_total.
const debugRoute = "_debug"

// protectDebug is admin.Deps.Protect for --server_enable_oidc_for_debug_endpoints: every protected debug path
// needs a valid token with the global permission, sent as Authorization or Proxy-Authorization (the original's
// header) Bearer. Refusals are 401 with WWW-Authenticate and Proxy-Authenticate, or 403.
func protectDebug(gate *authz.Gate) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			creds := r.Header[wire.HeaderProxyAuthz]
			if len(creds) == 0 {
				creds = r.Header["Authorization"]
			}
			d := gate.Admit(r.Context(), authz.Request{Route: debugRoute, Routed: true, Credentials: creds, Peer: r.TLS})
			if !d.Allowed() {
				if code, _ := authn.HTTPStatus(d.Err); code == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", "Bearer")
				}
				authn.WriteHTTPError(w, d.Err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// authWarnings finds routes whose requirement cannot be met with the configured authentication: permissions need
// a token with a permissions claim, so without one such a route refuses everyone but allowed client certificates.
func authWarnings(dyn *config.Dynamic, auth config.AuthConfig) []string {
	if auth.OIDCProviderURL != "" && auth.OIDCPermsClaim != "" {
		return nil
	}
	why := "no OIDC permissions claim is configured (--server_oidc_perms_claim)"
	var out []string
	check := func(what string, perms, idents []string) {
		if len(perms) == 0 {
			return
		}
		who := "nobody"
		if len(idents) > 0 {
			who = "only the allowed client certificates"
		}
		out = append(out, fmt.Sprintf("%s has required_permissions but %s: %s can use it", what, why, who))
	}
	for i, r := range dyn.HTTPRoutes {
		check(fmt.Sprintf("http route %d (backend %q)", i, r.Backend), r.RequiredPermissions, r.AllowedIdentities)
	}
	for i, r := range dyn.GRPCRoutes {
		check(fmt.Sprintf("grpc route %d (backend %q)", i, r.Backend), r.RequiredPermissions, r.AllowedIdentities)
	}
	for i, a := range dyn.HTTPAdhoc {
		check(fmt.Sprintf("http adhoc rule %d (%q)", i, a.NamePattern), a.RequiredPermissions, a.AllowedIdentities)
	}
	for i, a := range dyn.GRPCAdhoc {
		check(fmt.Sprintf("grpc adhoc rule %d (%q)", i, a.NamePattern), a.RequiredPermissions, a.AllowedIdentities)
	}
	return out
}
