package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

// DefaultGRPCStreamWindow is --server_grpc_stream_window_bytes' default: about what the HTTPS port lets a gRPC call
// hold unread (net/http's 1 MiB stream buffer, plus what grpcrelay.PaceBody lets gRPC queue), and 10 MB/s for one
// stream at a 100 ms round trip.
const DefaultGRPCStreamWindow = 1 << 20

// Config is kedge's static configuration: everything set by flags at startup. Dynamic routing lives in the
// documents named by Source and reloads live.
type Config struct {
	BindAddress  string
	HTTPPort     int // plain debug listener
	HTTPSPort    int // HTTPS: HTTP/1.1, h2, gRPC and CONNECT
	GRPCPort     int // gRPC over TLS
	MetricsPath  string
	ReadTimeout  time.Duration // whole-request read limit on the HTTPS port; 0 = none (the default: it cuts uploads)
	WriteTimeout time.Duration // whole-response write limit on the HTTPS port; 0 = none (the default: it cuts streams)
	DrainTimeout time.Duration
	// ShutdownDelay is how long kedge keeps accepting and serving after SIGTERM, with /readyz failing, so that load
	// balancers stop sending it new connections before its listeners close; 0 disables it.
	ShutdownDelay time.Duration
	// MaxConnections caps the client connections open at once on the HTTPS and gRPC ports together; 0 = no cap.
	MaxConnections int
	// MaxConnectionsPerIP caps them per client IPv4 address or IPv6 /64; 0 = no cap (the default: behind an L4 load
	// balancer without client addresses every client shares the balancer's address).
	MaxConnectionsPerIP int
	// GRPCStreamWindow is the flow-control window of each stream on the gRPC port: what kedge holds of a call whose
	// backend reads slower than its client sends. 0 = grpc-go's dynamic window (up to 16 MiB per stream).
	GRPCStreamWindow int

	TLSCertFile        string
	TLSKeyFile         string
	TLSClientCAFiles   []string
	TLSClientCertReq   bool
	FlushInterval      time.Duration
	ProxyBufferSize    int
	EjectionBackoff    time.Duration
	ResolveInterval    time.Duration
	BackendDialTimeout time.Duration
	// BackendMaxIdleConns is the keep-alive pool size per endpoint of an HTTP backend.
	BackendMaxIdleConns int
	// BackendResponseHeaderTimeout bounds the wait for a backend's response headers; 0 = none.
	BackendResponseHeaderTimeout time.Duration

	// DebugRemoteAccess serves pprof and /debug/config on the debug port to every peer, not only to loopback ones.
	DebugRemoteAccess bool

	// Auth is the proxy authentication (OIDC or the static token); see flags_auth.go.
	Auth AuthConfig
	// K8s is the Kubernetes API client and discovery configuration; see k8s.go.
	K8s K8sConfig
	// Identity is the signed identity for backends and the rate-limit table size; see flags_identity.go.
	Identity IdentityConfig
	// Tracing is the W3C trace context and OTLP span export (--tracing_*, shared with winch); off by default.
	Tracing tracing.Config
	// TunnelIdleTimeout closes CONNECT tunnels idle this long in both directions.
	TunnelIdleTimeout time.Duration
	// TrustedProxies are the peers (load balancers, ingress proxies) whose X-Forwarded-* headers kedge keeps and
	// appends to; everyone else's are replaced.
	TrustedProxies []net.IPNet

	Documents Source

	LogLevel  string
	LogFormat string
	// LogFlushInterval batches log lines (see logging.Options.FlushInterval).
	LogFlushInterval time.Duration

	// CheckConfig makes the binary validate the documents and exit.
	CheckConfig bool

	// ignored holds flags of the original that are accepted for compatibility but have no effect.
	ignored ignoredFlags
}

type ignoredFlags struct {
	tracing          bool
	trialDialTimeout time.Duration
	bufferCount      int
	logResolution    bool
}

// RegisterFlags declares every flag on fs. Names are the original kedge's (snake_case); see NormalizeFlagName for the
// kebab-case spellings and deprecated aliases that are accepted too.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.BindAddress, "server_bind_address", "0.0.0.0", "IP address all listeners bind to")
	fs.IntVar(&c.HTTPPort, "server_http_port", 8080, "plain-HTTP debug port: /_healthz, /readyz, /metrics, /debug/pprof/, /_version, /debug/config; never proxies. 0 disables it")
	fs.IntVar(&c.HTTPSPort, "server_http_tls_port", 8443, "HTTPS proxy port: HTTP/1.1 and HTTP/2 (ALPN); gRPC requests on it go to the gRPC proxy. 0 disables it")
	fs.IntVar(&c.GRPCPort, "server_grpc_tls_port", 8444, "gRPC-over-TLS proxy port. 0 disables it")
	fs.StringVar(&c.MetricsPath, "server_metrics_path", "/metrics", "path of the Prometheus endpoint on the debug port")
	fs.BoolVar(&c.DebugRemoteAccess, "server_debug_remote_access", false, "serve /debug/pprof/ and /debug/config on the debug port to any peer; by default only loopback peers (kubectl port-forward) get them. /_healthz, /readyz, /_version and the metrics path answer everyone")
	fs.DurationVar(&c.ReadTimeout, "server_http_max_read_timeout", 0, "limit on reading a whole request (headers and body) on the HTTPS port; 0 = none. Headers always have 10s; slow bodies are the backend's concern")
	fs.DurationVar(&c.WriteTimeout, "server_http_max_write_timeout", 0, "limit on writing a whole response on the HTTPS port; 0 = none. The original's 10s default cut long downloads and streams")
	fs.DurationVar(&c.ShutdownDelay, "server_shutdown_delay", 5*time.Second, "on SIGTERM: how long /readyz answers 503 while kedge keeps accepting and serving, so that load balancers stop sending new connections before the listeners close; a second SIGTERM ends it early. 0 disables it")
	fs.IntVar(&c.MaxConnections, "server_max_connections", 10000, "client connections open at once on the HTTPS and gRPC ports together; beyond it new connections are closed as soon as they are accepted (kedge_connections_rejected_total) and established ones keep working. 0 = no limit")
	fs.IntVar(&c.GRPCStreamWindow, "server_grpc_stream_window_bytes", DefaultGRPCStreamWindow, "flow-control window of each gRPC stream on the gRPC port, at least 65535: what kedge holds of a call whose backend reads slower than its client sends (up to 100 calls per connection), and the most one call sends per round trip. 0 = grpc-go's dynamic window, which grows with the measured bandwidth-delay product up to 16 MiB per stream")
	fs.IntVar(&c.MaxConnectionsPerIP, "server_max_connections_per_ip", 0, "client connections open at once from one IPv4 address or IPv6 /64, on the HTTPS and gRPC ports together; 0 = no limit. Leave it at 0 behind a load balancer that does not pass client addresses: every client then shares its address")
	fs.DurationVar(&c.DrainTimeout, "server_shutdown_drain_timeout", 20*time.Second, "after the shutdown delay: how long in-flight requests, streams and tunnels may take to finish before they are cut")

	fs.StringVar(&c.TLSCertFile, "server_tls_cert_file", "", "PEM server certificate for the HTTPS and gRPC ports (required when either is enabled); reloaded when it changes")
	fs.StringVar(&c.TLSKeyFile, "server_tls_key_file", "", "PEM private key of --server_tls_cert_file")
	fs.StringSliceVar(&c.TLSClientCAFiles, "server_tls_client_ca_files", nil, "comma-separated PEM CA bundles that verify client certificates; empty = client certificates are not requested")
	fs.BoolVar(&c.TLSClientCertReq, "server_tls_client_cert_required", true, "with --server_tls_client_ca_files: require a client certificate (false: verify one if given)")

	fs.DurationVar(&c.FlushInterval, "http_reverseproxy_flushing_interval", 10*time.Millisecond, "how often buffered response data is flushed to the client; streamed responses (unknown length, event streams) are flushed immediately")
	fs.IntVar(&c.ProxyBufferSize, "http_reverseproxy_buffer_size_bytes", 32*1024, "size of the pooled buffers that copy bodies")
	fs.DurationVar(&c.EjectionBackoff, "lbtransport_failed_target_backoff_duration", 2*time.Second, "how long a backend endpoint that refused a connection is skipped")
	fs.DurationVar(&c.ResolveInterval, "backend_resolve_interval", 5*time.Second, "how often host and srv resolvers look up their DNS names again")
	fs.DurationVar(&c.BackendDialTimeout, "backend_dial_timeout", 2*time.Second, "connect timeout towards backend endpoints")
	fs.DurationVar(&c.BackendResponseHeaderTimeout, "backend_response_header_timeout", 60*time.Second, "how long kedge waits for an HTTP backend's response headers after sending the request; then the client gets 504 backend-timeout. Bodies, streams (gRPC, SSE) and tunnels are not bounded by it. 0 = wait forever")
	fs.IntVar(&c.BackendMaxIdleConns, "backend_max_idle_conns_per_endpoint", 256, "keep-alive connections kept per endpoint of an HTTP backend; more concurrent requests than this to one endpoint make kedge close and re-dial connections")
	fs.IPNetSliceVar(&c.TrustedProxies, "server_trusted_proxies", nil, "comma-separated CIDRs of proxies in front of kedge (e.g. an L7 load balancer) whose X-Forwarded-For chain, X-Forwarded-Host/-Proto and Forwarded headers are kept and appended to; from everyone else these headers (and X-Real-IP) are replaced with what kedge saw. Empty: trust nobody")

	fs.StringVar(&c.Documents.DirectorPath, "kedge_config_director_config_path", "", "file with the director config (routes and adhoc rules), JSON or YAML; watched and reloaded on change or SIGHUP")
	fs.StringVar(&c.Documents.DirectorInline, "kedge_config_director_config", "", "the director config inline (JSON or YAML); ignored when the _path flag is set")
	fs.StringVar(&c.Documents.BackendpoolPath, "kedge_config_backendpool_config_path", "", "file with the backendpool config (backends), JSON or YAML; watched and reloaded on change or SIGHUP")
	fs.StringVar(&c.Documents.BackendpoolInline, "kedge_config_backendpool_config", "", "the backendpool config inline (JSON or YAML); ignored when the _path flag is set")

	fs.StringVar(&c.LogLevel, "log_level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log_format", "text", "log format: text or json")
	fs.DurationVar(&c.LogFlushInterval, "log_flush_interval", 5*time.Millisecond, "write log lines in batches at most this far apart (warnings and errors at once), so requests do not wait for a write per log line; 0 writes every line at once. Lines that cannot be written because the output stalls are dropped and counted in kedge_log_lines_dropped_total")
	fs.BoolVar(&c.CheckConfig, "check-config", false, "validate the director and backendpool documents, print every problem (file, field, reason) and exit: 0 if valid, 1 if not")

	c.registerAuthFlags(fs)
	c.Identity.registerFlags(fs)
	c.Tracing.RegisterFlags(fs, "kedge")

	fs.BoolVar(&c.ignored.tracing, "server_tracing_grpc_enabled", true, "accepted for compatibility; no effect")
	fs.DurationVar(&c.ignored.trialDialTimeout, "lbtransport_trial_dial_timeout", 500*time.Millisecond, "accepted for compatibility; no effect")
	fs.IntVar(&c.ignored.bufferCount, "http_reverseproxy_buffer_count", 2048, "accepted for compatibility; buffers are pooled without a fixed count")
	fs.BoolVar(&c.ignored.logResolution, "log_backend_resolution_on_addition", false, "accepted for compatibility; endpoint changes are always logged at debug level")
	for _, n := range []string{"server_tracing_grpc_enabled", "lbtransport_trial_dial_timeout", "http_reverseproxy_buffer_count", "log_backend_resolution_on_addition"} {
		_ = fs.MarkHidden(n)
	}
	c.K8s.RegisterFlags(fs)
	fs.SetNormalizeFunc(NormalizeFlagName)
}

// RedactArgs returns a copy of args, a kedge command line, in which the value of every secret flag (those
// RegisterFlags marks, in any spelling) is replaced by "<redacted>": what the debug port may show of it.
func RedactArgs(args []string) []string {
	var c Config
	fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	return cli.RedactArgs(fs, args)
}

// NormalizeFlagName lets "--server-http-port" mean "--server_http_port" and resolves deprecated aliases.
func NormalizeFlagName(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	n := strings.ReplaceAll(name, "-", "_")
	switch n {
	case "server_sigterm_timeout": // the original declared it but never used it
		n = "server_shutdown_drain_timeout"
	case "check_config":
		n = "check-config"
	case "k8client_token_file": // the original's misspelling
		n = "k8sclient_token_file"
	case "discovery_resync_timouet", "k8sresolver_first_update_timouet", "k8sresolver_resync_timouet": // ditto
		n = strings.TrimSuffix(n, "timouet") + "timeout"
	}
	return pflag.NormalizedName(n)
}

// Validate reports every problem with the flags at once.
func (c *Config) Validate() error {
	var errs []error
	for name, p := range map[string]int{"server_http_port": c.HTTPPort, "server_http_tls_port": c.HTTPSPort, "server_grpc_tls_port": c.GRPCPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("--%s: %d is not a port (0-65535)", name, p))
		}
	}
	if c.CheckConfig {
		return errors.Join(errs...)
	}
	tlsNeeded := c.HTTPSPort != 0 || c.GRPCPort != 0
	if tlsNeeded && (c.TLSCertFile == "" || c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--server_tls_cert_file and --server_tls_key_file are required while --server_http_tls_port or --server_grpc_tls_port is enabled"))
	}
	if !strings.HasPrefix(c.MetricsPath, "/") {
		errs = append(errs, fmt.Errorf("--server_metrics_path: %q must start with /", c.MetricsPath))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("--server_shutdown_drain_timeout must not be negative"))
	}
	if c.ShutdownDelay < 0 {
		errs = append(errs, errors.New("--server_shutdown_delay must not be negative"))
	}
	if c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0 {
		errs = append(errs, errors.New("--server_max_connections and --server_max_connections_per_ip must not be negative"))
	}
	if c.GRPCStreamWindow != 0 && (c.GRPCStreamWindow < 65535 || c.GRPCStreamWindow > math.MaxInt32) {
		errs = append(errs, fmt.Errorf("--server_grpc_stream_window_bytes: %d is not 0 or between 65535 and %d", c.GRPCStreamWindow, math.MaxInt32))
	}
	if c.ProxyBufferSize < 1024 {
		errs = append(errs, fmt.Errorf("--http_reverseproxy_buffer_size_bytes: %d is below 1024", c.ProxyBufferSize))
	}
	errs = append(errs, c.validateAuth()...)
	errs = append(errs, c.Identity.validate()...)
	errs = append(errs, c.Tracing.Validate()...)
	if err := c.K8s.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
