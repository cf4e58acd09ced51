package grpcproxy

import (
	"strings"
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/tracertest"
)

const (
	testTraceID   = "4bf92f3577b34da6a3ce929d0e0e4736"
	testParent    = "00-" + testTraceID + "-00f067aa0ba902b7-01"
	testParentSID = "00f067aa0ba902b7"
)

// TestTracing checks that kedge's span for a call continues the client's traceparent metadata, is the backend's
// parent, and carries no metadata value (authorization, cookie, a token).
func TestTracing(t *testing.T) {
	t.Parallel()
	tr, exp := tracertest.New(t, "kedge")
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}, tracer: tr})
	ctx := metadata.NewOutgoingContext(callCtx(t), metadata.Pairs(
		"traceparent", testParent,
		"authorization", "Bearer b4ckend-t0ken",
		"cookie", "session=s3ssion-c00kie",
	))
	if _, err := e.client(t, "").UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	md := waitSeen(t, e.backends["a"]).md
	// finish runs after the handler returned; the span is exported then.
	testutil.Eventually(t, "one span exported", func() bool { return len(exp.GetSpans()) == 1 })
	sp := exp.GetSpans()[0]
	want := "00-" + testTraceID + "-" + sp.SpanContext.SpanID().String() + "-01"
	if got := strings.Join(md.Get("traceparent"), ","); got != want {
		t.Errorf("backend got traceparent %q, want %q", got, want)
	}
	if sp.Parent.SpanID().String() != testParentSID || sp.Name != "/grpc.testing.TestService/UnaryCall" {
		t.Errorf("span %q parent %v: want the client's span as parent", sp.Name, sp.Parent)
	}
	attrs := map[string]string{}
	for _, kv := range sp.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
		for _, secret := range []string{"b4ckend-t0ken", "s3ssion-c00kie"} {
			if strings.Contains(kv.Value.Emit(), secret) {
				t.Errorf("span attribute %s holds a metadata value", kv.Key)
			}
		}
	}
	if attrs["rpc.grpc.status_code"] != "0" || attrs["kedge.route"] != "a" || attrs["client.address"] != "127.0.0.1" {
		t.Errorf("attributes %v", attrs)
	}
}

// TestTracingOffPassesTraceparent: without a tracer, the client's traceparent reaches the backend unchanged.
func TestTracingOffPassesTraceparent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	ctx := metadata.NewOutgoingContext(callCtx(t), metadata.Pairs("traceparent", testParent, "tracestate", "a=b"))
	if _, err := e.client(t, "").UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	md := waitSeen(t, e.backends["a"]).md
	if got := strings.Join(md.Get("traceparent"), ","); got != testParent || strings.Join(md.Get("tracestate"), ",") != "a=b" {
		t.Errorf("backend got traceparent %q tracestate %q, want the client's", got, md.Get("tracestate"))
	}
}
