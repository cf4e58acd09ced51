package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// debugToken is the static proxy token of these tests. Failure messages never print it nor a body that may hold it.
const debugToken = "e2e-debug-t0ken-4c1f"

// debugGet fetches url without any proxy and returns the status and body.
func debugGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// TestKedgeDebugPortHidesSecrets runs kedge with the proxy token on its command line, uses the token, then reads
// every page of the debug port from loopback (where pprof and /debug/config answer by default): none may show it.
func TestKedgeDebugPortHidesSecrets(t *testing.T) {
	echo := testutil.NewEchoServer(t)
	k := startKedge(t, `{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`,
		fmt.Sprintf(`{"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": %d}}]}}`, echo.Port()),
		"--unsafe-bearer-token-proxy-auth", debugToken) // kebab-case, value as a separate argument
	if resp := k.get(t, "web.example.com", debugToken); resp.StatusCode != http.StatusOK {
		t.Fatalf("request with the token: %d", resp.StatusCode)
	}
	if resp := k.get(t, "web.example.com", "wrong-token"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("request with a wrong token: %d", resp.StatusCode)
	}
	for _, path := range []string{"/debug/pprof/cmdline", "/debug/config", "/metrics", "/debug/pprof/", "/_version",
		"/debug/pprof/goroutine?debug=2"} {
		code, body := debugGet(t, "http://"+k.debug+path)
		if code != http.StatusOK {
			t.Errorf("GET %s from loopback = %d, want 200", path, code)
		}
		if strings.Contains(body, debugToken) {
			t.Errorf("GET %s shows the proxy token", path)
		}
		if path == "/debug/pprof/cmdline" && !strings.Contains(body+"\x00", "\x00--unsafe-bearer-token-proxy-auth\x00<redacted>\x00") {
			t.Errorf("GET %s does not show the token flag redacted (%d bytes)", path, len(body))
		}
	}
	if strings.Contains(k.proc.out.String(), debugToken) {
		t.Error("kedge logged the proxy token")
	}
}

// TestKedgeDebugPagesLoopbackOnly: probes, metrics and the version answer everyone, and pprof and /debug/config
// answer a loopback peer (kubectl port-forward arrives as one), with and without --server_debug_remote_access. That
// a non-loopback peer is refused is tested on the handler (pkg/edge/admin), with peer addresses set in the request:
// test traffic never leaves the loopback range. The token comes from its _file form.
func TestKedgeDebugPagesLoopbackOnly(t *testing.T) {
	tokenFile := writeFile(t, t.TempDir(), "token", debugToken+"\n")
	for _, remote := range []bool{false, true} {
		name := "default"
		if remote {
			name = "remote access"
		}
		t.Run(name, func(t *testing.T) {
			debug := net.JoinHostPort("127.0.0.1", itoa(freePorts(t, 1)[0]))
			_, port, _ := net.SplitHostPort(debug)
			args := []string{"--server_bind_address=127.0.0.1", "--server_http_port=" + port,
				"--server_http_tls_port=0", "--server_grpc_tls_port=0",
				"--kedge_config_director_config={}",
				"--unsafe_bearer_token_proxy_auth_file=" + tokenFile}
			if remote {
				args = append(args, "--server_debug_remote_access")
			}
			p := start(t, "kedge", 10*time.Second, args...)
			waitReady(t, p, "http://"+debug+"/readyz", readyDeadline())
			for _, path := range []string{"/_healthz", "/readyz", "/metrics", "/_version", "/debug/pprof/cmdline",
				"/debug/pprof/", "/debug/config", "/debug/pprof/heap"} {
				code, body := debugGet(t, "http://"+debug+path)
				if strings.Contains(body, debugToken) {
					t.Errorf("GET %s shows the proxy token", path)
				}
				if code != http.StatusOK {
					t.Errorf("GET %s from loopback = %d, want 200", path, code)
				}
			}
			p.waitOutput(t, "the director config has no routes and no adhoc rules")
			if strings.Contains(p.out.String(), debugToken) {
				t.Error("kedge logged the proxy token")
			}
		})
	}
}

// TestKedgeSecretFileErrors: a bad _file form stops kedge before it starts, naming the flag and the file.
func TestKedgeSecretFileErrors(t *testing.T) {
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", debugToken)
	missing := filepath.Join(dir, "missing")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"both forms", []string{"--unsafe_bearer_token_proxy_auth=" + debugToken, "--unsafe_bearer_token_proxy_auth_file=" + tokenFile},
			"--unsafe_bearer_token_proxy_auth and --unsafe_bearer_token_proxy_auth_file both given"},
		{"missing file", []string{"--unsafe_bearer_token_proxy_auth_file=" + missing}, "--unsafe_bearer_token_proxy_auth_file: open " + missing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := exec.Command(filepath.Join(binDir, "kedge"),
				append([]string{"--server_http_tls_port=0", "--server_grpc_tls_port=0"}, tt.args...)...).CombinedOutput()
			if code := exitCode(err); code != 2 || !strings.Contains(string(out), tt.want) || strings.Contains(string(out), debugToken) {
				t.Errorf("exit %d, output of %d bytes; want exit 2 naming %q and not showing the token", code, len(out), tt.want)
			}
		})
	}
}
