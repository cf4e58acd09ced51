package httpforward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// kind is what winch does with a destination.
type kind uint8

const (
	toKedge kind = iota
	toDirect
	refused // a winch error response; status, errType and msg say which
)

// decision is the outcome of mapping one destination.
type decision struct {
	kind    kind
	dest    mapper.Destination
	status  int
	errType wire.ErrorType
	msg     string
}

// decide maps hostport and applies the unmatched policy. IP addresses follow the policy too: they never go to a
// kedge (kedge routes by name).
func (h *Handler) decide(hostport string) decision {
	dest, err := h.routes.Map(hostport, mapper.ProtocolHTTP)
	switch {
	case err == nil:
		return decision{kind: toKedge, dest: dest}
	case errors.Is(err, mapper.ErrNotKedgeDestination) || errors.Is(err, mapper.ErrIPLiteral):
		if h.opts.Unmatched == UnmatchedReject {
			return decision{kind: refused, status: http.StatusForbidden, errType: wire.ErrNotKedgeDestination,
				msg: err.Error() + " (winch runs with --unmatched=reject)"}
		}
		return decision{kind: toDirect}
	case errors.Is(err, mapper.ErrInvalidDestination):
		return decision{kind: refused, status: http.StatusBadRequest, errType: wire.ErrBadRequest, msg: err.Error()}
	default:
		return decision{kind: refused, status: http.StatusBadGateway, errType: wire.ErrTransportUnknown, msg: err.Error()}
	}
}

// forward sends one absolute-form request (plain HTTP, or HTTPS inside a MITM tunnel) to its kedge or directly.
// It never fails: every failure becomes a winch error response. tunnel is the CONNECT destination ("host:port") of
// the MITM'd tunnel the request came through, or "". owned says that req was made for this one forward (the
// ReverseProxy's outgoing request, a deep copy of the client's): its header may be changed in place, where a request
// of someone else's is copied first.
func (h *Handler) forward(req *http.Request, tunnel string, owned bool) *http.Response {
	start := time.Now()
	hostport := req.URL.Host
	if tunnel != "" && sameHost(hostport, tunnel) {
		// Clients leave the default port out of Host ("host" inside a tunnel to "host:443"): map what the tunnel
		// was opened for, so that a route keyed "host:443" serves the requests inside it too.
		hostport = tunnel
	}
	d := h.decide(hostport)
	h.metrics.httpTo[d.kind].Inc()
	switch d.kind {
	case refused:
		return h.winchError(req, d.status, d.errType, d.msg)
	case toDirect:
		return h.forwardDirect(req, start, owned)
	}
	if h.tracer != nil {
		return h.forwardKedgeTraced(req, d.dest, start, owned)
	}
	return h.forwardKedge(req, d.dest, start, owned)
}

// mitmTunnel is the CONNECT destination of a MITM'd tunnel, kept in goproxy's ProxyCtx.UserData, which goproxy
// hands on to the requests read from inside the tunnel.
type mitmTunnel string

// sameHost reports whether a request's Host inside a tunnel names the tunnel's destination: the same host name,
// and the same port or none.
func sameHost(hostport, tunnel string) bool {
	th, tp, err := net.SplitHostPort(tunnel)
	if err != nil {
		return false
	}
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		h, p = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
	}
	return strings.EqualFold(h, th) && (p == "" || p == tp)
}

// forwardDirect sends req to its destination as it is: no token, no request ID.
func (h *Handler) forwardDirect(req *http.Request, start time.Time, owned bool) *http.Response {
	out := outgoing(req, owned)
	out.RequestURI = ""
	out.Header.Del(wire.HeaderProxyAuthz)
	resp, err := h.direct.RoundTrip(out)
	if err != nil {
		return h.winchError(req, http.StatusBadGateway, wire.ErrTransportUnknown,
			fmt.Sprintf("direct to %s: %v", req.URL.Host, err))
	}
	h.logDone(req, "direct", resp.StatusCode, start, "")
	return resp
}

// forwardKedge sends req to dest's kedge in reverse-proxy form, with tokens, and retries once when kedge rejects
// the proxy token as stale.
func (h *Handler) forwardKedge(req *http.Request, dest mapper.Destination, start time.Time, owned bool) *http.Response {
	requestID := req.Header.Get(wire.HeaderRequestID)
	if !wire.ValidRequestID(requestID) {
		requestID = "winch-" + wire.NewRequestID()
	}
	if resp := h.refusePlaintextTokens(req, dest, dest.ProxyAuth, dest.BackendAuth); resp != nil {
		return resp
	}
	tr := h.kedge
	if isUpgrade(req.Header) {
		tr = h.kedgeH1
	}
	for attempt := 0; ; attempt++ {
		out, proxyTok, errResp := h.kedgeRequest(req, dest, requestID, owned)
		if errResp != nil {
			return errResp
		}
		resp, err := tr.RoundTrip(out)
		if err != nil {
			return h.winchError(req, http.StatusBadGateway, wire.ErrTransportUnknown,
				fmt.Sprintf("kedge %s for %s: %v", dest.KedgeURL.Host, req.URL.Host, err))
		}
		if staleToken(resp, proxyTok) {
			h.invalidate(dest.ProxyAuth, proxyTok) // if not retried, the next request gets the fresh token
			if attempt == 0 && replayable(req) && h.changedToken(req.Context(), dest.ProxyAuth, proxyTok) {
				discard(resp)
				h.metrics.retries.WithLabelValues("http").Inc()
				h.log.Info("kedge rejected the proxy token; retrying with a fresh one",
					"auth_source", dest.ProxyAuth, logging.FieldHost, req.URL.Host, logging.FieldRequestID, requestID)
				continue
			}
		}
		if msg := resp.Header.Get(wire.HeaderKedgeError); msg != "" {
			h.log.Warn("kedge was unable to proxy the request", logging.FieldHost, req.URL.Host,
				"kedge", dest.KedgeURL.Host, logging.FieldStatus, resp.StatusCode, logging.FieldError, msg,
				logging.FieldErrorType, resp.Header.Get(wire.HeaderKedgeErrorType), logging.FieldRequestID, requestID)
		}
		h.logDone(req, dest.KedgeURL.Host, resp.StatusCode, start, requestID)
		return resp
	}
}

// kedgeRequest builds the request to the kedge: URL = kedge scheme and host, Host = the destination exactly as the
// client wrote it, X-Forwarded-Proto = the client's scheme (so kedge applies port 80 to a port-less plain-HTTP
// Host), the tokens, the request ID and (debug mode) X-Kedge-Info-Logs. It returns the proxy token it used. With
// owned, the header changes are made to req's own header; they are the same for every attempt, so a retry (which
// builds its request from req again) sends the same headers with a fresh token.
func (h *Handler) kedgeRequest(req *http.Request, dest mapper.Destination, requestID string, owned bool) (*http.Request, string, *http.Response) {
	ctx := req.Context()
	var proxyTok, backendTok string
	if dest.ProxyAuth != "" {
		tok, errResp := h.token(ctx, req, dest.ProxyAuth)
		if errResp != nil {
			return nil, "", errResp
		}
		proxyTok = tok
	}
	if dest.BackendAuth != "" {
		tok, errResp := h.token(ctx, req, dest.BackendAuth)
		if errResp != nil {
			return nil, "", errResp
		}
		backendTok = tok
	}
	out := outgoing(req, owned)
	out.RequestURI = ""
	out.URL = &url.URL{
		Scheme:   dest.KedgeURL.Scheme,
		Host:     dest.KedgeURL.Host,
		Path:     req.URL.Path,
		RawPath:  req.URL.RawPath,
		RawQuery: req.URL.RawQuery,
	}
	out.Host = req.URL.Host
	hdr := out.Header
	scheme := req.URL.Scheme
	if scheme == "" {
		scheme = "http"
	}
	delete(hdr, "Forwarded")
	delete(hdr, "X-Forwarded-For")
	delete(hdr, "X-Forwarded-Host")
	delete(hdr, wire.HeaderProxyAuthz)
	// The values winch sets share one backing array (each a one-element slice of capacity one): this runs for
	// every request.
	vals := make([]string, 0, 5)
	set := func(name, value string) {
		vals = append(vals, value)
		hdr[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set(wire.HeaderForwardedProto, scheme)
	set(wire.HeaderRequestID, requestID)
	if h.opts.InfoLogs != "" {
		set(wire.HeaderInfoLogs, h.opts.InfoLogs)
	}
	if proxyTok != "" {
		set(wire.HeaderProxyAuthz, "Bearer "+proxyTok)
	}
	if backendTok != "" {
		set("Authorization", "Bearer "+backendTok)
	}
	if h.tracer != nil {
		tracing.FromContext(ctx).InjectHTTP(hdr)
	}
	return out, proxyTok, nil
}

// outgoing returns a request to change and send in req's place: a shallow copy sharing req's header when the
// caller owns req, else a deep copy.
func outgoing(req *http.Request, owned bool) *http.Request {
	if !owned {
		return req.Clone(req.Context())
	}
	out := *req
	return &out
}

// refusePlaintextTokens returns the 502 auth-source-error response for a route that would send the tokens of the
// named sources ("" for none) to a kedge without TLS, where anyone on the path could read them; nil otherwise. Plain
// http:// kedge URLs stay usable for routes without tokens (tests).
func (h *Handler) refusePlaintextTokens(req *http.Request, dest mapper.Destination, names ...string) *http.Response {
	if dest.KedgeURL.Scheme == "https" {
		return nil
	}
	for _, name := range names {
		if name != "" {
			return h.winchError(req, http.StatusBadGateway, wire.ErrAuthSource, fmt.Sprintf(
				"the route for %s would send the token of auth source %q to kedge %s without TLS; winch sends tokens only over TLS: use an https:// kedge URL",
				req.URL.Host, name, dest.KedgeURL.Redacted()))
		}
	}
	return nil
}

// token gets a token from the named source; on failure it returns the 502 auth-source-error response.
func (h *Handler) token(ctx context.Context, req *http.Request, name string) (string, *http.Response) {
	tok, err := h.sourceToken(ctx, name)
	if err != nil {
		return "", h.winchError(req, http.StatusBadGateway, wire.ErrAuthSource, err.Error())
	}
	return tok, nil
}

// sourceToken gets a token from the named source. Errors name the source.
func (h *Handler) sourceToken(ctx context.Context, name string) (string, error) {
	src, ok := h.lookup(name)
	if !ok {
		return "", fmt.Errorf("auth source %q is not configured", name)
	}
	tok, err := src.Token(ctx)
	if err != nil {
		if strings.Contains(err.Error(), strconv.Quote(name)) {
			return "", err // the source's own errors name it (and say what to do)
		}
		return "", fmt.Errorf("auth source %q: %w", name, err)
	}
	if tok == "" {
		return "", fmt.Errorf("auth source %q returned an empty token", name)
	}
	return tok, nil
}

func (h *Handler) lookup(name string) (TokenSource, bool) {
	if h.sources == nil {
		return nil, false
	}
	return h.sources(name)
}

// changedToken reports whether the named source now gives another token than old (or fails, which the retry then
// reports): a source refreshes at most so often, and sending kedge the token it just refused again is pointless.
func (h *Handler) changedToken(ctx context.Context, name, old string) bool {
	tok, err := h.sourceToken(ctx, name)
	return err != nil || tok != old
}

// invalidate tells the named source that kedge rejected tok.
func (h *Handler) invalidate(name, tok string) {
	if src, ok := h.lookup(name); ok {
		src.Invalidate(tok)
	}
}

// staleToken reports whether kedge rejected a request that carried proxy token tok: 401 with X-Kedge-Error-Type
// unauthorized. A 401 without that header comes from the backend and is passed on.
func staleToken(resp *http.Response, tok string) bool {
	return tok != "" && resp.StatusCode == http.StatusUnauthorized && isKedgeUnauthorized(resp)
}

func isKedgeUnauthorized(resp *http.Response) bool {
	return resp.Header.Get(wire.HeaderKedgeErrorType) == string(wire.ErrUnauthorized)
}

// replayable reports whether req can be sent again after kedge refused it: an idempotent request (RFC 9110 §9.2.2,
// or one carrying an Idempotency-Key, as net/http's own retry rule says) whose body the first attempt did not
// consume, because it had none. kedge checks the proxy token before it forwards anything, but a 401 with kedge's
// error type may also come from a kedge further along, so a POST is never sent twice; the next request gets the
// fresh token.
func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// discard drains a little of resp's body (so the connection can be reused) and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// winchError builds a winch-made error response (X-Winch-Error, X-Winch-Error-Type, text body), logs and counts it.
func (h *Handler) winchError(req *http.Request, status int, typ wire.ErrorType, msg string) *http.Response {
	if typ == wire.ErrTransportUnknown && h.explain != nil {
		msg = h.explain(errors.New(msg)).Error()
	}
	h.metrics.errors.WithLabelValues(proxyLabel(req), string(typ)).Inc()
	h.log.Warn("winch could not proxy the request", logging.FieldMethod, req.Method, logging.FieldHost, req.URL.Host,
		logging.FieldStatus, status, logging.FieldErrorType, string(typ), logging.FieldError, msg)
	return errorResponse(req, status, typ, msg)
}

// errorResponse renders wire.WriteWinchError into an *http.Response.
func errorResponse(req *http.Request, status int, typ wire.ErrorType, msg string) *http.Response {
	rec := &recorder{header: http.Header{}}
	wire.WriteWinchError(rec, status, typ, msg)
	body := rec.body.Bytes()
	rec.header.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		Status:        strconv.Itoa(rec.code) + " " + http.StatusText(rec.code),
		StatusCode:    rec.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        rec.header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// recorder is the minimal http.ResponseWriter that errorResponse renders into.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.code = code }

func proxyLabel(req *http.Request) string {
	if req.URL.Scheme == socksScheme {
		return "socks"
	}
	if req.Method == http.MethodConnect {
		return "connect"
	}
	return "http"
}

func (h *Handler) logDone(req *http.Request, upstream string, status int, start time.Time, requestID string) {
	if !h.log.Enabled(logging.LevelDebug) {
		return
	}
	h.log.Debug("proxied", logging.FieldMethod, req.Method, logging.FieldHost, req.URL.Host, "upstream", upstream,
		logging.FieldStatus, status, logging.FieldDuration, time.Since(start), logging.FieldRequestID, requestID)
}

// removeHopHeaders strips hop-by-hop headers (RFC 9110 §7.6.1) from a request that goproxy is about to forward:
// the connection headers and those that Connection names (wire.RemoveConnectionHeaders; Connection and Upgrade stay
// on Upgrade requests, which need them), and Proxy-Authenticate, which has no place in a request.
func removeHopHeaders(h http.Header) {
	wire.RemoveConnectionHeaders(h, isUpgrade(h))
	h.Del("Proxy-Authenticate")
}

// isUpgrade reports whether a request asks to switch protocols (WebSocket, SPDY).
func isUpgrade(h http.Header) bool {
	return h.Get("Upgrade") != "" && wire.ContainsToken(h["Connection"], "upgrade")
}

// InfoLogsValue returns the X-Kedge-Info-Logs value winch sends in debug mode: "winch-$USER".
func InfoLogsValue() string {
	user := os.Getenv("USER")
	if user == "" {
		user = os.Getenv("USERNAME")
	}
	return "winch-" + user
}
