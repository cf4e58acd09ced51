package authn

import (
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Status is the class of an authentication or authorization failure.
type Status uint8

// Statuses. Unauthenticated means no, malformed or invalid credentials (HTTP 401, gRPC Unauthenticated); Forbidden
// means a valid identity without the required permission (HTTP 403, gRPC PermissionDenied).
const (
	Unauthenticated Status = iota + 1
	Forbidden
)

// String returns "unauthenticated" or "forbidden".
func (s Status) String() string {
	if s == Forbidden {
		return "forbidden"
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
	if e.Status == Forbidden {
		code = codes.PermissionDenied
	}
	return status.New(code, e.Message())
}

// HTTPStatus maps a denial to an HTTP status and X-Kedge-Error-Type: 401 unauthorized or 403 forbidden.
func HTTPStatus(err error) (int, wire.ErrorType) {
	if classify(err).Status == Forbidden {
		return http.StatusForbidden, wire.ErrForbidden
	}
	return http.StatusUnauthorized, wire.ErrUnauthorized
}

// WriteHTTPError answers a request with the denial err: status, X-Kedge-Error(-Type), a short text body, and
// Proxy-Authenticate: Bearer on 401.
func WriteHTTPError(w http.ResponseWriter, err error) {
	code, typ := HTTPStatus(err)
	if code == http.StatusUnauthorized {
		w.Header().Set(wire.HeaderProxyAuthn, "Bearer")
	}
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
