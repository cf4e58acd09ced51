// Package tracertest is test scaffolding for tracing: a Tracer whose spans land in memory. It is a package of its own
// because testutil is imported by tests of packages that tracing itself imports (tlsconfig, logging).
package tracertest

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

// New returns a tracing.Tracer that samples every new trace and hands each ended span at once to the
// in-memory exporter it also returns; it is shut down when the test ends.
func New(t testing.TB, service string) (*tracing.Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.NewWithProcessor(tracing.Config{ServiceName: service, SamplingRatio: 1}, "test", sdktrace.NewSimpleSpanProcessor(exp))
	t.Cleanup(func() { _ = tr.Shutdown(t.Context()) })
	return tr, exp
}

// Attr returns the value of a span's attribute key as text, or "" when the span has none.
func Attr(span tracetest.SpanStub, key string) string {
	for _, kv := range span.Attributes {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}
