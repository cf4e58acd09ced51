package tracing

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// Span is the span of one proxied request, tunnel or call: a child of the caller's traceparent, or the root of a new
// trace. A nil *Span (tracing off) does nothing. Start, Inject and End may run on different goroutines, but End
// runs once, after the last Inject.
type Span struct {
	span trace.Span
	prop propagation.TraceContext
}

// Attrs are every attribute a span may carry. Spans get no other attributes: no header, token, cookie,
// authorization or identity value and no query string reaches a span, whatever the request held.
type Attrs struct {
	// Method is the HTTP method (CONNECT for tunnels) or, with RPC, the gRPC method "/pkg.Service/Method".
	Method string
	// RPC marks a gRPC call: Method and Code are recorded as rpc.method and rpc.grpc.status_code.
	RPC bool
	// Route is the route's label (the backend name, or "_adhoc"); Backend is what was dialled (the backend name,
	// an adhoc "host:port", or a winch's kedge host).
	Route, Backend string
	// Status is the HTTP status answered (0: none); Code the gRPC status code (with RPC).
	Status int
	Code   int
	// ErrorType is the X-Kedge-Error-Type (or X-Winch-Error-Type) of a failure the proxy made; "" for none.
	ErrorType string
	// Peer is the client's IP address.
	Peer string
	// RequestID is the X-Kedge-Request-ID, to find the request's log line.
	RequestID string
}

// Attribute keys, after OpenTelemetry's semantic conventions where one fits.
const (
	keyHTTPMethod = "http.request.method"
	keyHTTPStatus = "http.response.status_code"
	keyRPCSystem  = "rpc.system"
	keyRPCMethod  = "rpc.method"
	keyRPCCode    = "rpc.grpc.status_code"
	keyRoute      = "kedge.route"
	keyBackend    = "kedge.backend"
	keyErrorType  = "error.type"
	keyPeer       = "client.address"
	keyRequestID  = "kedge.request_id"
)

// StartHTTP starts the span of a request (or CONNECT) whose headers are h: a child of h's traceparent (and
// tracestate) when it has a valid one, else the root of a new trace. name is the span name ("GET", "CONNECT").
func (t *Tracer) StartHTTP(h http.Header, name string) *Span {
	if t == nil {
		return nil
	}
	return t.start(propagation.HeaderCarrier(h), name)
}

// StartGRPC starts the span of a gRPC call whose incoming metadata is md, as StartHTTP does; name is the method.
func (t *Tracer) StartGRPC(md metadata.MD, name string) *Span {
	if t == nil {
		return nil
	}
	return t.start(mdCarrier(md), name)
}

func (t *Tracer) start(carrier propagation.TextMapCarrier, name string) *Span {
	ctx := t.prop.Extract(context.Background(), carrier)
	_, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
	return &Span{span: span, prop: t.prop}
}

// InjectHTTP sets h's traceparent to this span (same trace, this span as the parent) and its tracestate to the
// trace's; a client's own values are replaced. The sampled flag travels with it, so an unsampled trace stays
// unsampled downstream.
func (s *Span) InjectHTTP(h http.Header) {
	if s == nil {
		return
	}
	h.Del("Traceparent")
	h.Del("Tracestate")
	s.prop.Inject(trace.ContextWithSpan(context.Background(), s.span), propagation.HeaderCarrier(h))
}

// InjectGRPC sets md's traceparent and tracestate as InjectHTTP does.
func (s *Span) InjectGRPC(md metadata.MD) {
	if s == nil {
		return
	}
	delete(md, "traceparent")
	delete(md, "tracestate")
	s.prop.Inject(trace.ContextWithSpan(context.Background(), s.span), mdCarrier(md))
}

// End records a and ends the span. A failure (an error type, a 5xx status, a gRPC server-side code) marks the span
// as an error.
func (s *Span) End(a Attrs) {
	if s == nil {
		return
	}
	if !s.span.IsRecording() {
		s.span.End()
		return
	}
	kv := make([]attribute.KeyValue, 0, 8)
	failed := a.ErrorType != ""
	if a.RPC {
		kv = append(kv, attribute.String(keyRPCSystem, "grpc"), attribute.String(keyRPCMethod, a.Method),
			attribute.Int(keyRPCCode, a.Code))
		failed = failed || serverErrorCode(a.Code)
	} else {
		if a.Method != "" {
			kv = append(kv, attribute.String(keyHTTPMethod, a.Method))
		}
		if a.Status != 0 {
			kv = append(kv, attribute.Int(keyHTTPStatus, a.Status))
		}
		failed = failed || a.Status >= 500
	}
	kv = appendNonEmpty(kv, keyRoute, a.Route)
	kv = appendNonEmpty(kv, keyBackend, a.Backend)
	kv = appendNonEmpty(kv, keyErrorType, a.ErrorType)
	kv = appendNonEmpty(kv, keyPeer, a.Peer)
	kv = appendNonEmpty(kv, keyRequestID, a.RequestID)
	s.span.SetAttributes(kv...)
	if failed {
		s.span.SetStatus(codes.Error, a.ErrorType)
	}
	s.span.End()
}

func appendNonEmpty(kv []attribute.KeyValue, key, v string) []attribute.KeyValue {
	if v == "" {
		return kv
	}
	return append(kv, attribute.String(key, v))
}

// serverErrorCode reports whether a gRPC code means the server side failed (OpenTelemetry's rule for server spans:
// Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss).
func serverErrorCode(c int) bool {
	switch c {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}

// SpanContext returns the span's trace and span IDs (zero for a nil Span), for tests and log correlation.
func (s *Span) SpanContext() trace.SpanContext {
	if s == nil {
		return trace.SpanContext{}
	}
	return s.span.SpanContext()
}

type spanKey struct{}

// WithSpan returns ctx carrying s, for code that reaches the next hop's request through a context (winch's CONNECT
// and gRPC paths). A nil s returns ctx itself.
func WithSpan(ctx context.Context, s *Span) context.Context {
	if s == nil {
		return ctx
	}
	return context.WithValue(ctx, spanKey{}, s)
}

// FromContext returns the Span ctx carries, or nil.
func FromContext(ctx context.Context) *Span {
	s, _ := ctx.Value(spanKey{}).(*Span)
	return s
}

// mdCarrier reads and writes W3C trace context in gRPC metadata (keys are lower case there).
type mdCarrier metadata.MD

var _ propagation.TextMapCarrier = mdCarrier(nil)

func (c mdCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c mdCarrier) Set(key, value string) { c[key] = []string{value} }

func (c mdCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
