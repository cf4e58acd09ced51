package httpproxy

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// seen is what a test backend reports about the request it received (JSON body of its answer).
type seen struct {
	Backend string      `json:"backend"`
	Method  string      `json:"method"`
	URI     string      `json:"uri"` // request-target as received
	Host    string      `json:"host"`
	Proto   string      `json:"proto"`
	Header  http.Header `json:"header"`
	BodyLen int64       `json:"body_len"`
}

// testBackend is a real HTTP server on 127.0.0.1 that answers 200 with a JSON description of each request (unless
// a test gives it another handler) and counts requests.
type testBackend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func newBackend(t testing.TB, name string, h http.Handler) *testBackend {
	t.Helper()
	b := &testBackend{name: name}
	if h == nil {
		h = http.HandlerFunc(b.describe)
	}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *testBackend) describe(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Test-Backend", b.name)
	_ = json.NewEncoder(w).Encode(seen{
		Backend: b.name, Method: r.Method, URI: r.RequestURI, Host: r.Host, Proto: r.Proto, Header: r.Header, BodyLen: n,
	})
}

func (b *testBackend) addr() string { return b.srv.Listener.Addr().String() }

// backendMap is a fake Backends: each name maps to a RoundTripper that sends to one address.
type backendMap map[string]http.RoundTripper

func (m backendMap) HTTP(name string) (http.RoundTripper, bool) {
	rt, ok := m[name]
	return rt, ok
}

// toAddr is a backend RoundTripper for one endpoint, like the real ones: it sets scheme and host and keeps Host.
type toAddr struct {
	addr string
	t    *http.Transport
}

func (a toAddr) RoundTrip(req *http.Request) (*http.Response, error) {
	out := *req
	u := *req.URL
	u.Scheme, u.Host = "http", a.addr
	out.URL = &u
	return a.t.RoundTrip(&out)
}

// staticRoutes is a fixed Routes.
type staticRoutes struct{ t *route.HTTPTable }

func (s staticRoutes) HTTPTable() *route.HTTPTable { return s.t }

// env is a kedge HTTP proxy handler served on 127.0.0.1 with a real route table.
type env struct {
	proxy  *httptest.Server
	h      *Handler
	reg    *prometheus.Registry
	logs   *testutil.Buffer
	client *http.Client // plain client to the proxy (HTTP/1.1)
}

type envConfig struct {
	routes    []route.HTTPRoute
	adhoc     []route.Adhoc
	backends  []*testBackend
	pool      Backends // if set, used instead of the backends above (a real backend.Pool)
	adhocRT   http.RoundTripper
	grpc      http.Handler
	connect   http.Handler
	opts      Options
	tls       bool                            // serve TLS with h2
	tlsCfg    *tls.Config                     // with tls: the server's config (client certificates)
	wrap      func(http.Handler) http.Handler // middleware around the handler
	gate      *authz.Gate
	forwarded *forwarded.Policy
	tracer    *tracing.Tracer
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	table, err := route.NewHTTPTable(cfg.routes, cfg.adhoc)
	if err != nil {
		t.Fatalf("route table: %v", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	bm := backendMap{}
	for _, b := range cfg.backends {
		bm[b.name] = toAddr{addr: b.addr(), t: tr}
	}
	var backends Backends = bm
	if cfg.pool != nil {
		backends = cfg.pool
	}
	logs := &testutil.Buffer{}
	log, err := logging.New(logging.Options{Level: "info", Format: "json", Output: logs})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{reg: prometheus.NewRegistry(), logs: logs}
	adm, err := admission.New(cfg.gate, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.h = New(Deps{
		Log: log, Registerer: e.reg, Routes: staticRoutes{table}, Backends: backends,
		Adhoc: cfg.adhocRT, GRPC: cfg.grpc, Connect: cfg.connect, Options: cfg.opts, Admission: adm,
		Forwarded: cfg.forwarded, Tracer: cfg.tracer,
	})
	var h http.Handler = e.h
	if cfg.wrap != nil {
		h = cfg.wrap(h)
	}
	e.proxy = httptest.NewUnstartedServer(h)
	if cfg.tls {
		e.proxy.EnableHTTP2 = true
		e.proxy.TLS = cfg.tlsCfg
		e.proxy.StartTLS()
		e.client = e.proxy.Client()
	} else {
		e.proxy.Start()
		e.client = &http.Client{Transport: &http.Transport{DisableCompression: true}}
	}
	t.Cleanup(func() {
		e.client.CloseIdleConnections()
		e.proxy.Close()
	})
	return e
}

// do sends a request with the given Host to the proxy in origin-form.
func (e *env) do(t testing.TB, method, host, path string, hdr http.Header, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.proxy.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, vv := range hdr {
		req.Header[k] = vv
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	return resp
}

// readSeen decodes a test backend's description; the test fails if the answer is not one.
func readSeen(t testing.TB, resp *http.Response) seen {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (%s: %s), body %q", resp.StatusCode, resp.Header.Get("X-Kedge-Error-Type"),
			resp.Header.Get("X-Kedge-Error"), body)
	}
	var s seen
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("backend answer %q: %v", body, err)
	}
	return s
}

// expectKedgeError checks a kedge-made error response and closes its body.
func expectKedgeError(t testing.TB, resp *http.Response, status int, typ string) {
	t.Helper()
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status || resp.Header.Get("X-Kedge-Error-Type") != typ {
		t.Fatalf("got %d %q (X-Kedge-Error %q, body %q), want %d %q", resp.StatusCode,
			resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"), body, status, typ)
	}
	if resp.Header.Get("X-Kedge-Error") == "" || len(body) == 0 {
		t.Errorf("error response without X-Kedge-Error or body: %q / %q", resp.Header.Get("X-Kedge-Error"), body)
	}
	if resp.Header.Get("X-Kedge-Request-Id") == "" {
		t.Errorf("error response without X-Kedge-Request-ID")
	}
}

// dialRaw opens a TCP connection to the proxy with a deadline.
func (e *env) dialRaw(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.proxy.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}
