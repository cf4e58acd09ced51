package winch_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/winch"
)

// TestDebugConfig: /debug/config on the loopback port lists the running routes and auth sources in snake_case,
// marks a source that cannot be loaded, carries the warnings, and shows no secret of the auth document.
func TestDebugConfig(t *testing.T) {
	t.Parallel()
	const (
		tokenSecret  = "tok-SECRET-a1b2c3"
		clientSecret = "client-SECRET-d4e5f6"
		dummySecret  = "dummy-SECRET-g7h8"
	)
	missing := filepath.Join(t.TempDir(), "no-kubeconfig")
	e := startEnv(t, func(c *winch.Config) {
		c.Documents.AuthPath = ""
		c.Documents.AuthInline = `auth_sources:
  - {name: backend, token: {token: ` + tokenSecret + `}}
  - name: corp
    oidc: {provider: "https://login.example.com", client_id: winch, secret: ` + clientSecret + `, scopes: [openid, email]}
  - {name: test, dummy: {value: ` + dummySecret + `}}
  - {name: prod-admin, kube: {user: admin, path: "` + missing + `"}}
`
	})
	resp, body := e.get(t, e.local, "http://"+e.addr+"/debug/config", "localhost")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /debug/config: %s %q\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, secret := range []string{tokenSecret, clientSecret, dummySecret, "SECRET"} {
		if strings.Contains(body, secret) {
			t.Errorf("/debug/config shows a secret (%s):\n%s", secret, body)
		}
	}
	// Every key is snake_case.
	for _, m := range regexp.MustCompile(`"([A-Za-z_]+)":`).FindAllStringSubmatch(body, -1) {
		if m[1] != strings.ToLower(m[1]) {
			t.Errorf("key %q is not snake_case", m[1])
		}
	}
	var got struct {
		MapperDocument string `json:"mapper_document"`
		Routes         []struct {
			Index       int    `json:"index"`
			Direct      string `json:"direct"`
			URL         string `json:"url"`
			Protocol    string `json:"protocol"`
			BackendAuth string `json:"backend_auth"`
		} `json:"routes"`
		AuthSources []struct {
			Name, Kind, Status, Error string
			ClientID                  string   `json:"client_id"`
			Scopes                    []string `json:"scopes"`
		} `json:"auth_sources"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("decoding: %v\n%s", err, body)
	}
	if got.MapperDocument != e.mapper || len(got.Routes) != 1 || got.Routes[0].Direct != "svc.example.com" ||
		got.Routes[0].BackendAuth != "backend" || got.Routes[0].Protocol != "ANY" || !strings.HasPrefix(got.Routes[0].URL, "https://localhost:") {
		t.Errorf("routes: %+v (mapper %q)", got.Routes, got.MapperDocument)
	}
	if len(got.AuthSources) != 4 {
		t.Fatalf("auth_sources: %+v", got.AuthSources)
	}
	if s := got.AuthSources[1]; s.Name != "corp" || s.Kind != "oidc" || s.ClientID != "winch" || len(s.Scopes) != 2 || s.Status != "ok" {
		t.Errorf("the oidc source: %+v", s)
	}
	if s := got.AuthSources[3]; s.Status != "unavailable" || !strings.Contains(s.Error, "loading kubeconfig") {
		t.Errorf("the kube source without a kubeconfig: %+v", s)
	}
	if len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], `auth source "prod-admin" cannot be loaded`) {
		t.Errorf("warnings: %q", got.Warnings)
	}
	if resp, _ := e.get(t, e.local, "http://"+e.addr+"/debug/config", "rebind.evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("/debug/config with a foreign Host: %s, want 403", resp.Status)
	}
}
