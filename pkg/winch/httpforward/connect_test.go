package httpforward_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/tracertest"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// rawConnect sends "CONNECT target" to the proxy at addr and returns the status and headers of the answer.
func rawConnect(t *testing.T, addr, target string) (int, http.Header) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("reading the CONNECT answer: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// tunnelSetup is a TLS echo backend reachable as svc.example.com:PORT only through a fake kedge, and a winch
// mapping that name (with a proxy token the kedge rejects the first time).
type tunnelSetup struct {
	ca      *testutil.CA
	backend *testutil.EchoServer
	kedge   *fakeKedge
	winch   *winch
	target  string // svc.example.com:PORT
	src     *tokenSource
}

func newTunnelSetup(t *testing.T) *tunnelSetup {
	t.Helper()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t, testutil.EchoName("tls-backend"), testutil.EchoTLS(ca.Server(t, "svc.example.com")))
	target := "svc.example.com:" + port(backend.Addr)
	tcpEcho := newTCPEcho(t)
	k := newFakeKedge(t, ca, "kedge", "", validTokens("fresh"),
		connectTarget(target, backend.Addr), connectTarget("raw.example.com:7", tcpEcho))
	src := &tokenSource{tokens: []string{"stale", "fresh"}}
	w := startWinch(t, winchSetup{ca: ca, sources: sources{"proxy": src}, routes: []mapper.Route{
		{Regexp: regexp.MustCompile(`^(svc|raw)[.]example[.]com:[0-9]+$`), URL: k.url, ProxyAuth: "proxy"},
	}})
	return &tunnelSetup{ca: ca, backend: backend, kedge: k, winch: w, target: target, src: src}
}

func TestConnectThroughKedge(t *testing.T) {
	t.Parallel()
	s := newTunnelSetup(t)
	c := s.winch.client(t, &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12})
	resp := get(t, c, "https://"+s.target+"/through/the/tunnel", "Authorization", "Bearer kubeconfig-token")
	echo := testutil.DecodeEcho(t, resp)
	if resp.StatusCode != http.StatusOK || echo.Backend != "tls-backend" || !echo.TLS {
		t.Fatalf("status %d, backend %q, tls %v", resp.StatusCode, echo.Backend, echo.TLS)
	}
	if got := echo.Header.Get("Authorization"); got != "Bearer kubeconfig-token" {
		t.Errorf("the client's own Authorization did not cross the tunnel intact: %q", got)
	}
	if echo.Path != "/through/the/tunnel" {
		t.Errorf("path %q", echo.Path)
	}
	seen := s.kedge.last(t)
	if seen.method != http.MethodConnect || seen.host != s.target {
		t.Errorf("kedge saw %s %s, want CONNECT %s", seen.method, seen.host, s.target)
	}
	if got := seen.header.Get(wire.HeaderProxyAuthz); got != "Bearer fresh" {
		t.Errorf("kedge saw Proxy-Authorization %q after the retry, want the fresh token", got)
	}
	if got := s.src.Invalidated(); len(got) != 1 || got[0] != "stale" {
		t.Errorf("invalidated %v, want [stale]", got)
	}
	if n := s.kedge.requests.Load(); n != 2 {
		t.Errorf("kedge saw %d CONNECTs, want 2 (stale rejected, then fresh)", n)
	}
}

func TestConnectHalfClose(t *testing.T) {
	t.Parallel()
	s := newTunnelSetup(t)
	conn, err := net.Dial("tcp", s.winch.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "CONNECT raw.example.com:7 HTTP/1.1\r\nHost: raw.example.com:7\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v, %v", resp, err)
	}
	_, _ = io.WriteString(conn, "ping, then EOF")
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading after half-close: %v", err)
	}
	if string(got) != "ping, then EOF" {
		t.Fatalf("echo through the half-closed tunnel: %q", got)
	}
}

func TestConnectRefusedByKedge(t *testing.T) {
	t.Parallel()
	s := newTunnelSetup(t)
	// Mapped by the route, but the fake kedge has no target for it.
	status, hdr := rawConnect(t, s.winch.addr, "svc.example.com:1")
	if status != http.StatusBadGateway || hdr.Get(wire.HeaderKedgeErrorType) != string(wire.ErrNoRoute) ||
		hdr.Get(wire.HeaderKedgeError) == "" {
		t.Fatalf("status %d, headers %v; want kedge's 502 no-route relayed", status, hdr)
	}
}

func TestConnectWithCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed, but CI (.ci/run installs it) must run this real-client check")
		}
		t.Skip("curl is not installed; the Go client test covers CONNECT")
	}
	s := newTunnelSetup(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, s.ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), curl, "--silent", "--show-error", "--max-time", "20",
		"--proxy", "http://"+s.winch.addr, "--cacert", caFile, "-H", "Authorization: Bearer curl-token",
		"https://"+s.target+"/curl")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	for _, want := range []string{`"backend":"tls-backend"`, `"path":"/curl"`, `Bearer curl-token`} {
		mustContain(t, "curl output", string(out), want)
	}
}

// newTCPEcho starts a plain TCP server that echoes what it reads and half-closes when the client does.
func newTCPEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestTunnelAnswerNotTaken: a client that is gone before winch's answer reaches it shows in a debug line, and the
// span of a tunnel that kedge opened ends with 499, not 200. The answer's write fails for real: on a closed client
// connection.
func TestTunnelAnswerNotTaken(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca, "kedge", "", connectTarget("raw.example.com:7", newTCPEcho(t)))
	const notTaken = "the client did not take winch's answer to its tunnel"
	tests := []struct {
		name   string
		target string
		// gone: the client connection is closed before the answer is written.
		gone       bool
		wantSpan   string  // the span's http.response.status_code
		wantAnswer float64 // the answer field of the debug line; 0 for no line
	}{
		{"kedge opened the tunnel, the client took the answer", "raw.example.com:7", false, "200", 0},
		{"kedge opened the tunnel, the client was gone", "raw.example.com:7", true, "499", 200},
		{"kedge refused the tunnel, the client was gone", "raw.example.com:8", true, "502", 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tracer, exp := tracertest.New(t, "winch")
			var logs testutil.Buffer
			log, err := logging.New(logging.Options{Level: "debug", Format: "json", Output: &logs})
			if err != nil {
				t.Fatal(err)
			}
			h := httpforward.New(httpforward.Deps{
				Log:      log,
				Tracer:   tracer,
				Routes:   mapper.New([]mapper.Route{{Regexp: regexp.MustCompile(`^raw[.]example[.]com:[0-9]+$`), URL: k.url}}),
				KedgeTLS: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
			})
			t.Cleanup(h.Close)
			server, client := testutil.TCPPair(t)
			answer := func(_ net.Addr, refusal *http.Response) error {
				if tt.gone {
					_ = server.Close()
				}
				status := "200"
				if refusal != nil {
					status = refusal.Status
				}
				_, err := io.WriteString(server, status+"\n")
				return err
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.ServeTunnel(t.Context(), server, tt.target, answer)
			}()
			if !tt.gone {
				_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
				if line, err := bufio.NewReader(client).ReadString('\n'); line != "200\n" || err != nil {
					t.Errorf("the client read %q, %v; want the answer 200", line, err)
				}
				_ = client.Close() // ends the tunnel
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("ServeTunnel did not return")
			}

			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			if status := tracertest.Attr(spans[0], "http.response.status_code"); status != tt.wantSpan {
				t.Errorf("span status %q, want %q", status, tt.wantSpan)
			}
			var lines []map[string]any
			for _, l := range logs.JSONLines(t) {
				if l["msg"] == notTaken {
					lines = append(lines, l)
				}
			}
			switch {
			case tt.wantAnswer == 0 && len(lines) != 0:
				t.Errorf("debug lines %v for an answer the client took", lines)
			case tt.wantAnswer != 0 && len(lines) != 1:
				t.Errorf("%d debug lines %q, want 1; all: %s", len(lines), notTaken, logs.String())
			case tt.wantAnswer != 0 && (lines[0]["answer"] != tt.wantAnswer || lines[0]["error"] == nil ||
				lines[0]["host"] != tt.target || lines[0]["proxy"] != "socks"):
				t.Errorf("debug line %v, want answer %v, the error, host %s and proxy socks", lines[0], tt.wantAnswer, tt.target)
			}
		})
	}
}
