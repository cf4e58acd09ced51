package httpforward

import (
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// Tracing in winch's HTTP proxy: requests and tunnels that go to a kedge get a span (Deps.Tracer), which continues
// the client's traceparent and is sent to kedge as the next parent: in the request's headers (kedgeRequest) or in
// the CONNECT winch sends (connect). The span reaches those through the request's context. Destinations winch sends
// directly get no span. Without a tracer none of this runs.

// forwardKedgeTraced is forwardKedge inside a span that ends when the response body is closed (at once for a
// winch error or an upgrade, whose body is the connection).
func (h *Handler) forwardKedgeTraced(req *http.Request, dest mapper.Destination, start time.Time, owned bool) *http.Response {
	span := h.tracer.StartHTTP(req.Header, req.Method)
	req = req.WithContext(tracing.WithSpan(req.Context(), span))
	resp := h.forwardKedge(req, dest, start, owned)
	a := spanAttrs(req, dest, resp, "")
	if resp.StatusCode == http.StatusSwitchingProtocols || resp.Body == nil {
		span.End(a)
		return resp
	}
	resp.Body = &spanBody{ReadCloser: resp.Body, span: span, attrs: a}
	return resp
}

// startTunnelSpan starts the span of a tunnel through a kedge and returns req carrying it; without a tracer it
// returns req and nil.
func (h *Handler) startTunnelSpan(req *http.Request) (*http.Request, *tracing.Span) {
	if h.tracer == nil {
		return req, nil
	}
	span := h.tracer.StartHTTP(req.Header, http.MethodConnect)
	return req.WithContext(tracing.WithSpan(req.Context(), span)), span
}

// endTunnelSpan ends a tunnel's span: with the refusal the client got (or, for an open tunnel, a wire.StatusClientClosed
// answer when the client did not take winch's 200), or (refusal nil) as established.
func endTunnelSpan(span *tracing.Span, req *http.Request, dest mapper.Destination, requestID string, refusal *http.Response) {
	if span == nil {
		return
	}
	if refusal == nil {
		refusal = &http.Response{StatusCode: http.StatusOK, Header: http.Header{}}
	}
	span.End(spanAttrs(req, dest, refusal, requestID))
}

// spanAttrs are a winch span's attributes: the method, the kedge, the status the client got, the error type (winch's
// own, or kedge's that it relays), the client's address and the request ID (requestID, else the request's or the
// one kedge answered with). Nothing else of the request.
func spanAttrs(req *http.Request, dest mapper.Destination, resp *http.Response, requestID string) tracing.Attrs {
	errType := resp.Header.Get(wire.HeaderWinchErrorType)
	if errType == "" {
		errType = resp.Header.Get(wire.HeaderKedgeErrorType)
	}
	if requestID == "" {
		requestID = req.Header.Get(wire.HeaderRequestID)
	}
	if requestID == "" {
		requestID = resp.Header.Get(wire.HeaderRequestID)
	}
	peer, _, _ := net.SplitHostPort(req.RemoteAddr)
	return tracing.Attrs{Method: req.Method, Backend: dest.KedgeURL.Host, Status: resp.StatusCode, ErrorType: errType,
		Peer: peer, RequestID: requestID}
}

// spanBody ends the span when the response body is closed, so that the span covers the body's copy.
type spanBody struct {
	io.ReadCloser
	span  *tracing.Span
	attrs tracing.Attrs
	once  sync.Once
}

func (b *spanBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() { b.span.End(b.attrs) })
	return err
}
