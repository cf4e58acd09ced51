package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// oidcopDir is the module of the OpenID Provider fixture: a small main around the example server of
// github.com/zitadel/oidc/v3, pinned by its go.mod (see its package comment for what it adds).
const oidcopDir = "tools/oidcop"

// oidcopBinary builds the fixture once per test run (see buildOIDCOP).
var oidcopBinary = sync.OnceValues(buildOIDCOP)

// buildOIDCOP returns the name under binDir of the fixture binary. The binary is built from the module proxy (or
// Go's module cache) once into the user's cache directory, outside the checkout, under a name that hashes the
// fixture's sources and the Go version, so that later runs reuse it and a changed fixture is rebuilt. .ci/run warms
// Go's caches for it.
func buildOIDCOP() (string, error) {
	h := sha256.New()
	files, err := filepath.Glob(filepath.Join(oidcopDir, "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		if !strings.HasSuffix(f, ".go") && !strings.HasSuffix(f, "go.mod") && !strings.HasSuffix(f, "go.sum") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding a cache directory for the OIDC provider fixture: %w", err)
	}
	dir := filepath.Join(cache, "kedge-e2e", "oidcop-"+hex.EncodeToString(h.Sum(nil))[:16])
	bin := filepath.Join(dir, "oidcop")
	if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid()) // concurrent test runs each build, the last rename wins
		cmd := exec.Command("go", "build", "-o", tmp, ".")
		cmd.Dir = oidcopDir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.Remove(tmp)
			return "", fmt.Errorf("building the OIDC provider fixture in e2e/%s (it needs the module proxy or a warm module cache; .ci/run warms it): %v\n%s", oidcopDir, err, out)
		}
		if err := os.Rename(tmp, bin); err != nil {
			return "", err
		}
	}
	if err := os.Symlink(bin, filepath.Join(binDir, "oidcop")); err != nil {
		return "", err
	}
	return "oidcop", nil
}

// oidcProvider is a running fixture provider with one user and one public native client, "winch".
type oidcProvider struct {
	proc           *process
	issuer         string // http://127.0.0.1:PORT, no trailing slash
	port           int
	user, password string
}

// startOIDCProvider runs the fixture; its ID tokens live for lifetime and carry perms ["proxy", "x"].
func startOIDCProvider(t *testing.T, lifetime time.Duration) *oidcProvider {
	t.Helper()
	name, err := oidcopBinary()
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	p := &oidcProvider{port: freePorts(t, 1)[0], user: "alice", password: hex.EncodeToString(secret)}
	p.issuer = "http://127.0.0.1:" + itoa(p.port)
	pwFile := writeFile(t, t.TempDir(), "password", p.password)
	p.proc = start(t, name, 5*time.Second, "-addr=127.0.0.1:"+itoa(p.port), "-password_file="+pwFile,
		"-user="+p.user, "-perms=proxy,x", "-client_id=winch", "-redirect_uri=http://127.0.0.1/winch/login/corp",
		"-id_token_lifetime="+lifetime.String())
	waitReady(t, p.proc, p.issuer+"/.well-known/openid-configuration", readyDeadline())
	return p
}

// rotateKey makes the provider sign with a new key and drop the old one from its JWKS.
func (p *oidcProvider) rotateKey(t *testing.T) {
	t.Helper()
	resp, err := http.Post(p.issuer+"/fixture/rotate-key", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("rotating the provider's key: %s", resp.Status)
	}
}

// grants counts the token requests of one grant type the provider has served.
func (p *oidcProvider) grants(grantType string) int {
	return strings.Count(p.proc.out.String(), "grant_type="+grantType+"\n")
}

// browser stands in for a person at a web browser: it follows redirects, keeps cookies and fills in forms. It
// talks to the provider and to winch's login callback directly, never through a proxy.
type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, c: &http.Client{Jar: jar, Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}}
}

// page is what the browser shows after following every redirect.
type page struct {
	url    *url.URL
	status int
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("browser: %s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		b.t.Fatalf("browser: reading %s: %v", resp.Request.URL, err)
	}
	return page{url: resp.Request.URL, status: resp.StatusCode, body: string(body)}
}

func (b *browser) get(u string) page {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

var (
	formRE  = regexp.MustCompile(`(?is)<form\b([^>]*)>(.*?)</form>`)
	inputRE = regexp.MustCompile(`(?is)<input\b[^>]*>`)
	attrRE  = regexp.MustCompile(`(?is)\b(action|method|name|value)="([^"]*)"`)
)

// submit fills in the page's only form (hidden fields as they are, the others from fill) and posts it.
func (b *browser) submit(p page, fill map[string]string) page {
	b.t.Helper()
	forms := formRE.FindAllStringSubmatch(p.body, -1)
	if len(forms) != 1 {
		b.t.Fatalf("browser: want one form on %s (%d), got %d:\n%s", p.url, p.status, len(forms), p.body)
	}
	attrs := func(tag string) map[string]string {
		m := map[string]string{}
		for _, a := range attrRE.FindAllStringSubmatch(tag, -1) {
			m[strings.ToLower(a[1])] = html.UnescapeString(a[2])
		}
		return m
	}
	form := attrs(forms[0][1])
	if !strings.EqualFold(form["method"], http.MethodPost) {
		b.t.Fatalf("browser: the form on %s is not a POST form: %q", p.url, forms[0][1])
	}
	values := url.Values{}
	for _, in := range inputRE.FindAllString(forms[0][2], -1) {
		a := attrs(in)
		if v, ok := fill[a["name"]]; ok {
			values.Set(a["name"], v)
		} else if a["name"] != "" {
			values.Set(a["name"], a["value"])
		}
	}
	for name := range fill {
		if !values.Has(name) {
			b.t.Fatalf("browser: the form on %s has no field %q:\n%s", p.url, name, p.body)
		}
	}
	action, err := p.url.Parse(form["action"])
	if err != nil {
		b.t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, action.String(), strings.NewReader(values.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// logIn does what a person does with the authorization URL winch printed: open it, sign in at the provider's login
// page, and let the provider redirect the browser to winch's callback. It returns the page winch's callback showed.
func (p *oidcProvider) logIn(t *testing.T, authURL string) page {
	t.Helper()
	b := newBrowser(t)
	login := b.get(authURL)
	if login.status != http.StatusOK || login.url.Host != "127.0.0.1:"+itoa(p.port) {
		t.Fatalf("the authorization URL led to %s (%d), want the provider's login page:\n%s", login.url, login.status, login.body)
	}
	return b.submit(login, map[string]string{"username": p.user, "password": p.password})
}

var allowRE = regexp.MustCompile(`location\.href='([^']*action=allowed[^']*)'`)

// approveDevice does what a person does with the verification URL and code of a device login: open the URL, sign
// in, check the code and allow the device.
func (p *oidcProvider) approveDevice(t *testing.T, verificationURL, userCode string) {
	t.Helper()
	b := newBrowser(t)
	login := b.get(verificationURL)
	if login.status != http.StatusOK || !strings.Contains(login.body, userCode) {
		t.Fatalf("the verification URL %s shows (%d) no form for code %s:\n%s", verificationURL, login.status, userCode, login.body)
	}
	confirm := b.submit(login, map[string]string{"username": p.user, "password": p.password})
	m := allowRE.FindStringSubmatch(confirm.body)
	if m == nil {
		t.Fatalf("after signing in, %s (%d) offers no way to allow the device:\n%s", confirm.url, confirm.status, confirm.body)
	}
	allow, err := confirm.url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if done := b.get(allow.String()); done.status != http.StatusOK || !strings.Contains(done.body, "allowed") {
		t.Fatalf("allowing the device: %s (%d):\n%s", done.url, done.status, done.body)
	}
}
