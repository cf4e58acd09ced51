package credentials

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// rebuildInterval is the least time between two attempts to build a source that could not be built: each attempt
// reads files (a kubeconfig, a key file), and a busy client must not turn every request into one.
const rebuildInterval = time.Second

// unavailableSource stands for a source that New could not build because something outside the auth document is
// missing or wrong (a kubeconfig that does not exist, an unreadable service-account key). It answers every call with
// the build error, which names the source and the reason, so that only the routes that use the source fail; and it
// tries the build again (at most once per rebuildInterval), so that creating the missing file fixes the source
// without a restart.
type unavailableSource struct {
	cfg config.AuthSource
	d   Deps

	mu      sync.Mutex // guards the fields below
	built   source     // the source once a build succeeded; nil before
	err     error      // the last build error, an *Error naming the source
	lastTry time.Time  // when the build was last tried
}

var _ Source = (*unavailableSource)(nil)

func newUnavailableSource(c config.AuthSource, d Deps, err error) *unavailableSource {
	return &unavailableSource{cfg: c, d: d, err: sourceError(c.Name, err), lastTry: d.Now()}
}

// sourceError makes err an *Error of source name, so that every message names the source.
func sourceError(name string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Source: name, Err: err}
}

func (u *unavailableSource) Name() string { return u.cfg.Name }

// get returns the built source, trying the build again when force is set or rebuildInterval has passed; otherwise
// the build error.
func (u *unavailableSource) get(force bool) (source, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.built != nil {
		return u.built, nil
	}
	now := u.d.Now()
	if !force && now.Sub(u.lastTry) < rebuildInterval {
		return nil, u.err
	}
	u.lastTry = now
	src, err := newSource(u.cfg, u.d)
	if err != nil {
		u.err = sourceError(u.cfg.Name, err)
		return nil, u.err
	}
	u.d.Log.Info("auth source loaded", "auth_source", u.cfg.Name)
	u.built = src
	return src, nil
}

// unavailable returns the last build error, or nil once the source was built.
func (u *unavailableSource) unavailable() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.built != nil {
		return nil
	}
	return u.err
}

func (u *unavailableSource) Token(ctx context.Context) (string, error) {
	src, err := u.get(false)
	if err != nil {
		return "", err
	}
	return src.Token(ctx)
}

func (u *unavailableSource) Invalidate(token string) {
	u.mu.Lock()
	src := u.built
	u.mu.Unlock()
	if src != nil {
		src.Invalidate(token)
	}
}

// login tries the build at once: `winch login NAME` is how a user says the missing file is there now.
func (u *unavailableSource) login(ctx context.Context, opts LoginOptions) error {
	src, err := u.get(true)
	if err != nil {
		return err
	}
	return src.login(ctx, opts)
}

// logout forgets the cached tokens of the built source; a source never built has none.
func (u *unavailableSource) logout() error {
	u.mu.Lock()
	src := u.built
	u.mu.Unlock()
	if src == nil {
		return nil
	}
	return src.logout()
}
