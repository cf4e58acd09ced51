package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Defaults applied to zero Options fields.
const (
	DefaultResolveInterval = 5 * time.Second
	MinResolveInterval     = time.Second
	DefaultEjectionBackoff = 2 * time.Second
	DefaultDialTimeout     = 2 * time.Second
	DefaultIdleConnTimeout = 60 * time.Second
	DefaultDrainTimeout    = 20 * time.Second
	// DefaultMaxIdleConnsPerEndpoint is the keep-alive pool size per endpoint of an HTTP backend. Under more
	// concurrent requests than this, connections beyond it are closed as requests finish and dialled again for the
	// next ones (a dial, a TLS handshake and a TIME_WAIT socket each), so it sits well above the concurrency one
	// kedge usually carries to one endpoint; idle ones close after IdleConnTimeout.
	DefaultMaxIdleConnsPerEndpoint = 256
	// DefaultResponseHeaderTimeout bounds the wait for a backend's response headers once the request is sent (as
	// nginx's proxy_read_timeout does by default): a hung backend costs its client 504 backend-timeout, not a hang.
	// The response body, streams and tunnels are not bounded by it.
	DefaultResponseHeaderTimeout = 60 * time.Second
)

const (
	// drainGrace is how long a replaced backend keeps accepting requests even when idle: a request may have looked
	// it up just before the swap.
	drainGrace = time.Second
	// lookupTimeout bounds one DNS query.
	lookupTimeout = 2 * time.Second
	// firstResolutionWait bounds how long a request waits for a new backend's first resolution.
	firstResolutionWait = 5 * time.Second
	// maxAdhocIdleConnsPerHost is the keep-alive pool size per adhoc destination.
	maxAdhocIdleConnsPerHost = 8
	// maxAdhocIdleConns bounds the idle connections of the adhoc transport over all destinations.
	maxAdhocIdleConns = 256
	// tlsHandshakeTimeout bounds the TLS handshake with an endpoint.
	tlsHandshakeTimeout = 10 * time.Second
	// maxResponseHeaderBytes limits a backend's response headers.
	maxResponseHeaderBytes = 1 << 20
	// grpcMaxBackoff caps gRPC's reconnect backoff, so a backend that was down at startup is found quickly.
	grpcMaxBackoff = 5 * time.Second
)

// Options tunes the pool. The zero value means defaults.
type Options struct {
	// ResolveInterval is the re-resolution period of host and srv resolvers (default 5s, at least 1s).
	ResolveInterval time.Duration
	// EjectionBackoff is how long an endpoint that refused a connection is skipped (default 2s; the original's
	// lbtransport_failed_target_backoff_duration).
	EjectionBackoff time.Duration
	// DialTimeout bounds connecting to an endpoint (default 2s).
	DialTimeout time.Duration
	// IdleConnTimeout closes pooled upstream connections idle for longer (default 60s).
	IdleConnTimeout time.Duration
	// DrainTimeout bounds how long a replaced or removed backend waits for its in-flight requests before its
	// connections are closed (default 20s).
	DrainTimeout time.Duration
	// MaxIdleConnsPerEndpoint is the keep-alive pool size per endpoint of an HTTP backend (default
	// DefaultMaxIdleConnsPerEndpoint).
	MaxIdleConnsPerEndpoint int
	// ResponseHeaderTimeout bounds the wait for an HTTP backend's (or adhoc destination's) response headers after
	// the request was written (default DefaultResponseHeaderTimeout; negative: no bound).
	ResponseHeaderTimeout time.Duration
}

// withDefaults returns o with zero (or too small) fields replaced by defaults.
func (o Options) withDefaults() Options {
	if o.ResolveInterval <= 0 {
		o.ResolveInterval = DefaultResolveInterval
	}
	o.ResolveInterval = max(o.ResolveInterval, MinResolveInterval)
	if o.EjectionBackoff <= 0 {
		o.EjectionBackoff = DefaultEjectionBackoff
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	if o.MaxIdleConnsPerEndpoint <= 0 {
		o.MaxIdleConnsPerEndpoint = DefaultMaxIdleConnsPerEndpoint
	}
	switch {
	case o.ResponseHeaderTimeout == 0:
		o.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	case o.ResponseHeaderTimeout < 0:
		o.ResponseHeaderTimeout = 0 // http.Transport: no bound
	}
	return o
}

// DNSResolver is the part of *net.Resolver the resolvers use; tests inject a fake.
type DNSResolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

var _ DNSResolver = (*net.Resolver)(nil)

// SourceFactory makes EndpointSources for resolver kinds the pool does not implement itself (k8s).
type SourceFactory interface {
	// Source returns the EndpointSource of spec, or an error naming what is wrong with spec.Resolver.
	Source(spec Spec) (EndpointSource, error)
}

// Deps are the pool's collaborators.
type Deps struct {
	// Log receives resolver failures and configuration changes; nil discards them.
	Log logging.Logger
	// Registerer receives the kedge_backend_* metrics; nil means they are not exported.
	Registerer prometheus.Registerer
	// DNS answers host and srv lookups; nil means net.DefaultResolver.
	DNS DNSResolver
	// K8s makes the sources of k8s resolvers; nil means backends with a k8s resolver are refused.
	K8s SourceFactory
	// Options tunes timeouts and intervals.
	Options Options
}

// withDefaults fills nil collaborators.
func (d Deps) withDefaults() Deps {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	if d.DNS == nil {
		d.DNS = net.DefaultResolver
	}
	d.Options = d.Options.withDefaults()
	return d
}

// Error is what the transports of this package return for failures kedge must classify; the proxy maps Type to
// X-Kedge-Error-Type. Use errors.As to find it.
type Error struct {
	// Backend names the backend; empty for adhoc destinations.
	Backend string
	// Type classifies the failure: wire.ErrNoResolution, wire.ErrNoConnection, wire.ErrTransportUnknown,
	// wire.ErrBackendTimeout, wire.ErrBackendClosed, or (adhoc only) wire.ErrForbidden.
	Type wire.ErrorType
	// Err is the cause; its message is meant for X-Kedge-Error.
	Err error
}

// Error returns the cause's message.
func (e *Error) Error() string {
	if e.Err == nil {
		return string(e.Type)
	}
	return e.Err.Error()
}

// Unwrap returns the cause, so errors.Is(err, context.Canceled) and the like work.
func (e *Error) Unwrap() error { return e.Err }

// ErrForbiddenAddress is wrapped by dial errors for addresses a DialGuard refused.
var ErrForbiddenAddress = errors.New("backend: destination address is not allowed")

// isDialError reports whether err says the connection was never established, so nothing of the request was sent.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// transportError classifies an error of http.Transport.RoundTrip that is not retried.
func transportError(ctx context.Context, backend, endpoint string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	typ := wire.ErrTransportUnknown
	if errors.Is(err, errClosedBackend) {
		typ = wire.ErrBackendClosed
	} else if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) || isTimeout(err) {
		typ = wire.ErrBackendTimeout
	}
	if backend == "" {
		return &Error{Type: typ, Err: fmt.Errorf("adhoc destination %s: %w", endpoint, err)}
	}
	return &Error{Backend: backend, Type: typ, Err: fmt.Errorf("backend %q, endpoint %s: %w", backend, endpoint, err)}
}

// isTimeout reports a network timeout, such as http.Transport's "timeout awaiting response headers".
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// EndpointRecord receives the address of the endpoint that served a request; the transports of this package fill
// it in when the request's context carries one (see WithEndpointRecorder). It is written by the goroutine that
// calls RoundTrip, before RoundTrip returns.
type EndpointRecord struct {
	// Addr is "ip:port" of the endpoint last tried.
	Addr string
}

// RecorderKey is the context key under which the transports look for an *EndpointRecord. WithEndpointRecorder
// sets it; a caller with a context type of its own (the HTTP proxy's, which carries its per-request state without
// one context.WithValue layer per value) answers it from Value.
type RecorderKey struct{}

// WithEndpointRecorder returns a context that makes the transports record the endpoint they used into the returned
// EndpointRecord, so the proxy can log it.
func WithEndpointRecorder(ctx context.Context) (context.Context, *EndpointRecord) {
	rec := &EndpointRecord{}
	return context.WithValue(ctx, RecorderKey{}, rec), rec
}

// recorderFrom returns the EndpointRecord of ctx, or nil.
func recorderFrom(ctx context.Context) *EndpointRecord {
	rec, _ := ctx.Value(RecorderKey{}).(*EndpointRecord)
	return rec
}
