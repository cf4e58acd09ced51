package authn

import (
	"crypto/rand"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// validToken signs a token that passes the default oidcConfig checks. Each call makes a different token (jti).
func validToken(t testing.TB, iss *oidcissuer.Issuer, opts ...oidcissuer.SignOption) string {
	t.Helper()
	c := iss.Claims(testClientID)
	c["perms"] = []string{"proxy"}
	c["jti"] = rand.Text()
	return iss.Sign(t, c, opts...)
}

func TestUnknownKeyRefetchIsRateLimited(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	clk := newFakeClock()
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.Now = clk.Now })
	good := validToken(t, iss)

	// flood sends 50 tokens with random unknown kids at once, plus valid ones, and returns how many JWKS fetches
	// it caused.
	flood := func() int {
		t.Helper()
		before := iss.Requests()
		var wg sync.WaitGroup
		for i := range 50 {
			bad := validToken(t, iss, oidcissuer.WithUnknownKey())
			wg.Go(func() {
				_, err := a.Authenticate(t.Context(), "Bearer "+bad, nil)
				wantDenied(t, err, Unauthenticated, "token signed by an unknown key", bad)
				if i%10 == 0 {
					if _, err := a.Authenticate(t.Context(), "Bearer "+good, nil); err != nil {
						t.Errorf("valid token during the flood: %v", err)
					}
				}
			})
		}
		wg.Wait()
		return iss.Requests() - before
	}

	// Right after the startup fetch, the window is closed: no fetch at all.
	if n := flood(); n != 0 {
		t.Errorf("flood right after startup caused %d JWKS fetches, want 0", n)
	}
	// Once the window has passed, 50 concurrent unknown kids cause exactly one fetch.
	clk.Add(DefaultKeyRefetchInterval + time.Second)
	if n := flood(); n != 1 {
		t.Errorf("flood after the window caused %d JWKS fetches, want 1", n)
	}
	if n := flood(); n != 0 {
		t.Errorf("second flood in the same window caused %d JWKS fetches, want 0", n)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	clk := newFakeClock()
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.Now = clk.Now })
	auth := func(token string) error {
		_, err := a.Authenticate(t.Context(), "Bearer "+token, nil)
		return err
	}

	oldKid := iss.KeyID()
	byOld := validToken(t, iss) // first used after the rotation
	iss.RotateKey(t)
	fresh := validToken(t, iss)
	// Inside the refetch window the new key is not known yet.
	wantDenied(t, auth(fresh), Unauthenticated, "token signed by an unknown key", fresh)
	clk.Add(DefaultKeyRefetchInterval + time.Second)
	if err := auth(fresh); err != nil {
		t.Fatalf("token signed by the rotated-in key after the window: %v", err)
	}
	// The old key is still published, so its tokens still verify; its kid does not make the new key's signature
	// valid.
	if err := auth(byOld); err != nil {
		t.Fatalf("token signed by the old, still published key: %v", err)
	}
	mixed := validToken(t, iss, oidcissuer.WithHeader("kid", oldKid))
	wantDenied(t, auth(mixed), Unauthenticated, "token signature invalid", mixed)

	// Rotate again, dropping the old keys: after a refetch, tokens by the dropped key fail.
	byDropped := validToken(t, iss)
	iss.RotateKey(t, oidcissuer.DropOldKeys())
	clk.Add(DefaultKeyRefetchInterval + time.Second)
	if err := auth(validToken(t, iss)); err != nil {
		t.Fatalf("token signed by the newest key: %v", err)
	}
	wantDenied(t, auth(byDropped), Unauthenticated, "token signed by an unknown key", byDropped)
}

func TestKeysKeptWhileIssuerDown(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	clk := newFakeClock()
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.Now = clk.Now })
	iss.SetDown(true)
	clk.Add(DefaultKeyRefetchInterval + time.Second)
	if _, err := a.Authenticate(t.Context(), "Bearer "+validToken(t, iss), nil); err != nil {
		t.Fatalf("token signed by a cached key while the issuer is down: %v", err)
	}
	bad := validToken(t, iss, oidcissuer.WithUnknownKey())
	_, err := a.Authenticate(t.Context(), "Bearer "+bad, nil)
	wantDenied(t, err, Unauthenticated, "signing keys unavailable", bad)
}

func TestIssuerDownAtStart(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	iss.SetDown(true)
	a := startAuth(t, Config{OIDC: oidcConfig(iss)}, prometheus.NewRegistry())

	testutil.Eventually(t, "a failed discovery", func() bool {
		err := a.Ready()
		return err != nil && strings.Contains(err.Error(), "unreachable")
	})
	if err := a.Ready(); !strings.Contains(err.Error(), "OIDC issuer "+iss.URL()+" unreachable") ||
		!strings.Contains(err.Error(), "503") {
		t.Errorf("Ready() = %v, want the issuer URL and the cause", err)
	}
	token := validToken(t, iss)
	_, err := a.Authenticate(t.Context(), "Bearer "+token, nil)
	wantDenied(t, err, Unauthenticated, "OIDC issuer not ready", token)

	iss.SetDown(false)
	// Run retries with a doubling backoff; a slow first wait above may have stretched it to several seconds.
	testutil.EventuallyWithin(t, 15*time.Second, "readiness after the issuer came up", func() bool { return a.Ready() == nil })
	if _, err := a.Authenticate(t.Context(), "Bearer "+token, nil); err != nil {
		t.Fatalf("Authenticate after recovery: %v", err)
	}
}

func TestReadyBeforeRun(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	a, err := New(Config{OIDC: oidcConfig(iss)}, logging.Discard(), nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "not contacted yet") {
		t.Errorf("Ready() before Run = %v", err)
	}
	if iss.DiscoveryRequests() != 0 || iss.Requests() != 0 {
		t.Errorf("New did network I/O")
	}
}

func TestIssuerMismatch(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	cfg := oidcConfig(iss)
	cfg.IssuerURL = iss.URL() + "/" // the classic: a trailing slash the provider does not have
	a := startAuth(t, Config{OIDC: cfg}, prometheus.NewRegistry())
	testutil.Eventually(t, "a failed discovery", func() bool {
		err := a.Ready()
		return err != nil && !strings.Contains(err.Error(), "not contacted yet")
	})
	err := a.Ready()
	want := "issuer mismatch: configured " + iss.URL() + "/, provider says " + iss.URL()
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "unreachable") {
		t.Errorf("Ready() = %v; want %q and no talk of the network", err, want)
	}
	var mm *IssuerMismatchError
	if !errors.As(err, &mm) || mm.Discovered != iss.URL() {
		t.Errorf("Ready() = %v; want an *IssuerMismatchError", err)
	}
}

// TestKeyRefreshForgetsDroppedKeys rotates the issuer's key away and checks that a token signed by the old key,
// accepted (and cached) before, is refused once the background refresh ran, without any unknown kid to trigger a
// fetch.
func TestKeyRefreshForgetsDroppedKeys(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	const interval = 50 * time.Millisecond
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.KeyRefreshInterval = interval })
	old := validToken(t, iss)
	if _, err := a.Authenticate(t.Context(), "Bearer "+old, nil); err != nil {
		t.Fatalf("token by the current key: %v", err)
	}
	before := iss.Requests()
	iss.RotateKey(t, oidcissuer.DropOldKeys())
	testutil.EventuallyWithin(t, 5*time.Second, "the old key's token refused", func() bool {
		_, err := a.Authenticate(t.Context(), "Bearer "+old, nil)
		return err != nil
	})
	_, err := a.Authenticate(t.Context(), "Bearer "+old, nil)
	wantDenied(t, err, Unauthenticated, "token signed by an unknown key", old)
	if iss.Requests() == before {
		t.Errorf("no JWKS fetch after the rotation")
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+validToken(t, iss), nil); err != nil {
		t.Errorf("token by the new key: %v", err)
	}
}

func TestRefreshWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cc       string
		interval time.Duration
		want     time.Duration
	}{
		{"no header", "", 5 * time.Minute, 5 * time.Minute},
		{"shorter max-age wins", "public, max-age=60", 5 * time.Minute, time.Minute},
		{"longer max-age ignored", "max-age=86400", 5 * time.Minute, 5 * time.Minute},
		{"max-age below the refetch limit", "max-age=1", 5 * time.Minute, DefaultKeyRefetchInterval},
		{"max-age=0 means no hint", "no-cache, max-age=0", 5 * time.Minute, 5 * time.Minute},
		{"malformed", "max-age=soon", 5 * time.Minute, 5 * time.Minute},
		{"interval below the refetch limit", "max-age=1", time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := &oidcAuth{cfg: OIDCConfig{KeyRefreshInterval: tt.interval, KeyRefetchInterval: DefaultKeyRefetchInterval}}
			ks := &keySet{maxAge: maxAge(tt.cc)}
			if got := o.refreshWait(ks); got != tt.want {
				t.Errorf("refreshWait = %v; want %v", got, tt.want)
			}
		})
	}
}
