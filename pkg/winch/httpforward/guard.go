package httpforward

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// GuardLocal serves next only to requests that a page on another site cannot make: the Host must be localhost,
// 127.0.0.1 or [::1] (a DNS-rebinding attacker's page carries its own name), and a browser request must not come
// from another origin (Origin, Sec-Fetch-Site). Top-level navigations from elsewhere stay allowed, since the OIDC
// provider redirects the browser to the login callback. No CORS headers are ever sent.
func GuardLocal(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LocalHost(r.Host) {
			wire.WriteWinchError(w, http.StatusForbidden, wire.ErrForbidden,
				"winch serves its own endpoints only to Host localhost, 127.0.0.1 or [::1]")
			return
		}
		if crossSite(r) {
			wire.WriteWinchError(w, http.StatusForbidden, wire.ErrForbidden, "cross-site requests to winch are refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// GuardCrossSite refuses cross-site browser requests (see GuardLocal) and serves the rest with next. winch puts it
// in front of the monitoring address, which may listen on any interface and so cannot check Host.
func GuardCrossSite(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if crossSite(r) {
			wire.WriteWinchError(w, http.StatusForbidden, wire.ErrForbidden, "cross-site requests to winch are refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LocalHost reports whether a Host header value (with or without port) names the loopback interface: localhost,
// 127.0.0.1 or ::1.
func LocalHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// crossSite reports whether a browser sent r on behalf of another site: an Origin that is not the request's own
// (Origin "null" included), or Sec-Fetch-Site cross-site outside a top-level navigation.
func crossSite(r *http.Request) bool {
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, r.Host) {
			return true
		}
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
		return r.Header.Get("Sec-Fetch-Mode") != "navigate" || (r.Method != http.MethodGet && r.Method != http.MethodHead)
	}
	return false
}
