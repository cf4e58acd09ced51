package httpforward

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// maxRelayedBody bounds the body of a kedge refusal that winch relays to a CONNECT client.
const maxRelayedBody = 64 << 10

// handleConnect is goproxy's CONNECT hook. MITM routes are terminated by goproxy with winch's CA (the requests
// inside go through forward); every other CONNECT is served by tunnel on the hijacked connection, so that the
// handler runs as long as the tunnel and the server's drain sees it.
func (h *Handler) handleConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	d := h.decide(host)
	if d.kind == toKedge && d.dest.MITM {
		if h.ca == nil {
			d = decision{kind: refused, status: http.StatusBadGateway, errType: wire.ErrTransportUnknown,
				msg: "the route for " + host + " asks for MITM, which this winch has no CA for"}
		} else if cert, err := h.ca.Certificate(); err != nil {
			d = decision{kind: refused, status: http.StatusBadGateway, errType: wire.ErrTransportUnknown,
				msg: "MITM for " + host + ": " + err.Error()}
		} else {
			h.metrics.requests.WithLabelValues("connect", "mitm").Inc()
			ctx.RoundTripper = h.forwarder
			ctx.UserData = mitmTunnel(host)
			return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: goproxy.TLSConfigFromCA(cert)}, host
		}
	}
	return &goproxy.ConnectAction{
		Action: goproxy.ConnectHijack,
		Hijack: func(req *http.Request, client net.Conn, _ *goproxy.ProxyCtx) { h.tunnel(req, client, host, d) },
	}, host
}

// tunnel serves one CONNECT on the hijacked client connection: it answers 200 once the upstream tunnel is open and
// splices the two connections, or answers the refusal.
func (h *Handler) tunnel(req *http.Request, client net.Conn, host string, d decision) {
	h.serveTunnel(req, client, host, d, func(_ net.Addr, refusal *http.Response) error {
		if refusal != nil {
			return writeResponse(client, refusal)
		}
		_, err := io.WriteString(client, connectLine(req, http.StatusOK, "Connection established"))
		return err
	})
}

// socksScheme marks the request that ServeTunnel makes up for a SOCKS5 client: winch's errors and metrics label it
// "socks".
const socksScheme = "socks5h"

// ServeTunnel serves a SOCKS5 CONNECT to hostport ("host:port", the name as the client sent it, never resolved
// here) on client: the same decision as an HTTP CONNECT (decide: the mapped kedge with the route's proxy token,
// directly, or refused per Options.Unmatched), the same kedge tunnel and the same splice. answer is called once,
// with the refusal (kedge's answer or a winch error; its status and error-type headers say why) or, on success,
// with nil and the upstream connection's local address; the splice starts when answer returns nil. answer returns
// the error of writing the answer (a client that went away), which is logged at debug level. MITM routes are
// refused: winch can only terminate TLS for clients that send an HTTP CONNECT. ServeTunnel closes client.
func (h *Handler) ServeTunnel(ctx context.Context, client net.Conn, hostport string, answer func(bound net.Addr, refusal *http.Response) error) {
	req := (&http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Scheme: socksScheme, Host: hostport},
		Host:       hostport,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
	}).WithContext(ctx)
	d := h.decide(hostport)
	if d.kind == toKedge && d.dest.MITM {
		d = decision{kind: refused, status: http.StatusForbidden, errType: wire.ErrForbidden,
			msg: "the route for " + hostport + " asks for MITM, which winch does only for HTTP CONNECT, not SOCKS5"}
	}
	h.serveTunnel(req, client, hostport, d, answer)
}

// serveTunnel is the one home of CONNECT-style tunnels (HTTP CONNECT and SOCKS5): it opens the upstream that d
// names, lets answer tell the client the outcome, and splices the two connections. It closes client.
func (h *Handler) serveTunnel(req *http.Request, client net.Conn, host string, d decision, answer func(net.Addr, *http.Response) error) {
	defer func() { _ = client.Close() }()
	start := time.Now()
	proxy := proxyLabel(req)
	var (
		upstream     net.Conn
		fromUpstream io.Reader
		via          string
		requestID    string
		// untaken is set when the client did not take the answer that its tunnel through kedge is open: the span
		// then ends with it (wire.StatusClientClosed) instead of 200.
		untaken *http.Response
	)
	// send gives the client its answer. A client that went away before taking it is no failure of winch's, so it
	// shows at debug level only.
	send := func(bound net.Addr, refusal *http.Response) error {
		status := http.StatusOK
		if refusal != nil {
			status = refusal.StatusCode
		}
		err := answer(bound, refusal)
		if err != nil {
			h.log.Debug("the client did not take winch's answer to its tunnel", "proxy", proxy, logging.FieldHost, host,
				"answer", status, logging.FieldRequestID, requestID, logging.FieldError, err)
		}
		return err
	}
	switch d.kind {
	case refused:
		h.metrics.requests.WithLabelValues(proxy, "refused").Inc()
		_ = send(nil, h.winchError(req, d.status, d.errType, d.msg))
		return
	case toDirect:
		h.metrics.requests.WithLabelValues(proxy, "direct").Inc()
		conn, err := h.dialer.DialContext(req.Context(), "tcp", withPort(host, "443"))
		if err != nil {
			_ = send(nil, h.winchError(req, http.StatusBadGateway, wire.ErrTransportUnknown,
				fmt.Sprintf("direct to %s: %v", host, err)))
			return
		}
		upstream, fromUpstream, via = conn, conn, "direct"
	case toKedge:
		h.metrics.requests.WithLabelValues(proxy, "kedge").Inc()
		requestID = "winch-" + wire.NewRequestID()
		var span *tracing.Span
		req, span = h.startTunnelSpan(req)
		conn, r, resp := h.kedgeTunnel(req, host, d.dest, requestID)
		if resp != nil {
			endTunnelSpan(span, req, d.dest, requestID, resp)
			_ = send(nil, resp)
			return
		}
		defer func() { endTunnelSpan(span, req, d.dest, requestID, untaken) }()
		upstream, fromUpstream, via = conn, r, d.dest.KedgeURL.Host
	}
	if err := send(upstream.LocalAddr(), nil); err != nil {
		untaken = &http.Response{StatusCode: wire.StatusClientClosed, Header: http.Header{}}
		_ = upstream.Close()
		return
	}
	sent, received := splice(client, upstream, fromUpstream)
	if h.log.Enabled(logging.LevelDebug) {
		h.log.Debug("tunnel closed", "proxy", proxy, logging.FieldHost, host, "upstream", via, "bytes_sent", sent,
			"bytes_received", received, logging.FieldDuration, time.Since(start), logging.FieldRequestID, requestID)
	}
}

// kedgeTunnel asks dest's kedge for a tunnel to host. On success it returns the connection and the reader to take
// the tunnel's downstream bytes from (it may hold bytes kedge sent right after its 200). Otherwise it returns the
// response for the client: kedge's refusal (status and X-Kedge-Error headers) or a winch error. A proxy token that
// kedge rejects as unauthorized is invalidated and the CONNECT sent once more with a fresh one: nothing has gone
// through the tunnel yet, so the retry is always safe.
func (h *Handler) kedgeTunnel(req *http.Request, host string, dest mapper.Destination, requestID string) (net.Conn, io.Reader, *http.Response) {
	ctx := req.Context()
	if resp := h.refusePlaintextTokens(req, dest, dest.ProxyAuth); resp != nil {
		return nil, nil, resp
	}
	for attempt := 0; ; attempt++ {
		var proxyTok string
		if dest.ProxyAuth != "" {
			tok, errResp := h.token(ctx, req, dest.ProxyAuth)
			if errResp != nil {
				return nil, nil, errResp
			}
			proxyTok = tok
		}
		conn, br, resp, err := h.connect(ctx, dest.KedgeURL, host, proxyTok, requestID)
		if err != nil {
			return nil, nil, h.winchError(req, http.StatusBadGateway, wire.ErrTransportUnknown,
				fmt.Sprintf("kedge %s for CONNECT %s: %v", dest.KedgeURL.Host, host, err))
		}
		if resp.StatusCode == http.StatusOK {
			return conn, br, nil
		}
		relay := relayRefusal(req, resp)
		_ = conn.Close()
		if staleToken(resp, proxyTok) {
			h.invalidate(dest.ProxyAuth, proxyTok)
			if attempt == 0 && h.changedToken(ctx, dest.ProxyAuth, proxyTok) {
				h.metrics.retries.WithLabelValues(proxyLabel(req)).Inc()
				h.log.Info("kedge rejected the proxy token; retrying the CONNECT with a fresh one",
					"auth_source", dest.ProxyAuth, logging.FieldHost, host, logging.FieldRequestID, requestID)
				continue
			}
		}
		h.log.Warn("kedge refused the tunnel", logging.FieldHost, host, "kedge", dest.KedgeURL.Host,
			logging.FieldStatus, resp.StatusCode, logging.FieldError, resp.Header.Get(wire.HeaderKedgeError),
			logging.FieldErrorType, resp.Header.Get(wire.HeaderKedgeErrorType), logging.FieldRequestID, requestID)
		return nil, nil, relay
	}
}

// connect dials the kedge at u (TLS for https, verified against u's host name), sends "CONNECT host" with the
// proxy token and reads kedge's answer. The handshake and the answer must come within HandshakeTimeout.
func (h *Handler) connect(ctx context.Context, u *url.URL, host, proxyTok, requestID string) (net.Conn, *bufio.Reader, *http.Response, error) {
	defPort := "443"
	if u.Scheme == "http" {
		defPort = "80"
	}
	raw, err := h.dialer.DialContext(ctx, "tcp", withPort(u.Host, defPort))
	if err != nil {
		return nil, nil, nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(h.opts.HandshakeTimeout))
	conn := raw
	if u.Scheme == "https" {
		cfg := h.kedgeTLS.Clone()
		cfg.ServerName = u.Hostname()
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, nil, nil, err
		}
		conn = tc
	}
	creq := &http.Request{
		Method:     http.MethodConnect,
		URL:        &url.URL{Opaque: host},
		Host:       host,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"User-Agent": {"winch"}, wire.HeaderRequestID: {requestID}},
	}
	if proxyTok != "" {
		creq.Header.Set(wire.HeaderProxyAuthz, "Bearer "+proxyTok)
	}
	if h.opts.InfoLogs != "" {
		creq.Header.Set(wire.HeaderInfoLogs, h.opts.InfoLogs)
	}
	if h.tracer != nil {
		tracing.FromContext(ctx).InjectHTTP(creq.Header)
	}
	bw := bufio.NewWriter(conn)
	err = creq.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, nil, fmt.Errorf("sending CONNECT: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, creq)
	if err != nil {
		_ = conn.Close()
		return nil, nil, nil, fmt.Errorf("reading kedge's answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		_ = raw.SetDeadline(time.Time{})
	}
	return conn, br, resp, nil
}

// relayRefusal turns kedge's non-200 answer to a CONNECT into the response for the client: kedge's status, its
// headers (X-Kedge-Error and X-Kedge-Error-Type among them) and at most maxRelayedBody of its body.
func relayRefusal(req *http.Request, resp *http.Response) *http.Response {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxRelayedBody))
	_ = resp.Body.Close()
	hdr := resp.Header.Clone()
	wire.RemoveConnectionHeaders(hdr, false) // they were about kedge's connection, not the client's
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		Status:        resp.Status,
		StatusCode:    resp.StatusCode,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        hdr,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Close:         true,
		Request:       req,
	}
}

// writeResponse writes resp to a hijacked client connection, which the caller closes afterwards, and returns the
// write's error.
func writeResponse(client net.Conn, resp *http.Response) error {
	resp.Close = true
	resp.Header.Set("Connection", "close")
	_ = client.SetWriteDeadline(time.Now().Add(10 * time.Second))
	err := resp.Write(client)
	_ = resp.Body.Close()
	return err
}

// connectLine is the status line answering a CONNECT, in the client's HTTP version.
func connectLine(req *http.Request, code int, text string) string {
	major, minor := req.ProtoMajor, req.ProtoMinor
	if major == 0 {
		major, minor = 1, 1
	}
	return fmt.Sprintf("HTTP/%d.%d %d %s\r\n\r\n", major, minor, code, text)
}

// splice copies both ways until both directions have ended. The end of one direction is passed on as a half-close
// (CloseWrite: a TCP FIN, or a TLS close_notify towards kedge), so protocols that finish sending before they finish
// receiving keep working; an error in either direction closes both connections. It returns the bytes copied
// upstream and downstream.
func splice(client, upstream net.Conn, fromUpstream io.Reader) (sent, received int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		sent, err = io.Copy(upstream, client)
		endDirection(upstream, client, err)
	}()
	received, err := io.Copy(client, fromUpstream)
	endDirection(client, upstream, err)
	wg.Wait()
	_ = client.Close()
	_ = upstream.Close()
	return sent, received
}

// endDirection ends the copy into dst: half-close after a clean EOF, close both after an error (or when dst
// cannot half-close).
func endDirection(dst, src net.Conn, err error) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	_ = dst.Close()
	_ = src.Close()
}

// withPort returns hostport with def as its port when it has none.
func withPort(hostport, def string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	host := hostport
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return net.JoinHostPort(host, def)
}
