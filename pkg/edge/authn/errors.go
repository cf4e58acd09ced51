package authn

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Status is the class of an authentication or authorization failure.
type Status uint8

// Statuses. Unauthenticated means no, malformed or invalid credentials (HTTP 401, gRPC Unauthenticated); Forbidden
// means a valid identity without the required permission (HTTP 403, gRPC PermissionDenied); RateLimited means an
// admitted caller over its route's rate limit (HTTP 429 with Retry-After, gRPC ResourceExhausted).
const (
	Unauthenticated Status = iota + 1
	Forbidden
	RateLimited
)

// String returns "unauthenticated", "forbidden" or "rate-limited".
func (s Status) String() string {
	switch s {
	case Forbidden:
		return "forbidden"
	case RateLimited:
		return "rate-limited"
	}
	return "unauthenticated"
}

// ErrNoCredentials is wrapped by the *Error Authenticate returns when token authentication is configured and the
// request carries no Proxy-Authorization. If the peer presented a verified client certificate, Authenticate also
// returns its identity, and a route that allows that identity may let the request through (see authz.Authorize).
var ErrNoCredentials = errors.New("authn: no credentials")

// Error is a denial. Reason says why in words safe to show the client: it never contains the token.
type Error struct {
	Status Status
	Reason string
	// Err is the underlying cause for logs (a sentinel such as ErrNoCredentials, or a verifier error); may be nil.
	Err error
	// RetryAfter is, for RateLimited, when the caller may try again (the Retry-After header, rounded up to seconds).
	RetryAfter time.Duration
}

// Error returns "authn: <status>: <reason>".
func (e *Error) Error() string { return "authn: " + e.Message() }

// Message is the text for the client: "<status>: <reason>".
func (e *Error) Message() string { return e.Status.String() + ": " + e.Reason }

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

func unauthenticated(reason string, cause error) *Error {
	return &Error{Status: Unauthenticated, Reason: reason, Err: cause}
}

func forbidden(reason string) *Error { return &Error{Status: Forbidden, Reason: reason} }

// classify returns err as an *Error; anything else is treated as Unauthenticated (fail closed).
func classify(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return unauthenticated("authentication failed", err)
}

// StatusOf maps a denial to a gRPC status: Unauthenticated or PermissionDenied, with the client message. It returns
// nil for a nil error.
func StatusOf(err error) *status.Status {
	if err == nil {
		return nil
	}
	e := classify(err)
	code := codes.Unauthenticated
	switch e.Status {
	case Forbidden:
		code = codes.PermissionDenied
	case RateLimited:
		code = codes.ResourceExhausted
	}
	return status.New(code, e.Message())
}

// HTTPStatus maps a denial to an HTTP status and X-Kedge-Error-Type: 401 unauthorized, 403 forbidden or 429
// rate-limited.
func HTTPStatus(err error) (int, wire.ErrorType) {
	switch classify(err).Status {
	case Forbidden:
		return http.StatusForbidden, wire.ErrForbidden
	case RateLimited:
		return http.StatusTooManyRequests, wire.ErrRateLimited
	}
	return http.StatusUnauthorized, wire.ErrUnauthorized
}

// SetRefusalHeaders sets the headers that go with the denial err besides X-Kedge-Error(-Type):
// Proxy-Authenticate: Bearer on 401, Retry-After (whole seconds, at least 1) on 429.
func SetRefusalHeaders(h http.Header, err error) {
	e := classify(err)
	switch e.Status {
	case Unauthenticated:
		h.Set(wire.HeaderProxyAuthn, "Bearer")
	case RateLimited:
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		h.Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
}

// WriteHTTPError answers a request with the denial err: status, X-Kedge-Error(-Type), a short text body, and the
// headers of SetRefusalHeaders.
func WriteHTTPError(w http.ResponseWriter, err error) {
	code, typ := HTTPStatus(err)
	SetRefusalHeaders(w.Header(), err)
	wire.WriteKedgeError(w, code, typ, classify(err).Message())
}

// IssuerMismatchError is a discovery document whose issuer differs from the configured issuer URL. Tokens carry the
// provider's issuer in iss, so nothing would verify: the configured URL must be the provider's, to the character
// (a trailing slash included).
type IssuerMismatchError struct {
	// Configured is --server_oidc_provider_url.
	Configured string
	// Discovered is the issuer the provider's discovery document names.
	Discovered string
}

// Error implements error.
func (e *IssuerMismatchError) Error() string {
	return fmt.Sprintf("issuer mismatch: configured %s, provider says %s", e.Configured, e.Discovered)
}
