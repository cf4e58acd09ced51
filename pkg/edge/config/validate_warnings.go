package config

import (
	"errors"
	"fmt"
)

// Warnings returns every warning about running dyn with the flags in c, in one list that startup and reloads log
// and --check-config prints: the documents' own warnings (dyn.Warnings), routes whose requirements the configured
// authentication cannot meet, and a kedge that would route nothing.
func (c *Config) Warnings(dyn *Dynamic) []string {
	out := append([]string(nil), dyn.Warnings...)
	out = append(out, c.emptyWarnings(dyn)...)
	out = append(out, c.noAuthWarnings()...)
	return append(out, authWarnings(dyn, c.Auth)...)
}

// noAuthWarnings says when kedge authenticates nobody: no OIDC issuer, no static token and no client CA, so every
// caller is "anonymous" and every route without requirements is open to whoever reaches the port.
func (c *Config) noAuthWarnings() []string {
	if c.Auth.OIDCProviderURL != "" || c.Auth.StaticToken != "" || len(c.TLSClientCAFiles) > 0 {
		return nil
	}
	return []string{"no authentication configured: kedge proxies for anyone who can reach it (identity anonymous); " +
		"set --server_oidc_provider_url, --unsafe_bearer_token_proxy_auth_file or --server_tls_client_ca_files"}
}

// emptyWarnings says when no request can be routed: no routes, no adhoc rules and no Kubernetes discovery.
func (c *Config) emptyWarnings(dyn *Dynamic) []string {
	if err := c.RoutesSomething(dyn); err != nil {
		return []string{err.Error()}
	}
	return nil
}

// RoutesSomething returns an error when dyn with the flags in c routes no request at all: no routes, no adhoc rules
// and no Kubernetes discovery. Startup and reloads log it as a warning (an empty director may be filled by a
// reload); --check-config treats it as a problem, since such a config is never what its author meant.
func (c *Config) RoutesSomething(dyn *Dynamic) error {
	if c.K8s.DynamicRoutings || len(dyn.HTTPRoutes)+len(dyn.GRPCRoutes)+len(dyn.HTTPAdhoc)+len(dyn.GRPCAdhoc) > 0 {
		return nil
	}
	what := "the director config has no routes and no adhoc rules"
	if c.Documents.DirectorPath == "" && c.Documents.DirectorInline == "" {
		what = "no director config is given (--kedge_config_director_config_path)"
	}
	return errors.New(what + " and Kubernetes discovery is off (--kedge_dynamic_routings_enabled): every proxied request gets no-route")
}

// authWarnings finds routes whose requirement cannot be met with the configured authentication: permissions need
// a token with a permissions claim, so without one such a route refuses everyone but allowed client certificates.
func authWarnings(dyn *Dynamic, auth AuthConfig) []string {
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
