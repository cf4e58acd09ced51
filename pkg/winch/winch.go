// Package winch is winch's composition root: it loads the mapper and auth documents, builds the credentials, the
// HTTP proxy (httpforward), the gRPC proxy (grpcforward) and the local endpoints (PAC, login callbacks, debug),
// binds the listeners, and runs everything until the context ends. Documents reload when their files change; a
// bad document is logged and the running configuration stays.
package winch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/filewatch"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/tlsconfig"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
	"github.com/kedge-proxy/kedge/pkg/winch/grpcforward"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
	"github.com/kedge-proxy/kedge/pkg/winch/socks"
)

// The SOCKS5 port opens its tunnels with the HTTP proxy's CONNECT code.
var _ socks.Tunnels = (*httpforward.Handler)(nil)

// Winch is a configured winch, listeners bound, ready to Run.
type Winch struct {
	cfg      Config
	log      logging.Logger
	registry *prometheus.Registry
	stateDir string
	kedgeTLS *tls.Config
	pacFile  []byte // --pac_file content, or nil
	pacAddr  string // the proxy address the PAC file names
	callback string // base URL of login callbacks

	snap    atomic.Pointer[snapshot]
	applyMu sync.Mutex // serialises building and storing snapshots

	httpLn, grpcLn, monLn net.Listener
	socksLn               net.Listener // nil unless --server_socks_port
	httpProxy             *httpforward.Handler
	socksSrv              *socks.Server
	grpcProxy             *grpcforward.Proxy
	grpcSrv               *grpc.Server
	watcher               *filewatch.Watcher
	tracer                *tracing.Tracer // nil without --tracing_otlp_endpoint
}

// snapshot is the configuration derived from one version of the documents. It is immutable once stored.
type snapshot struct {
	dyn       *config.Dynamic
	mapper    *mapper.Mapper
	creds     *credentials.Set
	callbacks *callbackMux
	pac       []byte
	pacTime   time.Time
}

// New validates cfg, loads the documents, builds the credentials and both proxies, and binds the listeners, so that
// every startup problem (bad document, unknown auth source, unreadable certificate, port in use) is reported here.
func New(cfg Config, log logging.Logger) (*Winch, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("winch: invalid flags:\n%w", err)
	}
	dyn, err := config.Load(cfg.Documents)
	if err != nil {
		return nil, fmt.Errorf("winch: loading config documents:\n%w", err)
	}
	w := &Winch{cfg: cfg, log: log}
	if w.stateDir, err = cfg.ResolvedStateDir(); err != nil {
		return nil, err
	}
	if w.kedgeTLS, err = tlsconfig.NewClient(cfg.clientTLS()); err != nil {
		return nil, fmt.Errorf("winch: client TLS: %w", err)
	}
	explain := tlsconfig.WatchCertRequests(w.kedgeTLS, "set --client_tls_cert_file and --client_tls_key_file").Explain
	for _, warning := range append(cfg.flagWarnings(), cfg.documentWarnings()...) {
		log.Warn(warning)
	}
	if cfg.PACFile != "" {
		if w.pacFile, err = os.ReadFile(cfg.PACFile); err != nil {
			return nil, fmt.Errorf("winch: --pac_file: %w", err)
		}
	}
	if err := w.listen(); err != nil {
		w.closeListeners()
		return nil, err
	}
	w.pacAddr, w.callback = localAddr(w.httpLn.Addr()), "http://"+localAddr(w.httpLn.Addr())
	snap, err := w.build(dyn, nil)
	if err != nil {
		w.closeListeners()
		return nil, err
	}
	w.snap.Store(snap)

	w.registry = prometheus.NewRegistry()
	w.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if w.tracer, err = tracing.New(cfg.Tracing, buildinfo.Get().Version); err != nil {
		w.closeListeners()
		return nil, err
	}
	infoLogs := ""
	if cfg.DebugMode {
		infoLogs = httpforward.InfoLogsValue()
	}
	w.httpProxy = httpforward.New(httpforward.Deps{
		Log:        log.With(logging.FieldComponent, "httpforward"),
		Registerer: w.registry,
		Routes:     w,
		Sources:    w.httpSource,
		KedgeTLS:   w.kedgeTLS,
		ExplainTLS: explain,
		Local:      w.localHandler(),
		CA:         httpforward.NewCA(w.stateDir),
		Tracer:     w.tracer,
		Options:    httpforward.Options{Unmatched: httpforward.Unmatched(cfg.Unmatched), InfoLogs: infoLogs},
	})
	if w.socksLn != nil {
		w.socksSrv = socks.New(socks.Deps{
			Tunnels:    w.httpProxy,
			Log:        log.With(logging.FieldComponent, "socks"),
			Registerer: w.registry,
		})
	}
	if w.grpcLn != nil {
		w.grpcProxy = grpcforward.New(grpcforward.Deps{
			Log:        log.With(logging.FieldComponent, "grpcforward"),
			Registerer: w.registry,
			Routes:     w,
			Sources:    w.grpcSource,
			KedgeTLS:   w.kedgeTLS,
			ExplainTLS: explain,
			InfoLogs:   infoLogs,
			Tracer:     w.tracer,
		})
		w.grpcSrv = grpc.NewServer(append(w.grpcProxy.ServerOptions(),
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		)...)
	}
	w.watcher = filewatch.New(filewatch.Config{Paths: []string{cfg.Documents.MapperPath, cfg.Documents.AuthPath}},
		w.reloadDocuments, log.With(logging.FieldComponent, "config"))
	return w, nil
}

func (w *Winch) listen() error {
	var err error
	if w.httpLn, err = net.Listen("tcp", w.cfg.HTTPAddr()); err != nil {
		return fmt.Errorf("winch: HTTP proxy listener: %w", err)
	}
	if w.cfg.GRPCPort != 0 {
		addr := net.JoinHostPort(w.cfg.BindAddress, strconv.Itoa(w.cfg.GRPCPort))
		if w.grpcLn, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("winch: gRPC proxy listener: %w", err)
		}
	}
	if addr := w.cfg.SOCKSAddr(); addr != "" {
		if w.socksLn, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("winch: SOCKS5 listener: %w", err)
		}
	}
	if w.cfg.MonitoringAddress != "" {
		if w.monLn, err = net.Listen("tcp", w.cfg.MonitoringAddress); err != nil {
			return fmt.Errorf("winch: monitoring listener: %w", err)
		}
	}
	return nil
}

func (w *Winch) closeListeners() {
	for _, ln := range []net.Listener{w.httpLn, w.grpcLn, w.socksLn, w.monLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// build derives a snapshot from dyn. The credentials of prev are kept when the auth document did not change, so
// that cached tokens survive a mapper edit.
func (w *Winch) build(dyn *config.Dynamic, prev *snapshot) (*snapshot, error) {
	s := &snapshot{dyn: dyn, mapper: mapper.New(dyn.Mapper.Routes), pacTime: time.Now()}
	if prev != nil && reflect.DeepEqual(prev.dyn.Auth.Sources, dyn.Auth.Sources) {
		s.creds, s.callbacks = prev.creds, prev.callbacks
	} else {
		s.callbacks = newCallbackMux()
		set, err := credentials.New(dyn.Auth.Sources, credentials.Deps{
			Log:             w.log.With(logging.FieldComponent, "credentials"),
			StateDir:        w.stateDir,
			Callback:        s.callbacks,
			CallbackBaseURL: w.callback,
			DeviceFlow:      w.cfg.OIDCDeviceFlow,
			OpenBrowser:     w.openBrowser,
		})
		if err != nil {
			return nil, fmt.Errorf("winch: auth sources: %w", err)
		}
		s.creds = set
		w.logUnavailable(set, dyn.Mapper.Routes)
	}
	if w.pacFile != nil {
		s.pac = w.pacFile
	} else {
		s.pac = generatePAC(w.pacAddr, w.cfg.PACPatterns, dyn.Mapper.Routes)
	}
	return s, nil
}

// logUnavailable logs, once per auth document, each source that could not be loaded, with the reason and the
// routes it fails: the other routes work, and requests through these get the same reason.
func (w *Winch) logUnavailable(set *credentials.Set, routes []mapper.Route) {
	for _, u := range unavailableSources(set, routes) {
		w.log.Warn("auth source cannot be loaded; requests through the routes that use it fail until it can",
			"auth_source", u.name, "routes", fmt.Sprint(u.routes), logging.FieldError, u.err)
	}
}

// openBrowser opens the URL of a login that a proxied request started, unless --no_browser.
func (w *Winch) openBrowser(url string) error {
	if w.cfg.NoBrowser {
		return errors.New("--no_browser is set")
	}
	return credentials.OpenBrowser(url)
}

// reloadDocuments loads the documents and swaps the new configuration in; on any problem the running one stays
// and every problem is logged.
func (w *Winch) reloadDocuments(reason string) {
	dyn, err := config.Load(w.cfg.Documents)
	if err == nil {
		err = w.apply(dyn)
	}
	if err != nil {
		for _, fe := range config.FieldErrors(err) {
			w.log.Error("config problem", logging.FieldFile, fe.File, "field", fe.Field, logging.FieldError, fe.Reason)
		}
		w.log.Error("config reload rejected; keeping the running config", "reason", reason, logging.FieldError, err)
		return
	}
	w.log.Info("config reloaded", "reason", reason, "routes", len(dyn.Mapper.Routes), "auth_sources", len(dyn.Auth.Sources))
}

// apply builds a snapshot from dyn and stores it.
func (w *Winch) apply(dyn *config.Dynamic) error {
	w.applyMu.Lock()
	defer w.applyMu.Unlock()
	s, err := w.build(dyn, w.snap.Load())
	if err != nil {
		return err
	}
	w.snap.Store(s)
	return nil
}

// Reload re-reads the documents now (as SIGHUP does).
func (w *Winch) Reload() { w.watcher.Trigger() }

// Map implements httpforward.Routes and grpcforward.Routes with the current mapper.
func (w *Winch) Map(hostport string, proto mapper.Protocol) (mapper.Destination, error) {
	return w.snap.Load().mapper.Map(hostport, proto)
}

func (w *Winch) httpSource(name string) (httpforward.TokenSource, bool) {
	src, ok := w.snap.Load().creds.Get(name)
	if !ok {
		return nil, false
	}
	return src, true
}

func (w *Winch) grpcSource(name string) (grpcforward.TokenSource, bool) {
	src, ok := w.snap.Load().creds.Get(name)
	if !ok {
		return nil, false
	}
	return src, true
}

// Addrs reports the bound addresses ("" for a disabled listener).
func (w *Winch) Addrs() (httpAddr, grpcAddr, monitoring string) {
	addr := func(ln net.Listener) string {
		if ln == nil {
			return ""
		}
		return ln.Addr().String()
	}
	return addr(w.httpLn), addr(w.grpcLn), addr(w.monLn)
}

// SOCKSAddr reports the bound address of the SOCKS5 port ("" when it is off).
func (w *Winch) SOCKSAddr() string {
	if w.socksLn == nil {
		return ""
	}
	return w.socksLn.Addr().String()
}

// Run serves until ctx is done, then drains: the listeners stop accepting, running requests, tunnels and calls get
// up to the drain timeout, and everything is closed. It returns early with an error if a server fails.
func (w *Winch) Run(ctx context.Context) error {
	defer w.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.watcher.Run(gctx) })
	httpSrv := serve.HTTPServer(w.httpProxy, serve.HTTPOptions{
		Name:         "winch_http",
		ReadTimeout:  w.cfg.ReadTimeout,
		WriteTimeout: w.cfg.WriteTimeout,
	}, w.log)
	g.Go(func() error { return w.drained("http", serve.Serve(gctx, httpSrv, w.httpLn, w.cfg.DrainTimeout)) })
	if w.grpcSrv != nil {
		g.Go(func() error { return w.drained("grpc", serve.GRPC(gctx, w.grpcSrv, w.grpcLn, w.cfg.DrainTimeout)) })
	}
	if w.socksSrv != nil {
		g.Go(func() error { return w.drained("socks", w.socksSrv.Serve(gctx, w.socksLn, w.cfg.DrainTimeout)) })
	}
	if w.monLn != nil {
		mon := serve.HTTPServer(httpforward.GuardCrossSite(w.debugHandler()), serve.HTTPOptions{Name: "winch_monitoring"}, w.log)
		g.Go(func() error { return w.drained("monitoring", serve.Serve(gctx, mon, w.monLn, time.Second)) })
	}
	httpAddr, grpcAddr, monAddr := w.Addrs()
	w.log.Info("winch serving", "http", httpAddr, "grpc", grpcAddr, "socks", w.SOCKSAddr(), "monitoring", monAddr,
		"routes", w.snap.Load().mapper.Len(), "unmatched", w.cfg.Unmatched)
	err := g.Wait()
	w.log.Info("winch stopped")
	return err
}

// drained turns a drain that hit its deadline into a log line: cutting what is left is the promised behaviour.
func (w *Winch) drained(listener string, err error) error {
	if errors.Is(err, serve.ErrDrainTimeout) {
		w.log.Warn("drain deadline passed; remaining connections were closed", "listener", listener, logging.FieldError, err)
		return nil
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (w *Winch) close() {
	w.httpProxy.Close()
	if w.grpcProxy != nil {
		if err := w.grpcProxy.Close(); err != nil {
			w.log.Warn("closing kedge connections", logging.FieldError, err)
		}
	}
	// After the drain: the spans of the requests that finished during it are sent too, within 5 seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.tracer.Shutdown(ctx); err != nil {
		w.log.Warn("tracing: spans not flushed at shutdown", logging.FieldError, err)
	}
}

// localAddr is the address clients on this machine reach a listener on: an unspecified bind address becomes
// 127.0.0.1.
func localAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}
