package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/httpproxy"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testToken = "t0ken-for-tunnels"

// echoConn copies everything back, then half-closes.
func echoConn(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// countConn reads until EOF, then answers "got N bytes" and closes: only a half-close from the client lets it answer.
func countConn(c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "got %d bytes\n", n)
}

type staticRoutes struct{ t *route.HTTPTable }

func (s staticRoutes) HTTPTable() *route.HTTPTable { return s.t }

// tunnelLines returns the JSON "connect tunnel" log lines written to logs so far.
func tunnelLines(t *testing.T, logs *testutil.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range logs.JSONLines(t) {
		if m["msg"] == "connect tunnel" {
			out = append(out, m)
		}
	}
	return out
}

// env is kedge's HTTPS port in miniature: serve.HTTPServer with TLS, httpproxy with this package as its CONNECT
// handler, a real backend pool and a static-token gate.
type env struct {
	addr      string // kedge's HTTPS listener
	kedgeCA   *testutil.CA
	kedgeCAF  string // file of kedgeCA
	backendCA *testutil.CA
	backCAF   string
	echo      *testutil.EchoServer // TLS echo backend, certificate for echo.test and robots.test
	count     *testutil.RawServer  // answers "got N bytes" after the client's half-close
	reflect   *testutil.RawServer  // echoes
	reg       *prometheus.Registry
	logs      *testutil.Buffer
	cancel    context.CancelFunc
	served    chan error
}

type envOptions struct {
	idle   time.Duration
	drain  time.Duration
	tracer *tracing.Tracer
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{kedgeCA: testutil.NewCA(t), backendCA: testutil.NewCA(t), reg: prometheus.NewRegistry(), logs: &testutil.Buffer{}}
	dir := t.TempDir()
	e.kedgeCAF = e.kedgeCA.WriteFiles(t, dir)
	e.backCAF = e.backendCA.WriteFiles(t, dir)
	e.echo = testutil.NewEchoServer(t, testutil.EchoName("echo"), testutil.EchoTLS(e.backendCA.Server(t, "echo.test", "robots.test")))
	e.count = testutil.NewRawServer(t, countConn)
	e.reflect = testutil.NewRawServer(t, echoConn)
	dead := testutil.RefusedPort(t)

	pool := backend.NewPool(backend.Deps{Registerer: e.reg, Options: backend.Options{DialTimeout: time.Second}})
	t.Cleanup(pool.Close)
	spec := func(name string, port int) backend.Spec {
		return backend.Spec{Name: name, Protocol: backend.HTTP,
			Resolver: backend.Resolver{Kind: backend.ResolverHost, DNSName: "127.0.0.1", Port: uint32(port)}}
	}
	if err := pool.Update([]backend.Spec{spec("echo", e.echo.Port()), spec("count", e.count.Port()),
		spec("reflect", e.reflect.Port()), spec("dead", dead)}); err != nil {
		t.Fatal(err)
	}
	table, err := route.NewHTTPTable([]route.HTTPRoute{
		{Backend: "echo", Host: "echo.test", Port: 443, Mode: route.ModeConnect},
		{Backend: "echo", Host: "robots.test", Port: 443, Mode: route.ModeConnect, AllowedIdentities: []string{"robot"}},
		{Backend: "count", Host: "count.test", Port: 7000, Mode: route.ModeConnect},
		{Backend: "reflect", Host: "reflect.test", Port: 7000, Mode: route.ModeConnect},
		{Backend: "dead", Host: "dead.test", Port: 443, Mode: route.ModeConnect},
		{Backend: "echo", Host: "web.test"}, // mode ANY: never a tunnel
	}, []route.Adhoc{
		{NamePattern: "127.0.0.1", AllowedPorts: []uint32{uint32(e.reflect.Port())}},
		{NamePattern: "*.adhoc.test", AllowedPorts: []uint32{uint32(e.reflect.Port())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	log, err := logging.New(logging.Options{Level: "info", Format: "json", Output: e.logs})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := authn.New(authn.Config{StaticToken: testToken}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gate, err := authz.NewGate(auth, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	routes := staticRoutes{table}
	adhoc := backend.NewAdhocDialer(backend.Deps{DNS: testutil.NewResolver(map[string][]string{"loop.adhoc.test": {"127.0.0.1"}})}, nil)
	adm, err := admission.New(gate, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	tunnels := New(Deps{Log: log, Registerer: e.reg, Routes: routes, Backends: pool, Adhoc: adhoc, Admission: adm, IdleTimeout: o.idle, Tracer: o.tracer})
	proxy := httpproxy.New(httpproxy.Deps{Log: log, Registerer: e.reg, Routes: routes, Backends: pool, Connect: tunnels, Admission: adm})

	srv := serve.HTTPServer(proxy, serve.HTTPOptions{Name: "https", TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{e.kedgeCA.Server(t, "127.0.0.1", "localhost")},
		ClientCAs:    e.kedgeCA.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
	}}, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	drain := o.drain
	if drain == 0 {
		drain = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.served = make(chan error, 1)
	go func() { e.served <- serve.Serve(ctx, srv, ln, drain) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.served; err != nil && !errors.Is(err, serve.ErrDrainTimeout) {
			t.Errorf("serve: %v", err)
		}
	})
	return e
}

// connect opens a TLS connection to kedge (HTTP/1.1, presenting cert if not nil) and sends "CONNECT target" with
// the extra header lines. It returns the connection (deadline 20 s), a reader positioned after the response head, and
// the response.
func (e *env) connect(t *testing.T, target string, cert *tls.Certificate, header ...string) (*tls.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	cfg := &tls.Config{RootCAs: e.kedgeCA.Pool(), ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", e.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	req := "CONNECT " + target + " HTTP/1.1\r\n"
	host := "Host: " + target + "\r\n" // unless a header line gives another
	for _, h := range header {
		if strings.HasPrefix(strings.ToLower(h), "host:") {
			host = ""
		}
		req += h + "\r\n"
	}
	req += host
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: reading the answer: %v", target, err)
	}
	return c, br, resp
}

func auth() string { return "Proxy-Authorization: Bearer " + testToken }

// bufConn reads through r (which may hold bytes already read from Conn) and writes to Conn.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }
