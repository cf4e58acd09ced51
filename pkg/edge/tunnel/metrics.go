package tunnel

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// metrics are the handler's collectors. Labels are bounded: direction is upstream or downstream, result is
// "established", "client-closed" or an X-Kedge-Error-Type, backend_name a configured backend, "_adhoc" or "".
type metrics struct {
	open      prometheus.Gauge         // kedge_tunnels_open
	tunnels   *prometheus.CounterVec   // kedge_tunnels_total{result}
	bytes     *prometheus.CounterVec   // kedge_tunnel_bytes_total{direction}
	bytesUp   prometheus.Counter       // direction="upstream": client to backend
	bytesDown prometheus.Counter       // direction="downstream": backend to client
	duration  *prometheus.HistogramVec // kedge_tunnel_duration_seconds{route}
}

func newMetrics(reg prometheus.Registerer, log logging.Logger) *metrics {
	// Two handlers on one registry share their metrics; another conflict is logged and the collector kept
	// unexported.
	var errs [4]error
	m := &metrics{}
	m.open, errs[0] = collector.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kedge_tunnels_open",
		Help: "CONNECT tunnels currently established.",
	}))
	m.tunnels, errs[1] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_tunnels_total",
		Help: "CONNECT requests by result: established, client-closed, or the X-Kedge-Error-Type they were refused with.",
	}, []string{"result"}))
	m.bytes, errs[2] = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_tunnel_bytes_total",
		Help: "Bytes carried by CONNECT tunnels, by direction: upstream (client to backend) or downstream.",
	}, []string{"direction"}))
	m.duration, errs[3] = collector.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kedge_tunnel_duration_seconds",
		Help:    "Lifetime of established CONNECT tunnels, by route (backend name or _adhoc).",
		Buckets: []float64{.1, 1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600},
	}, []string{"route"}))
	if err := errors.Join(errs[:]...); err != nil {
		log.Error("tunnel: registering metrics", logging.FieldError, err)
	}
	m.bytesUp = m.bytes.WithLabelValues("upstream")
	m.bytesDown = m.bytes.WithLabelValues("downstream")
	return m
}

// finish counts a tunnel and writes its one log line (the audit line: identity, route, decision, reason).
func (h *Handler) finish(t *tunnel) {
	d := time.Since(t.start)
	switch {
	case t.errType != "":
		h.m.tunnels.WithLabelValues(string(t.errType)).Inc()
	case t.status == wire.StatusClientClosed:
		h.m.tunnels.WithLabelValues("client-closed").Inc()
	}
	if t.status == 200 {
		h.m.duration.WithLabelValues(t.label).Observe(d.Seconds())
	}
	ln := logging.Begin(h.log, logging.LevelInfo, "connect tunnel").
		Str(logging.FieldRequestID, t.reqID).
		Str(logging.FieldMethod, "CONNECT").
		Str("proto", t.proto).
		Str(logging.FieldHost, t.target).
		Str(logging.FieldRoute, t.label).
		Str(logging.FieldBackend, t.dest).
		Str(logging.FieldEndpoint, t.endpoint).
		Int(logging.FieldStatus, int64(t.status)).
		Dur(logging.FieldDuration, d).
		Int("bytes_up", t.up).
		Int("bytes_down", t.down).
		Str(logging.FieldIdentity, t.identity)
	if t.decision != "" {
		ln.Str("decision", t.decision).Str("reason", t.reason)
	}
	ln.StrIf("closed", t.closed)
	if t.errMsg != "" {
		ln.Str(logging.FieldErrorType, string(t.errType)).Str(logging.FieldError, t.errMsg)
	}
	ln.Write()
	if t.span != nil {
		t.span.End(tracing.Attrs{Method: "CONNECT", Route: t.label, Backend: t.dest, Status: t.status,
			ErrorType: string(t.errType), Peer: t.peer, RequestID: t.reqID})
	}
}
