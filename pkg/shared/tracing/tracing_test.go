package tracing_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

func newTracer(t *testing.T, ratio float64) (*tracing.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.NewWithProcessor(tracing.Config{ServiceName: "test", SamplingRatio: ratio}, "v0", sdktrace.NewSimpleSpanProcessor(exp))
	t.Cleanup(func() { _ = tr.Shutdown(t.Context()) })
	return tr, exp
}

// traceparent splits a traceparent value into trace ID, parent span ID and flags.
func traceparent(t *testing.T, v string) (trace, span, flags string) {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("traceparent %q is malformed", v)
	}
	return parts[1], parts[2], parts[3]
}

func TestContinuesTraceparent(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, 1)
	in := http.Header{"Traceparent": {"00-" + parentTrace + "-" + parentSpan + "-01"}, "Tracestate": {"vendor=x"}}
	sp := tr.StartHTTP(in, "GET")
	out := http.Header{"Traceparent": {"00-" + parentTrace + "-" + parentSpan + "-01"}}
	sp.InjectHTTP(out)
	sp.End(tracing.Attrs{Method: "GET", Status: 200, Route: "web"})

	traceID, spanID, flags := traceparent(t, out.Get("Traceparent"))
	if traceID != parentTrace || flags != "01" || spanID == parentSpan {
		t.Errorf("outgoing traceparent %q: want trace %s, a new span id, sampled", out.Get("Traceparent"), parentTrace)
	}
	if got := out.Get("Tracestate"); got != "vendor=x" {
		t.Errorf("tracestate %q, want vendor=x", got)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanContext.SpanID().String() != spanID || s.Parent.SpanID().String() != parentSpan || !s.Parent.IsRemote() {
		t.Errorf("span %s parent %s; want span %s (the one sent on) with parent %s", s.SpanContext.SpanID(), s.Parent.SpanID(), spanID, parentSpan)
	}
}

func TestNewTraceWithoutTraceparent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ratio float64
		flags string
		spans int
	}{{1, "01", 1}, {0, "00", 0}} {
		tr, exp := newTracer(t, tc.ratio)
		md := metadata.MD{"traceparent": {"garbage"}, "tracestate": {"stale=1"}}
		sp := tr.StartGRPC(metadata.MD{}, "/pkg.Svc/M")
		sp.InjectGRPC(md)
		sp.End(tracing.Attrs{RPC: true, Method: "/pkg.Svc/M", Code: 0})
		traceID, _, flags := traceparent(t, md["traceparent"][0])
		if traceID == parentTrace || traceID == strings.Repeat("0", 32) || flags != tc.flags {
			t.Errorf("ratio %v: traceparent %q, want a new trace with flags %s", tc.ratio, md["traceparent"][0], tc.flags)
		}
		if len(md["tracestate"]) != 0 {
			t.Errorf("ratio %v: a client's stale tracestate went on: %q", tc.ratio, md["tracestate"])
		}
		if n := len(exp.GetSpans()); n != tc.spans {
			t.Errorf("ratio %v: %d spans exported, want %d", tc.ratio, n, tc.spans)
		}
	}
}

func TestUnsampledParentStaysUnsampled(t *testing.T) {
	t.Parallel()
	tr, exp := newTracer(t, 1)
	sp := tr.StartHTTP(http.Header{"Traceparent": {"00-" + parentTrace + "-" + parentSpan + "-00"}}, "GET")
	out := http.Header{}
	sp.InjectHTTP(out)
	sp.End(tracing.Attrs{Method: "GET"})
	if traceID, _, flags := traceparent(t, out.Get("Traceparent")); traceID != parentTrace || flags != "00" {
		t.Errorf("traceparent %q: want trace %s unsampled", out.Get("Traceparent"), parentTrace)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans exported for an unsampled trace", n)
	}
}

func TestOffIsNoop(t *testing.T) { // not parallel: AllocsPerRun
	var tr *tracing.Tracer // what New returns without an endpoint
	h := http.Header{"Traceparent": {"00-" + parentTrace + "-" + parentSpan + "-01"}}
	sp := tr.StartHTTP(h, "GET")
	sp.InjectHTTP(h)
	sp.End(tracing.Attrs{})
	if sp != nil || h.Get("Traceparent") != "00-"+parentTrace+"-"+parentSpan+"-01" {
		t.Errorf("off: span %v, traceparent %q: the client's must pass unchanged", sp, h.Get("Traceparent"))
	}
	if got, err := tracing.New(tracing.Config{SamplingRatio: 1}, "v"); got != nil || err != nil {
		t.Errorf("New without endpoint = %v, %v; want nil, nil", got, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		s := tr.StartHTTP(h, "GET")
		s.InjectHTTP(h)
		s.End(tracing.Attrs{Method: "GET", Status: 200})
	})
	if allocs != 0 {
		t.Errorf("off: %v allocations per request, want 0", allocs)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, ""},
		{[]string{"--tracing_otlp_endpoint=127.0.0.1:4317", "--tracing_otlp_insecure"}, ""},
		{[]string{"--tracing_otlp_endpoint=collector:4317", "--tracing_sampling_ratio=0.25"}, ""},
		{[]string{"--tracing_otlp_endpoint=collector"}, "not host:port"},
		{[]string{"--tracing_otlp_endpoint=collector:4317", "--tracing_sampling_ratio=1.5"}, "between 0 and 1"},
		{[]string{"--tracing_otlp_insecure"}, "need --tracing_otlp_endpoint"},
		{[]string{"--tracing_otlp_endpoint=c:1", "--tracing_otlp_insecure", "--tracing_otlp_ca_file=x"}, "exclude each other"},
	}
	for _, tc := range tests {
		var c tracing.Config
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		c.RegisterFlags(fs, "kedge")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		errs := c.Validate()
		switch {
		case tc.wantErr == "" && len(errs) > 0:
			t.Errorf("%q: %v", tc.args, errs)
		case tc.wantErr != "" && (len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.wantErr)):
			t.Errorf("%q: errors %v, want %q", tc.args, errs, tc.wantErr)
		}
		if c.ServiceName != "kedge" || c.SamplingRatio == 0 && tc.wantErr == "" {
			t.Errorf("%q: service %q ratio %v", tc.args, c.ServiceName, c.SamplingRatio)
		}
	}
}
