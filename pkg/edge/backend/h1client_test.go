package backend

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// newRawServer starts a TCP server on 127.0.0.1 that hands each connection, with a reader over it, to serve.
func newRawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *sharedtest.RawServer {
	t.Helper()
	return sharedtest.NewRawServer(t, func(c net.Conn) { serve(c, bufio.NewReader(c)) })
}

// readRequests reads requests from br until the connection ends, answering each with answer.
func readRequests(c net.Conn, br *bufio.Reader, answer func(n int, req *http.Request) string) {
	for n := 0; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, answer(n, req)); err != nil {
			return
		}
	}
}

func okAnswer(body string) string {
	return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func newTestH1(t *testing.T, o Options) *h1Client {
	t.Helper()
	d := &net.Dialer{Timeout: time.Second}
	c := newH1Client(d.DialContext, o.withDefaults())
	t.Cleanup(c.close)
	return c
}

func h1Get(t *testing.T, c *h1Client, ctx context.Context, ep, path string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ep+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "front.example"
	return c.roundTrip(req, ep)
}

// mustGet sends request i of a test and returns the answer's body.
func mustGet(t *testing.T, c *h1Client, ep, path string, i int) string {
	t.Helper()
	resp, err := h1Get(t, c, context.Background(), ep, path)
	if err != nil {
		t.Fatalf("request %d: %v", i, err)
	}
	return readAll(t, resp)
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatalf("closing the body: %v", err)
	}
	return string(b)
}

func TestH1ClientReusesConnections(t *testing.T) {
	var hosts []string
	var mu sync.Mutex
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(n int, req *http.Request) string {
			mu.Lock()
			hosts = append(hosts, req.Host+" "+req.URL.RequestURI())
			mu.Unlock()
			return okAnswer("answer " + strconv.Itoa(n))
		})
	})
	c := newTestH1(t, Options{})
	for i := range 20 {
		resp, err := h1Get(t, c, context.Background(), s.Addr(), "/p%2Fq?x=1")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got, want := readAll(t, resp), "answer "+strconv.Itoa(i); got != want {
			t.Fatalf("request %d: body %q, want %q", i, got, want)
		}
	}
	if n := s.Accepted(); n != 1 {
		t.Errorf("20 sequential requests used %d connections, want 1", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if hosts[0] != "front.example /p%2Fq?x=1" {
		t.Errorf("the endpoint saw %q, want the request's Host and exact path", hosts[0])
	}
}

func TestH1ClientClosedIdleConnection(t *testing.T) {
	// The endpoint answers one request per connection and closes it without saying so.
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, okAnswer("once"))
	})
	c := newTestH1(t, Options{})
	for i := range 5 {
		if got := mustGet(t, c, s.Addr(), "/", i); got != "once" {
			t.Fatalf("request %d: body %q", i, got)
		}
		time.Sleep(20 * time.Millisecond) // the endpoint's close arrives while the connection is idle
	}
	if n := s.Accepted(); n != 5 {
		t.Errorf("%d connections for 5 requests to an endpoint that closes each, want 5", n)
	}
}

func TestH1ClientCloseRacingRequestIsRetriedOnce(t *testing.T) {
	// The endpoint reads the second request on a connection and closes it unanswered: the peek before reuse
	// cannot see that coming, so the request is sent again on a new connection (it is a GET without a body).
	var answered atomic.Int64
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(n int, _ *http.Request) string {
			if n > 0 {
				_ = c.Close()
				return ""
			}
			answered.Add(1)
			return okAnswer("fresh")
		})
	})
	c := newTestH1(t, Options{})
	for i := range 3 {
		if got := mustGet(t, c, s.Addr(), "/", i); got != "fresh" {
			t.Fatalf("request %d: body %q", i, got)
		}
	}
	if n := answered.Load(); n != 3 {
		t.Errorf("%d answers, want 3", n)
	}
}

func TestH1ClientNeverReadsUnsolicitedBytes(t *testing.T) {
	// After its answer the endpoint sends a second response nobody asked for. It must not become the answer to
	// the next request, which may be another client's.
	const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
	for _, tc := range []struct {
		name  string
		delay time.Duration
	}{{"with the answer", 0}, {"while idle", 30 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				readRequests(c, br, func(int, *http.Request) string {
					if tc.delay == 0 {
						return okAnswer("real") + smuggled
					}
					go func() {
						time.Sleep(tc.delay / 2)
						_, _ = io.WriteString(c, smuggled)
					}()
					return okAnswer("real")
				})
			})
			c := newTestH1(t, Options{})
			for i := range 3 {
				if got := mustGet(t, c, s.Addr(), "/", i); got != "real" {
					t.Fatalf("request %d got %q: bytes the endpoint sent unasked were read as its answer", i, got)
				}
				time.Sleep(tc.delay)
			}
			if n := s.Accepted(); n != 3 {
				t.Errorf("%d connections, want 3 (each one that carried unasked bytes is dropped)", n)
			}
		})
	}
}

func TestH1ClientLimitsAndTimeouts(t *testing.T) {
	t.Run("header too large", func(t *testing.T) {
		s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			readRequests(c, br, func(int, *http.Request) string {
				return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", maxResponseHeaderBytes+10) + "\r\n\r\n"
			})
		})
		c := newTestH1(t, Options{})
		_, err := h1Get(t, c, context.Background(), s.Addr(), "/")
		if !errors.Is(err, errResponseHeaderTooLarge) {
			t.Fatalf("error %v, want %v", err, errResponseHeaderTooLarge)
		}
	})
	t.Run("no response header in time", func(t *testing.T) {
		s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			_, _ = http.ReadRequest(br)
			_, _ = br.ReadByte() // until the client goes
		})
		c := newTestH1(t, Options{ResponseHeaderTimeout: 100 * time.Millisecond})
		start := time.Now()
		_, err := h1Get(t, c, context.Background(), s.Addr(), "/")
		if !isTimeout(err) {
			t.Fatalf("error %v, want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the timeout of 100ms took %v", d)
		}
		if n := s.Accepted(); n != 1 {
			t.Errorf("a timed-out request was sent %d times, want once", n)
		}
	})
	t.Run("context ends mid-body", func(t *testing.T) {
		s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			_, _ = http.ReadRequest(br)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
			_, _ = br.ReadByte()
		})
		c := newTestH1(t, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := h1Get(t, c, ctx, s.Addr(), "/")
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err = io.ReadAll(resp.Body)
		if err == nil {
			t.Fatal("reading a body whose request was cancelled succeeded")
		}
		_ = resp.Body.Close()
		if n := idleCount(c); n != 0 {
			t.Errorf("%d idle connections after a cancelled body, want 0", n)
		}
	})
	t.Run("body closed early", func(t *testing.T) {
		s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			readRequests(c, br, func(int, *http.Request) string { return okAnswer(strings.Repeat("x", 1000)) })
		})
		c := newTestH1(t, Options{})
		for range 2 {
			resp, err := h1Get(t, c, context.Background(), s.Addr(), "/")
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
		}
		if n := s.Accepted(); n != 2 {
			t.Errorf("%d connections, want 2: a connection whose body was not read to its end is not reused", n)
		}
	})
}

func TestH1ClientInformationalResponses(t *testing.T) {
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) string {
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + okAnswer("final")
		})
	})
	c := newTestH1(t, Options{})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, strconv.Itoa(code)+" "+h.Get("Link"))
		return nil
	}}
	resp, err := h1Get(t, c, httptrace.WithClientTrace(context.Background(), trace), s.Addr(), "/")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); resp.StatusCode != 200 || got != "final" {
		t.Fatalf("got %d %q, want 200 final", resp.StatusCode, got)
	}
	if len(hints) != 1 || hints[0] != "103 </a.css>; rel=preload" {
		t.Errorf("1xx responses passed on: %q", hints)
	}

	t.Run("unasked 101", func(t *testing.T) {
		s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
			readRequests(c, br, func(int, *http.Request) string {
				return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
			})
		})
		_, err := h1Get(t, newTestH1(t, Options{}), context.Background(), s.Addr(), "/")
		if !errors.Is(err, errUnexpectedSwitch) {
			t.Fatalf("error %v, want %v", err, errUnexpectedSwitch)
		}
	})
}

func TestH1ClientIdleTimeoutAndClose(t *testing.T) {
	closed := make(chan struct{}, 4)
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequests(c, br, func(int, *http.Request) string { return okAnswer("ok") })
		closed <- struct{}{}
	})
	c := newTestH1(t, Options{IdleConnTimeout: 100 * time.Millisecond})
	resp, err := h1Get(t, c, context.Background(), s.Addr(), "/")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := idleCount(c); n != 1 {
		t.Fatalf("%d idle connections after one request, want 1", n)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection was not closed after the idle timeout of 100ms")
	}
	if n := idleCount(c); n != 0 {
		t.Errorf("%d idle connections after the idle timeout, want 0", n)
	}

	resp, err = h1Get(t, c, context.Background(), s.Addr(), "/")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	c.close()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("close left an idle connection open")
	}
}

func TestEligibleRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(r *http.Request)
		want bool
	}{
		{"GET", func(*http.Request) {}, true},
		{"HEAD", func(r *http.Request) { r.Method = http.MethodHead }, true},
		{"POST", func(r *http.Request) { r.Method = http.MethodPost }, false},
		{"body", func(r *http.Request) { r.Body, r.ContentLength = io.NopCloser(strings.NewReader("x")), 1 }, false},
		{"upgrade", func(r *http.Request) { r.Header.Set("Upgrade", "websocket") }, false},
		{"connection", func(r *http.Request) { r.Header.Set("Connection", "keep-alive") }, false},
		{"close", func(r *http.Request) { r.Close = true }, false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		tc.mod(r)
		if got := eligible(r); got != tc.want {
			t.Errorf("%s: eligible %v, want %v", tc.name, got, tc.want)
		}
	}
}

func idleCount(c *h1Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nidle
}

// BenchmarkUpstreamGET compares the two ways an HTTP backend sends a GET with a 1 KiB answer to a plaintext
// endpoint on 127.0.0.1 over a kept-alive connection: h1Client on the caller's goroutine, and http.Transport. The
// figures include the endpoint's own work (an http.Server in this process). KEDGE_BENCH_API_HEADERS=1 makes the
// endpoint answer with eight more header fields, as an API does (a request ID, rate limits, caching, CORS), seven of
// them outside net/http's table of common names.
func BenchmarkUpstreamGET(b *testing.B) {
	body := strings.Repeat("x", 1024)
	apiHeaders := os.Getenv("KEDGE_BENCH_API_HEADERS") == "1"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if apiHeaders {
			h := w.Header()
			h["X-Request-Id"] = []string{"0123456789abcdef0123456789abcdef"}
			h["X-Ratelimit-Limit"] = []string{"1000"}
			h["X-Ratelimit-Remaining"] = []string{"999"}
			h["X-Ratelimit-Reset"] = []string{"1765000000"}
			h["Cache-Control"] = []string{"no-store"}
			h["Vary"] = []string{"Accept-Encoding"}
			h["Access-Control-Allow-Origin"] = []string{"*"}
			h["Strict-Transport-Security"] = []string{"max-age=31536000"}
		}
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	ep := srv.Listener.Addr().String()
	d := &net.Dialer{Timeout: time.Second}
	h1 := newH1Client(d.DialContext, Options{}.withDefaults())
	defer h1.close()
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8, DisableCompression: true}
	defer tr.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		rt   func(*http.Request) (*http.Response, error)
	}{
		{"h1client", func(r *http.Request) (*http.Response, error) { return h1.roundTrip(r, ep) }},
		{"transport", tr.RoundTrip},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req, err := http.NewRequest(http.MethodGet, "http://"+ep+"/api/items", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Host = "front.example"
			req.Header.Set("User-Agent", "bench")
			b.ReportAllocs()
			b.SetParallelism(8) // 16 requests in flight on 2 cores: the proxy under load, not a lone request
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 4096)
				for pb.Next() {
					resp, err := tc.rt(req)
					if err != nil {
						b.Error(err)
						return
					}
					n := 0
					for {
						m, err := resp.Body.Read(buf)
						n += m
						if err != nil {
							break
						}
					}
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK || n != len(body) {
						b.Errorf("status %d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}

// TestHTTPBackendClients sends requests through a plaintext backend: the bodiless GET through h1Client, the POST
// through http.Transport, over kept-alive connections each, and neither asks the endpoint for a content coding the
// client did not ask for.
func TestHTTPBackendClients(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Host+" "+r.URL.RequestURI()+" body="+string(b)+" ae="+r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		_, _ = io.WriteString(w, r.Method)
	}))
	var conns atomic.Int64
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	host, port := hostPort(t, s)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	if err := p.Update([]Spec{hostSpec("plain", host, port)}); err != nil {
		t.Fatal(err)
	}
	rt, ok := p.HTTP("plain")
	if !ok {
		t.Fatal("backend plain missing")
	}
	for i := range 3 {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("payload")
			}
			req, err := http.NewRequestWithContext(t.Context(), method, "http://ignored.example/a%2Fb?q=1", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "front.example"
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s %d: %v", method, i, err)
			}
			if got := readAll(t, resp); got != method {
				t.Fatalf("%s %d: body %q", method, i, got)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"GET front.example /a%2Fb?q=1 body= ae=", "POST front.example /a%2Fb?q=1 body=payload ae="}
	for i, got := range seen {
		if got != want[i%2] {
			t.Errorf("request %d: the endpoint saw %q, want %q", i, got, want[i%2])
		}
	}
	// One connection for the GETs (h1Client's) and one for the POSTs (the Transport's).
	if n := conns.Load(); n != 2 {
		t.Errorf("6 requests used %d connections, want 2", n)
	}
}

// heldServer answers one request with head (a status line, headers and the start of a body) and then holds the
// connection open, sending nothing more, until the test ends.
func heldServer(t *testing.T, head string) *sharedtest.RawServer {
	t.Helper()
	release := make(chan struct{})
	s := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		_, _ = io.WriteString(c, head)
		<-release
	})
	t.Cleanup(func() { close(release) }) // before the server's own cleanup, which waits for this handler
	return s
}

// within reports whether f returned within 2 seconds, and fails the test if it did not (f then ends when the test's
// servers close).
func within(t *testing.T, what string, f func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return true
	case <-time.After(2 * time.Second):
		t.Errorf("%s: still blocked after 2s", what)
		return false
	}
}

func TestH1ClientEarlyCloseDoesNotDrain(t *testing.T) {
	// ReverseProxy closes a body it stops copying (a client write that failed) without the request's context
	// ending; the rest of a large download or a stream must not be read from the backend first.
	s := heldServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\nhello")
	c := newTestH1(t, Options{})
	resp, err := h1Get(t, c, context.Background(), s.Addr(), "/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	within(t, "closing a body before its end", func() { _ = resp.Body.Close() })
}

func TestH1ClientCancelBetweenHeaderAndBody(t *testing.T) {
	// The request's context ends while the answer's header is being read (here: when the 103 arrives); the
	// header deadline set and cleared after that must not undo the cancellation.
	s := heldServer(t, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"+
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	c := newTestH1(t, Options{ResponseHeaderTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			cancel()
			time.Sleep(50 * time.Millisecond) // the cancellation has done its work before the header is read on
			return nil
		},
	})
	resp, err := h1Get(t, c, ctx, s.Addr(), "/")
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		return
	}
	if within(t, "reading the body of a cancelled request", func() {
		if _, err := io.ReadAll(resp.Body); !errors.Is(err, context.Canceled) {
			t.Errorf("body read error %v, want context.Canceled", err)
		}
	}) {
		_ = resp.Body.Close()
	}
}
