package winch_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch"
)

// loginURL matches the authorization URL that winch login prints.
var loginURL = regexp.MustCompile(`http://127\.0\.0\.1:\d+/auth\?\S+`)

// TestLogin runs `winch login` against a running winch (the hand-off) and on its own, with the in-process issuer.
// The issuer has no login page, so the test plays the browser: it reads the URL from the command's output and
// brings the provider's refusal back to the callback, which ends the login with the provider's error.
func TestLogin(t *testing.T) {
	iss := oidcissuer.New(t)
	var authPath string
	e := startEnv(t, func(c *winch.Config) {
		authPath = filepath.Join(filepath.Dir(c.Documents.AuthPath), "auth-oidc.yaml")
		writeFile(t, authPath, authDoc("token-1")+"  - name: corp\n    oidc:\n      provider: "+iss.URL()+"\n      client_id: winch\n")
		c.Documents.AuthPath = authPath
	})
	running := e.cfg
	running.HTTPPort, _ = strconv.Atoi(portOf(e.addr))
	running.NoBrowser = true
	alone := running
	alone.HTTPPort = 0 // a free port: winch login serves the callback itself

	tests := []struct {
		name     string
		cfg      winch.Config
		device   bool
		wantOut  []string
		wantErr  string
		redirect string // the callback the URL must name; "" = any port on 127.0.0.1
	}{
		{"hand-off shows the URL here", running, false,
			[]string{`asking it to log in to "corp"`, `To log in to "corp", open this URL in a browser`}, "access_denied",
			"http://" + e.addr + "/winch/login/corp"},
		{"hand-off honours --oidc_device_flow", running, true,
			[]string{`asking it to log in to "corp"`}, "the provider offers no device authorization endpoint", ""},
		{"alone shows the URL", alone, false,
			[]string{`To log in to "corp", open this URL in a browser`}, "access_denied", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.OIDCDeviceFlow = tt.device
			out := &testutil.Buffer{}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- winch.Login(ctx, cfg, logging.Discard(), "corp", out) }()
			var err error
			if !tt.device {
				u := waitForURL(t, out, done)
				q := u.Query()
				if q.Get("client_id") != "winch" || q.Get("code_challenge_method") != "S256" || q.Get("scope") != "openid offline_access" {
					t.Errorf("authorization URL %s: want client winch, S256 and scope openid offline_access", u)
				}
				cb := q.Get("redirect_uri")
				if tt.redirect != "" && cb != tt.redirect {
					t.Errorf("redirect_uri = %q; want %q", cb, tt.redirect)
				}
				// The provider refuses; the browser comes back to winch's callback.
				resp, gerr := e.local.Get(cb + "?state=" + url.QueryEscape(q.Get("state")) + "&error=access_denied")
				if gerr != nil {
					t.Fatalf("callback: %v", gerr)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway {
					t.Errorf("callback answered %d; want 502 for a refused login", resp.StatusCode)
				}
			}
			select {
			case err = <-done:
			case <-ctx.Done():
				t.Fatalf("winch login did not return; output:\n%s", out.String())
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("winch login = %v; want an error containing %q", err, tt.wantErr)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// waitForURL polls out for the authorization URL until the login returns or a deadline passes.
func waitForURL(t *testing.T, out *testutil.Buffer, done <-chan error) *url.URL {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := loginURL.FindString(out.String()); m != "" {
			u, err := url.Parse(m)
			if err != nil {
				t.Fatalf("printed URL %q: %v", m, err)
			}
			return u
		}
		select {
		case err := <-done:
			t.Fatalf("winch login returned %v before printing a URL; output:\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no authorization URL printed; output:\n%s", out.String())
	return nil
}

// TestLoginPlainAnswer checks the answer an older `winch login` (no Accept: application/x-ndjson) gets: an error as
// 502 with X-Winch-Error once the login ended.
func TestLoginPlainAnswer(t *testing.T) {
	e := startEnv(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+e.addr+"/winch/login/nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.local.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get(wire.HeaderWinchError), `no auth source called "nope"`) {
		t.Errorf("plain login answer: %d %q; want 502 naming the source", resp.StatusCode, resp.Header.Get(wire.HeaderWinchError))
	}
}
