// Package admission is the one step that every kedge proxy (HTTP, gRPC, CONNECT) runs before it touches a backend:
// route the request (a route, else an adhoc rule), take the requirement of what matched, and ask the authorization
// gate; then, for an admitted caller, apply the route's rate limit and sign the caller's identity for the backend.
// The protocols differ only in how they gather the request's facts and how they write a refusal. It also owns
// kedge_proxy_errors_total, the count of requests kedge itself failed or refused, which all three proxies share.
package admission

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/peer"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/identity"
	"github.com/kedge-proxy/kedge/pkg/edge/ratelimit"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// AdhocLabel is the backend label (metrics, logs) of requests sent to adhoc destinations, the original's handler
// name for them. The destination itself is logged but never a metric label: clients choose it.
const AdhocLabel = "_adhoc"

// Caller is who asks: the credentials it presented and its TLS state.
type Caller struct {
	// Credentials are the values of Proxy-Authorization (HTTP, CONNECT) or of the proxy-authorization metadata key
	// (gRPC).
	Credentials []string
	// Peer is the TLS state of the client connection; nil without TLS.
	Peer *tls.ConnectionState
	// RemoteAddr is the client's "ip:port" (http.Request.RemoteAddr), which tells anonymous callers apart for rate
	// limits. When empty, the gRPC peer in the context is used.
	RemoteAddr string
}

// Result is the outcome of one admission.
type Result struct {
	// Label is the backend name, AdhocLabel, or "" when nothing matched.
	Label string
	// HTTP or GRPC is the route that matched (read-only: it points into the table), or nil.
	HTTP *route.HTTPRoute
	GRPC *route.GRPCRoute
	// Adhoc is the adhoc destination when Label is AdhocLabel.
	Adhoc route.Target
	// RouteErr says why nothing matched (route.ErrNoRoute, *route.AdhocError, ...); nil when something did.
	RouteErr error
	// Decision is the gate's. When it is not allowed, the caller answers with Decision.Err (401 or 403) whatever
	// RouteErr says, so that a caller who cannot authenticate learns nothing about the routes. A caller over the
	// route's rate limit is refused here too, with an *authn.Error of status authn.RateLimited (429).
	Decision authz.Decision
	// Assertion is the signed identity of an admitted, authenticated caller for its backend (X-Kedge-Identity, or
	// x-kedge-identity metadata), or "": no signing key, an anonymous caller, or a route with identity_header: false.
	Assertion string
}

// Admitted reports whether the request may go on to its backend or adhoc destination.
func (r *Result) Admitted() bool { return r.RouteErr == nil && r.Decision.Allowed() }

// Admitter runs admissions. It is safe for concurrent use.
type Admitter struct {
	gate    *authz.Gate
	errors  *prometheus.CounterVec
	limiter *ratelimit.Limiter
	signer  *identity.Signer
}

// Policies are what admission adds to the gate's decision; each is off while nil, and then costs nothing.
type Policies struct {
	// Limiter enforces the routes' rate_limit; nil ignores it.
	Limiter *ratelimit.Limiter
	// Identity signs admitted callers' identity for their backend; nil signs nothing.
	Identity *identity.Signer
}

// New returns an Admitter asking gate, without Policies. A nil gate is a Gate without token authentication (callers
// are identified by their client certificate only; routes with requirements refuse everyone else). reg may be nil.
func New(gate *authz.Gate, reg prometheus.Registerer) (*Admitter, error) {
	return NewWithPolicies(gate, reg, Policies{})
}

// NewWithPolicies is New with rate limits and identity signing.
func NewWithPolicies(gate *authz.Gate, reg prometheus.Registerer, p Policies) (*Admitter, error) {
	if gate == nil {
		var err error
		if gate, err = authz.NewGate(nil, reg); err != nil {
			return nil, fmt.Errorf("admission: %w", err)
		}
	}
	a := &Admitter{gate: gate, limiter: p.Limiter, signer: p.Identity, errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_proxy_errors_total",
		Help: "Requests, calls and tunnels that kedge itself failed or refused, by backend (or _adhoc, or empty " +
			"when nothing matched) and X-Kedge-Error-Type.",
	}, []string{"backend", "type"})}
	var err error
	if a.errors, err = collector.Register(reg, a.errors); err != nil {
		return nil, fmt.Errorf("admission: registering metrics: %w", err)
	}
	return a, nil
}

// HTTPRequest is an HTTP request or CONNECT tunnel to admit.
type HTTPRequest struct {
	// Facts are the routing facts; Facts.Path is the match form of the canonical path.
	Facts route.HTTPRequest
	// HasPort says whether the request named its port (adhoc rules apply their default port otherwise).
	HasPort bool
	// EncodedSlash says the path has an encoded '/' or '\\' (route.Path.EncodedSlash): only a route that allows
	// them may take the request; anything else is route.ErrEncodedSlash.
	EncodedSlash bool
	// Adhoc says whether adhoc rules may serve the request (the proxy has somewhere to send it).
	Adhoc bool
	Caller
}

// HTTP admits an HTTP request or CONNECT tunnel: the first matching route, else an adhoc rule, then the gate.
func (a *Admitter) HTTP(ctx context.Context, table *route.HTTPTable, req *HTTPRequest) Result {
	var res Result
	switch rt, ok := table.Match(&req.Facts); {
	case ok && req.EncodedSlash && !rt.AllowEncodedSlashes, !ok && req.EncodedSlash:
		res.RouteErr = route.ErrEncodedSlash
	case ok:
		res.Label, res.HTTP = rt.Backend, rt
	case !req.Adhoc:
		res.RouteErr = route.ErrNoRoute
	default:
		res.Adhoc, res.RouteErr = table.Adhoc(req.Facts.Host, req.Facts.Port, req.HasPort)
		if res.RouteErr == nil {
			res.Label = AdhocLabel
		}
	}
	a.decide(ctx, &res, req.Caller)
	return res
}

// GRPC admits a gRPC call: the first matching route, else the gRPC adhoc rules on the call's authority, then the
// gate.
func (a *Admitter) GRPC(ctx context.Context, table *route.GRPCTable, req *route.GRPCRequest, c Caller) Result {
	var res Result
	if rt, ok := table.Match(req); ok {
		res.Label, res.GRPC = rt.Backend, rt
	} else if res.Adhoc, res.RouteErr = table.Adhoc(req.Authority); res.RouteErr == nil {
		res.Label = AdhocLabel
	}
	a.decide(ctx, &res, c)
	return res
}

// Unroutable authenticates a request that could not even be routed (malformed host or port): a caller who cannot
// authenticate gets 401 rather than the routing error.
func (a *Admitter) Unroutable(ctx context.Context, routeErr error, c Caller) Result {
	res := Result{RouteErr: routeErr}
	a.decide(ctx, &res, c)
	return res
}

// decide asks the gate with the requirement of what matched; for an admitted caller it then applies the route's
// rate limit and signs the caller's identity.
func (a *Admitter) decide(ctx context.Context, res *Result, c Caller) {
	var need authz.Requirement
	var limit *route.RateLimit
	audience, noIdentity := res.Label, false
	switch {
	case res.HTTP != nil:
		need = authz.Requirement{Permissions: res.HTTP.RequiredPermissions, Identities: res.HTTP.AllowedIdentities}
		limit, noIdentity = res.HTTP.RateLimit, res.HTTP.NoIdentityHeader
	case res.GRPC != nil:
		need = authz.Requirement{Permissions: res.GRPC.RequiredPermissions, Identities: res.GRPC.AllowedIdentities}
		limit, noIdentity = res.GRPC.RateLimit, res.GRPC.NoIdentityHeader
	case res.Label == AdhocLabel:
		need = authz.Requirement{Permissions: res.Adhoc.RequiredPermissions, Identities: res.Adhoc.AllowedIdentities}
		audience = res.Adhoc.Host
	}
	req := authz.Request{
		Route:       res.Label,
		Routed:      res.RouteErr == nil,
		Requirement: need,
		Credentials: c.Credentials,
		Peer:        c.Peer,
	}
	res.Decision = a.gate.Decide(ctx, req)
	if res.RouteErr == nil && res.Decision.Allowed() {
		if limit == nil || a.limiter == nil || a.allow(ctx, res, limit, c.RemoteAddr) {
			if a.signer != nil && !noIdentity {
				res.Assertion = a.signer.Assert(&res.Decision.Identity, audience)
			}
		}
	}
	a.gate.Count(req, res.Decision) // after the rate limit, so that a limited request is not counted as allowed
}

// allow takes a token from the caller's bucket of the route's limit; a caller over it is refused (Decision.Err).
func (a *Admitter) allow(ctx context.Context, res *Result, limit *route.RateLimit, remote string) bool {
	id := &res.Decision.Identity
	if remote == "" && id.Anonymous() {
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			remote = p.Addr.String()
		}
	}
	ok, wait := a.limiter.Allow(&ratelimit.Request{Route: res.Label, Limit: *limit, Identity: *id, RemoteAddr: remote})
	if !ok {
		res.Decision.Err = &authn.Error{Status: authn.RateLimited, RetryAfter: wait,
			Reason: "over the rate limit of this route; retry after " + wait.Round(time.Millisecond).String()}
	}
	return ok
}

// CountError counts a request kedge failed or refused, with its backend label and error type.
func (a *Admitter) CountError(label string, typ wire.ErrorType) {
	a.errors.WithLabelValues(label, string(typ)).Inc()
}

// Or returns a, or, when a is nil, an Admitter without token authentication registered on reg (on a registration
// conflict, an unregistered one): what a proxy built without an Admitter uses.
func Or(a *Admitter, reg prometheus.Registerer) *Admitter {
	if a != nil {
		return a
	}
	if a, err := New(nil, reg); err == nil {
		return a
	}
	a, _ = New(nil, nil) // cannot fail without a registry
	return a
}
