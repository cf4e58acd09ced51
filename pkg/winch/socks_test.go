package winch_test

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/kedge-proxy/kedge/pkg/winch"
)

func TestSOCKSPortBindsLoopbackOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		bind string
		ok   bool
	}{
		{"127.0.0.1", true},
		{"::1", true},
		{"localhost", true},
		{"127.0.0.2", true},
		{"0.0.0.0", false},
		{"::", false},
		{"192.0.2.10", false},
	}
	for _, tc := range tests {
		t.Run(tc.bind, func(t *testing.T) {
			t.Parallel()
			cfg := winch.Config{BindAddress: tc.bind, HTTPPort: 8070, SOCKSPort: 1080, MetricsPath: "/metrics",
				Unmatched: "direct", LogLevel: "info"}
			err := cfg.Validate()
			if tc.ok && err != nil {
				t.Errorf("Validate: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "--server_socks_port: winch serves SOCKS5 on loopback only")) {
				t.Errorf("Validate: %v, want the loopback-only error", err)
			}
		})
	}
	same := winch.Config{BindAddress: "127.0.0.1", HTTPPort: 8070, SOCKSPort: 8070, MetricsPath: "/metrics", Unmatched: "direct", LogLevel: "info"}
	if err := same.Validate(); err == nil || !strings.Contains(err.Error(), "--server_socks_port 8070 is also") {
		t.Errorf("Validate with the HTTP port as SOCKS port: %v", err)
	}
}

func TestSOCKSPortServesTunnels(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	socksPort, _ := strconv.Atoi(portOf(ln.Addr().String()))
	_ = ln.Close()
	e := startEnv(t, func(c *winch.Config) { c.SOCKSPort = socksPort })
	if got, want := e.w.SOCKSAddr(), "127.0.0.1:"+strconv.Itoa(socksPort); got != want {
		t.Fatalf("SOCKSAddr = %q, want %q", got, want)
	}
	// An IP address is unmatched and goes direct (--unmatched=direct): here, to winch's own HTTP port.
	d, err := proxy.SOCKS5("tcp", e.w.SOCKSAddr(), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := d.(proxy.ContextDialer).DialContext(t.Context(), "tcp", e.addr)
	if err != nil {
		t.Fatalf("dial through SOCKS: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("GET /_healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading through the tunnel: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/_healthz through SOCKS: %s", resp.Status)
	}
	resp, body := e.get(t, e.local, "http://"+e.addr+"/metrics", "localhost")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `winch_http_requests_total{destination="direct",proxy="socks"} 1`) ||
		!strings.Contains(body, `winch_socks_replies_total{reply="succeeded"} 1`) {
		t.Errorf("metrics lack the SOCKS tunnel:\n%s", grepLines(body, "socks"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
