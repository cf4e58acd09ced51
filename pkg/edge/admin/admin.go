// Package admin is kedge's plain-HTTP debug listener: health and readiness, Prometheus metrics, pprof, the build
// version and the effective configuration. It never proxies: every other request, whatever its Host, method or
// request-target form, gets 404.
//
// Health, readiness, metrics, the version and the identity JWKS (/.well-known/jwks.json, public keys that backends
// fetch) answer every peer (probes and Prometheus come from other machines);
// pprof and the effective configuration answer only loopback peers (kubectl port-forward arrives as one) unless
// Deps.RemoteDebug says otherwise. No page shows a secret: the command line is served with secrets redacted.
package admin

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Paths served besides the metrics path.
const (
	PathHealth  = "/_healthz"
	PathReady   = "/readyz"
	PathVersion = "/_version"
	PathConfig  = "/debug/config"
	PathPprof   = "/debug/pprof/"
	PathJWKS    = "/.well-known/jwks.json"

	// DefaultMetricsPath is the metrics path when Deps.MetricsPath is empty (the original's --server_metrics_path
	// default).
	DefaultMetricsPath = "/metrics"
)

// Deps is what the debug handler shows.
type Deps struct {
	// Log receives errors of the handler itself (metrics gathering, config encoding). Nil discards them.
	Log logging.Logger
	// Gatherer is the registry whose metrics are served. Nil serves 404 on the metrics path.
	Gatherer prometheus.Gatherer
	// MetricsPath is where metrics are served; default /metrics. If it equals /_healthz or /readyz those win.
	MetricsPath string
	// Ready reports readiness: nil means ready, an error means not ready and its text is shown. A nil func means
	// always ready.
	Ready func() error
	// Config returns the effective configuration for /debug/config, encoded as JSON. It must already be redacted
	// (no tokens, no keys). A nil func serves 404.
	Config func() any
	// Cmdline is what /debug/pprof/cmdline shows: the process's command line with every secret redacted
	// (cli.RedactArgs). Nil serves 404; pprof's own handler, which shows os.Args as they are, is never used.
	Cmdline []string
	// RemoteDebug serves pprof, /debug/config and every other debug path to any peer. By default they answer only
	// peers on a loopback address (127.0.0.0/8, ::1) and others get 403; /_healthz, /readyz, /_version and the
	// metrics path answer everyone either way.
	RemoteDebug bool
	// Protect, when set, wraps every path except /_healthz, /readyz and the metrics path (which load balancers and
	// Prometheus must reach without credentials), e.g. with authentication. It applies after the loopback check.
	Protect func(http.Handler) http.Handler
	// JWKS serves the public keys of kedge's identity tokens at PathJWKS, to every peer and without Protect: they
	// are public, and backends fetch them. Nil serves 404.
	JWKS http.Handler
}

// remoteRefusal is the body of the 403 a non-loopback peer gets for a debug path.
const remoteRefusal = "debug pages answer only to loopback peers (use kubectl port-forward, or start kedge with --server_debug_remote_access)"

// New returns the debug listener's handler.
func New(d Deps) http.Handler {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	log := d.Log.With(logging.FieldComponent, "admin")
	metricsPath := d.MetricsPath
	if metricsPath == "" {
		metricsPath = DefaultMetricsPath
	}
	if !strings.HasPrefix(metricsPath, "/") {
		metricsPath = "/" + metricsPath
	}
	var metrics http.Handler = http.NotFoundHandler()
	if d.Gatherer != nil {
		metrics = promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      logging.StdLogger(log, logging.LevelWarn, "admin"),
			ErrorHandling: promhttp.ContinueOnError,
		})
	}

	// The protected mux is a new ServeMux with explicit registrations: never http.DefaultServeMux, which
	// net/http/pprof's init fills for programs that serve it.
	mux := http.NewServeMux()
	mux.HandleFunc(PathPprof, pprof.Index)
	if d.Cmdline != nil {
		mux.Handle(PathPprof+"cmdline", cli.CmdlineHandler(d.Cmdline))
	} else {
		mux.Handle(PathPprof+"cmdline", http.NotFoundHandler())
	}
	mux.HandleFunc(PathPprof+"profile", pprof.Profile)
	mux.HandleFunc(PathPprof+"symbol", pprof.Symbol)
	mux.HandleFunc(PathPprof+"trace", pprof.Trace)
	mux.HandleFunc(PathVersion, version)
	mux.Handle(PathConfig, configHandler(d.Config, log))
	mux.Handle("/", http.NotFoundHandler())
	var protected http.Handler = mux
	if d.Protect != nil {
		protected = d.Protect(mux)
	}

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only origin-form requests: a CONNECT or an absolute-form (proxy) request is not for us.
		if r.Method == http.MethodConnect || r.URL.IsAbs() || !strings.HasPrefix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		switch r.URL.Path {
		case PathHealth:
			text(w, http.StatusOK, "kedge isok")
		case PathReady:
			ready(w, d.Ready)
		case metricsPath:
			metrics.ServeHTTP(w, r)
		case PathVersion:
			protected.ServeHTTP(w, r)
		case PathJWKS:
			if d.JWKS == nil {
				http.NotFound(w, r)
				return
			}
			d.JWKS.ServeHTTP(w, r)
		default:
			// Everything else is a debug page or a 404: checked by peer address before any path matching, so no
			// spelling of a path (//debug, /x/../debug) gets around it.
			if !d.RemoteDebug && !LoopbackPeer(r.RemoteAddr) {
				text(w, http.StatusForbidden, remoteRefusal)
				return
			}
			protected.ServeHTTP(w, r)
		}
	})
}

// LoopbackPeer reports whether remoteAddr, an http.Request's RemoteAddr ("ip:port"), is a loopback address:
// 127.0.0.0/8, ::1 or an IPv4-mapped 127.x. Anything it cannot parse is not.
func LoopbackPeer(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}

func ready(w http.ResponseWriter, check func() error) {
	if check != nil {
		if err := check(); err != nil {
			text(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
	}
	text(w, http.StatusOK, "ready")
}

func version(w http.ResponseWriter, _ *http.Request) {
	b, err := json.Marshal(buildinfo.Get())
	if err != nil { // a struct of strings always encodes
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, b)
}

func configHandler(get func() any, log logging.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if get == nil {
			http.NotFound(w, r)
			return
		}
		b, err := json.MarshalIndent(get(), "", "  ")
		if err != nil {
			log.Error("admin: encoding the effective config", logging.FieldError, err)
			http.Error(w, "cannot encode the config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, append(b, '\n'))
	})
}

func text(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}
