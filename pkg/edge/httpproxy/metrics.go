package httpproxy

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

// metrics are the handler's Prometheus collectors. The backend label is the backend name, "_adhoc" for adhoc
// destinations, or "" for requests that were not routed.
type metrics struct {
	requests *prometheus.CounterVec   // kedge_http_requests_total{backend,code}
	duration *prometheus.HistogramVec // kedge_http_request_duration_seconds{backend}
	// codes holds the decimal status codes 100-599, so counting a request does not format one.
	codes [500]string
	// counters and observers cache the children of requests (by seriesKey) and duration (by backend label):
	// WithLabelValues hashes its labels and takes the vector's lock on every call. Both grow with the backends
	// and status codes seen, as the vectors themselves do.
	counters  sync.Map // seriesKey -> prometheus.Counter
	observers sync.Map // string -> prometheus.Observer
}

type seriesKey struct {
	label  string
	status int
}

// count records one finished request of the backend label with status, taking d.
func (m *metrics) count(label string, status int, d time.Duration) {
	k := seriesKey{label, status}
	c, ok := m.counters.Load(k)
	if !ok {
		c, _ = m.counters.LoadOrStore(k, m.requests.WithLabelValues(label, m.code(status)))
	}
	c.(prometheus.Counter).Inc()
	o, ok := m.observers.Load(label)
	if !ok {
		o, _ = m.observers.LoadOrStore(label, m.duration.WithLabelValues(label))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

func newMetrics(reg prometheus.Registerer, log logging.Logger) *metrics {
	// Two handlers on one registry share their metrics. Another registration problem is logged: the handler then
	// counts into an unexported collector.
	var errs [2]error
	m := &metrics{}
	m.requests, errs[0] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_http_requests_total",
		Help: "HTTP requests handled by the proxy on the HTTPS port, by backend and status code.",
	}, []string{"backend", "code"}))
	m.duration, errs[1] = collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kedge_http_request_duration_seconds",
		Help:    "Time from receiving an HTTP request to the end of its response, by backend.",
		Buckets: prometheus.DefBuckets,
	}, []string{"backend"}))
	if err := errors.Join(errs[:]...); err != nil {
		log.Error("httpproxy: registering metrics", logging.FieldError, err)
	}
	for i := range m.codes {
		m.codes[i] = strconv.Itoa(i + 100)
	}
	return m
}

func (m *metrics) code(status int) string {
	if status >= 100 && status < 600 {
		return m.codes[status-100]
	}
	return strconv.Itoa(status)
}

// finish logs and counts a request handled by this handler. It runs deferred: a panic (http.ErrAbortHandler, with
// which ReverseProxy aborts a response whose body copy failed) is recorded and then continues, so net/http still
// aborts the connection and the client sees a truncated response as an error.
func (h *Handler) finish(c *call, r *http.Request) {
	p := recover()
	status := c.w.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	if p != nil {
		c.errMsg = "response aborted"
		if err, ok := p.(error); ok && !errors.Is(err, http.ErrAbortHandler) {
			c.errMsg = "panic: " + err.Error()
		}
	}
	d := time.Since(c.start)
	h.metrics.count(c.label, status, d)
	h.logRequest(c, r, status, d)
	if c.span != nil {
		c.span.End(tracing.Attrs{Method: r.Method, Route: c.label, Backend: c.target, Status: status,
			ErrorType: string(c.errType), Peer: peerString(r.RemoteAddr), RequestID: c.reqID})
	}
	if p != nil {
		panic(p)
	}
}

// peerString is the client's IP address for a span, "" when unknown.
func peerString(remote string) string {
	if a := peerAddr(remote); a.IsValid() {
		return a.String()
	}
	return ""
}

// Audit fields of the log line, besides logging.FieldIdentity and logging.FieldRoute.
const (
	fieldDecision = "decision" // allowed, unauthenticated, forbidden
	fieldReason   = "reason"   // why: "permission deploy", "token expired", ...
)

func (h *Handler) logRequest(c *call, r *http.Request, status int, d time.Duration) {
	endpoint, backendName := c.endpoint.Addr, c.label
	if c.label == admission.AdhocLabel {
		backendName = c.target
	}
	host, path := c.host, c.path
	if host == "" {
		host = r.Host
	}
	if path == "" {
		path = r.URL.Path
	}
	ln := logging.Begin(h.log, logging.LevelInfo, "http request").
		Str(logging.FieldRequestID, c.reqID).
		Str(logging.FieldMethod, r.Method).
		Str(logging.FieldHost, host).
		Str(logging.FieldPath, path).
		Str(logging.FieldRoute, c.label).
		Str(logging.FieldBackend, backendName).
		Str(logging.FieldEndpoint, endpoint).
		Int(logging.FieldStatus, int64(status)).
		Dur(logging.FieldDuration, d).
		Int(logging.FieldBytes, c.w.bytes).
		StrIf(logging.FieldIdentity, c.identity)
	if c.decision != "" {
		ln.Str(fieldDecision, c.decision).Str(fieldReason, c.reason)
	}
	if c.errMsg != "" {
		ln.Str(logging.FieldErrorType, string(c.errType)).Str(logging.FieldError, c.errMsg)
	}
	ln.Write()
}
