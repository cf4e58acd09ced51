package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// The benchmark environment: the same backends reached directly, through kedge, through nginx and through
// winch -> kedge. The harness in harness_test.go and kedge_test.go takes *testing.T; these helpers are the
// testing.TB versions a benchmark needs (and they log to files, since a benchmark writes many log lines).

const (
	benchToken   = "bench-proxy-token" // kedge's static proxy token; winch injects it as proxy_auth
	benchHost    = "bench.example.com" // HTTP route to the plain echo backend
	benchSink    = "sink.example.com"  // CONNECT route (port 443) to the byte sink
	benchGreeter = "greeter.example.com:443"
)

const benchDirector = `{
  "http": {"routes": [
    {"backend_name": "sink", "host_matcher": "` + benchSink + `", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "echo", "host_matcher": "` + benchHost + `"}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}
  ]}
}`

const benchPool = `{
  "http": {"backends": [
    {"name": "echo", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "sink", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [
    {"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]}
}`

// benchMapper: %[1]q is kedge's HTTPS URL, %[2]q its gRPC URL.
const benchMapper = `{"routes": [
  {"direct": {"key": "` + benchHost + `", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "` + benchSink + `:443", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "` + benchGreeter + `", "url": %[2]q}, "proxy_auth": "proxy", "protocol": "GRPC"}
]}`

const benchAuth = `{"auth_sources": [{"name": "proxy", "token": {"token": "` + benchToken + `"}}]}`

// benchEnv is everything BenchmarkProxy measures, started once for all its sub-benchmarks. One CA signs every
// server certificate, so each client differs only in where it connects.
type benchEnv struct {
	ca *testutil.CA
	// direct: TLS servers with the same handlers as the backends kedge and nginx proxy to.
	directHTTPS, directGRPC, directSink string
	// kedge's listeners.
	kedgeHTTPS, kedgeGRPC, kedgeDebug string
	// nginxHTTPS is nginx's TLS port; empty with nginxSkip saying why.
	nginxHTTPS, nginxSkip string
	// winchProxy is winch's HTTP proxy URL, winchGRPC its plaintext gRPC port.
	winchProxy, winchGRPC string
	// refHTTPS is the reference proxy's TLS port (e2e/benchreport/refproxy).
	refHTTPS string
	// The processes, whose CPU time each case reports per operation.
	kedge, winch, nginx, ref *benchProc
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	e := &benchEnv{ca: testutil.NewCA(b)}
	caFile := e.ca.WriteFiles(b, dir)
	cert := e.ca.Server(b, "localhost", "127.0.0.1", "*.example.com")
	certFile, keyFile := testutil.WriteCertFiles(b, dir, "server", cert)

	plain := testutil.NewEchoServer(b, testutil.EchoName("plain"))
	e.directHTTPS = testutil.NewEchoServer(b, testutil.EchoName("direct"), testutil.EchoTLS(cert)).Addr
	greeter := testutil.NewGRPCBackend(b, "greeter")
	tlsCreds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	e.directGRPC = testutil.NewGRPCBackend(b, "direct", grpc.Creds(tlsCreds)).Addr
	sink := startBenchSink(b, nil)
	e.directSink = startBenchSink(b, &cert)

	ports := benchPorts(b, 3)
	e.kedgeDebug, e.kedgeHTTPS, e.kedgeGRPC = "127.0.0.1:"+itoa(ports[0]), "127.0.0.1:"+itoa(ports[1]), "127.0.0.1:"+itoa(ports[2])
	e.kedge = startBenchProc(b, dir, filepath.Join(binDir, "kedge"),
		"--server_bind_address=127.0.0.1",
		"--server_http_port="+itoa(ports[0]),
		"--server_http_tls_port="+itoa(ports[1]),
		"--server_grpc_tls_port="+itoa(ports[2]),
		"--server_tls_cert_file="+certFile,
		"--server_tls_key_file="+keyFile,
		"--kedge_config_director_config_path="+benchWrite(b, dir, "director.json", benchDirector),
		"--kedge_config_backendpool_config_path="+benchWrite(b, dir, "backendpool.json",
			fmt.Sprintf(benchPool, plain.Port(), benchPortOf(sink), grpcPort(greeter))),
		"--unsafe_bearer_token_proxy_auth="+benchToken,
		"--server_shutdown_drain_timeout=1s",
		"--log_level=info")
	e.kedge.waitHTTP(b, "http://"+e.kedgeDebug+"/readyz")

	e.startWinch(b, dir, caFile)
	e.startNginx(b, dir, certFile, keyFile, plain.Addr)
	e.startRef(b, dir, certFile, keyFile, plain.Addr)
	return e
}

func (e *benchEnv) startWinch(b *testing.B, dir, caFile string) {
	path := filepath.Join(binDir, "winch")
	if _, err := os.Stat(path); err != nil {
		b.Fatalf("the winch binary was not built: %v", err)
	}
	ports := benchPorts(b, 2)
	e.winchProxy, e.winchGRPC = "http://127.0.0.1:"+itoa(ports[0]), "127.0.0.1:"+itoa(ports[1])
	_, kedgePort, _ := net.SplitHostPort(e.kedgeHTTPS)
	_, grpcPort, _ := net.SplitHostPort(e.kedgeGRPC)
	mapper := fmt.Sprintf(benchMapper, "https://localhost:"+kedgePort, "https://localhost:"+grpcPort)
	e.winch = startBenchProc(b, dir, path,
		"--server_http_port="+itoa(ports[0]),
		"--server_grpc_port="+itoa(ports[1]),
		"--server_mapper_config_path="+benchWrite(b, dir, "winch_mapper.json", mapper),
		"--server_auth_config_path="+benchWrite(b, dir, "winch_auth.json", benchAuth),
		"--state_dir="+filepath.Join(dir, "winch-state"),
		"--client_tls_root_ca_files="+caFile,
		"--server_shutdown_drain_timeout=1s",
		"--log_level=info")
	e.winch.waitHTTP(b, e.winchProxy+"/_healthz")
}

// startRef builds and runs the reference proxy: plain ReverseProxy + TLS to upstream.
func (e *benchEnv) startRef(b *testing.B, dir, certFile, keyFile, upstream string) {
	path := filepath.Join(dir, "refproxy")
	if out, err := exec.Command("go", "build", "-o", path, "./benchreport/refproxy").CombinedOutput(); err != nil {
		b.Fatalf("building e2e/benchreport/refproxy: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", benchPorts(b, 1)[0])
	e.ref = startBenchProc(b, dir, path, "-listen", addr, "-cert", certFile, "-key", keyFile, "-upstream", upstream)
	e.ref.waitDial(b, addr)
	e.refHTTPS = addr
}

// tlsConfig is what every client uses to reach a benchmarked TLS server.
func (e *benchEnv) tlsConfig(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost", NextProtos: alpn}
}

// benchProc is a process started for the benchmarks; its output goes to a file that is printed when the benchmark
// fails. Cleanup sends SIGTERM and requires a clean exit.
type benchProc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

func startBenchProc(tb testing.TB, dir, path string, args ...string) *benchProc {
	tb.Helper()
	name := filepath.Base(path)
	p := &benchProc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		tb.Fatal(err)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		out.Close()
		tb.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); out.Close(); close(p.done) }()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				tb.Errorf("%s exited uncleanly after SIGTERM: %v", name, p.err)
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			tb.Errorf("%s did not exit within 15s of SIGTERM", name)
		}
		if tb.Failed() {
			logged, _ := os.ReadFile(p.log)
			if len(logged) > 8192 {
				logged = logged[len(logged)-8192:]
			}
			tb.Logf("---- end of %s output ----\n%s", name, logged)
		}
	})
	return p
}

// waitHTTP polls url until it answers 200; it fails when the process exits or 30 s pass.
func (p *benchProc) waitHTTP(tb testing.TB, url string) {
	tb.Helper()
	p.wait(tb, url, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := (&http.Transport{}).RoundTrip(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})
}

// waitDial polls addr until it accepts TCP connections.
func (p *benchProc) waitDial(tb testing.TB, addr string) {
	tb.Helper()
	p.wait(tb, addr, func(ctx context.Context) error {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (p *benchProc) wait(tb testing.TB, what string, try func(context.Context) error) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := try(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("%s exited before %s was ready: %v", p.name, what, p.err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %s not ready after 30s: %v", p.name, what, err)
		}
	}
}

// benchPorts reserves n free loopback ports (see freePorts).
func benchPorts(tb testing.TB, n int) []int {
	tb.Helper()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func benchWrite(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// cpu returns the CPU time (user and system) the process and its children (nginx's workers) have used so far.
func (p *benchProc) cpu() (time.Duration, error) {
	return benchProcCPU(p.cmd.Process.Pid, 2)
}

// benchProcCPU reads utime+stime of pid from /proc, plus that of its live children down to depth levels.
func benchProcCPU(pid, depth int) (time.Duration, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces) start with the state, field 3; utime and
	// stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
	_, rest, _ := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	total := time.Duration(utime+stime) * 10 * time.Millisecond
	if depth == 0 {
		return total, nil
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(t)
		for _, k := range strings.Fields(string(kids)) {
			if kid, err := strconv.Atoi(k); err == nil {
				if d, err := benchProcCPU(kid, depth-1); err == nil {
					total += d
				}
			}
		}
	}
	return total, nil
}

func benchPortOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}
