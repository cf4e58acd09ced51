package e2e

import (
	"strings"
	"testing"
)

// pathWalkDirector protects /admin on app.example.com with a permission nobody in this test has, and leaves every
// other path open; files.example.com accepts encoded slashes.
const pathWalkDirector = `{"http": {"routes": [
  {"backend_name": "plain", "host_matcher": "app.example.com", "path_rules": ["/admin", "/admin/*"], "required_permissions": ["admin"]},
  {"backend_name": "plain", "host_matcher": "app.example.com"},
  {"backend_name": "plain", "host_matcher": "files.example.com", "allow_encoded_slashes": true}
]}}`

// TestKedgePathRuleWalkAround sends, with real curl over HTTP/1.1 and HTTP/2 (--path-as-is, so curl sends the path
// as written), spellings of /admin that common backends serve as /admin: every one must meet the protected rule
// (403), never the open route after it.
func TestKedgePathRuleWalkAround(t *testing.T) {
	b := startBackends(t)
	k := startKedge(t, pathWalkDirector, b.pool(), "--unsafe_bearer_token_proxy_auth=e2e-token")
	code := func(t *testing.T, proto, url string) string {
		t.Helper()
		out, err := k.curl(t, []string{"app.example.com", "files.example.com"}, proto, "--path-as-is",
			"-H", "Proxy-Authorization: Bearer e2e-token", "-o", "/dev/null", "-w", "%{http_code}", url)
		if err != nil {
			t.Fatalf("curl %s %s: %v\n%s", proto, url, err, out)
		}
		return strings.TrimSpace(out)
	}
	for _, proto := range []string{"--http1.1", "--http2"} {
		t.Run(proto, func(t *testing.T) {
			for _, p := range []string{"/admin", "//admin", "///admin/x", "/./admin", "/x/../admin", "/%61dmin",
				"/admin;jsessionid=1", "/;x/admin", "/admin;a=b/x", "/public;x/../admin", "/x/%2e%2e/admin"} {
				if got := code(t, proto, "https://app.example.com"+p); got != "403" {
					t.Errorf("%s: %s, want 403 from the protected rule", p, got)
				}
			}
			if got := code(t, proto, "https://app.example.com/public"); got != "200" {
				t.Errorf("/public: %s, want 200", got)
			}
			if got := code(t, proto, "https://app.example.com/x/..%2Fadmin"); got != "400" {
				t.Errorf("encoded slash without allow_encoded_slashes: %s, want 400", got)
			}
			if got := code(t, proto, "https://files.example.com/a%2Fb"); got != "200" {
				t.Errorf("encoded slash with allow_encoded_slashes: %s, want 200", got)
			}
		})
	}
}
