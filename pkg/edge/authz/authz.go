// Package authz decides whether an authenticated caller may use a route: the route's required_permissions (any-of,
// against the token's permissions claim) and allowed_client_identities (exact names of the verified client
// certificate). Check and Authorize are pure (no I/O, no state); Gate applies them to the requests of every proxy,
// after authenticating the caller, and counts the decisions.
package authz

import (
	"errors"
	"fmt"
	"slices"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
)

// Requirement is what a route (or adhoc rule) asks of its callers. Either list may satisfy it; an empty Requirement
// asks nothing beyond the global check authn already made.
type Requirement struct {
	// Permissions (required_permissions): the caller's permissions must contain at least one of them.
	Permissions []string
	// Identities (allowed_client_identities): one of the client certificate's names (subject CN, DNS, email or URI
	// SAN) must equal one of them exactly.
	Identities []string
}

// Empty reports whether the requirement asks nothing.
func (r Requirement) Empty() bool { return len(r.Permissions) == 0 && len(r.Identities) == 0 }

// Check returns nil when id satisfies req or req is empty. Otherwise it returns an *authn.Error: Unauthenticated for
// a caller with no credential at all, Forbidden with a reason naming what is missing for everyone else.
func Check(id authn.Identity, req Requirement) error {
	if req.Empty() || satisfied(id, req) {
		return nil
	}
	if id.Anonymous() {
		return &authn.Error{Status: authn.Unauthenticated, Reason: "credentials required for this route"}
	}
	var reason string
	switch {
	case len(req.Permissions) > 0 && len(req.Identities) > 0:
		reason = fmt.Sprintf("missing permission: one of %v (and client certificate not allowed)", req.Permissions)
	case len(req.Permissions) > 0:
		reason = fmt.Sprintf("missing permission: one of %v", req.Permissions)
	case len(id.CertNames) == 0:
		reason = "route requires an allowed client certificate"
	default:
		reason = "client certificate not allowed for this route"
	}
	return &authn.Error{Status: authn.Forbidden, Reason: reason}
}

// Authorize combines the result of authn.Authenticate with the route's requirement: the request may proceed when it
// returns nil. A request without a token (authn.ErrNoCredentials) is admitted only when its client certificate is
// one of req.Identities; every other authentication error is returned as is, so the caller answers 401 or 403.
func Authorize(id authn.Identity, authErr error, req Requirement) error {
	if authErr == nil {
		return Check(id, req)
	}
	if errors.Is(authErr, authn.ErrNoCredentials) && identityAllowed(id, req) {
		return nil
	}
	return authErr
}

func satisfied(id authn.Identity, req Requirement) bool {
	return permitted(id, req) || identityAllowed(id, req)
}

func permitted(id authn.Identity, req Requirement) bool {
	for _, p := range id.Permissions {
		if slices.Contains(req.Permissions, p) {
			return true
		}
	}
	return false
}

func identityAllowed(id authn.Identity, req Requirement) bool {
	for _, n := range id.CertNames {
		if slices.Contains(req.Identities, n) {
			return true
		}
	}
	return false
}
