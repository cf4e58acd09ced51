package winch_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a running winch whose "kedge" is a TLS echo server (kedge's reverse-proxy form arrives at it as is).
type env struct {
	kedge  *testutil.EchoServer
	dir    string
	cfg    winch.Config
	w      *winch.Winch
	proxy  *http.Client
	local  *http.Client
	addr   string
	mapper string
	auth   string
	logs   *testutil.Buffer // winch's log, warnings and errors
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	// Write next to the file and rename, as editors do, so the watcher never sees half a document.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mapperDoc(kedgeURL string, hosts ...string) string {
	var routes []string
	for _, h := range hosts {
		routes = append(routes, `{"direct": {"key": "`+h+`", "url": "`+kedgeURL+`"}, "backend_auth": "backend"}`)
	}
	return `{"routes": [` + strings.Join(routes, ",") + `]}`
}

func authDoc(token string) string {
	return "auth_sources:\n  - name: backend\n    token:\n      token: " + token + "\n"
}

func startEnv(t *testing.T, mutate ...func(*winch.Config)) *env {
	t.Helper()
	ca := testutil.NewCA(t)
	e := &env{kedge: testutil.NewEchoServer(t, testutil.EchoName("kedge"), testutil.EchoTLS(ca.Server(t))), dir: t.TempDir()}
	e.mapper = filepath.Join(e.dir, "mapper.json")
	e.auth = filepath.Join(e.dir, "auth.yaml")
	writeFile(t, e.mapper, mapperDoc("https://localhost:"+portOf(e.kedge.Addr), "svc.example.com"))
	writeFile(t, e.auth, authDoc("token-1"))

	fs := pflag.NewFlagSet("winch", pflag.ContinueOnError)
	e.cfg.RegisterFlags(fs)
	args := []string{
		"--server-http-port=0", "--server-grpc-port=0", "--state-dir=" + filepath.Join(e.dir, "state"),
		"--server-mapper-config-path=" + e.mapper, "--server-auth-config-path=" + e.auth,
		"--client-tls-root-ca-files=" + ca.WriteFiles(t, e.dir),
	}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	for _, m := range mutate {
		m(&e.cfg)
	}
	e.logs = &testutil.Buffer{}
	log, err := logging.New(logging.Options{Level: "warn", Output: e.logs})
	if err != nil {
		t.Fatal(err)
	}
	w, err := winch.New(e.cfg, log)
	if err != nil {
		t.Fatalf("winch.New: %v", err)
	}
	e.w = w
	e.addr, _, _ = w.Addrs()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	e.proxy = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: e.addr})}}
	e.local = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("winch's error log:\n%s", e.logs.String())
		}
		e.proxy.CloseIdleConnections()
		e.local.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

func (e *env) get(t *testing.T, c *http.Client, rawURL, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestProxyLocalEndpointsAndReload(t *testing.T) {
	t.Parallel()
	e := startEnv(t)

	resp, body := e.get(t, e.proxy, "http://svc.example.com/hello", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"Bearer token-1"`) || !strings.Contains(body, `"host":"svc.example.com"`) {
		t.Fatalf("proxied request: status %d, body %s", resp.StatusCode, body)
	}

	local := "http://" + e.addr
	for _, tc := range []struct{ path, want string }{
		{"/wpad.dat", `shExpMatch(host, "svc.example.com")`},
		{"/proxy.pac", `"PROXY ` + e.addr + `; DIRECT"`},
		{"/_healthz", "ok"},
		{"/metrics", "winch_http_requests_total"},
		{"/_version", `"build_version"`},
	} {
		resp, body := e.get(t, e.local, local+tc.path, "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: status %d, body lacks %q:\n%s", tc.path, resp.StatusCode, tc.want, body)
		}
		resp, _ = e.get(t, e.local, local+tc.path, "rebind.evil.example")
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s with a foreign Host: status %d, want 403", tc.path, resp.StatusCode)
		}
	}

	// A broken mapper is rejected and the running one stays.
	writeFile(t, e.mapper, `{"routes": [{"direct": {"key": "x.example.com"}}]}`)
	e.w.Reload()
	testutil.Eventually(t, "the broken mapper to be reported as rejected", func() bool {
		return strings.Contains(e.logs.String(), "config reload rejected")
	})
	if resp, body := e.get(t, e.proxy, "http://svc.example.com/hello", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"Bearer token-1"`) {
		t.Fatalf("after the rejected reload: status %d, body %s; want the running config kept", resp.StatusCode, body)
	}
	// A valid mapper with a new host, and a new token in the auth document, take effect without a restart.
	writeFile(t, e.mapper, mapperDoc("https://localhost:"+portOf(e.kedge.Addr), "svc.example.com", "svc2.example.com"))
	writeFile(t, e.auth, authDoc("token-2"))
	testutil.Eventually(t, "svc2.example.com to answer with token-2 after the reload", func() bool {
		resp, body := e.get(t, e.proxy, "http://svc2.example.com/", "")
		return resp.StatusCode == http.StatusOK && strings.Contains(body, `"Bearer token-2"`)
	})
	testutil.Eventually(t, "the PAC file to name svc2.example.com after the reload", func() bool {
		_, body := e.get(t, e.local, local+"/wpad.dat", "")
		return strings.Contains(body, `"svc2.example.com"`)
	})
}

func TestUnmatchedRejectAndMonitoringAddress(t *testing.T) {
	t.Parallel()
	e := startEnv(t, func(c *winch.Config) {
		c.Unmatched = "reject"
		c.MonitoringAddress = "127.0.0.1:0"
		c.PACPatterns = []string{"*.internal.example.com"}
	})
	resp, _ := e.get(t, e.proxy, "http://not-mapped.example.org/", "")
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get(wire.HeaderWinchErrorType) != "not-a-kedge-destination" {
		t.Fatalf("unmatched with --unmatched=reject: status %d, headers %v", resp.StatusCode, resp.Header)
	}
	_, body := e.get(t, e.local, "http://"+e.addr+"/wpad.dat", "")
	if !strings.Contains(body, `"*.internal.example.com"`) || strings.Contains(body, `"svc.example.com"`) {
		t.Errorf("PAC ignores --pac_redirect_sh_expressions:\n%s", body)
	}
	// The debug endpoints moved to the monitoring address.
	if resp, _ := e.get(t, e.local, "http://"+e.addr+"/metrics", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the proxy port: status %d, want 404", resp.StatusCode)
	}
	_, _, mon := e.w.Addrs()
	if resp, body := e.get(t, e.local, "http://"+mon+"/metrics", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics on the monitoring address: status %d", resp.StatusCode)
	}
}

func TestNewReportsProblems(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mapperPath := filepath.Join(dir, "mapper.json")
	writeFile(t, mapperPath, `{"routes": [{"direct": {"key": "a.example.com", "url": "https://kedge.example.com"}, "proxy_auth": "missing"}]}`)
	tests := []struct {
		name string
		cfg  winch.Config
		want string
	}{
		{"unknown auth source", winch.Config{BindAddress: "127.0.0.1", MetricsPath: "/metrics", Unmatched: "direct", LogLevel: "info",
			StateDir: dir, Documents: winchSource(mapperPath)}, `"missing": no auth source with that name`},
		{"no mapper", winch.Config{BindAddress: "127.0.0.1", MetricsPath: "/metrics", Unmatched: "direct", LogLevel: "info",
			StateDir: dir}, "--server_mapper_config_path: not set: winch needs a mapper document with at least one route"},
		{"bad flags", winch.Config{BindAddress: "nowhere", MetricsPath: "metrics", Unmatched: "sometimes", LogLevel: "loud",
			PACFile: "x.pac", PACPatterns: []string{"*"}, HTTPPort: 70000},
			"--server_bind_address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := winch.New(tt.cfg, logging.Discard())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	bad := winch.Config{BindAddress: "nowhere", MetricsPath: "metrics", Unmatched: "sometimes", LogLevel: "loud",
		PACFile: "x.pac", PACPatterns: []string{"*"}, HTTPPort: 70000}
	err := bad.Validate()
	for _, want := range []string{"--server_http_port", "--server_bind_address", "--unmatched", "--pac_file", "--log_level", "--server_metrics_path"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want every problem, including %s", err, want)
		}
	}
}

func TestFlagsAndExplain(t *testing.T) {
	t.Parallel()
	var cfg winch.Config
	fs := pflag.NewFlagSet("winch", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"--server-mapper-config", mapperDoc("https://kedge.example.com:443", "svc.example.com"),
		"--cors_allowed_origin=*", "--winch-reverseproxy-buffer-count=3"}); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPPort != 8070 || cfg.GRPCPort != 8071 || cfg.BindAddress != "127.0.0.1" || cfg.Unmatched != "direct" {
		t.Errorf("defaults: %d %d %s %s", cfg.HTTPPort, cfg.GRPCPort, cfg.BindAddress, cfg.Unmatched)
	}
	var out bytes.Buffer
	matched, err := winch.Explain(cfg, "svc.example.com", &out)
	if err != nil || !matched {
		t.Fatalf("Explain: %v, matched %v", err, matched)
	}
	for _, want := range []string{"route 0", "https://kedge.example.com:443", `backend_auth: "backend"`, "proxy_auth:   none", "mitm:         false"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Explain output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if matched, err := winch.Explain(cfg, "10.0.0.1:443", &out); err != nil || matched {
		t.Fatalf("Explain of an IP: %v, matched %v", err, matched)
	}
	if !strings.Contains(out.String(), "IP address") || !strings.Contains(out.String(), "sent directly") {
		t.Errorf("Explain of an IP:\n%s", out.String())
	}
}

func winchSource(mapperPath string) config.Source { return config.Source{MapperPath: mapperPath} }

func TestGRPCPort(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{ca.Server(t)}, MinVersion: tls.VersionTLS12})
	kedge := testutil.NewGRPCBackend(t, "kedge", grpc.Creds(creds))
	// The gRPC port has no "any free port" setting (0 disables it, as for kedge): find one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcPort, _ := strconv.Atoi(portOf(ln.Addr().String()))
	_ = ln.Close()
	e := startEnv(t, func(c *winch.Config) {
		c.GRPCPort = grpcPort
		c.ClientTLS.RootCAFiles = append(c.ClientTLS.RootCAFiles, ca.WriteFiles(t, t.TempDir()))
		c.Documents.MapperPath = ""
		c.Documents.MapperInline = `{"routes": [{"direct": {"key": "svc.example.com:443", "url": "https://localhost:` +
			portOf(kedge.Addr) + `"}, "backend_auth": "backend", "protocol": "GRPC"}]}`
	})
	_, grpcAddr, _ := e.w.Addrs()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("svc.example.com:443"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	if _, err := testpb.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Fatalf("call through winch: %v", err)
	}
	md := kedge.LastMetadata()
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "bearer token-1" {
		t.Errorf("kedge saw authorization %q", got)
	}
	if got := md.Get(":authority"); len(got) != 1 || got[0] != "svc.example.com:443" {
		t.Errorf("kedge saw :authority %q", got)
	}
	// The HTTP proxy does not use a GRPC route.
	resp, _ := e.get(t, e.proxy, "http://svc.example.com:443/", "")
	if resp.StatusCode == http.StatusOK {
		t.Errorf("HTTP request used a GRPC-only route")
	}
}
