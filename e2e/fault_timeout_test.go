package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestKedgeHungBackendTimesOut: with --backend_response_header_timeout=1s, requests to a backend that never answers
// get 504 backend-timeout after that second (not before, and not much later) over HTTP/1.1 and HTTP/2, and kedge
// gives up its request to the backend; a gRPC call to a backend that never answers ends with DeadlineExceeded at
// the client's deadline. Meanwhile a streamed HTTP response and a gRPC stream, both running longer than the
// timeout, and a gRPC call whose first message comes after it, complete: the timeout bounds only the wait for
// response headers of HTTP backends.
func TestKedgeHungBackendTimesOut(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	var waiting atomic.Int64 // hung requests the backend still holds
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		waiting.Add(1)
		defer waiting.Add(-1)
		<-r.Context().Done() // until kedge gives up
	}))
	t.Cleanup(hung.Close)
	steady := testutil.NewEchoServer(t, testutil.EchoName("steady"))
	slowGRPC := testutil.NewGRPCBackend(t, "slow")
	k := startKedge(t, `{
  "http": {"routes": [
    {"backend_name": "hung", "host_matcher": "hung.example.com"},
    {"backend_name": "steady", "host_matcher": "steady.example.com"}
  ]},
  "grpc": {"routes": [{"backend_name": "slow", "service_name_matcher": "*"}]}
}`, fmt.Sprintf(`{
  "http": {"backends": [
    {"name": "hung", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "steady", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "slow", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, serverPort(t, hung), steady.Port(), grpcPort(slowGRPC)), "--backend_response_header_timeout="+timeout.String())
	rpc := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan string, 16)
	// Streams that outlive the timeout, started first so that they run while the hung requests time out.
	wg.Add(3)
	go func() { // an HTTP/2 download of 12 chunks 250ms apart: 3s
		defer wg.Done()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://steady.example.com/stream?chunks=12&interval=250ms", nil)
		resp, err := k.client(true).Do(req)
		if err != nil {
			errs <- fmt.Sprintf("streamed download: %v", err)
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || strings.Count(string(body), "chunk") != 12 {
			errs <- fmt.Sprintf("streamed download: %s, %d chunks, %v", resp.Status, strings.Count(string(body), "chunk"), err)
		}
	}()
	go func() { // a gRPC stream with a message every 500ms for 3s, without a deadline
		defer wg.Done()
		stream, err := rpc.FullDuplexCall(context.WithoutCancel(ctx))
		if err != nil {
			errs <- fmt.Sprintf("gRPC stream: %v", err)
			return
		}
		for i := range 6 {
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 500_000}}}); err != nil {
				errs <- fmt.Sprintf("gRPC stream message %d: %v", i, err)
				return
			}
			if _, err := stream.Recv(); err != nil {
				errs <- fmt.Sprintf("gRPC stream message %d: %v", i, err)
				return
			}
		}
		_ = stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			errs <- fmt.Sprintf("gRPC stream end: %v", err)
		}
	}()
	go func() { // a gRPC call whose only message comes after 2s, twice the HTTP timeout
		defer wg.Done()
		stream, err := rpc.StreamingOutputCall(context.WithoutCancel(ctx), &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 2_000_000}}})
		if err == nil {
			_, err = stream.Recv()
		}
		if err != nil {
			errs <- fmt.Sprintf("slow gRPC answer: %v", err)
		}
	}()

	for _, h2 := range []bool{false, true} {
		c := k.client(h2)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://hung.example.com/", nil)
		resp, err := c.Do(req)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("hung backend (h2 %v): %v", h2, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Kedge-Error-Type") != "backend-timeout" {
			t.Errorf("hung backend (h2 %v): %s %q, want 504 backend-timeout", h2, resp.Status, resp.Header.Get("X-Kedge-Error-Type"))
		}
		if took < timeout-50*time.Millisecond || took > timeout+3*time.Second {
			t.Errorf("hung backend (h2 %v): answered after %v, want about %v", h2, took, timeout)
		}
	}
	// kedge gave up its requests to the hung backend: the backend sees them cancelled.
	testutil.EventuallyWithin(t, 5*time.Second, "kedge to cancel its requests to the hung backend", func() bool { return waiting.Load() == 0 })

	// gRPC: a call to a backend that does not answer ends at the client's deadline.
	deadline := 800 * time.Millisecond
	callCtx, callCancel := context.WithTimeout(ctx, deadline)
	start := time.Now()
	stream, err := rpc.StreamingOutputCall(callCtx, &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 60_000_000}}})
	if err == nil {
		_, err = stream.Recv()
	}
	took := time.Since(start)
	callCancel()
	if grpcstatus.Code(err) != codes.DeadlineExceeded {
		t.Errorf("gRPC call to a backend that does not answer: %v, want DeadlineExceeded", err)
	}
	if took < deadline-50*time.Millisecond || took > deadline+3*time.Second {
		t.Errorf("gRPC call with a %v deadline ended after %v", deadline, took)
	}

	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if code, body := debugGet(t, "http://"+k.debug+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the timeouts: %d %s", code, body)
	}
}

// serverPort is the port of an httptest server on 127.0.0.1.
func serverPort(t *testing.T, s *httptest.Server) int {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(s.URL[strings.LastIndexByte(s.URL, ':')+1:], "%d", &port); err != nil {
		t.Fatalf("port of %s: %v", s.URL, err)
	}
	return port
}
