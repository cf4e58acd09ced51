package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// fakeAPIServer is the smallest TLS Kubernetes API server kubectl is happy with: /version, legacy discovery (/api,
// /apis, /api/v1) and a PodList. It records the Authorization header of every request, so a test can show that
// kubectl's own credentials crossed winch and kedge inside the TLS tunnel.
type fakeAPIServer struct {
	srv    *httptest.Server
	caFile string

	mu    sync.Mutex
	seen  []string // "METHOD PATH Authorization", one per request; guarded by mu
	plain int      // requests that did not arrive over TLS; guarded by mu
}

// fakeVersion is the gitVersion the fake API server reports.
const fakeVersion = "v1.31.0-winch-e2e"

// newFakeAPIServer starts the server with a certificate for name, signed by a CA of its own (written to caFile).
func newFakeAPIServer(t *testing.T, name string) *fakeAPIServer {
	t.Helper()
	ca := testutil.NewCA(t)
	f := &fakeAPIServer{caFile: ca.WriteFiles(t, t.TempDir())}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.EnableHTTP2 = true
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t, name)}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// port is the TCP port the server listens on.
func (f *fakeAPIServer) port() int {
	return f.srv.Listener.Addr().(*net.TCPAddr).Port
}

// requests returns what the server has seen so far and how many requests came without TLS.
func (f *fakeAPIServer) requests() (seen []string, plain int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...), f.plain
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
	if r.TLS == nil {
		f.plain++
	}
	f.mu.Unlock()
	var body any
	switch r.URL.Path {
	case "/version":
		body = map[string]string{"major": "1", "minor": "31", "gitVersion": fakeVersion, "platform": "linux/amd64"}
	case "/api":
		body = map[string]any{"kind": "APIVersions", "versions": []string{"v1"},
			"serverAddressByClientCIDRs": []map[string]string{{"clientCIDR": "0.0.0.0/0", "serverAddress": "kube.demo.kedge.local:443"}}}
	case "/apis":
		body = map[string]any{"kind": "APIGroupList", "apiVersion": "v1", "groups": []any{}}
	case "/api/v1":
		body = map[string]any{"kind": "APIResourceList", "groupVersion": "v1", "resources": []map[string]any{{
			"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
			"verbs": []string{"get", "list", "watch"}, "shortNames": []string{"po"},
		}}}
	case "/api/v1/pods":
		body = fakePodList()
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
			"reason": "NotFound", "code": 404, "message": "the fake API server does not serve " + r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func fakePodList() map[string]any {
	created := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	pod := func(ns, name string) map[string]any {
		return map[string]any{
			"metadata": map[string]any{"name": name, "namespace": ns, "uid": ns + "-" + name, "creationTimestamp": created},
			"spec":     map[string]any{"containers": []map[string]any{{"name": "main", "image": "example/app:1"}}},
			"status":   map[string]any{"phase": "Running"},
		}
	}
	return map[string]any{
		"kind": "PodList", "apiVersion": "v1", "metadata": map[string]any{"resourceVersion": "42"},
		"items": []any{pod("default", "web-7d4b9c"), pod("kube-system", "coredns-5d78c9")},
	}
}

// kubeconfig writes a kubeconfig for server (a name only kedge can route), trusting the fake server's CA, with
// token as the user's bearer token.
func (f *fakeAPIServer) kubeconfig(t *testing.T, server, token string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kubeconfig")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: private
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: me
  user:
    token: %s
contexts:
- name: private
  context: {cluster: private, user: me}
current-context: private
`, server, f.caFile, token)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs the real kubectl with HTTPS_PROXY pointing at winch, a private HOME and cache directory.
func (w *winchEnv) kubectl(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	full := append([]string{"--kubeconfig", kubeconfig, "--cache-dir", filepath.Join(home, "cache"), "--request-timeout=15s"}, args...)
	return runClient(t, w.proxyEnv("HOME="+home), "kubectl", full...)
}

// checkKubeRequests fails unless the fake server saw at least one request, every one of them over TLS with
// "Bearer token".
func checkKubeRequests(t *testing.T, f *fakeAPIServer, token string) {
	t.Helper()
	seen, plain := f.requests()
	if len(seen) == 0 || plain != 0 {
		t.Fatalf("API server saw %d requests, %d without TLS", len(seen), plain)
	}
	for _, s := range seen {
		if !strings.HasSuffix(s, " Bearer "+token) {
			t.Errorf("API server request without kubectl's token: %q", s)
		}
	}
}
