package httpforward_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// fakeKedge is a real TLS server (h2 and HTTP/1.1) doing what kedge does for winch: it checks the proxy token,
// reverse-proxies plain requests to its backend keeping Host, and answers CONNECT host:port by splicing to the
// address its targets map names.
type fakeKedge struct {
	name    string
	url     string // https://localhost:port
	port    string
	backend *url.URL // where plain requests go
	// valid, when not nil, lists the accepted proxy tokens; others get 401 unauthorized.
	valid   map[string]bool
	targets map[string]string // CONNECT host:port -> dial address

	conns    atomic.Int64 // accepted TCP connections
	requests atomic.Int64
	srv      *http.Server
	served   chan struct{}

	mu       sync.Mutex
	seen     []seenRequest         // guarded by mu
	hijacked map[net.Conn]struct{} // guarded by mu
	wg       sync.WaitGroup        // running CONNECT splices
}

type seenRequest struct {
	method, host, proto string
	header              http.Header
}

type kedgeOption func(*fakeKedge)

func validTokens(tokens ...string) kedgeOption {
	return func(k *fakeKedge) {
		k.valid = map[string]bool{}
		for _, t := range tokens {
			k.valid[t] = true
		}
	}
}

func connectTarget(hostport, addr string) kedgeOption {
	return func(k *fakeKedge) { k.targets[hostport] = addr }
}

func newFakeKedge(t *testing.T, ca *testutil.CA, name, backendURL string, opts ...kedgeOption) *fakeKedge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	k := &fakeKedge{name: name, url: "https://localhost:" + port, port: port, targets: map[string]string{},
		served: make(chan struct{}), hijacked: map[net.Conn]struct{}{}}
	if backendURL != "" {
		if k.backend, err = url.Parse(backendURL); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range opts {
		o(k)
	}
	k.srv = &http.Server{
		Handler:           k,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          logging.StdLogger(logging.Discard(), logging.LevelDebug, "kedge"),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{ca.Server(t)},
			NextProtos:   []string{"h2", "http/1.1"},
		},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				k.conns.Add(1)
			}
		},
	}
	go func() { defer close(k.served); _ = k.srv.ServeTLS(ln, "", "") }()
	t.Cleanup(k.close)
	return k
}

func (k *fakeKedge) close() {
	_ = k.srv.Close()
	<-k.served
	k.mu.Lock()
	for c := range k.hijacked {
		_ = c.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
}

func (k *fakeKedge) last(t *testing.T) seenRequest {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.seen) == 0 {
		t.Fatalf("kedge %s saw no request", k.name)
	}
	return k.seen[len(k.seen)-1]
}

func (k *fakeKedge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.requests.Add(1)
	k.mu.Lock()
	k.seen = append(k.seen, seenRequest{method: r.Method, host: r.Host, proto: r.Proto, header: r.Header.Clone()})
	k.mu.Unlock()
	w.Header().Set("X-Fake-Kedge", k.name)
	if k.valid != nil {
		tok, ok := strings.CutPrefix(r.Header.Get(wire.HeaderProxyAuthz), "Bearer ")
		if !ok || !k.valid[tok] {
			wire.WriteKedgeError(w, http.StatusUnauthorized, wire.ErrUnauthorized, "Unauthenticated. Verification failed.")
			return
		}
	}
	r.Header.Del(wire.HeaderProxyAuthz)
	if r.Method == http.MethodConnect {
		k.connect(w, r)
		return
	}
	if k.backend == nil {
		wire.WriteKedgeError(w, http.StatusBadGateway, wire.ErrNoRoute, "unknown route to service")
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(k.backend)
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set("X-Seen-Forwarded-Proto", pr.In.Header.Get(wire.HeaderForwardedProto))
		},
		FlushInterval: -1,
		ErrorLog:      logging.StdLogger(logging.Discard(), logging.LevelDebug, "kedge"),
	}
	rp.ServeHTTP(w, r)
}

func (k *fakeKedge) connect(w http.ResponseWriter, r *http.Request) {
	addr, ok := k.targets[r.Host]
	if !ok {
		wire.WriteKedgeError(w, http.StatusBadGateway, wire.ErrNoRoute, "unknown route to service")
		return
	}
	up, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		wire.WriteKedgeError(w, http.StatusBadGateway, wire.ErrTunnelDial, err.Error())
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	k.mu.Lock()
	k.hijacked[conn] = struct{}{}
	k.mu.Unlock()
	k.wg.Add(1)
	defer func() {
		k.mu.Lock()
		delete(k.hijacked, conn)
		k.mu.Unlock()
		_ = conn.Close()
		_ = up.Close()
		k.wg.Done()
	}()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.Copy(up, brw.Reader)
		halfClose(up, err)
	}()
	_, err = io.Copy(conn, up)
	halfClose(conn, err)
	<-done
}

func halfClose(c net.Conn, err error) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// tokenSource hands out tokens in order: Invalidate of the current token moves to the next one.
type tokenSource struct {
	mu          sync.Mutex
	tokens      []string
	err         error
	next        int
	invalidated []string
}

func (s *tokenSource) Token(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	return s.tokens[min(s.next, len(s.tokens)-1)], nil
}

func (s *tokenSource) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated = append(s.invalidated, tok)
	if s.tokens[min(s.next, len(s.tokens)-1)] == tok {
		s.next++
	}
}

func (s *tokenSource) Invalidated() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.invalidated...)
}

func staticSource(tok string) *tokenSource { return &tokenSource{tokens: []string{tok}} }

type sources map[string]httpforward.TokenSource

func (s sources) lookup(name string) (httpforward.TokenSource, bool) {
	src, ok := s[name]
	return src, ok
}

// winch runs a Handler on a real listener.
type winch struct {
	addr    string
	handler *httpforward.Handler
}

type winchSetup struct {
	routes    []mapper.Route
	sources   sources
	ca        *testutil.CA
	unmatched httpforward.Unmatched
	local     http.Handler
	mitmCA    *httpforward.CA
	infoLogs  string
}

func startWinch(t *testing.T, s winchSetup) *winch {
	t.Helper()
	kedgeTLS := &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}
	h := httpforward.New(httpforward.Deps{
		Log:       logging.Discard(),
		Routes:    mapper.New(s.routes),
		Sources:   s.sources.lookup,
		KedgeTLS:  kedgeTLS,
		DirectTLS: kedgeTLS,
		Local:     s.local,
		CA:        s.mitmCA,
		Options:   httpforward.Options{Unmatched: s.unmatched, InfoLogs: s.infoLogs},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := serve.HTTPServer(h, serve.HTTPOptions{Name: "winch_http"}, logging.Discard())
	done := make(chan error, 1)
	go func() { done <- serve.Serve(ctx, srv, ln, 2*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, serve.ErrDrainTimeout) {
			t.Errorf("winch server: %v", err)
		}
		h.Close()
	})
	return &winch{addr: ln.Addr().String(), handler: h}
}

// client returns an HTTP client that uses w as its proxy (for http and https URLs) and trusts roots.
func (w *winch) client(t *testing.T, roots *tls.Config) *http.Client {
	t.Helper()
	proxyURL := &url.URL{Scheme: "http", Host: w.addr}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: roots, DisableKeepAlives: false}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func get(t *testing.T, c *http.Client, rawURL string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	return resp
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func directRoute(key, kedgeURL string, mod ...func(*mapper.Route)) mapper.Route {
	r := mapper.Route{Direct: key, URL: kedgeURL}
	for _, m := range mod {
		m(&r)
	}
	return r
}

func withProxyAuth(name string) func(*mapper.Route) {
	return func(r *mapper.Route) { r.ProxyAuth = name }
}
func withBackendAuth(name string) func(*mapper.Route) {
	return func(r *mapper.Route) { r.BackendAuth = name }
}
func withProtocol(p mapper.Protocol) func(*mapper.Route) {
	return func(r *mapper.Route) { r.Protocol = p }
}
func withMITM() func(*mapper.Route) { return func(r *mapper.Route) { r.MITM = true } }

func mustContain(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}
