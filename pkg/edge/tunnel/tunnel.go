// Package tunnel is kedge's CONNECT handler: for "CONNECT host:port" on the HTTPS port (HTTP/1.1, and HTTP/2's plain
// CONNECT) it routes the target to a CONNECT-mode HTTP route or an HTTP adhoc rule, authenticates and authorizes the
// caller, dials an endpoint of the route's backend (or the adhoc address, checked at dial time), answers 200 and
// splices bytes both ways until either side is done, honouring half-close, with an idle timeout. kedge never looks
// inside the tunnel: TLS runs end to end between the client and the backend.
package tunnel

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Routes gives the HTTP routing table in force; it is read once per tunnel.
type Routes interface {
	HTTPTable() *route.HTTPTable
}

// Backends connects to an endpoint of a named HTTP backend; *backend.Pool implements it. Failures are
// *backend.Error.
type Backends interface {
	Dial(ctx context.Context, name string) (net.Conn, error)
}

// Dialer connects to a "name:port" adhoc destination, checking every resolved address at dial time;
// *backend.AdhocDialer implements it. Failures are *backend.Error (wire.ErrForbidden for refused addresses).
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Defaults of Deps.
const (
	DefaultIdleTimeout = 5 * time.Minute
	DefaultBufferSize  = 32 << 10
	// drainIdleTimeout replaces a longer idle timeout once the server drains: tunnels that pause this long end
	// early instead of holding the shutdown until its deadline.
	drainIdleTimeout = time.Second
)

// Deps are the handler's collaborators.
type Deps struct {
	// Log receives one line per CONNECT request (the audit line). nil discards.
	Log logging.Logger
	// Registerer receives kedge_tunnels_open, kedge_tunnels_total and kedge_tunnel_bytes_total. nil keeps them
	// unexported.
	Registerer prometheus.Registerer
	// Routes gives the HTTP table: routes with proxy mode CONNECT, then the HTTP adhoc rules. Required.
	Routes Routes
	// Backends dials a route's backend. Required.
	Backends Backends
	// Adhoc dials adhoc destinations: kedge's one *backend.AdhocDialer, shared with the HTTP and gRPC proxies, so
	// a tunnel is refused or allowed exactly as a request to the same destination would be. The dial context
	// carries the target (backend.WithAdhocTarget): an address an adhoc rule names exactly is exempt from the dial
	// guard, nothing else is. nil means adhoc rules do not apply to tunnels.
	Adhoc Dialer
	// Admission routes tunnels and authenticates and authorizes their callers, and counts refusals in
	// kedge_proxy_errors_total. nil means admission.Or(nil, Registerer): no token authentication.
	Admission *admission.Admitter
	// IdleTimeout closes a tunnel with no bytes in either direction for this long (DefaultIdleTimeout if zero).
	IdleTimeout time.Duration
	// BufferSize is the copy buffer per direction (DefaultBufferSize if zero).
	BufferSize int
	// Tracer, if set, makes a span per CONNECT request, from its headers' traceparent, that covers the tunnel's
	// life. nil: tracing off.
	Tracer *tracing.Tracer
}

// Handler serves CONNECT requests; install it as httpproxy.Deps.Connect. It is safe for concurrent use. A tunnel
// runs inside its ServeHTTP call, so the server's drain (serve.Tracker) waits for it and cuts it at the deadline.
type Handler struct {
	log      logging.Logger
	routes   Routes
	backends Backends
	adhoc    Dialer
	admit    *admission.Admitter
	idle     time.Duration
	bufSize  int
	buffers  sync.Pool // *[]byte of bufSize
	m        *metrics
	tracer   *tracing.Tracer
}

var _ http.Handler = (*Handler)(nil)

// New builds the handler.
func New(d Deps) *Handler {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	h := &Handler{
		log:      d.Log,
		routes:   d.Routes,
		backends: d.Backends,
		adhoc:    d.Adhoc,
		admit:    admission.Or(d.Admission, d.Registerer),
		idle:     d.IdleTimeout,
		bufSize:  d.BufferSize,
		m:        newMetrics(d.Registerer, d.Log),
		tracer:   d.Tracer,
	}
	if h.idle <= 0 {
		h.idle = DefaultIdleTimeout
	}
	if h.bufSize <= 0 {
		h.bufSize = DefaultBufferSize
	}
	h.buffers.New = func() any { b := make([]byte, h.bufSize); return &b }
	return h
}

// tunnel is the record of one CONNECT request, from ServeHTTP to its log line.
type tunnel struct {
	start    time.Time
	reqID    string
	proto    string
	target   string // host:port as requested
	label    string // backend name, admission.AdhocLabel, or ""
	dest     string // what was dialled: backend name or adhoc host:port
	endpoint string // remote address of the backend connection
	identity string
	decision string
	reason   string
	status   int
	errType  wire.ErrorType
	errMsg   string
	up, down int64  // bytes client->backend, backend->client
	closed   string // why an established tunnel ended

	span *tracing.Span // nil when tracing is off
	peer string        // the client's address, for the span
}

// ServeHTTP authorizes, dials and splices one tunnel. Errors before the tunnel is established are answered with
// X-Kedge-Error / X-Kedge-Error-Type: 400 bad-request (no host:port), 401 unauthorized, 403 forbidden (not
// permitted, or the address or port is not allowed), 502 no-route, no-backend, unknown-route-error or
// tunnel-dial-error, 503 shutting-down.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := &tunnel{start: time.Now(), reqID: r.Header.Get(wire.HeaderRequestID), proto: r.Proto, target: r.Host}
	if !wire.ValidRequestID(t.reqID) {
		t.reqID = wire.NewRequestID()
	}
	if h.tracer != nil {
		t.span, t.peer = h.tracer.StartHTTP(r.Header, http.MethodConnect), peerIP(r.RemoteAddr)
	}
	defer h.finish(t)
	w.Header().Set(wire.HeaderRequestID, t.reqID)
	tr := serve.TrackerFrom(r.Context())

	switch {
	case r.Method != http.MethodConnect:
		h.fail(w, r, t, http.StatusMethodNotAllowed, wire.ErrBadRequest, "only CONNECT requests open tunnels")
		return
	case len(r.Header[":protocol"]) > 0:
		h.fail(w, r, t, http.StatusBadRequest, wire.ErrBadRequest, "extended CONNECT is not supported")
		return
	case isClosed(tr.Draining()):
		h.fail(w, r, t, http.StatusServiceUnavailable, wire.ErrShuttingDown, "kedge is shutting down")
		return
	}
	host, port, ok := connectTarget(r)
	if !ok {
		h.fail(w, r, t, http.StatusBadRequest, wire.ErrBadRequest, "CONNECT needs a host:port target")
		return
	}

	// Routing first, then authentication and authorization, then the dial.
	res := h.admit.HTTP(r.Context(), h.routes.HTTPTable(), &admission.HTTPRequest{
		Facts:   route.HTTPRequest{Host: host, Port: port, Header: r.Header, Mode: route.ModeConnect},
		HasPort: true,
		Adhoc:   h.adhoc != nil,
		Caller:  admission.Caller{Credentials: r.Header[wire.HeaderProxyAuthz], Peer: r.TLS, RemoteAddr: r.RemoteAddr},
	})
	t.label, t.dest = res.Label, res.Label
	if res.Label == admission.AdhocLabel {
		t.dest = res.Adhoc.HostPort()
	}
	d := res.Decision
	t.identity = d.Identity.String()
	if res.RouteErr == nil || !d.Allowed() {
		t.decision, t.reason = d.Result(), d.Reason()
	}
	if !d.Allowed() {
		code, typ := authn.HTTPStatus(d.Err)
		authn.SetRefusalHeaders(w.Header(), d.Err) // Proxy-Authenticate on 401, Retry-After on 429
		h.fail(w, r, t, code, typ, d.Reason())
		return
	}
	if res.RouteErr != nil {
		h.routeError(w, r, t, res.RouteErr)
		return
	}

	conn, err := h.dial(r.Context(), t, res.Adhoc)
	if err != nil {
		h.dialError(w, r, t, err)
		return
	}
	t.endpoint = conn.RemoteAddr().String()
	h.establish(w, r, t, conn, tr)
}

// connectTarget returns the host and port of a CONNECT request whose target is exactly "host:port": a DNS name or
// IP literal and a port, with nothing a URL parser reads as userinfo ("a:443@b:443"), a path or a query. net/http
// accepts such targets and routes them by the part after '@'.
func connectTarget(r *http.Request) (host string, port uint32, ok bool) {
	if u := r.URL; u == nil || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", 0, false
	}
	if r.ProtoMajor == 1 && r.RequestURI != r.Host {
		return "", 0, false
	}
	host, port, hasPort, err := route.SplitHostPort(r.Host)
	if err != nil || !hasPort || !route.ValidHost(host) {
		return "", 0, false
	}
	return host, port, true
}

// dial connects to the tunnel's destination: a route's backend, or the adhoc target through the shared adhoc
// dialer.
func (h *Handler) dial(ctx context.Context, t *tunnel, target route.Target) (net.Conn, error) {
	if t.label != admission.AdhocLabel {
		return h.backends.Dial(ctx, t.dest)
	}
	return h.adhoc.DialContext(backend.WithAdhocTarget(ctx, target), "tcp", t.dest)
}

// routeError answers a tunnel no route or adhoc rule allows.
func (h *Handler) routeError(w http.ResponseWriter, r *http.Request, t *tunnel, err error) {
	var ae *route.AdhocError
	switch {
	case errors.Is(err, route.ErrNoRoute):
		h.fail(w, r, t, http.StatusBadGateway, wire.ErrNoRoute, route.ErrNoRoute.Error())
	case errors.As(err, &ae) && ae.BadRequest:
		// An adhoc rule knows the name but does not allow the port (or the name is malformed).
		h.fail(w, r, t, http.StatusForbidden, wire.ErrForbidden, ae.Msg)
	case ae != nil:
		h.fail(w, r, t, http.StatusBadGateway, wire.ErrUnknownRouteError, ae.Msg)
	default:
		h.fail(w, r, t, http.StatusBadGateway, wire.ErrUnknownRouteError, err.Error())
	}
}

// dialError answers a tunnel whose destination could not be reached.
func (h *Handler) dialError(w http.ResponseWriter, r *http.Request, t *tunnel, err error) {
	if r.Context().Err() != nil {
		t.status, t.errMsg = wire.StatusClientClosed, "client went away while dialling"
		return
	}
	var be *backend.Error
	typ := wire.ErrTunnelDial
	if errors.As(err, &be) {
		switch be.Type {
		case wire.ErrForbidden, wire.ErrNoBackend, wire.ErrBackendClosed:
			typ = be.Type
		}
	}
	switch typ {
	case wire.ErrForbidden:
		h.fail(w, r, t, http.StatusForbidden, typ, err.Error())
	default:
		h.fail(w, r, t, http.StatusBadGateway, typ, err.Error())
	}
}

// fail answers a CONNECT request with a kedge error; on HTTP/1 the connection is closed afterwards, so bytes a
// client sent ahead (a TLS ClientHello) are never read as a request.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, t *tunnel, status int, typ wire.ErrorType, msg string) {
	t.status, t.errType, t.errMsg = status, typ, msg
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	wire.WriteKedgeError(w, status, typ, msg)
	h.admit.CountError(t.label, typ)
}

// peerIP is the host part of a client's address ("" if it has none).
func peerIP(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return ""
	}
	return host
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
