package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// restartable is a server on 127.0.0.1 that can die as a killed process does (its port refuses, every open
// connection is closed mid-whatever) and come back on the same port.
type restartable struct {
	t     *testing.T
	serve func(net.Listener) (stop func()) // serves the listener until stop, which closes it and every connection
	port  int

	mu   sync.Mutex
	stop func() // nil while dead
}

// newRestartable serves h over HTTP/1.1.
func newRestartable(t *testing.T, h http.Handler) *restartable {
	t.Helper()
	return newRestartableServer(t, func(ln net.Listener) func() {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		return func() { _ = srv.Close() }
	})
}

func newRestartableServer(t *testing.T, serve func(net.Listener) func()) *restartable {
	t.Helper()
	r := &restartable{t: t, serve: serve}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.port = ln.Addr().(*net.TCPAddr).Port
	r.stop = serve(ln)
	t.Cleanup(r.kill)
	return r
}

// kill closes the listener and every connection at once.
func (r *restartable) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil {
		r.stop()
		r.stop = nil
	}
}

// revive listens on the same port again.
func (r *restartable) revive() {
	r.t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", r.port))
	if err != nil {
		r.t.Fatalf("listening on port %d again: %v", r.port, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop = r.serve(ln)
}

// grpcConnTo is a gRPC connection to kedge's gRPC port with :authority host, a name kedge's certificate covers.
func (e *kedgeEnv) grpcConnTo(t *testing.T, host string) *grpc.ClientConn {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: e.ca.Pool(), ServerName: host})
	cc, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(creds), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// expectNoLeaks waits until kedge's goroutines and file descriptors are back to at most the baseline plus a little
// slack (connections that the runtime closes a moment later), and fails the test otherwise.
func expectNoLeaks(t *testing.T, k *kedgeEnv, goroutinesBefore, fdsBefore int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		g, fds := goroutines(t, k), openFDs(t, k.proc.cmd.Process.Pid)
		if g <= goroutinesBefore+3 && fds <= fdsBefore+2 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("kedge holds %d goroutines and %d fds after the faults, %d and %d before", g, fds, goroutinesBefore, fdsBefore)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKedgeBackendKilledMidResponse kills backends while kedge is waiting for their answer, in the middle of a
// body, and in the middle of a gRPC stream. The client gets a clean error each time: 502 before headers, a
// truncated body it can detect (HTTP/1.1 and HTTP/2), gRPC Unavailable; kedge stays healthy, answers the next
// request (the same route once the backend is back), and gives back every goroutine and file descriptor.
func TestKedgeBackendKilledMidResponse(t *testing.T) {
	t.Parallel()
	arrived := make(chan string, 16)
	dying := newRestartable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/before-headers":
		case "/mid-body":
			w.Header().Set("Content-Length", "1000000")
			_, _ = w.Write(make([]byte, 1000))
			w.(http.Flusher).Flush()
		default:
			_, _ = io.WriteString(w, "alive")
			return
		}
		select {
		case arrived <- r.URL.Path:
		default:
		}
		<-r.Context().Done() // until the backend is killed
	}))
	steady := testutil.NewEchoServer(t, testutil.EchoName("steady"))
	dyingGRPC := testutil.NewGRPCBackend(t, "dying")
	steadyGRPC := testutil.NewGRPCBackend(t, "steady")
	k := startKedge(t, `{
  "http": {"routes": [
    {"backend_name": "dying", "host_matcher": "dying.example.com"},
    {"backend_name": "steady", "host_matcher": "steady.example.com"}
  ]},
  "grpc": {"routes": [
    {"backend_name": "dying_grpc", "service_name_matcher": "*", "authority_host_matcher": "dying.example.com"},
    {"backend_name": "steady_grpc", "service_name_matcher": "*", "authority_host_matcher": "steady.example.com"}
  ]}
}`, fmt.Sprintf(`{
  "http": {"backends": [
    {"name": "dying", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "steady", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [
    {"name": "dying_grpc", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "steady_grpc", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]}
}`, dying.port, steady.Port(), grpcPort(dyingGRPC), grpcPort(steadyGRPC)))

	waitArrival := func(path string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case p := <-arrived:
				if p == path {
					return
				}
			case <-timeout:
				t.Fatalf("the request for %s did not reach the backend", path)
			}
		}
	}
	h1, h2 := k.client(false), k.client(true)
	get := func(c *http.Client, host, path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+host+path, nil)
		return c.Do(req)
	}
	// post is not idempotent: neither kedge's transport nor the client's may send it again after the backend died.
	post := func(c *http.Client, host, path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+host+path, strings.NewReader("x"))
		return c.Do(req)
	}
	expectOK := func(c *http.Client, host, path string) {
		t.Helper()
		resp, err := get(c, host, path)
		if err != nil {
			t.Fatalf("%s%s: %v", host, path, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("%s%s: %s, %v", host, path, resp.Status, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	dyingRPC := testpb.NewTestServiceClient(k.grpcConnTo(t, "dying.example.com"))
	steadyRPC := testpb.NewTestServiceClient(k.grpcConnTo(t, "steady.example.com"))

	// Warm up every path, then take the baseline without the clients' idle connections.
	for _, c := range []*http.Client{h1, h2} {
		expectOK(c, "dying.example.com", "/")
		expectOK(c, "steady.example.com", "/")
	}
	for _, c := range []testpb.TestServiceClient{dyingRPC, steadyRPC} {
		if _, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("gRPC warm-up: %v", err)
		}
	}
	h1.CloseIdleConnections()
	h2.CloseIdleConnections()
	time.Sleep(200 * time.Millisecond) // let kedge notice the closed client connections before the baseline
	goroutinesBefore, fdsBefore := goroutines(t, k), openFDs(t, k.proc.cmd.Process.Pid)

	// Five rounds per protocol, so that a leak of one goroutine or fd per fault shows above the slack of the check.
	const rounds = 5
	for round := range 2 * rounds {
		tc := []struct {
			name string
			c    *http.Client
		}{{"HTTP/1.1", h1}, {"HTTP/2", h2}}[round/rounds]
		// Killed while kedge waits for the response headers: 502 transport-unknown-error.
		type result struct {
			resp *http.Response
			err  error
		}
		done := make(chan result, 1)
		go func() {
			resp, err := post(tc.c, "dying.example.com", "/before-headers")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- result{resp, err}
		}()
		waitArrival("/before-headers")
		dying.kill()
		r := <-done
		if r.err != nil {
			t.Errorf("%s, backend killed before headers: %v, want a 502 answer", tc.name, r.err)
		} else if r.resp.StatusCode != http.StatusBadGateway || r.resp.Header.Get("X-Kedge-Error-Type") != "transport-unknown-error" {
			t.Errorf("%s, backend killed before headers: %s %q, want 502 transport-unknown-error", tc.name, r.resp.Status, r.resp.Header.Get("X-Kedge-Error-Type"))
		}
		dying.revive()

		// Killed in the middle of the body: the client reads fewer bytes than Content-Length and an error.
		resp, err := get(tc.c, "dying.example.com", "/mid-body")
		if err != nil {
			t.Fatalf("%s mid-body: %v", tc.name, err)
		}
		waitArrival("/mid-body")
		dying.kill()
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil || n >= 1000000 {
			t.Errorf("%s, backend killed mid-body: read %d bytes, err %v; want a truncated body and an error", tc.name, n, err)
		}
		dying.revive()
		expectOK(tc.c, "dying.example.com", "/")
		expectOK(tc.c, "steady.example.com", "/")
	}

	// gRPC: a stream open through kedge when its backend dies ends with Unavailable; so do calls while it is dead.
	stream, err := dyingRPC.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first stream message: %v", err)
	}
	dyingGRPC.Stop()
	if _, err := stream.Recv(); grpcstatus.Code(err) != codes.Unavailable {
		t.Errorf("stream when its backend died: %v, want Unavailable", err)
	}
	for i := range 3 { // at once, not at the client's deadline (30s)
		start := time.Now()
		_, err := dyingRPC.UnaryCall(ctx, &testpb.SimpleRequest{})
		if took := time.Since(start); grpcstatus.Code(err) != codes.Unavailable || took > 5*time.Second {
			t.Errorf("call %d to the dead gRPC backend: %v after %v, want Unavailable at once", i, err, took)
		}
	}
	if _, err := steadyRPC.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
		t.Errorf("call to the other gRPC backend: %v", err)
	}

	if code, body := debugGet(t, "http://"+k.debug+"/_healthz"); code != http.StatusOK {
		t.Errorf("/_healthz after the kills: %d %s", code, body)
	}
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the kills: %d %s", code, body)
	}
	h1.CloseIdleConnections()
	h2.CloseIdleConnections()
	expectNoLeaks(t, k, goroutinesBefore, fdsBefore)
}

// TestKedgeAllEndpointsDown stops both endpoints of a discovered backend: every request gets a fast 502
// no-connection-to-all-resolved-addresses (counted in kedge_proxy_errors_total) while kedge stays ready, and
// traffic comes back within the ejection backoff once one endpoint listens again.
func TestKedgeAllEndpointsDown(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	a, b := newRestartable(t, ok), newRestartable(t, ok)
	api := newFakeKube(t)
	api.put(podSlice("echo-a", a.port))
	api.put(podSlice("echo-b", b.port))
	api.put(exposedService("echo", "http=80:8080"))
	const backoff = time.Second
	k := startKedge(t, `{}`, `{}`,
		"--k8sclient_kubeconfig_path="+api.kubeconfig(t, t.TempDir()),
		"--kedge_dynamic_routings_enabled",
		"--discovery_external_domain_suffix="+domainSuffix,
		"--k8s_cache_sync_timeout=10s",
		"--lbtransport_failed_target_backoff_duration="+backoff.String(),
	)
	const backend = `backend="echo_shop_8080"`
	testutil.EventuallyWithin(t, 10*time.Second, "both endpoints", func() bool {
		return metricValue(t, k.debug, "kedge_k8s_endpoints{"+backend+"}") == "2"
	})
	c := k.client(false)
	get := func() (*http.Response, time.Duration, error) {
		start := time.Now()
		resp, err := c.Get("https://echo.shop.svc." + domainSuffix + ":80/")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, time.Since(start), err
	}
	for i := range 4 {
		if resp, _, err := get(); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d with both endpoints up: %v %v", i, resp, err)
		}
	}

	a.kill()
	b.kill()
	const n = 20
	var slowest time.Duration
	for i := range n {
		resp, took, err := get()
		if err != nil {
			t.Fatalf("request %d with every endpoint down: %v, want a 502", i, err)
		}
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Kedge-Error-Type") != "no-connection-to-all-resolved-addresses" {
			t.Errorf("request %d with every endpoint down: %s %q, want 502 no-connection-to-all-resolved-addresses",
				i, resp.Status, resp.Header.Get("X-Kedge-Error-Type"))
		}
		slowest = max(slowest, took)
	}
	// Refused connections fail at once; nothing waits for --backend_dial_timeout (2s).
	if slowest > time.Second {
		t.Errorf("the slowest of %d answers with every endpoint down took %v, want well under a second", n, slowest)
	}
	t.Logf("slowest answer with every endpoint down: %v", slowest)
	errs, _ := strconv.Atoi(metricValue(t, k.debug, `kedge_proxy_errors_total{`+backend+`,type="no-connection-to-all-resolved-addresses"}`))
	if errs < n {
		t.Errorf("kedge_proxy_errors_total counts %d no-connection errors, want at least %d", errs, n)
	}
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with one backend down: %d %s", code, body)
	}

	b.revive()
	back := time.Now()
	testutil.EventuallyWithin(t, backoff+5*time.Second, "traffic to reach the endpoint that came back", func() bool {
		resp, _, err := get()
		return err == nil && resp.StatusCode == http.StatusOK
	})
	t.Logf("traffic back %v after an endpoint returned", time.Since(back))
	for i := range 10 { // a is still down: requests that pick it go on to b
		if resp, _, err := get(); err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("request %d with one endpoint back: %v %v", i, resp, err)
		}
	}
}
