package route

import (
	"errors"
	"net/http"
	"testing"
)

// walkVariants are spellings of "/admin" (and of "/admin/x" under it) that common backends serve as that path:
// Python's http.server, nginx and Go merge slashes and resolve dot segments; Tomcat, Jetty and Spring drop ';'
// segment parameters. Each must land on the protected rule, never on the open route after it.
var walkVariants = []string{
	"/admin", "//admin", "///admin", "/./admin", "/x/../admin", "/%61dmin", "/%2e/admin", "/admin;jsessionid=1",
	"/admin;", "/;x/admin", "//admin;x", "/public;x/../admin", "/public/..//admin",
	"/admin/x", "//admin//x", "/admin;a=b/x", "/admin/;/x", "/admin/./x", "/admin/x;y",
}

func TestPathRuleCannotBeWalkedAround(t *testing.T) {
	t.Parallel()
	for _, kind := range []struct {
		name  string
		rules []string
	}{
		{"exact and prefix", []string{"/admin", "/admin/*"}},
		{"prefix only", []string{"/admin*"}},
	} {
		tbl := mustHTTPTable(t, []HTTPRoute{
			{Backend: "protected", Host: "app.example.com", Paths: kind.rules, RequiredPermissions: []string{"admin"}},
			{Backend: "open", Host: "app.example.com"},
		}, nil)
		for _, v := range walkVariants {
			p, err := CanonicalPath(v)
			if err != nil {
				t.Errorf("%s: CanonicalPath(%q): %v", kind.name, v, err)
				continue
			}
			got := backendOf(tbl.Match(&HTTPRequest{Host: "app.example.com", Port: 443, Path: p.Match, Mode: ModeReverse}))
			if got != "protected" {
				t.Errorf("%s: %q (match form %q) went to %q, want protected", kind.name, v, p.Match, got)
			}
		}
	}
}

func TestPathCaseInsensitive(t *testing.T) {
	t.Parallel()
	tbl := mustHTTPTable(t, []HTTPRoute{
		{Backend: "ci", Host: "win.example.com", Paths: []string{"/Admin", "/API/*"}, PathCaseInsensitive: true},
		{Backend: "cs", Host: "lin.example.com", Paths: []string{"/Admin", "/API/*"}},
	}, nil)
	tests := []struct {
		host, path, want string
	}{
		{"win.example.com", "/admin", "ci"},
		{"win.example.com", "/ADMIN", "ci"},
		{"win.example.com", "/aDmIn", "ci"},
		{"win.example.com", "/api/v1", "ci"},
		{"win.example.com", "/Api/V1", "ci"},
		{"win.example.com", "/admin2", ""},
		{"win.example.com", "/apix", ""},
		{"lin.example.com", "/Admin", "cs"},
		{"lin.example.com", "/admin", ""},
		{"lin.example.com", "/API/x", "cs"},
		{"lin.example.com", "/api/x", ""},
	}
	for _, tt := range tests {
		got := backendOf(tbl.Match(&HTTPRequest{Host: tt.host, Port: 443, Path: tt.path, Header: http.Header{}}))
		if got != tt.want {
			t.Errorf("%s%s: got %q, want %q", tt.host, tt.path, got, tt.want)
		}
	}
}

func TestPathRuleRejectsWhatNeverMatches(t *testing.T) {
	t.Parallel()
	for _, rule := range []string{"/admin;x", "//admin", "/a//b*", "/a/../b", "/a%2Fb"} {
		_, err := NewHTTPTable([]HTTPRoute{{Backend: "b", Paths: []string{rule}}}, nil)
		if err == nil {
			t.Errorf("path rule %q accepted; it can never match a canonical request path", rule)
		}
	}
	if _, err := CanonicalPath("/a%2Fb"); errors.Is(err, ErrBadPath) {
		t.Errorf("an encoded slash is flagged, not rejected, by CanonicalPath: %v", err)
	}
}
