package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// authDirector needs permission x for x.example.com and y for y.example.com (HTTP), and x for the test gRPC service.
const authDirector = `{
  "http": {"routes": [
    {"backend_name": "plain", "host_matcher": "x.example.com", "required_permissions": ["x"]},
    {"backend_name": "plain", "host_matcher": "y.example.com", "required_permissions": ["y"]}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*", "required_permissions": ["x"]}
  ]}
}`

// get sends GET https://host/ through kedge with the given Proxy-Authorization token ("" for none).
func (e *kedgeEnv) get(t *testing.T, host, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+host+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Proxy-Authorization", "Bearer "+token)
	}
	resp, err := e.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestKedgeOIDC(t *testing.T) {
	iss := oidcissuer.New(t)
	b := startBackends(t)
	k := startKedge(t, authDirector, b.pool(),
		"--server_oidc_provider_url="+iss.URL(),
		"--server_oidc_client_id=kedge",
		"--server_oidc_perms_claim=perms",
		"--server_oidc_whitelist_perms=proxy", // the original's flag name
		"--server_enable_oidc_for_debug_endpoints")
	sign := func(perms []string, mutate func(map[string]any)) string {
		c := iss.Claims("kedge")
		c["perms"] = perms
		if mutate != nil {
			mutate(c)
		}
		return iss.Sign(t, c)
	}
	tokenX := sign([]string{"proxy", "x"}, nil)

	t.Run("HTTP: permission x passes, y is forbidden, expired is unauthorized", func(t *testing.T) {
		if resp := k.get(t, "x.example.com", tokenX); resp.StatusCode != 200 {
			t.Errorf("x with permission x: %s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
		}
		resp := k.get(t, "y.example.com", tokenX)
		if resp.StatusCode != 403 || resp.Header.Get("X-Kedge-Error-Type") != "forbidden" ||
			!strings.Contains(resp.Header.Get("X-Kedge-Error"), "missing permission: one of [y]") {
			t.Errorf("y with permission x: %s %q %q", resp.Status, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"))
		}
		expired := sign([]string{"proxy", "x"}, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
		resp = k.get(t, "x.example.com", expired)
		if resp.StatusCode != 401 || resp.Header.Get("X-Kedge-Error-Type") != "unauthorized" ||
			resp.Header.Get("Proxy-Authenticate") != "Bearer" || !strings.Contains(resp.Header.Get("X-Kedge-Error"), "expired") {
			t.Errorf("expired token: %s %q %q", resp.Status, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"))
		}
		if resp := k.get(t, "x.example.com", sign([]string{"x"}, nil)); resp.StatusCode != 403 {
			t.Errorf("token without the global permission: %s", resp.Status)
		}
		if resp := k.get(t, "nowhere.example.com", ""); resp.StatusCode != 401 {
			t.Errorf("no token, unknown host: %s, want 401 before no-route", resp.Status)
		}
	})

	t.Run("gRPC on both ports", func(t *testing.T) {
		tokenY := sign([]string{"proxy", "y"}, nil)
		for _, port := range []struct{ name, addr string }{{"gRPC port", k.grpcAddr}, {"HTTPS port", k.https}} {
			c := testpb.NewTestServiceClient(k.grpcConn(t, port.addr, ""))
			for _, tc := range []struct {
				token string
				code  codes.Code
			}{{tokenX, codes.OK}, {tokenY, codes.PermissionDenied}, {"", codes.Unauthenticated}} {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				if tc.token != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "proxy-authorization", "Bearer "+tc.token)
				}
				_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
				cancel()
				if grpcstatus.Code(err) != tc.code {
					t.Errorf("%s: %v, want %v", port.name, err, tc.code)
				}
			}
			if md := b.grpc.LastMetadata(); len(md.Get("proxy-authorization")) != 0 {
				t.Errorf("%s: the gRPC backend saw proxy-authorization", port.name)
			}
		}
	})

	t.Run("debug endpoints", func(t *testing.T) {
		for path, want := range map[string]int{"/_healthz": 200, "/readyz": 200, "/metrics": 200, "/debug/config": 401} {
			if got := status(http.DefaultClient, "http://"+k.debug+path); got != want {
				t.Errorf("%s without a token: %d, want %d", path, got, want)
			}
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+k.debug+"/debug/config", nil)
		req.Header.Set("Authorization", "Bearer "+tokenX)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("/debug/config with a token: %s", resp.Status)
		}
	})

	t.Run("audit lines", func(t *testing.T) {
		out := k.proc.waitOutput(t, `identity="oidc:sub=user-1"`, "decision=forbidden", "missing permission: one of [y]",
			"decision=allowed", `reason="permission x"`)
		if strings.Contains(out, strings.Split(tokenX, ".")[2]) {
			t.Error("kedge's log contains a token")
		}
	})
}

func TestKedgeOIDCIssuerDownAtStartup(t *testing.T) {
	iss := oidcissuer.New(t)
	iss.SetDown(true)
	b := startBackends(t)
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "kedge", ca.Server(t, "localhost"))
	ports := freePorts(t, 2)
	debug := "127.0.0.1:" + itoa(ports[0])
	p := start(t, "kedge", 10*time.Second,
		"--server_bind_address=127.0.0.1", "--server_http_port="+itoa(ports[0]), "--server_http_tls_port="+itoa(ports[1]),
		"--server_grpc_tls_port=0", "--server_tls_cert_file="+certFile, "--server_tls_key_file="+keyFile,
		"--kedge_config_director_config_path="+writeFile(t, dir, "d.json", authDirector),
		"--kedge_config_backendpool_config_path="+writeFile(t, dir, "b.json", b.pool()),
		"--server_oidc_provider_url="+iss.URL(), "--server_oidc_client_id=kedge", "--server_oidc_perms_claim=perms")
	var body string
	testutil.EventuallyWithin(t, readyDeadline(), "a not-ready answer naming the issuer", func() bool {
		resp, err := http.Get("http://" + debug + "/readyz")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == 503 && strings.Contains(body, "unreachable")
	})
	if !strings.Contains(body, iss.URL()) || p.exited() {
		t.Errorf("/readyz = %q (exited %v)", body, p.exited())
	}
	iss.SetDown(false)
	waitReady(t, p, "http://"+debug+"/readyz", readyDeadline()+30*time.Second) // retries back off up to 30 s
}

func TestKedgeAuthFlagConflict(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "kedge"), "--unsafe_bearer_token_proxy_auth=secret-value",
		"--server_oidc_provider_url=https://issuer.example.com", "--server_oidc_client_id=kedge",
		"--server_tls_cert_file=x", "--server_tls_key_file=y").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "cannot be combined with OIDC") {
		t.Errorf("static token with OIDC: exit %d\n%s", code, out)
	}
	if strings.Contains(string(out), "secret-value") {
		t.Errorf("the static token is echoed:\n%s", out)
	}
}

// startTunnelKedge runs kedge with a CONNECT route to a TLS echo backend whose certificate names tunnel.example.com,
// and an ordinary route for open.example.com to a plain echo backend.
func startTunnelKedge(t *testing.T, extra ...string) (*kedgeEnv, *testutil.EchoServer, string) {
	t.Helper()
	backendCA := testutil.NewCA(t)
	echo := testutil.NewEchoServer(t, testutil.EchoName("tunnelled"), testutil.EchoTLS(backendCA.Server(t, "tunnel.example.com")))
	director := `{"http": {"routes": [
  {"backend_name": "tunnel", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
  {"backend_name": "plain", "host_matcher": "open.example.com"}
]}}`
	plain := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	pool := fmt.Sprintf(`{"http": {"backends": [
  {"name": "tunnel", "host": {"dns_name": "127.0.0.1", "port": %d}},
  {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}}
]}}`, echo.Port(), plain.Port())
	k := startKedge(t, director, pool, extra...)
	return k, echo, backendCA.WriteFiles(t, t.TempDir())
}

// curlTunnel runs curl through kedge as an HTTPS proxy (CONNECT) to url.
func (e *kedgeEnv) curlTunnel(t *testing.T, backendCAFile string, args ...string) (string, error) {
	t.Helper()
	path := lookClient(t, "curl")
	full := append([]string{"-q", "--silent", "--show-error", "--max-time", "20",
		"--proxy", "https://" + e.https, "--proxy-cacert", e.caFile, "--proxytunnel", "--cacert", backendCAFile}, args...)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestKedgeConnectWithCurl(t *testing.T) {
	k, _, backendCAFile := startTunnelKedge(t, "--unsafe_bearer_token_proxy_auth=e2e-token")
	out, err := k.curlTunnel(t, backendCAFile, "--proxy-header", "Proxy-Authorization: Bearer e2e-token",
		"https://tunnel.example.com/inside")
	if err != nil {
		t.Fatalf("curl through the tunnel: %v\n%s", err, out)
	}
	var echo testutil.EchoResponse
	if err := json.Unmarshal([]byte(out), &echo); err != nil || echo.Backend != "tunnelled" || !echo.TLS || echo.Path != "/inside" {
		t.Fatalf("echo through the tunnel: %v\n%s", err, out)
	}
	if echo.Header.Get("Proxy-Authorization") != "" {
		t.Error("the backend saw Proxy-Authorization")
	}
	out, err = k.curlTunnel(t, backendCAFile, "https://tunnel.example.com/")
	if err == nil || !strings.Contains(out, "401") {
		t.Errorf("curl without a token: %v\n%s", err, out)
	}
	out, err = k.curlTunnel(t, backendCAFile, "--proxy-header", "Proxy-Authorization: Bearer e2e-token", "https://tunnel.example.com:8443/")
	if err == nil || !strings.Contains(out, "502") {
		t.Errorf("curl to an unrouted port: %v\n%s", err, out)
	}
	k.proc.waitOutput(t, `msg="connect tunnel"`, "identity=static-token") // the tunnel's audit line
}

func TestKedgeClientCertificates(t *testing.T) {
	clientCA := testutil.NewCA(t)
	otherCA := testutil.NewCA(t)
	caFile := clientCA.WriteFiles(t, t.TempDir())
	good := clientCA.Client(t, "laptop")
	wrong := otherCA.Client(t, "laptop")
	do := func(k *kedgeEnv, cert *tls.Certificate) (*http.Response, error) {
		c := k.client(false)
		tr := c.Transport.(*http.Transport)
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		defer tr.CloseIdleConnections()
		resp, err := c.Get("https://open.example.com/")
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	t.Run("required", func(t *testing.T) {
		k, _, _ := startTunnelKedge(t, "--server_tls_client_ca_files="+caFile)
		if resp, err := do(k, &good); err != nil || resp.StatusCode != 200 {
			t.Errorf("with a certificate: %v %v", resp, err)
		}
		_, err := do(k, nil)
		if err == nil || !strings.Contains(err.Error(), "certificate required") {
			t.Errorf("without a certificate: %v, want a handshake failure saying a certificate is required", err)
		}
		if _, err := do(k, &wrong); err == nil {
			t.Error("a certificate from another CA was accepted")
		}
	})
	t.Run("optional", func(t *testing.T) {
		k, _, _ := startTunnelKedge(t, "--server_tls_client_ca_files="+caFile, "--server_tls_client_cert_required=false")
		if resp, err := do(k, nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("without a certificate: %v %v", resp, err)
		}
		if _, err := do(k, &wrong); err == nil {
			t.Error("a certificate from another CA was accepted")
		}
	})
}

// TestKedgeAuthDocExamples keeps the director and backendpool examples of docs/kedge-auth.md valid.
func TestKedgeAuthDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/kedge-auth.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := map[string]string{}
	for _, part := range strings.Split(string(doc), "```yaml\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		if first, _, _ := strings.Cut(body, "\n"); strings.HasPrefix(first, "# ") {
			blocks[strings.TrimPrefix(first, "# ")] = body
		}
	}
	if blocks["director"] == "" || blocks["backendpool"] == "" {
		t.Fatalf("docs/kedge-auth.md lacks the '# director' and '# backendpool' examples (found %d)", len(blocks))
	}
	dir := t.TempDir()
	out, err := exec.Command(filepath.Join(binDir, "kedge"), "--check-config",
		"--kedge_config_director_config_path="+writeFile(t, dir, "director.yaml", blocks["director"]),
		"--kedge_config_backendpool_config_path="+writeFile(t, dir, "backendpool.yaml", blocks["backendpool"])).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config is valid") {
		t.Fatalf("docs/kedge-auth.md examples: %v\n%s", err, out)
	}
}
