package credentials

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestOpenBrowserEnv checks that $BROWSER is tried first, entry by entry, with %s replaced by the URL.
func TestOpenBrowserEnv(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shell scripts")
	}
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "opened")
	script := filepath.Join(dir, "browser.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > "+out+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	const url = "http://127.0.0.1:1/authorize?state=s&scope=openid+offline_access"
	tests := []struct {
		name, env, want string
	}{
		{"appends the URL", script, url},
		{"replaces %s", script + " --new-window %s", "--new-window\n" + url},
		{"skips a failing entry", "false:" + script, url},
		{"skips a missing command", filepath.Join(dir, "missing") + ":" + script, url},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { // not parallel: the cases share the output file
			_ = os.Remove(out)
			if err := openBrowserWith(tt.env, "linux", url); err != nil {
				t.Fatalf("openBrowserWith: %v", err)
			}
			b, err := os.ReadFile(out)
			if err != nil || strings.TrimSpace(string(b)) != tt.want {
				t.Errorf("the browser got %q, %v; want %q", b, err, tt.want)
			}
		})
	}
	if _, err := exec.LookPath("xdg-open"); err == nil {
		return // the last resort might open a real browser
	}
	// Nothing works: every attempt is named in the error.
	if err := openBrowserWith("false", "linux", url); err == nil || !strings.Contains(err.Error(), "false") || !strings.Contains(err.Error(), "xdg-open") {
		t.Errorf("openBrowserWith(false) = %v; want an error naming every failed command", err)
	}
}

// promptRecorder collects the prompts of a login.
type promptRecorder struct {
	mu      sync.Mutex
	prompts []Prompt
	onURL   func(string)
}

func (r *promptRecorder) prompt(p Prompt) {
	r.mu.Lock()
	r.prompts = append(r.prompts, p)
	r.mu.Unlock()
	if r.onURL != nil {
		r.onURL(p.URL)
	}
}

func (r *promptRecorder) all() []Prompt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Prompt(nil), r.prompts...)
}

// TestLoginOptions checks that LoginOptions.Prompt receives the instructions instead of the log and the browser,
// and that LoginOptions.Flow overrides Deps.DeviceFlow in both directions.
func TestLoginOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		depsDevice bool
		flow       Flow
		wantDevice bool
	}{
		{"browser by default", false, FlowDefault, false},
		{"device by default", true, FlowDefault, true},
		{"device chosen for this login", false, FlowDevice, true},
		{"browser chosen for this login", true, FlowBrowser, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			d := f.deps()
			d.DeviceFlow = tt.depsDevice
			d.OpenBrowser = func(string) error {
				t.Errorf("Deps.OpenBrowser was called although the login has a Prompt")
				return nil
			}
			rec := &promptRecorder{}
			if !tt.wantDevice {
				rec.onURL = func(u string) { _ = f.browser.open(u) } // the caller opens the browser
			}
			if err := f.set(t, d, f.source("corp")).Login(t.Context(), "corp", LoginOptions{Flow: tt.flow, Prompt: rec.prompt}); err != nil {
				t.Fatalf("Login: %v", err)
			}
			ps := rec.all()
			if len(ps) != 1 || ps[0].Source != "corp" || ps[0].Device != tt.wantDevice {
				t.Fatalf("prompts = %+v; want one for corp, device %v", ps, tt.wantDevice)
			}
			if tt.wantDevice {
				if ps[0].UserCode != "WDJB-MJHT" || ps[0].URL != f.op.URL()+"/activate" {
					t.Errorf("device prompt = %+v; want the provider's code and verification URL", ps[0])
				}
			} else if !strings.HasPrefix(ps[0].URL, f.op.URL()+"/authorize?") || ps[0].UserCode != "" {
				t.Errorf("browser prompt = %+v; want the authorization URL", ps[0])
			}
			if logs := f.log.text(); strings.Contains(logs, ps[0].URL) {
				t.Errorf("the prompt was logged although the caller shows it:\n%s", logs)
			}
		})
	}
}

// TestOIDCScopesAndRefreshWarning checks the default scopes (openid offline_access), that explicit scopes are
// taken as they are, and that a login without a refresh token warns once, naming the source and the fix.
func TestOIDCScopesAndRefreshWarning(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		scopes     []string
		wantScope  string
		wantWarn   string // in the warning; "" = no warning
		logins     int
		wantOffReq bool
	}{
		{"default requests offline_access", nil, "openid offline_access", "", 2, true},
		{"explicit scopes with offline_access", []string{"email", "offline_access"}, "openid email offline_access", "", 1, true},
		{"explicit scopes without it warn once", []string{"email"}, "openid email", `add "offline_access" to the scopes of auth source "corp"`, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.op.set(func(op *testOP) { op.offlineOnly = true })
			src := f.source("corp")
			src.Scopes = tt.scopes
			set := f.set(t, f.deps(), src)
			for range tt.logins {
				if err := set.Login(t.Context(), "corp", LoginOptions{}); err != nil {
					t.Fatalf("Login: %v", err)
				}
			}
			f.browser.results()
			if got := f.op.lastAuthorizeParams().Get("scope"); got != tt.wantScope {
				t.Errorf("scope = %q; want %q", got, tt.wantScope)
			}
			logs := f.log.text()
			n := strings.Count(logs, "returned no refresh token")
			switch {
			case tt.wantWarn == "" && n != 0:
				t.Errorf("unexpected warning:\n%s", logs)
			case tt.wantWarn != "" && (n != 1 || !strings.Contains(logs, tt.wantWarn)):
				t.Errorf("want exactly one warning containing %q after %d logins, got %d:\n%s", tt.wantWarn, tt.logins, n, logs)
			}
		})
	}
}

// TestOIDCNoRefreshTokenDespiteOfflineAccess checks the other hint: offline_access was requested, so the client's
// settings at the provider are what to change.
func TestOIDCNoRefreshTokenDespiteOfflineAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.op.set(func(op *testOP) { op.neverRefresh = true })
	src := f.source("corp")
	src.Scopes = nil
	if err := f.set(t, f.deps(), src).Login(t.Context(), "corp", LoginOptions{}); err != nil {
		t.Fatalf("Login: %v", err)
	}
	f.browser.results()
	if logs := f.log.text(); !strings.Contains(logs, `allow the refresh_token grant for client "winch-client"`) {
		t.Errorf("want a warning naming the client setting:\n%s", logs)
	}
}
