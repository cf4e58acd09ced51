package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// The user's path: laptop client -> winch -> kedge -> backend, with real curl, kubectl and Go clients.

const (
	pathProxyToken   = "e2e-proxy-token"
	pathBackendToken = "e2e-backend-token"
	pathKubeToken    = "kubectl-e2e-token"
)

// pathDirector: plain HTTP destinations arrive through winch with X-Forwarded-Proto: http, so a port-less Host is
// port 80; HTTPS destinations arrive as CONNECT tunnels.
const pathDirector = `{
  "http": {"routes": [
    {"backend_name": "plain", "host_matcher": "hello.example.com", "port_matcher": 80},
    {"backend_name": "plain", "host_matcher": "wrong.example.com", "port_matcher": 80},
    {"backend_name": "tunnel_echo", "host_matcher": "secure.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "tunnel_echo", "host_matcher": "wrong.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"},
    {"backend_name": "kube", "host_matcher": "kube.demo.kedge.local", "port_matcher": 443, "proxy_mode": "CONNECT"}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}
  ]}
}`

// pathPool: CONNECT backends are plain TCP endpoints; the TLS inside the tunnel is the client's.
const pathPool = `{
  "http": {"backends": [
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "tunnel_echo", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "kube", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [
    {"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]}
}`

// pathMapper: %[1]q is kedge's HTTPS URL, %[2]q its gRPC URL.
const pathMapper = `{"routes": [
  {"direct": {"key": "hello.example.com", "url": %[1]q}, "proxy_auth": "proxy", "backend_auth": "backend", "protocol": "HTTP"},
  {"direct": {"key": "wrong.example.com", "url": %[1]q}, "proxy_auth": "wrong-proxy", "protocol": "HTTP"},
  {"direct": {"key": "wrong.example.com:443", "url": %[1]q}, "proxy_auth": "wrong-proxy", "protocol": "HTTP"},
  {"direct": {"key": "nowhere.example.com:443", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"regexp": {"exp": "^(secure[.]example[.]com|kube[.]demo[.]kedge[.]local):443$", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "greeter.example.com:443", "url": %[2]q}, "proxy_auth": "proxy", "backend_auth": "backend", "protocol": "GRPC"},
  {"direct": {"key": "greeter-on-https.example.com:443", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "GRPC"}
]}`

const pathAuth = `{"auth_sources": [
  {"name": "proxy", "token": {"token": "` + pathProxyToken + `"}},
  {"name": "wrong-proxy", "token": {"token": "not-the-proxy-token"}},
  {"name": "backend", "token": {"token": "` + pathBackendToken + `"}}
]}`

// pathEnv is kedge (static proxy token), winch and the backends of TestWinchThroughKedge.
type pathEnv struct {
	kedge     *kedgeEnv
	winch     *winchEnv
	plain     *testutil.EchoServer
	tlsEcho   *testutil.EchoServer
	tlsCA     *testutil.CA
	tlsCAFile string
	greeter   *testutil.GRPCBackend
	kube      *fakeAPIServer
}

func startPath(t *testing.T) *pathEnv {
	t.Helper()
	ca := testutil.NewCA(t)
	p := &pathEnv{
		plain:     testutil.NewEchoServer(t, testutil.EchoName("plain")),
		tlsEcho:   testutil.NewEchoServer(t, testutil.EchoName("tls-echo"), testutil.EchoTLS(ca.Server(t, "secure.example.com"))),
		tlsCA:     ca,
		tlsCAFile: ca.WriteFiles(t, t.TempDir()),
		greeter:   testutil.NewGRPCBackend(t, "greeter"),
		kube:      newFakeAPIServer(t, "kube.demo.kedge.local"),
	}
	p.kedge = startKedge(t, pathDirector,
		fmt.Sprintf(pathPool, p.plain.Port(), p.tlsEcho.Port(), p.kube.port(), grpcPort(p.greeter)),
		"--unsafe_bearer_token_proxy_auth="+pathProxyToken)
	p.winch = startWinch(t, fmt.Sprintf(pathMapper, kedgeURL(p.kedge), kedgeGRPCURL(p.kedge)), pathAuth,
		"--client_tls_root_ca_files="+p.kedge.caFile)
	return p
}

func TestWinchThroughKedge(t *testing.T) {
	p := startPath(t)

	t.Run("HTTP_PROXY: curl to an HTTP backend with backend auth injected and proxy auth checked by kedge", func(t *testing.T) {
		out, err := p.winch.curlVia(t, "-i", "-H", "Authorization: Bearer from-curl", "http://hello.example.com/some/path?q=1")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		r := parseCurl(t, out)
		if r.status != http.StatusOK || r.header.Get("X-Kedge-Backend-Name") != "plain" {
			t.Fatalf("want 200 from backend plain:\n%s", out)
		}
		if id := r.header.Get("X-Kedge-Request-Id"); !strings.HasPrefix(id, "winch-") {
			t.Errorf("X-Kedge-Request-Id %q does not come from winch", id)
		}
		e := r.echo(t)
		if got := e.Header.Get("Authorization"); got != "Bearer "+pathBackendToken {
			t.Errorf("backend saw Authorization %q, want winch's backend token (replacing the client's)", got)
		}
		if got := e.Header.Get("Proxy-Authorization"); got != "" {
			t.Errorf("backend saw Proxy-Authorization %q; kedge must remove it", got)
		}
		if e.Host != "hello.example.com" || e.Path != "/some/path" || e.Query != "q=1" {
			t.Errorf("backend saw Host %q path %q query %q", e.Host, e.Path, e.Query)
		}
	})

	t.Run("HTTP_PROXY: a wrong proxy token gets kedge's 401, passed through", func(t *testing.T) {
		hits := p.plain.Hits()
		out, err := p.winch.curlVia(t, "-i", "http://wrong.example.com/")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		r := parseCurl(t, out)
		if r.status != http.StatusUnauthorized || r.header.Get("X-Kedge-Error-Type") != "unauthorized" || r.header.Get("X-Kedge-Error") == "" {
			t.Errorf("want 401 with X-Kedge-Error-Type unauthorized:\n%s", out)
		}
		if r.header.Get("X-Winch-Error") != "" {
			t.Errorf("kedge's refusal must pass through unchanged, not as a winch error:\n%s", out)
		}
		if p.plain.Hits() != hits {
			t.Errorf("the backend was reached with a wrong proxy token")
		}
	})

	t.Run("HTTPS_PROXY: curl through a CONNECT tunnel, TLS end to end", func(t *testing.T) {
		out, err := p.winch.curlVia(t, "-i", "--cacert", p.tlsCAFile, "-H", "Authorization: Bearer client-own-token",
			"https://secure.example.com/inside?z=2")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		r := parseCurl(t, out)
		if r.status != http.StatusOK {
			t.Fatalf("want 200:\n%s", out)
		}
		if r.header.Get("X-Kedge-Backend-Name") != "" || r.header.Get("X-Kedge-Request-Id") != "" {
			t.Errorf("kedge touched the HTTP inside the tunnel:\n%s", out)
		}
		e := r.echo(t)
		if !e.TLS || e.Backend != "tls-echo" || e.Host != "secure.example.com" || e.Path != "/inside" {
			t.Errorf("backend saw TLS %v backend %q host %q path %q", e.TLS, e.Backend, e.Host, e.Path)
		}
		if got := e.Header.Get("Authorization"); got != "Bearer client-own-token" {
			t.Errorf("backend saw Authorization %q, want the client's own", got)
		}
		for _, h := range []string{"Proxy-Authorization", "X-Kedge-Request-Id", "X-Forwarded-For"} {
			if got := e.Header.Get(h); got != "" {
				t.Errorf("backend saw %s %q inside the tunnel", h, got)
			}
		}
	})

	t.Run("CONNECT refusals by kedge reach the client with their error headers", func(t *testing.T) {
		tests := []struct {
			target   string
			status   int
			wantType string
		}{
			{"wrong.example.com:443", http.StatusUnauthorized, "unauthorized"},
			{"nowhere.example.com:443", http.StatusBadGateway, "no-route"},
		}
		for _, tc := range tests {
			resp := p.winch.rawConnect(t, tc.target)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("X-Kedge-Error-Type") != tc.wantType {
				t.Errorf("CONNECT %s: %s, X-Kedge-Error-Type %q (%q); want %d %s", tc.target, resp.Status,
					resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"), tc.status, tc.wantType)
			}
		}
	})

	t.Run("kubectl through HTTPS_PROXY to a name only kedge routes", func(t *testing.T) {
		kc := p.kube.kubeconfig(t, "https://kube.demo.kedge.local:443", pathKubeToken)
		out, err := p.winch.kubectl(t, kc, "get", "--raw", "/version")
		if err != nil || !strings.Contains(out, fakeVersion) {
			t.Fatalf("kubectl get --raw /version: %v\n%s", err, out)
		}
		out, err = p.winch.kubectl(t, kc, "get", "pods", "-A")
		if err != nil {
			t.Fatalf("kubectl get pods -A: %v\n%s", err, out)
		}
		for _, want := range []string{"NAMESPACE", "default", "web-7d4b9c", "kube-system", "coredns-5d78c9"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl get pods -A output lacks %q:\n%s", want, out)
			}
		}
		checkKubeRequests(t, p.kube, pathKubeToken)
		if strings.Contains(p.kedge.proc.out.String(), pathKubeToken) {
			t.Errorf("kedge saw kubectl's token: the tunnel was not end to end")
		}
	})

	t.Run("gRPC through winch's gRPC port", func(t *testing.T) {
		tests := []struct {
			name, authority, wantAuthz string
			clientMD                   []string
		}{
			{"to kedge's gRPC port, backend auth injected", "greeter.example.com:443", "bearer " + pathBackendToken, nil},
			{"to kedge's HTTPS port, the client's authorization kept", "greeter-on-https.example.com:443", "bearer client-grpc",
				[]string{"authorization", "bearer client-grpc"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := testpb.NewTestServiceClient(winchGRPC(t, p.winch, tc.authority))
				ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
				defer cancel()
				ctx = metadata.AppendToOutgoingContext(ctx, tc.clientMD...)
				checkUnaryAndBidi(ctx, t, c, "greeter")
				md := p.greeter.LastMetadata()
				if got := md.Get("authorization"); len(got) != 1 || got[0] != tc.wantAuthz {
					t.Errorf("backend saw authorization %v, want %q", got, tc.wantAuthz)
				}
				if got := md.Get("proxy-authorization"); len(got) != 0 {
					t.Errorf("backend saw proxy-authorization %v; kedge must remove it", got)
				}
				if got := md.Get("x-kedge-request-id"); len(got) != 1 || !strings.HasPrefix(got[0], "winch-") {
					t.Errorf("backend saw x-kedge-request-id %v, want winch's", got)
				}
			})
		}
		t.Run("unmapped authority", func(t *testing.T) {
			c := testpb.NewTestServiceClient(winchGRPC(t, p.winch, "elsewhere.example.org:443"))
			_, err := c.UnaryCall(t.Context(), &testpb.SimpleRequest{})
			if grpcstatus.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "elsewhere.example.org:443 is not a kedge destination") {
				t.Errorf("got %v, want Unimplemented \"... is not a kedge destination\"", err)
			}
		})
	})

	t.Run("Go net/http client with winch as its proxy", func(t *testing.T) {
		proxy, _ := url.Parse(p.winch.proxyURL)
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxy),
			TLSClientConfig: &tls.Config{RootCAs: p.tlsCA.Pool()},
		}}
		defer c.CloseIdleConnections()
		for _, u := range []string{"http://hello.example.com/go", "https://secure.example.com/go"} {
			resp, err := c.Get(u)
			if err != nil {
				t.Fatalf("GET %s: %v", u, err)
			}
			e := testutil.DecodeEcho(t, resp)
			if resp.StatusCode != http.StatusOK || e.Path != "/go" || e.TLS != strings.HasPrefix(u, "https") {
				t.Errorf("GET %s: %d, backend saw path %q TLS %v", u, resp.StatusCode, e.Path, e.TLS)
			}
		}
	})

	t.Run("unmatched destinations go directly, without tokens", func(t *testing.T) {
		out, err := runClient(t, clientEnv(), "curl", "--silent", "--show-error", "--max-time", "20", "-i",
			"--proxy", p.winch.proxyURL, "http://"+p.plain.Addr+"/direct")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		r := parseCurl(t, out)
		e := r.echo(t)
		if r.status != http.StatusOK || r.header.Get("X-Kedge-Backend-Name") != "" {
			t.Fatalf("want 200 straight from the backend:\n%s", out)
		}
		for _, h := range []string{"Authorization", "Proxy-Authorization", "X-Kedge-Request-Id"} {
			if got := e.Header.Get(h); got != "" {
				t.Errorf("a direct request carried %s %q", h, got)
			}
		}
	})

	t.Run("winch metrics count the requests", func(t *testing.T) {
		resp, err := http.Get(p.winch.proxyURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		for _, want := range []string{`winch_http_requests_total{destination="kedge",proxy="http"}`,
			`winch_http_requests_total{destination="kedge",proxy="connect"}`} {
			if !strings.Contains(body, want) {
				t.Errorf("winch /metrics lacks %s", want)
			}
		}
	})
}

// winchGRPC dials winch's plaintext gRPC port with authority as :authority: that is how winch knows the target.
func winchGRPC(t *testing.T, w *winchEnv, authority string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(w.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// checkUnaryAndBidi makes one unary call and a three-message bidi stream, checking that backend answered both.
func checkUnaryAndBidi(ctx context.Context, t *testing.T, c testpb.TestServiceClient, backend string) {
	t.Helper()
	var hdr metadata.MD
	if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}, grpc.Header(&hdr)); err != nil {
		t.Fatalf("unary: %v", err)
	}
	if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != backend {
		t.Errorf("unary: header x-backend = %v, want %s", got, backend)
	}
	stream, err := c.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("bidi: %v", err)
	}
	for i := 1; i <= 3; i++ {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i * 100)}}}); err != nil {
			t.Fatalf("bidi send %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("bidi recv %d: %v", i, err)
		}
		if n := len(resp.GetPayload().GetBody()); n != i*100 {
			t.Errorf("bidi message %d: %d bytes, want %d", i, n, i*100)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Errorf("bidi: a message after CloseSend, want the end of the stream")
	}
}
