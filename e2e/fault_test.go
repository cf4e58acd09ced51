package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// faultBackends starts a backend that never answers and one that sends half a response and then drops the
// connection, and returns the backendpool and director documents routing hung.example.com and dies.example.com to
// them and ok.example.com to a healthy one.
func faultBackends(t *testing.T) (director, pool string) {
	t.Helper()
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	dies := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "1000000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close() // the backend process "dies" mid-response
		}
	}))
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(func() { close(release); hung.Close(); dies.Close(); ok.Close() })
	port := func(s *httptest.Server) int {
		p, _ := strconv.Atoi(s.URL[strings.LastIndexByte(s.URL, ':')+1:])
		return p
	}
	director = `{"http": {"routes": [
  {"backend_name": "hung", "host_matcher": "hung.example.com"},
  {"backend_name": "dies", "host_matcher": "dies.example.com"},
  {"backend_name": "ok", "host_matcher": "ok.example.com"}
]}}`
	pool = fmt.Sprintf(`{"http": {"backends": [
  {"name": "hung", "host": {"dns_name": "127.0.0.1", "port": %d}},
  {"name": "dies", "host": {"dns_name": "127.0.0.1", "port": %d}},
  {"name": "ok", "host": {"dns_name": "127.0.0.1", "port": %d}}
]}}`, port(hung), port(dies), port(ok))
	return director, pool
}

// TestKedgeBackendFaults: a hung backend costs its client 504 backend-timeout after
// --backend_response_header_timeout (not a hang); a backend that dies mid-response gives the client a truncated
// body it can detect; kedge stays ready and serves other routes, and its goroutines come back down.
func TestKedgeBackendFaults(t *testing.T) {
	t.Parallel()
	director, pool := faultBackends(t)
	k := startKedge(t, director, pool, "--backend_response_header_timeout=1s")
	c := k.client(false)
	get := func(host string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+host+"/", nil)
		return c.Do(req)
	}
	before := goroutines(t, k)

	start := time.Now()
	resp, err := get("hung.example.com")
	if err != nil {
		t.Fatalf("hung backend: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Kedge-Error-Type") != "backend-timeout" {
		t.Errorf("hung backend: %d %q, want 504 backend-timeout", resp.StatusCode, resp.Header.Get("X-Kedge-Error-Type"))
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("hung backend: the answer took %v", d)
	}

	for range 3 {
		resp, err = get("dies.example.com")
		if err != nil {
			continue // an error before the body (kedge closed the connection the last truncated answer used) is as good
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil || n >= 1000000 {
			t.Errorf("dying backend: read %d bytes, err %v; want a truncated body and an error", n, err)
		}
	}

	resp, err = get("ok.example.com")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Errorf("healthy route after the faults: %d %q", resp.StatusCode, body)
	}
	if code, _ := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the faults: %d", code)
	}
	c.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for n := goroutines(t, k); n > before+5; n = goroutines(t, k) {
		if time.Now().After(deadline) {
			t.Errorf("kedge has %d goroutines after the faults, %d before", n, before)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// goroutines reads kedge's goroutine count from its debug port (pprof answers loopback peers).
func goroutines(t *testing.T, k *kedgeEnv) int {
	t.Helper()
	code, body := debugGet(t, "http://"+k.debug+"/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK {
		t.Fatalf("goroutine profile: %d", code)
	}
	first, _, _ := strings.Cut(body, "\n") // "goroutine profile: total N"
	n, err := strconv.Atoi(strings.TrimSpace(first[strings.LastIndexByte(first, ' ')+1:]))
	if err != nil {
		t.Fatalf("goroutine profile header %q", first)
	}
	return n
}
