package edge

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// TestDebugConfig: /debug/config's body uses snake_case names only, lists are never null, "warnings" holds the
// warnings startup logged, and no secret appears.
func TestDebugConfig(t *testing.T) {
	const secret = "s3cret-static-token"
	file, err := config.Parse([]byte(`{"http": {"routes": [{"backend_name": "web", "host_matcher": "a.example.com", "required_permissions": ["x"]}]}}`),
		[]byte(`{"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": 80},
		  "security": {"server_name": "web.internal"}}]}}`), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	s := stateServer(t, file)
	s.cfg.Auth.StaticToken = secret
	if err := s.applyFile(file); err != nil {
		t.Fatal(err)
	}
	if _, err := s.applyDiscovered(discovered("echo.shop.svc.example.com")); err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(s.effectiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), secret) {
		t.Errorf("/debug/config shows the static token:\n%s", body)
	}
	var doc any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if !snake.MatchString(k) {
					t.Errorf("%s: key %q is not snake_case", path, k)
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		case nil:
			t.Errorf("%s is null", path)
		}
	}
	walk("", doc)

	var got struct {
		Warnings []string `json:"warnings"`
		Backends []struct {
			Name     string `json:"name"`
			Resolver struct {
				Kind        string `json:"kind"`
				DNSName     string `json:"dns_name"`
				DNSPortName string `json:"dns_port_name"`
			} `json:"resolver"`
			Security *struct {
				ServerName string `json:"server_name"`
			} `json:"security"`
		} `json:"backends"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if want := s.cfg.Warnings(s.state.current.Load().dyn); len(want) == 0 || !slices.Equal(got.Warnings, want) {
		t.Errorf("warnings %q, want %q", got.Warnings, want)
	}
	if len(got.Backends) != 2 || got.Backends[0].Name != "echo_shop_80" || got.Backends[0].Resolver.DNSPortName != "echo.shop:http" ||
		got.Backends[1].Resolver.DNSName != "127.0.0.1" || got.Backends[1].Security == nil || got.Backends[1].Security.ServerName != "web.internal" {
		t.Errorf("backends %+v", got.Backends)
	}
}

// TestConfigLoggedOnce: with discovery, the file config's warnings (logged by New) are not logged again when the
// discovered routes are merged in, and a discovered config equal to the running one is not "applied" again.
func TestConfigLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	log, err := logging.New(logging.Options{Format: "json", Output: &buf})
	if err != nil {
		t.Fatal(err)
	}
	file := fileDoc(t, "a.example.com")
	s := &Server{log: log, pool: backend.NewPool(backend.Deps{K8s: fixedK8s{}})}
	t.Cleanup(s.pool.Close)
	warnings := s.cfg.Warnings(file) // what New logs
	if len(warnings) == 0 {
		t.Fatal("the test needs a config with a warning")
	}
	if s.state, err = newState(file, warnings); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.applyDiscovered(discovered("echo.shop.svc.example.com")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.applyDiscovered(discovered("other.shop.svc.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := logging.Flush(log); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, `"msg":"config applied"`); n != 2 {
		t.Errorf("%d \"config applied\" lines, want 2 (the first discovered config and the changed one):\n%s", n, out)
	}
	if n := strings.Count(out, `"msg":"config warning"`); n != 0 {
		t.Errorf("%d \"config warning\" lines after startup's, want 0:\n%s", n, out)
	}
}
