package winch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// Explain writes what winch would do with destination hostport ("host" or "host:port", as a client would write
// it, or an http:// or https:// URL) for HTTP/CONNECT and for gRPC: the matching route, the kedge URL, the auth
// sources and MITM. It sends nothing. It validates what it reads: a bad mapper, or a bad auth document when one is
// given (or a route naming a source it lacks), is an error. ok reports whether either proxy maps the destination to
// a kedge whose auth sources can be loaded.
func Explain(cfg Config, hostport string, out io.Writer) (ok bool, err error) {
	dest, err := destinationOf(hostport)
	if err != nil {
		return false, err
	}
	var (
		m       *config.Mapper
		sources map[string]string // auth source -> its kind, or why it cannot be loaded; nil without an auth document
	)
	if cfg.Documents.AuthPath == "" && cfg.Documents.AuthInline == "" {
		if m, err = config.LoadMapper(cfg.Documents.MapperPath, cfg.Documents.MapperInline); err != nil {
			return false, err
		}
	} else {
		dyn, err := config.Load(cfg.Documents)
		if err != nil {
			return false, err
		}
		m, sources = dyn.Mapper, describeSources(cfg, dyn.Auth)
	}
	mp := mapper.New(m.Routes)
	if dest != hostport {
		fmt.Fprintf(out, "%s: destination %s (routes from %s)\n", hostport, dest, m.Name)
	} else {
		fmt.Fprintf(out, "%s (routes from %s)\n", hostport, m.Name)
	}
	unchecked := false
	for _, p := range []struct {
		label string
		proto mapper.Protocol
	}{{"HTTP and CONNECT", mapper.ProtocolHTTP}, {"gRPC", mapper.ProtocolGRPC}} {
		d, err := mp.Map(dest, p.proto)
		if err != nil {
			fmt.Fprintf(out, "  %s: %s\n", p.label, unmatchedText(err, p.proto, cfg.Unmatched))
			continue
		}
		usable := true
		describe := func(name string) string {
			if name == "" {
				return "none"
			}
			if sources == nil {
				unchecked = true
				return strconv.Quote(name)
			}
			what := sources[name]
			if strings.HasPrefix(what, "cannot be loaded") {
				usable = false
			}
			return strconv.Quote(name) + " (" + what + ")"
		}
		r := m.Routes[d.Route]
		rule := "direct " + strconv.Quote(r.Direct)
		if r.Regexp != nil {
			rule = "regexp " + strconv.Quote(r.Regexp.String())
		}
		fmt.Fprintf(out, "  %s: route %d (%s, protocol %s)\n", p.label, d.Route, rule, r.Protocol)
		fmt.Fprintf(out, "    kedge:        %s\n", d.KedgeURL)
		fmt.Fprintf(out, "    proxy_auth:   %s\n", describe(d.ProxyAuth))
		fmt.Fprintf(out, "    backend_auth: %s\n", describe(d.BackendAuth))
		if p.proto == mapper.ProtocolHTTP {
			fmt.Fprintf(out, "    mitm:         %v\n", d.MITM)
		}
		ok = ok || usable
	}
	if unchecked {
		fmt.Fprintf(out, "auth sources not checked: no auth document given (%s)\n", config.AuthPathName)
	}
	return ok, nil
}

// describeSources builds the sources of auth as winch would (no network I/O) and says, for each, its kind or why
// it cannot be loaded.
func describeSources(cfg Config, auth *config.Auth) map[string]string {
	out := make(map[string]string, len(auth.Sources))
	for _, s := range auth.Sources {
		out[s.Name] = string(s.Kind)
	}
	stateDir, err := cfg.ResolvedStateDir()
	if err != nil {
		return out
	}
	set, err := credentials.New(auth.Sources, credentials.Deps{StateDir: stateDir})
	if err != nil {
		return out
	}
	for _, err := range set.Unavailable() {
		var srcErr *credentials.Error
		if errors.As(err, &srcErr) {
			out[srcErr.Source] = "cannot be loaded: " + strings.TrimPrefix(srcErr.Error(), "auth source "+strconv.Quote(srcErr.Source)+": ")
		}
	}
	return out
}

// destinationOf turns what the user typed into the destination a client would ask winch for: "host[:port]" stays
// as it is; a URL becomes what its client sends: an http:// URL its host[:port] as written (absolute-form
// requests keep the Host of the URL), an https:// URL host:port with the port defaulting to 443 (CONNECT always
// names a port).
func destinationOf(arg string) (string, error) {
	scheme, _, ok := strings.Cut(arg, "://")
	if !ok {
		return arg, nil
	}
	u, err := url.Parse(arg)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("winch: %q is not host[:port] or a URL with a host", arg)
	}
	switch strings.ToLower(scheme) {
	case "http", "ws":
		return u.Host, nil
	case "https", "wss":
		if u.Port() == "" {
			return net.JoinHostPort(u.Hostname(), "443"), nil
		}
		return u.Host, nil
	}
	return "", fmt.Errorf("winch: %q: scheme %q is not http or https (winch proxies http:// and https:// URLs; give host[:port] for gRPC)", arg, scheme)
}

func unmatchedText(err error, proto mapper.Protocol, unmatched string) string {
	switch {
	case errors.Is(err, mapper.ErrNotKedgeDestination), errors.Is(err, mapper.ErrIPLiteral):
		if proto == mapper.ProtocolGRPC {
			return err.Error() + "; refused (Unimplemented)"
		}
		if unmatched == string(httpforward.UnmatchedReject) {
			return err.Error() + "; refused with 403 (--unmatched=reject)"
		}
		return err.Error() + "; sent directly, without tokens (--unmatched=direct)"
	}
	return "error: " + err.Error()
}

// CAPEM returns the MITM CA certificate in PEM form, creating the CA in the state directory if needed.
func CAPEM(cfg Config) ([]byte, error) {
	dir, err := cfg.ResolvedStateDir()
	if err != nil {
		return nil, err
	}
	return httpforward.NewCA(dir).PEM()
}

// Login makes auth source name obtain fresh credentials (an OIDC login; a refresh for the other kinds). The login
// callback needs winch's HTTP port: when it is free, Login serves the callback there itself; when a winch is
// running on it, Login asks that winch to log in (POST /winch/login/NAME), so its cached tokens are renewed too.
// Either way the login's instructions (the URL to open, the device code) are written to out, the browser is opened
// here unless cfg.NoBrowser, and cfg.OIDCDeviceFlow chooses the flow.
func Login(ctx context.Context, cfg Config, log logging.Logger, name string, out io.Writer) error {
	auth, err := config.LoadAuth(cfg.Documents.AuthPath, cfg.Documents.AuthInline)
	if err != nil {
		return err
	}
	if _, ok := auth.Source(name); !ok {
		return fmt.Errorf("winch: no auth source called %q %s", name, auth.In())
	}
	stateDir, err := cfg.ResolvedStateDir()
	if err != nil {
		return err
	}
	opts := credentials.LoginOptions{Flow: credentials.FlowBrowser, Prompt: promptPrinter(out, cfg.NoBrowser)}
	if cfg.OIDCDeviceFlow {
		opts.Flow = credentials.FlowDevice
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr())
	if errors.Is(err, syscall.EADDRINUSE) {
		fmt.Fprintf(out, "winch is running on %s; asking it to log in to %q\n", cfg.HTTPAddr(), name)
		return askLogin(ctx, cfg, name, opts, out)
	}
	if err != nil {
		return fmt.Errorf("winch: listening for the login callback: %w", err)
	}
	callbacks := newCallbackMux()
	set, err := credentials.New(auth.Sources, credentials.Deps{
		Log:             log,
		StateDir:        stateDir,
		Callback:        callbacks,
		CallbackBaseURL: "http://" + localAddr(ln.Addr()),
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	srvCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	srv := serve.HTTPServer(httpforward.GuardLocal(callbacks), serve.HTTPOptions{Name: "winch_login"}, log)
	done := make(chan error, 1)
	go func() { done <- serve.Serve(srvCtx, srv, ln, time.Second) }()
	err = set.Login(ctx, name, opts)
	stop()
	<-done
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "logged in to %q\n", name)
	return nil
}

// promptPrinter returns the LoginOptions.Prompt of `winch login`: it tells the user what to do and, for the
// browser flow, opens the URL ($BROWSER, then the platform opener) unless noBrowser.
func promptPrinter(out io.Writer, noBrowser bool) func(credentials.Prompt) {
	return func(p credentials.Prompt) {
		if p.Device {
			fmt.Fprintf(out, "To log in to %q, open this URL on any device and enter (or confirm) the code %s:\n\n    %s\n\n", p.Source, p.UserCode, p.URL)
			return
		}
		fmt.Fprintf(out, "To log in to %q, open this URL in a browser:\n\n    %s\n\n", p.Source, p.URL)
		switch {
		case noBrowser:
		case credentials.OpenBrowser(p.URL) != nil:
			fmt.Fprintf(out, "No browser could be opened ($BROWSER, xdg-open or open); open the URL yourself.\n")
		default:
			fmt.Fprintf(out, "A browser was asked to open it; waiting for the login to complete.\n")
		}
	}
}

// Logout deletes the cached tokens of auth source name, and tells a running winch to forget them too.
func Logout(ctx context.Context, cfg Config, log logging.Logger, name string, out io.Writer) error {
	auth, err := config.LoadAuth(cfg.Documents.AuthPath, cfg.Documents.AuthInline)
	if err != nil {
		return err
	}
	stateDir, err := cfg.ResolvedStateDir()
	if err != nil {
		return err
	}
	set, err := credentials.New(auth.Sources, credentials.Deps{Log: log, StateDir: stateDir})
	if err != nil {
		return err
	}
	if err := set.Logout(name); err != nil {
		return err
	}
	if err := askRunning(ctx, cfg, "logout", name, 5*time.Second, io.Discard); err != nil && !isConnRefused(err) {
		fmt.Fprintf(out, "note: the running winch did not forget its tokens: %v\n", err)
	}
	fmt.Fprintf(out, "logged out of %q\n", name)
	return nil
}

// askRunning sends POST /winch/ACTION/NAME to the winch running on cfg's HTTP address.
func askRunning(ctx context.Context, cfg Config, action, name string, timeout time.Duration, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := runningAddr(cfg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/winch/"+action+"/"+name, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("winch: asking the winch running on %s to %s %q: %w", addr, actionVerb(action), name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		msg := resp.Header.Get(wire.HeaderWinchError)
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		return fmt.Errorf("winch: %s %q: %s", actionVerb(action), name, msg)
	}
	_, _ = out.Write(body)
	return nil
}

// actionVerb is how messages name a local endpoint's action: "log in", not "login".
func actionVerb(action string) string {
	switch action {
	case "login":
		return "log in to"
	case "logout":
		return "log out of"
	}
	return action
}

func isConnRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
