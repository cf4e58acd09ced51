package credentials

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/singleflight"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// serviceAccountGrant is the original's provider-specific grant type for exchanging a service-account key.
const serviceAccountGrant = "service_account"

// unknownLifetime is how long a token whose response says nothing about its expiry is reused.
const unknownLifetime = 5 * time.Minute

// maxTokenResponse bounds what is read from a token endpoint.
const maxTokenResponse = 1 << 20

// serviceAccountSource exchanges a (Google) service-account key file for a token at the provider's token endpoint
// (grant_type=service_account, the key as the service_account parameter, client credentials as basic auth), as the
// original did, and reuses the token until shortly before it expires.
type serviceAccountSource struct {
	name    string
	cfg     config.AuthSource
	d       Deps
	log     logging.Logger
	key     string // the key file's content
	flights singleflight.Group

	mu       sync.Mutex // guards the fields below
	tokenURL string     // from discovery; "" until it succeeded
	token    string
	expiry   time.Time
}

var _ Source = (*serviceAccountSource)(nil)

func newServiceAccountSource(c config.AuthSource, d Deps, log logging.Logger) (*serviceAccountSource, error) {
	key, err := os.ReadFile(c.ServiceAccountJSONPath)
	if err != nil {
		return nil, &Error{Source: c.Name, Err: fmt.Errorf("reading the service-account key: %w", err),
			Hint: "check service_account_json_path in the auth config"}
	}
	if !json.Valid(key) {
		return nil, &Error{Source: c.Name, Err: fmt.Errorf("service-account key %s is not JSON", c.ServiceAccountJSONPath),
			Hint: "check service_account_json_path in the auth config"}
	}
	return &serviceAccountSource{name: c.Name, cfg: c, d: d, log: log, key: string(key)}, nil
}

func (s *serviceAccountSource) Name() string { return s.name }

func (s *serviceAccountSource) Token(ctx context.Context) (string, error) {
	if tok := s.cached(); tok != "" {
		return tok, nil
	}
	detached := context.WithoutCancel(ctx)
	ch := s.flights.DoChan("token", func() (any, error) {
		if tok := s.cached(); tok != "" {
			return tok, nil
		}
		tok, err := s.fetch(detached)
		if err != nil {
			return "", &Error{Source: s.name, Err: err, Hint: "check the service-account key and the provider"}
		}
		return tok, nil
	})
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

func (s *serviceAccountSource) cached() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token != "" && s.expiry.After(s.d.Now().Add(expiryMargin)) {
		return s.token
	}
	return ""
}

func (s *serviceAccountSource) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if token != "" && s.token == token {
		s.token, s.expiry = "", time.Time{}
	}
}

func (s *serviceAccountSource) login(ctx context.Context, _ LoginOptions) error {
	s.mu.Lock()
	s.token, s.expiry = "", time.Time{}
	s.mu.Unlock()
	_, err := s.Token(ctx)
	return err
}

func (s *serviceAccountSource) logout() error {
	s.Invalidate(s.cached())
	return nil
}

// fetch discovers the token endpoint (once) and asks it for a token.
func (s *serviceAccountSource) fetch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	s.mu.Lock()
	tokenURL := s.tokenURL
	s.mu.Unlock()
	if tokenURL == "" {
		op, err := oidc.NewProvider(oidc.ClientContext(ctx, s.d.HTTPClient), s.cfg.Provider)
		if err != nil {
			return "", fmt.Errorf("discovering OIDC provider %s: %w", s.cfg.Provider, err)
		}
		tokenURL = op.Endpoint().TokenURL
		s.mu.Lock()
		s.tokenURL = tokenURL
		s.mu.Unlock()
	}
	form := url.Values{
		"grant_type":      {serviceAccountGrant},
		"service_account": {s.key},
		"scope":           {strings.Join(s.cfg.Scopes, " ")},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(s.cfg.ClientID), url.QueryEscape(s.cfg.ClientSecret))
	resp, err := s.d.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return "", fmt.Errorf("token response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint answered %s: %s", resp.Status, excerpt(body))
	}
	var tr struct {
		AccessToken string          `json:"access_token"`
		IDToken     string          `json:"id_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("token response is not JSON: %w", err)
	}
	tok := tr.IDToken
	if tok == "" {
		tok = tr.AccessToken
	}
	if tok == "" || !isTokenString(tok) {
		return "", errors.New("token response holds no usable token")
	}
	expiry := s.expiryOf(tok, tr.ExpiresIn)
	s.mu.Lock()
	s.token, s.expiry = tok, expiry
	s.mu.Unlock()
	return tok, nil
}

// expiryOf is the earlier of the token's exp claim (when it is a JWT) and expires_in; unknownLifetime from now
// when neither is given.
func (s *serviceAccountSource) expiryOf(tok string, expiresIn json.RawMessage) time.Time {
	now := s.d.Now()
	var expiry time.Time
	var secs json.Number
	if len(expiresIn) > 0 && json.Unmarshal(expiresIn, &secs) == nil {
		if n, err := secs.Int64(); err == nil && n > 0 {
			expiry = now.Add(time.Duration(n) * time.Second)
		}
	}
	if exp, ok := jwtExpiry(tok); ok && (expiry.IsZero() || exp.Before(expiry)) {
		expiry = exp
	}
	if expiry.IsZero() {
		expiry = now.Add(unknownLifetime)
	}
	return expiry
}

// jwtExpiry reads the exp claim of a JWT without verifying it (kedge verifies; this only decides caching).
func jwtExpiry(tok string) (time.Time, bool) {
	if !isCompactJWS(tok) {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}, false
	}
	n, err := claims.Exp.Int64()
	if err != nil || n <= 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// excerpt shortens a response body for an error message.
func excerpt(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
