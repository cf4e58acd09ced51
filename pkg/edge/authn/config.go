package authn

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Defaults of OIDCConfig.
const (
	DefaultKeyRefetchInterval = 10 * time.Second
	DefaultKeyRefreshInterval = 5 * time.Minute
	// MaxTokenBytes bounds a bearer token; longer ones are refused before any signature work.
	MaxTokenBytes = 16 << 10
)

// Config selects the proxy authentication. With neither OIDC nor StaticToken, no token is asked for and a verified
// client certificate (if any) is the caller's identity.
type Config struct {
	// OIDC enables ID-token authentication; nil disables it.
	OIDC *OIDCConfig
	// StaticToken (--unsafe_bearer_token_proxy_auth) makes every request carry "Proxy-Authorization: Bearer
	// <StaticToken>". Mutually exclusive with OIDC.
	StaticToken string
}

// OIDCConfig configures ID-token verification with go-oidc. There are deliberately no switches to skip issuer,
// audience, expiry or signature checks.
type OIDCConfig struct {
	// IssuerURL (--server_oidc_provider_url) is the issuer; discovery reads IssuerURL/.well-known/openid-configuration
	// and the token's iss must equal it. https, or http to a loopback address (tests).
	IssuerURL string
	// ClientID (--server_oidc_client_id) is the client ID a token's aud must name, unless it names one of Audiences.
	ClientID string
	// Audiences are further client IDs accepted in aud (--server_oidc_client_id given several values: winch's client
	// and, say, a CLI's). When aud has several entries, azp must be present and one of ClientID and Audiences, the
	// check go-oidc leaves to its callers.
	Audiences []string
	// PermsClaim (--server_oidc_perms_claim) names the claim holding the caller's permissions, a JSON list of strings.
	// When set, a token without it (or with another type) is refused with Forbidden.
	PermsClaim string
	// RequiredPerms (--server_oidc_required_perm / --server_oidc_whitelist_perms): a token must carry at least one of
	// them (any-of) to use kedge at all; empty means no global requirement. Route requirements add to this.
	RequiredPerms []string
	// HTTPClient fetches discovery and keys; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Now is the clock for expiry, the verification cache and the refetch limit; nil means time.Now.
	Now func() time.Time
	// KeyRefetchInterval is the minimum time between JWKS fetches caused by tokens with an unknown key or a bad
	// signature; 0 means DefaultKeyRefetchInterval.
	KeyRefetchInterval time.Duration
	// KeyRefreshInterval (--server_oidc_jwks_refresh_interval) is how often Run refreshes the JWKS in the background,
	// forgetting keys the issuer no longer publishes; the issuer's Cache-Control max-age may shorten it. 0 means
	// DefaultKeyRefreshInterval.
	KeyRefreshInterval time.Duration
}

// String describes c for logs with the static token redacted.
func (c Config) String() string {
	static := ""
	if c.StaticToken != "" {
		static = "<redacted>"
	}
	if c.OIDC == nil {
		return fmt.Sprintf("{OIDC:<nil> StaticToken:%s}", static)
	}
	o := c.OIDC
	return fmt.Sprintf("{OIDC:{IssuerURL:%s ClientIDs:%v PermsClaim:%s RequiredPerms:%v} StaticToken:%s}",
		o.IssuerURL, o.clientIDs(), o.PermsClaim, o.RequiredPerms, static)
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if c.OIDC != nil && c.StaticToken != "" {
		errs = append(errs, errors.New("cannot enable both OIDC and a static bearer token (unsafe_bearer_token_proxy_auth)"))
	}
	if c.StaticToken != "" && !visibleASCII(c.StaticToken) {
		errs = append(errs, errors.New("static bearer token must be visible ASCII without spaces"))
	}
	if c.OIDC != nil {
		errs = append(errs, c.OIDC.validate()...)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("authn: %w", err)
	}
	return nil
}

func (c *OIDCConfig) validate() []error {
	var errs []error
	if c.IssuerURL == "" {
		errs = append(errs, errors.New("OIDC issuer URL is required"))
	} else if err := checkSecureURL("OIDC issuer URL", c.IssuerURL); err != nil {
		errs = append(errs, err)
	} else if strings.Contains(c.IssuerURL, "?") {
		errs = append(errs, fmt.Errorf("OIDC issuer URL %q must not have a query", c.IssuerURL))
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("OIDC client ID is required"))
	}
	for _, a := range c.Audiences {
		if strings.TrimSpace(a) == "" {
			errs = append(errs, errors.New("OIDC audiences contain an empty value"))
			break
		}
	}
	if len(c.RequiredPerms) > 0 && c.PermsClaim == "" {
		errs = append(errs, errors.New("OIDC required permissions need a permissions claim"))
	}
	for _, p := range c.RequiredPerms {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, errors.New("OIDC required permissions contain an empty value"))
			break
		}
	}
	if c.KeyRefetchInterval < 0 || c.KeyRefreshInterval < 0 {
		errs = append(errs, errors.New("OIDC key refetch/refresh intervals must not be negative"))
	}
	return errs
}

// clientIDs returns every accepted audience: ClientID, then Audiences, without repeats.
func (c *OIDCConfig) clientIDs() []string {
	ids := []string{c.ClientID}
	for _, a := range c.Audiences {
		if !slices.Contains(ids, a) {
			ids = append(ids, a)
		}
	}
	return ids
}

// checkSecureURL accepts https URLs, and http ones to loopback (tests).
func checkSecureURL(what, s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, s, err)
	}
	if u.Host == "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%s %q must be scheme://host[/path] without user or fragment", what, s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
	}
	return fmt.Errorf("%s %q must use https (http only to loopback)", what, s)
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
