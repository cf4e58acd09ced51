// Package credentials turns winch's auth document into named token sources: static tokens, kubeconfig users
// (through client-go's own machinery), interactive OIDC logins with a cached refresh token, the device-code flow, and
// service-account exchanges. Every source caches its token until shortly before expiry and refreshes it once, even
// under concurrent callers.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// Timing of token handling.
const (
	// expiryMargin is how long before its expiry a cached token is considered stale, so that a token never expires
	// on its way to kedge.
	expiryMargin = 30 * time.Second
	// requestTimeout bounds every call to an OIDC provider (discovery, token and device endpoints).
	requestTimeout = 30 * time.Second
	// loginTimeout is how long an interactive login waits for the browser to come back to the callback.
	loginTimeout = 5 * time.Minute
	// minInvalidateInterval is the least time between two invalidations of its current token that a source acts
	// on. kedge may keep refusing fresh tokens (its OIDC settings, or a backend answering gRPC Unauthenticated),
	// and each invalidation costs a refresh at the provider or an exec-plugin run: without a limit every refused
	// request would cause one.
	minInvalidateInterval = 30 * time.Second
)

// Source produces bearer tokens for one named auth source. Its methods are safe for concurrent use.
type Source interface {
	// Name is the source's name in the auth document.
	Name() string
	// Token returns a valid token, refreshing it (once, even under concurrent callers) when the cached one is
	// missing or expires within 30 s. Errors are *Error and say what the user should do.
	Token(ctx context.Context) (string, error)
	// Invalidate drops the cached token if it is still token, so that the next Token call refreshes; winch calls it
	// when kedge answered 401 to a request carrying token.
	Invalidate(token string)
}

// CallbackRegistrar is the part of winch's HTTP mux that OIDC sources register their login callback paths on.
// *http.ServeMux satisfies it.
type CallbackRegistrar interface {
	Handle(path string, h http.Handler)
}

// Deps are the collaborators of a Set. Zero fields get the defaults described on each.
type Deps struct {
	// Log receives login instructions and refresh failures; never tokens. Default: discard.
	Log logging.Logger
	// HTTPClient makes the OIDC discovery, token and device calls. Default: a client that never uses HTTP(S)_PROXY.
	HTTPClient *http.Client
	// StateDir holds winch's state; OIDC tokens are cached in StateDir/tokens (created 0700). Default:
	// $XDG_CONFIG_HOME/winch, or ~/.config/winch.
	StateDir string
	// OpenBrowser shows url to the user when a login has no LoginOptions.Prompt. It must not wait for the user (the
	// login waits for the callback). Default: OpenBrowser ($BROWSER, then xdg-open or open).
	OpenBrowser func(url string) error
	// Callback is where OIDC sources register their login callbacks. Nil disables interactive logins.
	Callback CallbackRegistrar
	// CallbackBaseURL is the URL winch's HTTP listener is reachable on from the browser, e.g.
	// "http://127.0.0.1:8070"; the OIDC redirect URL is CallbackBaseURL + the source's callback path.
	CallbackBaseURL string
	// DeviceFlow makes OIDC logins use the device authorization grant (--oidc_device_flow) instead of the browser.
	DeviceFlow bool
	// Now is the clock used for token expiry. Default: time.Now.
	Now func() time.Time
}

// withDefaults fills in the zero fields of d.
func (d Deps) withDefaults() (Deps, error) {
	if d.Log == nil {
		d.Log = logging.Discard()
	}
	if d.HTTPClient == nil {
		d.HTTPClient = defaultHTTPClient()
	}
	if d.StateDir == "" {
		dir, err := DefaultStateDir()
		if err != nil {
			return d, err
		}
		d.StateDir = dir
	}
	if d.OpenBrowser == nil {
		d.OpenBrowser = OpenBrowser
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	d.CallbackBaseURL = strings.TrimSuffix(d.CallbackBaseURL, "/")
	return d, nil
}

// Error is a failure to produce a token. Its message names the source and says what to do, e.g.
// `auth source "corp": refresh token expired; run "winch login corp"`.
type Error struct {
	// Source is the name of the auth source.
	Source string
	// Err is what went wrong.
	Err error
	// Hint tells the user how to fix it; may be empty.
	Hint string
}

// Error implements error.
func (e *Error) Error() string {
	msg := fmt.Sprintf("auth source %q: %v", e.Source, e.Err)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// loginHint is the hint of every error that a new login fixes.
func loginHint(name string) string { return fmt.Sprintf("run %q", "winch login "+name) }

// source is what every kind implements beyond Source, for the login and logout subcommands.
type source interface {
	Source
	// login forces a new login (oidc, as opts say) or a refresh (the others, which ignore opts).
	login(ctx context.Context, opts LoginOptions) error
	// logout forgets every cached token, on disk too.
	logout() error
}

// Set holds the sources of one auth document by name. It is immutable once built and safe for concurrent use.
type Set struct {
	sources map[string]source
	limited map[string]*limitedSource // what Get returns, by name
	broken  []*unavailableSource      // the sources that could not be built, in document order
}

// New builds every source of srcs. It does no network I/O: kube sources parse their kubeconfig, service-account
// sources read their key file. A kube or service-account source whose file is missing or wrong does not fail New:
// its Token and Login return that error (naming the source and the reason) and try again, so that only the routes
// using it fail until the file is fixed; Unavailable lists them. Once all were built, the OIDC sources' login callbacks (login_callback_path, by
// default /winch/login/NAME) are registered on d.Callback; nothing is registered when New fails.
func New(srcs []config.AuthSource, d Deps) (*Set, error) {
	d, err := d.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	s := &Set{sources: make(map[string]source, len(srcs))}
	var errs []error
	for _, c := range srcs {
		if _, dup := s.sources[c.Name]; dup {
			errs = append(errs, &Error{Source: c.Name, Err: errors.New("defined twice")})
			continue
		}
		src, err := newSource(c, d)
		switch {
		case err == nil:
		case c.Kind == config.KindKube || c.Kind == config.KindServiceAccountOIDC:
			// A file outside the auth document is missing or wrong: only the routes that use this source fail.
			u := newUnavailableSource(c, d, err)
			s.broken = append(s.broken, u)
			src = u
		default:
			errs = append(errs, err)
			continue
		}
		s.sources[c.Name] = src
	}
	callbacks := map[string]string{} // path -> source name
	for name, src := range s.sources {
		if cb, ok := src.(callbackSource); ok {
			path, _ := cb.callback()
			if other, dup := callbacks[path]; dup {
				first, second := min(name, other), max(name, other) // map order is random; the message is not
				errs = append(errs, &Error{Source: second, Err: fmt.Errorf("login callback path %q is also used by %q", path, first)})
			}
			callbacks[path] = name
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("credentials: %w", errors.Join(errs...))
	}
	s.limited = make(map[string]*limitedSource, len(s.sources))
	for name, src := range s.sources {
		s.limited[name] = &limitedSource{source: src, now: d.Now}
	}
	if d.Callback != nil {
		for _, src := range s.sources {
			if cb, ok := src.(callbackSource); ok {
				d.Callback.Handle(cb.callback())
			}
		}
	}
	return s, nil
}

// callbackSource is a source with a login callback on winch's HTTP listener.
type callbackSource interface {
	callback() (path string, h http.Handler)
}

func newSource(c config.AuthSource, d Deps) (source, error) {
	log := d.Log.With("auth_source", c.Name)
	switch c.Kind {
	case config.KindToken:
		return &staticSource{name: c.Name, token: c.Token}, nil
	case config.KindDummy:
		return &staticSource{name: c.Name, token: c.Token, dummy: true}, nil
	case config.KindKube:
		return newKubeSource(c, log)
	case config.KindOIDC:
		return newOIDCSource(c, d, log), nil
	case config.KindServiceAccountOIDC:
		return newServiceAccountSource(c, d, log)
	}
	return nil, &Error{Source: c.Name, Err: fmt.Errorf("unknown kind %q", c.Kind)}
}

// Unavailable returns, in document order, an *Error for each source that could not be built when the Set was (see
// New) and has not been built since: what winch logs at startup and shows on /debug/config.
func (s *Set) Unavailable() []error {
	var out []error
	for _, u := range s.broken {
		if err := u.unavailable(); err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Get returns the source called name. Its Invalidate acts on the current token at most once per 30 s.
func (s *Set) Get(name string) (Source, bool) {
	src, ok := s.limited[name]
	if !ok {
		return nil, false
	}
	return src, true
}

// limitedSource passes Invalidate of the token it last handed out on to the source at most once per
// minInvalidateInterval; invalidations of older tokens, which the sources ignore or treat as cheap, pass always.
type limitedSource struct {
	source
	now func() time.Time

	mu       sync.Mutex
	last     string    // the token Token returned last; guarded by mu
	honoured time.Time // when an invalidation of a current token was last passed on; guarded by mu
}

func (l *limitedSource) Token(ctx context.Context) (string, error) {
	tok, err := l.source.Token(ctx)
	if err == nil {
		l.mu.Lock()
		l.last = tok
		l.mu.Unlock()
	}
	return tok, err
}

func (l *limitedSource) Invalidate(token string) {
	l.mu.Lock()
	if token != "" && token == l.last {
		now := l.now()
		if !l.honoured.IsZero() && now.Sub(l.honoured) < minInvalidateInterval {
			l.mu.Unlock()
			return
		}
		l.honoured = now
	}
	l.mu.Unlock()
	l.source.Invalidate(token)
}

// Login makes source name obtain fresh credentials: an interactive (or device-flow) login for oidc sources, a
// refresh for the others. It is what `winch login NAME` runs; opts choose the flow and who shows the prompt.
func (s *Set) Login(ctx context.Context, name string, opts LoginOptions) error {
	src, ok := s.sources[name]
	if !ok {
		return fmt.Errorf("credentials: no auth source called %q", name)
	}
	return src.login(ctx, opts)
}

// Logout deletes the cached tokens of source name, in memory and on disk. It is what `winch logout NAME` runs.
func (s *Set) Logout(name string) error {
	src, ok := s.sources[name]
	if !ok {
		return fmt.Errorf("credentials: no auth source called %q", name)
	}
	return src.logout()
}

// defaultHTTPClient talks to OIDC providers directly: winch never routes its own traffic through HTTP(S)_PROXY,
// which might point at winch itself.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return &http.Client{Transport: t, Timeout: requestTimeout}
}

// DefaultStateDir is where winch keeps its state unless told otherwise: $XDG_CONFIG_HOME/winch (when that is an
// absolute path), or ~/.config/winch.
func DefaultStateDir() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "winch"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the state directory: %w", err)
	}
	return filepath.Join(home, ".config", "winch"), nil
}
