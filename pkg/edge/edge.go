// Package edge is kedge's composition root: it builds the listeners, the proxies, the backend pool and the live
// configuration from a static config.Config, and runs them until the context ends. It is the only package that
// wires the parts together.
package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/kedge-proxy/kedge/pkg/edge/admin"
	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/grpcproxy"
	"github.com/kedge-proxy/kedge/pkg/edge/httpproxy"
	"github.com/kedge-proxy/kedge/pkg/edge/identity"
	"github.com/kedge-proxy/kedge/pkg/edge/tunnel"
	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/grpcrelay"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/tlsconfig"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

// Server is a configured kedge, ready to Run.
type Server struct {
	cfg      config.Config
	log      logging.Logger
	registry *prometheus.Registry
	kube     *kube // Kubernetes client, EndpointSlice sources and Service discovery (inactive without an API)
	state    *state
	pool     *backend.Pool
	watcher  *config.Watcher
	tls      *tlsconfig.Server // nil when no TLS listener is enabled
	auth     *authn.Authenticator
	gate     *authz.Gate
	signer   *identity.Signer // nil without --server_identity_signing_key_file
	tracer   *tracing.Tracer  // nil without --tracing_otlp_endpoint

	httpProxy *httpproxy.Handler
	grpcProxy *grpcproxy.Proxy
	grpcTLS   *grpc.Server // the gRPC TLS port
	grpcHTTPS *grpc.Server // gRPC requests arriving on the HTTPS port (served through net/http)

	listeners listeners
	ready     atomic.Bool
	shutting  atomic.Bool
	skipDelay chan struct{} // closed by SkipShutdownDelay
	skipOnce  sync.Once
}

type listeners struct{ debug, https, grpc net.Listener }

// Deps are what New takes besides the static config.
type Deps struct {
	// Log receives kedge's log lines; nil discards them.
	Log logging.Logger
	// Listeners are listeners the caller has bound already. kedge's main leaves them nil and New binds each port of
	// the config on its bind address (port 0 disables that listener). A test binds 127.0.0.1:0 itself and passes the
	// listener, so the port it reads from the listener is the one kedge serves: never a port reserved, freed and
	// bound again, which another process may take in between.
	Listeners Listeners
}

// Listeners are pre-bound listeners for Deps. A non-nil one is served in place of binding its port (the port in the
// config is then not looked at); New takes it over: Run closes it, and so does New when it fails.
type Listeners struct {
	Debug net.Listener // the plain debug port (config.Config.HTTPPort)
	HTTPS net.Listener // the HTTPS proxy port (config.Config.HTTPSPort)
	GRPC  net.Listener // the gRPC-over-TLS port (config.Config.GRPCPort)
}

// New loads the dynamic config, builds every part and binds the listeners, so that errors (bad config, port in
// use, unreadable certificates) surface before Run.
func New(cfg config.Config, deps Deps) (_ *Server, err error) {
	log := deps.Log
	if log == nil {
		log = logging.Discard()
	}
	reg := prometheus.NewRegistry()
	s := &Server{
		cfg: cfg, log: log, registry: reg, skipDelay: make(chan struct{}),
		listeners: listeners{debug: deps.Listeners.Debug, https: deps.Listeners.HTTPS, grpc: deps.Listeners.GRPC},
	}
	defer func() {
		if err != nil {
			s.close() // whatever was built or given so far: pool, proxies, listeners
		}
	}()

	dyn, err := config.Load(cfg.Documents)
	if err != nil {
		return nil, fmt.Errorf("loading config documents:\n%w", err)
	}
	warnings := cfg.Warnings(dyn)
	for _, w := range warnings {
		log.Warn("config warning", "warning", w)
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kedge_log_lines_dropped_total",
		Help: "Log lines dropped because the log output could not keep up (see --log_flush_interval).",
	}, func() float64 { return float64(logging.Dropped(log)) }))
	if s.kube, err = newKube(cfg.K8s, log.With(logging.FieldComponent, "kubernetes"), reg); err != nil {
		return nil, err
	}
	s.pool = backend.NewPool(backend.Deps{
		K8s:        s.kube.sourceFactory(),
		Log:        log.With(logging.FieldComponent, "backend"),
		Registerer: reg,
		DNS:        net.DefaultResolver,
		Options: backend.Options{
			ResolveInterval: cfg.ResolveInterval,
			EjectionBackoff: cfg.EjectionBackoff,
			DialTimeout:     cfg.BackendDialTimeout,

			MaxIdleConnsPerEndpoint: cfg.BackendMaxIdleConns,
			ResponseHeaderTimeout:   responseHeaderTimeout(cfg.BackendResponseHeaderTimeout),
		},
	})
	if s.state, err = newState(dyn, warnings); err != nil {
		return nil, err
	}
	if err = s.pool.Update(dyn.Backends); err != nil {
		return nil, fmt.Errorf("building backends: %w", err)
	}
	s.watcher = config.NewWatcher(cfg.Documents, s.applyFile, log.With(logging.FieldComponent, "config"), reg)

	if s.enabled(s.listeners.https, cfg.HTTPSPort) || s.enabled(s.listeners.grpc, cfg.GRPCPort) {
		s.tls, err = tlsconfig.NewServer(tlsconfig.ServerConfig{
			CertFile:           cfg.TLSCertFile,
			KeyFile:            cfg.TLSKeyFile,
			ClientCAFiles:      cfg.TLSClientCAFiles,
			ClientCertRequired: cfg.TLSClientCertReq,
		}, log.With(logging.FieldComponent, "tls"))
		if err != nil {
			return nil, err
		}
	}

	// Authentication: OIDC discovery happens in Run (retried until the issuer answers; /readyz says why meanwhile).
	if s.auth, err = authn.New(cfg.Auth.Authn(), log.With(logging.FieldComponent, "authn"), reg); err != nil {
		return nil, err
	}
	if s.gate, err = authz.NewGate(s.auth, reg); err != nil {
		return nil, err
	}

	// One admission step (routing, requirement, gate) and one forwarding-header policy for every protocol.
	policies, err := newPolicies(cfg.Identity, log.With(logging.FieldComponent, "identity"), reg)
	if err != nil {
		return nil, err
	}
	s.signer = policies.Identity
	admit, err := admission.NewWithPolicies(s.gate, reg, policies)
	if err != nil {
		return nil, err
	}
	fwd := forwarded.New(ipNetsToPrefixes(cfg.TrustedProxies))
	if s.tracer, err = tracing.New(cfg.Tracing, buildinfo.Get().Version); err != nil {
		return nil, err
	}
	if s.tracer != nil {
		log.Info("tracing: exporting spans", "endpoint", cfg.Tracing.OTLPEndpoint, "sampling_ratio", cfg.Tracing.SamplingRatio)
	}
	// One adhoc dialer for HTTP, gRPC and CONNECT: one timeout, one address bound, one dial guard.
	adhocDeps := backend.Deps{Log: log.With(logging.FieldComponent, "adhoc"), Registerer: reg, DNS: net.DefaultResolver, Options: backend.Options{DialTimeout: cfg.BackendDialTimeout, ResponseHeaderTimeout: responseHeaderTimeout(cfg.BackendResponseHeaderTimeout)}}
	adhoc := backend.NewAdhocDialer(adhocDeps, backend.DefaultDialGuard())

	s.grpcProxy = grpcproxy.New(grpcproxy.Deps{
		Log:        log.With(logging.FieldComponent, "grpcproxy"),
		Registerer: reg,
		Routes:     s.state,
		Backends:   s.pool,
		Adhoc:      adhoc,
		Admission:  admit,
		Forwarded:  fwd,
		Tracer:     s.tracer,
	})
	grpcOpts := append(s.grpcProxy.ServerOptions(), grpcServerOptions(serve.DefaultReadHeaderTimeout, serve.DefaultIdleTimeout, cfg.GRPCStreamWindow)...)
	if s.tls != nil {
		s.grpcTLS = grpc.NewServer(append(grpcOpts, grpc.Creds(credentials.NewTLS(s.tls.TLSConfig())))...)
	}
	s.grpcHTTPS = grpc.NewServer(grpcOpts...)

	tunnels := tunnel.New(tunnel.Deps{
		Log:         log.With(logging.FieldComponent, "tunnel"),
		Registerer:  reg,
		Admission:   admit,
		Routes:      s.state,
		Backends:    s.pool,
		Adhoc:       adhoc,
		IdleTimeout: cfg.TunnelIdleTimeout,
		BufferSize:  cfg.ProxyBufferSize,
		Tracer:      s.tracer,
	})
	s.httpProxy = httpproxy.New(httpproxy.Deps{
		Log:        log.With(logging.FieldComponent, "httpproxy"),
		Registerer: reg,
		Routes:     s.state,
		Backends:   s.pool,
		Adhoc:      backend.NewAdhocTransport(adhocDeps, adhoc),
		GRPC:       grpcrelay.PacedHandler(s.grpcHTTPS, grpcrelay.DefaultMaxRecvMsgSize), // ServeHTTP's reader would queue the body unbounded
		Connect:    tunnels,
		Admission:  admit,
		Forwarded:  fwd,
		Tracer:     s.tracer,
		Options:    httpproxy.Options{FlushInterval: cfg.FlushInterval, BufferSize: cfg.ProxyBufferSize},
	})

	if err = s.listen(); err != nil {
		return nil, err
	}
	return s, nil
}

// grpcServerOptions are the limits of kedge's gRPC servers, those of the HTTPS port in gRPC's terms: handshake bounds
// the TLS handshake and the HTTP/2 preface of a new connection, idle closes (GOAWAY) a connection without calls for
// that long, and a call's headers (metadata) may take 64 KiB (grpc-go's default is 16 MiB). Streams themselves have
// no time limit. A message may take grpcrelay.DefaultMaxRecvMsgSize, set here because the HTTPS port's pacing
// (grpcrelay.PacedHandler) stops reading at a larger one and relies on gRPC refusing it. window (when not 0) fixes
// each stream's flow-control window on the gRPC port, which bounds what a call whose backend does not keep up holds
// there (grpc-go's dynamic window grows to 16 MiB); the connection's window only paces the client (grpc-go hands it
// back as data arrives), so it is left large enough not to hold streams back. On the HTTPS port (ServeHTTP) net/http
// does the flow control, and these windows have no effect.
func grpcServerOptions(handshake, idle time.Duration, window int) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(grpcrelay.DefaultMaxRecvMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(100),
		grpc.ConnectionTimeout(handshake),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idle}),
		grpc.MaxHeaderListSize(serve.DefaultMaxHeaderBytes),
	}
	if window > 0 {
		opts = append(opts, grpc.StaticStreamWindowSize(int32(window)), grpc.StaticConnWindowSize(int32(max(window, 16<<20))))
	}
	return opts
}

// enabled reports whether a listener serves: one given in Deps.Listeners always does, otherwise its port must not
// be 0.
func (s *Server) enabled(given net.Listener, port int) bool { return given != nil || port != 0 }

// listen binds each enabled port that has no listener from Deps.Listeners yet.
func (s *Server) listen() error {
	bind := func(ln *net.Listener, port int, name string) error {
		if !s.enabled(*ln, port) || *ln != nil {
			return nil
		}
		l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.BindAddress, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		*ln = l
		return nil
	}
	if err := bind(&s.listeners.debug, s.cfg.HTTPPort, "debug"); err != nil {
		return err
	}
	if err := bind(&s.listeners.https, s.cfg.HTTPSPort, "https"); err != nil {
		return err
	}
	return bind(&s.listeners.grpc, s.cfg.GRPCPort, "grpc")
}

// Addrs reports the listeners' addresses ("" for a disabled one). A port of 0 in the config disables its listener;
// a test that needs the ports binds 127.0.0.1:0 itself and passes the listeners in Deps.Listeners.
func (s *Server) Addrs() (debug, https, grpc string) {
	addr := func(ln net.Listener) string {
		if ln == nil {
			return ""
		}
		return ln.Addr().String()
	}
	return addr(s.listeners.debug), addr(s.listeners.https), addr(s.listeners.grpc)
}

// Reload is what SIGHUP does: it re-reads the config documents (asynchronously, through the watcher) and the TLS
// certificate, key and client CA files and the identity signing key (now). TLS files or a key that cannot be loaded
// are logged as a warning and the previous ones stay in use, as with a change noticed by a handshake.
func (s *Server) Reload() {
	s.watcher.Trigger()
	if s.signer != nil {
		s.signer.Reload()
	}
	if s.tls == nil {
		return
	}
	if err := s.tls.Reload(); err != nil {
		s.log.Warn("reload: TLS files not loaded, still serving the previous certificate", logging.FieldError, err)
	}
}

// Run serves until ctx is done, then shuts down in two phases. First readiness turns false while the listeners keep
// accepting and serving for the shutdown delay (see shutdownDelay), so that load balancers stop sending new
// connections before anything is refused. Then the listeners stop accepting, in-flight requests, streams and tunnels
// get up to the drain timeout, and everything is closed. A failing server skips the delay.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	// One connection budget for both proxy ports; the debug port has none, so probes and metrics always get in.
	limiter, err := serve.NewConnLimiter(serve.ConnLimits{Total: s.cfg.MaxConnections, PerIP: s.cfg.MaxConnectionsPerIP}, s.registry)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)

	// Serving stops when the parent ctx ends (SIGTERM) or any server fails.
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopAll := func() { stopOnce.Do(func() { s.shutting.Store(true); s.ready.Store(false); close(stop) }) }
	serveCtx, cancelServe := context.WithCancel(context.Background())
	go func() { <-stop; cancelServe() }()

	g.Go(func() error { return s.watcher.Run(serveCtx) })
	g.Go(func() error { return s.kube.run(serveCtx, s.applyDiscovered) })
	g.Go(func() error { return s.auth.Run(serveCtx) })
	if s.signer != nil {
		g.Go(func() error { return s.signer.Run(serveCtx) })
	}
	if ln := s.listeners.debug; ln != nil {
		deps := admin.Deps{
			Log:         s.log.With(logging.FieldComponent, "admin"),
			Gatherer:    s.registry,
			MetricsPath: s.cfg.MetricsPath,
			Ready:       s.readiness,
			Config:      s.effectiveConfig,
			Cmdline:     config.RedactArgs(os.Args),
			RemoteDebug: s.cfg.DebugRemoteAccess,
		}
		if s.cfg.Auth.OIDCForDebugEndpoints {
			deps.Protect = protectDebug(s.gate)
		}
		if s.signer != nil {
			deps.JWKS = s.signer
		}
		h := admin.New(deps)
		srv := serve.HTTPServer(h, serve.HTTPOptions{Name: "http_debug"}, s.log)
		// The debug port keeps answering until the proxies have drained, so probes see "not ready" meanwhile.
		g.Go(func() error { return ignoreDrainTimeout(serve.Serve(serveCtx, srv, ln, time.Second)) })
	}
	var httpsSrv *http.Server
	if ln := s.listeners.https; ln != nil {
		srv := serve.HTTPServer(s.httpProxy, serve.HTTPOptions{
			Name:         "http_tls",
			ReadTimeout:  s.cfg.ReadTimeout,
			WriteTimeout: s.cfg.WriteTimeout,
			TLSConfig:    s.tls.TLSConfig(),
		}, s.log)
		ln := limiter.Wrap(ln, "https")
		g.Go(func() error { return s.drained("https", serve.Serve(serveCtx, srv, ln, s.cfg.DrainTimeout)) })
		httpsSrv = srv
	}
	if ln := s.listeners.grpc; ln != nil {
		ln := limiter.Wrap(ln, "grpc")
		g.Go(func() error { return s.drained("grpc", serve.GRPC(serveCtx, s.grpcTLS, ln, s.cfg.DrainTimeout)) })
	}
	g.Go(func() error {
		<-serveCtx.Done()
		// gRPC calls bounced from the HTTPS port live inside net/http handlers, which the HTTPS drain waits for.
		s.grpcHTTPS.GracefulStop()
		return nil
	})

	go func() {
		select {
		case <-ctx.Done():
			s.shutdownDelay(gctx.Done(), httpsSrv)
			s.log.Info("shutting down: listeners closed, draining", "drain_timeout", s.cfg.DrainTimeout)
		case <-gctx.Done():
		}
		stopAll()
	}()

	s.ready.Store(true)
	s.log.Info("kedge serving", "debug", addrOf(s.listeners.debug), "https", addrOf(s.listeners.https), "grpc", addrOf(s.listeners.grpc))
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.log.Info("kedge stopped")
	return err
}

// shutdownDelay is the first phase of a graceful shutdown. Readiness fails at once, so that load balancers take this
// kedge out of rotation, while the listeners keep accepting and serving for cfg.ShutdownDelay: a load balancer
// that has not noticed yet still gets its new connections served. Meanwhile keep-alives are off on the HTTPS port:
// HTTP/1.1 responses carry Connection: close and idle h2 connections get a GOAWAY, so clients open their next
// connection through the load balancer, which sends it elsewhere once it has noticed, instead of racing the close.
// The delay ends early when SkipShutdownDelay is called (a second SIGTERM) or a server fails (failed is closed).
func (s *Server) shutdownDelay(failed <-chan struct{}, https *http.Server) {
	s.shutting.Store(true)
	if s.cfg.ShutdownDelay <= 0 {
		return
	}
	if https != nil {
		https.SetKeepAlivesEnabled(false)
	}
	s.log.Info("shutting down: not ready, still serving for the shutdown delay", "delay", s.cfg.ShutdownDelay)
	t := time.NewTimer(s.cfg.ShutdownDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.skipDelay:
		s.log.Info("shutdown delay ended early")
	case <-failed:
	}
}

// SkipShutdownDelay ends the shutdown delay now, or makes a later one end at once: kedge's main calls it on a second
// SIGTERM. It is safe to call at any time, more than once, from any goroutine.
func (s *Server) SkipShutdownDelay() { s.skipOnce.Do(func() { close(s.skipDelay) }) }

// drained turns a drain that hit its deadline into a log line: cutting what is left is the promised behaviour, not
// a failure of the process.
func (s *Server) drained(listener string, err error) error {
	if errors.Is(err, serve.ErrDrainTimeout) {
		s.log.Warn("drain deadline reached; remaining requests were cut", "listener", listener, "error", err)
		return nil
	}
	return err
}

func ignoreDrainTimeout(err error) error {
	if errors.Is(err, serve.ErrDrainTimeout) {
		return nil
	}
	return err
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return "disabled"
	}
	return ln.Addr().String()
}

func (s *Server) readiness() error {
	switch {
	case s.shutting.Load():
		return errors.New("shutting down")
	case !s.ready.Load():
		return errors.New("starting")
	}
	if err := s.kube.ready(); err != nil { // informer caches not synced yet, with the reason
		return err
	}
	return s.auth.Ready() // e.g. "OIDC issuer https://... unreachable: ..."
}

func (s *Server) close() {
	for _, ln := range []net.Listener{s.listeners.debug, s.listeners.https, s.listeners.grpc} {
		if ln != nil {
			_ = ln.Close()
		}
	}
	if s.grpcProxy != nil {
		s.grpcProxy.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	// Last, after the drain: the spans of the requests that finished during it are sent too.
	ctx, cancel := context.WithTimeout(context.Background(), tracerFlushTimeout)
	defer cancel()
	if err := s.tracer.Shutdown(ctx); err != nil {
		s.log.Warn("tracing: spans not flushed at shutdown", logging.FieldError, err)
	}
}

// tracerFlushTimeout bounds sending the last spans at shutdown.
const tracerFlushTimeout = 5 * time.Second

// ipNetsToPrefixes converts the --server_trusted_proxies values.
func ipNetsToPrefixes(nets []net.IPNet) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(nets))
	for _, n := range nets {
		addr, ok := netip.AddrFromSlice(n.IP)
		ones, _ := n.Mask.Size()
		if ok {
			out = append(out, netip.PrefixFrom(addr.Unmap(), min(ones, addr.Unmap().BitLen())))
		}
	}
	return out
}

// responseHeaderTimeout maps --backend_response_header_timeout (0: none) to backend.Options (negative: none).
func responseHeaderTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
