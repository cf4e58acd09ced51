package backend

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// Pool serves the named backends of the current configuration. Lookups (HTTP, GRPC, Dial) are lock-free reads of
// an immutable map that Update replaces. The pool owns the goroutines of every backend's source and of backends
// being drained; Close stops and waits for them.
type Pool struct {
	log     logging.Logger
	dns     DNSResolver
	k8s     SourceFactory
	opts    Options
	metrics *metrics

	backends atomic.Pointer[map[key]*backend]
	wg       sync.WaitGroup // sources and drains
	closing  chan struct{}  // closed by Close: drains stop waiting

	mu     sync.Mutex // serialises Update and Close; guards closed
	closed bool
}

type key struct {
	proto Protocol
	name  string
}

// Status describes one backend for /debug/config.
type Status struct {
	Name     string   `json:"name"`
	Protocol Protocol `json:"protocol"`
	Spec     Spec     `json:"spec"`
	// Resolved is false until the backend's source answered once.
	Resolved bool `json:"resolved"`
	// Endpoints are the current endpoints ("ip:port"), sorted.
	Endpoints []string `json:"endpoints"`
	// Ejected are the endpoints skipped at this moment after refusing connections.
	Ejected []string `json:"ejected,omitempty"`
	// InFlight counts requests (HTTP) or RPCs (gRPC) in progress.
	InFlight int `json:"in_flight"`
}

// NewPool returns an empty pool; Update fills it. Its metrics are registered on d.Registerer once, here.
func NewPool(d Deps) *Pool {
	d = d.withDefaults()
	p := &Pool{
		log:     d.Log,
		dns:     d.DNS,
		k8s:     d.K8s,
		opts:    d.Options,
		metrics: newMetrics(d.Registerer, d.Log),
		closing: make(chan struct{}),
	}
	empty := map[key]*backend{}
	p.backends.Store(&empty)
	return p
}

// Update makes the pool serve exactly specs (already validated). New names are created; a backend whose Spec equals
// the running one is kept untouched (connections, requests in flight); a changed one is replaced by a new backend
// and the old one drained (closed once its requests in flight finished, at most Options.DrainTimeout later);
// removed ones are drained. If any backend cannot be built (an unreadable CA file, a k8s resolver without a
// source), Update changes nothing and returns an error naming it.
func (p *Pool) Update(specs []Spec) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("backend: pool is closed")
	}
	old := *p.backends.Load()
	next := make(map[key]*backend, len(specs))
	var created []*backend
	var errs []error
	for _, spec := range specs {
		k := key{spec.Protocol, spec.Name}
		if _, dup := next[k]; dup {
			errs = append(errs, fmt.Errorf("backend: %s backend %q is defined twice", spec.Protocol, spec.Name))
			continue
		}
		if b, ok := old[k]; ok && b.spec == spec {
			next[k] = b
			continue
		}
		b, err := p.build(spec)
		if err != nil {
			errs = append(errs, fmt.Errorf("backend: %s backend %q: %w", spec.Protocol, spec.Name, err))
			next[k] = nil
			continue
		}
		created = append(created, b)
		next[k] = b
	}
	if len(errs) > 0 {
		for _, b := range created {
			b.closeNow()
		}
		return errors.Join(errs...)
	}

	for _, b := range created {
		p.start(b)
	}
	p.backends.Store(&next)

	names := make(map[string]bool, len(next))
	for k := range next {
		names[k.name] = true
	}
	for _, b := range created {
		k := key{b.spec.Protocol, b.spec.Name}
		action := actionCreate
		if _, ok := old[k]; ok {
			action = actionUpdate
		}
		p.metrics.changes.WithLabelValues(b.spec.Name, b.spec.Protocol.String(), action).Inc()
		p.log.Info("backend "+action+"d", logging.FieldBackend, b.spec.Name, "protocol", b.spec.Protocol.String())
	}
	for k, b := range old {
		if next[k] == b {
			continue
		}
		b.retired.Store(true)
		if _, ok := next[k]; !ok {
			proto := k.proto.String()
			p.metrics.changes.WithLabelValues(k.name, proto, actionDelete).Inc()
			p.metrics.endpoints.DeleteLabelValues(k.name, proto)
			if !names[k.name] {
				p.metrics.forget(k.name)
			}
			p.log.Info("backend deleted", logging.FieldBackend, k.name, "protocol", proto)
		}
		p.wg.Go(func() { p.drain(b) })
	}
	return nil
}

// drain stops b's source, gives requests that looked b up just before the swap a moment to start, waits for its
// requests in flight (at most DrainTimeout in all, or until Close) and closes it.
func (p *Pool) drain(b *backend) {
	b.stop()
	<-b.stopped
	deadline := time.NewTimer(p.opts.DrainTimeout)
	defer deadline.Stop()
	grace := time.NewTimer(min(drainGrace, p.opts.DrainTimeout))
	defer grace.Stop()
	select {
	case <-grace.C:
	case <-p.closing:
	}
	select {
	case <-b.inflight().drained():
	case <-deadline.C:
		p.log.Warn("closing a replaced backend with requests in flight", logging.FieldBackend, b.spec.Name,
			"protocol", b.spec.Protocol.String(), "in_flight", b.inflight().count())
	case <-p.closing:
	}
	b.closeNow()
}

// HTTP returns the RoundTripper of the HTTP backend name. It sets the request's URL scheme and host to the picked
// endpoint and keeps req.Host; failures are *Error.
func (p *Pool) HTTP(name string) (http.RoundTripper, bool) {
	b := (*p.backends.Load())[key{HTTP, name}]
	if b == nil {
		return nil, false
	}
	return b.http, true
}

// GRPC returns the long-lived ClientConn of the gRPC backend name.
func (p *Pool) GRPC(name string) (*grpc.ClientConn, bool) {
	b := (*p.backends.Load())[key{GRPC, name}]
	if b == nil {
		return nil, false
	}
	return b.grpc.conn, true
}

// Dial connects to one endpoint of the HTTP backend name, for a CONNECT tunnel: round robin, ejection and retry
// on refusal as for requests, no TLS (the tunnel carries the client's). Failures are *Error; an unknown name is an
// *Error of type wire.ErrNoBackend.
func (p *Pool) Dial(ctx context.Context, name string) (net.Conn, error) {
	b := (*p.backends.Load())[key{HTTP, name}]
	if b == nil {
		return nil, &Error{Backend: name, Type: wire.ErrNoBackend, Err: fmt.Errorf("unknown backend %q", name)}
	}
	return b.http.dialEndpoint(ctx)
}

// Snapshot describes the current backends, ordered by protocol and name.
func (p *Pool) Snapshot() []Status {
	m := *p.backends.Load()
	out := make([]Status, 0, len(m))
	for _, b := range m {
		eps, resolved := b.eps.current()
		out = append(out, Status{
			Name:      b.spec.Name,
			Protocol:  b.spec.Protocol,
			Spec:      b.spec,
			Resolved:  resolved,
			Endpoints: slices.Clone(eps),
			Ejected:   b.eps.ejectedNow(),
			InFlight:  b.inflight().count(),
		})
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// Close stops every source, closes every backend (aborting requests in flight) and waits for the pool's
// goroutines. Update fails afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	old := *p.backends.Load()
	empty := map[key]*backend{}
	p.backends.Store(&empty)
	close(p.closing)
	p.mu.Unlock()

	for _, b := range old {
		b.retired.Store(true)
		b.closeNow()
	}
	p.wg.Wait()
}

// Values of the action label of kedge_backend_configuration_changes_total.
const (
	actionCreate = "create"
	actionUpdate = "update"
	actionDelete = "delete"
)

// metrics are the pool's collectors. They are created once per Pool, so Update never registers anything.
type metrics struct {
	endpoints      *prometheus.GaugeVec   // backend, protocol
	ejections      *prometheus.CounterVec // backend
	dialFailures   *prometheus.CounterVec // backend, endpoint
	resolverErrors *prometheus.CounterVec // backend, resolver
	changes        *prometheus.CounterVec // backend, protocol, action
}

func newMetrics(reg prometheus.Registerer, log logging.Logger) *metrics {
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kedge_backend_endpoints",
			Help: "Endpoints currently resolved for a backend.",
		}, []string{"backend", "protocol"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_backend_ejections_total",
			Help: "Times an endpoint of a backend was ejected after refusing a connection.",
		}, []string{"backend"}),
		dialFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_backend_dial_failures_total",
			Help: "Failed connection attempts to an endpoint of a backend.",
		}, []string{"backend", "endpoint"}),
		resolverErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_resolver_errors_total",
			Help: "Failed endpoint resolutions of a backend; the last good endpoints stay in use.",
		}, []string{"backend", "resolver"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_backend_configuration_changes_total",
			Help: "Backends created, updated and deleted by configuration changes.",
		}, []string{"backend", "protocol", "action"}),
	}
	// A second Pool on one registry reuses the first one's collectors. A conflicting collector of another shape:
	// keep ours unexported rather than fail the pool, and say so.
	var errs [5]error
	m.endpoints, errs[0] = collector.Register(reg, m.endpoints)
	m.ejections, errs[1] = collector.Register(reg, m.ejections)
	m.dialFailures, errs[2] = collector.Register(reg, m.dialFailures)
	m.resolverErrors, errs[3] = collector.Register(reg, m.resolverErrors)
	m.changes, errs[4] = collector.Register(reg, m.changes)
	if err := errors.Join(errs[:]...); err != nil {
		log.Warn("backend: some backend metrics are not exported: another collector on the registry uses their names",
			logging.FieldError, err)
	}
	return m
}

// forget deletes the label values of a backend name that no protocol uses any more.
func (m *metrics) forget(name string) {
	m.ejections.DeletePartialMatch(prometheus.Labels{"backend": name})
	m.dialFailures.DeletePartialMatch(prometheus.Labels{"backend": name})
	m.resolverErrors.DeletePartialMatch(prometheus.Labels{"backend": name})
}
