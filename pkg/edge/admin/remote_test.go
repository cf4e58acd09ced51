package admin_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/admin"
)

func TestLoopbackPeer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1234", true},
		{"127.3.4.5:80", true},
		{"[::1]:1234", true},
		{"[::1%lo]:1234", true},
		{"[::ffff:127.0.0.1]:1234", true},
		{"10.0.0.5:1234", false},
		{"192.168.1.10:443", false},
		{"[2001:db8::1]:1234", false},
		{"[::ffff:10.0.0.5]:1234", false},
		{"0.0.0.0:1234", false},
		{"[::]:1234", false},
		{"128.0.0.1:1", false},
		{"localhost:1234", false}, // a name is not an address
		{"127.0.0.1", false},      // no port: not a RemoteAddr
		{"", false},
		{"@", false}, // unix socket peers
	}
	for _, tt := range tests {
		if got := admin.LoopbackPeer(tt.addr); got != tt.want {
			t.Errorf("LoopbackPeer(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}

// TestRemotePeers serves requests whose peer address is set by hand: nothing leaves the machine.
func TestRemotePeers(t *testing.T) {
	t.Parallel()
	deps := admin.Deps{
		Gatherer:    testRegistry(t),
		MetricsPath: "/prom",
		Config:      func() any { return map[string]any{"routes": []string{"a"}} },
		Cmdline:     []string{"kedge", "--unsafe_bearer_token_proxy_auth=<redacted>"},
	}
	closed := admin.New(deps)
	deps.RemoteDebug = true
	open := admin.New(deps)
	tests := []struct {
		path       string
		remoteOK   bool // answered normally to a remote peer without RemoteDebug
		wantStatus int  // the normal answer
	}{
		{"/_healthz", true, 200},
		{"/readyz", true, 200},
		{"/prom", true, 200},
		{"/_version", true, 200},
		{"/debug/pprof/", false, 200},
		{"/debug/pprof/cmdline", false, 200},
		{"/debug/pprof/goroutine?debug=1", false, 200},
		{"/debug/config", false, 200},
		{"//debug/pprof/cmdline", false, http.StatusTemporaryRedirect},
		{"/x/../debug/config", false, http.StatusTemporaryRedirect},
		{"/debug/pprof", false, http.StatusTemporaryRedirect},
		{"/metrics", false, 404}, // not the metrics path here
		{"/nothing", false, 404},
	}
	serve := func(h http.Handler, peer, path string) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "http://kedge.internal:8080"+path, nil)
		req.RequestURI = path // origin-form, as a server sees it
		req.URL.Scheme, req.URL.Host = "", ""
		req.RemoteAddr = peer
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			for _, peer := range []string{"127.0.0.1:40000", "[::1]:40000"} {
				if rec := serve(closed, peer, tt.path); rec.Code != tt.wantStatus {
					t.Errorf("%s from %s = %d, want %d", tt.path, peer, rec.Code, tt.wantStatus)
				}
			}
			for _, peer := range []string{"10.0.0.5:1234", "[2001:db8::5]:1234", "[::ffff:10.0.0.5]:1234"} {
				rec := serve(closed, peer, tt.path)
				switch {
				case tt.remoteOK && rec.Code != tt.wantStatus:
					t.Errorf("%s from %s = %d, want %d", tt.path, peer, rec.Code, tt.wantStatus)
				case !tt.remoteOK && (rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "--server_debug_remote_access")):
					t.Errorf("%s from %s = %d %q, want 403 naming --server_debug_remote_access", tt.path, peer, rec.Code, rec.Body.String())
				}
				if rec := serve(open, peer, tt.path); rec.Code != tt.wantStatus {
					t.Errorf("with RemoteDebug: %s from %s = %d, want %d", tt.path, peer, rec.Code, tt.wantStatus)
				}
			}
		})
	}
}

// TestCmdlineNeverShowsTheProcessArgs: the page shows Deps.Cmdline, never os.Args as pprof's own handler does.
func TestCmdlineNeverShowsTheProcessArgs(t *testing.T) {
	t.Parallel()
	want := "kedge\x00--unsafe_bearer_token_proxy_auth=<redacted>"
	r := get(t, newServer(t, admin.Deps{Cmdline: strings.Split(want, "\x00")}), "/debug/pprof/cmdline")
	if r.status != http.StatusOK || r.body != want {
		t.Errorf("cmdline = %d %q, want 200 %q", r.status, r.body, want)
	}
	if strings.Contains(r.body, os.Args[0]) {
		t.Error("cmdline shows the process's own arguments")
	}
}
