// Package wire holds the contract between winch, kedge and their clients: header and metadata names, the error-type
// vocabulary of X-Kedge-Error-Type / X-Winch-Error-Type, and request IDs.
package wire

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
)

// Header names. They keep the original kedge's meaning.
const (
	HeaderKedgeError       = "X-Kedge-Error"
	HeaderKedgeErrorType   = "X-Kedge-Error-Type"
	HeaderKedgeBackendName = "X-Kedge-Backend-Name"
	HeaderRequestID        = "X-Kedge-Request-Id" // canonical form of X-Kedge-Request-ID
	HeaderInfoLogs         = "X-Kedge-Info-Logs"
	HeaderWinchError       = "X-Winch-Error"
	HeaderWinchErrorType   = "X-Winch-Error-Type"
	HeaderProxyAuthz       = "Proxy-Authorization"
	HeaderProxyAuthn       = "Proxy-Authenticate"
	HeaderForwardedProto   = "X-Forwarded-Proto"
)

// The signed identity kedge hands backends (a JWT, see --server_identity_signing_key_file). kedge alone sets it: a
// client's own is removed with every other X-Kedge-* header or x-kedge-* key (X-Kedge-Info-Logs aside) on every
// protocol, whether or not signing is on.
const (
	HeaderKedgeIdentity   = "X-Kedge-Identity"
	MetadataKedgeIdentity = "x-kedge-identity"
)

// gRPC metadata keys (lower case, as on the wire).
const (
	MetadataRequestID  = "x-kedge-request-id"
	MetadataProxyAuthz = "proxy-authorization"
	MetadataAuthz      = "authorization"

	// MetadataKedgeError and MetadataKedgeErrorType are the gRPC counterparts of X-Kedge-Error and
	// X-Kedge-Error-Type: kedge sends them as trailer metadata on every error it makes itself (never on a status a
	// backend returned), so a client such as winch can tell kedge's Unauthenticated from a backend's.
	MetadataKedgeError     = "x-kedge-error"
	MetadataKedgeErrorType = "x-kedge-error-type"
)

// StatusClientClosed is the status logged, counted and recorded on spans for an exchange whose client left before it
// took the answer (nginx's 499, "client closed request"). It is never sent: there is nobody to send it to.
const StatusClientClosed = 499

// ErrorType is a value of X-Kedge-Error-Type / X-Winch-Error-Type and the type label of kedge_proxy_errors_total.
type ErrorType string

// The error vocabulary. The first group is the original kedge's; the rest are additions.
const (
	ErrUnauthorized          ErrorType = "unauthorized"
	ErrNoRoute               ErrorType = "no-route"
	ErrUnknownRouteError     ErrorType = "unknown-route-error"
	ErrNoBackend             ErrorType = "no-backend"
	ErrBackendClosed         ErrorType = "backend-transport-closed"
	ErrNoResolution          ErrorType = "no-resolution-available"
	ErrNoConnection          ErrorType = "no-connection-to-all-resolved-addresses"
	ErrResolverIrrecoverable ErrorType = "resolver-watcher-irrecoverable"
	ErrTransportUnknown      ErrorType = "transport-unknown-error"

	ErrForbidden      ErrorType = "forbidden"
	ErrBadRequest     ErrorType = "bad-request"
	ErrHeaderTooLarge ErrorType = "request-header-too-large"
	ErrBackendTimeout ErrorType = "backend-timeout"
	ErrTunnelDial     ErrorType = "tunnel-dial-error"
	ErrShuttingDown   ErrorType = "shutting-down"
	// ErrRateLimited: the caller is over its route's rate limit (429 with Retry-After; gRPC ResourceExhausted).
	ErrRateLimited ErrorType = "rate-limited"

	// Made by winch, in X-Winch-Error-Type.

	// ErrAuthSource: an auth source could not produce a token; the message says what to do.
	ErrAuthSource ErrorType = "auth-source-error"
	// ErrNotKedgeDestination: --unmatched=reject refused a destination no route maps (or an IP address).
	ErrNotKedgeDestination ErrorType = "not-a-kedge-destination"
)

// WriteKedgeError writes a kedge-made error response: status, X-Kedge-Error (msg), X-Kedge-Error-Type and msg as a
// short text body. msg must not contain secrets; it is shown to the client.
func WriteKedgeError(w http.ResponseWriter, status int, typ ErrorType, msg string) {
	writeError(w, status, HeaderKedgeError, HeaderKedgeErrorType, typ, msg)
}

// WriteWinchError is WriteKedgeError for errors made by winch.
func WriteWinchError(w http.ResponseWriter, status int, typ ErrorType, msg string) {
	writeError(w, status, HeaderWinchError, HeaderWinchErrorType, typ, msg)
}

func writeError(w http.ResponseWriter, status int, hMsg, hType string, typ ErrorType, msg string) {
	h := w.Header()
	h.Set(hMsg, sanitizeHeaderValue(msg))
	h.Set(hType, string(typ))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// sanitizeHeaderValue keeps an error message usable as a header value: no control characters, bounded length.
func sanitizeHeaderValue(s string) string {
	const max = 512
	if len(s) > max {
		s = s[:max]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// NewRequestID returns a fresh random request ID (32 hex characters).
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidRequestID reports whether a client-supplied request ID may be kept: 1-128 visible ASCII characters without
// spaces, so it is safe in logs and headers.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
