package grpcproxy

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

type callKey struct{}

// call is what one RPC leaves for its log line and metrics. The interceptor creates it; the director and the header
// goroutine fill in where the call went.
type call struct {
	start     time.Time
	method    string
	authority string
	requestID string
	in        metadata.MD // the client's metadata (read only: gRPC makes a copy for each FromIncomingContext)

	mu       sync.Mutex // guards the fields below
	directed bool       // the director ran, so the proxy handler (not an interceptor) decided the outcome
	route    string     // the backend name, admission.AdhocLabel or "": what HTTP lines call the route
	match    string     // the matching route's pattern (service, authority, metadata), logged as route_match
	backend  string
	adhoc    string
	endpoint string
	identity string // authn.Identity.String()
	decision string // allowed, unauthenticated, forbidden; "" when nothing was authorized
	reason   string
	errType  wire.ErrorType

	// span is the call's trace span (nil when tracing is off); set before the handler runs, ended by finish.
	span *tracing.Span
	peer string // the client's IP address, for the span
}

// newCall starts the record of a call, keeping a valid incoming request ID or making a new one.
func newCall(ctx context.Context, method string) *call {
	md, _ := metadata.FromIncomingContext(ctx)
	id := firstValue(md, wire.MetadataRequestID)
	if !wire.ValidRequestID(id) {
		id = wire.NewRequestID()
	}
	return &call{
		start:     time.Now(),
		method:    method,
		authority: firstValue(md, ":authority"),
		requestID: id,
		in:        md,
	}
}

func (c *call) update(f func(c *call)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *call) adhocTarget() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.adhoc
}

// callFrom returns the call ctx carries, or nil.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// intercept is the outermost stream interceptor: it gives the call its request ID (returned to the client in the
// response header metadata), marks the errors kedge made (trailer metadata), then logs and counts the call when it
// ends.
func (p *Proxy) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	c := newCall(ss.Context(), info.FullMethod)
	// SetHeader only fails once headers were sent, which cannot have happened before the handler ran.
	_ = ss.SetHeader(metadata.Pairs(wire.MetadataRequestID, c.requestID))
	if p.tracer != nil {
		c.span = p.tracer.StartGRPC(c.in, info.FullMethod)
		if a := peerAddr(ss.Context()); a.IsValid() {
			c.peer = a.String()
		}
	}
	err := handler(srv, &ctxStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callKey{}, c)})
	markKedgeError(ss, c, err)
	p.finish(c, err)
	return err
}

// ctxStream replaces a server stream's context. Holding the context is the one way to pass values down a stream
// handler chain; it lives exactly as long as the call.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// finish logs and counts a finished call.
func (p *Proxy) finish(c *call, err error) {
	elapsed := time.Since(c.start)
	st := status.Convert(err)
	code := st.Code()

	c.mu.Lock()
	defer c.mu.Unlock()
	errType := c.errTypeLocked(code)

	// grpc-go passes on any number a backend sends as grpc-status; outside the 17 defined codes it is Unknown for
	// the metric (as gRPC clients treat it), so an adhoc destination cannot mint series. The log keeps the number.
	codeLabel := codes.Unknown.String()
	if code <= codes.Unauthenticated {
		codeLabel = code.String()
	}
	p.m.requests.WithLabelValues(c.backend, codeLabel).Inc()
	p.m.duration.WithLabelValues(c.backend).Observe(elapsed.Seconds())
	if errType != "" {
		p.admit.CountError(c.backend, errType)
	}

	ln := logging.Begin(p.log, logging.LevelInfo, "grpc call").
		Str(logging.FieldRequestID, c.requestID).
		Str(logging.FieldGRPC, c.method).
		Str("authority", c.authority).
		Str("code", code.String()).
		Dur(logging.FieldDuration, elapsed).
		StrIf(logging.FieldRoute, c.route).
		StrIf("route_match", c.match).
		StrIf(logging.FieldBackend, c.backend).
		StrIf("adhoc", c.adhoc).
		StrIf(logging.FieldEndpoint, c.endpoint).
		StrIf(logging.FieldIdentity, c.identity)
	if c.decision != "" {
		ln.Str("decision", c.decision).Str("reason", c.reason)
	}
	ln.StrIf(logging.FieldErrorType, string(errType))
	if code != codes.OK {
		ln.Str(logging.FieldError, st.Message())
	}
	ln.Write()
	if c.span != nil {
		c.span.End(tracing.Attrs{RPC: true, Method: c.method, Code: int(code), Route: c.route, Backend: c.backend,
			ErrorType: string(errType), Peer: c.peer, RequestID: c.requestID})
	}
}

// errTypeLocked is the type of the error kedge made for the call, or "" when the call succeeded or its status came
// from the backend. c.mu must be held.
func (c *call) errTypeLocked(code codes.Code) wire.ErrorType {
	if c.errType != "" || c.directed || code == codes.OK {
		return c.errType
	}
	// An interceptor (authentication) ended the call before the proxy saw it.
	switch code {
	case codes.Unauthenticated:
		return wire.ErrUnauthorized
	case codes.PermissionDenied:
		return wire.ErrForbidden
	}
	return ""
}

// markKedgeError adds the x-kedge-error-type and x-kedge-error trailer metadata to a call that ended with an error
// kedge made itself, the gRPC counterpart of the HTTP headers. A backend's status gets no marker (and forward drops
// any marker a backend sends), so winch acts only on kedge's own refusals. ss must be the call's server stream, and
// the call's status not yet written: the handler chain has returned, but the interceptor that called it has not.
func markKedgeError(ss grpc.ServerStream, c *call, err error) {
	if err == nil {
		return
	}
	st := status.Convert(err)
	c.mu.Lock()
	errType := c.errTypeLocked(st.Code())
	c.mu.Unlock()
	if errType == "" {
		return
	}
	ss.SetTrailer(metadata.Pairs(
		wire.MetadataKedgeErrorType, string(errType),
		wire.MetadataKedgeError, metadataValue(st.Message()),
	))
}

func firstValue(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// metadataValue makes s a valid value of a text (non -bin) metadata key: printable ASCII, at most 512 bytes.
func metadataValue(s string) string {
	const maxLen = 512
	b := make([]byte, 0, min(len(s), maxLen))
	for i := 0; i < len(s) && len(b) < maxLen; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = ' '
		}
		b = append(b, c)
	}
	return string(b)
}
