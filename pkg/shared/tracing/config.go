// Package tracing is the W3C trace context and OpenTelemetry export that kedge and winch share: the --tracing_*
// flags (one definition, registered by both binaries), a Tracer that exports spans over OTLP/gRPC, and Span, the
// one span a proxy makes per request, CONNECT tunnel or gRPC call. A span continues the caller's traceparent (or
// starts a trace), is sent on as the next hop's traceparent, and carries only the attributes of Attrs: never a
// header value, a token, a cookie or a query string.
//
// Tracing is off unless --tracing_otlp_endpoint is set. Off, New returns a nil *Tracer, and every method of a nil
// *Tracer and a nil *Span returns at once: the request path does no propagation or span work, and a client's own
// traceparent reaches the backend unchanged, as any other header.
package tracing

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/pflag"
)

// Config is the tracing part of a binary's static configuration.
type Config struct {
	// OTLPEndpoint (--tracing_otlp_endpoint) is the host:port of an OTLP/gRPC collector; empty turns tracing off.
	OTLPEndpoint string
	// OTLPInsecure (--tracing_otlp_insecure) sends spans in plaintext (a collector on loopback or a sidecar);
	// otherwise TLS, verified against OTLPCAFile or the system roots.
	OTLPInsecure bool
	// OTLPCAFile (--tracing_otlp_ca_file) is a PEM bundle that verifies the collector instead of the system roots.
	OTLPCAFile string
	// SamplingRatio (--tracing_sampling_ratio) is the share of new traces (requests without a traceparent) that are
	// sampled, 0 to 1. A request with a traceparent follows its sampled flag (parent-based sampling).
	SamplingRatio float64
	// ServiceName (--tracing_service_name) is the spans' service.name resource attribute.
	ServiceName string
}

// DefaultSamplingRatio is the default of --tracing_sampling_ratio: with an endpoint set, every new trace is
// sampled; an operator lowers it for busy edges.
const DefaultSamplingRatio = 1.0

// RegisterFlags declares the --tracing_* flags on fs; service is the default service name ("kedge", "winch").
func (c *Config) RegisterFlags(fs *pflag.FlagSet, service string) {
	fs.StringVar(&c.OTLPEndpoint, "tracing_otlp_endpoint", "", "host:port of an OpenTelemetry collector (OTLP over gRPC) to export spans to; empty = tracing off (a client's traceparent is still passed on unchanged)")
	fs.BoolVar(&c.OTLPInsecure, "tracing_otlp_insecure", false, "send spans to --tracing_otlp_endpoint in plaintext (a collector on loopback or a sidecar); default TLS")
	fs.StringVar(&c.OTLPCAFile, "tracing_otlp_ca_file", "", "PEM CA bundle that verifies the collector's certificate; empty = system roots")
	fs.Float64Var(&c.SamplingRatio, "tracing_sampling_ratio", DefaultSamplingRatio, "share (0 to 1) of new traces that are sampled; requests with a traceparent follow its sampled flag")
	fs.StringVar(&c.ServiceName, "tracing_service_name", service, "service.name of the exported spans")
}

// Enabled reports whether spans are exported.
func (c *Config) Enabled() bool { return c.OTLPEndpoint != "" }

// Validate reports every problem with the tracing flags.
func (c *Config) Validate() []error {
	var errs []error
	if c.SamplingRatio < 0 || c.SamplingRatio > 1 || c.SamplingRatio != c.SamplingRatio {
		errs = append(errs, fmt.Errorf("--tracing_sampling_ratio: %v is not between 0 and 1", c.SamplingRatio))
	}
	if c.OTLPEndpoint == "" {
		if c.OTLPInsecure || c.OTLPCAFile != "" {
			errs = append(errs, errors.New("--tracing_otlp_insecure and --tracing_otlp_ca_file need --tracing_otlp_endpoint"))
		}
		return errs
	}
	if host, port, err := net.SplitHostPort(c.OTLPEndpoint); err != nil || host == "" || !validPort(port) {
		errs = append(errs, fmt.Errorf("--tracing_otlp_endpoint: %q is not host:port", c.OTLPEndpoint))
	}
	if c.OTLPInsecure && c.OTLPCAFile != "" {
		errs = append(errs, errors.New("--tracing_otlp_insecure and --tracing_otlp_ca_file exclude each other"))
	}
	if c.ServiceName == "" {
		errs = append(errs, errors.New("--tracing_service_name must not be empty"))
	}
	return errs
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n <= 65535
}
