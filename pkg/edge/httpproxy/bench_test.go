package httpproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// discardWriter is a minimal ResponseWriter that reuses its header map, so a benchmark's allocations are the
// handler's.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) Flush()                      {}

// BenchmarkProxyHTTP measures one proxied GET with a 1 KiB answer through ServeHTTP.
//   - loopback: to a real backend on 127.0.0.1 over a pooled connection (the allocations include the client
//     transport's and the backend server's, which run in this process);
//   - in-memory: to a RoundTripper that answers without I/O, which leaves kedge's own allocations (routing,
//     checks, ReverseProxy, metrics);
//   - in-memory+log: the same with the request log line written (JSON, to io.Discard).
func BenchmarkProxyHTTP(b *testing.B) {
	body := strings.Repeat("x", 1024)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}))
	defer backend.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	memory := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Length": {"1024"}},
			ContentLength: 1024, Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
	})
	jsonLog, err := logging.New(logging.Options{Level: "info", Format: "json", Output: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	routes := []route.HTTPRoute{
		{Backend: "other", Host: "other.example.com"},
		{Backend: "loop", Host: "loop.example.com", Paths: []string{"/api/*"}},
		{Backend: "mem", Host: "mem.example.com", Paths: []string{"/api/*"}},
	}
	table, err := route.NewHTTPTable(routes, nil)
	if err != nil {
		b.Fatal(err)
	}
	backends := backendMap{
		"loop": toAddr{addr: backend.Listener.Addr().String(), t: tr},
		"mem":  memory,
	}
	tests := []struct {
		name, host string
		log        logging.Logger
	}{
		{"loopback", "loop.example.com", logging.Discard()},
		{"in-memory", "mem.example.com", logging.Discard()},
		{"in-memory+log", "mem.example.com", jsonLog},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			h := New(Deps{Log: tc.log, Routes: staticRoutes{table}, Backends: backends})
			r := httptest.NewRequest(http.MethodGet, "/api/v1/items?limit=10", nil)
			r.Host = tc.host
			r.RemoteAddr = "192.0.2.1:1234"
			r.Header.Set("User-Agent", "bench")
			r.Header.Set("Accept", "*/*")
			r.Header.Set("Authorization", "Bearer token")
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d: %v", w.status, w.h)
				}
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
