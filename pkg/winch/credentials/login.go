package credentials

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// deviceTimeout bounds a device-flow login when the provider gives no expiry for its code.
const deviceTimeout = 15 * time.Minute

// pendingLogin is a browser login waiting for the provider to redirect the browser to the callback.
type pendingLogin struct {
	results chan callbackResult // capacity 1; the callback handler that removes the login from the map sends once
	done    chan struct{}       // closed when the login returns, so that a late callback does not wait for a reply
}

// callbackResult is what the browser brought back. The login answers on reply (capacity 1) once the code was
// exchanged, so that the browser shows the outcome.
type callbackResult struct {
	code, errCode, errDesc string
	reply                  chan error
}

// browserLogin runs the authorization-code flow with PKCE (S256), a random state and a nonce: it opens the browser
// at the provider and waits for the callback on winch's listener.
func (s *oidcSource) browserLogin(ctx context.Context, p *provider, opts LoginOptions) (tok string, saveErr, err error) {
	if s.d.Callback == nil || s.d.CallbackBaseURL == "" {
		return "", nil, &Error{Source: s.name, Err: errors.New("interactive login needs winch's HTTP listener for the callback"),
			Hint: "run winch, or use --oidc_device_flow"}
	}
	state, nonce := randomString(), randomString()
	verifier := oauth2.GenerateVerifier()
	oc := p.oauth
	oc.RedirectURL = s.d.CallbackBaseURL + s.callbackPath
	authURL := oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce))

	pl := &pendingLogin{results: make(chan callbackResult, 1), done: make(chan struct{})}
	s.mu.Lock()
	s.pending[state] = pl
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, state)
		s.mu.Unlock()
		close(pl.done)
	}()

	if opts.Prompt != nil {
		opts.Prompt(Prompt{Source: s.name, URL: authURL})
	} else {
		s.log.Info("log in with your browser; if none opens, open this URL yourself", "url", authURL)
		if err := s.d.OpenBrowser(authURL); err != nil {
			s.log.Warn("could not open a browser; open the login URL yourself", logging.FieldError, err)
		}
	}
	timer := time.NewTimer(loginTimeout)
	defer timer.Stop()
	var cb callbackResult
	select {
	case cb = <-pl.results:
	case <-ctx.Done():
		return "", nil, &Error{Source: s.name, Err: fmt.Errorf("login abandoned: %w", ctx.Err()), Hint: loginHint(s.name)}
	case <-timer.C:
		return "", nil, &Error{Source: s.name, Err: fmt.Errorf("login not completed within %v", loginTimeout), Hint: loginHint(s.name)}
	}
	tok, saveErr, err = s.exchange(ctx, p, oc, cb, verifier, nonce)
	cb.reply <- err
	if err != nil {
		return "", nil, &Error{Source: s.name, Err: err, Hint: loginHint(s.name)}
	}
	s.log.Info("logged in")
	return tok, saveErr, nil
}

// exchange turns the callback's code into verified tokens.
func (s *oidcSource) exchange(ctx context.Context, p *provider, oc oauth2.Config, cb callbackResult, verifier, nonce string) (tok string, saveErr, err error) {
	if cb.errCode != "" {
		return "", nil, fmt.Errorf("the provider refused the login: %s %s", cb.errCode, cb.errDesc)
	}
	if cb.code == "" {
		return "", nil, errors.New("the provider sent no authorization code")
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, s.d.HTTPClient), requestTimeout)
	defer cancel()
	t, err := oc.Exchange(ctx, cb.code, oauth2.VerifierOption(verifier))
	if err != nil {
		return "", nil, fmt.Errorf("exchanging the authorization code: %w", err)
	}
	return s.accept(ctx, p, t, "", nonce)
}

// serveCallback receives the browser's redirect from the provider. Only a request whose state belongs to a login
// in progress is accepted, and only once.
func (s *oidcSource) serveCallback(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = fmt.Fprintln(w, "winch: the login callback accepts GET only")
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	s.mu.Lock()
	pl := s.pending[state]
	if pl != nil {
		delete(s.pending, state)
	}
	s.mu.Unlock()
	if state == "" || pl == nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, "winch: this login is unknown or has expired; start again with: winch login %s\n", s.name)
		return
	}
	cb := callbackResult{code: q.Get("code"), errCode: q.Get("error"), errDesc: q.Get("error_description"), reply: make(chan error, 1)}
	pl.results <- cb
	select {
	case err := <-cb.reply:
		s.writeOutcome(w, err)
	case <-pl.done:
		select {
		case err := <-cb.reply: // the login replied and returned at once
			s.writeOutcome(w, err)
		default:
			w.WriteHeader(http.StatusGone)
			_, _ = fmt.Fprintf(w, "winch: this login was abandoned; start again with: winch login %s\n", s.name)
		}
	case <-r.Context().Done():
	}
}

// writeOutcome tells the browser how the login ended.
func (s *oidcSource) writeOutcome(w http.ResponseWriter, err error) {
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = fmt.Fprintf(w, "winch: login to %s failed: %v\n", s.name, err)
		return
	}
	_, _ = fmt.Fprintf(w, "winch: logged in to %s. You can close this window.\n", s.name)
}

// deviceLogin runs the device authorization grant: the user opens the verification URL on any device and enters
// the code winch logs.
func (s *oidcSource) deviceLogin(ctx context.Context, p *provider, opts LoginOptions) (tok string, saveErr, err error) {
	fail := func(err error) (string, error, error) {
		return "", nil, &Error{Source: s.name, Err: err, Hint: loginHint(s.name)}
	}
	if p.oauth.Endpoint.DeviceAuthURL == "" {
		return "", nil, &Error{Source: s.name, Err: errors.New("the provider offers no device authorization endpoint"),
			Hint: "log in with the browser (without --oidc_device_flow)"}
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, s.d.HTTPClient), deviceTimeout)
	defer cancel()
	rctx, rcancel := context.WithTimeout(ctx, requestTimeout)
	var authOpts []oauth2.AuthCodeOption
	if p.oauth.ClientSecret != "" { // oauth2 sends only client_id; confidential clients must authenticate
		authOpts = append(authOpts, oauth2.SetAuthURLParam("client_secret", p.oauth.ClientSecret))
	}
	da, err := p.oauth.DeviceAuth(rctx, authOpts...)
	rcancel()
	if err != nil {
		return fail(fmt.Errorf("starting the device login: %w", err))
	}
	pr := Prompt{Source: s.name, URL: da.VerificationURI, UserCode: da.UserCode, Device: true}
	if da.VerificationURIComplete != "" {
		pr.URL = da.VerificationURIComplete
	}
	switch {
	case opts.Prompt != nil:
		opts.Prompt(pr)
	case da.VerificationURIComplete != "":
		s.log.Info("to log in, open the URL and confirm the code", "url", pr.URL, "code", pr.UserCode)
	default:
		s.log.Info("to log in, open the URL and enter the code", "url", pr.URL, "code", pr.UserCode)
	}
	t, err := p.oauth.DeviceAccessToken(ctx, da)
	if err != nil {
		return fail(fmt.Errorf("device login: %w", err))
	}
	tok, saveErr, err = s.accept(ctx, p, t, "", "")
	if err != nil {
		return fail(err)
	}
	s.log.Info("logged in")
	return tok, saveErr, nil
}

// randomString returns 256 random bits, base64url-encoded.
func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}
