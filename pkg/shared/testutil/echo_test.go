package testutil_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func plainClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func tlsClient(t *testing.T, ca *testutil.CA, certs ...tls.Certificate) *http.Client {
	tr := &http.Transport{
		Proxy:             nil,
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool(), Certificates: certs},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestEchoDescribesRequest(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	tests := []struct {
		name   string
		opts   []testutil.EchoOption
		client func(t *testing.T) *http.Client
		proto  string
	}{
		{"plain h1", nil, plainClient, "HTTP/1.1"},
		{"tls h2", []testutil.EchoOption{testutil.EchoTLS(ca.Server(t))},
			func(t *testing.T) *http.Client { return tlsClient(t, ca) }, "HTTP/2.0"},
		{"h2c", []testutil.EchoOption{testutil.EchoH2C()}, func(t *testing.T) *http.Client {
			tr := &http.Transport{Protocols: new(http.Protocols)}
			tr.Protocols.SetUnencryptedHTTP2(true)
			t.Cleanup(tr.CloseIdleConnections)
			return &http.Client{Transport: tr}
		}, "HTTP/2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := testutil.NewEchoServer(t, append(tt.opts, testutil.EchoName("b1"))...)
			body := "hello body"
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+"/a%2Fb/c?x=1&y=2", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Custom", "v1")
			req.Header.Set("Proxy-Authorization", "Bearer secret")
			resp, err := tt.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			hdr := resp.Header
			er := testutil.DecodeEcho(t, resp)
			sum := sha256.Sum256([]byte(body))
			checks := []struct{ what, got, want string }{
				{"backend", er.Backend, "b1"},
				{"method", er.Method, "POST"},
				{"proto", er.Proto, tt.proto},
				{"host", er.Host, e.Addr},
				{"path", er.Path, "/a%2Fb/c"},
				{"query", er.Query, "x=1&y=2"},
				{"header", er.Header.Get("X-Custom"), "v1"},
				{"body sha", er.BodySHA256, hex.EncodeToString(sum[:])},
				{"body length", fmt.Sprint(er.BodyLength), fmt.Sprint(len(body))},
				{"X-Echo-Backend", hdr.Get("X-Echo-Backend"), "b1"},
				{"X-Echo-Path", hdr.Get("X-Echo-Path"), "/a%2Fb/c"},
				{"X-Echo-Proto", hdr.Get("X-Echo-Proto"), tt.proto},
				{"X-Echo-Header-Proxy-Authorization", hdr.Get("X-Echo-Header-Proxy-Authorization"), "Bearer secret"},
				{"X-Echo-Body-Length", hdr.Get("X-Echo-Body-Length"), fmt.Sprint(len(body))},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
				}
			}
			if e.Hits() != 1 {
				t.Errorf("Hits = %d, want 1", e.Hits())
			}
		})
	}
}

func TestEchoRoutes(t *testing.T) {
	t.Parallel()
	e := testutil.NewEchoServer(t)
	c := plainClient(t)
	get := func(t *testing.T, path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := c.Get(e.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s body: %v", path, err)
		}
		return resp, b
	}
	t.Run("status", func(t *testing.T) {
		t.Parallel()
		resp, _ := get(t, "/status/418")
		if resp.StatusCode != 418 {
			t.Errorf("status = %d, want 418", resp.StatusCode)
		}
		if resp, _ := get(t, "/status/99"); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("/status/99 = %d, want 400", resp.StatusCode)
		}
	})
	t.Run("size", func(t *testing.T) {
		t.Parallel()
		const n = 100_003
		resp, b := get(t, fmt.Sprintf("/size?bytes=%d", n))
		want, _ := io.ReadAll(testutil.SizeData(n))
		if resp.ContentLength != n || !bytes.Equal(b, want) {
			t.Errorf("got %d bytes (Content-Length %d), want the %d bytes of SizeData", len(b), resp.ContentLength, n)
		}
	})
	t.Run("stream", func(t *testing.T) {
		t.Parallel()
		_, b := get(t, "/stream?chunks=4&interval=1ms")
		if got, want := string(b), "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"; got != want {
			t.Errorf("body = %q, want %q", got, want)
		}
	})
	t.Run("stream flushes", func(t *testing.T) {
		t.Parallel()
		// The first chunk must arrive while the handler still waits for the second one.
		resp, err := c.Get(e.URL + "/stream?chunks=2&interval=1m")
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "chunk 0\n" {
			t.Errorf("first line = %q, %v", line, err)
		}
	})
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		resp, _ := get(t, "/slow?d=50ms")
		if resp.StatusCode != 200 || time.Since(start) < 50*time.Millisecond {
			t.Errorf("status %d after %v, want 200 after >= 50ms", resp.StatusCode, time.Since(start))
		}
	})
	t.Run("bad params", func(t *testing.T) {
		t.Parallel()
		for _, p := range []string{"/slow?d=xyz", "/stream?chunks=-1", "/size?bytes=abc", "/ws"} {
			if resp, _ := get(t, p); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s = %d, want 400", p, resp.StatusCode)
			}
		}
	})
	t.Run("reset", func(t *testing.T) {
		t.Parallel()
		resp, err := c.Get(e.URL + "/reset")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
		}
		if err == nil {
			t.Error("reading /reset succeeded, want a connection error")
		}
	})
}

func TestEchoResetOverH2(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	e := testutil.NewEchoServer(t, testutil.EchoTLS(ca.Server(t)))
	resp, err := tlsClient(t, ca).Get(e.URL + "/reset")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if err == nil {
		t.Error("reading /reset over h2 succeeded, want a stream error")
	}
}

func TestEchoWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	e := testutil.NewEchoServer(t, testutil.EchoName("ws"))
	conn, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" || resp.Header.Get("X-Echo-Backend") != "ws" {
		t.Fatalf("got %d %v, want 101 with Upgrade: websocket", resp.StatusCode, resp.Header)
	}
	if _, err := io.WriteString(conn, " and late"); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if string(rest) != "early and late" {
		t.Errorf("echoed %q, want %q", rest, "early and late")
	}
}

func TestEchoCloseEndsWaitingHandlers(t *testing.T) {
	t.Parallel()
	e := testutil.NewEchoServer(t)
	conn, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := plainClient(t).Get(e.URL + "/slow?d=1h")
		if err == nil {
			_ = resp.Body.Close()
		}
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for e.Hits() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := e.Hits(); n < 2 {
		t.Errorf("hits = %d before Close, want 2 (/ws and /slow): Close was not tested with a waiting handler", n)
	}
	e.Close() // must not hang on the hijacked /ws conn or the hour-long /slow
	if err := <-errc; err == nil {
		t.Error("/slow?d=1h succeeded after Close")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("hijacked conn still open after Close: %v", err)
	}
}

func TestEchoClientCAs(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	e := testutil.NewEchoServer(t, testutil.EchoTLS(ca.Server(t)), testutil.EchoClientCAs(ca.Pool()))
	if resp, err := tlsClient(t, ca).Get(e.URL); err == nil {
		_ = resp.Body.Close()
		t.Fatal("request without a client certificate succeeded")
	}
	resp, err := tlsClient(t, ca, ca.Client(t, "kedge")).Get(e.URL)
	if err != nil {
		t.Fatal(err)
	}
	if er := testutil.DecodeEcho(t, resp); er.ClientCN != "kedge" || !er.TLS {
		t.Errorf("ClientCN = %q, TLS = %v; want kedge, true", er.ClientCN, er.TLS)
	}
}
