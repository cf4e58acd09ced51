package serve_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// tlsServer runs an HTTPServer with opts on 127.0.0.1, behind lim when it is not nil, logging at debug level to the
// returned buffer, until the test ends.
func tlsServer(t *testing.T, h http.Handler, opts serve.HTTPOptions, lim *serve.ConnLimiter) (addr string, logs *testutil.Buffer) {
	t.Helper()
	logs = new(testutil.Buffer)
	log, err := logging.New(logging.Options{Level: "debug", Output: logs})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = lim.Wrap(ln, "https")
	srv := serve.HTTPServer(h, opts, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Serve(ctx, srv, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), logs
}

// goroutineID is the ID of the calling goroutine, from the first line of its stack trace ("goroutine 42 [running]:").
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// TestTLSHandshakeOnItsOwnGoroutine: h1 and h2 are both served, with the client certificate verified, and the
// handshake ran on a goroutine other than the one serving the connection (an HTTP/1.1 handler runs on that one), so
// the stack the handshake grew is not kept for the connection's life.
func TestTLSHandshakeOnItsOwnGoroutine(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	var handshakeG atomic.Value // goroutine that ran the latest handshake
	cert := ca.Server(t)
	cfg := &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			handshakeG.Store(goroutineID())
			return &cert, nil
		},
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  ca.Pool(),
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Goroutine", goroutineID())
		_, _ = io.WriteString(w, r.Proto+" "+r.TLS.PeerCertificates[0].Subject.CommonName)
	})
	addr, _ := tlsServer(t, h, serve.HTTPOptions{TLSConfig: cfg}, nil)
	clientCert := ca.Client(t, "alice")

	tests := []struct {
		name      string
		h2        bool
		wantProto string
	}{
		{"HTTP/1.1", false, "HTTP/1.1"},
		{"h2", true, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientCert}}}
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetHTTP1(!tt.h2)
			tr.Protocols.SetHTTP2(tt.h2)
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if want := tt.wantProto + " alice"; string(body) != want {
				t.Errorf("body %q, want %q", body, want)
			}
			if !tt.h2 && resp.Header.Get("X-Goroutine") == handshakeG.Load() {
				t.Errorf("the TLS handshake ran on goroutine %s, which then served the connection", handshakeG.Load())
			}
		})
	}

	// Client certificates are still required and verified.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
	if err == nil {
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(c), nil)
		_ = c.Close()
	}
	if err == nil {
		t.Error("a client without a certificate got an answer")
	}
}

// TestTLSHandshakeStalledClient: a client that never finishes its handshake does not hold up the others, and the
// handshake timeout (the read header timeout) closes it with a TLS handshake error logged at debug level. A client
// speaking plain HTTP gets http.Server's 400.
func TestTLSHandshakeStalledClient(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	const timeout = 500 * time.Millisecond
	opts := serve.HTTPOptions{ReadHeaderTimeout: timeout, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}}}
	addr, logs := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), opts, nil)

	stalled := []net.Conn{serve.Stall(t, addr), serve.Stall(t, addr)}
	if _, err := stalled[1].Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00}); err != nil { // half a ClientHello record
		t.Fatal(err)
	}
	start := time.Now()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("GET beside stalled handshakes: %v", err)
	}
	_ = resp.Body.Close()

	for i, c := range stalled {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if isTimeout(err) {
			t.Fatalf("stalled connection %d still open after 10s (handshake timeout %v)", i, timeout)
		}
		if n != 0 && i == 0 {
			t.Errorf("stalled connection %d got %d bytes", i, n)
		}
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("stalled connections closed after %v, before the handshake timeout %v", took, timeout)
	}
	testutil.Eventually(t, "the handshake error in the log", func() bool {
		return strings.Count(logs.String(), "TLS handshake error from 127.0.0.1:") >= 2
	})
	if out := logs.String(); !strings.Contains(out, "level=debug") || strings.Contains(out, "level=warning") {
		t.Errorf("handshake errors not logged at debug level only:\n%s", out)
	}

	plain := serve.Stall(t, addr)
	_ = plain.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(plain, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(plain), nil); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP on the TLS port: %v, %v; want 400", resp, err)
	}
}

// TestTLSHandshakeLimits: connections still in their handshake hold their places under the connection limits,
// connections over a limit are closed before any handshake and counted, and a failed handshake gives its place back.
func TestTLSHandshakeLimits(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	reg := prometheus.NewRegistry()
	lim, err := serve.NewConnLimiter(serve.ConnLimits{Total: 3, PerIP: 2}, reg)
	if err != nil {
		t.Fatal(err)
	}
	opts := serve.HTTPOptions{ReadHeaderTimeout: time.Minute, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}}}
	addr, _ := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), opts, lim)

	a, b := serve.Stall(t, addr), serve.Stall(t, addr)
	testutil.Eventually(t, "two connections counted", func() bool { return lim.Open() == 2 })
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool()}); err == nil {
		t.Error("a third connection from the same address completed its handshake over the per-IP limit")
	}
	if got := rejected(t, reg, serve.RejectPerIP); got != 1 {
		t.Errorf("per_ip rejections = %v, want 1", got)
	}

	if _, err := a.Write([]byte("not a TLS record at all\r\n")); err != nil { // fails the handshake at once
		t.Fatal(err)
	}
	_ = b.Close()
	testutil.Eventually(t, "the failed and the abandoned handshake released", func() bool { return lim.Open() == 0 })
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatalf("a connection after the places were released: %v", err)
	}
	_ = c.Close()
}
