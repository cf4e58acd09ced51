package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// TestWinchDocsExamples runs winch with docs/examples/winch-mapper.yaml and winch-auth.yaml (as `make demo` and
// docs/winch.md do) and the subcommands docs/winch.md shows: route, login, logout and ca.
func TestWinchDocsExamples(t *testing.T) {
	const mapperPath, authPath = "../docs/examples/winch-mapper.yaml", "../docs/examples/winch-auth.yaml"
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	w := startWinch(t, read(mapperPath), read(authPath))

	t.Run("winch route", func(t *testing.T) {
		tests := []struct {
			dest string
			want []string
		}{
			{"hello.demo.kedge.local", []string{`HTTP and CONNECT: route 0 (direct "hello.demo.kedge.local", protocol HTTP)`,
				"kedge:        https://localhost:8443", `proxy_auth:   "demo-proxy"`, `backend_auth: "demo-backend"`}},
			{"api.demo.kedge.local:443", []string{`HTTP and CONNECT: route 1 (direct "api.demo.kedge.local:443", protocol HTTP)`}},
			{"grpc.demo.kedge.local:443", []string{`gRPC: route 2 (direct "grpc.demo.kedge.local:443", protocol GRPC)`,
				"kedge:        https://localhost:8444"}},
			{"other.demo.kedge.local:8080", []string{"HTTP and CONNECT: route 3 (regexp"}},
		}
		for _, tc := range tests {
			out, stderr, code := winchRun(t, "route", tc.dest, "--server_mapper_config_path="+mapperPath)
			if code != 0 {
				t.Errorf("winch route %s: exit %d\n%s%s", tc.dest, code, out, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("winch route %s output lacks %q:\n%s", tc.dest, want, out)
				}
			}
		}
	})

	t.Run("winch login and logout ask the running winch", func(t *testing.T) {
		flags := []string{"--server_auth_config_path=" + authPath, "--server_http_port=" + itoa(w.httpPort), "--state_dir=" + w.stateDir}
		out, stderr, code := winchRun(t, append([]string{"login", "demo-proxy"}, flags...)...)
		if code != 0 || !strings.Contains(out, "asking it to log in") || !strings.Contains(out, "logged in to demo-proxy") {
			t.Errorf("winch login demo-proxy: exit %d\n%s%s", code, out, stderr)
		}
		out, stderr, code = winchRun(t, append([]string{"logout", "demo-proxy"}, flags...)...)
		if code != 0 || !strings.Contains(out, `logged out of "demo-proxy"`) {
			t.Errorf("winch logout demo-proxy: exit %d\n%s%s", code, out, stderr)
		}
		out, stderr, code = winchRun(t, append([]string{"login", "no-such-source"}, flags...)...)
		if code != 1 || !strings.Contains(stderr, `no auth source called "no-such-source"`) {
			t.Errorf("winch login no-such-source: exit %d, want 1 naming the source\n%s%s", code, out, stderr)
		}
	})

	t.Run("winch ca", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		out, stderr, code := winchRun(t, "ca", "--state_dir="+dir)
		if code != 0 || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
			t.Fatalf("winch ca: exit %d\n%s%s", code, out, stderr)
		}
		again, _, _ := winchRun(t, "ca", "--state_dir="+dir)
		if again != out {
			t.Errorf("a second winch ca made a new CA instead of printing the same one")
		}
		for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "mitm-ca-key.pem"): 0o600} {
			fi, err := os.Stat(name)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), want)
			}
		}
	})
}

// TestWinchDocsDocuments checks that the mapper and auth examples in docs/winch.md are valid documents, and that the
// mapper example's templating does what the text says.
func TestWinchDocsDocuments(t *testing.T) {
	doc, err := os.ReadFile("../docs/winch.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(start string) string {
		_, rest, ok := strings.Cut(string(doc), "```yaml\n"+start)
		if !ok {
			t.Fatalf("docs/winch.md has no yaml block starting with %q", start)
		}
		body, _, _ := strings.Cut(rest, "```")
		return start + body
	}
	if _, err := config.ParseAuth([]byte(block("auth_sources:")), "docs/winch.md"); err != nil {
		t.Errorf("the auth example in docs/winch.md is not valid:\n%v", err)
	}
	mapperPath := writeFile(t, t.TempDir(), "mapper.yaml", block("routes:"))
	out, stderr, code := winchRun(t, "route", "svc.eu1.internal.example.com:443", "--server_mapper_config_path="+mapperPath)
	if code != 0 || !strings.Contains(out, "kedge:        https://kedge.eu1.example.com:443") {
		t.Errorf("the mapper example in docs/winch.md does not send svc.eu1.internal.example.com to kedge.eu1: exit %d\n%s%s", code, out, stderr)
	}
}
