// Package httpproxy is kedge's HTTP reverse proxy for the HTTPS port: it checks each request (header count and
// names, framing, one canonical path), routes it by host, port, path, headers and proxy mode (or through an adhoc
// rule), and proxies it to the chosen backend with httputil.ReverseProxy, answering kedge-made failures with
// X-Kedge-Error / X-Kedge-Error-Type. Between routing and the backend, every request is authenticated and checked
// against its route's requirement (Deps.Gate). gRPC and CONNECT requests arriving on the same port are handed to the
// handlers given in Deps, which do their own checks.
package httpproxy

import (
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Routes gives the routing table in force. The composition root swaps it atomically on reload; the handler reads it
// once per request.
type Routes interface {
	HTTPTable() *route.HTTPTable
}

// Backends looks up the RoundTripper of a named HTTP backend. The RoundTripper sets the outgoing URL's scheme and
// host to an endpoint of the backend itself, keeps req.Host, and returns *backend.Error for failures it classified.
type Backends interface {
	HTTP(name string) (http.RoundTripper, bool)
}

// Deps are the handler's collaborators.
type Deps struct {
	// Log receives one line per proxied request (at info) and proxy internals (at debug). nil discards.
	Log logging.Logger
	// Registerer receives kedge_http_requests_total and kedge_http_request_duration_seconds. nil means the metrics
	// are kept but not exported.
	Registerer prometheus.Registerer
	// Routes gives the current HTTP routing table.
	Routes Routes
	// Backends gives the RoundTripper of a named backend.
	Backends Backends
	// Adhoc is the transport for adhoc destinations: it takes requests whose URL.Host is "name:port", resolves the
	// name and checks the addresses itself. nil disables adhoc routing.
	Adhoc http.RoundTripper
	// GRPC, if set, serves requests with Content-Type application/grpc* (not grpc-web), e.g. grpc.Server.ServeHTTP.
	// nil routes them as plain HTTP.
	GRPC http.Handler
	// Connect, if set, serves CONNECT requests (tunnels). nil answers them 405 with X-Kedge-Error-Type bad-request.
	Connect http.Handler
	// Admission routes each request and decides whether its caller may use the route (Proxy-Authorization, client
	// certificate), and counts kedge_proxy_errors_total. nil means admission.Or(nil, Registerer): no token
	// authentication, and routes with requirements refuse callers who do not meet them.
	Admission *admission.Admitter
	// Forwarded sets the forwarding headers (X-Forwarded-*, X-Real-IP, Forwarded) backends receive. nil trusts
	// no client's values.
	Forwarded *forwarded.Policy
	// Tracer, if set, makes a span per request that continues the client's traceparent and is the backend's
	// parent. nil (tracing off) leaves traceparent alone, as any other header.
	Tracer *tracing.Tracer
	// Options tunes the proxy.
	Options Options
}

// Options tunes the handler. The zero value means defaults.
type Options struct {
	// FlushInterval is how often a response body with a known length is flushed to the client while it is copied
	// (default 10ms, as the original kedge). Responses of unknown length and text/event-stream are flushed after
	// every write regardless. Negative means flush after every write for all responses.
	FlushInterval time.Duration
	// MaxHeaderCount is the most request header fields (values, after HTTP/2 cookie joining) a request may carry;
	// more is answered 431 (default 100).
	MaxHeaderCount int
	// BufferSize is the size of the buffers that copy bodies (default 32 KiB).
	BufferSize int
}

// Defaults applied to zero Options fields.
const (
	DefaultFlushInterval  = 10 * time.Millisecond
	DefaultMaxHeaderCount = 100
	DefaultBufferSize     = 32 << 10
)

func (o Options) withDefaults() Options {
	if o.FlushInterval == 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.MaxHeaderCount <= 0 {
		o.MaxHeaderCount = DefaultMaxHeaderCount
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	return o
}

// Handler is the http.Handler of the HTTPS port. It is safe for concurrent use and holds no per-request state.
type Handler struct {
	log      logging.Logger
	routes   Routes
	backends Backends
	adhoc    http.RoundTripper
	grpc     http.Handler
	connect  http.Handler
	admit    *admission.Admitter
	fwd      *forwarded.Policy
	opts     Options
	metrics  *metrics
	tracer   *tracing.Tracer
	// proxy is the one ReverseProxy for every request; its transport dispatches on the route decision that
	// ServeHTTP puts in the request context.
	proxy *httputil.ReverseProxy
}

var _ http.Handler = (*Handler)(nil)

// New builds the handler. Routes and Backends are required.
func New(d Deps) *Handler {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	h := &Handler{
		log:      d.Log,
		routes:   d.Routes,
		backends: d.Backends,
		adhoc:    d.Adhoc,
		grpc:     d.GRPC,
		connect:  d.Connect,
		admit:    admission.Or(d.Admission, d.Registerer),
		fwd:      d.Forwarded,
		opts:     d.Options.withDefaults(),
		tracer:   d.Tracer,
	}
	h.metrics = newMetrics(d.Registerer, d.Log)
	h.proxy = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      dispatcher{},
		FlushInterval:  h.opts.FlushInterval,
		ErrorLog:       logging.StdLogger(d.Log, logging.LevelDebug, "reverseproxy"),
		BufferPool:     newBufferPool(h.opts.BufferSize),
		ModifyResponse: modifyResponse,
		ErrorHandler:   h.proxyError,
	}
	return h
}

// ServeHTTP checks, routes and proxies one request. The steps, in order: request ID; header sanity; hand-off of
// gRPC and CONNECT requests; canonical path; routing; authentication and authorization; proxying; one log line (with
// the audit fields) and the metrics.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{start: time.Now(), w: responseWriter{rw: w}}
	c.reqID = r.Header.Get(wire.HeaderRequestID)
	if !wire.ValidRequestID(c.reqID) {
		c.reqID = wire.NewRequestID()
	}
	w.Header()[wire.HeaderRequestID] = c.headerValue(hdrResponseRequestID, c.reqID)
	if r.ProtoMajor == 1 && (r.ProtoMinor == 0 || len(r.TransferEncoding) > 0) {
		// Request framing net/http resolved in a way kedge cannot check: it drops a Content-Length sent next to
		// Transfer-Encoding (such a request looks like any chunked one here), and ignores Transfer-Encoding on
		// HTTP/1.0. Close the connection after this exchange, so that whatever the client sent behind an
		// ambiguous body is never parsed as a request.
		w.Header().Set("Connection", "close")
	}
	if status, typ, msg := checkHeaders(r, h.opts.MaxHeaderCount); status != 0 {
		h.fail(c, status, typ, msg)
		h.finish(c, r)
		return
	}
	switch {
	case h.grpc != nil && isGRPC(r):
		// The gRPC proxy reads the request ID from the metadata that grpc-go builds out of the header.
		r.Header.Set(wire.HeaderRequestID, c.reqID)
		h.grpc.ServeHTTP(w, r)
		return
	case r.Method == http.MethodConnect && h.connect != nil:
		r.Header.Set(wire.HeaderRequestID, c.reqID)
		h.connect.ServeHTTP(w, r)
		return
	}
	c.span = h.tracer.StartHTTP(r.Header, r.Method)
	defer h.finish(c, r)
	h.serve(c, r)
}

// isGRPC reports whether r is a gRPC request (application/grpc, application/grpc+proto, ...), not gRPC-Web.
func isGRPC(r *http.Request) bool {
	ct := r.Header["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	const prefix = "application/grpc"
	v := ct[0]
	if len(v) < len(prefix) || !wire.EqualFoldASCII(v[:len(prefix)], prefix) {
		return false
	}
	rest := v[len(prefix):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// dispatcher is the ReverseProxy's transport: it sends each request through the RoundTripper that routing chose
// for it (a backend's or the adhoc one).
type dispatcher struct{}

func (dispatcher) RoundTrip(req *http.Request) (*http.Response, error) {
	c := callFrom(req.Context())
	if c == nil || c.transport == nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errNoDecision
	}
	return c.transport.RoundTrip(req)
}
