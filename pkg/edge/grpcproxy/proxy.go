// Package grpcproxy is kedge's transparent gRPC proxy. A grpc.Server built with ServerOptions knows no services: every
// call is routed by method, :authority and metadata to a named backend's long-lived grpc.ClientConn, or to an adhoc
// destination, and its frames are pumped both ways unchanged by github.com/mwitkow/grpc-proxy. Between routing and
// the backend, the caller is authenticated and checked against the route's requirement. Every call is logged once
// (with the audit fields) and counted.
package grpcproxy

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/mwitkow/grpc-proxy/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
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

// Resolver resolves adhoc host names; *net.Resolver implements it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
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
	// AdhocGuard vets every IP an adhoc connection is about to dial (after Unmap); nil means
	// backend.DefaultDialGuard(), which refuses loopback, link-local and unspecified addresses.
	AdhocGuard backend.DialGuard
	// DNS resolves adhoc names at dial time; nil means net.DefaultResolver.
	DNS Resolver
	// ProxyErrors, when set, is the kedge_proxy_errors_total{backend_name,type} counter to count kedge-made errors
	// in. The HTTP proxy registers a counter with that name, so the root should create it once and pass it to both
	// proxies; registering a second one with different help text would fail. When nil, the proxy creates the counter
	// and registers it with Registerer, reusing an identical one that is already registered.
	ProxyErrors *prometheus.CounterVec
	// Gate authenticates callers (proxy-authorization metadata, client certificate) and checks route requirements,
	// after routing and before any backend connection is used. nil means a Gate without token authentication
	// (registered with Registerer): routes with requirements still refuse callers who do not meet them.
	Gate *authz.Gate
	// AdhocIdleTimeout is how long an adhoc connection with no call in flight is kept; 0 means
	// DefaultAdhocIdleTimeout.
	AdhocIdleTimeout time.Duration
}

// Proxy is the transparent gRPC proxy. It is safe for concurrent use; Close releases its adhoc connections.
type Proxy struct {
	log         logging.Logger
	routes      Routes
	backends    Backends
	gate        *authz.Gate
	adhoc       *adhocPool
	m           metrics
	transparent grpc.StreamHandler
}

// New builds a Proxy from d.
func New(d Deps) *Proxy {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	guard := d.AdhocGuard
	if guard == nil {
		guard = backend.DefaultDialGuard()
	}
	var dns Resolver = net.DefaultResolver
	if d.DNS != nil {
		dns = d.DNS
	}
	idle := d.AdhocIdleTimeout
	if idle <= 0 {
		idle = DefaultAdhocIdleTimeout
	}
	p := &Proxy{
		log:      d.Log,
		routes:   d.Routes,
		backends: d.Backends,
		gate:     d.Gate,
		adhoc:    newAdhocPool(guard, dns, idle),
		m:        newMetrics(d.Log, d.Registerer, d.ProxyErrors),
	}
	if p.gate == nil {
		var err error
		if p.gate, err = authz.NewGate(nil, d.Registerer); err != nil {
			d.Log.Warn("grpcproxy: authorization metrics not registered", logging.FieldError, err)
			p.gate, _ = authz.NewGate(nil, nil)
		}
	}
	p.transparent = proxy.TransparentHandler(p.direct)
	return p
}

// ServerOptions returns what a grpc.Server needs to proxy every call: an UnknownServiceHandler that routes,
// authorizes (Deps.Gate) and proxies, and a stream interceptor that assigns the request ID, logs and counts. Add
// them before any other interceptor (grpc.ChainStreamInterceptor runs interceptors in the order they are given), so
// calls such an interceptor rejects are logged and counted too. The caller adds TLS credentials and keepalive
// options.
func (p *Proxy) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.UnknownServiceHandler(p.handle),
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
	errors   *prometheus.CounterVec   // kedge_proxy_errors_total{backend_name,type}
}

func newMetrics(log logging.Logger, reg prometheus.Registerer, proxyErrors *prometheus.CounterVec) metrics {
	// Two proxies on one registry share their metrics. A collector that cannot be registered still counts, so the
	// proxy works; the problem is logged.
	var errs [3]error
	m := metrics{errors: proxyErrors}
	m.requests, errs[0] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_grpc_requests_total",
		Help: "gRPC calls handled by the proxy, by backend and status code.",
	}, []string{"backend", "code"}))
	m.duration, errs[1] = collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kedge_grpc_request_duration_seconds",
		Help:    "Duration of gRPC calls handled by the proxy, including streams, by backend.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"backend"}))
	if m.errors == nil {
		m.errors, errs[2] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_proxy_errors_total",
			Help: "Requests that ended with an error made by kedge itself, by backend and error type.",
		}, []string{"backend_name", "type"}))
	}
	if err := errors.Join(errs[:]...); err != nil {
		log.Warn("grpcproxy: metric not registered", logging.FieldError, err)
	}
	return m
}
