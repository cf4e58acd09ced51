package httpproxy

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// recordingTransport answers 200 without network and keeps the last request it was given.
type recordingTransport struct {
	mu  sync.Mutex
	out *http.Request
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.out = req
	rt.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

func (rt *recordingTransport) take() *http.Request {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := rt.out
	rt.out = nil
	return out
}

// FuzzHeaderSanitize sends requests with arbitrary headers ("name: value" lines, canonicalised as net/http's
// parser does) through the handler and checks what would reach the backend: no underscore or invalid names, no
// hop-by-hop headers (except the Upgrade pair of a permitted upgrade and "Te: trailers"), nothing a client named
// in Connection unless kedge set it, exactly one request ID, no other client-sent X-Kedge-* header but
// X-Kedge-Info-Logs, and forwarding headers set by kedge alone.
func FuzzHeaderSanitize(f *testing.F) {
	for _, seed := range []string{
		"X_Auth_User: mallory\nX-Auth-User: alice",
		"Connection: X-Kedge-Request-Id, X-Forwarded-For, Keep-Alive, X-Custom\nKeep-Alive: 1\nX-Custom: c\n" +
			"X-Kedge-Request-Id: a\nx-kedge-request-id: b",
		"Upgrade: h2c\nConnection: Upgrade, HTTP2-Settings\nHTTP2-Settings: AAA",
		"Upgrade: websocket\nConnection: upgrade",
		"Te: trailers, gzip\nTrailer: X\nTransfer-Encoding: chunked\nProxy-Connection: keep-alive\nProxy-Authorization: Bearer x",
		"X-Forwarded-For: 6.6.6.6\nForwarded: for=x\nX-Kedge-Backend-Name: x\nX-KEDGE-IDENTITY: y\nX-Kedge-Info-Logs: me",
		"Bad Name: v\nNul\x00: v\nCr\r: v\n: empty",
		strings.Repeat("X-A: 1\n", 101),
	} {
		f.Add(seed)
	}
	// The RFC 9110 §7.6.1 connection-specific names, with Proxy-Connection and Proxy-Authorization.
	hopByHop := []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	rt := &recordingTransport{}
	table, err := route.NewHTTPTable([]route.HTTPRoute{{Backend: "b"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	h := New(Deps{Routes: staticRoutes{table}, Backends: backendMap{"b": rt}})

	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = "app.example.com"
		r.RemoteAddr = "192.0.2.1:1234"
		inUnderscore := false
		for line := range strings.SplitSeq(raw, "\n") {
			name, value, _ := strings.Cut(line, ":")
			r.Header.Add(name, strings.TrimSpace(value))
			inUnderscore = inUnderscore || strings.Contains(name, "_")
		}
		connNamed := map[string]bool{}
		for _, v := range r.Header["Connection"] {
			for tok := range strings.SplitSeq(v, ",") {
				connNamed[http.CanonicalHeaderKey(strings.TrimSpace(tok))] = true
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		out := rt.take()
		if out == nil {
			if w.Code < 400 {
				t.Fatalf("status %d without a backend request", w.Code)
			}
			return
		}
		if inUnderscore {
			t.Fatalf("request with an underscore header name forwarded (status %d)", w.Code)
		}
		oh := out.Header
		upgrade := len(oh["Upgrade"]) > 0
		for name, values := range oh {
			if checkName(name) != nameOK {
				t.Errorf("forwarded header name %q", name)
			}
			if name != http.CanonicalHeaderKey(name) {
				t.Errorf("forwarded non-canonical name %q", name)
			}
			for _, hop := range hopByHop {
				if !strings.EqualFold(name, hop) {
					continue
				}
				switch {
				case name == "Te" && len(values) == 1 && values[0] == "trailers":
				case upgrade && name == "Connection" && len(values) == 1 && values[0] == "Upgrade":
				case upgrade && name == "Upgrade" && len(values) == 1 && !strings.EqualFold(values[0], "h2c"):
				default:
					t.Errorf("hop-by-hop header forwarded: %s %q", name, values)
				}
			}
			kedgeSet := name == "X-Kedge-Request-Id" || strings.HasPrefix(name, "X-Forwarded-") ||
				upgrade && (name == "Connection" || name == "Upgrade") || name == "Te"
			if connNamed[name] && !kedgeSet {
				t.Errorf("header %s named in Connection forwarded", name)
			}
			if strings.HasPrefix(strings.ToLower(name), "x-kedge-") && name != "X-Kedge-Request-Id" && name != "X-Kedge-Info-Logs" {
				t.Errorf("client's %s forwarded", name)
			}
		}
		if id := oh["X-Kedge-Request-Id"]; len(id) != 1 || id[0] != w.Header().Get("X-Kedge-Request-Id") {
			t.Errorf("request ID forwarded %q, answered %q", id, w.Header().Get("X-Kedge-Request-Id"))
		}
		if xff := oh["X-Forwarded-For"]; len(xff) != 1 || xff[0] != "192.0.2.1" {
			t.Errorf("X-Forwarded-For %q", xff)
		}
		if fw, ok := oh["Forwarded"]; ok {
			t.Errorf("Forwarded %q", fw)
		}
	})
}
