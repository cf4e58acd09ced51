package pac

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dop251/goja"
)

func TestGenerateGolden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		proxy    string
		patterns []string
		golden   string
	}{
		{name: "patterns", proxy: "127.0.0.1:18070", patterns: []string{"*.*.internal.example.com", " ", "KEDGE-??.example.org"},
			golden: "testdata/patterns.pac.golden"},
		{name: "no patterns", proxy: "127.0.0.1:8070", golden: "testdata/all.pac.golden"},
		{name: "only empty patterns", proxy: "127.0.0.1:8070", patterns: []string{"", "  "}, golden: "testdata/all.pac.golden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(tt.golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := Generate(tt.proxy, tt.patterns); string(got) != string(want) {
				t.Errorf("Generate =\n%s\nwant (%s)\n%s", got, tt.golden, want)
			}
		})
	}
}

// pacEngine evaluates a PAC file the way a browser does, with Go implementations of the PAC helper functions. Any
// other helper the file calls is undefined and fails the evaluation. A goja runtime is not safe for concurrent use;
// each test makes its own engine.
type pacEngine struct {
	find goja.Callable
	vm   *goja.Runtime
}

func newPACEngine(t *testing.T, pac []byte) *pacEngine {
	t.Helper()
	vm := goja.New()
	helpers := map[string]any{
		"shExpMatch":      shExpMatch,
		"isPlainHostName": func(host string) bool { return !strings.Contains(host, ".") },
		"dnsDomainIs":     func(host, domain string) bool { return strings.HasSuffix(host, domain) },
	}
	for name, fn := range helpers {
		if err := vm.Set(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vm.RunString(string(pac)); err != nil {
		t.Fatalf("PAC does not run: %v\n%s", err, pac)
	}
	find, ok := goja.AssertFunction(vm.Get("FindProxyForURL"))
	if !ok {
		t.Fatalf("PAC defines no FindProxyForURL function:\n%s", pac)
	}
	return &pacEngine{find: find, vm: vm}
}

func (e *pacEngine) eval(t *testing.T, url, host string) string {
	t.Helper()
	v, err := e.find(goja.Undefined(), e.vm.ToValue(url), e.vm.ToValue(host))
	if err != nil {
		t.Fatalf("FindProxyForURL(%q, %q): %v", url, host, err)
	}
	return v.String()
}

// shExpMatch implements the PAC helper: a shell expression where '*' matches any run of characters and '?' one
// character, matched against the whole string.
func shExpMatch(s, pattern string) bool {
	var re strings.Builder
	re.WriteString(`^`)
	for _, r := range pattern {
		switch r {
		case '*':
			re.WriteString(`.*`)
		case '?':
			re.WriteString(`.`)
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString(`$`)
	return regexp.MustCompile(re.String()).MatchString(s)
}

func TestShExpMatchShim(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s, pattern string
		want       bool
	}{
		{"a.b.internal.example.com", "*.*.internal.example.com", true},
		{"b.internal.example.com", "*.*.internal.example.com", false},
		{"http://x/y", "http:*", true},
		{"kedge-01.example.org", "kedge-??.example.org", true},
		{"kedge-1.example.org", "kedge-??.example.org", false},
		{"axb", "a.b", false},
	}
	for _, tt := range tests {
		if got := shExpMatch(tt.s, tt.pattern); got != tt.want {
			t.Errorf("shExpMatch(%q, %q) = %v, want %v", tt.s, tt.pattern, got, tt.want)
		}
	}
}

func TestGenerateBehaviour(t *testing.T) {
	t.Parallel()
	const viaWinch = "PROXY 127.0.0.1:18070; DIRECT"
	const viaWinchAll = "PROXY 127.0.0.1:8070; DIRECT"
	tests := []struct {
		name       string
		url, host  string
		withPatGot string // with patterns *.*.internal.example.com and kedge-??.example.org
		allGot     string // with no patterns
	}{
		{"mapped http", "http://svc.eu1.internal.example.com:18270/?name=kedge", "svc.eu1.internal.example.com", viaWinch, viaWinchAll},
		{"mapped https goes through winch too", "https://svc.eu1.internal.example.com/", "svc.eu1.internal.example.com", viaWinch, viaWinchAll},
		{"mapped ws", "ws://svc.eu1.internal.example.com/socket", "svc.eu1.internal.example.com", viaWinch, viaWinchAll},
		{"second pattern", "http://kedge-07.example.org/", "kedge-07.example.org", viaWinch, viaWinchAll},
		{"too few labels", "http://eu1.internal.example.com/", "eu1.internal.example.com", "DIRECT", viaWinchAll},
		{"unrelated host", "https://www.example.net/", "www.example.net", "DIRECT", viaWinchAll},
		{"plain host name", "http://intranet/", "intranet", "DIRECT", "DIRECT"},
		{"localhost", "http://localhost:8080/", "localhost", "DIRECT", "DIRECT"},
		{"sub.localhost", "http://app.localhost/", "app.localhost", "DIRECT", "DIRECT"},
		{"loopback IPv4", "http://127.0.0.1:8070/wpad.dat", "127.0.0.1", "DIRECT", "DIRECT"},
		{"loopback IPv6", "http://[::1]/", "::1", "DIRECT", "DIRECT"},
		{"name starting with 127", "http://127.eu1.internal.example.com/", "127.eu1.internal.example.com", viaWinch, viaWinchAll},
		{"ftp", "ftp://svc.eu1.internal.example.com/file", "svc.eu1.internal.example.com", "DIRECT", "DIRECT"},
		{"rsync", "rsync://svc.eu1.internal.example.com/mod", "svc.eu1.internal.example.com", "DIRECT", "DIRECT"},
	}
	withPat := newPACEngine(t, Generate("127.0.0.1:18070", []string{"*.*.internal.example.com", "kedge-??.example.org"}))
	all := newPACEngine(t, Generate("127.0.0.1:8070", nil))
	for _, tt := range tests { // sequential: the engines are not safe for concurrent use
		if got := withPat.eval(t, tt.url, tt.host); got != tt.withPatGot {
			t.Errorf("%s: with patterns FindProxyForURL(%q, %q) = %q, want %q", tt.name, tt.url, tt.host, got, tt.withPatGot)
		}
		if got := all.eval(t, tt.url, tt.host); got != tt.allGot {
			t.Errorf("%s: without patterns FindProxyForURL(%q, %q) = %q, want %q", tt.name, tt.url, tt.host, got, tt.allGot)
		}
	}
}

// TestGenerateQuotesValues checks that patterns (lower-case, with a dot, so that they are not plain host names) and
// the proxy address reach the script as the exact strings given, whatever characters they hold, and cannot inject
// code.
func TestGenerateQuotesValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		pattern string
	}{
		{"quote and backslash", `a"b\c.example.com`},
		{"script injection", `x.example.com")) { return "proxy evil:1"; } if (("`},
		{"line separators", "a\u2028b\u2029c\nd.example.com"},
		{"html", "</script><b>&.example.com"},
		{"single quote", "it's.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newPACEngine(t, Generate(`127.0.0.1:1"x`, []string{tt.pattern}))
			if got, want := e.eval(t, "http://host/", tt.pattern), `PROXY 127.0.0.1:1"x; DIRECT`; got != want {
				t.Errorf("host equal to the pattern: %q, want %q", got, want)
			}
			if got := e.eval(t, "http://other.example.com/", "other.example.com"); got != "DIRECT" {
				t.Errorf("other host: %q, want DIRECT", got)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	body := Generate("127.0.0.1:8070", []string{"*.example.com"})
	modTime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := httptest.NewServer(Handler(body, modTime))
	t.Cleanup(srv.Close)
	tests := []struct {
		name       string
		method     string
		header     map[string]string
		wantStatus int
		wantBody   string
	}{
		{name: "GET", method: http.MethodGet, wantStatus: http.StatusOK, wantBody: string(body)},
		{name: "HEAD", method: http.MethodHead, wantStatus: http.StatusOK},
		{name: "not modified", method: http.MethodGet, header: map[string]string{"If-Modified-Since": modTime.Format(http.TimeFormat)},
			wantStatus: http.StatusNotModified},
		{name: "modified since", method: http.MethodGet, header: map[string]string{"If-Modified-Since": modTime.Add(-time.Hour).Format(http.TimeFormat)},
			wantStatus: http.StatusOK, wantBody: string(body)},
		{name: "POST", method: http.MethodPost, wantStatus: http.StatusMethodNotAllowed, wantBody: "method not allowed\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+"/wpad.dat", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus || string(got) != tt.wantBody {
				t.Fatalf("%s = %d %q, want %d %q", tt.method, resp.StatusCode, got, tt.wantStatus, tt.wantBody)
			}
			if resp.StatusCode == http.StatusOK {
				if ct := resp.Header.Get("Content-Type"); ct != ContentType {
					t.Errorf("Content-Type = %q, want %q", ct, ContentType)
				}
				if lm := resp.Header.Get("Last-Modified"); lm != modTime.Format(http.TimeFormat) {
					t.Errorf("Last-Modified = %q", lm)
				}
			}
			if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
}
