package winch

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
	"github.com/kedge-proxy/kedge/pkg/winch/pac"
)

// loginTimeout bounds a login started through the running winch (POST /winch/login/NAME).
const loginTimeout = 10 * time.Minute

// localHandler serves origin-form requests to winch itself; httpforward puts it behind the Host and Origin guard.
//
//	GET  /wpad.dat, /proxy.pac    the PAC file
//	POST /winch/login/NAME        log in to auth source NAME for "winch login", streaming its prompts (handoff.go)
//	POST /winch/logout/NAME       forget NAME's cached tokens
//	     /_healthz, /metrics, /debug/pprof/, /debug/config, /_version   unless --server_http_monitoring_address moves them
//	     anything else            the OIDC login callbacks the auth sources registered
func (w *Winch) localHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /wpad.dat", w.servePAC)
	mux.HandleFunc("GET /proxy.pac", w.servePAC)
	mux.HandleFunc("POST /winch/login/{name}", w.serveLogin)
	mux.HandleFunc("POST /winch/logout/{name}", w.serveLogout)
	if w.cfg.MonitoringAddress == "" {
		w.mountDebug(mux)
	}
	mux.Handle("/", http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.snap.Load().callbacks.ServeHTTP(rw, r)
	}))
	return mux
}

// debugHandler serves the debug endpoints alone, for the monitoring address.
func (w *Winch) debugHandler() http.Handler {
	mux := http.NewServeMux()
	w.mountDebug(mux)
	return mux
}

func (w *Winch) mountDebug(mux *http.ServeMux) {
	mux.Handle(w.cfg.MetricsPath, promhttp.HandlerFor(w.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.Handle("/debug/pprof/cmdline", cli.CmdlineHandler(RedactArgs(os.Args))) // never pprof.Cmdline: it shows secrets
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/config", w.serveDebugConfig)
	mux.HandleFunc("/_healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(rw, "ok\n")
	})
	version := func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(rw).Encode(buildinfo.Get())
	}
	mux.HandleFunc("/_version", version)
	mux.HandleFunc("/version", version) // the original's path
}

func (w *Winch) servePAC(rw http.ResponseWriter, r *http.Request) {
	s := w.snap.Load()
	pac.Handler(s.pac, s.pacTime).ServeHTTP(rw, r)
}

func (w *Winch) serveLogout(rw http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := w.snap.Load().creds.Logout(name); err != nil {
		wire.WriteWinchError(rw, http.StatusBadRequest, wire.ErrAuthSource, err.Error())
		return
	}
	w.log.Info("logged out", "auth_source", name)
	_, _ = io.WriteString(rw, "logged out of "+name+"\n")
}

// callbackMux holds the login callbacks that the auth sources of one auth document register. It is what
// credentials.Deps.Callback receives; registering a path again replaces its handler.
type callbackMux struct {
	mu       sync.RWMutex
	handlers map[string]http.Handler // path -> handler; guarded by mu
}

func newCallbackMux() *callbackMux { return &callbackMux{handlers: map[string]http.Handler{}} }

// Handle registers h for exactly path.
func (m *callbackMux) Handle(path string, h http.Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers[path] = h
}

// ServeHTTP dispatches by exact path; unknown paths get 404.
func (m *callbackMux) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	m.mu.RLock()
	h := m.handlers[r.URL.Path]
	m.mu.RUnlock()
	if h == nil {
		http.NotFound(rw, r)
		return
	}
	h.ServeHTTP(rw, r)
}

// generatePAC builds the PAC file: patterns, or, when none are given, the hosts of the HTTP-capable direct routes
// (regexp routes cannot be turned into shell expressions; name them with --pac_redirect_sh_expressions). With
// neither, the PAC sends every non-local host to winch.
func generatePAC(proxyAddr string, patterns []string, routes []mapper.Route) []byte {
	if len(patterns) == 0 {
		seen := map[string]bool{}
		for _, r := range routes {
			if r.Direct == "" || r.Protocol == mapper.ProtocolGRPC {
				continue
			}
			host := r.Direct
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			host = strings.ToLower(host)
			if !seen[host] {
				seen[host] = true
				patterns = append(patterns, host)
			}
		}
	}
	return pac.Generate(proxyAddr, patterns)
}
