package httpproxy

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"time"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

var errNoDecision = errors.New("httpproxy: request reached the transport without a route decision")

// call is the state of one request, from ServeHTTP to the log line. It is allocated once per request and reaches
// the ReverseProxy callbacks through the request context.
type call struct {
	callState
	w     responseWriter
	start time.Time
	reqID string

	// Facts, set as they are established.
	host    string // host[:port] as received
	path    string // canonical escaped path: what is routed (decoded) and forwarded
	decoded string

	// Authentication and authorization, for the audit fields of the log line.
	identity string // authn.Identity.String()
	decision string // authz result: allowed, unauthenticated, forbidden; "" when nothing was authorized
	reason   string
	// assertion is the caller's signed identity for the backend (X-Kedge-Identity); "" sends none.
	assertion string

	// Route decision.
	label     string // backend name, admission.AdhocLabel, or "" (metrics label and log field)
	target    string // URL.Host of the outgoing request: the backend name or the adhoc "name:port"
	transport http.RoundTripper
	endpoint  backend.EndpointRecord // filled in by the backend's transport

	// Outcome.
	errType wire.ErrorType
	errMsg  string

	// span is the request's trace span; nil when tracing is off.
	span *tracing.Span
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// callState is the part of a call that exists to save allocations on every proxied request: the request context
// (its parent plus the call and its endpoint record, where context.WithValue would allocate a layer per value) and
// the backing array of the header values kedge sets (instead of a one-element slice each).
type callState struct {
	ctx  callContext
	hdrs [3]string
}

// callContext is a proxied request's context: the client request's context, answering callKey with the call and
// backend.RecorderKey with the call's endpoint record. Cancellation and deadlines are the parent's.
type callContext struct {
	context.Context
	c *call
}

func (x *callContext) Value(key any) any {
	switch key.(type) {
	case callKey:
		return x.c
	case backend.RecorderKey:
		return &x.c.endpoint
	}
	return x.Context.Value(key)
}

// Slots of callState.hdrs.
const (
	hdrResponseRequestID = iota
	hdrResponseBackend
	hdrOutboundRequestID
)

// headerValue returns value as a one-element header value backed by the call (capacity one, so an append copies).
func (c *call) headerValue(slot int, value string) []string {
	c.hdrs[slot] = value
	return c.hdrs[slot : slot+1 : slot+1]
}

// serve canonicalises, routes and proxies a request that passed the header checks.
func (h *Handler) serve(c *call, r *http.Request) {
	w := &c.w
	if r.Method == http.MethodConnect {
		h.fail(c, http.StatusMethodNotAllowed, wire.ErrBadRequest, "CONNECT tunnels are not supported on this listener")
		return
	}
	u := r.URL
	forward := u.Scheme != "" || u.Host != ""
	if u.Opaque != "" || u.User != nil || forward && (u.Host == "" || u.Scheme != "http" && u.Scheme != "https") {
		h.fail(c, http.StatusBadRequest, wire.ErrBadRequest, "malformed request target")
		return
	}
	if forward && !wire.EqualFoldASCII(u.Host, r.Host) {
		// HTTP/2 carries the target twice (an absolute-form :path and :authority) and net/http keeps both: routing
		// one and forwarding the other would let a route's requirement guard another host's requests.
		h.fail(c, http.StatusBadRequest, wire.ErrBadRequest, "request target and authority name different hosts")
		return
	}
	p, err := route.CanonicalPath(u.EscapedPath())
	if err != nil {
		h.fail(c, http.StatusBadRequest, wire.ErrBadRequest, "ambiguous or malformed request path")
		return
	}
	c.path, c.decoded = p.Escaped, p.Decoded

	// Facts for routing. For absolute-form requests net/http has already set r.Host to the URL's host.
	c.host = r.Host
	mode := route.ModeReverse
	if forward {
		c.host, mode = u.Host, route.ModeForward
	}
	// Routing first, then authentication and the route's requirement, and only then a backend: a request that may not
	// pass never reaches a transport, and one that cannot authenticate learns nothing about the routes.
	res := h.admitRequest(c, r, p, mode, forward)
	if !res.Decision.Allowed() {
		h.refuse(c, res.Decision.Err)
		return
	}
	if res.RouteErr != nil {
		h.routeError(c, res.RouteErr)
		return
	}
	c.label, c.target, c.assertion = res.Label, res.Label, res.Assertion
	if c.label == admission.AdhocLabel {
		c.target, c.transport = res.Adhoc.HostPort(), h.adhoc
	} else {
		w.Header()[wire.HeaderKedgeBackendName] = c.headerValue(hdrResponseBackend, c.label)
		var ok bool
		if c.transport, ok = h.backends.HTTP(c.label); !ok {
			h.fail(c, http.StatusBadGateway, wire.ErrNoBackend, "unknown backend")
			return
		}
	}

	c.ctx = callContext{Context: r.Context(), c: c}
	var ctx context.Context = &c.ctx
	if c.label == admission.AdhocLabel {
		ctx = backend.WithAdhocTarget(ctx, res.Adhoc) // the adhoc dialer's one exemption: an address a rule names
	}
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		// A backend may answer (or stream its answer) before the request body has been read to the end; without
		// full duplex net/http's HTTP/1 server would discard the unread body at the first response write.
		_ = http.NewResponseController(w.rw).EnableFullDuplex()
	}
	h.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// admitRequest routes a request and admits its caller (admission.Admitter): the route or adhoc destination and the
// gate's decision, with the identity and decision recorded for the log line.
func (h *Handler) admitRequest(c *call, r *http.Request, p route.Path, mode route.Mode, forward bool) admission.Result {
	table := h.routes.HTTPTable()
	caller := admission.Caller{Credentials: r.Header[wire.HeaderProxyAuthz], Peer: r.TLS, RemoteAddr: r.RemoteAddr}
	var res admission.Result
	host, port, hasPort, err := route.SplitHostPort(c.host)
	if err != nil {
		// With adhoc rules in force, a malformed port is an adhoc refusal (unknown-route-error, as in the original);
		// otherwise the Host is simply malformed (bad-request).
		if h.adhoc != nil && len(table.AdhocRules()) > 0 {
			if _, aerr := table.AdhocHostPort(c.host); errors.As(aerr, new(*route.AdhocError)) {
				err = aerr
			}
		}
		res = h.admit.Unroutable(r.Context(), err, caller)
	} else {
		if !hasPort {
			port = defaultPort(r, forward)
		}
		res = h.admit.HTTP(r.Context(), table, &admission.HTTPRequest{
			Facts:        route.HTTPRequest{Host: host, Port: port, Path: p.Match, Header: r.Header, Mode: mode},
			HasPort:      hasPort,
			EncodedSlash: p.EncodedSlash,
			Adhoc:        h.adhoc != nil,
			Caller:       caller,
		})
	}
	c.identity = res.Decision.Identity.String()
	if res.RouteErr == nil || !res.Decision.Allowed() {
		c.label = res.Label
		c.decision, c.reason = res.Decision.Result(), res.Decision.Reason()
	}
	return res
}

// refuse answers 401, 403 or 429 for a caller admission did not admit.
func (h *Handler) refuse(c *call, err error) {
	_, typ := authn.HTTPStatus(err)
	c.errType, c.errMsg = typ, c.reason
	authn.WriteHTTPError(&c.w, err)
	h.admit.CountError(c.label, typ)
}

// defaultPort is the port of a request that names none: this handler serves the TLS port, so 443, except for
// requests that say they are plain HTTP (an http:// absolute-form URL, or X-Forwarded-Proto: http, which winch sends
// for plain-HTTP destinations).
func defaultPort(r *http.Request, forward bool) uint32 {
	if forward && r.URL.Scheme == "http" {
		return 80
	}
	if xfp := r.Header["X-Forwarded-Proto"]; len(xfp) > 0 && wire.EqualFoldASCII(strings.TrimSpace(xfp[0]), "http") {
		return 80
	}
	return 443
}

// routeError answers a request that could not be routed.
func (h *Handler) routeError(c *call, err error) {
	var ae *route.AdhocError
	switch {
	case errors.Is(err, route.ErrNoRoute):
		h.fail(c, http.StatusBadGateway, wire.ErrNoRoute, route.ErrNoRoute.Error())
	case errors.As(err, &ae) && ae.BadRequest:
		h.fail(c, http.StatusBadRequest, wire.ErrUnknownRouteError, ae.Msg)
	case ae != nil:
		h.fail(c, http.StatusBadGateway, wire.ErrUnknownRouteError, ae.Msg)
	case errors.Is(err, route.ErrBadHostPort):
		h.fail(c, http.StatusBadRequest, wire.ErrBadRequest, "malformed host")
	case errors.Is(err, route.ErrEncodedSlash):
		h.fail(c, http.StatusBadRequest, wire.ErrBadRequest, err.Error())
	default:
		h.fail(c, http.StatusBadGateway, wire.ErrUnknownRouteError, err.Error())
	}
}

// rewrite builds the outgoing request (ReverseProxy.Rewrite; Director is never used). ReverseProxy has already
// removed hop-by-hop headers (Proxy-Authorization among them) and the inbound Forwarded / X-Forwarded-* ones.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	c := callFrom(pr.In.Context())
	out := pr.Out
	// The transport replaces scheme and host with the endpoint it picks; the backend name is kept for its logs.
	out.URL.Scheme = "http"
	out.URL.Host = c.target
	out.URL.User = nil
	out.URL.Opaque = ""
	out.URL.Fragment, out.URL.RawFragment = "", ""
	// Forward exactly the path that was routed.
	out.URL.Path, out.URL.RawPath = c.decoded, c.path
	// And exactly the host that was routed (the absolute-form URL's for forward requests).
	out.Host = c.host
	h.fwd.SetHTTP(out.Header, pr.In.Header, forwarded.Request{Peer: peerAddr(pr.In.RemoteAddr), Host: c.host, Proto: scheme(pr.In)})
	sanitizeOutbound(out.Header, c.headerValue(hdrOutboundRequestID, c.reqID))
	c.span.InjectHTTP(out.Header)
	if c.assertion != "" {
		out.Header[wire.HeaderKedgeIdentity] = []string{c.assertion}
	}
	if up := out.Header["Upgrade"]; len(up) > 0 && wire.EqualFoldASCII(up[0], "h2c") {
		// An h2c upgrade would turn the connection into an HTTP/2 one straight to the backend, whose requests
		// kedge would then splice without routing or checking them (h2c smuggling).
		delete(out.Header, "Upgrade")
		delete(out.Header, "Connection")
	}
}

// proxyError is the ReverseProxy's ErrorHandler: it classifies a failure to get a response from the backend.
func (h *Handler) proxyError(_ http.ResponseWriter, r *http.Request, err error) {
	c := callFrom(r.Context())
	if c == nil { // cannot happen: every proxied request carries its call
		return
	}
	ctxErr := r.Context().Err()
	var be *backend.Error
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded):
		// The request's own deadline passed, whatever the transport made of it.
		h.fail(c, http.StatusGatewayTimeout, wire.ErrBackendTimeout, "backend did not answer in time")
	case ctxErr != nil:
		// The client went away: nobody to answer. Logged and counted with status 499 (client closed request).
		c.w.status, c.errMsg = wire.StatusClientClosed, "client closed the request"
	case errors.As(err, &be) && be.Type != "":
		status := http.StatusBadGateway
		switch be.Type {
		case wire.ErrBackendTimeout:
			status = http.StatusGatewayTimeout
		case wire.ErrForbidden:
			status = http.StatusForbidden
		}
		h.fail(c, status, be.Type, be.Error())
	case errors.Is(err, context.DeadlineExceeded):
		h.fail(c, http.StatusGatewayTimeout, wire.ErrBackendTimeout, "backend did not answer in time")
	default:
		h.fail(c, http.StatusBadGateway, wire.ErrTransportUnknown, err.Error())
	}
}

// fail writes a kedge-made error response and counts it.
func (h *Handler) fail(c *call, status int, typ wire.ErrorType, msg string) {
	c.errType, c.errMsg = typ, msg
	wire.WriteKedgeError(&c.w, status, typ, msg)
	h.admit.CountError(c.label, typ)
}

// peerAddr is the IP address of a request's client, or the zero Addr.
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// scheme is how the request reached kedge.
func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// modifyResponse removes the headers by which kedge speaks to clients from a backend's response, so that a backend
// cannot pose as kedge (winch acts on X-Kedge-Error-Type) or override the request ID and backend name kedge set.
func modifyResponse(res *http.Response) error {
	h := res.Header
	delete(h, wire.HeaderKedgeError)
	delete(h, wire.HeaderKedgeErrorType)
	delete(h, wire.HeaderKedgeBackendName)
	delete(h, wire.HeaderRequestID)
	if res.StatusCode != http.StatusSwitchingProtocols && res.Request != nil {
		// A 101's header is read again by the upgrade code.
		if c := callFrom(res.Request.Context()); c != nil {
			moveHeader(c.w.Header(), h)
		}
	}
	return nil
}

// moveHeader hands the backend's response header fields over to the client's response header: ReverseProxy would
// copy them after ModifyResponse value by value, one allocation per field (a fifth of the objects kedge allocated
// per request under HTTP/1.1 load). A field the client's header already has keeps its values first, as
// ReverseProxy's copy does. Content-Type stays for ReverseProxy to copy: it reads it to decide how to flush.
func moveHeader(dst, src http.Header) {
	for k, vv := range src {
		if k == "Content-Type" {
			continue
		}
		if old, ok := dst[k]; ok {
			dst[k] = append(old, vv...)
		} else {
			dst[k] = vv
		}
		delete(src, k)
	}
}
