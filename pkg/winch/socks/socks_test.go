package socks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"golang.org/x/net/proxy"

	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// socksEnv is a SOCKS server in front of a real httpforward.Handler (the tunnel code winch uses), on a loopback
// port.
type socksEnv struct {
	addr   string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

type socksSetup struct {
	unmatched httpforward.Unmatched
	routes    []mapper.Route
	handshake time.Duration
	drain     time.Duration
}

func startSOCKS(t *testing.T, s socksSetup) *socksEnv {
	t.Helper()
	reg := prometheus.NewRegistry()
	h := httpforward.New(httpforward.Deps{
		Registerer: reg,
		Routes:     mapper.New(s.routes),
		Options:    httpforward.Options{Unmatched: s.unmatched, DialTimeout: 2 * time.Second},
	})
	srv := New(Deps{Tunnels: h, Registerer: reg, HandshakeTimeout: s.handshake})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &socksEnv{addr: ln.Addr().String(), reg: reg, cancel: cancel, done: make(chan error, 1)}
	drain := s.drain
	if drain == 0 {
		drain = 5 * time.Second
	}
	go func() { e.done <- srv.Serve(ctx, ln, drain) }()
	t.Cleanup(func() {
		if err := e.stop(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
		h.Close()
	})
	return e
}

// stop cancels Serve's context and returns what it returned (nil if stopped before).
func (e *socksEnv) stop(t *testing.T) error {
	e.cancel()
	select {
	case err, ok := <-e.done:
		if ok {
			close(e.done)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of the cancel")
		return nil
	}
}

// echoServer accepts TCP connections on loopback and echoes what they send.
func echoServer(t *testing.T) string { return echoServerOn(t, "127.0.0.1:0") }

// echoServerOn is echoServer on the address addr.
func echoServerOn(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestConnectWithXNetProxyClient opens tunnels to an IPv4 and an IPv6 address (x/net/proxy sends them as such),
// which --unmatched=direct sends directly, and checks the bytes and the metrics.
func TestConnectWithXNetProxyClient(t *testing.T) {
	t.Parallel()
	e := startSOCKS(t, socksSetup{unmatched: httpforward.UnmatchedDirect})
	d, err := proxy.SOCKS5("tcp", e.addr, nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	for i, echo := range []string{echoServerOn(t, "127.0.0.1:0"), echoServerOn(t, "[::1]:0")} {
		conn, err := d.(proxy.ContextDialer).DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatalf("dial %s through SOCKS: %v", echo, err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		msg := bytes.Repeat([]byte("ping "), 10000)
		go func() { _, _ = conn.Write(msg) }()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo through the tunnel to %s: %v", echo, err)
		}
		_ = conn.Close()
		for name, labels := range map[string]map[string]string{
			"winch_http_requests_total": {"proxy": "socks", "destination": "direct"},
			"winch_socks_replies_total": {"reply": "succeeded"},
		} {
			if v := testutil.MetricValue(t, e.reg, name, labels); v != float64(i+1) {
				t.Errorf("%s%v = %v, want %d", name, labels, v, i+1)
			}
		}
	}
}

func TestReplies(t *testing.T) {
	t.Parallel()
	direct := startSOCKS(t, socksSetup{unmatched: httpforward.UnmatchedDirect, routes: []mapper.Route{
		{Direct: "mitm.example.com:443", URL: "https://kedge.example.com", MITM: true},
	}})
	reject := startSOCKS(t, socksSetup{unmatched: httpforward.UnmatchedReject})
	greet := []byte{5, 1, 0}
	tests := []struct {
		name  string
		env   *socksEnv
		send  []byte
		want  []byte // the whole answer, up to the server's close
		label string // winch_socks_replies_total's reply label counted
	}{
		{"no acceptable method", direct, []byte{5, 2, 1, 2}, []byte{5, 0xFF}, "no-acceptable-method"},
		{"no methods", direct, []byte{5, 0}, []byte{5, 0xFF}, "no-acceptable-method"},
		{"BIND", direct, append(greet, connectRequest(cmdBind, "a.example.com", 443)...),
			[]byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}, "command-not-supported"},
		{"UDP ASSOCIATE", direct, append(greet, connectRequest(cmdUDPAssociate, "0.0.0.0", 1)...),
			[]byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}, "command-not-supported"},
		{"unknown address type", direct, append(greet, 5, 1, 0, 7, 1, 2, 3, 4, 0, 80),
			[]byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}, "address-type-not-supported"},
		{"malformed name", direct, append(greet, connectRequest(cmdConnect, "a.example.com:22", 443)...),
			[]byte{5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0}, "general-failure"},
		{"unmapped name, --unmatched=reject", reject, append(greet, connectRequest(cmdConnect, "unmapped.example.com", 443)...),
			[]byte{5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0}, "not-allowed"},
		{"IP address, --unmatched=reject", reject, append(greet, connectRequest(cmdConnect, "127.0.0.1", 443)...),
			[]byte{5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0}, "not-allowed"},
		{"MITM route", direct, append(greet, connectRequest(cmdConnect, "mitm.example.com", 443)...),
			[]byte{5, 0, 5, 2, 0, 1, 0, 0, 0, 0, 0, 0}, "not-allowed"},
		{"SOCKS4 client", direct, []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := 0.0
			if tc.label != "" {
				before = testutil.MetricValue(t, tc.env.reg, "winch_socks_replies_total", map[string]string{"reply": tc.label})
			}
			got := exchange(t, tc.env.addr, tc.send)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("answer %v, want %v", got, tc.want)
			}
			if tc.label != "" {
				if v := testutil.MetricValue(t, tc.env.reg, "winch_socks_replies_total", map[string]string{"reply": tc.label}); v != before+1 {
					t.Errorf("winch_socks_replies_total{reply=%q} = %v, want %v", tc.label, v, before+1)
				}
			}
		})
	}

	t.Run("direct destination that refuses", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(closedPort(t))
		var p [2]byte
		n, _ := net.LookupPort("tcp", port)
		p[0], p[1] = byte(n>>8), byte(n)
		req := append(connectRequest(cmdConnect, host, 0)[:8], p[:]...)
		got := exchange(t, direct.addr, append(greet, req...))
		if want := []byte{5, 0, 5, 1, 0, 1, 0, 0, 0, 0, 0, 0}; !bytes.Equal(got, want) {
			t.Errorf("answer %v, want %v (general failure: winch's own direct dial failed)", got, want)
		}
	})
}

// exchange sends b to a SOCKS server and returns everything it answers until it closes the connection.
func exchange(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the answer: %v (got %v)", err, got)
	}
	return got
}

func TestHandshakeDeadline(t *testing.T) {
	t.Parallel()
	e := startSOCKS(t, socksSetup{handshake: 200 * time.Millisecond})
	tests := []struct {
		name string
		send []byte
		want []byte
	}{
		{"silent client", nil, nil},
		{"greeting cut short", []byte{5, 3, 0}, nil},
		{"request cut short", []byte{5, 1, 0, 5, 1, 0, 3, 20, 'a'}, []byte{5, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got := exchange(t, e.addr, tc.send)
			if !bytes.Equal(got, tc.want) {
				t.Errorf("answer %v, want %v", got, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("closed after %v, want about the 200ms handshake deadline", d)
			}
		})
	}
}

func TestServeDrains(t *testing.T) {
	t.Parallel()
	echo := echoServer(t)

	t.Run("an open tunnel is closed at the drain deadline", func(t *testing.T) {
		e := startSOCKS(t, socksSetup{unmatched: httpforward.UnmatchedDirect, drain: 300 * time.Millisecond})
		d, _ := proxy.SOCKS5("tcp", e.addr, nil, proxy.Direct)
		conn, err := d.(proxy.ContextDialer).DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if err := e.stop(t); !errors.Is(err, serve.ErrDrainTimeout) {
			t.Errorf("Serve = %v, want the drain timeout", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Errorf("Serve returned after %v, before the drain deadline", d)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("read on the cut tunnel: %v, want EOF", err)
		}
		if _, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
			t.Error("the listener still accepts after Serve returned")
		}
	})

	t.Run("a tunnel that ends in time lets Serve return cleanly", func(t *testing.T) {
		e := startSOCKS(t, socksSetup{unmatched: httpforward.UnmatchedDirect, drain: 5 * time.Second})
		d, _ := proxy.SOCKS5("tcp", e.addr, nil, proxy.Direct)
		conn, err := d.(proxy.ContextDialer).DialContext(t.Context(), "tcp", echo)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(100*time.Millisecond, func() { _ = conn.Close() })
		if err := e.stop(t); err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	})
}
