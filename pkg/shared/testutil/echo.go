package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// EchoOption configures NewEchoServer.
type EchoOption func(*echoConfig)

type echoConfig struct {
	name      string
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	h2c       bool
}

// EchoName sets the backend name reported in X-Echo-Backend and the JSON body (default "echo").
func EchoName(name string) EchoOption { return func(c *echoConfig) { c.name = name } }

// EchoTLS serves TLS with cert, offering h2 and http/1.1 by ALPN.
func EchoTLS(cert tls.Certificate) EchoOption { return func(c *echoConfig) { c.cert = &cert } }

// EchoClientCAs makes a TLS echo server require a client certificate signed by pool; the subject CN the server saw
// is reported as X-Echo-Client-Cn. Without EchoTLS it has no effect.
func EchoClientCAs(pool *x509.CertPool) EchoOption { return func(c *echoConfig) { c.clientCAs = pool } }

// EchoH2C lets a plaintext echo server speak HTTP/2 with prior knowledge besides HTTP/1.1.
func EchoH2C() EchoOption { return func(c *echoConfig) { c.h2c = true } }

// EchoServer is a running HTTP echo backend on 127.0.0.1. Its routes:
//
//	/stream?chunks=N&interval=D  N lines "chunk i", each flushed, D apart (defaults 5 and 10ms)
//	/size?bytes=N                N bytes of SizeData, with Content-Length
//	/status/N                    status N with the echo body
//	/slow?d=D                    waits D (default 1s), then echoes
//	/ws                          answers an HTTP/1.1 Upgrade with 101 and echoes every byte back until EOF
//	/reset                       starts a response, then resets the connection (RST; RST_STREAM over h2)
//	anything else                the echo: JSON EchoResponse body
//
// Every response carries X-Echo-* headers describing the request (see EchoResponse). Waiting handlers return when
// the client goes away or the server closes.
type EchoServer struct {
	// Name is the backend name it reports.
	Name string
	// URL is "http://127.0.0.1:port" or "https://127.0.0.1:port".
	URL string
	// Addr is "127.0.0.1:port".
	Addr string

	srv      *http.Server
	done     chan struct{} // closed by Close: waiting handlers give up
	served   chan struct{} // closed when srv.Serve has returned
	hits     atomic.Int64
	mu       sync.Mutex
	closed   bool
	handlers int                   // running handlers; guarded by mu
	idle     chan struct{}         // closed and replaced whenever handlers drops to zero; guarded by mu
	hijacked map[net.Conn]struct{} // connections taken over by /ws; guarded by mu
}

// NewEchoServer starts an echo backend; t.Cleanup closes it.
func NewEchoServer(t testing.TB, opts ...EchoOption) *EchoServer {
	t.Helper()
	cfg := echoConfig{name: "echo"}
	for _, o := range opts {
		o(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: echo listener: %v", err)
	}
	e := &EchoServer{
		Name:     cfg.name,
		Addr:     ln.Addr().String(),
		done:     make(chan struct{}),
		served:   make(chan struct{}),
		idle:     make(chan struct{}),
		hijacked: map[net.Conn]struct{}{},
	}
	e.srv = &http.Server{
		Handler:           http.HandlerFunc(e.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	if cfg.cert == nil {
		e.URL = "http://" + e.Addr
		if cfg.h2c {
			e.srv.Protocols = new(http.Protocols)
			e.srv.Protocols.SetHTTP1(true)
			e.srv.Protocols.SetUnencryptedHTTP2(true)
		}
		go func() { defer close(e.served); _ = e.srv.Serve(ln) }()
	} else {
		e.URL = "https://" + e.Addr
		e.srv.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{*cfg.cert},
			NextProtos:   []string{"h2", "http/1.1"},
		}
		if cfg.clientCAs != nil {
			e.srv.TLSConfig.ClientCAs = cfg.clientCAs
			e.srv.TLSConfig.ClientAuth = tls.RequireAndVerifyClientCert
		}
		go func() { defer close(e.served); _ = e.srv.ServeTLS(ln, "", "") }()
	}
	t.Cleanup(e.Close)
	return e
}

// Hits returns how many requests the server has received.
func (e *EchoServer) Hits() int64 { return e.hits.Load() }

// Port returns the TCP port the server listens on.
func (e *EchoServer) Port() int {
	_, p, _ := net.SplitHostPort(e.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

// Close stops the server, closes every connection (hijacked ones too) and waits for its handlers to return. It is
// safe to call more than once, e.g. to simulate a backend going away.
func (e *EchoServer) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	close(e.done)
	for c := range e.hijacked {
		_ = c.Close()
	}
	e.mu.Unlock()
	_ = e.srv.Close()
	<-e.served
	// Bounded: every handler selects on e.done or does I/O on a connection that is closed by now.
	for {
		e.mu.Lock()
		n, idle := e.handlers, e.idle
		e.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-idle:
		case <-time.After(10 * time.Second):
			panic("testutil: echo server handlers did not return within 10s of Close")
		}
	}
}

func (e *EchoServer) enter() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return false
	}
	e.handlers++
	return true
}

func (e *EchoServer) leave() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handlers--
	if e.handlers == 0 {
		close(e.idle)
		e.idle = make(chan struct{})
	}
}

// trackHijacked registers c so Close closes it; the returned func forgets it.
func (e *EchoServer) trackHijacked(c net.Conn) (untrack func(), ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, false
	}
	e.hijacked[c] = struct{}{}
	return func() {
		e.mu.Lock()
		delete(e.hijacked, c)
		e.mu.Unlock()
	}, true
}

// EchoResponse is the JSON body of an echo answer: what the backend saw. The same facts are in the X-Echo-*
// response headers: X-Echo-Backend, -Method, -Proto, -Host, -Path, -Query, -Body-Length, -Body-Sha256, -Tls,
// -Client-Cn, and X-Echo-Header-<Name> for every request header (each value once).
type EchoResponse struct {
	Backend    string      `json:"backend"`
	Method     string      `json:"method"`
	Proto      string      `json:"proto"`
	Host       string      `json:"host"`
	Path       string      `json:"path"` // escaped form, as it arrived
	Query      string      `json:"query"`
	Header     http.Header `json:"header"`
	BodyLength int64       `json:"body_length"`
	BodySHA256 string      `json:"body_sha256"` // hex
	TLS        bool        `json:"tls"`
	ClientCN   string      `json:"client_cn,omitempty"`
	RemoteAddr string      `json:"remote_addr"`
}

// DecodeEcho reads and closes resp.Body and decodes it as an EchoResponse; the test fails if it is not one.
func DecodeEcho(t testing.TB, resp *http.Response) EchoResponse {
	t.Helper()
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("testutil: reading echo body: %v", err)
	}
	var er EchoResponse
	if err := json.Unmarshal(b, &er); err != nil {
		t.Fatalf("testutil: echo body is not an EchoResponse (status %d): %v\n%s", resp.StatusCode, err, b)
	}
	return er
}
