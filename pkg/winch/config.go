package winch

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/tlsconfig"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
)

// Config is winch's static configuration: everything set by flags at startup. The mapper and auth documents it
// names reload live.
type Config struct {
	// BindAddress is the IP address both proxy ports listen on; 127.0.0.1 unless told otherwise.
	BindAddress string
	// HTTPPort is the HTTP proxy port (also PAC, login callbacks, and the debug endpoints unless MonitoringAddress
	// is set); 0 picks a free port.
	HTTPPort int
	// GRPCPort is the plaintext gRPC proxy port; 0 disables it.
	GRPCPort int
	// SOCKSPort is the SOCKS5 port (no authentication, so BindAddress must be loopback); 0 (the default) disables
	// it.
	SOCKSPort int
	// MonitoringAddress, when set, moves /metrics, /debug/pprof/, /_version and /_healthz to their own server on
	// this host:port.
	MonitoringAddress string
	// MetricsPath is the path of the Prometheus endpoint.
	MetricsPath string
	// ReadTimeout and WriteTimeout cap reading a whole request and writing a whole response on the HTTP port; 0
	// (the default) means none, because they would cut streams, watches and tunnels.
	ReadTimeout, WriteTimeout time.Duration
	// DrainTimeout is how long running requests, tunnels and calls may take to finish at shutdown.
	DrainTimeout time.Duration

	// Documents names the mapper and auth documents.
	Documents config.Source

	// ClientTLS is how winch connects to kedges: root CAs (empty: system roots), optional client certificate.
	ClientTLS tlsconfig.ClientConfig

	// Unmatched is what happens to destinations that no route maps: "direct" or "reject".
	Unmatched string
	// PACPatterns are the shExpMatch host patterns that the generated PAC file sends through winch; empty means the
	// host parts of the mapper's direct routes.
	PACPatterns []string
	// PACFile, when set, is served as the PAC file instead of the generated one.
	PACFile string
	// OIDCDeviceFlow makes OIDC logins use the device-code flow instead of a browser.
	OIDCDeviceFlow bool
	// NoBrowser keeps winch from opening a browser for OIDC logins; it prints (winch login) or logs (winch run) the
	// URL instead.
	NoBrowser bool
	// StateDir holds tokens and the MITM CA; empty means $XDG_CONFIG_HOME/winch or ~/.config/winch.
	StateDir string

	// Tracing is the W3C trace context and OTLP span export (--tracing_*, shared with kedge); off by default.
	Tracing tracing.Config

	// CheckConfig makes winch validate the documents, print every problem and warning, and exit instead of serving.
	CheckConfig bool

	// DebugMode forces debug logging and sends X-Kedge-Info-Logs: winch-$USER to kedges.
	DebugMode bool
	// LogLevel is debug, info, warn or error (ignored in debug mode).
	LogLevel string
	// LogFormat is text or json.
	LogFormat string

	// ignored holds flags of the original that are accepted for compatibility but have no effect.
	ignored ignoredFlags
}

type ignoredFlags struct {
	authTimeout   time.Duration
	cors          []string
	bufferSize    int
	bufferCount   int
	flushInterval time.Duration
}

// RegisterFlags declares every flag on fs, with the original winch's names (snake_case); NormalizeFlagName makes
// kebab-case spellings work too.
func (c *Config) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.BindAddress, "server_bind_address", "127.0.0.1", "IP address the HTTP, gRPC and SOCKS5 ports listen on; anything but loopback lets others use your credentials (and SOCKS5 refuses it)")
	fs.IntVar(&c.HTTPPort, "server_http_port", 8070, "HTTP proxy port (HTTP_PROXY/HTTPS_PROXY), also serving /wpad.dat, /proxy.pac, login callbacks and the debug endpoints; 0 picks a free port")
	fs.IntVar(&c.GRPCPort, "server_grpc_port", 8071, "plaintext gRPC proxy port (clients set :authority to the target); 0 disables it")
	fs.IntVar(&c.SOCKSPort, "server_socks_port", 0, "SOCKS5 port (socks5h: names resolved by kedge; CONNECT only, mapped like HTTPS_PROXY tunnels); loopback --server_bind_address only; 0 disables it")
	fs.StringVar(&c.MonitoringAddress, "server_http_monitoring_address", "", "host:port of a separate server for /metrics, /debug/pprof/, /_version and /_healthz; empty serves them on the HTTP port for Host localhost only")
	fs.StringVar(&c.MetricsPath, "server_metrics_path", "/metrics", "path of the Prometheus endpoint")
	fs.DurationVar(&c.ReadTimeout, "server_http_max_read_timeout", 0, "limit on reading a whole request on the HTTP port; 0 = none (headers always have 10s)")
	fs.DurationVar(&c.WriteTimeout, "server_http_max_write_timeout", 0, "limit on writing a whole response on the HTTP port; 0 = none. The original's 15s cut watches, logs -f and tunnels")
	fs.DurationVar(&c.DrainTimeout, "server_shutdown_drain_timeout", 5*time.Second, "on SIGTERM: how long running requests, tunnels and gRPC calls may take to finish")

	fs.StringVar(&c.Documents.MapperPath, "server_mapper_config_path", "", "file with the mapper config (which kedge serves which destination), JSON or YAML; reloaded on change or SIGHUP")
	fs.StringVar(&c.Documents.MapperInline, "server_mapper_config", "", "the mapper config inline (JSON or YAML); ignored when the _path flag is set")
	fs.StringVar(&c.Documents.AuthPath, "server_auth_config_path", "", "file with the auth config (named credential sources), JSON or YAML; reloaded on change or SIGHUP")
	fs.StringVar(&c.Documents.AuthInline, "server_auth_config", "", "the auth config inline (JSON or YAML); ignored when the _path flag is set. It may hold tokens and client secrets, which every local user can read on a command line (ps): prefer the _path flag")
	// The inline auth document may carry tokens and client secrets; its file form is the _path flag. Secret flags
	// are marked here, and only here: the redacted command line of /debug/pprof/cmdline reads the mark.
	cli.MarkSecret(fs, "server_auth_config", "server_auth_config_path")

	fs.StringSliceVar(&c.ClientTLS.RootCAFiles, "client_tls_root_ca_files", nil, "comma-separated PEM CA bundles that verify kedges; empty = system roots")
	fs.StringVar(&c.ClientTLS.CertFile, "client_tls_cert_file", "", "PEM client certificate presented to kedges")
	fs.StringVar(&c.ClientTLS.KeyFile, "client_tls_key_file", "", "PEM private key of --client_tls_cert_file")
	fs.BoolVar(&c.ClientTLS.InsecureSkipVerify, "client_insecure", false, "do not verify kedges' certificates (tests only: tokens could be stolen)")

	fs.StringVar(&c.Unmatched, "unmatched", string(httpforward.UnmatchedDirect), "destinations no route maps (and IP addresses): direct = connect directly, without tokens; reject = answer 403")
	fs.StringSliceVar(&c.PACPatterns, "pac_redirect_sh_expressions", nil, "comma-separated shExpMatch host patterns the PAC file sends through winch (http and https); empty = the hosts of the mapper's direct routes")
	fs.StringVar(&c.PACFile, "pac_file", "", "serve this file as /wpad.dat and /proxy.pac instead of the generated PAC")
	fs.BoolVar(&c.OIDCDeviceFlow, "oidc_device_flow", false, "log in to OIDC sources with the device-code flow (for machines without a browser); on winch login it chooses the flow of that login")
	fs.BoolVar(&c.NoBrowser, "no_browser", false, "never open a browser for OIDC logins ($BROWSER, then xdg-open/open); print or log the URL to open instead")
	fs.StringVar(&c.StateDir, "state_dir", "", "directory for cached tokens and the MITM CA; empty = $XDG_CONFIG_HOME/winch or ~/.config/winch")

	// kebab-case as kedge's (the original kedge's spelling); NormalizeFlagName accepts --check_config too.
	fs.BoolVar(&c.CheckConfig, "check-config", false, "validate the mapper and auth documents (and load the auth sources, without network calls), print every problem (file: field: reason) and every startup warning, and exit: 0 if valid, 1 if not")
	c.Tracing.RegisterFlags(fs, "winch")
	fs.BoolVar(&c.DebugMode, "debug_mode", false, "log at debug level and ask kedges to log winch's requests (X-Kedge-Info-Logs: winch-$USER)")
	fs.StringVar(&c.LogLevel, "log_level", "info", "log level: debug, info, warn or error (debug_mode forces debug)")
	fs.StringVar(&c.LogFormat, "log_format", "text", "log format: text or json")

	fs.DurationVar(&c.ignored.authTimeout, "server_auth_timeout", 10*time.Second, "accepted for compatibility; auth sources are built without network calls")
	fs.StringSliceVar(&c.ignored.cors, "cors_allowed_origin", nil, "accepted for compatibility and ignored: winch sends no CORS headers and refuses cross-site requests")
	fs.IntVar(&c.ignored.bufferSize, "winch_reverseproxy_buffer_size_bytes", 32*1024, "accepted for compatibility; no effect")
	fs.IntVar(&c.ignored.bufferCount, "winch_reverseproxy_buffer_count", 2048, "accepted for compatibility; no effect")
	fs.DurationVar(&c.ignored.flushInterval, "winch_reverseproxy_flushing_interval", 10*time.Millisecond, "accepted for compatibility; responses of unknown length are flushed as they arrive")
	for _, n := range []string{"server_auth_timeout", "cors_allowed_origin", "winch_reverseproxy_buffer_size_bytes",
		"winch_reverseproxy_buffer_count", "winch_reverseproxy_flushing_interval"} {
		_ = fs.MarkHidden(n)
	}
	fs.SetNormalizeFunc(NormalizeFlagName)
}

// RedactArgs returns a copy of args, a winch command line, in which the value of every secret flag (those
// RegisterFlags marks, in any spelling) is replaced by "<redacted>": what the debug endpoints may show of it.
func RedactArgs(args []string) []string {
	var c Config
	fs := pflag.NewFlagSet("winch", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	return cli.RedactArgs(fs, args)
}

// NormalizeFlagName lets "--server-http-port" mean "--server_http_port", and "--check_config" mean
// "--check-config" (kebab-case like kedge's).
func NormalizeFlagName(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	n := strings.ReplaceAll(name, "-", "_")
	if n == "check_config" {
		n = "check-config"
	}
	return pflag.NormalizedName(n)
}

// Validate reports every problem with the flags at once. The documents themselves are checked by New.
func (c *Config) Validate() error {
	var errs []error
	if c.HTTPPort < 0 || c.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("--server_http_port: %d is not a port (0-65535)", c.HTTPPort))
	}
	if c.GRPCPort < 0 || c.GRPCPort > 65535 {
		errs = append(errs, fmt.Errorf("--server_grpc_port: %d is not a port (0-65535)", c.GRPCPort))
	}
	if c.HTTPPort != 0 && c.HTTPPort == c.GRPCPort {
		errs = append(errs, fmt.Errorf("--server_http_port and --server_grpc_port are both %d", c.HTTPPort))
	}
	errs = append(errs, c.validateSOCKS()...)
	if c.BindAddress != "localhost" && net.ParseIP(c.BindAddress) == nil {
		errs = append(errs, fmt.Errorf("--server_bind_address: %q is not an IP address", c.BindAddress))
	}
	if c.MonitoringAddress != "" {
		if _, _, err := net.SplitHostPort(c.MonitoringAddress); err != nil {
			errs = append(errs, fmt.Errorf("--server_http_monitoring_address: %q is not host:port", c.MonitoringAddress))
		}
	}
	if !strings.HasPrefix(c.MetricsPath, "/") {
		errs = append(errs, fmt.Errorf("--server_metrics_path: %q must start with /", c.MetricsPath))
	}
	switch httpforward.Unmatched(c.Unmatched) {
	case httpforward.UnmatchedDirect, httpforward.UnmatchedReject:
	default:
		errs = append(errs, fmt.Errorf("--unmatched: %q is not direct or reject", c.Unmatched))
	}
	if c.PACFile != "" && len(c.PACPatterns) > 0 {
		errs = append(errs, errors.New("--pac_file and --pac_redirect_sh_expressions exclude each other: the file is served as it is"))
	}
	if tc := c.clientTLS(); (tc.CertFile == "") != (tc.KeyFile == "") {
		errs = append(errs, errors.New("--client_tls_cert_file and --client_tls_key_file go together"))
	}
	if c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.DrainTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	errs = append(errs, c.Tracing.Validate()...)
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log_level: %w", err))
	}
	if f := strings.ToLower(c.LogFormat); f != "" && f != "text" && f != "json" {
		errs = append(errs, fmt.Errorf("--log_format: %q is not text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// validateSOCKS checks --server_socks_port: a port, not another listener's, and only on loopback, since SOCKS5
// here has no authentication and whoever reaches it could use the user's credentials.
func (c *Config) validateSOCKS() []error {
	if c.SOCKSPort == 0 {
		return nil
	}
	var errs []error
	if c.SOCKSPort < 0 || c.SOCKSPort > 65535 {
		errs = append(errs, fmt.Errorf("--server_socks_port: %d is not a port (0-65535)", c.SOCKSPort))
	}
	if c.SOCKSPort == c.HTTPPort || c.SOCKSPort == c.GRPCPort {
		errs = append(errs, fmt.Errorf("--server_socks_port %d is also the HTTP or gRPC port", c.SOCKSPort))
	}
	if ip := net.ParseIP(c.BindAddress); c.BindAddress != "localhost" && (ip == nil || !ip.IsLoopback()) {
		errs = append(errs, fmt.Errorf("--server_socks_port: winch serves SOCKS5 on loopback only (it has no authentication, and whoever reaches it could use your credentials), but --server_bind_address is %q; use 127.0.0.1 or ::1", c.BindAddress))
	}
	return errs
}

// SOCKSAddr is the listen address of the SOCKS5 port ("" when it is off).
func (c *Config) SOCKSAddr() string {
	if c.SOCKSPort == 0 {
		return ""
	}
	return net.JoinHostPort(c.BindAddress, fmt.Sprint(c.SOCKSPort))
}

// EffectiveLogLevel is the level to log at: debug in debug mode, else LogLevel.
func (c *Config) EffectiveLogLevel() string {
	if c.DebugMode {
		return "debug"
	}
	return c.LogLevel
}

// ResolvedStateDir returns StateDir or its default, credentials.DefaultStateDir ($XDG_CONFIG_HOME/winch or
// ~/.config/winch).
func (c *Config) ResolvedStateDir() (string, error) {
	if c.StateDir != "" {
		return c.StateDir, nil
	}
	dir, err := credentials.DefaultStateDir()
	if err != nil {
		return "", fmt.Errorf("winch: %w (set --state_dir)", err)
	}
	return dir, nil
}

// clientTLS is ClientTLS with the original's key-file default "." read as "none".
func (c *Config) clientTLS() tlsconfig.ClientConfig {
	tc := c.ClientTLS
	if tc.KeyFile == "." {
		tc.KeyFile = ""
	}
	return tc
}

// HTTPAddr is the listen address of the HTTP proxy port.
func (c *Config) HTTPAddr() string { return net.JoinHostPort(c.BindAddress, fmt.Sprint(c.HTTPPort)) }
