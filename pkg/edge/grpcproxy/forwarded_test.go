package grpcproxy

import (
	"net/netip"
	"strings"
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
)

// TestForwardingMetadata: a client's x-forwarded-*, x-real-ip and forwarded metadata never reach the backend as
// sent; kedge sets what it saw, exactly as on the HTTP path. A trusted proxy's chain is kept and appended to.
func TestForwardingMetadata(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		policy *forwarded.Policy
		want   map[string]string // "" means absent
	}{
		{"untrusted client", nil, map[string]string{
			"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "x-forwarded-proto": "https",
			"forwarded": "", "true-client-ip": "",
		}},
		{"trusted proxy", forwarded.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}), map[string]string{
			"x-forwarded-for": "1.2.3.4, 127.0.0.1", "x-real-ip": "1.2.3.4", "x-forwarded-proto": "gopher",
			"x-forwarded-host": "evil.example.com", "forwarded": "for=9.9.9.9", "true-client-ip": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}, forwarded: tt.policy})
			ctx := metadata.NewOutgoingContext(callCtx(t), metadata.Pairs(
				"x-forwarded-for", "1.2.3.4",
				"x-forwarded-host", "evil.example.com",
				"x-forwarded-proto", "gopher",
				"x-real-ip", "5.6.7.8",
				"forwarded", "for=9.9.9.9",
				"true-client-ip", "8.8.8.8",
			))
			if _, err := e.client(t, "").UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
				t.Fatalf("UnaryCall: %v", err)
			}
			md := waitSeen(t, e.backends["a"]).md
			for k, want := range tt.want {
				if got := strings.Join(md.Get(k), ","); got != want {
					t.Errorf("backend saw %s = %q, want %q", k, got, want)
				}
			}
			if tt.policy == nil {
				if got := strings.Join(md.Get("x-forwarded-host"), ","); got != e.addr {
					t.Errorf("backend saw x-forwarded-host = %q, want the :authority %q", got, e.addr)
				}
			}
		})
	}
}
