package httpproxy

import (
	"net/http"
	"strconv"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// checkHeaders applies the request header limits. It returns status 0 for an acceptable request, else the status,
// error type and message to answer with. net/http has already enforced the header byte limit (MaxHeaderBytes) and
// rejected invalid values; the count limit, the name rules and the HTTP/2 header rules are kedge's.
func checkHeaders(r *http.Request, maxCount int) (int, wire.ErrorType, string) {
	if r.ProtoMajor >= 2 {
		if msg := checkH2Headers(r.Header); msg != "" {
			return http.StatusBadRequest, wire.ErrBadRequest, msg
		}
	}
	count := 0
	bad, badName := nameOK, ""
	for name, values := range r.Header {
		count += len(values)
		if bad == nameOK {
			bad, badName = checkName(name), name
		}
	}
	switch {
	case count > maxCount:
		return http.StatusRequestHeaderFieldsTooLarge, wire.ErrHeaderTooLarge,
			"too many header fields: " + strconv.Itoa(count) + " > " + strconv.Itoa(maxCount)
	case bad == nameUnderscore:
		// Backends built on CGI conventions (WSGI, PHP, ...) read X_Auth_User as X-Auth-User.
		return http.StatusBadRequest, wire.ErrBadRequest, "header names with '_' are not accepted: " + strconv.Quote(badName)
	case bad == nameInvalid:
		return http.StatusBadRequest, wire.ErrBadRequest, "invalid header name: " + strconv.Quote(badName)
	}
	return 0, "", ""
}

// connectionHeaders are the connection-specific header fields HTTP/2 and HTTP/3 forbid in requests (RFC 9113
// §8.2.2, RFC 9114 §4.2), in canonical spelling.
var connectionHeaders = [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade"}

// checkH2Headers returns why an HTTP/2 (or later) request with header h is malformed, or "". Such a request carries
// hop-by-hop semantics the protocol does not have (a smuggling vector once it is forwarded over HTTP/1.1), so it is
// refused, never proxied.
//
// With Go's HTTP/2 server this never fires: net/http answers these requests with its own 400 before calling any
// handler (h2spec 8.1.2.2 wants a PROTOCOL_ERROR stream reset instead; see docs/reliability.md#h2spec). The check
// stays so that kedge's rule does not depend on that detail of the server.
func checkH2Headers(h http.Header) string {
	for _, name := range connectionHeaders {
		if _, ok := h[name]; ok {
			return "connection-specific header " + strconv.Quote(name) + " is not allowed in HTTP/2"
		}
	}
	if te, ok := h["Te"]; ok && (len(te) != 1 || te[0] != "trailers") {
		return `header "TE" may only be "trailers" in HTTP/2`
	}
	return ""
}

// Results of checkName.
const (
	nameOK = iota
	nameUnderscore
	nameInvalid
)

// checkName classifies a header name: an RFC 9110 token without '_' is OK.
func checkName(name string) int {
	if name == "" {
		return nameInvalid
	}
	res := nameOK
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			res = nameUnderscore
		case !wire.IsTokenChar(c):
			return nameInvalid
		}
	}
	return res
}

// sanitizeOutbound removes what a client may not send to a backend through kedge: every X-Kedge-* header except
// X-Kedge-Info-Logs (kedge-owned headers are set by kedge alone, in canonical spelling) and Proxy-Authorization
// (kedge's own credentials, already dropped as hop-by-hop; removed again here so no path can forward it). It then
// sets the request ID (reqID: its header value). Authorization is the backend's business and stays.
func sanitizeOutbound(h http.Header, reqID []string) {
	for name := range h {
		if wire.KedgeOwned(name) {
			delete(h, name)
		}
	}
	delete(h, wire.HeaderProxyAuthz)
	h[wire.HeaderRequestID] = reqID
}
