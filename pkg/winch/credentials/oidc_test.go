package credentials

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestOIDCRestartReusesRefreshToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.op.idTTL.Store(int64(10 * time.Second)) // stale at once (within the 30 s margin): every Token refreshes
	first := f.set(t, f.deps(), f.source("corp"))
	if err := first.Login(t.Context(), "corp", LoginOptions{}); err != nil {
		t.Fatalf("Login: %v", err)
	}
	old, err := mustGet(t, first, "corp").Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	refreshes := f.op.refreshes.Load()

	// A new Set, as after a restart: no callback listener, so only the cached refresh token can help.
	second := f.set(t, f.headless(t), f.source("corp"))
	tok, err := mustGet(t, second, "corp").Token(t.Context())
	if err != nil {
		t.Fatalf("Token after restart: %v", err)
	}
	if tok == old || f.op.refreshes.Load() != refreshes+1 || f.op.exchanges.Load() != 1 {
		t.Errorf("after restart: new token %v, refreshes %d (was %d), exchanges %d; want one refresh and no login",
			tok != old, f.op.refreshes.Load(), refreshes, f.op.exchanges.Load())
	}
}

func TestOIDCExpiredIDTokenRefreshed(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var skew atomic.Int64
	d := f.deps()
	d.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	set := f.set(t, d, f.source("corp"))
	src := mustGet(t, set, "corp")
	tok, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}

	skew.Store(int64(time.Hour - 20*time.Second)) // the hour-long ID token now expires within the margin
	fresh, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token after expiry: %v", err)
	}
	if fresh == tok || f.op.refreshes.Load() != 1 || f.op.exchanges.Load() != 1 {
		t.Errorf("new token %v, refreshes %d, exchanges %d; want a refresh", fresh != tok, f.op.refreshes.Load(), f.op.exchanges.Load())
	}
}

func TestOIDCRefreshFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := f.set(t, f.deps(), f.source("corp")).Login(t.Context(), "corp", LoginOptions{}); err != nil {
		t.Fatalf("Login: %v", err)
	}
	f.op.set(func(op *testOP) { op.failRefresh = true })
	f.op.idTTL.Store(int64(time.Hour))

	set := f.set(t, f.headless(t), f.source("corp"))
	src := mustGet(t, set, "corp")
	src.Invalidate(mustToken(t, src)) // as after a 401 from kedge
	_, err := src.Token(t.Context())
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("Token = %v; want *Error", err)
	}
	want := `auth source "corp": refresh token expired or revoked (invalid_grant); run "winch login corp"`
	if err.Error() != want {
		t.Errorf("error = %q; want %q", err, want)
	}
	// The refused refresh token is not tried again.
	if _, err := src.Token(t.Context()); err == nil || f.op.refreshes.Load() != 1 {
		t.Errorf("second Token: %v after %d refreshes; want an error and no second refresh", err, f.op.refreshes.Load())
	}
}

// mustToken returns the token of a source whose token is valid in memory or in the cache file.
func mustToken(t *testing.T, src Source) string {
	t.Helper()
	tok, err := src.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok
}

func TestOIDCInvalidate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	set := f.set(t, f.deps(), f.source("corp"))
	src := mustGet(t, set, "corp")
	tok := mustToken(t, src)

	src.Invalidate("some-other-token")
	if again := mustToken(t, src); again != tok || f.op.refreshes.Load() != 0 {
		t.Errorf("Invalidate of another token changed the cached one")
	}
	src.Invalidate(tok)
	fresh := mustToken(t, src)
	if fresh == tok || f.op.refreshes.Load() != 1 || f.op.exchanges.Load() != 1 {
		t.Errorf("after Invalidate: new token %v, refreshes %d, exchanges %d; want one refresh",
			fresh != tok, f.op.refreshes.Load(), f.op.exchanges.Load())
	}
}

func TestOIDCConcurrentTokenRefreshesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.op.addRefreshToken("rt-seed")
	path := filepath.Join(f.dir, "tokens", "corp.json")
	if err := writeCache(path, &tokenCache{Issuer: f.op.URL(), ClientID: f.op.clientID, RefreshToken: "rt-seed"}); err != nil {
		t.Fatal(err)
	}
	src := mustGet(t, f.set(t, f.headless(t), f.source("corp")), "corp")

	const callers = 20
	start := make(chan struct{})
	tokens := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			tok, err := src.Token(t.Context())
			if err != nil {
				t.Errorf("Token: %v", err)
			}
			tokens[i] = tok
		}()
	}
	close(start)
	wg.Wait()
	for i, tok := range tokens {
		if tok == "" || tok != tokens[0] {
			t.Fatalf("caller %d got a different token", i)
		}
	}
	if got := f.op.refreshes.Load(); got != 1 {
		t.Errorf("refresh requests = %d; want exactly 1", got)
	}
}

func TestOIDCCorruptCacheIsAbsent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		content string
	}{
		{"garbage", "\x00\x01not json at all"},
		{"truncated", `{"version":1,"issuer":"x","client_id":"y","id_token":"eyJhbGciOi`},
		{"partial token", `{"version":1,"issuer":"ISSUER","client_id":"winch-client","id_token":"eyJhbGciOi"}`},
		{"wrong version", `{"version":7,"issuer":"ISSUER","client_id":"winch-client","refresh_token":"rt"}`},
		{"unknown field", `{"version":1,"issuer":"ISSUER","client_id":"winch-client","refresh_token":"rt","x":1}`},
		{"empty", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			path := filepath.Join(f.dir, "tokens", "corp.json")
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			content := strings.ReplaceAll(tt.content, "ISSUER", f.op.URL())
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := mustGet(t, f.set(t, f.headless(t), f.source("corp")), "corp").Token(t.Context())
			if err == nil || !strings.Contains(err.Error(), "not logged in") {
				t.Fatalf("Token with a corrupt cache = %v; want \"not logged in\"", err)
			}
			if f.op.refreshes.Load() != 0 {
				t.Errorf("a refresh was tried with a corrupt cache")
			}
			// With a browser the login replaces the corrupt file.
			tok, err := mustGet(t, f.set(t, f.deps(), f.source("corp")), "corp").Token(t.Context())
			if err != nil {
				t.Fatalf("Token with login: %v", err)
			}
			if c, err := readCache(path); err != nil || c.IDToken != tok {
				t.Errorf("cache after login = %+v, %v", c, err)
			}
		})
	}
}

func TestOIDCCacheRefusesSymlink(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.dir, "tokens", "corp.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	err := f.set(t, f.deps(), f.source("corp")).Login(t.Context(), "corp", LoginOptions{})
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("Login with a symlinked cache = %v; want a symlink error", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the symlink target was overwritten: %q", b)
	}
}

func TestOIDCLogout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	set := f.set(t, f.deps(), f.source("corp"))
	tok := mustToken(t, mustGet(t, set, "corp"))
	path := filepath.Join(f.dir, "tokens", "corp.json")
	if err := set.Logout("corp"); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache file after Logout: %v", err)
	}
	if again := mustToken(t, mustGet(t, set, "corp")); again == tok || f.op.exchanges.Load() != 2 {
		t.Errorf("Token after Logout did not log in again (exchanges %d)", f.op.exchanges.Load())
	}
	if err := set.Logout("nope"); err == nil {
		t.Errorf("Logout of an unknown source succeeded")
	}
}

func TestOIDCCustomCacheDirAndCallback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	src := f.source("corp")
	src.CacheDir = filepath.Join(t.TempDir(), "cache")
	src.LoginCallbackPath = "/oauth/callback"
	set := f.set(t, f.deps(), src)
	if err := set.Login(t.Context(), "corp", LoginOptions{}); err != nil {
		t.Fatalf("Login: %v", err)
	}
	if got := f.op.lastAuthorizeParams().Get("redirect_uri"); got != f.cb.URL+"/oauth/callback" {
		t.Errorf("redirect_uri = %q", got)
	}
	checkMode(t, filepath.Join(src.CacheDir, "corp.json"), 0o600)
	checkMode(t, src.CacheDir, 0o700|os.ModeDir)
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if got := info.Mode() & (os.ModePerm | os.ModeDir | os.ModeSymlink); got != want {
		t.Errorf("mode of %s = %v; want %v", path, got, want)
	}
}

// TestInvalidateRateLimited: when kedge keeps refusing fresh tokens (its OIDC settings, or a backend answering
// Unauthenticated), every refused request invalidates the token; the source refreshes at most once per 30 s instead
// of once per request.
func TestInvalidateRateLimited(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var clock atomic.Int64
	d := f.deps()
	d.Now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
	src := mustGet(t, f.set(t, d, f.source("corp")), "corp")
	first := mustToken(t, src)

	src.Invalidate(first)
	second := mustToken(t, src)
	if second == first || f.op.refreshes.Load() != 1 {
		t.Fatalf("first invalidation: new token %v, refreshes %d; want one refresh", second != first, f.op.refreshes.Load())
	}
	for range 5 {
		src.Invalidate(second)
		if tok := mustToken(t, src); tok != second {
			t.Fatalf("an invalidation within 30 s of the last one replaced the token")
		}
	}
	if got := f.op.refreshes.Load(); got != 1 {
		t.Errorf("refreshes = %d after repeated invalidations; want 1", got)
	}

	clock.Store(int64(31 * time.Second))
	src.Invalidate(second)
	if third := mustToken(t, src); third == second || f.op.refreshes.Load() != 2 {
		t.Errorf("after 31 s: new token %v, refreshes %d; want a second refresh", third != second, f.op.refreshes.Load())
	}
}
