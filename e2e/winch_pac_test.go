package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/dop251/goja"

	"github.com/kedge-proxy/kedge/pkg/winch/pac"
)

// pacMapper has direct routes (whose hosts the PAC file names when no patterns are given), a gRPC-only route
// (which the PAC file must ignore: browsers do not speak gRPC to winch) and a regexp route.
const pacMapper = `{"routes": [
  {"direct": {"key": "hello.example.com", "url": "https://kedge.example.net:8443"}, "protocol": "HTTP"},
  {"direct": {"key": "api.example.com:443", "url": "https://kedge.example.net:8443"}},
  {"direct": {"key": "grpc.example.com:443", "url": "https://kedge.example.net:8444"}, "protocol": "GRPC"},
  {"regexp": {"exp": "^[a-z0-9-]+[.](?P<c>[a-z0-9-]+)[.]internal[.]example[.]com(:[0-9]+)?$", "url": "https://${c}.kedge.example.net:443"}}
]}`

// TestWinchPAC checks the PAC file winch serves at /wpad.dat and /proxy.pac by running it, as a browser would:
// mapped hosts go to winch (http and https URLs alike), everything else DIRECT; and the local-endpoint guard.
func TestWinchPAC(t *testing.T) {
	type verdict struct{ url, host, want string }
	tests := []struct {
		name     string
		extra    []string
		patterns []string // the PAC file must equal pac.Generate with these; nil: not compared
		verdicts []verdict
	}{
		{
			name:     "derived from the mapper's direct routes",
			patterns: []string{"hello.example.com", "api.example.com"},
			verdicts: []verdict{
				{"http://hello.example.com/", "hello.example.com", "PROXY"},
				{"https://api.example.com/v1", "api.example.com", "PROXY"},
				{"https://grpc.example.com/", "grpc.example.com", "DIRECT"},
				{"https://a.b.internal.example.com/", "a.b.internal.example.com", "DIRECT"},
				{"https://www.example.org/", "www.example.org", "DIRECT"},
				{"http://intranet/", "intranet", "DIRECT"},
			},
		},
		{
			name:     "from --pac_redirect_sh_expressions",
			extra:    []string{"--pac_redirect_sh_expressions=*.*.internal.example.com,kedge-??.example.org"},
			patterns: []string{"*.*.internal.example.com", "kedge-??.example.org"},
			verdicts: []verdict{
				{"http://svc.eu1.internal.example.com/x", "svc.eu1.internal.example.com", "PROXY"},
				{"https://svc.eu1.internal.example.com/x", "svc.eu1.internal.example.com", "PROXY"},
				{"https://kedge-01.example.org/", "kedge-01.example.org", "PROXY"},
				{"https://kedge-001.example.org/", "kedge-001.example.org", "DIRECT"},
				{"http://eu1.internal.example.com/", "eu1.internal.example.com", "DIRECT"},
				{"http://hello.example.com/", "hello.example.com", "DIRECT"},
				{"ftp://svc.eu1.internal.example.com/", "svc.eu1.internal.example.com", "DIRECT"},
				{"http://localhost:8080/", "localhost", "DIRECT"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := startWinch(t, pacMapper, "", tc.extra...)
			proxy := strings.TrimPrefix(w.proxyURL, "http://")
			var files []string
			for _, path := range []string{"/wpad.dat", "/proxy.pac"} {
				resp, err := http.Get(w.proxyURL + path)
				if err != nil {
					t.Fatal(err)
				}
				body := readAll(t, resp)
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != pac.ContentType {
					t.Fatalf("GET %s: %s, Content-Type %q", path, resp.Status, resp.Header.Get("Content-Type"))
				}
				files = append(files, body)
			}
			if files[0] != files[1] {
				t.Errorf("/wpad.dat and /proxy.pac differ:\n%s\n----\n%s", files[0], files[1])
			}
			if want := string(pac.Generate(proxy, tc.patterns)); files[0] != want {
				t.Errorf("PAC file:\n%s\nwant:\n%s", files[0], want)
			}
			find := loadPAC(t, files[0])
			for _, v := range tc.verdicts {
				want := "DIRECT"
				if v.want == "PROXY" {
					want = "PROXY " + proxy + "; DIRECT"
				}
				if got := find(v.url, v.host); got != want {
					t.Errorf("FindProxyForURL(%q, %q) = %q, want %q", v.url, v.host, got, want)
				}
			}
		})
	}

	t.Run("served only to local pages", func(t *testing.T) {
		t.Parallel()
		w := startWinch(t, pacMapper, "")
		tests := []struct {
			name, host, origin string
			want               int
		}{
			{"localhost", "localhost", "", http.StatusOK},
			{"another name (DNS rebinding)", "evil.example.com", "", http.StatusForbidden},
			{"a page of another site", "127.0.0.1", "https://evil.example.com", http.StatusForbidden},
		}
		for _, tc := range tests {
			req, _ := http.NewRequest(http.MethodGet, w.proxyURL+"/wpad.dat", nil)
			req.Host = tc.host
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("%s: %s, want %d", tc.name, resp.Status, tc.want)
			}
			if tc.want == http.StatusForbidden && resp.Header.Get("X-Winch-Error-Type") != "forbidden" {
				t.Errorf("%s: X-Winch-Error-Type %q, want forbidden", tc.name, resp.Header.Get("X-Winch-Error-Type"))
			}
			if acao := resp.Header.Get("Access-Control-Allow-Origin"); acao != "" {
				t.Errorf("%s: winch sent Access-Control-Allow-Origin %q", tc.name, acao)
			}
		}
	})
}

// loadPAC runs a PAC file in a JavaScript engine with the PAC helper functions it may call and returns its
// FindProxyForURL.
func loadPAC(t *testing.T, file string) func(url, host string) string {
	t.Helper()
	vm := goja.New()
	for name, fn := range map[string]any{
		"shExpMatch":      pacShExpMatch,
		"isPlainHostName": func(host string) bool { return !strings.Contains(host, ".") },
		"dnsDomainIs":     func(host, domain string) bool { return strings.HasSuffix(host, domain) },
	} {
		if err := vm.Set(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := vm.RunString(file); err != nil {
		t.Fatalf("the PAC file does not run: %v\n%s", err, file)
	}
	find, ok := goja.AssertFunction(vm.Get("FindProxyForURL"))
	if !ok {
		t.Fatalf("the PAC file defines no FindProxyForURL:\n%s", file)
	}
	return func(url, host string) string {
		v, err := find(goja.Undefined(), vm.ToValue(url), vm.ToValue(host))
		if err != nil {
			t.Fatalf("FindProxyForURL(%q, %q): %v", url, host, err)
		}
		return v.String()
	}
}

// pacShExpMatch is the browsers' shExpMatch: '*' any run of characters, '?' one character, whole string.
func pacShExpMatch(s, pattern string) bool {
	var re strings.Builder
	re.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			re.WriteString(".*")
		case '?':
			re.WriteString(".")
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()).MatchString(s)
}
