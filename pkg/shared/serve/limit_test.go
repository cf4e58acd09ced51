package serve_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// limited is a ConnLimiter's wrapped listener with a raw accept loop that keeps every accepted conn until the test
// closes it.
func limited(t *testing.T, limits serve.ConnLimits) (*serve.ConnLimiter, *prometheus.Registry, net.Listener) {
	t.Helper()
	reg := prometheus.NewRegistry()
	lim, err := serve.NewConnLimiter(limits, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return lim, reg, lim.Wrap(ln, "test")
}

func rejected(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kedge_connections_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// dialClosed reports whether a new connection to addr is closed by the server without a byte.
func dialClosed(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return true
	}
	defer func() { _ = c.Close() }()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestConnLimiterAcceptLoop(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limits serve.ConnLimits
		reason string
	}{
		{"total", serve.ConnLimits{Total: 2}, serve.RejectTotal},
		{"per IP", serve.ConnLimits{Total: 100, PerIP: 2}, serve.RejectPerIP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lim, reg, ln := limited(t, tt.limits)
			accepted := make(chan net.Conn, 8)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						close(accepted)
						return
					}
					accepted <- c
				}
			}()
			var server []net.Conn
			for i := 0; i < 2; i++ {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = c.Close() }()
				server = append(server, <-accepted)
			}
			if !dialClosed(t, ln.Addr().String()) {
				t.Fatal("third connection was not closed at accept")
			}
			if got := rejected(t, reg, tt.reason); got != 1 {
				t.Errorf("rejected{reason=%s} = %v, want 1", tt.reason, got)
			}
			if lim.Open() != 2 {
				t.Errorf("Open = %d, want 2", lim.Open())
			}
			// Closing twice gives back one place, not two.
			_ = server[0].Close()
			_ = server[0].Close()
			if lim.Open() != 1 {
				t.Errorf("Open after a double Close = %d, want 1", lim.Open())
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			select {
			case sc := <-accepted:
				_ = sc.Close()
			case <-time.After(5 * time.Second):
				t.Fatal("a connection within the limit was not accepted after one closed")
			}
			_ = server[1].Close()
			if lim.Open() != 0 {
				t.Errorf("Open = %d, want 0", lim.Open())
			}
			_ = ln.Close()
			for range accepted {
			}
		})
	}
}

// TestConnLimiterHTTPServer runs HTTPServer on a limited listener: plain requests, a hijacked connection the handler
// closes, one it hands off and the client closes, and TLS connections all give their place back.
func TestConnLimiterHTTPServer(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	lim, _, ln := limited(t, serve.ConnLimits{Total: 2})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hijack-close":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			_ = brw.Flush()
			_ = c.Close()
		case "/hijack-echo":
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			untrack := serve.TrackerFrom(r.Context()).Track(c)
			go func() {
				defer untrack()
				defer func() { _ = c.Close() }()
				_, _ = brw.WriteString("HTTP/1.1 200 OK\r\n\r\n")
				_ = brw.Flush()
				_, _ = io.Copy(c, brw)
			}()
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	srv := serve.HTTPServer(h, serve.HTTPOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}}}, logging.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve.Serve(ctx, srv, ln, time.Second) }()
	t.Cleanup(func() { cancel(); <-done })

	addr := ln.Addr().String()
	dial := func() *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	get := func(c *tls.Conn, path string) *bufio.Reader {
		t.Helper()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if path != "/hijack-echo" {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		return br
	}
	waitOpen := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for lim.Open() != want {
			if time.Now().After(deadline) {
				t.Fatalf("open connections = %d, want %d", lim.Open(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Hijacked and closed by the handler.
	c1 := dial()
	get(c1, "/hijack-close")
	_ = c1.Close()
	waitOpen(0)

	// Hijacked, handed off, closed by the client; meanwhile the limit holds.
	c2 := dial()
	br := get(c2, "/hijack-echo")
	c3 := dial()
	get(c3, "/")
	waitOpen(2)
	if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool()}); err == nil {
		t.Error("a third TLS connection completed its handshake over the limit")
	}
	if _, err := io.WriteString(c2, "ping\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Errorf("established tunnel echoed %q, %v", line, err)
	}
	get(c3, "/") // the established keep-alive connection keeps working
	_ = c2.Close()
	_ = c3.Close()
	waitOpen(0)
}

func TestIdleTimeoutClosesConnections(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	const idle = 300 * time.Millisecond
	tests := []struct {
		name  string
		proto string
	}{
		{"HTTP/1.1", "http/1.1"},
		{"h2", "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := startHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
				serve.HTTPOptions{IdleTimeout: idle, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}}}, time.Second)
			c, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{tt.proto}})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = c.Close() }()
			// Before the write: the server's idle clock starts after it has answered, so never before this.
			start := time.Now()
			if tt.proto == "h2" {
				// The client preface and an empty SETTINGS frame, so the server is past the preface.
				if _, err := io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
					t.Fatal(err)
				}
			} else if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = io.Copy(io.Discard, c) // the response or SETTINGS, then EOF when the idle timeout closes it
			if isTimeout(err) {
				t.Fatalf("connection still open after 10s (idle timeout %v)", idle)
			}
			if took := time.Since(start); took < idle || took > idle+3*time.Second {
				t.Errorf("closed after %v, want about %v", took, idle)
			}
		})
	}
}

func TestConnLimiterMetricsShared(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	for i := 0; i < 2; i++ {
		if _, err := serve.NewConnLimiter(serve.ConnLimits{}, reg); err != nil {
			t.Fatalf("limiter %d: %v", i, err)
		}
	}
	if n, err := promtest.GatherAndCount(reg, "kedge_connections_rejected_total"); err != nil || n != 0 {
		t.Errorf("rejected series before any Wrap = %d, %v", n, err)
	}
}
