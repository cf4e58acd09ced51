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
	"sync"
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
	ca  *testutil.CA
	dir string
	// direct: TLS servers with the same handlers as the backends kedge and nginx proxy to.
	directHTTPS, directGRPC, directSink string
	// kedgeArgs are kedge's flags without its ports, so the idle-connection cases can start a fresh one.
	kedgeArgs []string
	// kedge's listeners.
	kedgeHTTPS, kedgeGRPC, kedgeDebug string
	// nginxConf is what every nginx of the run is started with; nginxHTTPS is the shared nginx's TLS port
	// (HTTP/1.1, HTTP/2 and grpc_pass), empty with nginxSkip saying why.
	nginxConf             benchNginxParams
	nginxHTTPS, nginxSkip string
	// winchProxy is winch's HTTP proxy URL, winchGRPC its plaintext gRPC port.
	winchProxy, winchGRPC string
	// refHTTPS is the reference proxy's TLS port (e2e/benchreport/refproxy).
	refHTTPS string
	// The processes, whose CPU time each case reports per operation.
	kedge, winch, nginx, ref *benchProc
	// idleConns is how many idle connections the idle-* cases hold open (KEDGE_BENCH_IDLE_CONNS).
	idleConns int
	// saturation is kedge's closed-loop rate per traffic kind ("h1", "h2"), recorded by its case; openRate is the
	// fixed rate every open-* case of that kind sends at, chosen once per run. Benchmarks run one at a time, so
	// neither needs a lock.
	saturation, openRate map[string]float64
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	e := &benchEnv{ca: testutil.NewCA(b), dir: dir, saturation: map[string]float64{}, openRate: map[string]float64{}}
	e.idleConns = benchEnvInt(b, "KEDGE_BENCH_IDLE_CONNS", benchIdleConns(b))
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

	e.kedgeArgs = []string{
		"--server_bind_address=127.0.0.1",
		"--server_tls_cert_file=" + certFile,
		"--server_tls_key_file=" + keyFile,
		"--kedge_config_director_config_path=" + benchWrite(b, dir, "director.json", benchDirector),
		"--kedge_config_backendpool_config_path=" + benchWrite(b, dir, "backendpool.json",
			fmt.Sprintf(benchPool, plain.Port(), benchPortOf(sink), grpcPort(greeter))),
		"--unsafe_bearer_token_proxy_auth=" + benchToken,
		"--server_shutdown_drain_timeout=1s",
		"--log_level=info",
	}
	if benchKedgeHas(b, "--server_shutdown_delay") {
		// A benchmark has no load balancer to wait for; each fresh kedge of the idle-* cases would add 5 s.
		e.kedgeArgs = append(e.kedgeArgs, "--server_shutdown_delay=0")
	}
	if benchKedgeHas(b, "--server_max_connections") {
		// The idle-* cases open KEDGE_BENCH_IDLE_CONNS (10,000) connections, the default limit: leave headroom.
		e.kedgeArgs = append(e.kedgeArgs, "--server_max_connections=50000")
	}
	e.kedge, e.kedgeHTTPS, e.kedgeGRPC, e.kedgeDebug = e.startKedge(b)

	e.startWinch(b, dir, caFile)
	e.nginxConf = benchNginxParams{cert: certFile, key: keyFile, echo: plain.Addr, greeter: greeter.Addr, conns: e.idleConns}
	e.nginx, e.nginxHTTPS, e.nginxSkip = startBenchNginx(b, dir, e.nginxConf)
	e.startRef(b, dir, certFile, keyFile, plain.Addr)
	return e
}

// startKedge runs a kedge with e.kedgeArgs on fresh ports and waits until it is ready. Its Cleanup stops it.
func (e *benchEnv) startKedge(tb testing.TB) (p *benchProc, https, grpcTLS, debug string) {
	tb.Helper()
	ports := benchPorts(tb, 3)
	debug, https, grpcTLS = "127.0.0.1:"+itoa(ports[0]), "127.0.0.1:"+itoa(ports[1]), "127.0.0.1:"+itoa(ports[2])
	args := append([]string{
		"--server_http_port=" + itoa(ports[0]),
		"--server_http_tls_port=" + itoa(ports[1]),
		"--server_grpc_tls_port=" + itoa(ports[2]),
	}, e.kedgeArgs...)
	p = startBenchProc(tb, e.dir, filepath.Join(binDir, "kedge"), args...)
	p.waitHTTP(tb, "http://"+debug+"/readyz")
	return p, https, grpcTLS, debug
}

// benchKedgeHas reports whether the kedge binary under test has flag (its --help names it).
func benchKedgeHas(tb testing.TB, flag string) bool {
	tb.Helper()
	out, _ := exec.Command(filepath.Join(binDir, "kedge"), "--help").CombinedOutput()
	if !strings.Contains(string(out), "--server_http_tls_port") {
		tb.Fatalf("kedge --help does not list its flags:\n%s", out)
	}
	return strings.Contains(string(out), flag)
}

// benchEnvInt reads a positive integer from the environment variable name, or returns def when it is unset.
func benchEnvInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
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
// fails. stop (and Cleanup, if stop was not called) sends SIGTERM and requires a clean exit.
type benchProc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
	stopOnce  sync.Once
}

func startBenchProc(tb testing.TB, dir, path string, args ...string) *benchProc {
	tb.Helper()
	name := filepath.Base(path)
	out, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	p := &benchProc{name: name, log: out.Name(), done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		out.Close()
		tb.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); out.Close(); close(p.done) }()
	tb.Cleanup(func() { p.stop(tb) })
	return p
}

// stop sends SIGTERM, waits up to 15 s for a clean exit, and prints the end of the output when tb failed. Only the
// first call does anything.
func (p *benchProc) stop(tb testing.TB) {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				tb.Errorf("%s exited uncleanly after SIGTERM: %v", p.name, p.err)
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			tb.Errorf("%s did not exit within 15s of SIGTERM", p.name)
		}
		if tb.Failed() {
			logged, _ := os.ReadFile(p.log)
			if len(logged) > 8192 {
				logged = logged[len(logged)-8192:]
			}
			tb.Logf("---- end of %s output ----\n%s", p.name, logged)
		}
	})
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
	var total time.Duration
	for _, pid := range benchProcTree(p.cmd.Process.Pid, 2) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			if pid == p.cmd.Process.Pid {
				return 0, err
			}
			continue // a child that just exited
		}
		d, err := parseProcCPU(stat)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		total += d
	}
	return total, nil
}

// rss returns the resident memory of the process and its children, in bytes.
func (p *benchProc) rss() (int64, error) {
	var total int64
	for _, pid := range benchProcTree(p.cmd.Process.Pid, 2) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			if pid == p.cmd.Process.Pid {
				return 0, err
			}
			continue
		}
		n, err := parseProcRSS(status)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
		}
		total += n
	}
	return total, nil
}

// parseProcCPU returns utime+stime from the contents of /proc/<pid>/stat.
func parseProcCPU(stat []byte) (time.Duration, error) {
	// The fields after the command name (which may hold spaces and parentheses, so the last ")" ends it) start
	// with the state, field 3; utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short stat line %q", stat)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q, stime %q: not numbers", f[11], f[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// parseProcRSS returns VmRSS, in bytes, from the contents of /proc/<pid>/status.
func parseProcRSS(status []byte) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", line, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no VmRSS line")
}

// benchProcTree lists pid and its live descendants down to depth levels.
func benchProcTree(pid, depth int) []int {
	pids := []int{pid}
	if depth == 0 {
		return pids
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		kids, _ := os.ReadFile(t)
		for _, k := range strings.Fields(string(kids)) {
			if kid, err := strconv.Atoi(k); err == nil {
				pids = append(pids, benchProcTree(kid, depth-1)...)
			}
		}
	}
	return pids
}

func benchPortOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}
