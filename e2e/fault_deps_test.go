package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// newRelay forwards TCP connections from a port on 127.0.0.1 to target. kill makes it behave as a dead server
// (the port refuses, every relayed connection is closed); revive listens on the same port again.
func newRelay(t *testing.T, target string) *restartable {
	t.Helper()
	return newRestartableServer(t, func(ln net.Listener) func() {
		var mu sync.Mutex
		conns := map[net.Conn]struct{}{}
		dead := false
		// track registers the connections, or closes them when the relay is dead.
		track := func(cs ...net.Conn) bool {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range cs {
				if dead {
					c.Close()
				} else {
					conns[c] = struct{}{}
				}
			}
			return !dead
		}
		forward := func(c net.Conn) {
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				return
			}
			if !track(c, up) {
				return
			}
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) { _, _ = io.Copy(dst, src); done <- struct{}{} }
			go pipe(up, c)
			go pipe(c, up)
			<-done // either side ending ends both
			mu.Lock()
			defer mu.Unlock()
			for _, conn := range []net.Conn{c, up} {
				conn.Close()
				delete(conns, conn)
			}
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go forward(c)
			}
		}()
		return func() {
			ln.Close()
			mu.Lock()
			defer mu.Unlock()
			dead = true
			for c := range conns {
				c.Close()
			}
		}
	})
}

// TestKedgeKubernetesAPIDownAndBack cuts kedge off from the Kubernetes API server (its port refuses, the open
// watches break) for a few seconds: the discovered route keeps serving from the last state and kedge stays ready.
// A change made meanwhile (the Service's pod replaced) reaches kedge once the API server is back.
func TestKedgeKubernetesAPIDownAndBack(t *testing.T) {
	t.Parallel()
	api := newFakeKube(t)
	podA := testutil.NewEchoServer(t, testutil.EchoName("pod-a"))
	podB := testutil.NewEchoServer(t, testutil.EchoName("pod-b"))
	api.put(podSlice("echo-a", podA.Port()))
	api.put(exposedService("echo", "http=80:8080"))
	apiAddr := strings.TrimPrefix(api.srv.URL, "https://")
	front := newRelay(t, apiAddr)
	kubeconfig := api.kubeconfig(t, t.TempDir())
	cfg, err := os.ReadFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// The same API server, reached through the relay (its certificate names 127.0.0.1).
	cfg = []byte(strings.Replace(string(cfg), api.srv.URL, fmt.Sprintf("https://127.0.0.1:%d", front.port), 1))
	if err := os.WriteFile(kubeconfig, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	k := startKedge(t, `{}`, `{}`,
		"--k8sclient_kubeconfig_path="+kubeconfig,
		"--kedge_dynamic_routings_enabled",
		"--discovery_external_domain_suffix="+domainSuffix,
		"--k8s_cache_sync_timeout=10s",
	)
	client := k.client(false)
	backendOf := func() string {
		resp, err := client.Get("https://echo.shop.svc." + domainSuffix + ":80/")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return resp.Status + " " + resp.Header.Get("X-Kedge-Error-Type")
		}
		return testutil.DecodeEcho(t, resp).Backend
	}
	testutil.EventuallyWithin(t, 10*time.Second, "the discovered route to reach pod A", func() bool { return backendOf() == "pod-a" })

	front.kill()
	// The pod is replaced while kedge cannot see it.
	api.put(podSlice("echo-b", podB.Port()))
	api.remove("endpointslices", "shop", "echo-a")
	end := time.Now().Add(3 * time.Second)
	for n := 0; time.Now().Before(end); n++ {
		if got := backendOf(); got != "pod-a" {
			t.Fatalf("request %d while the API server is down went to %q, want pod-a (the last known state)", n, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while the API server is down: %d %s", code, body)
	}

	front.revive()
	// client-go's reflectors retry with a backoff of up to 30s; the first retries come within seconds.
	testutil.EventuallyWithin(t, 30*time.Second, "traffic to follow the change made while the API server was down", func() bool {
		return backendOf() == "pod-b"
	})
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the API server came back: %d %s", code, body)
	}
}

// TestKedgeOIDCIssuerDown takes the OIDC issuer down (discovery and JWKS answer 503) after kedge has its keys:
// tokens signed by a known key keep verifying (also ones kedge has not seen before), kedge stays ready and its
// background key refresh keeps the previous keys; a token naming an unknown kid fails closed, 401 unauthorized
// (gRPC Unauthenticated), never a 5xx. When the issuer is back, a key it rotated in meanwhile verifies.
func TestKedgeOIDCIssuerDown(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	b := startBackends(t)
	k := startKedge(t, authDirector, b.pool(),
		"--server_oidc_provider_url="+iss.URL(),
		"--server_oidc_client_id=kedge",
		"--server_oidc_perms_claim=perms",
		"--server_oidc_jwks_refresh_interval=1s") // background refreshes fail while the issuer is down
	sign := func(sub string, opts ...oidcissuer.SignOption) string {
		c := iss.Claims("kedge")
		c["perms"], c["sub"] = []string{"x"}, sub
		return iss.Sign(t, c, opts...)
	}
	rpc := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))
	grpcCode := func(token string) codes.Code {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "proxy-authorization", "Bearer "+token)
		_, err := rpc.UnaryCall(ctx, &testpb.SimpleRequest{})
		return grpcstatus.Code(err)
	}
	known := sign("user-1")
	if resp := k.get(t, "x.example.com", known); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the issuer up: %s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
	}

	iss.SetDown(true)
	fetches := iss.Requests()
	testutil.EventuallyWithin(t, 10*time.Second, "a background key refresh against the down issuer", func() bool {
		return iss.Requests() > fetches
	})
	for i, tc := range []struct{ name, token string }{
		{"a token verified before", known},
		{"a new token signed by a known key", sign("user-2")},
		{"a new ES256 token", sign("user-3", oidcissuer.WithAlgorithm("ES256"))},
	} {
		if resp := k.get(t, "x.example.com", tc.token); resp.StatusCode != http.StatusOK {
			t.Errorf("%d. %s, issuer down: %s (%s), want 200", i, tc.name, resp.Status, resp.Header.Get("X-Kedge-Error"))
		}
		if code := grpcCode(tc.token); code != codes.OK {
			t.Errorf("%d. %s over gRPC, issuer down: %v, want OK", i, tc.name, code)
		}
	}
	rotated := iss.RotateKey(t) // published only once the issuer is back
	for _, tc := range []struct{ name, token string }{
		{"a token naming a kid kedge never saw", sign("user-4", oidcissuer.WithUnknownKey())},
		{"a token signed by a key the down issuer rotated to", sign("user-5")},
	} {
		// Twice: kedge's key refetch for an unknown kid is rate-limited (10s; the background refreshes count too), and
		// the keys it has must not be taken for the ones it lacks either time.
		for range 2 {
			start := time.Now()
			resp := k.get(t, "x.example.com", tc.token)
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Kedge-Error-Type") != "unauthorized" {
				t.Errorf("%s, issuer down: %s %q (%s), want 401 unauthorized", tc.name, resp.Status,
					resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"))
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("%s, issuer down: answered after %v", tc.name, took)
			}
			if code := grpcCode(tc.token); code != codes.Unauthenticated {
				t.Errorf("%s over gRPC, issuer down: %v, want Unauthenticated", tc.name, code)
			}
		}
	}
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with the issuer down after startup: %d %s", code, body)
	}
	if resp := k.get(t, "x.example.com", known); resp.StatusCode != http.StatusOK {
		t.Errorf("the known token after the failed key fetches: %s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
	}

	iss.SetDown(false)
	newToken := sign("user-6")
	testutil.EventuallyWithin(t, 15*time.Second, "a token signed by the rotated key "+rotated+" to verify once the issuer is back", func() bool {
		return k.get(t, "x.example.com", newToken).StatusCode == http.StatusOK
	})
	k.proc.waitOutput(t, "keeping the previous ones")
}
