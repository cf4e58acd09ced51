package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestRefusedTunnels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	reflectPort := strconv.Itoa(e.reflect.Port())
	tests := []struct {
		name   string
		target string
		header []string
		status int
		typ    string
		msg    string
	}{
		{"no token", "echo.test:443", nil, 401, "unauthorized", "no Proxy-Authorization header"},
		{"wrong token", "echo.test:443", []string{"Proxy-Authorization: Bearer nope"}, 401, "unauthorized", "bearer token is invalid"},
		{"no token, unknown host: 401 before no-route", "nowhere.test:443", nil, 401, "unauthorized", ""},
		{"unrouted host", "nowhere.test:443", []string{auth()}, 502, "no-route", "unknown route to service"},
		{"routed host, other port", "echo.test:8443", []string{auth()}, 502, "no-route", ""},
		{"route of mode ANY is no tunnel", "web.test:443", []string{auth()}, 502, "no-route", ""},
		{"adhoc rule, port not allowed", "x.adhoc.test:22", []string{auth()}, 403, "forbidden", "adhoc: port 22 is not allowed"},
		{"adhoc name resolving to loopback", "loop.adhoc.test:" + reflectPort, []string{auth()}, 403, "forbidden", "loopback"},
		{"adhoc name that does not resolve", "gone.adhoc.test:" + reflectPort, []string{auth()}, 502, "tunnel-dial-error", "cannot resolve"},
		{"loopback literal not named by a rule", "127.0.0.2:" + reflectPort, []string{auth()}, 502, "no-route", ""},
		{"backend down", "dead.test:443", []string{auth()}, 502, "tunnel-dial-error", ""},
		{"no port", "echo.test", []string{auth()}, 400, "bad-request", "host:port"},
		// A target net/http reads as userinfo@host: it would be routed (and dialled) by the part after '@'.
		{"userinfo in the target", "evil.example.com:443@echo.test:443", []string{auth(), "Host: echo.test:443"}, 400, "bad-request", "host:port"},
		{"userinfo without port", "user@echo.test:443", []string{auth(), "Host: echo.test:443"}, 400, "bad-request", "host:port"},
		{"target and Host differ", "nowhere.test:443", []string{auth(), "Host: echo.test:443"}, 502, "no-route", ""},
		{"identity route without certificate or token", "robots.test:443", nil, 401, "unauthorized", ""},
		{"identity route with a token but no certificate", "robots.test:443", []string{auth()}, 403, "forbidden", "client certificate"},
	}
	t.Run("cases", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				refused(t, e, tt.target, tt.header, tt.status, tt.typ, tt.msg)
			})
		}
	})
	// The parallel cases above have all finished here.
	if n := testutil.MetricValue(t, e.reg, "kedge_tunnels_total", map[string]string{"result": "no-route"}); n != 5 {
		t.Errorf("kedge_tunnels_total{result=no-route} = %v, want 5", n)
	}
	if n := testutil.MetricValue(t, e.reg, "kedge_tunnels_total", map[string]string{"result": "unauthorized"}); n != 4 {
		t.Errorf("kedge_tunnels_total{result=unauthorized} = %v, want 4", n)
	}
	if n := testutil.MetricValue(t, e.reg, "kedge_tunnels_open", nil); n != 0 {
		t.Errorf("kedge_tunnels_open = %v", n)
	}
}

// refused sends CONNECT target and checks that kedge refuses it with status, X-Kedge-Error-Type typ and an
// X-Kedge-Error containing msg.
func refused(t *testing.T, e *env, target string, header []string, status int, typ, msg string) {
	t.Helper()
	_, br, resp := e.connect(t, target, nil, header...)
	body, _ := io.ReadAll(br) // the connection closes after the answer
	resp.Body.Close()
	if resp.StatusCode != status || resp.Header.Get("X-Kedge-Error-Type") != typ ||
		!strings.Contains(resp.Header.Get("X-Kedge-Error"), msg) {
		t.Fatalf("got %d %q %q, want %d %q containing %q", resp.StatusCode, resp.Header.Get("X-Kedge-Error-Type"),
			resp.Header.Get("X-Kedge-Error"), status, typ, msg)
	}
	if status == 401 && resp.Header.Get("Proxy-Authenticate") != "Bearer" {
		t.Errorf("401 without Proxy-Authenticate: Bearer")
	}
	if strings.Contains(resp.Header.Get("X-Kedge-Error")+string(body), testToken) {
		t.Errorf("the answer echoes the token")
	}
	if resp.Header.Get("X-Kedge-Request-Id") == "" {
		t.Error("no X-Kedge-Request-Id")
	}
}

func TestHalfCloseAndAudit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c, br, resp := e.connect(t, "count.test:7000", nil, auth(), "X-Kedge-Request-Id: tunnel-1")
	if resp.StatusCode != 200 || resp.Header.Get("X-Kedge-Backend-Name") != "count" || resp.Header.Get("X-Kedge-Request-Id") != "tunnel-1" {
		t.Fatalf("CONNECT: %d %v", resp.StatusCode, resp.Header)
	}
	payload := strings.Repeat("x", 100_000)
	if _, err := io.WriteString(c, payload); err != nil {
		t.Fatal(err)
	}
	// The backend answers only after our half-close reaches it as EOF; its answer must still come back.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("reading after half-close: %v", err)
	}
	if string(got) != "got 100000 bytes\n" {
		t.Fatalf("backend answered %q", got)
	}
	testutil.Eventually(t, "tunnel closed", func() bool { return testutil.MetricValue(t, e.reg, "kedge_tunnels_open", nil) == 0 })
	testutil.Eventually(t, "audit line", func() bool { return len(tunnelLines(t, e.logs)) == 1 })
	l := tunnelLines(t, e.logs)[0]
	want := map[string]any{"request_id": "tunnel-1", "host": "count.test:7000", "route": "count", "status": 200.0,
		"identity": "static-token", "decision": "allowed", "reason": "authenticated", "bytes_up": 100000.0,
		"bytes_down": 17.0, "closed": "closed", "proto": "HTTP/1.1"}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("log %s = %v, want %v (line %v)", k, l[k], v, l)
		}
	}
	if strings.Contains(e.logs.String(), testToken) {
		t.Error("the log contains the token")
	}
	if n := testutil.MetricValue(t, e.reg, "kedge_tunnel_bytes_total", map[string]string{"direction": "upstream"}); n != 100000 {
		t.Errorf("upstream bytes = %v", n)
	}
	if n := testutil.MetricValue(t, e.reg, "kedge_authz_decisions_total", map[string]string{"route": "count", "result": "allowed"}); n != 1 {
		t.Errorf("authz decisions = %v", n)
	}
}

func TestClientCertificateTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	robot := e.kedgeCA.Client(t, "robot")
	intruder := e.kedgeCA.Client(t, "intruder")
	_, _, resp := e.connect(t, "robots.test:443", &intruder)
	if resp.StatusCode != 401 {
		t.Errorf("other certificate: %d, want 401", resp.StatusCode)
	}
	c, br, resp := e.connect(t, "robots.test:443", &robot)
	if resp.StatusCode != 200 {
		t.Fatalf("allowed certificate: %d %s", resp.StatusCode, resp.Header.Get("X-Kedge-Error"))
	}
	// TLS to the backend inside the tunnel: the backend sees our own handshake.
	pool := x509.NewCertPool()
	pool.AddCert(e.backendCA.Cert)
	inner := tls.Client(&bufConn{Conn: c, r: br}, &tls.Config{RootCAs: pool, ServerName: "robots.test"})
	if _, err := io.WriteString(inner, "GET /hello HTTP/1.1\r\nHost: robots.test\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(inner)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 200") || !strings.Contains(string(got), "X-Echo-Backend: echo") {
		t.Errorf("inner response %q", got)
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = 400 * time.Millisecond
	e := newEnv(t, envOptions{idle: idle})
	c, br, resp := e.connect(t, "reflect.test:7000", nil, auth())
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	// Traffic more often than the timeout keeps the tunnel open well past it, with pauses below it.
	start := time.Now()
	for i := 0; time.Since(start) < 3*idle; i++ {
		msg := "ping " + strconv.Itoa(i) + "\n"
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatalf("write %d after %v: %v", i, time.Since(start), err)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != msg {
			t.Fatalf("echo %d after %v: %q, %v", i, time.Since(start), line, err)
		}
		time.Sleep(idle / 4) // the subject of the test: a pause shorter than the timeout
	}
	// Silence for longer than the timeout: kedge closes the tunnel.
	silent := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data from an idle tunnel")
	}
	if d := time.Since(silent); d < idle/2 || d > 5*time.Second {
		t.Errorf("idle tunnel closed after %v, timeout %v", d, idle)
	}
	testutil.Eventually(t, "audit line", func() bool { return len(tunnelLines(t, e.logs)) == 1 })
	if l := tunnelLines(t, e.logs)[0]; l["closed"] != "idle timeout" {
		t.Errorf("closed = %v", l["closed"])
	}
}

func TestDrainEndsIdleTunnels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{drain: 10 * time.Second})
	_, br, resp := e.connect(t, "reflect.test:7000", nil, auth())
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	start := time.Now()
	e.cancel()
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("read data from a drained tunnel")
	}
	select {
	case err := <-e.served:
		e.served <- err // for the cleanup
		if err != nil {
			t.Errorf("drain: %v, want a clean drain (the idle tunnel ends early)", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the drain waited for the idle tunnel")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("drain took %v", d)
	}
	testutil.Eventually(t, "audit line", func() bool { return len(tunnelLines(t, e.logs)) == 1 })
	if l := tunnelLines(t, e.logs)[0]; l["closed"] != "server shutting down" {
		t.Errorf("closed = %v", l["closed"])
	}
}

func TestAdhocLiteralNamedByARule(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	c, br, resp := e.connect(t, "127.0.0.1:"+strconv.Itoa(e.reflect.Port()), nil, auth())
	if resp.StatusCode != 200 || resp.Header.Get("X-Kedge-Backend-Name") != "" {
		t.Fatalf("CONNECT to a loopback literal a rule names: %d %v", resp.StatusCode, resp.Header)
	}
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "hi\n" {
		t.Fatalf("echo: %q, %v", line, err)
	}
}

func TestNotConnect(t *testing.T) {
	t.Parallel()
	h := New(Deps{Routes: staticRoutes{}, Backends: nil})
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, &http.Request{Method: "GET", Host: "x:1", Header: http.Header{}, Proto: "HTTP/1.1", ProtoMajor: 1})
	if rec.status != http.StatusMethodNotAllowed || rec.header.Get("X-Kedge-Error-Type") != "bad-request" {
		t.Errorf("GET: %d %v", rec.status, rec.header)
	}
	rec = &recorder{header: http.Header{}}
	h.ServeHTTP(rec, &http.Request{Method: "CONNECT", Host: "x:1", Header: http.Header{":protocol": {"websocket"}}, Proto: "HTTP/2.0", ProtoMajor: 2})
	if rec.status != http.StatusBadRequest {
		t.Errorf("extended CONNECT: %d", rec.status)
	}
}

// recorder is a minimal ResponseWriter.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.status = code }
func (r *recorder) Write(p []byte) (int, error) { return len(p), nil }
