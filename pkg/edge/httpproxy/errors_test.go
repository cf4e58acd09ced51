package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// newPool starts a real backend pool serving specs.
func newPool(t testing.TB, specs ...backend.Spec) *backend.Pool {
	t.Helper()
	p := backend.NewPool(backend.Deps{Options: backend.Options{DialTimeout: time.Second}})
	t.Cleanup(p.Close)
	if err := p.Update(specs); err != nil {
		t.Fatal(err)
	}
	return p
}

func hostSpec(name string, port int) backend.Spec {
	return backend.Spec{Name: name, Protocol: backend.HTTP,
		Resolver: backend.Resolver{Kind: backend.ResolverHost, DNSName: "127.0.0.1", Port: uint32(port)}}
}

func TestBackendMissing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "ghost"}}})
	resp := e.do(t, http.MethodGet, "any.example.com", "/", nil, nil)
	if got := resp.Header.Get("X-Kedge-Backend-Name"); got != "ghost" {
		t.Errorf("X-Kedge-Backend-Name = %q", got)
	}
	expectKedgeError(t, resp, http.StatusBadGateway, "no-backend")
}

func TestAdhoc(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "adhoc-target", nil)
	port := b.srv.Listener.Addr().(*net.TCPAddr).Port
	dead := testutil.RefusedPort(t)
	dns := testutil.NewResolver(map[string][]string{"127-0-0-1.pods.test.local": {"127.0.0.1"}})
	newAdhocEnv := func(guard backend.DialGuard) *env {
		rt := backend.NewAdhocTransport(backend.Deps{}, backend.NewAdhocDialer(backend.Deps{DNS: dns}, guard))
		t.Cleanup(rt.(interface{ CloseIdleConnections() }).CloseIdleConnections)
		return newEnv(t, envConfig{
			adhoc:   []route.Adhoc{{NamePattern: "*.pods.test.local", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}}}},
			adhocRT: rt,
		})
	}
	e := newAdhocEnv(backend.DefaultDialGuard(netip.MustParsePrefix("127.0.0.0/8")))
	strict := newAdhocEnv(nil)
	fwd := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(mustURL(t, e.proxy.URL))}}
	t.Cleanup(fwd.CloseIdleConnections)

	t.Run("forward", func(t *testing.T) {
		t.Parallel()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet,
			"http://127-0-0-1.pods.test.local:"+strconv.Itoa(port)+"/x", nil)
		resp, err := fwd.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("X-Kedge-Backend-Name"); got != "" {
			t.Errorf("X-Kedge-Backend-Name %q for an adhoc request", got)
		}
		if s := readSeen(t, resp); s.Backend != "adhoc-target" || s.URI != "/x" {
			t.Errorf("backend %q saw %q", s.Backend, s.URI)
		}
	})
	t.Run("reverse", func(t *testing.T) {
		t.Parallel()
		resp := e.do(t, http.MethodGet, "127-0-0-1.PODS.test.local:"+strconv.Itoa(port), "/y", nil, nil)
		if s := readSeen(t, resp); s.Backend != "adhoc-target" || s.URI != "/y" {
			t.Errorf("backend %q saw %q", s.Backend, s.URI)
		}
	})
	tests := []struct {
		name   string
		e      *env
		host   string
		status int
		typ    string
	}{
		{"port not allowed", e, "127-0-0-1.pods.test.local:80", 400, "unknown-route-error"},
		{"port-less means the rule's default, 80, not allowed", e, "127-0-0-1.pods.test.local", 400, "unknown-route-error"},
		{"malformed port", e, "127-0-0-1.pods.test.local:8o8o", 400, "unknown-route-error"},
		{"no rule", e, "db.example.com:5432", 502, "no-route"},
		{"name does not resolve", e, "gone.pods.test.local:8080", 502, "no-resolution-available"},
		{"connection refused", e, "127-0-0-1.pods.test.local:" + strconv.Itoa(dead), 502, "no-connection-to-all-resolved-addresses"},
		{"address refused by the dial guard", strict, "127-0-0-1.pods.test.local:" + strconv.Itoa(port), 403, "forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectKedgeError(t, tc.e.do(t, http.MethodGet, tc.host, "/", nil, nil), tc.status, tc.typ)
		})
	}
}

func TestBackendErrors(t *testing.T) {
	t.Parallel()
	killer := newBackend(t, "killer", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	good := newBackend(t, "good", nil)
	pool := newPool(t,
		hostSpec("down", testutil.RefusedPort(t)),
		hostSpec("killer", killer.srv.Listener.Addr().(*net.TCPAddr).Port),
		hostSpec("good", good.srv.Listener.Addr().(*net.TCPAddr).Port),
	)
	e := newEnv(t, envConfig{pool: pool, routes: []route.HTTPRoute{
		{Backend: "down", Host: "down.example.com"},
		{Backend: "killer", Host: "killer.example.com"},
		{Backend: "good", Host: "good.example.com"},
	}})
	tests := []struct {
		host, backend, typ string
	}{
		{"down.example.com", "down", "no-connection-to-all-resolved-addresses"},
		{"killer.example.com", "killer", "transport-unknown-error"},
	}
	for _, tc := range tests {
		t.Run(tc.backend, func(t *testing.T) {
			t.Parallel()
			resp := e.do(t, http.MethodGet, tc.host, "/", nil, nil)
			if got := resp.Header.Get("X-Kedge-Backend-Name"); got != tc.backend {
				t.Errorf("X-Kedge-Backend-Name = %q, want %q", got, tc.backend)
			}
			expectKedgeError(t, resp, http.StatusBadGateway, tc.typ)
		})
	}
	t.Run("endpoint logged", func(t *testing.T) {
		t.Parallel()
		resp := e.do(t, http.MethodGet, "good.example.com", "/", http.Header{"X-Kedge-Request-Id": {"endpoint-test"}}, nil)
		readSeen(t, resp)
		line := e.waitLog(t, "endpoint-test")
		want := map[string]any{"endpoint": good.addr(), "backend": "good", "route": "good", "status": float64(200),
			"method": "GET", "host": "good.example.com", "path": "/", "level": "info"}
		for k, v := range want {
			if line[k] != v {
				t.Errorf("log %s = %v, want %v (line %v)", k, line[k], v, line)
			}
		}
		for _, k := range []string{"duration", "bytes"} {
			if _, ok := line[k]; !ok {
				t.Errorf("log line without %s: %v", k, line)
			}
		}
		if _, ok := line["error_type"]; ok {
			t.Errorf("error_type on a successful request: %v", line)
		}
	})
}

// waitLog returns the request log line with the given request ID, waiting for it to be written.
func (e *env) waitLog(t testing.TB, reqID string) map[string]any {
	t.Helper()
	var found map[string]any
	testutil.Eventually(t, "log line of "+reqID, func() bool {
		for _, l := range e.logs.JSONLines(t) {
			if l["request_id"] == reqID {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// blockingBackend answers only when the request is cancelled, and reports that on done.
func blockingBackend(t testing.TB, done chan<- struct{}) *testBackend {
	return newBackend(t, "slow", http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		done <- struct{}{}
	}))
}

func TestClientGoesAway(t *testing.T) {
	t.Parallel()
	done := make(chan struct{}, 1)
	b := blockingBackend(t, done)
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "slow"}}, backends: []*testBackend{b}})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.proxy.URL+"/", nil)
	req.Header.Set("X-Kedge-Request-Id", "gone")
	resp, err := e.client.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want the client's deadline to end the request", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("client error %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend request was not cancelled")
	}
	line := e.waitLog(t, "gone")
	if line["status"] != float64(wire.StatusClientClosed) || line["error"] == nil {
		t.Errorf("log line %v", line)
	}
	if got := testutil.MetricValue(t, e.reg, "kedge_proxy_errors_total", nil); got != 0 {
		t.Errorf("a client going away counted as %v proxy errors", got)
	}
}

func TestBackendTimeout(t *testing.T) {
	t.Parallel()
	done := make(chan struct{}, 1)
	b := blockingBackend(t, done)
	e := newEnv(t, envConfig{
		routes: []route.HTTPRoute{{Backend: "slow"}}, backends: []*testBackend{b},
		// A deadline on the request, as a route timeout would set.
		wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
				defer cancel()
				h.ServeHTTP(w, r.WithContext(ctx))
			})
		},
	})
	expectKedgeError(t, e.do(t, http.MethodGet, "any.example.com", "/", nil, nil), http.StatusGatewayTimeout, "backend-timeout")
	<-done
}

func TestBackendCannotPoseAsKedge(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("X-Kedge-Error", "fake")
		h.Set("X-Kedge-Error-Type", "unauthorized")
		h.Set("X-Kedge-Request-Id", "fake")
		h.Set("X-Kedge-Backend-Name", "fake")
		h.Set("X-Backend-Own", "kept")
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprint(w, "backend body")
	}))
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "b"}}, backends: []*testBackend{b}})
	resp := e.do(t, http.MethodGet, "any.example.com", "/", http.Header{"X-Kedge-Request-Id": {"mine"}}, nil)
	resp.Body.Close()
	h := resp.Header
	if resp.StatusCode != http.StatusTeapot || h.Get("X-Backend-Own") != "kept" {
		t.Errorf("backend answer changed: %d %v", resp.StatusCode, h)
	}
	if h["X-Kedge-Error"] != nil || h["X-Kedge-Error-Type"] != nil {
		t.Errorf("backend's X-Kedge-Error headers passed: %v", h)
	}
	if got := h.Values("X-Kedge-Request-Id"); len(got) != 1 || got[0] != "mine" {
		t.Errorf("X-Kedge-Request-Id %q", got)
	}
	if got := h.Values("X-Kedge-Backend-Name"); len(got) != 1 || got[0] != "b" {
		t.Errorf("X-Kedge-Backend-Name %q", got)
	}
}

// TestBackendAbortsResponse has the backend die in the middle of a body: the client must see an error, not a
// clean short response, and the request is logged.
func TestBackendAbortsResponse(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000")
		fmt.Fprint(w, "partial")
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}))
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "b"}}, backends: []*testBackend{b}})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, e.proxy.URL+"/", nil)
	req.Header.Set("X-Kedge-Request-Id", "aborted")
	// Depending on whether kedge flushed the header yet, the error comes with the header or with the body.
	if resp, err := e.client.Do(req); err == nil {
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("read %q without error", got)
		}
	}
	if line := e.waitLog(t, "aborted"); line["error"] != "response aborted" || line["status"] != float64(200) {
		t.Errorf("log line %v", line)
	}
}
