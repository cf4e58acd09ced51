package winch_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch"
)

// TestUnavailableAuthSourceFailsOnlyItsRoutes: an auth source that cannot load (a kube source whose kubeconfig does
// not exist) is logged once at startup with its name, reason and routes; requests through the routes that use it
// get a 502 naming the source and the reason, and the other routes work.
func TestUnavailableAuthSourceFailsOnlyItsRoutes(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "no-such-kubeconfig")
	e := startEnv(t, func(c *winch.Config) {
		c.Documents.AuthPath = ""
		c.Documents.AuthInline = authDoc("token-1") + "  - name: prod-admin\n    kube: {user: admin, path: " + missing + "}\n"
		// The mapper startEnv wrote names the echo kedge; add a route for prod.example.com using the broken source.
		doc, err := os.ReadFile(c.Documents.MapperPath)
		if err != nil {
			t.Fatal(err)
		}
		route := strings.TrimSuffix(strings.TrimPrefix(string(doc), `{"routes": [`), `]}`)
		prod := strings.Replace(strings.Replace(route, "svc.example.com", "prod.example.com", 1), `"backend"`, `"prod-admin"`, 1)
		writeFile(t, c.Documents.MapperPath, `{"routes": [`+route+`, `+prod+`]}`)
	})
	resp, body := e.get(t, e.proxy, "http://svc.example.com/", "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("a route using a working source: %s %s", resp.Status, body)
	}
	resp, body = e.get(t, e.proxy, "http://prod.example.com/", "")
	msg := resp.Header.Get(wire.HeaderWinchError)
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get(wire.HeaderWinchErrorType) != string(wire.ErrAuthSource) ||
		!strings.Contains(msg, `auth source "prod-admin"`) || !strings.Contains(msg, missing) {
		t.Errorf("a route using the broken source: %s, error %q (%s); want 502 auth-source-error naming the source and its file",
			resp.Status, msg, body)
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "auth source cannot be loaded"); n != 1 {
		t.Errorf("the broken source was logged %d times, want once:\n%s", n, logs)
	}
	for _, want := range []string{"auth_source=prod-admin", `routes="[1]"`, missing} {
		if !strings.Contains(logs, want) {
			t.Errorf("the startup warning lacks %q:\n%s", want, logs)
		}
	}
}
