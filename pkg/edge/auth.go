package edge

import (
	"net/http"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
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
