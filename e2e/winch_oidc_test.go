package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// These tests log winch in at an OpenID Provider nobody here wrote (the zitadel/oidc example server, see
// oidcop_test.go) and send requests through the real winch and kedge: browser login (PKCE) and device flow driven
// over HTTP as a person would, silent refresh of short-lived ID tokens, the provider rotating its signing key, and
// winch's one retry after kedge refuses a token.

// oidcSetup is a provider, a kedge that accepts its tokens for client "winch" (permission "proxy" required, "x"
// for x.example.com, "y" for y.example.com), and a winch whose source "corp" logs in there.
type oidcSetup struct {
	op *oidcProvider
	k  *kedgeEnv
	w  *winchEnv
}

func startOIDCSetup(t *testing.T, lifetime time.Duration, kedgeExtra ...string) *oidcSetup {
	t.Helper()
	op := startOIDCProvider(t, lifetime)
	echo := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	pool := fmt.Sprintf(`{"http": {"backends": [{"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}}]}}`, echo.Port())
	const director = `{"http": {"routes": [
    {"backend_name": "plain", "host_matcher": "x.example.com", "required_permissions": ["x"]},
    {"backend_name": "plain", "host_matcher": "y.example.com", "required_permissions": ["y"]}]}}`
	k := startKedge(t, director, pool, append([]string{"--server_oidc_provider_url=" + op.issuer,
		"--server_oidc_client_id=winch", "--server_oidc_perms_claim=perms", "--server_oidc_required_perm=proxy"}, kedgeExtra...)...)
	mapper := fmt.Sprintf(`{"routes": [{"regexp": {"exp": "^[a-z]+[.]example[.]com(:[0-9]+)?$", "url": %q}, "proxy_auth": "corp"}]}`, kedgeURL(k))
	auth := fmt.Sprintf(`{"auth_sources": [{"name": "corp", "oidc": {"provider": %q, "client_id": "winch"}}]}`, op.issuer)
	w := startWinch(t, mapper, auth, "--client_tls_root_ca_files="+k.caFile, "--no_browser")
	return &oidcSetup{op: op, k: k, w: w}
}

// winchLogin is a `winch login` running in the background, as in a terminal the test reads.
type winchLogin struct {
	out  testutil.Buffer
	done chan struct{}
	err  error
}

// startLogin runs `winch login NAME` with the running winch's flags (so it hands the login to that winch).
func (w *winchEnv) startLogin(t *testing.T, name string, extra ...string) *winchLogin {
	t.Helper()
	l := &winchLogin{done: make(chan struct{})}
	args := append([]string{"login", name, "--server_auth_config_path=" + w.authPath, "--server_http_port=" + itoa(w.httpPort),
		"--state_dir=" + w.stateDir, "--no_browser"}, extra...)
	cmd := exec.Command(filepath.Join(binDir, "winch"), args...)
	cmd.Env = clientEnv("GORACE=atexit_sleep_ms=0")
	cmd.Stdout, cmd.Stderr = &l.out, &l.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { l.err = cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			_ = cmd.Process.Kill()
			<-l.done
		}
	})
	return l
}

// await waits until the output matches re and returns the submatches.
func (l *winchLogin) await(t *testing.T, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	testutil.EventuallyWithin(t, 30*time.Second, "winch login to print "+re.String(), func() bool {
		m = re.FindStringSubmatch(l.out.String())
		if m == nil && l.exited() {
			t.Fatalf("winch login exited (%v) without printing %s:\n%s", l.err, re, l.out.String())
		}
		return m != nil
	})
	return m
}

func (l *winchLogin) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// finish waits for winch login to exit 0 and returns its output.
func (l *winchLogin) finish(t *testing.T) string {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("winch login did not exit within 30 s of the login:\n%s", l.out.String())
	}
	if l.err != nil {
		t.Fatalf("winch login: %v\n%s", l.err, l.out.String())
	}
	return l.out.String()
}

var (
	browserPromptRE = regexp.MustCompile(`To log in to "corp", open this URL in a browser:\s+(\S+)`)
	devicePromptRE  = regexp.MustCompile(`To log in to "corp", open this URL on any device and enter \(or confirm\) the code (\S+):\s+(\S+)`)
)

// browserLogin runs `winch login corp` and logs in at the URL it prints; it returns the authorization URL.
func (s *oidcSetup) browserLogin(t *testing.T) *url.URL {
	t.Helper()
	l := s.w.startLogin(t, "corp")
	authURL, err := url.Parse(l.await(t, browserPromptRE)[1])
	if err != nil {
		t.Fatal(err)
	}
	if p := s.op.logIn(t, authURL.String()); p.status != 200 || p.url.Path != "/winch/login/corp" || !strings.Contains(p.body, "winch: logged in to corp") {
		t.Fatalf("the browser ended at %s (%d), want winch's callback saying it logged in:\n%s", p.url, p.status, p.body)
	}
	out := l.finish(t)
	for _, want := range []string{fmt.Sprintf(`winch is running on 127.0.0.1:%d; asking it to log in to "corp"`, s.w.httpPort), "logged in to corp"} {
		if !strings.Contains(out, want) {
			t.Errorf("winch login's output lacks %q:\n%s", want, out)
		}
	}
	return authURL
}

// cachedTokens reads winch's token cache file of source corp.
func (s *oidcSetup) cachedTokens(t *testing.T) (idToken, refreshToken string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.w.stateDir, "tokens", "corp.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		IDToken      string `json:"id_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.IDToken, c.RefreshToken
}

// get sends GET http://host/ through winch with curl and returns the answer.
func (s *oidcSetup) get(t *testing.T, host string) curlResponse {
	t.Helper()
	out, err := s.w.curlVia(t, "-i", "http://"+host+"/")
	if err != nil {
		t.Fatalf("curl http://%s/ through winch: %v\n%s", host, err, out)
	}
	return parseCurl(t, out)
}

// claims decodes a JWT's payload (the signature is kedge's business).
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestWinchOIDCLogin(t *testing.T) {
	t.Parallel()
	s := startOIDCSetup(t, time.Hour)

	t.Run("browser login with PKCE, driven over HTTP", func(t *testing.T) {
		authURL := s.browserLogin(t)
		q := authURL.Query()
		wantRedirect := fmt.Sprintf("http://127.0.0.1:%d/winch/login/corp", s.w.httpPort)
		if q.Get("client_id") != "winch" || q.Get("redirect_uri") != wantRedirect || q.Get("code_challenge_method") != "S256" ||
			q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" || q.Get("scope") != "openid offline_access" {
			t.Errorf("authorization URL %s: want client winch, redirect %s, PKCE S256, state, nonce and scopes openid offline_access", authURL, wantRedirect)
		}
		id, refresh := s.cachedTokens(t)
		if c := claims(t, id); c["sub"] != "alice" || c["aud"] == nil || fmt.Sprint(c["perms"]) != "[proxy x]" {
			t.Errorf("ID token claims %v: want sub alice, an audience and perms [proxy x]", c)
		}
		if refresh == "" {
			t.Error("no refresh token cached: offline_access was not asked for or not granted")
		}
		for path, want := range map[string]os.FileMode{filepath.Join(s.w.stateDir, "tokens"): 0o700, filepath.Join(s.w.stateDir, "tokens", "corp.json"): 0o600} {
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v %v, want mode %v", path, fi.Mode().Perm(), err, want)
			}
		}

		r := s.get(t, "x.example.com")
		if r.status != 200 {
			t.Fatalf("x.example.com through winch after the login: %d %v\n%s", r.status, r.header, r.body)
		}
		if e := r.echo(t); e.Header.Get("Proxy-Authorization") != "" || e.Backend != "plain" {
			t.Errorf("backend %q saw Proxy-Authorization %q", e.Backend, e.Header.Get("Proxy-Authorization"))
		}
		if r := s.get(t, "y.example.com"); r.status != 403 || r.header.Get("X-Kedge-Error-Type") != "forbidden" {
			t.Errorf("y.example.com (permission y missing): %d %v, want kedge's 403 forbidden passed through", r.status, r.header)
		}
		s.k.proc.waitOutput(t, `identity="oidc:sub=alice"`)
		for _, p := range []*process{s.k.proc, s.w.proc, s.op.proc} {
			if strings.Contains(p.out.String(), strings.Split(id, ".")[2]) {
				t.Errorf("%s's log contains the ID token", p.name)
			}
		}
		if strings.Contains(s.w.proc.out.String(), refresh) {
			t.Error("winch's log contains the refresh token")
		}
	})

	t.Run("device flow, approved over HTTP", func(t *testing.T) {
		before, _ := s.cachedTokens(t)
		l := s.w.startLogin(t, "corp", "--oidc_device_flow")
		m := l.await(t, devicePromptRE)
		s.op.approveDevice(t, m[2], m[1])
		if out := l.finish(t); !strings.Contains(out, "logged in to corp") {
			t.Errorf("winch login --oidc_device_flow:\n%s", out)
		}
		if s.op.grants("urn:ietf:params:oauth:grant-type:device_code") == 0 {
			t.Error("the provider saw no device-code token request")
		}
		after, _ := s.cachedTokens(t)
		if after == before {
			t.Error("the device login left the cached ID token as it was")
		}
		if r := s.get(t, "x.example.com"); r.status != 200 {
			t.Errorf("x.example.com through winch after the device login: %d %v", r.status, r.header)
		}
	})
}

// TestWinchOIDCSilentRefresh: with ID tokens that live 5 s, a request after the token expired gets a refreshed
// one from winch without a login.
func TestWinchOIDCSilentRefresh(t *testing.T) {
	t.Parallel()
	const lifetime = 5 * time.Second
	s := startOIDCSetup(t, lifetime)
	s.browserLogin(t)
	first, firstRefresh := s.cachedTokens(t)
	if r := s.get(t, "x.example.com"); r.status != 200 {
		t.Fatalf("x.example.com right after the login: %d %v", r.status, r.header)
	}
	exp := time.Unix(int64(claims(t, first)["exp"].(float64)), 0)
	testutil.EventuallyWithin(t, lifetime+5*time.Second, "the ID token to expire", func() bool { return time.Now().After(exp.Add(time.Second)) })
	if resp := s.k.get(t, "x.example.com", first); resp.StatusCode != 401 {
		t.Fatalf("kedge accepts the expired ID token: %s", resp.Status)
	}
	refreshes := s.op.grants("refresh_token")

	if r := s.get(t, "x.example.com"); r.status != 200 {
		t.Fatalf("x.example.com after the ID token expired: %d %v, want 200 after a silent refresh", r.status, r.header)
	}
	if got := s.op.grants("refresh_token"); got != refreshes+1 {
		t.Errorf("the provider saw %d refresh-token requests for one expired token, want 1", got-refreshes)
	}
	second, secondRefresh := s.cachedTokens(t)
	if second == first || secondRefresh == "" || secondRefresh == firstRefresh {
		t.Error("the cache does not hold the refreshed ID token and the provider's new refresh token")
	}
	if strings.Count(s.op.proc.out.String(), "path=/auth ") != 1 {
		t.Errorf("the provider saw another authorization request: winch started a login instead of refreshing")
	}
}

// TestWinchOIDCKeyRotation: the provider replaces its signing key; kedge refuses the old key's tokens after
// --server_oidc_jwks_refresh_interval; winch's next request is refused, refreshes and is sent again once (the 401
// retry); a second refusal within 30 s goes to the client; a new login works.
func TestWinchOIDCKeyRotation(t *testing.T) {
	t.Parallel()
	s := startOIDCSetup(t, time.Hour, "--server_oidc_jwks_refresh_interval=1s")
	s.browserLogin(t)
	t1, _ := s.cachedTokens(t)
	if r := s.get(t, "x.example.com"); r.status != 200 {
		t.Fatalf("x.example.com after the login: %d %v", r.status, r.header)
	}

	s.op.rotateKey(t)
	testutil.EventuallyWithin(t, 20*time.Second, "kedge to refuse the token signed by the dropped key", func() bool {
		return s.k.get(t, "x.example.com", t1).StatusCode == 401
	})
	refreshes := s.op.grants("refresh_token")
	retried := time.Now()
	if r := s.get(t, "x.example.com"); r.status != 200 {
		t.Fatalf("x.example.com with the old key's token cached: %d %v, want 200 after winch refreshed and retried", r.status, r.header)
	}
	s.w.proc.waitOutput(t, "kedge rejected the proxy token; retrying with a fresh one")
	if got := s.op.grants("refresh_token"); got != refreshes+1 {
		t.Errorf("%d refresh-token requests for one refused token, want 1", got-refreshes)
	}
	t2, _ := s.cachedTokens(t)
	if t2 == t1 {
		t.Fatal("the cache still holds the refused token")
	}

	s.op.rotateKey(t)
	testutil.EventuallyWithin(t, 20*time.Second, "kedge to refuse the second key's token", func() bool {
		return s.k.get(t, "x.example.com", t2).StatusCode == 401
	})
	refreshes = s.op.grants("refresh_token")
	r := s.get(t, "x.example.com")
	if time.Since(retried) < 30*time.Second { // otherwise winch may rightly retry again
		if r.status != 401 || r.header.Get("X-Kedge-Error-Type") != "unauthorized" {
			t.Errorf("a second refusal within 30 s: %d %v, want kedge's 401 passed to the client", r.status, r.header)
		}
		if got := s.op.grants("refresh_token"); got != refreshes {
			t.Errorf("%d refresh-token requests for a second refusal within 30 s, want none", got-refreshes)
		}
	}

	s.browserLogin(t)
	if r := s.get(t, "x.example.com"); r.status != 200 {
		t.Errorf("x.example.com after a new login: %d %v", r.status, r.header)
	}
}
