package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestKedgeReloadEverySecondUnderLoad rewrites kedge's documents every second for eight seconds while HTTP/1.1,
// HTTP/2 and gRPC load runs against routes present in every version: each reload moves the HTTP and gRPC backends
// to another endpoint and adds or removes a route, and every third write is an invalid document (rejected, the
// running config stays). No request may fail, and a download and a gRPC stream that span all the reloads finish.
func TestKedgeReloadEverySecondUnderLoad(t *testing.T) {
	t.Parallel()
	// Two endpoints of the same service each, so that the answers look the same whichever is configured.
	plain := []*testutil.EchoServer{testutil.NewEchoServer(t, testutil.EchoName("plain")), testutil.NewEchoServer(t, testutil.EchoName("plain"))}
	greeter := []*testutil.GRPCBackend{testutil.NewGRPCBackend(t, "greeter"), testutil.NewGRPCBackend(t, "greeter")}
	other := testutil.NewEchoServer(t, testutil.EchoName("other"))
	docs := func(i int) (director, pool string) {
		extraRoute, extraBackend := "", ""
		if i%2 == 1 {
			extraRoute = `{"backend_name": "other", "host_matcher": "other.example.com"},`
			extraBackend = fmt.Sprintf(`{"name": "other", "host": {"dns_name": "127.0.0.1", "port": %d}},`, other.Port())
		}
		director = `{
  "http": {"routes": [` + extraRoute + `
    {"backend_name": "plain", "host_matcher": "plain.example.com"}
  ]},
  "grpc": {"routes": [{"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}]}
}`
		pool = fmt.Sprintf(`{
  "http": {"backends": [`+extraBackend+`
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, plain[i%2].Port(), grpcPort(greeter[i%2]))
		return director, pool
	}
	director, pool := docs(0)
	k := startKedge(t, director, pool, "--log_level=info")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // a bound; the test cancels far earlier
	defer cancel()
	h1, h2 := k.client(false), k.client(true)
	loads := []*load{
		startLoad(ctx, h1, "https://plain.example.com/reload", 2),
		startLoad(ctx, h2, "https://plain.example.com/reload", 2),
	}
	rpc := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))
	grpcLoad := &load{}
	grpcLoad.wg.Add(2)
	for range 2 {
		go func() {
			defer grpcLoad.wg.Done()
			for n := 0; n < 100000 && ctx.Err() == nil; n++ { // bounded in count and by ctx
				_, err := rpc.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10})
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					grpcLoad.fail(err.Error())
					continue
				}
				grpcLoad.ok.Add(1)
			}
		}()
	}
	loads = append(loads, grpcLoad)

	// Long-lived requests that every reload happens under; they outlive the load, so they have their own bound.
	longCtx, longCancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer longCancel()
	longErrs := make(chan string, 2)
	var long sync.WaitGroup
	long.Add(2)
	go func() { // 40 chunks 250ms apart: 10s
		defer long.Done()
		req, _ := http.NewRequestWithContext(longCtx, http.MethodGet, "https://plain.example.com/stream?chunks=40&interval=250ms", nil)
		resp, err := (&http.Client{Transport: h2.Transport}).Do(req) // no client timeout: the download takes 10s
		if err != nil {
			longErrs <- fmt.Sprintf("download: %v", err)
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if n := strings.Count(string(body), "chunk"); err != nil || n != 40 {
			longErrs <- fmt.Sprintf("download across the reloads: %d of 40 chunks, %v", n, err)
		}
	}()
	go func() { // a bidi stream, one message every 250ms for 10s
		defer long.Done()
		stream, err := rpc.FullDuplexCall(longCtx)
		if err != nil {
			longErrs <- fmt.Sprintf("gRPC stream: %v", err)
			return
		}
		for i := range 40 {
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 250_000}}}); err != nil {
				longErrs <- fmt.Sprintf("gRPC stream across the reloads, message %d: %v", i, err)
				return
			}
			if _, err := stream.Recv(); err != nil {
				longErrs <- fmt.Sprintf("gRPC stream across the reloads, message %d: %v", i, err)
				return
			}
		}
		_ = stream.CloseSend()
	}()
	testutil.EventuallyWithin(t, 20*time.Second, "load on every client", func() bool {
		for _, l := range loads {
			if l.ok.Load() < 20 {
				return false
			}
		}
		return true
	})

	reloads := func(result string) int {
		n, _ := strconv.Atoi(metricValue(t, k.debug, `kedge_config_reloads_total{result="`+result+`"}`))
		return n
	}
	okBefore, failedBefore := reloads("success"), reloads("failure")
	const ticks = 8
	invalid := 0
	for i := 1; i <= ticks; i++ {
		time.Sleep(time.Second)
		if i%3 == 0 {
			atomicWrite(t, k.directorPath, `{"http": {"routes": [{"backend_name": "missing", "host_matcher": "plain.example.com"}]}}`)
			invalid++
			continue
		}
		director, pool := docs(i)
		atomicWrite(t, k.poolPath, pool)
		atomicWrite(t, k.directorPath, director)
	}
	// The last write was valid (without the other route): kedge ends on it.
	testutil.EventuallyWithin(t, 10*time.Second, "the last valid config", func() bool {
		return status(h1, "https://other.example.com/") == http.StatusBadGateway
	})
	long.Wait()
	cancel()
	for _, l := range loads {
		l.wg.Wait()
	}
	close(longErrs)
	for e := range longErrs {
		t.Error(e)
	}
	names := []string{"HTTP/1.1", "HTTP/2", "gRPC"}
	for i, l := range loads {
		t.Logf("%s: %d requests succeeded, %d failed", names[i], l.ok.Load(), len(l.failures))
		if len(l.failures) > 0 {
			t.Errorf("%s: %d of %d requests failed during the reloads; first: %s", names[i], len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0])
		}
	}
	for i := range 2 { // the reloads did move the traffic
		if plain[i].Hits() == 0 || greeter[i].Calls() == 0 {
			t.Errorf("endpoint %d of the HTTP and gRPC backends got %d and %d requests, want some of each", i, plain[i].Hits(), greeter[i].Calls())
		}
	}
	okReloads, failedReloads := reloads("success")-okBefore, reloads("failure")-failedBefore
	t.Logf("%d reloads applied, %d rejected", okReloads, failedReloads)
	if okReloads < ticks-invalid || failedReloads < invalid {
		t.Errorf("%d reloads applied and %d rejected, want at least %d and %d", okReloads, failedReloads, ticks-invalid, invalid)
	}
}
