package httpproxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// TestPathRuleWalkAround sends spellings of "/admin" that common backends serve as "/admin" (repeated slashes, dot
// segments, escapes, ';' parameters) over HTTP/1.1 and HTTP/2: each must be routed by the "/admin" rules, not the
// open route after them, and the backend must receive the canonical path that was matched.
func TestPathRuleWalkAround(t *testing.T) {
	t.Parallel()
	tests := []struct{ path, backendURI string }{
		{"/admin", "/admin"},
		{"//admin", "/admin"},
		{"///admin//x", "/admin/x"},
		{"/x/../admin", "/admin"},
		{"/%61dmin", "/admin"},
		{"/admin;jsessionid=1", "/admin;jsessionid=1"},
		{"/;x/admin", "/;x/admin"},
		{"/public;x/../admin", "/admin"},
		{"/admin;a=b/x", "/admin;a=b/x"},
		{"/ADMIN", "/ADMIN"}, // the rule is case-insensitive on this route
	}
	for _, proto := range []struct {
		name string
		tls  bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		t.Run(proto.name, func(t *testing.T) {
			t.Parallel()
			admin, open := newBackend(t, "admin", nil), newBackend(t, "open", nil)
			e := newEnv(t, envConfig{tls: proto.tls, backends: []*testBackend{admin, open}, routes: []route.HTTPRoute{
				{Backend: "admin", Host: "app.example.com", Paths: []string{"/admin", "/admin/*"}, PathCaseInsensitive: true},
				{Backend: "open", Host: "app.example.com"},
			}})
			for _, tt := range tests {
				s := readSeen(t, e.do(t, http.MethodGet, "app.example.com", tt.path, nil, nil))
				if s.Backend != "admin" || s.URI != tt.backendURI {
					t.Errorf("%s: reached %q with %q, want admin with %q", tt.path, s.Backend, s.URI, tt.backendURI)
				}
				if proto.tls && s.Proto != "HTTP/1.1" || !strings.HasPrefix(s.URI, "/") {
					t.Errorf("%s: backend saw %s %q", tt.path, s.Proto, s.URI)
				}
			}
		})
	}
}

// TestEncodedSlash: a path with "%2F" or "%5C" is refused (400) unless the route it matches allows encoded slashes;
// then it is forwarded with them still encoded.
func TestEncodedSlash(t *testing.T) {
	t.Parallel()
	files, web := newBackend(t, "files", nil), newBackend(t, "web", nil)
	e := newEnv(t, envConfig{tls: true, backends: []*testBackend{files, web}, routes: []route.HTTPRoute{
		{Backend: "files", Host: "app.example.com", Paths: []string{"/objects/*"}, AllowEncodedSlashes: true},
		{Backend: "web", Host: "app.example.com"},
	}})
	s := readSeen(t, e.do(t, http.MethodGet, "app.example.com", "/objects/a%2fb%5Cc", nil, nil))
	if s.Backend != "files" || s.URI != "/objects/a%2Fb%5Cc" {
		t.Errorf("allowed route: reached %q with %q, want files with /objects/a%%2Fb%%5Cc", s.Backend, s.URI)
	}
	for _, p := range []string{"/public/..%2Fadmin", "/a%2Fb", "/a%5cb", "/objects%2Fx"} {
		expectKedgeError(t, e.do(t, http.MethodGet, "app.example.com", p, nil, nil), http.StatusBadRequest, "bad-request")
	}
	if n := web.hits.Load(); n != 0 {
		t.Errorf("the route without allow_encoded_slashes got %d requests", n)
	}
}

// TestForwardingHeaders: a client's X-Forwarded-*, X-Real-IP and Forwarded never reach the backend as sent; kedge
// sets what it saw, also when the client lists them in Connection. A trusted proxy's chain is kept and appended to.
func TestForwardingHeaders(t *testing.T) {
	t.Parallel()
	spoof := http.Header{
		"X-Forwarded-For":   {"1.2.3.4"},
		"X-Forwarded-Host":  {"evil.example.com"},
		"X-Forwarded-Proto": {"gopher"},
		"X-Real-Ip":         {"5.6.7.8"},
		"Forwarded":         {"for=9.9.9.9"},
		"True-Client-Ip":    {"8.8.8.8"},
		"Connection":        {"X-Forwarded-For, X-Real-Ip"},
	}
	tests := []struct {
		name   string
		policy *forwarded.Policy
		want   map[string]string // "" means absent
	}{
		{"untrusted client", nil, map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": "app.example.com", "X-Forwarded-Proto": "http",
			"X-Real-Ip": "127.0.0.1", "Forwarded": "", "True-Client-Ip": "",
		}},
		{"trusted proxy", forwarded.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}), map[string]string{
			"X-Forwarded-For": "1.2.3.4, 127.0.0.1", "X-Forwarded-Host": "evil.example.com",
			"X-Forwarded-Proto": "gopher", "X-Real-Ip": "1.2.3.4", "Forwarded": "for=9.9.9.9", "True-Client-Ip": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t, "web", nil)
			// HTTP/1.1, where a client can list headers in Connection (HTTP/2 forbids the header).
			e := newEnv(t, envConfig{forwarded: tt.policy, backends: []*testBackend{b},
				routes: []route.HTTPRoute{{Backend: "web"}}})
			hdr := spoof.Clone()
			if tt.name == "trusted proxy" {
				delete(hdr, "Connection") // a proxy would not hide its own chain
			}
			s := readSeen(t, e.do(t, http.MethodGet, "app.example.com", "/", hdr, nil))
			for name, want := range tt.want {
				if got := strings.Join(s.Header[name], ","); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}
