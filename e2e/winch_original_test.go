package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/winch/pac"
)

// The original kedge's own e2e scenarios (its pkg/e2e), with its flags and document shapes, so that a user of the
// original can swap binaries. Its fixed ports become free ones and its committed (long expired) certificates
// become generated ones; the documents are otherwise written as the original's misc/ files are.

// originalMapper is misc/winch_mapper.json: %[1]d is kedge's HTTPS port (18171 in the original), %[2]d its gRPC
// port (18172).
const originalMapper = `{
  "routes": [
    {
      "regexp": {
        "exp": "^no_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com",
        "url": "https://${cluster}:%[1]d"
      }
    },
    {
      "proxy_auth": "proxy-bearer-token-auth",
      "regexp": {
        "exp": "^bearer_token_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com",
        "url": "https://${cluster}:%[1]d"
      }
    },
    {
      "proxy_auth": "wrong-proxy-bearer-token-auth",
      "regexp": {
        "exp": "^wrong_bearer_token_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com",
        "url": "https://${cluster}:%[1]d"
      }
    },
    {
      "backend_auth": "test-endpoint-http",
      "regexp": {
        "exp": "^test_endpoint[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com",
        "url": "https://${cluster}:%[1]d"
      },
      "protocol": "HTTP"
    },
    {
      "backend_auth": "test-endpoint-grpc",
      "regexp": {
        "exp": "^([a-z0-9-_].*)[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com",
        "url": "https://${cluster}:%[2]d"
      },
      "protocol": "GRPC"
    }
  ]
}`

// originalAuth is misc/winch_auth.json.
const originalAuth = `{
  "auth_sources": [
    {"name": "test-endpoint-grpc", "token": {"token": "secret-token"}},
    {"name": "test-endpoint-http", "token": {"token": "secret-token2"}},
    {"name": "proxy-bearer-token-auth", "token": {"token": "secret-bearer-token"}},
    {"name": "wrong-proxy-bearer-token-auth", "token": {"token": "wrong-secret-bearer-token"}}
  ]
}`

// originalDirector routes the test endpoint's names (host and port, as the original's misc/director.json) and its
// gRPC service; %[1]d is the HTTP test endpoint's port (18270 in the original).
const originalDirector = `{
  "grpc": {
    "routes": [
      {"backend_name": "e2e_grpc", "service_name_matcher": "grpc.testing.TestService/*"}
    ]
  },
  "http": {
    "routes": [
      {"backend_name": "e2e_http", "host_matcher": "test_endpoint.localhost.internal.example.com", "port_matcher": %[1]d},
      {"backend_name": "e2e_http", "host_matcher": "no_auth.localhost.internal.example.com", "port_matcher": %[1]d},
      {"backend_name": "e2e_http", "host_matcher": "bearer_token_auth.localhost.internal.example.com", "port_matcher": %[1]d},
      {"backend_name": "e2e_http", "host_matcher": "wrong_bearer_token_auth.localhost.internal.example.com", "port_matcher": %[1]d}
    ]
  }
}`

// originalPool resolves both backends with the host resolver: %[1]d the HTTP endpoint's port, %[2]d the gRPC one's.
const originalPool = `{
  "grpc": {
    "backends": [
      {"name": "e2e_grpc", "balancer": "ROUND_ROBIN", "host": {"dns_name": "127.0.0.1", "port": %[2]d}}
    ]
  },
  "http": {
    "backends": [
      {"name": "e2e_http", "balancer": "ROUND_ROBIN", "host": {"dns_name": "127.0.0.1", "port": %[1]d}}
    ]
  }
}`

// originalEndpoints are the original's test endpoints: HTTP "/?name=X" answers "Hello X!", and a gRPC service.
// With requireAuth they demand "authorization: bearer secret-token2" (HTTP) and "bearer secret-token" (gRPC).
type originalEndpoints struct {
	http     *httptest.Server
	grpc     *testutil.GRPCBackend
	mu       sync.Mutex
	infoLogs string // X-Kedge-Info-Logs of the last HTTP request; guarded by mu
}

func startOriginalEndpoints(t *testing.T, requireAuth bool) *originalEndpoints {
	t.Helper()
	e := &originalEndpoints{}
	e.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.infoLogs = r.Header.Get("X-Kedge-Info-Logs")
		e.mu.Unlock()
		if requireAuth && !strings.EqualFold(r.Header.Get("Authorization"), "bearer secret-token2") {
			http.Error(w, "test endpoint: wrong or missing authorization", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "Hello %s!", r.URL.Query().Get("name"))
	}))
	t.Cleanup(e.http.Close)
	check := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		if got := md.Get("authorization"); requireAuth && (len(got) != 1 || !strings.EqualFold(got[0], "bearer secret-token")) {
			return grpcstatus.Error(codes.Unauthenticated, "test endpoint: wrong or missing authorization")
		}
		return nil
	}
	e.grpc = testutil.NewGRPCBackend(t, "e2e_grpc",
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}))
	return e
}

func (e *originalEndpoints) httpPort() int {
	_, port, _ := strings.Cut(e.http.Listener.Addr().String(), ":")
	var p int
	fmt.Sscan(port, &p)
	return p
}

func (e *originalEndpoints) lastInfoLogs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.infoLogs
}

// startOriginal runs kedge and winch the way the original's e2e harness did: kedge requiring client certificates
// (and, with proxyToken, a static proxy token), winch with the misc/ documents, a client certificate, PAC patterns
// and debug mode.
func startOriginal(t *testing.T, e *originalEndpoints, proxyToken string) (*kedgeEnv, *winchEnv) {
	t.Helper()
	clientCA := testutil.NewCA(t)
	dir := t.TempDir()
	clientCAFile := clientCA.WriteFiles(t, dir)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "client", clientCA.Client(t, "someone@example.com", "someone@example.com"))
	kedgeArgs := []string{"--server_tls_client_ca_files=" + clientCAFile, "--server_tls_client_cert_required=true"}
	if proxyToken != "" {
		kedgeArgs = append(kedgeArgs, "--unsafe_bearer_token_proxy_auth="+proxyToken)
	}
	k := startKedge(t, fmt.Sprintf(originalDirector, e.httpPort()), fmt.Sprintf(originalPool, e.httpPort(), grpcPort(e.grpc)), kedgeArgs...)
	_, grpcTLSPort, _ := strings.Cut(k.grpcAddr, ":")
	var gp int
	fmt.Sscan(grpcTLSPort, &gp)
	w := startWinch(t, fmt.Sprintf(originalMapper, k.httpsPort, gp), originalAuth,
		"--pac_redirect_sh_expressions", "*.*.internal.example.com",
		"--client_tls_cert_file", certFile,
		"--client_tls_key_file", keyFile,
		"--client_tls_root_ca_files", k.caFile,
		"--debug_mode=true",
	)
	return k, w
}

// originalHTTP makes the original's HTTP call through winch: GET http://<prefix>.localhost.internal.example.com:<port>/?name=kedge.
func originalHTTP(t *testing.T, w *winchEnv, e *originalEndpoints, prefix string) curlResponse {
	t.Helper()
	out, err := w.curlVia(t, "-i", fmt.Sprintf("http://%s.localhost.internal.example.com:%d/?name=kedge", prefix, e.httpPort()))
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	return parseCurl(t, out)
}

// originalGRPC makes the original's gRPC call through winch with :authority <prefix>.localhost.internal.example.com:<port>.
func originalGRPC(t *testing.T, w *winchEnv, e *originalEndpoints, prefix string) error {
	t.Helper()
	authority := fmt.Sprintf("%s.localhost.internal.example.com:%d", prefix, grpcPort(e.grpc))
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	_, err := testpb.NewTestServiceClient(winchGRPC(t, w, authority)).UnaryCall(ctx, &testpb.SimpleRequest{})
	return err
}

// TestOriginalE2EBackendAuth: the original's TestHTTPEndpointCallWithBackendAuth, TestGRPCEndpointCallWithBackendAuth
// and TestWinchPAC.
func TestOriginalE2EBackendAuth(t *testing.T) {
	e := startOriginalEndpoints(t, true)
	_, w := startOriginal(t, e, "")

	t.Run("HTTP endpoint call with backend auth", func(t *testing.T) {
		if r := originalHTTP(t, w, e, "test_endpoint"); r.status != http.StatusOK || r.body != "Hello kedge!" {
			t.Errorf("test_endpoint: %d %q, want 200 \"Hello kedge!\"", r.status, r.body)
		}
		if got := e.lastInfoLogs(); !strings.HasPrefix(got, "winch-") {
			t.Errorf("--debug_mode: the endpoint saw X-Kedge-Info-Logs %q, want winch-$USER", got)
		}
		r := originalHTTP(t, w, e, "no_auth")
		if r.status != http.StatusUnauthorized || r.header.Get("X-Kedge-Error-Type") != "" {
			t.Errorf("no_auth: %d (X-Kedge-Error-Type %q), want the endpoint's own 401", r.status, r.header.Get("X-Kedge-Error-Type"))
		}
	})
	t.Run("gRPC endpoint call with backend auth", func(t *testing.T) {
		if err := originalGRPC(t, w, e, "test_endpoint"); err != nil {
			t.Errorf("test_endpoint via kedge's gRPC port: %v", err)
		}
		err := originalGRPC(t, w, e, "no_auth") // an ANY route: kedge's HTTPS port, gRPC on it
		if grpcstatus.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "test endpoint") {
			t.Errorf("no_auth via kedge's HTTPS port: %v, want the endpoint's Unauthenticated", err)
		}
	})
	t.Run("winch PAC", func(t *testing.T) {
		resp, err := http.Get(w.proxyURL + "/wpad.dat")
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		want := string(pac.Generate(strings.TrimPrefix(w.proxyURL, "http://"), []string{"*.*.internal.example.com"}))
		if got != want {
			t.Errorf("/wpad.dat:\n%s\nwant:\n%s", got, want)
		}
		if !strings.Contains(got, `shExpMatch(host, "*.*.internal.example.com")`) ||
			!strings.Contains(got, `"PROXY `+strings.TrimPrefix(w.proxyURL, "http://")+`; DIRECT"`) {
			t.Errorf("/wpad.dat does not send *.*.internal.example.com to winch:\n%s", got)
		}
	})
}

// TestOriginalE2EProxyAuth: the original's TestHTTPEndpointCallWithBearerTokenProxyAuth and
// TestGRPCEndpointCallWithProxyAuth, kedge running with --unsafe_bearer_token_proxy_auth.
func TestOriginalE2EProxyAuth(t *testing.T) {
	e := startOriginalEndpoints(t, false)
	_, w := startOriginal(t, e, "secret-bearer-token")

	t.Run("HTTP endpoint call with bearer token proxy auth", func(t *testing.T) {
		if r := originalHTTP(t, w, e, "bearer_token_auth"); r.status != http.StatusOK || r.body != "Hello kedge!" {
			t.Errorf("bearer_token_auth: %d %q, want 200 \"Hello kedge!\"", r.status, r.body)
		}
		r := originalHTTP(t, w, e, "wrong_bearer_token_auth")
		if r.status != http.StatusUnauthorized || r.header.Get("X-Kedge-Error-Type") != "unauthorized" {
			t.Errorf("wrong_bearer_token_auth: %d (X-Kedge-Error-Type %q), want kedge's 401", r.status, r.header.Get("X-Kedge-Error-Type"))
		}
	})
	t.Run("gRPC endpoint call with proxy auth", func(t *testing.T) {
		if err := originalGRPC(t, w, e, "bearer_token_auth"); err != nil {
			t.Errorf("bearer_token_auth: %v", err)
		}
		calls := e.grpc.Calls()
		if err := originalGRPC(t, w, e, "wrong_bearer_token_auth"); grpcstatus.Code(err) != codes.Unauthenticated {
			t.Errorf("wrong_bearer_token_auth: %v, want Unauthenticated from kedge", err)
		}
		if e.grpc.Calls() != calls {
			t.Errorf("the endpoint was called with a wrong proxy token")
		}
	})
}
