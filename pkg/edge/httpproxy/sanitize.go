package httpproxy

import (
	"net/http"
	"strconv"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// checkHeaders applies the request header limits. It returns status 0 for an acceptable request, else the status,
// error type and message to answer with. net/http has already enforced the header byte limit (MaxHeaderBytes) and
// rejected invalid values; the count limit and the name rules are kedge's.
func checkHeaders(r *http.Request, maxCount int) (int, wire.ErrorType, string) {
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
		case !isTokenChar(c):
			return nameInvalid
		}
	}
	return res
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// kedgePrefix starts every header kedge owns.
const kedgePrefix = "X-Kedge-"

// sanitizeOutbound removes what a client may not send to a backend through kedge: every X-Kedge-* header except
// X-Kedge-Info-Logs (kedge-owned headers are set by kedge alone, in canonical spelling) and Proxy-Authorization
// (kedge's own credentials, already dropped as hop-by-hop; removed again here so no path can forward it). It then
// sets the request ID. Authorization is the backend's business and stays.
func sanitizeOutbound(h http.Header, reqID string) {
	for name := range h {
		if len(name) >= len(kedgePrefix) && equalFoldASCII(name[:len(kedgePrefix)], kedgePrefix) &&
			name != wire.HeaderInfoLogs {
			delete(h, name)
		}
	}
	delete(h, wire.HeaderProxyAuthz)
	h[wire.HeaderRequestID] = []string{reqID}
}

// equalFoldASCII compares ASCII case-insensitively (header names and schemes are ASCII).
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
