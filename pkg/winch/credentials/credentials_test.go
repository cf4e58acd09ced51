package credentials

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

func TestStaticSources(t *testing.T) {
	t.Parallel()
	set := newSetT(t,
		config.AuthSource{Name: "tok", Kind: config.KindToken, Token: "secret-token"},
		config.AuthSource{Name: "dummy", Kind: config.KindDummy, Token: "user:password"},
		config.AuthSource{Name: "empty", Kind: config.KindDummy},
	)
	tests := []struct {
		name, want, wantErr string
	}{
		{"tok", "secret-token", ""},
		{"dummy", "user:password", ""},
		{"empty", "", `auth source "empty": dummy auth source: no value specified; set "value" in the auth config`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := mustGet(t, set, tt.name)
			if src.Name() != tt.name {
				t.Errorf("Name = %q", src.Name())
			}
			src.Invalidate(tt.want) // no effect on static sources
			got, err := src.Token(t.Context())
			if tt.wantErr != "" {
				var ae *Error
				if !errors.As(err, &ae) || err.Error() != tt.wantErr || !errors.Is(err, errNoDummyValue) {
					t.Fatalf("Token = %v; want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Token = %q, %v; want %q", got, err, tt.want)
			}
			if err := set.Login(t.Context(), tt.name, LoginOptions{}); err != nil {
				t.Errorf("Login: %v", err)
			}
		})
	}
	if _, ok := set.Get("nope"); ok {
		t.Errorf("Get of an unknown source succeeded")
	}
	if err := set.Login(t.Context(), "nope", LoginOptions{}); err == nil {
		t.Errorf("Login of an unknown source succeeded")
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		srcs []config.AuthSource
		want string
	}{
		{"duplicate", []config.AuthSource{
			{Name: "a", Kind: config.KindToken, Token: "x"}, {Name: "a", Kind: config.KindToken, Token: "y"},
		}, `auth source "a": defined twice`},
		{"unknown kind", []config.AuthSource{{Name: "b", Kind: "magic"}}, `auth source "b": unknown kind "magic"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.srcs, Deps{StateDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewDoesNoNetworkIO(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	discoveries := 0
	d := f.deps()
	d.HTTPClient = &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		discoveries++
		return nil, errors.New("no network at construction")
	})}
	if _, err := New([]config.AuthSource{f.source("corp")}, d); err != nil {
		t.Fatalf("New: %v", err)
	}
	if discoveries != 0 {
		t.Errorf("New made %d requests", discoveries)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestDefaultStateDir(t *testing.T) {
	// Not parallel: changes the environment.
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	if got, err := DefaultStateDir(); err != nil || got != filepath.Join(home, ".config", "winch") {
		t.Errorf("DefaultStateDir = %q, %v; want ~/.config/winch", got, err)
	}
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	if got, err := DefaultStateDir(); err != nil || got != filepath.Join(xdg, "winch") {
		t.Errorf("DefaultStateDir = %q, %v; want $XDG_CONFIG_HOME/winch", got, err)
	}
	if _, err := os.Stat(filepath.Join(xdg, "winch")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the state directory was created before it was needed")
	}
}

func TestServiceAccount(t *testing.T) {
	t.Parallel()
	op := newTestOP(t)
	key := `{"type":"service_account","client_email":"robot@example.iam.gserviceaccount.com"}`
	op.set(func(op *testOP) { op.saKey, op.saScope = key, "openid email" })
	keyPath := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(keyPath, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	set, err := New([]config.AuthSource{{
		Name: "robot", Kind: config.KindServiceAccountOIDC, Provider: op.URL(), ClientID: op.clientID,
		ClientSecret: op.secret, Scopes: []string{"openid", "email"}, ServiceAccountJSONPath: keyPath,
	}}, Deps{StateDir: t.TempDir(), HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	src := mustGet(t, set, "robot")
	tok := mustToken(t, src)
	if !isCompactJWS(tok) {
		t.Fatalf("Token = %q; want the ID token", tok)
	}
	if again := mustToken(t, src); again != tok || op.saRequests.Load() != 1 {
		t.Errorf("second Token: same %v, requests %d; want the cached token", again == tok, op.saRequests.Load())
	}
	src.Invalidate(tok)
	if fresh := mustToken(t, src); fresh == tok || op.saRequests.Load() != 2 {
		t.Errorf("Token after Invalidate: new %v, requests %d; want a new request", fresh != tok, op.saRequests.Load())
	}

	op.set(func(op *testOP) { op.saKey = "another key" }) // the provider no longer accepts ours
	if err := set.Login(t.Context(), "robot", LoginOptions{}); err == nil || !strings.Contains(err.Error(), `auth source "robot"`) {
		t.Errorf("Login with a refused key = %v; want an *Error", err)
	}
}

func TestNewRefusesCallbackClash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.source("a")
	b := f.source("b")
	b.LoginCallbackPath = "/winch/login/a" // a's default path
	if _, err := New([]config.AuthSource{a, b}, f.deps()); err == nil || !strings.Contains(err.Error(), `is also used by "a"`) {
		t.Fatalf("New = %v; want a callback clash", err)
	}
	// Nothing was registered, so a corrected document can be loaded on the same mux.
	b.LoginCallbackPath = ""
	f.set(t, f.deps(), a, b)
}
