package backend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// httpBackend is the http.RoundTripper of one HTTP backend: it balances requests over the backend's endpoints,
// ejects endpoints that refuse connections and retries such requests elsewhere. It owns one http.Transport and, for
// a plaintext backend, an h1Client for the common bodiless requests; it tracks both's connections so that closing
// the backend closes them all.
type httpBackend struct {
	name      string
	scheme    string
	eps       *endpointSet
	transport *http.Transport
	h1        *h1Client // nil for a TLS backend
	dialer    *net.Dialer
	conns     *connSet
	inflight  *tracker
	onDialErr func(endpoint string) // ejects and counts
}

var _ http.RoundTripper = (*httpBackend)(nil)

func newHTTPBackend(name string, eps *endpointSet, tlsCfg *tls.Config, o Options, onDialErr func(string)) *httpBackend {
	h := &httpBackend{
		name:      name,
		scheme:    "http",
		eps:       eps,
		dialer:    &net.Dialer{Timeout: o.DialTimeout},
		conns:     &connSet{conns: make(map[*trackedConn]struct{})},
		inflight:  &tracker{},
		onDialErr: onDialErr,
	}
	if tlsCfg != nil {
		h.scheme = "https"
	}
	h.transport = &http.Transport{
		Proxy:                  nil, // never environment proxies
		DialContext:            h.dial,
		TLSClientConfig:        tlsCfg,
		ForceAttemptHTTP2:      tlsCfg != nil, // h2 by ALPN for TLS backends; plaintext stays HTTP/1.1
		MaxIdleConnsPerHost:    o.MaxIdleConnsPerEndpoint,
		ResponseHeaderTimeout:  o.ResponseHeaderTimeout,
		IdleConnTimeout:        o.IdleConnTimeout,
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		ExpectContinueTimeout:  tlsHandshakeTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		// Content codings pass through as the client asked for them; the Transport neither asks for gzip on its
		// own nor decompresses.
		DisableCompression: true,
	}
	if tlsCfg == nil {
		h.h1 = newH1Client(h.dial, o)
	}
	return h
}

// dial connects to addr (an endpoint) and tracks the connection.
func (h *httpBackend) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := h.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc, err := h.conns.add(c)
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// RoundTrip sends req to one endpoint of the backend, keeping req.Host. It retries on another endpoint only when
// the connection could not be established (so nothing was sent); the request body is never buffered.
func (h *httpBackend) RoundTrip(req *http.Request) (*http.Response, error) {
	if !h.inflight.acquire() {
		closeBody(req)
		return nil, &Error{Backend: h.name, Type: wire.ErrBackendClosed, Err: fmt.Errorf("backend %q is closed", h.name)}
	}
	resp, err := h.roundTrip(req)
	if err != nil {
		h.inflight.release()
		return nil, err
	}
	resp.Body = trackBody(resp.Body, h.inflight.release)
	return resp, nil
}

func (h *httpBackend) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	eps, err := h.endpoints(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	rec := recorderFrom(ctx)
	body := newRetryBody(req.Body)
	try := h.eps.attempts(eps)
	var lastErr error
	for {
		ep, ok := try.next()
		if !ok {
			break
		}
		if rec != nil {
			rec.Addr = ep
		}
		// The attempt's own copy of the request and its URL (a RoundTripper leaves the caller's alone), in one
		// allocation.
		a := &attemptRequest{req: *req, url: *req.URL}
		a.url.Scheme, a.url.Host = h.scheme, ep
		a.req.URL = &a.url
		attempt := body.attempt()
		if attempt != nil {
			a.req.Body = attempt
		}
		var resp *http.Response
		if h.h1 != nil && eligible(&a.req) {
			resp, err = h.h1.roundTrip(&a.req, ep)
		} else {
			resp, err = h.transport.RoundTrip(&a.req)
		}
		if err == nil {
			attempt.commit()
			return resp, nil
		}
		if !isDialError(err) || ctx.Err() != nil || body.wasRead() {
			attempt.commit()
			return nil, transportError(ctx, h.name, ep, err)
		}
		h.onDialErr(ep)
		lastErr = err
	}
	body.close()
	return nil, h.noConnection(try, lastErr)
}

// attemptRequest is the request of one attempt with the URL it points to.
type attemptRequest struct {
	req http.Request
	url url.URL
}

// endpoints returns the current endpoints, waiting a little for a new backend's first resolution.
func (h *httpBackend) endpoints(ctx context.Context) ([]string, error) {
	eps, err := h.eps.await(ctx, firstResolutionWait)
	if err != nil {
		return nil, &Error{Backend: h.name, Type: wire.ErrNoResolution,
			Err: fmt.Errorf("no resolved endpoints for backend %q: %w", h.name, err)}
	}
	if len(eps) == 0 {
		return nil, &Error{Backend: h.name, Type: wire.ErrNoResolution,
			Err: fmt.Errorf("no resolved endpoints for backend %q", h.name)}
	}
	return eps, nil
}

func (h *httpBackend) noConnection(try *attempts, lastErr error) *Error {
	eps, tried := try.eps, try.tried
	msg := fmt.Sprintf("no connection to any endpoint of backend %q", h.name)
	if len(tried) > 0 {
		msg += fmt.Sprintf(", refused: [%s]", strings.Join(tried, " "))
	}
	skipped := 0
	for _, ep := range eps {
		if !slices.Contains(tried, ep) {
			skipped++
		}
	}
	if skipped > 0 {
		msg += fmt.Sprintf(", %d of %d ejected: [%s]", skipped, len(eps), strings.Join(h.eps.ejectedNow(), " "))
	}
	if lastErr != nil {
		return &Error{Backend: h.name, Type: wire.ErrNoConnection, Err: fmt.Errorf("%s: %w", msg, lastErr)}
	}
	return &Error{Backend: h.name, Type: wire.ErrNoConnection, Err: fmt.Errorf("%s", msg)}
}

// dialEndpoint connects to one endpoint for a tunnel, with the same balancing, ejection and retry as RoundTrip.
// The tunnel owns the connection, but it counts as a request in flight until closed, and closing the backend
// closes it: a replaced or removed backend's tunnels end at the drain bound, like its requests and WebSockets.
func (h *httpBackend) dialEndpoint(ctx context.Context) (net.Conn, error) {
	if !h.inflight.acquire() {
		return nil, &Error{Backend: h.name, Type: wire.ErrBackendClosed, Err: fmt.Errorf("backend %q is closed", h.name)}
	}
	handedOver := false
	defer func() {
		if !handedOver {
			h.inflight.release()
		}
	}()
	eps, err := h.endpoints(ctx)
	if err != nil {
		return nil, err
	}
	rec := recorderFrom(ctx)
	try := h.eps.attempts(eps)
	var lastErr error
	for {
		ep, ok := try.next()
		if !ok {
			break
		}
		if rec != nil {
			rec.Addr = ep
		}
		c, err := h.dialer.DialContext(ctx, "tcp", ep)
		if err == nil {
			tc, err := h.conns.add(c)
			if err != nil {
				return nil, &Error{Backend: h.name, Type: wire.ErrBackendClosed, Err: fmt.Errorf("backend %q is closed", h.name)}
			}
			handedOver = true
			return &tunnelConn{trackedConn: tc, release: sync.OnceFunc(h.inflight.release)}, nil
		}
		if ctx.Err() != nil {
			return nil, transportError(ctx, h.name, ep, err)
		}
		h.onDialErr(ep)
		lastErr = err
	}
	return nil, h.noConnection(try, lastErr)
}

// close refuses new requests and closes every connection, idle or not.
func (h *httpBackend) close() {
	h.inflight.close()
	h.conns.closeAll()
	h.transport.CloseIdleConnections()
	if h.h1 != nil {
		h.h1.close()
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// connSet tracks a transport's open connections.
type connSet struct {
	mu     sync.Mutex
	closed bool
	conns  map[*trackedConn]struct{}
}

func (s *connSet) add(c net.Conn) (*trackedConn, error) {
	tc := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = c.Close()
		return nil, errClosedBackend
	}
	s.conns[tc] = struct{}{}
	return tc, nil
}

func (s *connSet) remove(c *trackedConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

var errClosedBackend = errors.New("backend: backend closed")

type trackedConn struct {
	net.Conn
	set  *connSet
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.remove(c) })
	return c.Conn.Close()
}

// tunnelConn is a tracked tunnel connection: Close also ends its count as a request in flight, and CloseWrite
// (half-close) reaches the TCP connection.
type tunnelConn struct {
	*trackedConn
	release func()
}

func (c *tunnelConn) Close() error {
	err := c.trackedConn.Close()
	c.release()
	return err
}

// NetConn is the connection underneath (as for *tls.Conn), for writes that reach the socket directly (writev);
// closing stays with c.
func (c *tunnelConn) NetConn() net.Conn { return c.trackedConn.Conn }

// CloseWrite half-closes the connection; one that cannot is closed.
func (c *tunnelConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Close()
}

// trackBody calls done once when the response body is closed. A 101 response's body is also an io.Writer (the
// upgraded connection); the wrapper keeps that visible.
func trackBody(body io.ReadCloser, done func()) io.ReadCloser {
	tb := &trackedBody{ReadCloser: body, done: done}
	if w, ok := body.(io.Writer); ok {
		return &trackedRWBody{trackedBody: tb, w: w}
	}
	return tb
}

type trackedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

type trackedRWBody struct {
	*trackedBody
	w io.Writer
}

func (b *trackedRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }

// retryBody lets one request body be handed to several attempts without buffering it. http.Transport closes the
// body of a request it failed to send, even when it never read it (a refused connection); an attempt therefore
// gets a wrapper whose Close reaches the real body only once that attempt is committed to (it succeeded, or failed
// in a way that is not retried). Read marks the body as used, after which no retry is allowed.
type retryBody struct {
	body      io.ReadCloser
	read      atomic.Bool
	closeOnce sync.Once
}

// newRetryBody returns nil for a request without a body (nil or http.NoBody): nothing to protect.
func newRetryBody(body io.ReadCloser) *retryBody {
	if body == nil || body == http.NoBody {
		return nil
	}
	return &retryBody{body: body}
}

// attempt returns the body for one attempt; nil when there is no body.
func (b *retryBody) attempt() *attemptBody {
	if b == nil {
		return nil
	}
	return &attemptBody{rb: b}
}

// wasRead reports whether any attempt read from the body.
func (b *retryBody) wasRead() bool { return b != nil && b.read.Load() }

// close closes the real body; used when no attempt was committed to.
func (b *retryBody) close() {
	if b == nil {
		return
	}
	b.closeOnce.Do(func() { _ = b.body.Close() })
}

// attemptBody is the request body given to one attempt.
type attemptBody struct {
	rb *retryBody

	mu        sync.Mutex
	committed bool // Close reaches the real body
	closing   bool // Close was called before commit
}

func (a *attemptBody) Read(p []byte) (int, error) {
	a.rb.read.Store(true)
	return a.rb.body.Read(p)
}

func (a *attemptBody) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.committed {
		a.rb.close()
		return nil
	}
	a.closing = true
	return nil
}

// commit makes this attempt the one that owns the real body: a Close that already happened, or happens later
// (http.Transport may close the body from its write loop after RoundTrip returned), reaches it.
func (a *attemptBody) commit() {
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.committed = true
	if a.closing {
		a.rb.close()
	}
}
