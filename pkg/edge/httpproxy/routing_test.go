package httpproxy

import (
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// routingEnv has one backend per route, each named after its route.
func routingEnv(t *testing.T) *env {
	t.Helper()
	routes := []route.HTTPRoute{
		{Backend: "rev", Host: "rev.example.com", Mode: route.ModeReverse},
		{Backend: "fwd", Host: "fwd.example.com", Mode: route.ModeForward},
		{Backend: "tls443", Host: "ports.example.com", Port: 443},
		{Backend: "plain80", Host: "ports.example.com", Port: 80},
		{Backend: "admin", Host: "paths.example.com", Paths: []string{"/admin*"}},
		{Backend: "public", Host: "paths.example.com", Paths: []string{"/public*"}},
		{Backend: "tenant", Host: "hdr.example.com", Headers: map[string]string{"X-Tenant": "a"}},
		{Backend: "wild", Host: "*.wild.example.com"},
	}
	var backends []*testBackend
	for _, r := range routes {
		backends = append(backends, newBackend(t, r.Backend, nil))
	}
	return newEnv(t, envConfig{routes: routes, backends: backends})
}

func TestRouting(t *testing.T) {
	t.Parallel()
	e := routingEnv(t)
	fwdClient := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, e.proxy.URL))}}
	t.Cleanup(fwdClient.CloseIdleConnections)

	tests := []struct {
		name    string
		host    string // reverse: Host header; forward: the absolute URL's host
		path    string
		forward bool
		header  http.Header
		backend string // want; "" means no route (502 no-route)
		uri     string // request-target the backend must see
	}{
		{name: "reverse", host: "rev.example.com", path: "/x?a=1&b=2", backend: "rev", uri: "/x?a=1&b=2"},
		{name: "reverse host is case-insensitive", host: "REV.Example.COM", path: "/", backend: "rev", uri: "/"},
		{name: "reverse host with trailing dot", host: "rev.example.com.", path: "/", backend: "rev", uri: "/"},
		{name: "reverse to forward-only route", host: "fwd.example.com", path: "/"},
		{name: "forward", host: "fwd.example.com", path: "/f?q=1", forward: true, backend: "fwd", uri: "/f?q=1"},
		{name: "forward to reverse-only route", host: "rev.example.com", path: "/", forward: true},
		{name: "port-less host on the TLS port is 443", host: "ports.example.com", path: "/", backend: "tls443", uri: "/"},
		{name: "explicit port 80", host: "ports.example.com:80", path: "/", backend: "plain80", uri: "/"},
		{name: "explicit port 443", host: "ports.example.com:443", path: "/", backend: "tls443", uri: "/"},
		{name: "X-Forwarded-Proto http means 80", host: "ports.example.com", path: "/", backend: "plain80", uri: "/",
			header: http.Header{"X-Forwarded-Proto": {"http"}}},
		{name: "X-Forwarded-Proto https keeps 443", host: "ports.example.com", path: "/", backend: "tls443", uri: "/",
			header: http.Header{"X-Forwarded-Proto": {"https"}}},
		{name: "absolute http URL means 80", host: "ports.example.com", path: "/", forward: true, backend: "plain80", uri: "/"},
		{name: "absolute URL with port 443", host: "ports.example.com:443", path: "/", forward: true, backend: "tls443", uri: "/"},
		{name: "other port", host: "ports.example.com:8443", path: "/"},
		{name: "path prefix", host: "paths.example.com", path: "/public/x", backend: "public", uri: "/public/x"},
		{name: "dot segments routed and forwarded as the canonical path", host: "paths.example.com",
			path: "/public/../admin", backend: "admin", uri: "/admin"},
		{name: "dot segments below the prefix", host: "paths.example.com", path: "/a/../admin/x", backend: "admin", uri: "/admin/x"},
		{name: "encoded dot segments", host: "paths.example.com", path: "/public/%2e%2E/admin", backend: "admin", uri: "/admin"},
		{name: "unreserved escapes decoded", host: "paths.example.com", path: "/public/%7Euser", backend: "public", uri: "/public/~user"},
		{name: "dot segments in a forward request", host: "paths.example.com", path: "/public/../admin", forward: true,
			backend: "admin", uri: "/admin"},
		{name: "no path rule matches", host: "paths.example.com", path: "/other"},
		{name: "header condition holds", host: "hdr.example.com", path: "/", backend: "tenant", uri: "/",
			header: http.Header{"X-Tenant": {"a"}}},
		{name: "header condition fails", host: "hdr.example.com", path: "/", header: http.Header{"X-Tenant": {"b"}}},
		{name: "wildcard host", host: "x.y.Wild.example.com", path: "/", backend: "wild", uri: "/"},
		{name: "unknown host", host: "nothing.example.com", path: "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var resp *http.Response
			if tc.forward {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+tc.host+tc.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range tc.header {
					req.Header[k] = v
				}
				if resp, err = fwdClient.Do(req); err != nil {
					t.Fatal(err)
				}
			} else {
				resp = e.do(t, http.MethodGet, tc.host, tc.path, tc.header, nil)
			}
			if tc.backend == "" {
				if got := resp.Header.Get("X-Kedge-Backend-Name"); got != "" {
					t.Errorf("X-Kedge-Backend-Name %q on an unrouted request", got)
				}
				expectKedgeError(t, resp, http.StatusBadGateway, "no-route")
				return
			}
			if got := resp.Header.Get("X-Kedge-Backend-Name"); got != tc.backend {
				t.Errorf("X-Kedge-Backend-Name = %q, want %q", got, tc.backend)
			}
			s := readSeen(t, resp)
			if s.Backend != tc.backend || s.URI != tc.uri {
				t.Errorf("backend %q saw %q, want %q saw %q", s.Backend, s.URI, tc.backend, tc.uri)
			}
			if want := tc.host; s.Host != want {
				t.Errorf("backend saw Host %q, want %q", s.Host, want)
			}
		})
	}
}

func TestNoRouteAnswer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	resp := e.do(t, http.MethodGet, "nothing.example.com", "/", nil, nil)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadGateway || string(body) != "unknown route to service\n" ||
		resp.Header.Get("X-Kedge-Error") != "unknown route to service" || resp.Header.Get("X-Kedge-Error-Type") != "no-route" {
		t.Errorf("got %d %q, headers %v", resp.StatusCode, body, resp.Header)
	}
}

// TestMalformedHost checks the documented answer to a malformed Host: 400 bad-request, not an adhoc error, when no
// adhoc rule could have been meant.
func TestMalformedHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "b", Host: "x.example.com"}}, backends: []*testBackend{newBackend(t, "b", nil)}})
	for _, host := range []string{"x.example.com:8o8o", "x.example.com:0443", "x.example.com:70000"} {
		expectKedgeError(t, e.do(t, http.MethodGet, host, "/", nil, nil), http.StatusBadRequest, "bad-request")
	}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
