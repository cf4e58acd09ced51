package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

// TestH2FloodsContained sends the two HTTP/2 floods Go's server has had CVEs for over one connection: rapid reset
// (HEADERS then RST_STREAM, again and again; CVE-2023-44487) and an endless header block (CONTINUATION frames
// without END_HEADERS; CVE-2023-45288). The flooding connection must end (or the flood stay bounded), kedge must
// keep answering other clients meanwhile, and its goroutines must come back down afterwards.
func TestH2FloodsContained(t *testing.T) {
	t.Parallel()
	b := startBackends(t)
	e := startKedge(t, basicDirector, b.pool())
	client := e.client(true)
	check := func(t *testing.T, when string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://plain.example.com/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: a normal request failed: %v", when, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: a normal request got %s", when, resp.Status)
		}
	}
	check(t, "before the floods")
	baseline := e.goroutines(t)

	t.Run("rapid reset", func(t *testing.T) {
		fr, ended, finish := e.h2Flooder(t)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "plain.example.com"}, {":path", "/slow?d=5s"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		deadline := time.Now().Add(10 * time.Second)
		sent := 0
		for i := 0; i < 5000 && time.Now().Before(deadline) && !ended.Load(); i++ {
			id := uint32(2*i + 1)
			if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}) != nil ||
				fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
				break
			}
			sent++
			if i%500 == 0 {
				check(t, "during the rapid reset")
			}
		}
		r := finish()
		t.Logf("rapid reset: %d streams opened and reset, %d requests reached the backend; connection ended: %v, GOAWAY: %v",
			sent, b.plain.Hits(), r.ended, r.goAway)
		if hits := b.plain.Hits(); hits > int64(sent) {
			t.Errorf("backend got %d requests for %d streams", hits, sent)
		}
	})

	t.Run("CONTINUATION flood", func(t *testing.T) {
		fr, ended, finish := e.h2Flooder(t)
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "plain.example.com"}, {":path", "/"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: false}); err != nil {
			t.Fatal(err)
		}
		// Up to 10 MiB of valid header fields, 1 KiB per frame, never ending the block: the server must give up
		// long before (its header limit is 64 KiB).
		deadline := time.Now().Add(10 * time.Second)
		sentBytes := 0
		value := strings.Repeat("a", 1000)
		for i := 0; i < 10240 && time.Now().Before(deadline) && !ended.Load(); i++ {
			block.Reset()
			_ = enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strconv.Itoa(i) + value})
			if fr.WriteContinuation(1, false, block.Bytes()) != nil {
				break
			}
			sentBytes += block.Len()
		}
		r := finish()
		t.Logf("CONTINUATION flood: %d KiB of header block sent; connection ended: %v, GOAWAY: %v", sentBytes>>10, r.ended, r.goAway)
		if !r.ended {
			t.Errorf("the connection survived %d KiB of one header block", sentBytes>>10)
		}
		if sentBytes >= 10<<20 {
			t.Errorf("kedge read all %d KiB of an endless header block", sentBytes>>10)
		}
	})

	check(t, "after the floods")
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := e.goroutines(t)
		if n <= baseline+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("kedge has %d goroutines 15s after the floods, %d before", n, baseline)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// floodResult is how the server ended a flooding connection.
type floodResult struct {
	ended  bool          // the server closed the connection or sent GOAWAY
	goAway http2.ErrCode // the GOAWAY's code, if one came
}

// h2Flooder opens an HTTP/2 connection to kedge's HTTPS port and reads (and discards) the server's frames in the
// background. finish, called when the flood is over, waits up to 5s more for the server to end the connection,
// closes it and says how it ended.
func (e *kedgeEnv) h2Flooder(t *testing.T) (fr *http2.Framer, ended *atomic.Bool, finish func() floodResult) {
	t.Helper()
	c := e.dialTLS(t, e.https, "h2")
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	fr = http2.NewFramer(c, c)
	// The preface, our SETTINGS and the ACK of the server's SETTINGS (which it sent first thing): without the ACK Go's
	// server drops the connection after a few seconds, which would pass for a reaction to the flood.
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	done := make(chan floodResult, 1)
	ended = new(atomic.Bool)
	go func() {
		defer ended.Store(true)
		var r floodResult
		rfr := http2.NewFramer(io.Discard, c)
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				r.ended = !isTimeout(err)
				break
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				r.ended, r.goAway = true, ga.ErrCode
				break
			}
		}
		done <- r
	}()
	return fr, ended, func() floodResult {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r := <-done
		_ = c.Close()
		return r
	}
}

// goroutines reads kedge's go_goroutines from its metrics.
func (e *kedgeEnv) goroutines(t *testing.T) int {
	t.Helper()
	v, err := strconv.ParseFloat(e.metric(t, "go_goroutines"), 64)
	if err != nil {
		t.Fatalf("go_goroutines: %v", err)
	}
	return int(v)
}
