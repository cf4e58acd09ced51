package edge

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func TestProtectDebug(t *testing.T) {
	t.Parallel()
	a, err := authn.New(authn.Config{StaticToken: "dbg"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gate, err := authz.NewGate(a, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := protectDebug(gate)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	tests := []struct {
		name   string
		header http.Header
		status int
	}{
		{"no token", nil, 401},
		{"Authorization", http.Header{"Authorization": {"Bearer dbg"}}, 200},
		{"Proxy-Authorization", http.Header{"Proxy-Authorization": {"Bearer dbg"}}, 200},
		{"wrong token", http.Header{"Authorization": {"Bearer nope"}}, 401},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/debug/config", nil)
		req.Header = tt.header
		if req.Header == nil {
			req.Header = http.Header{}
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tt.status {
			t.Errorf("%s: %d, want %d", tt.name, rec.Code, tt.status)
		}
		if tt.status == 401 && rec.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
		}
	}
}
