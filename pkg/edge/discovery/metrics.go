package discovery

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// metrics are the k8s resolver's collectors, created once per Cluster.
type metrics struct {
	endpoints      *prometheus.GaugeVec   // backend
	resolverErrors *prometheus.CounterVec // backend

	mu    sync.Mutex     // guards users
	users map[string]int // backend -> running sources (a replaced backend's old and new source overlap)
}

// newMetrics registers the collectors on reg (if not nil), or reuses the equal ones registered before. A collector
// that conflicts with another one of its name still counts, unexported, and is logged.
func newMetrics(reg prometheus.Registerer, log logging.Logger) *metrics {
	m := &metrics{users: map[string]int{}}
	var errs [2]error
	m.endpoints, errs[0] = collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kedge_k8s_endpoints",
		Help: "Endpoints the k8s resolver currently gives a backend (from the Service's EndpointSlices).",
	}, []string{"backend"}))
	m.resolverErrors, errs[1] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_k8s_resolver_errors_total",
		Help: "Times the k8s resolver could not use a Service's EndpointSlices (unknown or ambiguous port); the last endpoints stay.",
	}, []string{"backend"}))
	warnUnexported(log, errs[:])
	return m
}

// warnUnexported logs the registration failures of collectors that still count but are not exported.
func warnUnexported(log logging.Logger, errs []error) {
	if err := errors.Join(errs...); err != nil {
		log.Warn("discovery: some Kubernetes discovery metrics are not exported: another collector on the registry uses their names",
			logging.FieldError, err)
	}
}

func (m *metrics) acquire(backend string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users[backend]++
}

// release forgets backend's series when its last source stops.
func (m *metrics) release(backend string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users[backend]--
	if m.users[backend] > 0 {
		return
	}
	delete(m.users, backend)
	m.endpoints.DeleteLabelValues(backend)
	m.resolverErrors.DeleteLabelValues(backend)
}

// discoveryMetrics are the Discoverer's collectors.
type discoveryMetrics struct {
	services   *prometheus.GaugeVec   // state: exposed, rejected
	rejections prometheus.Counter     // new or changed problems with a Service
	applies    *prometheus.CounterVec // result: success, failure
}

func newDiscoveryMetrics(reg prometheus.Registerer, log logging.Logger) *discoveryMetrics {
	m := &discoveryMetrics{}
	var errs [3]error
	m.services, errs[0] = collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kedge_discovery_services",
		Help: "Services labelled for exposure, by state: exposed (routes generated) or rejected (skipped, see the logs and the Service's events).",
	}, []string{"state"}))
	m.rejections, errs[1] = collector.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kedge_discovery_rejections_total",
		Help: "Times a Service labelled for exposure was found unusable (counted once per new or changed problem).",
	}))
	m.applies, errs[2] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_discovery_applies_total",
		Help: "Discovered configurations handed to kedge, by result (success, failure).",
	}, []string{"result"}))
	m.applies.WithLabelValues("success")
	m.applies.WithLabelValues("failure")
	warnUnexported(log, errs[:])
	return m
}
