package credentials

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOIDCLoginFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	set := f.set(t, f.deps(), f.source("corp"))
	src := mustGet(t, set, "corp")

	tok, err := src.Token(t.Context()) // nothing cached: Token logs in through the browser
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	statuses, bodies, opened := f.browser.results()
	if opened != 1 || len(statuses) != 1 || statuses[0] != 200 || !strings.Contains(bodies[0], "logged in to corp") {
		t.Fatalf("browser: opened %d, statuses %v, bodies %q; want one successful callback", opened, statuses, bodies)
	}
	q := f.op.lastAuthorizeParams()
	for _, p := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(p) == "" {
			t.Errorf("authorize request has no %s: %v", p, q)
		}
	}
	if q.Get("code_challenge_method") != "S256" || q.Get("redirect_uri") != f.cb.URL+"/winch/login/corp" {
		t.Errorf("authorize request = %v; want S256 and redirect to the default callback path", q)
	}
	if !strings.Contains(q.Get("scope"), "openid") || !strings.Contains(q.Get("scope"), "email") {
		t.Errorf("scope = %q; want openid and the configured scopes", q.Get("scope"))
	}
	if got := f.op.exchanges.Load(); got != 1 {
		t.Errorf("code exchanges = %d; want 1", got)
	}

	again, err := src.Token(t.Context())
	if err != nil || again != tok {
		t.Errorf("second Token = %v, %v; want the cached token", err, again == tok)
	}
	if got := f.op.refreshes.Load(); got != 0 {
		t.Errorf("refreshes = %d; want 0 while the ID token is valid", got)
	}

	// The cache file is private and holds both tokens.
	path := filepath.Join(f.dir, "tokens", "corp.json")
	checkMode(t, path, 0o600)
	checkMode(t, filepath.Dir(path), 0o700|os.ModeDir)
	c, err := readCache(path)
	if err != nil || c == nil || c.IDToken != tok || c.RefreshToken == "" {
		t.Fatalf("cache = %+v, %v; want the ID token and a refresh token", c, err)
	}
	if logs := f.log.text(); strings.Contains(logs, tok) || strings.Contains(logs, c.RefreshToken) {
		t.Errorf("the log contains a token:\n%s", logs)
	}
}

func TestOIDCLoginRefusesWrongState(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f.browser.tamper = func(loc string) string { return strings.Replace(loc, "state=", "state=forged", 1) }
	f.browser.after = cancel // the user gives up after the error page
	set := f.set(t, f.deps(), f.source("corp"))

	err := set.Login(ctx, "corp", LoginOptions{})
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("Login = %v; want *Error", err)
	}
	statuses, bodies, _ := f.browser.results()
	if len(statuses) != 1 || statuses[0] != 400 || !strings.Contains(bodies[0], "unknown or has expired") {
		t.Errorf("callback answered %v %q; want 400", statuses, bodies)
	}
	if got := f.op.exchanges.Load(); got != 0 {
		t.Errorf("code exchanges = %d; want none for a forged state", got)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "tokens", "corp.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache file exists after a refused login: %v", err)
	}
}

func TestOIDCLoginPKCEChecked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.op.set(func(op *testOP) { op.tamperPKCE = true }) // the code is bound to another verifier
	set := f.set(t, f.deps(), f.source("corp"))

	err := set.Login(t.Context(), "corp", LoginOptions{})
	if err == nil || !strings.Contains(err.Error(), "exchanging the authorization code") {
		t.Fatalf("Login = %v; want the exchange refused", err)
	}
	if statuses, _, _ := f.browser.results(); len(statuses) != 1 || statuses[0] != 502 {
		t.Errorf("callback answered %v; want 502", statuses)
	}
	if got := f.op.exchanges.Load(); got != 1 {
		t.Errorf("code exchanges = %d; want 1", got)
	}
}

func TestOIDCLoginNonceChecked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.op.set(func(op *testOP) { op.wrongNonce = true })
	err := f.set(t, f.deps(), f.source("corp")).Login(t.Context(), "corp", LoginOptions{})
	if err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Fatalf("Login = %v; want the nonce refused", err)
	}
	if statuses, _, _ := f.browser.results(); len(statuses) != 1 || statuses[0] != 502 {
		t.Errorf("callback answered %v; want 502", statuses)
	}
}

func TestOIDCDeviceFlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	d := f.headless(t)
	d.DeviceFlow = true
	set := f.set(t, d, f.source("corp"))
	tok, err := mustGet(t, set, "corp").Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	logs := f.log.text()
	if !strings.Contains(logs, "WDJB-MJHT") || !strings.Contains(logs, f.op.URL()+"/activate") {
		t.Errorf("the log does not show the verification URL and code:\n%s", logs)
	}
	if strings.Contains(logs, tok) {
		t.Errorf("the log contains the token")
	}
	if f.op.deviceAuths.Load() != 1 || f.op.exchanges.Load() != 0 {
		t.Errorf("device authorizations %d, code exchanges %d; want 1 and 0", f.op.deviceAuths.Load(), f.op.exchanges.Load())
	}
	if c, err := readCache(filepath.Join(f.dir, "tokens", "corp.json")); err != nil || c == nil || c.IDToken != tok {
		t.Errorf("cache after device login = %+v, %v", c, err)
	}
}

func TestOIDCCallbackWithoutLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.set(t, f.deps(), f.source("corp"))
	tests := []struct {
		name, method, query string
		want                int
	}{
		{"no login in progress", http.MethodGet, "?state=abc&code=def", http.StatusBadRequest},
		{"no state", http.MethodGet, "?code=def", http.StatusBadRequest},
		{"not GET", http.MethodPost, "?state=abc&code=def", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tt.method, f.cb.URL+"/winch/login/corp"+tt.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("status %d, Cache-Control %q; want %d, no-store", resp.StatusCode, resp.Header.Get("Cache-Control"), tt.want)
			}
		})
	}
	if f.op.exchanges.Load() != 0 {
		t.Errorf("a stray callback caused a code exchange")
	}
}
