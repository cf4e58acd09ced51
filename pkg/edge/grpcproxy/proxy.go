// Package grpcproxy is kedge's transparent gRPC proxy. A grpc.Server built with ServerOptions knows no services: every
// call is routed by method, :authority and metadata to a named backend's long-lived grpc.ClientConn, or to an adhoc
// destination, and its messages are relayed both ways unchanged (pkg/shared/grpcrelay). Between routing and the
// backend, the caller is authenticated and checked against the route's requirement. Every call is logged once
// (with the audit fields) and counted.
package grpcproxy

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/grpcrelay"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

// Routes supplies the current gRPC routing table; it is read once per call, so a reload takes effect for new calls.
type Routes interface {
	// GRPCTable returns the current table; nil means "no routes and no adhoc rules".
	GRPCTable() *route.GRPCTable
}

// Backends supplies the long-lived connection of a named gRPC backend.
type Backends interface {
	// GRPC returns the backend's connection, or false when no backend has that name.
	GRPC(name string) (*grpc.ClientConn, bool)
}

// DefaultAdhocIdleTimeout is how long an unused adhoc connection is kept when Deps.AdhocIdleTimeout is zero.
const DefaultAdhocIdleTimeout = 5 * time.Minute

// Deps are the collaborators of a Proxy.
type Deps struct {
	// Log receives one line per call. Required.
	Log logging.Logger
	// Registerer receives the proxy's metrics; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Routes and Backends decide where calls go. Required.
	Routes   Routes
	Backends Backends
	// Adhoc dials adhoc destinations: kedge's one adhoc dialer, shared with the HTTP proxy and the CONNECT handler,
	// so a call is refused or allowed exactly as a request to the same destination would be (its timeout, address
	// bound and dial guard, with the exemption of an address a rule names exactly). nil means
	// backend.NewAdhocDialer(backend.Deps{}, nil): net.DefaultResolver, the default timeout and guard.
	Adhoc *backend.AdhocDialer
	// Admission routes calls and authenticates callers (proxy-authorization metadata, client certificate) against
	// the route's requirement before any backend connection is used, and counts kedge-made errors in
	// kedge_proxy_errors_total. nil means admission.Or(nil, Registerer): no token authentication, and routes with
	// requirements refuse callers who do not meet them.
	Admission *admission.Admitter
	// Forwarded sets the forwarding metadata (x-forwarded-*, x-real-ip, forwarded) backends receive, as on the HTTP
	// path. nil trusts no client's values.
	Forwarded *forwarded.Policy
	// AdhocIdleTimeout is how long an adhoc connection with no call in flight is kept; 0 means
	// DefaultAdhocIdleTimeout.
	AdhocIdleTimeout time.Duration
	// Tracer, if set, makes a span per call that continues the client's traceparent metadata and is the backend's
	// parent. nil (tracing off) leaves traceparent alone, as any other metadata.
	Tracer *tracing.Tracer
}

// Proxy is the transparent gRPC proxy. It is safe for concurrent use; Close releases its adhoc connections.
type Proxy struct {
	log      logging.Logger
	routes   Routes
	backends Backends
	admit    *admission.Admitter
	fwd      *forwarded.Policy
	adhoc    *adhocPool
	m        metrics
	tracer   *tracing.Tracer
}

// New builds a Proxy from d.
func New(d Deps) *Proxy {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	dialer := d.Adhoc
	if dialer == nil {
		dialer = backend.NewAdhocDialer(backend.Deps{}, nil)
	}
	idle := d.AdhocIdleTimeout
	if idle <= 0 {
		idle = DefaultAdhocIdleTimeout
	}
	p := &Proxy{
		log:      d.Log,
		routes:   d.Routes,
		backends: d.Backends,
		admit:    admission.Or(d.Admission, d.Registerer),
		fwd:      d.Forwarded,
		adhoc:    newAdhocPool(dialer, idle, defaultMaxAdhocConns),
		m:        newMetrics(d.Log, d.Registerer),
		tracer:   d.Tracer,
	}
	return p
}

// ServerOptions returns what a grpc.Server needs to proxy every call: an UnknownServiceHandler that routes,
// authorizes and relays, the relay's codec, and a stream interceptor that assigns the request ID, logs and counts. Add
// them before any other interceptor (grpc.ChainStreamInterceptor runs interceptors in the order they are given), so
// calls such an interceptor rejects are logged and counted too. The caller adds TLS credentials and keepalive
// options.
func (p *Proxy) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnknownServiceHandler(p.handle),
		grpcrelay.ServerOption(),
		grpc.ChainStreamInterceptor(p.intercept),
	}
}

// Close closes every cached adhoc connection, ending calls still using them; later adhoc calls fail with
// Unavailable. Pool backends' connections belong to Backends and are left alone.
func (p *Proxy) Close() {
	p.adhoc.close()
}

// metrics are the proxy's Prometheus collectors.
type metrics struct {
	requests *prometheus.CounterVec   // kedge_grpc_requests_total{backend,code}
	duration *prometheus.HistogramVec // kedge_grpc_request_duration_seconds{backend}
}

func newMetrics(log logging.Logger, reg prometheus.Registerer) metrics {
	// Two proxies on one registry share their metrics. A collector that cannot be registered still counts, so the
	// proxy works; the problem is logged.
	var errs [2]error
	var m metrics
	m.requests, errs[0] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_grpc_requests_total",
		Help: "gRPC calls handled by the proxy, by backend and status code.",
	}, []string{"backend", "code"}))
	m.duration, errs[1] = collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kedge_grpc_request_duration_seconds",
		Help:    "Duration of gRPC calls handled by the proxy, including streams, by backend.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"backend"}))
	if err := errors.Join(errs[:]...); err != nil {
		log.Warn("grpcproxy: metric not registered", logging.FieldError, err)
	}
	return m
}
