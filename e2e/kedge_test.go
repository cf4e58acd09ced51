package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// kedgeEnv is a running kedge binary with its certificates and config files.
type kedgeEnv struct {
	proc                   *process
	dir                    string
	ca                     *testutil.CA
	caFile                 string
	directorPath, poolPath string
	debug, https, grpcAddr string
	httpsPort              int
	drain                  time.Duration
	bin                    string   // the binary in binDir: "kedge", or a build without -race (plainKedge)
	args                   []string // its command line, for restart
}

// startKedge writes director and backendpool documents and runs kedge on free loopback ports.
func startKedge(t *testing.T, director, backendpool string, extra ...string) *kedgeEnv {
	t.Helper()
	return startKedgeBinary(t, "kedge", director, backendpool, extra...)
}

// startKedgeBinary is startKedge with the binary bin of binDir.
func startKedgeBinary(t *testing.T, bin, director, backendpool string, extra ...string) *kedgeEnv {
	t.Helper()
	e := &kedgeEnv{dir: t.TempDir(), ca: testutil.NewCA(t), drain: 5 * time.Second}
	e.caFile = e.ca.WriteFiles(t, e.dir)
	certFile, keyFile := testutil.WriteCertFiles(t, e.dir, "kedge", e.ca.Server(t, "localhost", "127.0.0.1", "*.example.com", "*.wild.example.com"))
	e.directorPath = writeFile(t, e.dir, "director.json", director)
	e.poolPath = writeFile(t, e.dir, "backendpool.json", backendpool)
	ports := freePorts(t, 3)
	e.httpsPort = ports[1]
	e.debug, e.https, e.grpcAddr = "127.0.0.1:"+itoa(ports[0]), "127.0.0.1:"+itoa(ports[1]), "127.0.0.1:"+itoa(ports[2])
	args := append([]string{
		"--server_bind_address=127.0.0.1",
		"--server_http_port=" + itoa(ports[0]),
		"--server_http_tls_port=" + itoa(ports[1]),
		"--server_grpc_tls_port=" + itoa(ports[2]),
		"--server_tls_cert_file=" + certFile,
		"--server_tls_key_file=" + keyFile,
		"--kedge_config_director_config_path=" + e.directorPath,
		"--kedge_config_backendpool_config_path=" + e.poolPath,
		"--server-shutdown-drain-timeout=" + e.drain.String(), // kebab-case works too
		"--server_shutdown_delay=0",                           // tests that exercise the delay set it in extra
		"--log_level=debug",
	}, extra...)
	e.bin, e.args = bin, args
	e.proc = start(t, bin, e.drain+5*time.Second, args...)
	waitReady(t, e.proc, "http://"+e.debug+"/readyz", readyDeadline())
	return e
}

// client returns an HTTP client that trusts kedge's CA and dials every name to kedge's HTTPS port, as a DNS entry
// pointing at the cluster's load balancer would.
func (e *kedgeEnv) client(h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"},
		ForceAttemptHTTP2: h2,
		Proxy:             nil,
	}
	dialer := &netDialer{addr: e.https}
	tr.DialContext = dialer.DialContext
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (e *kedgeEnv) grpcConn(t *testing.T, addr, authority string) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"})
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// curl runs the real curl binary, sending connections for every host:443 in hosts to kedge's HTTPS port (the Host header stays port-less).
func (e *kedgeEnv) curl(t *testing.T, hosts []string, args ...string) (string, error) {
	t.Helper()
	path := lookClient(t, "curl")
	full := []string{"--silent", "--show-error", "--max-time", "20", "--cacert", e.caFile}
	for _, h := range hosts {
		full = append(full, "--connect-to", fmt.Sprintf("%s:443:127.0.0.1:%d", h, e.httpsPort))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, append(full, args...)...).CombinedOutput()
	return string(out), err
}

const basicPool = `{
  "http": {"backends": [
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "secure", "host": {"dns_name": "127.0.0.1", "port": %d}, "security": {"ca_file": %q, "server_name": "localhost"}}
  ]},
  "grpc": {"backends": [
    {"name": "greeter", "balancer": "ROUND_ROBIN", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]}
}`

const basicDirector = `{
  "http": {"routes": [
    {"backend_name": "plain", "host_matcher": "plain.example.com", "port_matcher": 443},
    {"backend_name": "plain", "host_matcher": "*.wild.example.com", "path_rules": ["/api/*"]},
    {"backend_name": "secure", "host_matcher": "secure.example.com"}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}
  ]}
}`

type backends struct {
	plain, secure *testutil.EchoServer
	grpc          *testutil.GRPCBackend
	caFile        string
}

func startBackends(t *testing.T) backends {
	t.Helper()
	ca := testutil.NewCA(t)
	return backends{
		plain:  testutil.NewEchoServer(t, testutil.EchoName("plain")),
		secure: testutil.NewEchoServer(t, testutil.EchoName("secure"), testutil.EchoTLS(ca.Server(t, "localhost"))),
		grpc:   testutil.NewGRPCBackend(t, "greeter"),
		caFile: ca.WriteFiles(t, t.TempDir()),
	}
}

func (b backends) pool() string {
	return fmt.Sprintf(basicPool, b.plain.Port(), b.secure.Port(), b.caFile, grpcPort(b.grpc))
}

func grpcPort(g *testutil.GRPCBackend) int {
	_, port, _ := strings.Cut(g.Addr, ":")
	var p int
	fmt.Sscan(port, &p)
	return p
}

func TestKedgeHelpAndVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "kedge"), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("kedge --help: %v\n%s", err, out)
	}
	for _, want := range []string{"--server_http_tls_port", "--kedge_config_director_config_path", "--check-config", "--server_shutdown_drain_timeout"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	out, err = exec.Command(filepath.Join(binDir, "kedge"), "--no_such_flag").CombinedOutput()
	if code := exitCode(err); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2 (%s)", code, out)
	}
}

func TestKedgeCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.json", `{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`)
	pool := writeFile(t, dir, "pool.yaml", "http:\n  backends:\n  - name: web\n    host: {dns_name: 127.0.0.1, port: 8080}\n")
	bad := writeFile(t, dir, "bad.json", `{"http": {"routes": [{"backend_name": "nope"}, {"backend_name": "web", "host_matcher": "a*b"}]}}`)

	out, err := exec.Command(filepath.Join(binDir, "kedge"), "--check-config",
		"--kedge_config_director_config_path="+good, "--kedge_config_backendpool_config_path="+pool).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config is valid") {
		t.Fatalf("valid config: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(binDir, "kedge"), "--check-config",
		"--kedge_config_director_config_path="+bad, "--kedge_config_backendpool_config_path="+pool).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("invalid config: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{"bad.json", "http.routes[0].backend_name", "http.routes[1].host_matcher"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--check-config output lacks %q:\n%s", want, out)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func TestKedgeProxiesHTTPAndGRPC(t *testing.T) {
	b := startBackends(t)
	k := startKedge(t, basicDirector, b.pool())

	t.Run("curl port-less Host matches the port-443 route", func(t *testing.T) {
		out, err := k.curl(t, []string{"plain.example.com"}, "-i", "https://plain.example.com/hello?x=1")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		for _, want := range []string{"HTTP/2 200", "x-kedge-backend-name: plain", "x-echo-backend: plain", "x-kedge-request-id: "} {
			if !strings.Contains(strings.ToLower(out), strings.ToLower(want)) {
				t.Errorf("response lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("wildcard host and path rule over HTTP/1.1", func(t *testing.T) {
		out, err := k.curl(t, []string{"a.wild.example.com"}, "-i", "--http1.1", "https://a.wild.example.com/api/x")
		if err != nil || !strings.Contains(out, "HTTP/1.1 200") {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		out, _ = k.curl(t, []string{"a.wild.example.com"}, "-i", "https://a.wild.example.com/other")
		if !strings.Contains(out, "502") || !strings.Contains(strings.ToLower(out), "x-kedge-error-type: no-route") {
			t.Errorf("unrouted path: want 502 no-route:\n%s", out)
		}
	})
	t.Run("TLS backend verified by CA file speaks h2", func(t *testing.T) {
		resp, err := k.client(true).Get("https://secure.example.com/x")
		if err != nil {
			t.Fatal(err)
		}
		echo := testutil.DecodeEcho(t, resp)
		if resp.StatusCode != 200 || echo.Backend != "secure" || echo.Proto != "HTTP/2.0" {
			t.Errorf("got %d backend %q proto %q", resp.StatusCode, echo.Backend, echo.Proto)
		}
	})
	for _, tc := range []struct{ name, addr string }{{"gRPC TLS port", k.grpcAddr}, {"HTTPS port", k.https}} {
		t.Run("gRPC unary and bidi via "+tc.name, func(t *testing.T) {
			c := testpb.NewTestServiceClient(k.grpcConn(t, tc.addr, ""))
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			var hdr metadata.MD
			if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}, grpc.Header(&hdr)); err != nil {
				t.Fatalf("unary: %v", err)
			}
			if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != "greeter" {
				t.Errorf("header x-backend = %v", got)
			}
			stream, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 3; i++ {
				if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i)}}}); err != nil {
					t.Fatal(err)
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if n := len(resp.GetPayload().GetBody()); n != i {
					t.Errorf("bidi message %d: %d bytes", i, n)
				}
			}
			_ = stream.CloseSend()
		})
	}
	t.Run("debug endpoints", func(t *testing.T) {
		for path, want := range map[string]string{"/_healthz": "kedge isok", "/metrics": "kedge_http_requests_total", "/debug/config": "plain.example.com", "/_version": "build_version"} {
			resp, err := http.Get("http://" + k.debug + path)
			if err != nil {
				t.Fatal(err)
			}
			body := readAll(t, resp)
			if resp.StatusCode != 200 || !strings.Contains(body, want) {
				t.Errorf("%s: %d, body lacks %q", path, resp.StatusCode, want)
			}
		}
	})
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 32*1024)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return sb.String()
}

// netDialer sends every connection to one address.
type netDialer struct{ addr string }

func (d *netDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var nd net.Dialer
	return nd.DialContext(ctx, network, d.addr)
}
