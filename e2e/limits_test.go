package e2e

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestConnectionLimits runs kedge with low connection limits: connections over a limit are closed at accept on both
// TLS ports (counted in kedge_connections_rejected_total), established ones keep working, and a closed connection
// gives its place back.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		flags  []string
		reason string
	}{
		{"total", []string{"--server_max_connections=3"}, "total"},
		{"per IP", []string{"--server_max_connections=100", "--server_max_connections_per_ip=3"}, "per_ip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := startBackends(t)
			e := startKedge(t, basicDirector, b.pool(), tt.flags...)

			// Three connections, two on the HTTPS port and one on the gRPC port: the limits count both ports.
			h1 := e.dialTLS(t, e.https, "http/1.1")
			h1b := newH1Conn(h1)
			h1b.get(t, "plain.example.com")
			h2 := e.dialTLS(t, e.https, "http/1.1")
			newH1Conn(h2).get(t, "plain.example.com")
			e.dialTLS(t, e.grpcAddr, "h2")

			for _, addr := range []string{e.https, e.grpcAddr} {
				if err := e.tryTLS(addr); err == nil {
					t.Errorf("a fourth connection to %s completed its TLS handshake over the limit", addr)
				}
			}
			h1b.get(t, "plain.example.com") // established connections keep working

			// Closing one gives its place back (once kedge has seen the close).
			_ = h2.Close()
			deadline := time.Now().Add(10 * time.Second)
			for {
				err := e.tryTLS(e.https)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no connection accepted 10s after one of three closed: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}

			metric := `kedge_connections_rejected_total{listener="https",reason="` + tt.reason + `"}`
			if v := e.metric(t, metric); v == "" || v == "0" {
				t.Errorf("%s = %q, want at least 1", metric, v)
			}
			metric = `kedge_connections_rejected_total{listener="grpc",reason="` + tt.reason + `"}`
			if v := e.metric(t, metric); v == "" || v == "0" {
				t.Errorf("%s = %q, want at least 1", metric, v)
			}
		})
	}
}

// TestSlowClientsCut checks the timeouts that close connections of clients that never get to a request: no TLS
// ClientHello, a dribbled header block (slowloris), an h2 connection without a preface. Each must be cut within 15s.
func TestSlowClientsCut(t *testing.T) {
	t.Parallel()
	b := startBackends(t)
	e := startKedge(t, basicDirector, b.pool())
	const limit = 15 * time.Second
	tests := []struct {
		name string
		// start opens the connection and returns it with a function that keeps it busy the slow way until it fails.
		start func(t *testing.T) (net.Conn, func(net.Conn) error)
	}{
		{"HTTPS port, no ClientHello", func(t *testing.T) (net.Conn, func(net.Conn) error) {
			return dialTCP(t, e.https), readUntilClosed
		}},
		{"gRPC port, no ClientHello", func(t *testing.T) (net.Conn, func(net.Conn) error) {
			return dialTCP(t, e.grpcAddr), readUntilClosed
		}},
		{"HTTPS port, slowloris headers", func(t *testing.T) (net.Conn, func(net.Conn) error) {
			c := e.dialTLS(t, e.https, "http/1.1")
			return c, func(c net.Conn) error {
				if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: plain.example.com\r\n"); err != nil {
					return err
				}
				for i := 0; ; i++ { // one header byte a second, never the end of the header block
					if _, err := io.WriteString(c, "X"); err != nil {
						return err
					}
					if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
						return err
					}
					if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
						return err
					}
				}
			}
		}},
		{"HTTPS port, h2 without preface", func(t *testing.T) (net.Conn, func(net.Conn) error) {
			return e.dialTLS(t, e.https, "h2"), readUntilClosed
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			c, slow := tt.start(t)
			done := make(chan error, 1)
			go func() { done <- slow(c) }()
			select {
			case err := <-done:
				took := time.Since(start)
				t.Logf("closed after %v: %v", took.Round(100*time.Millisecond), err)
				if took > limit {
					t.Errorf("closed after %v, want at most %v", took, limit)
				}
			case <-time.After(limit + 5*time.Second):
				_ = c.Close()
				<-done
				t.Errorf("connection still open after %v", limit+5*time.Second)
			}
		})
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readUntilClosed reads (discarding what the server sends, e.g. its h2 SETTINGS) until the connection fails.
func readUntilClosed(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		err = io.EOF
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// dialTLS opens a TLS connection to addr with ALPN proto, closed at the end of the test.
func (e *kedgeEnv) dialTLS(t *testing.T, addr, proto string) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost", NextProtos: []string{proto}})
	if err != nil {
		t.Fatalf("TLS connection to %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// tryTLS opens a TLS connection to addr and closes it again; the error says why it failed.
func (e *kedgeEnv) tryTLS(addr string) error {
	d := &net.Dialer{Timeout: 5 * time.Second, Deadline: time.Now().Add(5 * time.Second)}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"})
	if err != nil {
		return err
	}
	return c.Close()
}

// metric returns the value of one series (name with labels, as exposed) on kedge's metrics page, or "".
func (e *kedgeEnv) metric(t *testing.T, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.debug + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}

// h1Conn sends HTTP/1.1 requests on one kept-alive connection.
type h1Conn struct {
	c  net.Conn
	br *bufio.Reader
}

func newH1Conn(c net.Conn) *h1Conn { return &h1Conn{c: c, br: bufio.NewReader(c)} }

func (h *h1Conn) get(t *testing.T, host string) {
	t.Helper()
	_ = h.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(h.c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(h.br, nil)
	if err != nil {
		t.Fatalf("GET on an established connection: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET on an established connection: %s", resp.Status)
	}
}
