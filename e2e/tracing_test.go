package e2e

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// otlpCollector is an in-process OTLP/gRPC collector on 127.0.0.1: a real TraceService that keeps every span it is
// sent, with the service.name of its resource.
type otlpCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	addr  string
	mu    sync.Mutex
	spans []gotSpan // guarded by mu
}

// gotSpan is one exported span, IDs in hex.
type gotSpan struct {
	service, name          string
	trace, span, parent    string
	attrs                  map[string]string
	statusCode, statusText string
}

func startCollector(t *testing.T) *otlpCollector {
	t.Helper()
	c := &otlpCollector{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c
}

func (c *otlpCollector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, convertSpan(service, s))
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func convertSpan(service string, s *tracepb.Span) gotSpan {
	g := gotSpan{service: service, name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()),
		span: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{},
		statusCode: s.GetStatus().GetCode().String(), statusText: s.GetStatus().GetMessage()}
	for _, kv := range s.GetAttributes() {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			g.attrs[kv.GetKey()] = v.GetStringValue()
		default:
			g.attrs[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	return g
}

// inTrace returns the spans of trace id.
func (c *otlpCollector) inTrace(id string) []gotSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []gotSpan
	for _, s := range c.spans {
		if s.trace == id {
			out = append(out, s)
		}
	}
	return out
}

func (c *otlpCollector) all() []gotSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]gotSpan(nil), c.spans...)
}

// spanOf returns the one span of service in spans.
func spanOf(t *testing.T, spans []gotSpan, service string) gotSpan {
	t.Helper()
	var found []gotSpan
	for _, s := range spans {
		if s.service == service {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %s spans in the trace, want 1: %+v", len(found), service, spans)
	}
	return found[0]
}

// parseTraceparent returns the trace ID and parent span ID of a traceparent value.
func parseTraceparent(t *testing.T, v string) (trace, parent string) {
	t.Helper()
	p := strings.Split(v, "-")
	if len(p) != 4 || len(p[1]) != 32 || len(p[2]) != 16 {
		t.Fatalf("traceparent %q is malformed", v)
	}
	return p[1], p[2]
}

// TestTracingWinchKedgeBackend runs the real winch and kedge with an in-process OTLP collector and checks that a
// request through winch -> kedge -> backend is one trace: the client's span is winch's parent, winch's span is
// kedge's parent, and the backend's traceparent names kedge's span; for HTTP, gRPC and a CONNECT tunnel. The spans
// are checked after SIGTERM: shutdown flushes them. No token, cookie or query value reaches a span.
func TestTracingWinchKedgeBackend(t *testing.T) {
	collector := startCollector(t)
	tracingFlags := []string{"--tracing_otlp_endpoint=" + collector.addr, "--tracing_otlp_insecure"}

	web := testutil.NewEchoServer(t, testutil.EchoName("web"))
	greeter := testutil.NewGRPCBackend(t, "greeter")
	backendCA := testutil.NewCA(t)
	tunnelled := testutil.NewEchoServer(t, testutil.EchoName("tunnelled"), testutil.EchoTLS(backendCA.Server(t, "tunnel.example.com")))
	k := startKedge(t, `{
  "http": {"routes": [
    {"backend_name": "web", "host_matcher": "web.example.com"},
    {"backend_name": "tunnel", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
  ]},
  "grpc": {"routes": [{"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}]}
}`, fmt.Sprintf(`{
  "http": {"backends": [
    {"name": "web", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "tunnel", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, web.Port(), tunnelled.Port(), grpcPort(greeter)), append(tracingFlags, "--unsafe_bearer_token_proxy_auth=pr0xy-t0ken")...)
	w := startWinch(t, fmt.Sprintf(`{"routes": [
  {"direct": {"key": "web.example.com", "url": %[1]q}, "protocol": "HTTP", "proxy_auth": "edge", "backend_auth": "svc"},
  {"direct": {"key": "tunnel.example.com:443", "url": %[1]q}, "protocol": "HTTP", "proxy_auth": "edge"},
  {"direct": {"key": "greeter.example.com:443", "url": %[2]q}, "protocol": "GRPC", "proxy_auth": "edge", "backend_auth": "svc"}
]}`, kedgeURL(k), kedgeGRPCURL(k)), `{"auth_sources": [
  {"name": "edge", "token": {"token": "pr0xy-t0ken"}},
  {"name": "svc", "token": {"token": "b4ckend-t0ken"}}
]}`, append(tracingFlags, "--client_tls_root_ca_files="+k.caFile)...)

	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparent := func(span string) string { return "00-" + clientTrace + "-" + span + "-01" }
	proxyURL, _ := url.Parse(w.proxyURL)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// HTTP: a plain-HTTP request through winch, carrying a cookie and a token in its query.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://web.example.com/p?access_token=qu3ry-t0ken", nil)
	req.Header.Set("Traceparent", traceparent("1111111111111111"))
	req.Header.Set("Cookie", "session=s3ssion-c00kie")
	viaWinch := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	defer viaWinch.CloseIdleConnections()
	resp, err := viaWinch.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP via winch: %s", resp.Status)
	}
	httpBackendTP := resp.Header.Get("X-Echo-Header-Traceparent")

	// gRPC through winch's gRPC port.
	var grpcBackendTP string
	{
		c := testpb.NewTestServiceClient(winchGRPC(t, w, "greeter.example.com:443"))
		cctx := metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent("2222222222222222"))
		if _, err := c.UnaryCall(cctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("gRPC via winch: %v", err)
		}
		grpcBackendTP = strings.Join(greeter.LastMetadata().Get("traceparent"), ",")
	}

	// CONNECT: an HTTPS request through a tunnel winch opens through kedge; the traceparent rides on the CONNECT.
	tunnels := &http.Client{Transport: &http.Transport{
		Proxy:              http.ProxyURL(proxyURL),
		ProxyConnectHeader: http.Header{"Traceparent": {traceparent("3333333333333333")}},
		TLSClientConfig:    &tls.Config{RootCAs: backendCA.Pool()},
		DisableKeepAlives:  true,
	}}
	resp, err = tunnels.Get("https://tunnel.example.com/")
	if err != nil {
		t.Fatalf("CONNECT via winch: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	tunnels.CloseIdleConnections()

	// Shutdown flushes the spans (the batch processor would otherwise wait up to 5 s).
	w.proc.stop(winchDrain + 5*time.Second)
	k.proc.stop(k.drain + 5*time.Second)

	check := func(name, clientSpan, backendTP string, wantKedgeName string) {
		t.Run(name, func(t *testing.T) {
			spans := collector.inTrace(clientTrace)
			var mine []gotSpan
			winchSpan := gotSpan{}
			for _, s := range spans {
				if s.service == "winch" && s.parent == clientSpan {
					winchSpan = s
				}
			}
			if winchSpan.span == "" {
				t.Fatalf("no winch span with parent %s in %+v", clientSpan, spans)
			}
			for _, s := range spans {
				if s.span == winchSpan.span || s.parent == winchSpan.span {
					mine = append(mine, s)
				}
			}
			kedgeSpan := spanOf(t, mine, "kedge")
			if kedgeSpan.parent != winchSpan.span || kedgeSpan.name != wantKedgeName {
				t.Errorf("kedge span %q parent %s, want %q with parent winch's %s", kedgeSpan.name, kedgeSpan.parent, wantKedgeName, winchSpan.span)
			}
			if backendTP != "" {
				trace, parent := parseTraceparent(t, backendTP)
				if trace != clientTrace || parent != kedgeSpan.span {
					t.Errorf("backend traceparent %q: want trace %s, parent kedge's span %s", backendTP, clientTrace, kedgeSpan.span)
				}
			}
		})
	}
	check("HTTP", "1111111111111111", httpBackendTP, "GET")
	check("gRPC", "2222222222222222", grpcBackendTP, "/grpc.testing.TestService/UnaryCall")
	check("CONNECT", "3333333333333333", "", "CONNECT")
	if httpBackendTP == "" || grpcBackendTP == "" {
		t.Errorf("backend traceparents: HTTP %q, gRPC %q", httpBackendTP, grpcBackendTP)
	}

	for _, s := range collector.all() {
		for k, v := range s.attrs {
			for _, secret := range []string{"pr0xy-t0ken", "b4ckend-t0ken", "s3ssion-c00kie", "qu3ry-t0ken", "access_token"} {
				if strings.Contains(v, secret) || strings.Contains(k, secret) {
					t.Errorf("%s span %q: attribute %s=%q holds a secret", s.service, s.name, k, v)
				}
			}
		}
	}
}
