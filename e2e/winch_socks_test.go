package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// socksDirector: CONNECT routes only, as SOCKS5 clients open tunnels. grpc-tunnel.example.com:443 reaches a
// plaintext gRPC backend through the tunnel.
const socksDirector = `{
  "http": {"routes": [
    {"backend_name": "tunnel_echo", "host_matcher": "secure.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "tunnel_echo", "host_matcher": "wrong.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "greeter", "host_matcher": "grpc-tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "closed", "host_matcher": "closed.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
  ]}
}`

const socksPool = `{
  "http": {"backends": [
    {"name": "tunnel_echo", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "closed", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]}
}`

// socksMapper: %[1]q is kedge's HTTPS URL. Names no route maps are refused (--unmatched=reject).
const socksMapper = `{"routes": [
  {"regexp": {"exp": "^(secure|grpc-tunnel|nowhere|closed)[.]example[.]com:443$", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "wrong.example.com:443", "url": %[1]q}, "proxy_auth": "wrong-proxy", "protocol": "ANY"}
]}`

// TestWinchSOCKS runs curl and a Go gRPC client through winch's SOCKS5 port to kedge CONNECT routes.
func TestWinchSOCKS(t *testing.T) {
	ca := testutil.NewCA(t)
	tlsEcho := testutil.NewEchoServer(t, testutil.EchoName("tls-echo"), testutil.EchoTLS(ca.Server(t, "secure.example.com")))
	tlsCAFile := ca.WriteFiles(t, t.TempDir())
	greeter := testutil.NewGRPCBackend(t, "greeter")
	closed := freePorts(t, 1)[0] // nothing listens there
	k := startKedge(t, socksDirector, fmt.Sprintf(socksPool, tlsEcho.Port(), grpcPort(greeter), closed),
		"--unsafe_bearer_token_proxy_auth="+pathProxyToken)
	socksAddr := "127.0.0.1:" + itoa(freePorts(t, 1)[0])
	w := startWinch(t, fmt.Sprintf(socksMapper, kedgeURL(k)), pathAuth, "--client_tls_root_ca_files="+k.caFile,
		"--unmatched=reject", "--server_socks_port="+socksAddr[strings.LastIndexByte(socksAddr, ':')+1:])

	t.Run("curl --socks5-hostname: TLS end to end through a kedge CONNECT route", func(t *testing.T) {
		hits := tlsEcho.Hits()
		out, err := runClient(t, clientEnv(), "curl", "--silent", "--show-error", "--max-time", "20",
			"--socks5-hostname", socksAddr, "--cacert", tlsCAFile, "https://secure.example.com/inside?z=2")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		var e testutil.EchoResponse
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatalf("not the echo backend's answer: %v\n%s", err, out)
		}
		if !e.TLS || e.Backend != "tls-echo" || e.Host != "secure.example.com" || e.Path != "/inside" {
			t.Errorf("backend saw TLS %v backend %q host %q path %q", e.TLS, e.Backend, e.Host, e.Path)
		}
		for _, h := range []string{"Proxy-Authorization", "X-Kedge-Request-Id", "X-Forwarded-For"} {
			if got := e.Header.Get(h); got != "" {
				t.Errorf("backend saw %s %q inside the tunnel", h, got)
			}
		}
		if tlsEcho.Hits() != hits+1 {
			t.Errorf("backend hits %d, want %d", tlsEcho.Hits(), hits+1)
		}
		// The tunnel went through kedge: its audit line names the destination and the static token's identity.
		k.proc.waitOutput(t, `msg="connect tunnel"`, "secure.example.com:443", "identity=static-token")
	})

	t.Run("gRPC over a SOCKS5 dialer to a mapped gRPC service", func(t *testing.T) {
		d, err := proxy.SOCKS5("tcp", socksAddr, nil, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		cd := d.(proxy.ContextDialer)
		cc, err := grpc.NewClient("passthrough:///grpc-tunnel.example.com:443",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return cd.DialContext(ctx, "tcp", addr) // the name goes to winch unresolved
			}))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		calls := greeter.Calls()
		client := testpb.NewTestServiceClient(cc)
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 64})
		if err != nil {
			t.Fatalf("UnaryCall through SOCKS5: %v", err)
		}
		if resp.GetServerId() != "greeter" || len(resp.GetPayload().GetBody()) != 64 {
			t.Errorf("answer from %q with %d bytes, want greeter's 64", resp.GetServerId(), len(resp.GetPayload().GetBody()))
		}
		if greeter.Calls() != calls+1 {
			t.Errorf("backend calls %d, want %d", greeter.Calls(), calls+1)
		}
	})

	t.Run("refusals get their SOCKS5 reply codes", func(t *testing.T) {
		tests := []struct {
			name string
			host string
			want byte
		}{
			{"unmapped name, --unmatched=reject", "unmapped.example.com", 0x02},
			{"kedge refuses the proxy token (401)", "wrong.example.com", 0x02},
			{"kedge has no route (502 no-route)", "nowhere.example.com", 0x04},
			{"kedge cannot reach the backend (502 tunnel-dial-error)", "closed.example.com", 0x05},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if got := socksReply(t, socksAddr, tc.host, 443); got != tc.want {
					t.Errorf("reply %#x, want %#x", got, tc.want)
				}
			})
		}
		out, err := runClient(t, clientEnv(), "curl", "--silent", "--show-error", "--max-time", "20",
			"--socks5-hostname", socksAddr, "https://unmapped.example.com/")
		if err == nil || !strings.Contains(out, "unmapped.example.com") {
			t.Errorf("curl to an unmapped name: %v\n%s", err, out)
		}
		w.proc.waitOutput(t, "not-a-kedge-destination", "unmapped.example.com:443")
	})

	t.Run("metrics count SOCKS tunnels like CONNECT ones", func(t *testing.T) {
		out, err := runClient(t, clientEnv(), "curl", "--silent", "--show-error", "--max-time", "20", w.proxyURL+"/metrics")
		if err != nil {
			t.Fatalf("curl /metrics: %v\n%s", err, out)
		}
		for _, want := range []string{
			`winch_http_requests_total{destination="kedge",proxy="socks"}`,
			`winch_http_requests_total{destination="refused",proxy="socks"}`,
			`winch_socks_replies_total{reply="succeeded"}`,
			`winch_socks_replies_total{reply="not-allowed"}`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// socksReply opens a SOCKS5 CONNECT to host:port (sent as a name) and returns the server's reply code.
func socksReply(t *testing.T, addr, host string, port uint16) byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	req := append([]byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var answer [2 + 10]byte // method selection, then a reply with an IPv4 bound address
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		t.Fatalf("reading the SOCKS5 answer: %v (%v)", err, answer)
	}
	if answer[0] != 5 || answer[1] != 0 || answer[2] != 5 {
		t.Fatalf("SOCKS5 answer %v", answer)
	}
	return answer[3]
}

// TestWinchSOCKSLoopbackOnly checks that winch refuses to start with a SOCKS5 port on a non-loopback address.
func TestWinchSOCKSLoopbackOnly(t *testing.T) {
	_, stderr, code := winchRun(t, "--server_bind_address=0.0.0.0", "--server_socks_port=1080",
		"--server_mapper_config", `{"routes": [{"direct": {"key": "a.example.com", "url": "https://kedge.example.com"}}]}`)
	if code != 2 || !strings.Contains(stderr, "--server_socks_port: winch serves SOCKS5 on loopback only") {
		t.Errorf("exit %d, stderr %q; want exit 2 with the loopback-only error", code, stderr)
	}
}
