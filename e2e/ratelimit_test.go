package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// TestKedgeRateLimit runs routes with a rate_limit of one request per 10 s after a small burst, so that no token
// comes back while the test runs: HTTP, gRPC and CONNECT each get their burst, then a refusal, per caller. kedge
// signs nothing here, and a client's X-Kedge-Identity must still not reach a backend.
func TestKedgeRateLimit(t *testing.T) {
	iss := oidcissuer.New(t)
	plain := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	greeter := testutil.NewGRPCBackend(t, "greeter")
	tunnelled := testutil.NewEchoServer(t, testutil.EchoName("tunnelled"))
	director := `{
  "http": {"routes": [
    {"backend_name": "plain", "host_matcher": "limited.example.com", "rate_limit": {"requests_per_second": 0.1, "burst": 3}},
    {"backend_name": "tunnel", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT", "rate_limit": {"requests_per_second": 0.1, "burst": 1}},
    {"backend_name": "plain", "host_matcher": "open.example.com"}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*", "rate_limit": {"requests_per_second": 0.1, "burst": 2}}
  ]}
}`
	pool := fmt.Sprintf(`{
  "http": {"backends": [
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "tunnel", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, plain.Port(), tunnelled.Port(), grpcPort(greeter))
	k := startKedge(t, director, pool, "--server_oidc_provider_url="+iss.URL(), "--server_oidc_client_id=kedge",
		"--server_ratelimit_max_keys=1000")
	tokenFor := func(sub string) string {
		c := iss.Claims("kedge")
		c["sub"] = sub
		return iss.Sign(t, c)
	}
	alice, bob := tokenFor("alice"), tokenFor("bob")

	get := func(t *testing.T, host, token string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+host+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Proxy-Authorization", "Bearer "+token)
		req.Header.Set("X-Kedge-Identity", "forged.by.client")
		resp, err := k.client(false).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	checkRefusal := func(t *testing.T, what string, resp *http.Response) {
		t.Helper()
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-Kedge-Error-Type") != "rate-limited" ||
			err != nil || secs < 1 || secs > 10 {
			t.Errorf("%s: %s, X-Kedge-Error-Type %q, Retry-After %q; want 429 rate-limited, Retry-After 1-10",
				what, resp.Status, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("Retry-After"))
		}
	}

	t.Run("HTTP: the burst passes, then 429 with Retry-After, per caller", func(t *testing.T) {
		for _, who := range []struct{ name, token string }{{"alice", alice}, {"bob", bob}} {
			before := plain.Hits()
			for i := range 3 {
				resp := get(t, "limited.example.com", who.token)
				echo := testutil.DecodeEcho(t, resp)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s, request %d of the burst: %s", who.name, i+1, resp.Status)
				}
				if v := echo.Header.Values("X-Kedge-Identity"); len(v) != 0 {
					t.Errorf("the backend saw the client's X-Kedge-Identity %q", v)
				}
			}
			resp := get(t, "limited.example.com", who.token)
			_ = readAll(t, resp)
			checkRefusal(t, who.name+" over the burst", resp)
			if got := plain.Hits() - before; got != 3 {
				t.Errorf("%s: the backend got %d requests, want the burst of 3", who.name, got)
			}
		}
		// Another route has no limit.
		if resp := get(t, "open.example.com", alice); resp.StatusCode != http.StatusOK {
			t.Errorf("alice on a route without rate_limit: %s", resp.Status)
		} else {
			_ = readAll(t, resp)
		}
	})

	t.Run("gRPC: ResourceExhausted with x-kedge-error-type rate-limited", func(t *testing.T) {
		c := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))
		call := func(token string) (metadata.MD, error) {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "proxy-authorization", "Bearer "+token, "x-kedge-identity", "forged.by.client")
			var trailer metadata.MD
			_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Trailer(&trailer))
			return trailer, err
		}
		for i := range 2 {
			if _, err := call(alice); err != nil {
				t.Fatalf("alice, call %d of the burst: %v", i+1, err)
			}
		}
		if v := greeter.LastMetadata().Get("x-kedge-identity"); len(v) != 0 {
			t.Errorf("the gRPC backend saw the client's x-kedge-identity %q", v)
		}
		calls := greeter.Calls()
		trailer, err := call(alice)
		if grpcstatus.Code(err) != codes.ResourceExhausted || len(trailer.Get("x-kedge-error-type")) != 1 || trailer.Get("x-kedge-error-type")[0] != "rate-limited" {
			t.Errorf("alice over the burst: %v, trailer %v; want ResourceExhausted, x-kedge-error-type rate-limited", err, trailer)
		}
		if greeter.Calls() != calls {
			t.Error("a refused call reached the backend")
		}
		if _, err := call(bob); err != nil {
			t.Errorf("bob, whose bucket is his own: %v", err)
		}
	})

	t.Run("CONNECT: 429 before the tunnel opens", func(t *testing.T) {
		connect := func(token string) *http.Response {
			conn, err := tls.Dial("tcp", k.https, &tls.Config{RootCAs: k.ca.Pool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			req, err := http.NewRequest(http.MethodConnect, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = "tunnel.example.com:443"
			req.Header.Set("Proxy-Authorization", "Bearer "+token)
			if _, err := fmt.Fprintf(conn, "CONNECT tunnel.example.com:443 HTTP/1.1\r\nHost: tunnel.example.com:443\r\nProxy-Authorization: Bearer %s\r\n\r\n", token); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		if resp := connect(alice); resp.StatusCode != http.StatusOK {
			t.Fatalf("alice's first tunnel: %s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
		}
		checkRefusal(t, "alice's second tunnel", connect(alice))
		if resp := connect(bob); resp.StatusCode != http.StatusOK {
			t.Errorf("bob's first tunnel: %s", resp.Status)
		}
	})

	t.Run("rejections are counted per route", func(t *testing.T) {
		for route, want := range map[string]string{"plain": "2", "greeter": "1", "tunnel": "1"} {
			series := `kedge_ratelimit_rejections_total{route="` + route + `"}`
			if got := metricValue(t, k.debug, series); got != want {
				t.Errorf("%s = %q, want %s", series, got, want)
			}
		}
	})
	k.proc.waitOutput(t, "decision=rate-limited")
}
