package config

import (
	"fmt"
	"strings"

	"github.com/kedge-proxy/kedge/proto/kedgeconfig"
)

// authRules checks what the director says about authorization and tunnels: the required_permissions and
// allowed_client_identities lists of routes and adhoc rules, and CONNECT routes.
func (v *validator) authRules(file string, dir *kedgeconfig.DirectorConfig, pool *kedgeconfig.BackendPoolConfig) {
	secured := map[string]bool{}
	for _, b := range pool.GetHttp().GetBackends() {
		if b.GetSecurity() != nil {
			secured[b.GetName()] = true
		}
	}
	for i, r := range dir.GetHttp().GetRoutes() {
		field := fmt.Sprintf("http.routes[%d]", i)
		v.requirement(file, field, r.GetRequiredPermissions(), r.GetAllowedClientIdentities())
		if r.GetProxyMode() != kedgeconfig.ProxyMode_CONNECT {
			continue
		}
		if len(r.GetPathRules()) > 0 {
			v.fail(file, field+".path_rules", "a CONNECT request has no path, so a CONNECT route with path_rules never matches")
		}
		if secured[r.GetBackendName()] {
			v.warn(file, field+".backend_name", "backend %q has security (TLS) settings, which CONNECT tunnels do not use: "+
				"the client's own TLS runs through the tunnel", r.GetBackendName())
		}
	}
	for i, a := range dir.GetHttp().GetAdhocRules() {
		v.requirement(file, fmt.Sprintf("http.adhoc_rules[%d]", i), a.GetRequiredPermissions(), a.GetAllowedClientIdentities())
	}
	for i, r := range dir.GetGrpc().GetRoutes() {
		v.requirement(file, fmt.Sprintf("grpc.routes[%d]", i), r.GetRequiredPermissions(), r.GetAllowedClientIdentities())
	}
	for i, a := range dir.GetGrpc().GetAdhocRules() {
		v.requirement(file, fmt.Sprintf("grpc.adhoc_rules[%d]", i), a.GetRequiredPermissions(), a.GetAllowedClientIdentities())
	}
}

// requirement checks the two lists of one route or rule: every entry is a non-empty token without spaces or control
// characters (claims and certificate names are compared exactly, so surrounding spaces would never match).
func (v *validator) requirement(file, field string, perms, identities []string) {
	for _, list := range []struct {
		name   string
		values []string
	}{{"required_permissions", perms}, {"allowed_client_identities", identities}} {
		seen := map[string]bool{}
		for j, p := range list.values {
			f := fmt.Sprintf("%s.%s[%d]", field, list.name, j)
			switch {
			case p == "":
				v.fail(file, f, "is empty")
			case strings.ContainsFunc(p, isSpaceOrControl):
				v.fail(file, f, "%q must not contain spaces or control characters (values are compared exactly)", p)
			case seen[p]:
				v.warn(file, f, "%q is listed twice", p)
			}
			seen[p] = true
		}
	}
}
