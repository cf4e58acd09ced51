package tracing

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"

	"github.com/kedge-proxy/kedge/pkg/shared/tlsconfig"
)

// Tracer makes the proxy's spans and exports them. A nil *Tracer is tracing turned off: its methods do nothing and
// return nil spans. It is safe for concurrent use.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext // W3C traceparent and tracestate
}

// exportTimeout bounds one export to the collector; a collector that does not answer costs dropped spans, never
// a blocked request (export runs on the batch processor's goroutine).
const exportTimeout = 10 * time.Second

// New builds the Tracer of cfg: spans exported in batches over OTLP/gRPC to cfg.OTLPEndpoint, sampled parent-based
// with cfg.SamplingRatio for new traces, version as service.version. It returns nil (tracing off) when no endpoint
// is set. It does not connect: a collector that is down costs spans, not startup. Call Shutdown to flush.
func New(cfg Config, version string) (*Tracer, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint), otlptracegrpc.WithTimeout(exportTimeout)}
	if cfg.OTLPInsecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	} else {
		tc := tlsconfig.ClientConfig{}
		if cfg.OTLPCAFile != "" {
			tc.RootCAFiles = []string{cfg.OTLPCAFile}
		}
		tlsCfg, err := tlsconfig.NewClient(tc)
		if err != nil {
			return nil, fmt.Errorf("tracing: --tracing_otlp_ca_file: %w", err)
		}
		opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
	}
	// The exporter's gRPC client connects in the background: New never waits for the collector.
	exp, err := otlptracegrpc.New(context.Background(), opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return NewWithProcessor(cfg, version, sdktrace.NewBatchSpanProcessor(exp)), nil
}

// NewWithProcessor builds a Tracer whose spans go to sp (tests pass a synchronous processor with an in-memory
// exporter). cfg's endpoint is not looked at.
func NewWithProcessor(cfg Config, version string, sp sdktrace.SpanProcessor) *Tracer {
	name := cfg.ServiceName
	if name == "" {
		name = "kedge"
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", name),
		attribute.String("service.version", version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(sp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SamplingRatio))),
	)
	return &Tracer{provider: tp, tracer: tp.Tracer("github.com/kedge-proxy/kedge")}
}

// Shutdown ends span export: spans still queued are sent (within ctx), then the exporter closes. Spans ended after
// Shutdown are dropped. A nil Tracer has nothing to do.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flushing spans: %w", err)
	}
	return nil
}
