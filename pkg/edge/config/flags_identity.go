package config

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"
)

// IdentityConfig is the signed identity kedge hands backends (X-Kedge-Identity) and the size of the per-identity
// rate-limit table. Both are off (signing) or idle (the table: no route has a rate_limit) by default.
type IdentityConfig struct {
	// SigningKeyFile (--server_identity_signing_key_file) is a PEM ECDSA P-256 or RSA (>= 2048 bits) private key;
	// empty disables signing. It is watched and reloaded when it changes (and on SIGHUP).
	SigningKeyFile string
	// Issuer (--server_identity_issuer) is the tokens' iss; required with SigningKeyFile.
	Issuer string
	// RateLimitMaxKeys (--server_ratelimit_max_keys) bounds the rate-limit buckets (route and caller pairs) kept in
	// memory; the least recently used one is dropped beyond it.
	RateLimitMaxKeys int
}

// DefaultRateLimitMaxKeys is the default of --server_ratelimit_max_keys (about 25 MB at most).
const DefaultRateLimitMaxKeys = 100_000

func (c *IdentityConfig) registerFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.SigningKeyFile, "server_identity_signing_key_file", "", "PEM private key (ECDSA P-256 or RSA >= 2048 bits) with which kedge signs the caller's identity for backends: a JWT (ES256/RS256, exp <= 5 min) in X-Kedge-Identity (gRPC: x-kedge-identity) on every authenticated proxied request; public keys at /.well-known/jwks.json on the debug port. Reloaded when it changes. Empty: no identity is sent (a client's own X-Kedge-Identity is always removed)")
	fs.StringVar(&c.Issuer, "server_identity_issuer", "", "iss of the identity tokens (e.g. https://kedge.example.com); required with --server_identity_signing_key_file")
	fs.IntVar(&c.RateLimitMaxKeys, "server_ratelimit_max_keys", DefaultRateLimitMaxKeys, "rate-limit buckets (route and caller pairs) kept in memory for the routes' rate_limit; the least recently used one is dropped beyond it, which resets that caller's count")
}

// validate reports the identity flags' problems.
func (c *IdentityConfig) validate() []error {
	var errs []error
	switch {
	case c.SigningKeyFile != "" && c.Issuer == "":
		errs = append(errs, errors.New("--server_identity_issuer is required with --server_identity_signing_key_file"))
	case c.SigningKeyFile == "" && c.Issuer != "":
		errs = append(errs, errors.New("--server_identity_issuer needs --server_identity_signing_key_file"))
	}
	if c.RateLimitMaxKeys < 1 {
		errs = append(errs, fmt.Errorf("--server_ratelimit_max_keys: %d must be at least 1", c.RateLimitMaxKeys))
	}
	return errs
}
