package admin_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/admin"
)

// TestJWKS: the identity keys are public: served to any peer, past Protect, and 404 without a signer.
func TestJWKS(t *testing.T) {
	t.Parallel()
	keys := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"keys":[]}`)) })
	deny := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) })
	}
	tests := []struct {
		name   string
		deps   admin.Deps
		status int
		body   string
	}{
		{"served to a remote peer past Protect", admin.Deps{JWKS: keys, Protect: deny}, http.StatusOK, `{"keys":[]}`},
		{"no signer", admin.Deps{Protect: deny}, http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := admin.New(tt.deps)
			req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, admin.PathJWKS, nil)
			req.RemoteAddr = "203.0.113.7:40000" // a non-loopback peer, as a backend in the cluster is
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || rec.Body.String() != tt.body {
				t.Errorf("GET %s = %d %q, want %d %q", admin.PathJWKS, rec.Code, rec.Body.String(), tt.status, tt.body)
			}
		})
	}
}
