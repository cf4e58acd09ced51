package tunnel

import (
	"io"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/tracertest"
)

// TestTracing checks that a CONNECT request's traceparent starts a span that covers the tunnel and ends with its
// outcome, without the proxy token.
func TestTracing(t *testing.T) {
	t.Parallel()
	tr, exp := tracertest.New(t, "kedge")
	e := newEnv(t, envOptions{tracer: tr})
	c, br, resp := e.connect(t, "count.test:7000", nil, auth(), "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %d", resp.StatusCode)
	}
	if _, err := io.WriteString(c, "hello"); err != nil {
		t.Fatal(err)
	}
	if len(exp.GetSpans()) != 0 {
		t.Error("the span ended while the tunnel was open")
	}
	_ = c.CloseWrite()
	if _, err := io.ReadAll(br); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "tunnel span", func() bool { return len(exp.GetSpans()) == 1 })
	sp := exp.GetSpans()[0]
	if sp.Name != "CONNECT" || sp.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sp.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span %q %v parent %v: want CONNECT in the client's trace", sp.Name, sp.SpanContext.TraceID(), sp.Parent.SpanID())
	}
	attrs := map[string]string{}
	for _, kv := range sp.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
		if strings.Contains(kv.Value.Emit(), testToken) {
			t.Errorf("span attribute %s holds the proxy token", kv.Key)
		}
	}
	if attrs["http.response.status_code"] != "200" || attrs["kedge.route"] != "count" || attrs["http.request.method"] != "CONNECT" {
		t.Errorf("attributes %v", attrs)
	}
}
