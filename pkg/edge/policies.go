package edge

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/identity"
	"github.com/kedge-proxy/kedge/pkg/edge/ratelimit"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// newPolicies builds what admission adds to the gate: the rate-limit table (always: routes gain a rate_limit on a
// reload; a route without one never touches it) and, with --server_identity_signing_key_file, the identity signer.
// The signer is nil without a key file; Run watches its key file otherwise.
func newPolicies(cfg config.IdentityConfig, log logging.Logger, reg prometheus.Registerer) (admission.Policies, error) {
	var p admission.Policies
	var err error
	if p.Limiter, err = ratelimit.New(ratelimit.Config{MaxKeys: cfg.RateLimitMaxKeys}, reg); err != nil {
		return p, err
	}
	if cfg.SigningKeyFile == "" {
		return p, nil
	}
	if p.Identity, err = identity.New(identity.Config{KeyFile: cfg.SigningKeyFile, Issuer: cfg.Issuer, Log: log}); err != nil {
		return p, fmt.Errorf("--server_identity_signing_key_file: %w", err)
	}
	log.Info("signing caller identities for backends", "kid", p.Identity.KeyID(), "issuer", cfg.Issuer)
	return p, nil
}
