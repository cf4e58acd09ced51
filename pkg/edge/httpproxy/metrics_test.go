package httpproxy

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", nil)
	e := newEnv(t, envConfig{
		routes:   []route.HTTPRoute{{Backend: "b", Host: "b.example.com"}, {Backend: "ghost", Host: "ghost.example.com"}},
		backends: []*testBackend{b},
	})
	for range 3 {
		readSeen(t, e.do(t, http.MethodGet, "b.example.com", "/", nil, nil))
	}
	expectKedgeError(t, e.do(t, http.MethodGet, "nothing.example.com", "/", nil, nil), 502, "no-route")
	expectKedgeError(t, e.do(t, http.MethodGet, "ghost.example.com", "/", nil, nil), 502, "no-backend")
	expectKedgeError(t, e.do(t, http.MethodGet, "b.example.com", "/%2F", nil, nil), 400, "bad-request")

	// The handler counts after the response is written; wait for the last one.
	testutil.Eventually(t, "6 requests counted", func() bool {
		return testutil.MetricValue(t, e.reg, "kedge_http_requests_total", nil) == 6
	})
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kedge_http_requests_total", map[string]string{"backend": "b", "code": "200"}, 3},
		{"kedge_http_requests_total", map[string]string{"backend": "", "code": "502"}, 1},
		{"kedge_http_requests_total", map[string]string{"backend": "ghost", "code": "502"}, 1},
		{"kedge_http_requests_total", map[string]string{"backend": "", "code": "400"}, 1},
		{"kedge_http_request_duration_seconds", map[string]string{"backend": "b"}, 3},
		{"kedge_proxy_errors_total", map[string]string{"backend": "", "type": "no-route"}, 1},
		{"kedge_proxy_errors_total", map[string]string{"backend": "ghost", "type": "no-backend"}, 1},
		{"kedge_proxy_errors_total", map[string]string{"backend": "", "type": "bad-request"}, 1},
		{"kedge_proxy_errors_total", nil, 3},
	}
	for _, tc := range tests {
		if got := testutil.MetricValue(t, e.reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestMetricsShared(t *testing.T) {
	t.Parallel()
	table, _ := route.NewHTTPTable(nil, nil)
	// A second handler on the same registry reuses the first one's collectors instead of panicking.
	reg2 := prometheus.NewRegistry()
	h2 := New(Deps{Registerer: reg2, Routes: staticRoutes{table}, Backends: backendMap{}})
	h3 := New(Deps{Registerer: reg2, Routes: staticRoutes{table}, Backends: backendMap{}})
	if h2.metrics.requests != h3.metrics.requests ||
		h2.metrics.duration != h3.metrics.duration {
		t.Error("collectors not shared")
	}
}

// BenchmarkMetricsCount is the per-request metrics step: the cached children (count) against looking the labels
// up on every request (WithLabelValues).
func BenchmarkMetricsCount(b *testing.B) {
	m := newMetrics(prometheus.NewRegistry(), logging.Discard())
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.count("backend-a", http.StatusOK, time.Millisecond)
		}
	})
	b.Run("WithLabelValues", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.requests.WithLabelValues("backend-a", m.code(http.StatusOK)).Inc()
			m.duration.WithLabelValues("backend-a").Observe(time.Millisecond.Seconds())
		}
	})
}
