package httpproxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/tracertest"
)

// TestTracing checks that kedge's span continues the client's trace and is the backend's parent, and that no secret
// of the request (proxy token, Authorization, Cookie, a token in the query, an identity header) reaches a span.
func TestTracing(t *testing.T) {
	t.Parallel()
	tr, exp := tracertest.New(t, "kedge")
	b := newBackend(t, "web", nil)
	gate := startGate(t, authn.Config{StaticToken: "pr0xy-t0ken"}, nil)
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "web"}}, backends: []*testBackend{b}, gate: gate, tracer: tr})

	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	secrets := []string{"pr0xy-t0ken", "b4ckend-t0ken", "s3ssion-c00kie", "qu3ry-t0ken", "f0rged-identity"}
	resp := e.do(t, "GET", "app.example.com", "/path?access_token=qu3ry-t0ken", http.Header{
		"Proxy-Authorization": {"Bearer pr0xy-t0ken"},
		"Authorization":       {"Bearer b4ckend-t0ken"},
		"Cookie":              {"session=s3ssion-c00kie"},
		"X-Kedge-Identity":    {"f0rged-identity"},
		"Traceparent":         {parent},
	}, nil)
	s := readSeen(t, resp)

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	sp := spans[0]
	got := s.Header.Get("Traceparent")
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + sp.SpanContext.SpanID().String() + "-01"
	if got != want {
		t.Errorf("backend got traceparent %q, want %q (kedge's span as parent)", got, want)
	}
	if sp.Parent.SpanID().String() != "00f067aa0ba902b7" || sp.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("kedge span %v parent %v: not a child of the client's span", sp.SpanContext, sp.Parent)
	}
	attrs := map[string]string{}
	for _, kv := range sp.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range map[string]string{"http.request.method": "GET", "http.response.status_code": "200", "kedge.route": "web", "client.address": "127.0.0.1"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
	for k, v := range attrs {
		for _, secret := range secrets {
			if strings.Contains(v, secret) || strings.Contains(k, secret) {
				t.Errorf("span attribute %s=%q holds a secret of the request", k, v)
			}
		}
	}
	if strings.Contains(sp.Name, "?") || strings.Contains(sp.Name, "token") {
		t.Errorf("span name %q", sp.Name)
	}

	// A refused request gets a span too, marked with its error type.
	resp = e.do(t, "GET", "app.example.com", "/", http.Header{"Proxy-Authorization": {"Bearer wr0ng"}}, nil)
	expectKedgeError(t, resp, 401, "unauthorized")
	spans = exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	var errType string
	for _, kv := range spans[1].Attributes {
		if kv.Key == "error.type" {
			errType = kv.Value.Emit()
		}
		if strings.Contains(kv.Value.Emit(), "wr0ng") {
			t.Errorf("refused request's span holds its token: %s", kv.Key)
		}
	}
	if errType != "unauthorized" || spans[1].Parent.IsValid() {
		t.Errorf("refused span: error.type %q, parent %v; want unauthorized and a new trace", errType, spans[1].Parent)
	}
}

// TestTracingOffPassesTraceparent checks today's behaviour without tracing: the client's traceparent and tracestate
// reach the backend unchanged.
func TestTracingOffPassesTraceparent(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "web", nil)
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "web"}}, backends: []*testBackend{b}})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	s := readSeen(t, e.do(t, "GET", "app.example.com", "/", http.Header{"Traceparent": {parent}, "Tracestate": {"a=b"}}, nil))
	if s.Header.Get("Traceparent") != parent || s.Header.Get("Tracestate") != "a=b" {
		t.Errorf("backend got traceparent %q tracestate %q, want the client's", s.Header.Get("Traceparent"), s.Header.Get("Tracestate"))
	}
}
