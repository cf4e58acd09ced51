package authz

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Authenticator establishes who the caller is; *authn.Authenticator implements it.
type Authenticator interface {
	Authenticate(ctx context.Context, header string, peer *tls.ConnectionState) (authn.Identity, error)
}

// Results of a Decision: the values of the result label of kedge_authz_decisions_total and of the audit log's
// decision field.
const (
	ResultAllowed         = "allowed"
	ResultUnauthenticated = "unauthenticated"
	ResultForbidden       = "forbidden"
	ResultRateLimited     = "rate-limited"
)

// Request is what the Gate decides on: one HTTP request, gRPC call or CONNECT tunnel, after routing.
type Request struct {
	// Route names the route in the metric and the audit log: the backend name, "_adhoc", or "" when routing failed.
	// Backend names come from configuration, so the label stays bounded.
	Route string
	// Routed is false when no route or adhoc rule accepted the request. Then only authentication is checked: a
	// caller who cannot authenticate gets 401 rather than learning whether a route exists.
	Routed bool
	// Requirement is the matched route's (or adhoc rule's).
	Requirement Requirement
	// Credentials are the values of Proxy-Authorization (HTTP, CONNECT) or of the proxy-authorization metadata key
	// (gRPC). More than one value is refused.
	Credentials []string
	// Peer is the TLS state of the client connection; nil without TLS.
	Peer *tls.ConnectionState
}

// Decision is the Gate's answer for one request.
type Decision struct {
	// Identity is who the caller is (for the audit log even when denied).
	Identity authn.Identity
	// Err is nil when the request may proceed; otherwise an *authn.Error to answer with (authn.WriteHTTPError,
	// authn.StatusOf): Unauthenticated (401) or Forbidden (403). Its message never contains a token.
	Err error
	// how says why an allowed request was allowed.
	how string
}

// Allowed reports whether the request may proceed.
func (d Decision) Allowed() bool { return d.Err == nil }

// Result is ResultAllowed, ResultUnauthenticated, ResultForbidden or ResultRateLimited (admission's rate limit).
func (d Decision) Result() string {
	if d.Err == nil {
		return ResultAllowed
	}
	var e *authn.Error
	if errors.As(d.Err, &e) {
		switch e.Status {
		case authn.Forbidden:
			return ResultForbidden
		case authn.RateLimited:
			return ResultRateLimited
		}
	}
	return ResultUnauthenticated
}

// Reason says why, for the audit log: how an allowed caller qualified ("permission deploy", "client certificate
// robot", "authenticated", "no credentials required"), or the denial's reason.
func (d Decision) Reason() string {
	if d.Err == nil {
		return d.how
	}
	var e *authn.Error
	if errors.As(d.Err, &e) {
		return e.Reason
	}
	return d.Err.Error()
}

// Gate authenticates callers and checks route requirements for every proxy of kedge (HTTP, gRPC, CONNECT), and
// counts its decisions in kedge_authz_decisions_total{route,result}. It is safe for concurrent use.
type Gate struct {
	auth      Authenticator
	decisions *prometheus.CounterVec
}

// NewGate returns a Gate over auth. A nil auth asks for no token: the caller's identity is its verified client
// certificate, and routes with requirements still refuse everyone else. reg may be nil.
func NewGate(auth Authenticator, reg prometheus.Registerer) (*Gate, error) {
	if auth == nil {
		a, err := authn.New(authn.Config{}, logging.Discard(), nil)
		if err != nil {
			return nil, fmt.Errorf("authz: %w", err)
		}
		auth = a
	}
	g := &Gate{auth: auth, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_authz_decisions_total",
		Help: "Authorization decisions by route (backend name, _adhoc, or empty for unrouted requests, which are " +
			"counted only when refused) and result (allowed, unauthenticated, forbidden, rate-limited).",
	}, []string{"route", "result"})}
	var err error
	if g.decisions, err = collector.Register(reg, g.decisions); err != nil {
		return nil, fmt.Errorf("authz: registering metrics: %w", err)
	}
	return g, nil
}

// Admit decides on req (Decide) and counts the decision (Count).
func (g *Gate) Admit(ctx context.Context, req Request) Decision {
	d := g.Decide(ctx, req)
	g.Count(req, d)
	return d
}

// Count records d, the final decision on req, in kedge_authz_decisions_total: a caller that passed the gate but
// was refused afterwards (a rate limit) is counted once, with its final result. Unrouted requests are counted only
// when refused.
func (g *Gate) Count(req Request, d Decision) {
	if d.Allowed() && !req.Routed {
		return // the routing error follows; nothing was authorized
	}
	g.decisions.WithLabelValues(req.Route, d.Result()).Inc()
}

// Decide decides on req without counting: authentication first (every request, routed or not), then the route's
// requirement.
func (g *Gate) Decide(ctx context.Context, req Request) Decision {
	var d Decision
	if len(req.Credentials) > 1 {
		d.Err = &authn.Error{Status: authn.Unauthenticated, Reason: "more than one Proxy-Authorization value"}
	} else {
		header := ""
		if len(req.Credentials) == 1 {
			header = req.Credentials[0]
		}
		id, authErr := g.auth.Authenticate(ctx, header, req.Peer)
		d.Identity = id
		if req.Routed {
			d.Err = Authorize(id, authErr, req.Requirement)
		} else {
			d.Err = authErr
		}
	}
	if d.Err == nil {
		d.how = how(d.Identity, req.Requirement)
	}
	return d
}

// how says what admitted id under req.
func how(id authn.Identity, req Requirement) string {
	for _, p := range id.Permissions {
		if slices.Contains(req.Permissions, p) {
			return "permission " + p
		}
	}
	for _, n := range id.CertNames {
		if slices.Contains(req.Identities, n) {
			return "client certificate " + n
		}
	}
	if id.Anonymous() {
		return "no credentials required"
	}
	return "authenticated"
}
