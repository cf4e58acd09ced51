package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// restart stops kedge with sig (SIGTERM: a rollout; SIGKILL: a crash), waits for it to exit and starts the same
// binary with the same command line, on the same ports, until it is ready.
func (e *kedgeEnv) restart(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := e.proc.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.proc.done:
		if sig == syscall.SIGTERM && e.proc.err != nil {
			t.Fatalf("kedge exited uncleanly after SIGTERM: %v", e.proc.err)
		}
	case <-time.After(e.drain + 5*time.Second):
		t.Fatalf("kedge did not exit after %v", sig)
	}
	e.proc = start(t, e.bin, e.drain+5*time.Second, e.args...)
	waitReady(t, e.proc, "http://"+e.debug+"/readyz", readyDeadline())
}

// TestKedgeRestartUnderWinch restarts kedge behind a running winch, once gracefully and once by SIGKILL: winch's
// pooled connections to the old process are gone, yet the first requests after the new kedge is ready succeed
// (plain HTTP, a CONNECT tunnel, gRPC) without restarting winch.
func TestKedgeRestartUnderWinch(t *testing.T) {
	t.Parallel()
	plain := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	greeter := testutil.NewGRPCBackend(t, "greeter")
	backendCA := testutil.NewCA(t)
	tunnelled := testutil.NewEchoServer(t, testutil.EchoName("tunnelled"), testutil.EchoTLS(backendCA.Server(t, "tunnel.example.com")))
	k := startKedge(t, `{
  "http": {"routes": [
    {"backend_name": "plain", "host_matcher": "hello.example.com", "port_matcher": 80},
    {"backend_name": "tunnel", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
  ]},
  "grpc": {"routes": [{"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}]}
}`, fmt.Sprintf(`{
  "http": {"backends": [
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "tunnel", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, plain.Port(), tunnelled.Port(), grpcPort(greeter)))
	w := startWinch(t, fmt.Sprintf(`{"routes": [
  {"direct": {"key": "hello.example.com", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "tunnel.example.com:443", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "greeter.example.com:443", "url": %[2]q}, "protocol": "GRPC"}
]}`, kedgeURL(k), kedgeGRPCURL(k)), "", "--client_tls_root_ca_files="+k.caFile)

	proxyURL, _ := url.Parse(w.proxyURL)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxyURL),
		TLSClientConfig: &tls.Config{RootCAs: backendCA.Pool()}, // end to end through the tunnel
	}}
	defer client.CloseIdleConnections()
	rpc := testpb.NewTestServiceClient(winchGRPC(t, w, "greeter.example.com:443"))
	// The client keeps its connections to winch; only winch's connections to kedge break.
	check := func(when string) {
		t.Helper()
		for _, u := range []string{"http://hello.example.com/restart", "https://tunnel.example.com/restart"} {
			for i := range 3 {
				resp, err := client.Get(u)
				if err != nil {
					t.Errorf("%s, request %d to %s: %v", when, i, u, err)
					continue
				}
				echo := testutil.DecodeEcho(t, resp)
				if resp.StatusCode != http.StatusOK || echo.Path != "/restart" {
					t.Errorf("%s, request %d to %s: %s (%s %s)", when, i, u, resp.Status, resp.Header.Get("X-Winch-Error"), resp.Header.Get("X-Kedge-Error"))
				}
			}
		}
		for i := range 3 {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			_, err := rpc.UnaryCall(ctx, &testpb.SimpleRequest{})
			cancel()
			if err != nil {
				t.Errorf("%s, gRPC call %d: %v", when, i, err)
			}
		}
	}
	check("before the restarts")
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		k.restart(t, sig)
		check(fmt.Sprintf("after kedge was restarted by %v", sig))
	}
	if w.proc.exited() {
		t.Error("winch exited")
	}
}
