package admin_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/admin"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, d admin.Deps) *httptest.Server {
	t.Helper()
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	s := httptest.NewServer(admin.New(d))
	t.Cleanup(s.Close)
	return s
}

type response struct {
	status int
	header http.Header
	body   string
}

func get(t *testing.T, s *httptest.Server, path string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func testRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "kedge_admin_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	return reg
}

func TestEndpoints(t *testing.T) {
	t.Parallel()
	s := newServer(t, admin.Deps{
		Gatherer: testRegistry(t),
		Config:   func() any { return map[string]any{"routes": []string{"a", "b"}} },
		Cmdline:  []string{"kedge", "--log_level=debug"},
	})
	tests := []struct {
		path        string
		status      int
		contentType string
		bodyHas     string
	}{
		{"/_healthz", 200, "text/plain", "kedge isok"},
		{"/readyz", 200, "text/plain", "ready"},
		{"/metrics", 200, "text/plain", "kedge_admin_test_total 3"},
		{"/debug/pprof/", 200, "text/html", "goroutine"},
		{"/debug/pprof/goroutine?debug=1", 200, "text/plain", "goroutine profile"},
		{"/debug/pprof/cmdline", 200, "text/plain", "kedge\x00--log_level=debug"},
		{"/_version", 200, "application/json", `"build_version":"dev"`},
		{"/debug/config", 200, "application/json", "\n  \"routes\": [\n"},
		{"/", 404, "text/plain", ""},
		{"/nothing", 404, "text/plain", ""},
		{"/_healthz/", 404, "text/plain", ""},
		{"/debug/flagz", 404, "text/plain", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			r := get(t, s, tt.path)
			if r.status != tt.status {
				t.Errorf("status = %d, want %d (body %q)", r.status, tt.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
				t.Errorf("Content-Type = %q, want %s", ct, tt.contentType)
			}
			if !strings.Contains(r.body, tt.bodyHas) {
				t.Errorf("body %q does not contain %q", r.body, tt.bodyHas)
			}
		})
	}
}

func TestHealthzExactBody(t *testing.T) {
	t.Parallel()
	if r := get(t, newServer(t, admin.Deps{}), "/_healthz"); r.body != "kedge isok" {
		t.Errorf("body = %q, want %q", r.body, "kedge isok")
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	var notReady atomic.Pointer[error]
	s := newServer(t, admin.Deps{Ready: func() error {
		if e := notReady.Load(); e != nil {
			return *e
		}
		return nil
	}})
	steps := []struct {
		set    error
		status int
		body   string
	}{
		{nil, 200, "ready"},
		{errors.New("config not loaded"), 503, "not ready: config not loaded"},
		{errors.New("shutting down"), 503, "not ready: shutting down"},
		{nil, 200, "ready"},
	}
	for _, st := range steps {
		if st.set != nil {
			notReady.Store(&st.set)
		} else {
			notReady.Store(nil)
		}
		if r := get(t, s, "/readyz"); r.status != st.status || r.body != st.body {
			t.Errorf("readyz with %v = %d %q, want %d %q", st.set, r.status, r.body, st.status, st.body)
		}
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := get(t, newServer(t, admin.Deps{}), "/_version")
	var v map[string]any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("/_version is not JSON: %v: %q", err, r.body)
	}
	if v["build_version"] != "dev" || v["go_version"] != runtime.Version() {
		t.Errorf("/_version = %v", v)
	}
	if _, ok := v["revision"]; !ok {
		t.Errorf("/_version lacks revision: %v", v)
	}
}

func TestMetricsPathAndMissingParts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		deps admin.Deps
		path string
		want int
	}{
		{"custom path served", admin.Deps{Gatherer: testRegistry(t), MetricsPath: "/m"}, "/m", 200},
		{"default path gone when custom", admin.Deps{Gatherer: testRegistry(t), MetricsPath: "/m"}, "/metrics", 404},
		{"path without slash", admin.Deps{Gatherer: testRegistry(t), MetricsPath: "prom"}, "/prom", 200},
		{"no gatherer", admin.Deps{}, "/metrics", 404},
		{"no config func", admin.Deps{}, "/debug/config", 404},
		{"no command line", admin.Deps{}, "/debug/pprof/cmdline", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if r := get(t, newServer(t, tt.deps), tt.path); r.status != tt.want {
				t.Errorf("GET %s = %d, want %d", tt.path, r.status, tt.want)
			}
		})
	}
}

func TestConfigEncodingError(t *testing.T) {
	t.Parallel()
	s := newServer(t, admin.Deps{Config: func() any { return map[string]any{"f": func() {}} }})
	if r := get(t, s, "/debug/config"); r.status != http.StatusInternalServerError {
		t.Errorf("unencodable config = %d, want 500", r.status)
	}
}

// TestNeverProxies sends proxy-shaped requests over a raw connection.
func TestNeverProxies(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(backend.Close)
	s := newServer(t, admin.Deps{Gatherer: testRegistry(t)})
	backendHost := strings.TrimPrefix(backend.URL, "http://")
	tests := []struct {
		name, request string
	}{
		{"absolute-form", "GET " + backend.URL + "/_healthz HTTP/1.1\r\nHost: " + backendHost + "\r\n\r\n"},
		{"CONNECT", "CONNECT " + backendHost + " HTTP/1.1\r\nHost: " + backendHost + "\r\n\r\n"},
		{"foreign Host", "GET / HTTP/1.1\r\nHost: rev.example.com\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", s.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status = %d, want 404", resp.StatusCode)
			}
		})
	}
	t.Cleanup(func() {
		if n := hits.Load(); n != 0 {
			t.Errorf("backend received %d requests through the debug listener", n)
		}
	})
}

func TestProtect(t *testing.T) {
	t.Parallel()
	var wrapped atomic.Int64
	protect := func(next http.Handler) http.Handler {
		wrapped.Add(1)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Test-Auth") != "ok" {
				http.Error(w, "denied", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	s := newServer(t, admin.Deps{
		Gatherer:    testRegistry(t),
		MetricsPath: "/prom",
		Config:      func() any { return "cfg" },
		Cmdline:     []string{"kedge"},
		Protect:     protect,
	})
	tests := []struct {
		path      string
		protected bool
		authedOK  int
	}{
		{"/_healthz", false, 200},
		{"/readyz", false, 200},
		{"/prom", false, 200},
		{"/debug/pprof/", true, 200},
		{"/debug/pprof/cmdline", true, 200},
		{"/debug/config", true, 200},
		{"/_version", true, 200},
		{"/metrics", true, 404}, // not the metrics path here
		{"/elsewhere", true, 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			anon := get(t, s, tt.path)
			if tt.protected && anon.status != http.StatusUnauthorized {
				t.Errorf("anonymous GET %s = %d, want 401 (protected)", tt.path, anon.status)
			}
			if !tt.protected && anon.status != tt.authedOK {
				t.Errorf("anonymous GET %s = %d, want %d (unprotected)", tt.path, anon.status, tt.authedOK)
			}
			if authed := get(t, s, tt.path, "X-Test-Auth", "ok"); authed.status != tt.authedOK {
				t.Errorf("authenticated GET %s = %d, want %d", tt.path, authed.status, tt.authedOK)
			}
		})
	}
	if wrapped.Load() != 1 {
		t.Errorf("Protect called %d times, want once at construction", wrapped.Load())
	}
}
