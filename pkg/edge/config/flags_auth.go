package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

// DefaultTunnelIdleTimeout is the default of --server_tunnel_idle_timeout.
const DefaultTunnelIdleTimeout = 5 * time.Minute

// AuthConfig is the proxy authentication part of Config: OIDC ID tokens or the static token, both taken from
// Proxy-Authorization (proxy-authorization metadata for gRPC). Client certificates are configured by the TLS flags.
type AuthConfig struct {
	// OIDCProviderURL (--server_oidc_provider_url) is the issuer; empty disables OIDC.
	OIDCProviderURL string
	// OIDCClientIDs (--server_oidc_client_id, comma-separated or repeated) are the audiences kedge accepts: a token's
	// aud must name one of them (winch's client_id among them), and a token with several audiences needs an azp
	// that is one of them.
	OIDCClientIDs []string
	// OIDCPermsClaim (--server_oidc_perms_claim) names the claim holding the caller's permissions (a list of strings).
	OIDCPermsClaim string
	// OIDCRequiredPerms (--server_oidc_required_perm, alias --server_oidc_whitelist_perms): a token must carry one
	// of them to use kedge at all (any-of); empty means no global requirement.
	OIDCRequiredPerms []string
	// OIDCJWKSRefreshInterval (--server_oidc_jwks_refresh_interval) is how often the issuer's keys are fetched
	// again; keys it no longer publishes stop verifying then.
	OIDCJWKSRefreshInterval time.Duration
	// OIDCForDebugEndpoints (--server_enable_oidc_for_debug_endpoints) puts OIDC in front of the debug port, except
	// /_healthz, /readyz and the metrics path.
	OIDCForDebugEndpoints bool
	// StaticToken (--unsafe_bearer_token_proxy_auth) makes every proxied request carry it as a Bearer token.
	// Mutually exclusive with OIDC.
	StaticToken Secret
}

// Secret is a string that must not reach logs: it formats as cli.Redacted (or "" when empty), also inside structs
// printed with %v and in JSON.
type Secret string

// String returns cli.Redacted for a set secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return cli.Redacted
}

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText is String, for encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Authn returns the authn configuration the flags describe.
func (a AuthConfig) Authn() authn.Config {
	c := authn.Config{StaticToken: string(a.StaticToken)}
	if a.OIDCProviderURL != "" {
		c.OIDC = &authn.OIDCConfig{
			IssuerURL:          a.OIDCProviderURL,
			PermsClaim:         a.OIDCPermsClaim,
			RequiredPerms:      append([]string(nil), a.OIDCRequiredPerms...),
			KeyRefreshInterval: a.OIDCJWKSRefreshInterval,
		}
		if len(a.OIDCClientIDs) > 0 {
			c.OIDC.ClientID = a.OIDCClientIDs[0]
			c.OIDC.Audiences = append([]string(nil), a.OIDCClientIDs[1:]...)
		}
	}
	return c
}

// registerAuthFlags declares the proxy authentication and tunnel flags.
func (c *Config) registerAuthFlags(fs *pflag.FlagSet) {
	a := &c.Auth
	fs.StringVar(&a.OIDCProviderURL, "server_oidc_provider_url", "", "OIDC issuer URL (https); enables ID-token proxy authentication from 'Proxy-Authorization: Bearer <token>'. Unreachable at startup: kedge retries and /readyz says why")
	fs.Var(&listValue{list: &a.OIDCClientIDs}, "server_oidc_client_id", "OIDC client IDs accepted as token audience, comma-separated or repeated; winch's client_id must be one of them (required with --server_oidc_provider_url). A token with several audiences must name one of these in azp")
	fs.DurationVar(&a.OIDCJWKSRefreshInterval, "server_oidc_jwks_refresh_interval", authn.DefaultKeyRefreshInterval, "how often the OIDC issuer's signing keys are fetched again (sooner if its Cache-Control max-age says so); keys it no longer publishes stop verifying then")
	fs.StringVar(&a.OIDCPermsClaim, "server_oidc_perms_claim", "", "token claim holding the caller's permissions, a list of strings (required with --server_oidc_required_perm and for routes' required_permissions)")
	perms := &listValue{list: &a.OIDCRequiredPerms}
	fs.Var(perms, "server_oidc_required_perm", "comma-separated permissions; a token must carry at least one of them to use kedge at all. Routes may require more")
	fs.Var(perms, "server_oidc_whitelist_perms", "the original kedge's name of --server_oidc_required_perm (both add to the same list)")
	fs.BoolVar(&a.OIDCForDebugEndpoints, "server_enable_oidc_for_debug_endpoints", false, "require an OIDC token (Authorization or Proxy-Authorization: Bearer) on the debug port, except /_healthz, /readyz and the metrics path")
	// Secret flags are marked here, and only here: cli.RedactArgs, the debug port's command line and the docs test
	// read the mark. Each has a _file form that cmd/kedge reads at startup (cli.ReadSecretFiles).
	fs.Var((*secretValue)(&a.StaticToken), "unsafe_bearer_token_proxy_auth", "static token every proxied request must carry as 'Proxy-Authorization: Bearer <token>' (tests, simple setups); mutually exclusive with OIDC. Prefer the _file form: a flag value is visible to every local user (ps)")
	cli.SecretFileFlag(fs, "unsafe_bearer_token_proxy_auth")
	fs.DurationVar(&c.TunnelIdleTimeout, "server_tunnel_idle_timeout", DefaultTunnelIdleTimeout, "CONNECT tunnels with no bytes in either direction for this long are closed")
}

// validateAuth reports the problems of the authentication and tunnel flags.
func (c *Config) validateAuth() []error {
	a := c.Auth
	var errs []error
	oidcFlags := map[string]bool{
		"--server_oidc_provider_url":               a.OIDCProviderURL != "",
		"--server_oidc_client_id":                  len(a.OIDCClientIDs) > 0,
		"--server_oidc_perms_claim":                a.OIDCPermsClaim != "",
		"--server_oidc_required_perm":              len(a.OIDCRequiredPerms) > 0,
		"--server_enable_oidc_for_debug_endpoints": a.OIDCForDebugEndpoints,
	}
	var set []string
	for _, name := range []string{"--server_oidc_provider_url", "--server_oidc_client_id", "--server_oidc_perms_claim",
		"--server_oidc_required_perm", "--server_enable_oidc_for_debug_endpoints"} {
		if oidcFlags[name] {
			set = append(set, name)
		}
	}
	switch {
	case a.StaticToken != "" && len(set) > 0:
		errs = append(errs, fmt.Errorf("--unsafe_bearer_token_proxy_auth cannot be combined with OIDC (%s): choose one way to authenticate callers", strings.Join(set, ", ")))
	case a.OIDCProviderURL == "" && len(set) > 0:
		errs = append(errs, fmt.Errorf("%s need --server_oidc_provider_url", strings.Join(set, ", ")))
	}
	if a.StaticToken != "" && strings.ContainsFunc(string(a.StaticToken), func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		errs = append(errs, errors.New("--unsafe_bearer_token_proxy_auth must be visible ASCII without spaces"))
	}
	if a.OIDCProviderURL != "" {
		if err := checkIssuerURL(a.OIDCProviderURL); err != nil {
			errs = append(errs, err)
		}
		if len(a.OIDCClientIDs) == 0 {
			errs = append(errs, errors.New("--server_oidc_client_id is required with --server_oidc_provider_url"))
		}
		if a.OIDCJWKSRefreshInterval <= 0 {
			errs = append(errs, fmt.Errorf("--server_oidc_jwks_refresh_interval: %v must be positive", a.OIDCJWKSRefreshInterval))
		}
		if len(a.OIDCRequiredPerms) > 0 && a.OIDCPermsClaim == "" {
			errs = append(errs, errors.New("--server_oidc_required_perm needs --server_oidc_perms_claim (the claim that holds permissions)"))
		}
	}
	if c.TunnelIdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--server_tunnel_idle_timeout: %v must be positive", c.TunnelIdleTimeout))
	}
	return errs
}

// checkIssuerURL accepts https URLs, and http ones to a loopback address (tests).
func checkIssuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("--server_oidc_provider_url: %q must be https://host[/path]", s)
	}
	if u.Scheme == "https" {
		return nil
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme == "http" && (u.Hostname() == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("--server_oidc_provider_url: %q must use https (http only to a loopback address)", s)
}

// listValue is a comma-separated list flag that several flag names can share: every value given to any of them is
// appended, so "--a=x --b=y" yields [x y].
type listValue struct{ list *[]string }

func (v *listValue) Set(s string) error {
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		*v.list = append(*v.list, item)
	}
	return nil
}

func (v *listValue) String() string { return strings.Join(*v.list, ",") }

func (v *listValue) Type() string { return "strings" }

// secretValue is a string flag whose value never shows in --help or in flag dumps.
type secretValue Secret

func (v *secretValue) Set(s string) error { *v = secretValue(s); return nil }

func (v *secretValue) String() string { return Secret(*v).String() }

func (v *secretValue) Type() string { return "string" }
