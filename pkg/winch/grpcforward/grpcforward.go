// Package grpcforward is winch's plaintext gRPC port: a transparent proxy (pkg/shared/grpcrelay) whose director
// maps each call's :authority to a kedge and forwards the call over one long-lived TLS connection per
// kedge, with the proxy and backend tokens as per-RPC metadata. TLS is verified against the kedge's host name while
// the :authority sent to kedge stays the target, which is what kedge routes by.
package grpcforward

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/grpcrelay"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// Routes maps a destination (the call's :authority as the client wrote it) to its kedge. *mapper.Mapper
// implements it; winch passes one that follows config reloads.
type Routes interface {
	Map(hostport string, proto mapper.Protocol) (mapper.Destination, error)
}

// TokenSource produces the bearer token of one auth source; Invalidate drops a token that kedge rejected.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(token string)
}

// Sources looks an auth source up by name.
type Sources func(name string) (TokenSource, bool)

// Deps are the proxy's collaborators.
type Deps struct {
	// ExplainTLS, if set, adds what to do to transport errors caused by a missing client certificate
	// (tlsconfig.CertRequests.Explain).
	ExplainTLS func(error) error
	// Log receives one debug line per call and a warning per failure. nil discards.
	Log logging.Logger
	// Registerer receives winch_grpc_calls_total and winch_grpc_kedge_connections. nil keeps them unexported.
	Registerer prometheus.Registerer
	// Routes maps :authority values to kedges (the GRPC protocol list).
	Routes Routes
	// Sources gives the auth sources that routes name.
	Sources Sources
	// KedgeTLS is the client TLS config towards kedges (root CAs, client certificate); nil means system roots.
	// ServerName is set per kedge.
	KedgeTLS *tls.Config
	// InfoLogs, when not empty, is sent to kedges as x-kedge-info-logs metadata (debug mode).
	InfoLogs string
	// RetryWait bounds how long a call that kedge rejected as unauthenticated waits for the client to finish
	// sending its request, to find out whether it can be replayed (default 2s).
	RetryWait time.Duration
	// IdleTimeout is how long a kedge connection no call uses is kept (default DefaultIdleTimeout). Connections to
	// kedges that a mapper reload removed go this way too.
	IdleTimeout time.Duration
	// Tracer, if set, makes a span per call (tracing.go) and sends it to kedge as traceparent metadata. nil:
	// tracing off, a client's traceparent passes unchanged.
	Tracer *tracing.Tracer
}

// DefaultRetryWait is the default of Deps.RetryWait.
const DefaultRetryWait = 2 * time.Second

// DefaultIdleTimeout is the default of Deps.IdleTimeout.
const DefaultIdleTimeout = 10 * time.Minute

// Proxy is winch's gRPC forwarder. Build it with New, register it with ServerOptions, and Close it after the
// server stopped.
type Proxy struct {
	log       logging.Logger
	explain   func(error) error
	routes    Routes
	sources   Sources
	infoLogs  string
	retryWait time.Duration
	conns     *connCache
	calls     *prometheus.CounterVec
	retries   prometheus.Counter
	tracer    *tracing.Tracer
}

// New builds the proxy. It dials nothing until the first call.
func New(d Deps) *Proxy {
	lg := d.Log
	if lg == nil {
		lg = logging.Discard()
	}
	wait := d.RetryWait
	if wait <= 0 {
		wait = DefaultRetryWait
	}
	p := &Proxy{
		explain:   d.ExplainTLS,
		log:       lg,
		routes:    d.Routes,
		sources:   d.Sources,
		infoLogs:  d.InfoLogs,
		retryWait: wait,
		tracer:    d.Tracer,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winch_grpc_calls_total",
			Help: "Calls on winch's gRPC port, by destination (kedge, refused).",
		}, []string{"destination"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "winch_grpc_token_retries_total",
			Help: "gRPC calls sent again with a fresh proxy token after kedge rejected the cached one.",
		}),
	}
	idle := d.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	p.conns = newConnCache(d.KedgeTLS, lg, idle)
	if d.Registerer != nil {
		d.Registerer.MustRegister(p.calls, p.retries, p.conns.gauge)
	}
	return p
}

// ServerOptions returns the options that make a grpc.Server proxy every call to a kedge: a handler for unknown
// services that relays them, and the relay's codec. The server should register no services of its own.
func (p *Proxy) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnknownServiceHandler(p.handle),
		grpcrelay.ServerOption(),
		grpc.ChainStreamInterceptor(p.interceptors()...),
	}
}

// explainUnavailable adds the client-certificate hint to Unavailable errors when a kedge asked for a certificate
// winch does not have (with TLS 1.3 the refusal otherwise surfaces as "broken pipe").
func (p *Proxy) explainUnavailable(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if p.explain == nil {
		return err
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		if e := p.explain(errors.New(st.Message())); e.Error() != st.Message() {
			return status.Error(codes.Unavailable, e.Error())
		}
	}
	return err
}

// Close closes the connections to kedges. Calls still running on them fail.
func (p *Proxy) Close() error { return p.conns.close() }

// authorityHint ends the errors about a call's :authority: a client that dials winch's port sends that address
// (127.0.0.1:8071) as :authority unless told otherwise.
const authorityHint = "a client of winch's gRPC port must set :authority to the service's host name and port, " +
	"as the mapper's routes name it (grpcurl -authority svc.example.com:443, grpc-go grpc.WithAuthority)"

// relayOptions: the header of a call kedge refused may be followed by a replayed attempt's, so the client gets the
// header with the first response message (or the status), from the attempt that answered.
var relayOptions = grpcrelay.Options{HeaderWithFirstMessage: true}

// handle is the UnknownServiceHandler: it directs the call to its kedge and relays it.
func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "grpcforward: the call has no method")
	}
	ctx, conn, err := p.direct(ss.Context(), method)
	if err != nil {
		return err
	}
	return grpcrelay.Relay(ctx, ss, conn, method, &relayOptions)
}

// direct maps the call's :authority, picks the kedge connection and builds the
// outgoing metadata. Token errors are Internal "transport: cannot get token: <err>" as in the original winch, the
// error carrying the hint of what to do.
func (p *Proxy) direct(ctx context.Context, fullMethod string) (context.Context, grpc.ClientConnInterface, error) {
	in, _ := metadata.FromIncomingContext(ctx)
	authority := first(in[":authority"])
	if authority == "" {
		p.calls.WithLabelValues("refused").Inc()
		return nil, nil, status.Error(codes.InvalidArgument, "no :authority header: winch cannot tell which destination the call is for; "+authorityHint)
	}
	dest, err := p.routes.Map(authority, mapper.ProtocolGRPC)
	if err != nil {
		p.calls.WithLabelValues("refused").Inc()
		var notDest *mapper.NotDestinationError
		switch {
		case errors.As(err, &notDest):
			return nil, nil, status.Errorf(codes.Unimplemented, ":authority %s; "+authorityHint, notDest.Error())
		case errors.Is(err, mapper.ErrIPLiteral), errors.Is(err, mapper.ErrInvalidDestination):
			return nil, nil, status.Errorf(codes.InvalidArgument, ":authority %q: %v; "+authorityHint, authority, err)
		default:
			return nil, nil, status.Error(codes.Internal, err.Error())
		}
	}
	p.calls.WithLabelValues("kedge").Inc()
	cc, release, err := p.conns.get(dest.KedgeURL)
	if err != nil {
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	// ctx is the call's server stream context, which gRPC cancels when the call ends: the connection counts as in
	// use until then. On an error below, the call ends at once.
	context.AfterFunc(ctx, release)
	c := &call{
		p:         p,
		cc:        cc,
		authority: authority,
		method:    fullMethod,
		kedge:     dest.KedgeURL.Host,
		md:        p.outgoingMetadata(in),
		proxyAuth: dest.ProxyAuth,
	}
	if p.tracer != nil {
		tracing.FromContext(ctx).InjectGRPC(c.md)
	}
	if dest.BackendAuth != "" {
		tok, err := p.token(ctx, dest.BackendAuth)
		if err != nil {
			return nil, nil, err
		}
		c.md.Set(wire.MetadataAuthz, "bearer "+tok)
	}
	if dest.ProxyAuth != "" {
		tok, err := p.token(ctx, dest.ProxyAuth)
		if err != nil {
			return nil, nil, err
		}
		c.proxyToken = tok
	}
	return metadata.NewOutgoingContext(ctx, c.metadata()), c, nil
}

// outgoingMetadata is what winch sends to kedge: the client's metadata minus what belongs to the hop to winch
// (wire.HopMetadata: pseudo headers, connection headers, gRPC's transport keys, and any proxy-authorization, meant
// for winch, not kedge), plus a request ID and, in debug mode, x-kedge-info-logs.
func (p *Proxy) outgoingMetadata(in metadata.MD) metadata.MD {
	out := make(metadata.MD, len(in)+2)
	for k, v := range in {
		if wire.HopMetadata(k) {
			continue
		}
		out[k] = slices.Clone(v)
	}
	if id := first(out[wire.MetadataRequestID]); !wire.ValidRequestID(id) {
		out.Set(wire.MetadataRequestID, "winch-"+wire.NewRequestID())
	}
	if p.infoLogs != "" {
		out.Set(strings.ToLower(wire.HeaderInfoLogs), p.infoLogs)
	}
	return out
}

// token gets a token from the named source, or the Internal status the original winch returned.
func (p *Proxy) token(ctx context.Context, name string) (string, error) {
	var src TokenSource
	ok := false
	if p.sources != nil {
		src, ok = p.sources(name)
	}
	if !ok {
		return "", status.Error(codes.Internal, "transport: cannot get token: auth source "+strconv.Quote(name)+" is not configured")
	}
	tok, err := src.Token(ctx)
	if err == nil && tok == "" {
		err = errors.New("auth source " + strconv.Quote(name) + " returned an empty token")
	}
	if err != nil {
		p.log.Warn("cannot get a token for a gRPC call", "auth_source", name, logging.FieldError, err)
		return "", status.Error(codes.Internal, "transport: cannot get token: "+err.Error())
	}
	return tok, nil
}

func (p *Proxy) invalidate(name, tok string) {
	if p.sources == nil {
		return
	}
	if src, ok := p.sources(name); ok {
		src.Invalidate(tok)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
