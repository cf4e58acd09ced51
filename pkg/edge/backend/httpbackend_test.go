package backend

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestRoundRobinOrder(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	var addrs []string
	byAddr := map[string]string{}
	for _, name := range []string{"a", "b", "c"} {
		s := namedServer(t, name, nil)
		addrs = append(addrs, s.Listener.Addr().String())
		byAddr[s.Listener.Addr().String()] = name
	}
	dns.SetSRV("_http._tcp.rr.test", srvOf(t, dns, "rr", addrs...)...)
	p, _ := newTestPool(t, dns, Options{})
	if err := p.Update([]Spec{srvSpec("rr", HTTP, "_http._tcp.rr.test")}); err != nil {
		t.Fatal(err)
	}
	rt, ok := p.HTTP("rr")
	if !ok {
		t.Fatal("backend rr missing")
	}
	sorted := slices.Sorted(slices.Values(addrs))
	for i := range 7 {
		ctx, rec := WithEndpointRecorder(t.Context())
		resp, err := get(t, rt, ctx)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_ = resp.Body.Close()
		want := sorted[i%3]
		if rec.Addr != want {
			t.Errorf("request %d: endpoint %s, want %s", i, rec.Addr, want)
		}
		if got := resp.Header.Get("X-Server"); got != byAddr[want] {
			t.Errorf("request %d: served by %q, want %q", i, got, byAddr[want])
		}
		if got := resp.Header.Get("X-Host"); got != "front.example" {
			t.Errorf("request %d: backend saw Host %q, want the request's Host", i, got)
		}
	}
}

func TestRefusingEndpointIsEjectedAndRetried(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	var bodies atomic.Int64
	good := serve(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) == "payload" {
			bodies.Add(1)
		}
	})
	bad := refusedAddr(t)
	dns.SetSRV("_http._tcp.ej.test", srvOf(t, dns, "ej", good.Listener.Addr().String(), bad)...)
	p, _ := newTestPool(t, dns, Options{EjectionBackoff: time.Minute})
	if err := p.Update([]Spec{srvSpec("ej", HTTP, "_http._tcp.ej.test")}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("ej")
	for i := range 4 {
		// Like a server request body: unreadable once closed, and not rewindable (no GetBody).
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://x/", &serverBody{r: strings.NewReader("payload")})
		req.ContentLength = int64(len("payload"))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_ = resp.Body.Close()
	}
	if got := bodies.Load(); got != 4 {
		t.Errorf("backend received %d intact bodies, want 4", got)
	}
	st := p.Snapshot()
	if len(st) != 1 || !slices.Equal(st[0].Ejected, []string{bad}) {
		t.Errorf("snapshot = %+v, want %s ejected", st, bad)
	}
	if got := testutil.ToFloat64(p.metrics.ejections.WithLabelValues("ej")); got != 1 {
		t.Errorf("ejections = %v, want 1 (ejected once, then skipped)", got)
	}
	if got := testutil.ToFloat64(p.metrics.dialFailures.WithLabelValues("ej", bad)); got != 1 {
		t.Errorf("dial failures of %s = %v, want 1", bad, got)
	}
}

func TestRoundTripErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(t *testing.T, dns *sharedtest.Resolver) Spec
		wantType wire.ErrorType
		wantMsg  string
	}{{
		name: "all endpoints refuse",
		setup: func(t *testing.T, dns *sharedtest.Resolver) Spec {
			a, b := refusedAddr(t), refusedAddr(t)
			dns.SetSRV("_x._tcp.dead.test", srvOf(t, dns, "dead", a, b)...)
			return srvSpec("dead", HTTP, "_x._tcp.dead.test")
		},
		wantType: wire.ErrNoConnection,
		wantMsg:  "127.0.0.1:",
	}, {
		name: "nothing resolves",
		setup: func(t *testing.T, dns *sharedtest.Resolver) Spec {
			dns.Fail("gone.test", errors.New("SERVFAIL"))
			return hostSpec("gone", "gone.test", 80)
		},
		wantType: wire.ErrNoResolution,
		wantMsg:  `no resolved endpoints for backend "gone"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dns := sharedtest.NewResolver(nil)
			p, _ := newTestPool(t, dns, Options{})
			if err := p.Update([]Spec{tt.setup(t, dns)}); err != nil {
				t.Fatal(err)
			}
			rt, _ := p.HTTP(p.Snapshot()[0].Name)
			// Twice: the second request finds every endpoint already ejected.
			for i := range 2 {
				_, err := get(t, rt, t.Context())
				if got := errType(err); got != string(tt.wantType) {
					t.Fatalf("request %d: error %v (type %q), want type %q", i, err, got, tt.wantType)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) || strings.Contains(err.Error(), "0xc") {
					t.Errorf("request %d: message %q, want it to contain %q and no pointers", i, err, tt.wantMsg)
				}
			}
		})
	}
}

// resetServer answers the first bytes of a response, then resets the connection.
func resetServer(t *testing.T, accepted *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
			_ = c.(*net.TCPConn).SetLinger(0)
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestResetMidResponseIsNotRetried(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	var accepted, goodHits atomic.Int64
	reset := resetServer(t, &accepted)
	good := namedServer(t, "good", &goodHits)
	dns.SetSRV("_x._tcp.rst.test", srvOf(t, dns, "rst", reset, good.Listener.Addr().String())...)
	p, _ := newTestPool(t, dns, Options{})
	if err := p.Update([]Spec{srvSpec("rst", HTTP, "_x._tcp.rst.test")}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("rst")
	var failures int
	for range 2 {
		resp, err := get(t, rt, t.Context())
		if err != nil {
			failures++
			if got := errType(err); got != string(wire.ErrTransportUnknown) {
				t.Errorf("error %v has type %q, want %q", err, got, wire.ErrTransportUnknown)
			}
			continue
		}
		_ = resp.Body.Close()
	}
	if failures != 1 || goodHits.Load() != 1 || accepted.Load() != 1 {
		t.Errorf("failures=%d good hits=%d reset accepts=%d, want 1 each (no retry after bytes were sent)",
			failures, goodHits.Load(), accepted.Load())
	}
}

func TestSlowEndpointHonoursDeadline(t *testing.T) {
	t.Parallel()
	slow := serve(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	host, port := hostPort(t, slow)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	if err := p.Update([]Spec{hostSpec("slow", host, port)}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("slow")
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := get(t, rt, ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("request took %v after a 200ms deadline", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || errType(err) != string(wire.ErrBackendTimeout) {
		t.Errorf("error %v (type %q), want DeadlineExceeded of type %q", err, errType(err), wire.ErrBackendTimeout)
	}
}

func TestUpgradeThroughTransport(t *testing.T) {
	t.Parallel()
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		line, _ := brw.ReadString('\n')
		_, _ = io.WriteString(c, line)
	})
	host, port := hostPort(t, srv)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	if err := p.Update([]Spec{hostSpec("ws", host, port)}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("ws")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://x/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	if _, err := io.WriteString(rw, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(rw).ReadString('\n')
	if err != nil || got != "hello\n" {
		t.Errorf("echo = %q, %v; want hello", got, err)
	}
}

func TestPoolDial(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bad := refusedAddr(t)
	dns.SetSRV("_x._tcp.tun.test", srvOf(t, dns, "tun", ln.Addr().String(), bad)...)
	p, _ := newTestPool(t, dns, Options{})
	if err := p.Update([]Spec{srvSpec("tun", HTTP, "_x._tcp.tun.test")}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // one of the first two picks is the refusing endpoint
		ctx, rec := WithEndpointRecorder(t.Context())
		c, err := p.Dial(ctx, "tun")
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		_ = c.Close()
		if rec.Addr != ln.Addr().String() {
			t.Errorf("dial %d: endpoint %s, want %s", i, rec.Addr, ln.Addr())
		}
	}
	if _, err := p.Dial(t.Context(), "nope"); errType(err) != string(wire.ErrNoBackend) {
		t.Errorf("dial of unknown backend: %v, want type %q", err, wire.ErrNoBackend)
	}
}

func TestAttemptBodyClose(t *testing.T) {
	t.Parallel()
	var closed atomic.Int64
	rb := newRetryBody(closeCounter{Reader: strings.NewReader("x"), n: &closed})
	a1 := rb.attempt()
	_ = a1.Close() // the transport closes the body of a failed dial
	if closed.Load() != 0 || rb.wasRead() {
		t.Fatalf("abandoned attempt closed (%d) or read (%v) the real body", closed.Load(), rb.wasRead())
	}
	a2 := rb.attempt()
	_, _ = io.ReadAll(a2)
	a2.commit()
	if closed.Load() != 0 || !rb.wasRead() {
		t.Fatalf("committed attempt: closed=%d read=%v, want 0 and true", closed.Load(), rb.wasRead())
	}
	_ = a2.Close()
	rb.close()
	if closed.Load() != 1 {
		t.Fatalf("real body closed %d times, want once", closed.Load())
	}
	if newRetryBody(nil) != nil || newRetryBody(http.NoBody) != nil {
		t.Error("a request without a body needs no retryBody")
	}
}

type closeCounter struct {
	io.Reader
	n *atomic.Int64
}

func (c closeCounter) Close() error { c.n.Add(1); return nil }

// serverBody fails reads after Close, as http.Server request bodies do.
type serverBody struct {
	r      io.Reader
	closed atomic.Bool
}

func (b *serverBody) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, errors.New("read after close")
	}
	return b.r.Read(p)
}

func (b *serverBody) Close() error { b.closed.Store(true); return nil }

// TestTunnelConnsDrain checks that a tunnel connection (Pool.Dial) ends with its backend: when a reload removes the
// backend (say, because the route that allowed the tunnel is gone), the connection is closed once the drain bound
// passes, like requests and WebSockets, instead of living on as long as it carries bytes. Half-close keeps working.
func TestTunnelConnsDrain(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	host, portStr, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{DrainTimeout: 200 * time.Millisecond})
	if err := p.Update([]Spec{hostSpec("tun", host, mustAtoi(t, portStr))}); err != nil {
		t.Fatal(err)
	}
	c, err := p.Dial(t.Context(), "tun")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var srv net.Conn
	select {
	case srv = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("backend accepted no connection")
	}
	defer srv.Close()

	// Half-close reaches the backend as EOF, and the other direction still works.
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("tunnel connection %T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = srv.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := srv.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("backend read after half-close: %d, %v; want EOF", n, err)
	}
	if _, err := srv.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("reading the backend's byte after half-close: %v", err)
	}

	if err := p.Update(nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("tunnel connection to a removed backend: read %v, want it closed by the drain", err)
	}
}
