package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// oidcSource logs the user in at an OpenID Connect provider and returns the ID token. Tokens are kept in memory and
// in a 0600 cache file; a stale ID token is replaced by a refresh-token grant, and when that is impossible by a login
// (browser or device flow). At most one refresh or login runs at a time per kind (singleflight).
type oidcSource struct {
	name         string
	cfg          config.AuthSource
	d            Deps
	log          logging.Logger
	cachePath    string
	callbackPath string
	flights      singleflight.Group

	pmu  sync.Mutex // guards prov; held during discovery so that it runs once
	prov *provider

	mu              sync.Mutex // guards the fields below
	cur             tokenSet
	rejectedID      string                   // ID token kedge refused; never taken back from the cache file
	rejectedRefresh string                   // refresh token the provider refused; never taken back from the file
	warnedNoRefresh bool                     // the missing refresh token was logged
	pending         map[string]*pendingLogin // browser logins waiting for their callback, by state
}

// tokenSet is what a login yields. idToken has been verified; expiry is its exp claim.
type tokenSet struct {
	idToken      string
	expiry       time.Time
	refreshToken string
}

// provider is the result of discovery.
type provider struct {
	oauth    oauth2.Config // without RedirectURL, which only browser logins set
	verifier *oidc.IDTokenVerifier
}

var _ Source = (*oidcSource)(nil)

func newOIDCSource(c config.AuthSource, d Deps, log logging.Logger) *oidcSource {
	s := &oidcSource{
		name:         c.Name,
		cfg:          c,
		d:            d,
		log:          log,
		cachePath:    filepath.Join(d.StateDir, "tokens", c.Name+".json"),
		callbackPath: c.LoginCallbackPath,
		pending:      map[string]*pendingLogin{},
	}
	if c.CacheDir != "" {
		s.cachePath = filepath.Join(c.CacheDir, c.Name+".json")
	}
	if s.callbackPath == "" {
		s.callbackPath = "/winch/login/" + c.Name
	}
	return s
}

// callback returns the path and handler of the login callback, which New registers once every source was built.
func (s *oidcSource) callback() (string, http.Handler) {
	return s.callbackPath, http.HandlerFunc(s.serveCallback)
}

func (s *oidcSource) Name() string { return s.name }

func (s *oidcSource) Token(ctx context.Context) (string, error) {
	if tok := s.cached(); tok != "" {
		return tok, nil
	}
	return s.flight(ctx, "token", s.obtain)
}

// Invalidate forgets token if it is the cached ID token; the refresh token stays, so the next Token call refreshes.
func (s *oidcSource) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token == "" {
		return
	}
	s.rejectedID = token
	if s.cur.idToken == token {
		s.cur.idToken, s.cur.expiry = "", time.Time{}
	}
}

// login runs a new login with the caller's context (not as a shared flight: cancelling `winch login` ends it).
func (s *oidcSource) login(ctx context.Context, opts LoginOptions) error {
	p, err := s.provider(ctx)
	if err != nil {
		return err
	}
	_, saveErr, err := s.interactive(ctx, p, opts)
	if err != nil {
		return err
	}
	if saveErr != nil {
		return &Error{Source: s.name, Err: saveErr, Hint: "the login worked but will not survive a restart"}
	}
	return nil
}

func (s *oidcSource) logout() error {
	s.mu.Lock()
	s.cur = tokenSet{}
	s.mu.Unlock()
	if err := removeCache(s.cachePath); err != nil {
		return &Error{Source: s.name, Err: err}
	}
	return nil
}

// cached returns the in-memory ID token if it is valid for longer than the expiry margin.
func (s *oidcSource) cached() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.idToken != "" && s.cur.expiry.After(s.d.Now().Add(expiryMargin)) {
		return s.cur.idToken
	}
	return ""
}

// flight runs fn once for all concurrent callers with the same key. fn runs detached from the first caller's
// cancellation (every step bounds itself), so that a caller giving up does not fail the others; each caller stops
// waiting when its own ctx ends.
func (s *oidcSource) flight(ctx context.Context, key string, fn func(context.Context) (string, error)) (string, error) {
	detached := context.WithoutCancel(ctx)
	ch := s.flights.DoChan(key, func() (any, error) { return fn(detached) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-ctx.Done():
		return "", &Error{Source: s.name, Err: ctx.Err()}
	}
}

// obtain finds a valid ID token: in memory, in the cache file (another winch process may have logged in), by
// refreshing, or by logging in.
func (s *oidcSource) obtain(ctx context.Context) (string, error) {
	if tok := s.cached(); tok != "" {
		return tok, nil // a flight that ended just before this one started
	}
	p, err := s.provider(ctx)
	if err != nil {
		return "", err
	}
	s.adoptCacheFile(ctx, p)
	if tok := s.cached(); tok != "" {
		return tok, nil
	}
	s.mu.Lock()
	rt := s.cur.refreshToken
	s.mu.Unlock()
	var refreshErr error
	if rt != "" {
		tok, saveErr, err := s.refresh(ctx, p, rt)
		if err == nil {
			if saveErr != nil {
				s.log.Warn("saving refreshed tokens", logging.FieldError, saveErr)
			}
			return tok, nil
		}
		refreshErr = err
		s.log.Warn("refreshing the OIDC token", logging.FieldError, err)
	}
	if !s.d.DeviceFlow && (s.d.Callback == nil || s.d.CallbackBaseURL == "") {
		if refreshErr != nil {
			return "", &Error{Source: s.name, Err: refreshErr, Hint: loginHint(s.name)}
		}
		return "", &Error{Source: s.name, Err: errors.New("not logged in"), Hint: loginHint(s.name)}
	}
	tok, saveErr, err := s.interactive(ctx, p, LoginOptions{})
	if err != nil {
		return "", err
	}
	if saveErr != nil {
		s.log.Warn("saving tokens after login", logging.FieldError, saveErr)
	}
	return tok, nil
}

// interactive logs the user in with the device flow or the browser, as opts (or else Deps) say.
func (s *oidcSource) interactive(ctx context.Context, p *provider, opts LoginOptions) (tok string, saveErr, err error) {
	device := s.d.DeviceFlow
	switch opts.Flow {
	case FlowBrowser:
		device = false
	case FlowDevice:
		device = true
	}
	if device {
		return s.deviceLogin(ctx, p, opts)
	}
	return s.browserLogin(ctx, p, opts)
}

// adoptCacheFile takes the tokens from the cache file when it holds some for this provider and client, skipping
// those already refused. An unusable file is treated as absent.
func (s *oidcSource) adoptCacheFile(ctx context.Context, p *provider) {
	c, err := readCache(s.cachePath)
	if err != nil {
		s.log.Warn("ignoring the token cache file", logging.FieldFile, s.cachePath, logging.FieldError, err)
		return
	}
	if c == nil || c.Issuer != s.cfg.Provider || c.ClientID != s.cfg.ClientID {
		return
	}
	s.mu.Lock()
	if c.RefreshToken != "" && c.RefreshToken != s.rejectedRefresh {
		s.cur.refreshToken = c.RefreshToken
	}
	candidate := c.IDToken
	if candidate == s.rejectedID || candidate == s.cur.idToken {
		candidate = ""
	}
	s.mu.Unlock()
	if candidate == "" {
		return
	}
	idt, err := p.verifier.Verify(ctx, candidate)
	if err != nil {
		s.log.Debug("cached ID token is no longer valid", logging.FieldError, err)
		return
	}
	s.mu.Lock()
	s.cur.idToken, s.cur.expiry = candidate, idt.Expiry
	s.mu.Unlock()
}

// refresh uses the refresh-token grant.
func (s *oidcSource) refresh(ctx context.Context, p *provider, rt string) (tok string, saveErr, err error) {
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, s.d.HTTPClient), requestTimeout)
	defer cancel()
	t, err := p.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "invalid_grant" {
			s.mu.Lock()
			s.rejectedRefresh = rt
			if s.cur.refreshToken == rt {
				s.cur.refreshToken = ""
			}
			s.mu.Unlock()
			return "", nil, errors.New("refresh token expired or revoked (invalid_grant)")
		}
		return "", nil, fmt.Errorf("refreshing the token: %w", err)
	}
	return s.accept(ctx, p, t, rt, "")
}

// accept verifies the ID token of a token response (and its nonce, for logins), makes the tokens current and saves
// them. A failure to save is returned apart: the tokens are usable anyway.
func (s *oidcSource) accept(ctx context.Context, p *provider, t *oauth2.Token, prevRefresh, nonce string) (tok string, saveErr, err error) {
	raw, _ := t.Extra("id_token").(string)
	if raw == "" {
		return "", nil, errors.New("the provider returned no ID token (is the \"openid\" scope allowed?)")
	}
	idt, err := p.verifier.Verify(ctx, raw)
	if err != nil {
		return "", nil, fmt.Errorf("the provider's ID token is not valid: %w", err)
	}
	if nonce != "" && idt.Nonce != nonce {
		return "", nil, errors.New("the ID token's nonce does not match the login")
	}
	rt := t.RefreshToken
	if rt == "" {
		rt = prevRefresh
	}
	if rt == "" {
		s.warnNoRefresh(p)
	}
	s.mu.Lock()
	s.cur = tokenSet{idToken: raw, expiry: idt.Expiry, refreshToken: rt}
	s.mu.Unlock()
	saveErr = writeCache(s.cachePath, &tokenCache{Issuer: s.cfg.Provider, ClientID: s.cfg.ClientID, IDToken: raw, RefreshToken: rt})
	return raw, saveErr, nil
}

// warnNoRefresh logs, once per source, that the provider gave no refresh token: when the ID token expires the
// user must log in again instead of winch refreshing silently.
func (s *oidcSource) warnNoRefresh(p *provider) {
	s.mu.Lock()
	warned := s.warnedNoRefresh
	s.warnedNoRefresh = true
	s.mu.Unlock()
	if warned {
		return
	}
	fix := fmt.Sprintf("add %q to the scopes of auth source %q (or remove its scopes to get the default)", oidc.ScopeOfflineAccess, s.name)
	if slices.Contains(p.oauth.Scopes, oidc.ScopeOfflineAccess) {
		fix = fmt.Sprintf("allow the refresh_token grant for client %q at the provider", s.cfg.ClientID)
	}
	s.log.Warn("the OIDC provider returned no refresh token: winch cannot refresh silently and will ask for a new login when the ID token expires",
		"fix", fix, "scopes", strings.Join(p.oauth.Scopes, " "))
}

// scopes returns what the source asks the provider for: openid and the configured scopes, or, when none are
// configured, openid and offline_access (which most providers require before they issue a refresh token) unless
// the provider announces scopes_supported without it.
func (s *oidcSource) scopes(op *oidc.Provider) []string {
	scopes := []string{oidc.ScopeOpenID}
	if len(s.cfg.Scopes) == 0 {
		var meta struct {
			Scopes []string `json:"scopes_supported"`
		}
		if err := op.Claims(&meta); err != nil || len(meta.Scopes) == 0 || slices.Contains(meta.Scopes, oidc.ScopeOfflineAccess) {
			scopes = append(scopes, oidc.ScopeOfflineAccess)
		}
		return scopes
	}
	for _, sc := range s.cfg.Scopes {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	return scopes
}

// provider runs discovery once (until it succeeds).
func (s *oidcSource) provider(ctx context.Context) (*provider, error) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.prov != nil {
		return s.prov, nil
	}
	dctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, s.d.HTTPClient), requestTimeout)
	defer cancel()
	op, err := oidc.NewProvider(dctx, s.cfg.Provider)
	if err != nil {
		return nil, &Error{
			Source: s.name, Err: fmt.Errorf("discovering OIDC provider %s: %w", s.cfg.Provider, err),
			Hint: "check the provider URL in the auth config and the network",
		}
	}
	scopes := s.scopes(op)
	endpoint := op.Endpoint()
	endpoint.AuthStyle = authStyle(op, s.cfg.ClientSecret)
	s.prov = &provider{
		oauth: oauth2.Config{
			ClientID: s.cfg.ClientID, ClientSecret: s.cfg.ClientSecret, Endpoint: endpoint, Scopes: scopes,
		},
		verifier: op.Verifier(&oidc.Config{ClientID: s.cfg.ClientID, Now: s.d.Now}),
	}
	return s.prov, nil
}

// authStyle picks how the client authenticates at the token endpoint: basic auth (the spec's default) unless the
// provider only announces client_secret_post or the client is public. Choosing up front avoids oauth2's
// auto-detection, which repeats every refused request in the other style.
func authStyle(op *oidc.Provider, secret string) oauth2.AuthStyle {
	if secret == "" {
		return oauth2.AuthStyleInParams
	}
	var meta struct {
		Methods []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := op.Claims(&meta); err == nil && len(meta.Methods) > 0 &&
		!slices.Contains(meta.Methods, "client_secret_basic") && slices.Contains(meta.Methods, "client_secret_post") {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}
