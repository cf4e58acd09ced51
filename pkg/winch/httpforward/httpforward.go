// Package httpforward is winch's HTTP proxy port: absolute-form requests and CONNECT tunnels (through
// github.com/elazarl/goproxy) are sent to the kedge the mapper names, with proxy and backend credentials injected,
// or, for destinations no route maps, directly or not at all (Options.Unmatched). Origin-form requests to winch
// itself go to the local endpoints (PAC, login callbacks, debug) behind a Host and Origin guard.
//
// Every upstream connection verifies TLS and ignores HTTP(S)_PROXY: winch is the proxy, and following the
// environment would loop back into it.
package httpforward

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// Routes maps a destination ("host" or "host:port" as the client wrote it) to its kedge. *mapper.Mapper implements
// it; winch passes one that follows config reloads.
type Routes interface {
	Map(hostport string, proto mapper.Protocol) (mapper.Destination, error)
}

// TokenSource produces the bearer token of one auth source. Token may block (refresh, login); Invalidate drops a
// token that kedge rejected, so the next Token call fetches a fresh one.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(token string)
}

// Sources looks an auth source up by name.
type Sources func(name string) (TokenSource, bool)

// Unmatched says what happens to destinations that no route maps to a kedge, IP addresses included.
type Unmatched string

// Unmatched policies.
const (
	// UnmatchedDirect sends them directly, with no token and no request ID, so that a global HTTPS_PROXY does not
	// break the laptop's other traffic.
	UnmatchedDirect Unmatched = "direct"
	// UnmatchedReject answers 403 with X-Winch-Error-Type not-a-kedge-destination.
	UnmatchedReject Unmatched = "reject"
)

// Options tunes the handler. The zero value means defaults.
type Options struct {
	// Unmatched is the policy for destinations no route maps; "" means UnmatchedDirect.
	Unmatched Unmatched
	// InfoLogs, when not empty, is sent to kedges as X-Kedge-Info-Logs (debug mode sends "winch-$USER"), so that
	// kedge logs the outcome of winch's requests at info level.
	InfoLogs string
	// DialTimeout bounds connecting to a kedge or a direct destination (default 10s).
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake with a kedge and, for CONNECT, kedge's answer (default 30s).
	HandshakeTimeout time.Duration
}

// Defaults applied to zero Options fields.
const (
	DefaultDialTimeout      = 10 * time.Second
	DefaultHandshakeTimeout = 30 * time.Second
)

// Deps are the handler's collaborators.
type Deps struct {
	// ExplainTLS, if set, adds what to do to transport errors caused by a missing client certificate
	// (tlsconfig.CertRequests.Explain).
	ExplainTLS func(error) error
	// Log receives one debug line per proxied request and a warning per failure. nil discards.
	Log logging.Logger
	// Registerer receives winch_http_requests_total, winch_http_errors_total and winch_token_retries_total. nil
	// keeps the metrics unexported.
	Registerer prometheus.Registerer
	// Routes maps destinations to kedges.
	Routes Routes
	// Sources gives the auth sources that routes name.
	Sources Sources
	// KedgeTLS is the client TLS config towards kedges (root CAs, client certificate); nil means system roots.
	// ServerName is set per kedge.
	KedgeTLS *tls.Config
	// DirectTLS is the TLS config for unmatched https destinations (absolute-form https URLs and MITM'd requests
	// that leave the mapping); nil means system roots.
	DirectTLS *tls.Config
	// Local serves origin-form requests to winch itself; the handler puts it behind the Host and Origin guard.
	// nil answers them 404.
	Local http.Handler
	// CA is the MITM certificate authority for routes with MITM set; nil refuses such tunnels with 502.
	CA *CA
	// Tracer, if set, makes a span per request and tunnel sent to a kedge (tracing.go). nil: tracing off, a
	// client's traceparent passes unchanged.
	Tracer *tracing.Tracer
	// Options tunes the handler.
	Options Options
}

// Handler is winch's HTTP proxy handler. Build it with New; it is safe for concurrent use.
type Handler struct {
	log       logging.Logger
	explain   func(error) error
	routes    Routes
	sources   Sources
	opts      Options
	ca        *CA
	kedgeTLS  *tls.Config
	dialer    *net.Dialer
	kedge     *http.Transport // pooled HTTP/1.1 connections to kedges
	kedgeH1   *http.Transport // the same, for Upgrade requests (which need HTTP/1.1)
	direct    *http.Transport // unmatched destinations
	local     http.Handler
	proxy     *goproxy.ProxyHttpServer
	upgrade   *httputil.ReverseProxy // Upgrade requests
	plain     *httputil.ReverseProxy // every other absolute-form request
	metrics   *metrics
	forwarder goproxy.RoundTripper
	tracer    *tracing.Tracer
}

// New builds the handler.
func New(d Deps) *Handler {
	opts := d.Options
	if opts.Unmatched == "" {
		opts.Unmatched = UnmatchedDirect
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	lg := d.Log
	if lg == nil {
		lg = logging.Discard()
	}
	kedgeTLS := cloneTLS(d.KedgeTLS)
	h := &Handler{
		explain:  d.ExplainTLS,
		log:      lg,
		routes:   d.Routes,
		sources:  d.Sources,
		opts:     opts,
		ca:       d.CA,
		kedgeTLS: kedgeTLS,
		dialer:   &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second},
		metrics:  newMetrics(d.Registerer),
		tracer:   d.Tracer,
	}
	// Each transport gets its own TLS config: net/http adds "h2" to NextProtos of the config it is given.
	// To kedges HTTP/1.1 over a pool of kept-alive TLS connections: under load this costs winch and kedge together
	// a fifth less CPU per request than one multiplexed h2 connection (hpack indexing of the unique request IDs,
	// a single reader for every response, kedge's h2 write scheduling), and Upgrade requests need HTTP/1.1 anyway.
	h.kedge = h.transport(cloneTLS(kedgeTLS), false)
	h.kedgeH1 = h.kedge
	h.direct = h.transport(cloneTLS(d.DirectTLS), true)
	h.local = http.NotFoundHandler()
	if d.Local != nil {
		h.local = GuardLocal(d.Local)
	}
	h.forwarder = goproxy.RoundTripperFunc(func(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Response, error) {
		tunnel, _ := ctx.UserData.(mitmTunnel) // set by handleConnect for the requests inside a MITM'd tunnel
		return h.forward(req, string(tunnel), false), nil
	})
	h.proxy = h.newGoproxy()
	errLog := logging.StdLogger(lg, logging.LevelDebug, "httpforward")
	// The ReverseProxies hand forward their outgoing request, a deep copy of the client's made for this request.
	fwd := roundTripperFunc(func(req *http.Request) (*http.Response, error) { return h.forward(req, "", true), nil })
	h.upgrade = &httputil.ReverseProxy{
		// The URL stays absolute: forward maps it. Rewrite (not Director) drops inbound X-Forwarded-* headers.
		Rewrite:       func(*httputil.ProxyRequest) {},
		Transport:     fwd,
		FlushInterval: -1,
		ErrorLog:      errLog,
	}
	// Plain absolute-form requests take a ReverseProxy too, not goproxy: the same forward, without goproxy's per
	// request context, filter chains and header copies. Responses of unknown length are flushed after every write
	// (ReverseProxy does that for ContentLength -1), the others are copied with a pooled buffer.
	h.plain = &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { removeHopHeaders(pr.Out.Header) },
		Transport:  fwd,
		ErrorLog:   errLog,
		BufferPool: copyBuffers{},
	}
	return h
}

// maxIdlePerHost is how many kept-alive connections winch keeps per kedge (and per direct destination): enough
// that a burst of concurrent requests does not end in connections closed for lack of room and opened again.
const maxIdlePerHost = 256

// transport builds an upstream transport: TLS verified, never through HTTP(S)_PROXY, compression left to the client.
func (h *Handler) transport(tlsConf *tls.Config, h2 bool) *http.Transport {
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           h.dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   h.opts.HandshakeTimeout,
		ForceAttemptHTTP2:     h2,
		MaxIdleConns:          4 * maxIdlePerHost,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	if !h2 {
		t.TLSClientConfig.NextProtos = []string{"http/1.1"}
		t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no h2
	}
	return t
}

// newGoproxy configures goproxy: every absolute-form request goes through forward, every CONNECT through
// handleConnect, and goproxy's own defaults (unverified TLS, HTTPS_PROXY from the environment) are replaced.
func (h *Handler) newGoproxy() *goproxy.ProxyHttpServer {
	p := goproxy.NewProxyHttpServer()
	p.Logger = goproxyLogger{h.log}
	p.Verbose = false
	p.Tr = h.direct // never used (forward sends everything), but never goproxy's unverified default either
	p.ConnectDial = nil
	p.ConnectDialWithReq = nil
	p.KeepAcceptEncoding = true
	p.CertStore = newCertStore(certStoreSize)
	p.NonproxyHandler = h.local
	p.OnRequest().DoFunc(func(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		removeHopHeaders(req.Header)
		ctx.RoundTripper = h.forwarder
		return req, nil
	})
	p.OnRequest().HandleConnectFunc(h.handleConnect)
	p.OnResponse().DoFunc(streamResponses)
	return p
}

// ServeHTTP dispatches: CONNECT to the tunnel code, origin-form requests to the local endpoints, WebSocket and other
// Upgrade requests to a reverse proxy that relays the upgraded connection, everything else to goproxy.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect:
		h.proxy.ServeHTTP(w, r)
	case !r.URL.IsAbs():
		h.local.ServeHTTP(w, r)
	case r.URL.Scheme != "http" && r.URL.Scheme != "https":
		h.metrics.errors.WithLabelValues("http", string(wire.ErrBadRequest)).Inc()
		wire.WriteWinchError(w, http.StatusBadRequest, wire.ErrBadRequest, "winch proxies http and https URLs only, not "+r.URL.Scheme)
	case isUpgrade(r.Header):
		// goproxy relays upgraded connections without closing the client side when the server side ends.
		h.upgrade.ServeHTTP(w, r)
	default:
		h.plain.ServeHTTP(w, r)
	}
}

// copyBuffers pools the 32 KiB buffers that copy response bodies to the client.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte  { return *copyBufferPool.Get().(*[]byte) }
func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

// Close closes idle upstream connections. Running requests and tunnels are not affected.
func (h *Handler) Close() {
	h.kedge.CloseIdleConnections()
	h.kedgeH1.CloseIdleConnections()
	h.direct.CloseIdleConnections()
}

// streamResponses makes goproxy flush a response of unknown length after every write (goproxy flushes only when it
// sees Transfer-Encoding: chunked among the response headers, which Go's client never leaves there), so streams
// such as watch requests and logs arrive as they are produced. The header is exactly what net/http writes anyway.
func streamResponses(resp *http.Response, _ *goproxy.ProxyCtx) *http.Response {
	if resp == nil || resp.ContentLength >= 0 || resp.Request == nil || resp.Request.Method == http.MethodHead {
		return resp
	}
	if resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		return resp
	}
	resp.Header.Set("Transfer-Encoding", "chunked")
	return resp
}

// cloneTLS returns a copy of c (or a fresh TLS 1.2+ config) that the caller may modify.
func cloneTLS(c *tls.Config) *tls.Config {
	if c == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return c.Clone()
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// goproxyLogger routes goproxy's Printf logging (warnings about broken client connections) to debug level.
type goproxyLogger struct{ log logging.Logger }

func (l goproxyLogger) Printf(format string, v ...any) {
	if l.log.Enabled(logging.LevelDebug) {
		l.log.Debug("goproxy", "detail", strings.TrimRight(fmt.Sprintf(format, v...), "\n"))
	}
}

// metrics are the handler's Prometheus collectors.
type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	retries  *prometheus.CounterVec
	// httpTo are requests' children per destination (kedge, direct, refused), resolved once: the hot path does not
	// look labels up.
	httpTo map[kind]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winch_http_requests_total",
			Help: "Requests on winch's HTTP proxy port and tunnels on its SOCKS5 port, by proxy (http, connect, socks) and destination (kedge, direct, mitm, refused).",
		}, []string{"proxy", "destination"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winch_http_errors_total",
			Help: "Requests that winch itself failed or refused, by proxy (http, connect, socks) and X-Winch-Error-Type.",
		}, []string{"proxy", "type"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winch_token_retries_total",
			Help: "Requests sent again with a fresh token after kedge rejected the cached one, by proxy.",
		}, []string{"proxy"}),
	}
	m.httpTo = map[kind]prometheus.Counter{
		toKedge:  m.requests.WithLabelValues("http", "kedge"),
		toDirect: m.requests.WithLabelValues("http", "direct"),
		refused:  m.requests.WithLabelValues("http", "refused"),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.errors, m.retries)
	}
	return m
}
