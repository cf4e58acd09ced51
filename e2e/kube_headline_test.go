//go:build kube

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// kubeDirector: the API server by name through a CONNECT tunnel (kubectl's own TLS and token end to end), and in
// reverse-proxy mode (kedge verifies the API server against its CA; winch injects the credential), with and
// without the credential, and with a CA that did not sign the API server's certificate.
const kubeDirector = `{"http": {"routes": [
  {"backend_name": "kube", "host_matcher": "kube.demo.kedge.local", "port_matcher": 443, "proxy_mode": "CONNECT"},
  {"backend_name": "kube_tls", "host_matcher": "kube-rp.demo.kedge.local", "port_matcher": 80},
  {"backend_name": "kube_tls", "host_matcher": "kube-rp-anon.demo.kedge.local", "port_matcher": 80},
  {"backend_name": "kube_wrong_ca", "host_matcher": "kube-rp-wrong-ca.demo.kedge.local", "port_matcher": 80}
]}}`

// kubePool: %[1]d is the API server's port, %[2]q its CA, %[3]q another CA.
const kubePool = `{"http": {"backends": [
  {"name": "kube", "host": {"dns_name": "127.0.0.1", "port": %[1]d}},
  {"name": "kube_tls", "host": {"dns_name": "127.0.0.1", "port": %[1]d}, "security": {"ca_file": %[2]q, "server_name": "kube.demo.kedge.local"}},
  {"name": "kube_wrong_ca", "host": {"dns_name": "127.0.0.1", "port": %[1]d}, "security": {"ca_file": %[3]q, "server_name": "kube.demo.kedge.local"}}
]}}`

// kubeMapper: %[1]q is kedge's URL.
const kubeMapper = `{"routes": [
  {"direct": {"key": "kube.demo.kedge.local:443", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "kube-rp.demo.kedge.local", "url": %[1]q}, "proxy_auth": "proxy", "backend_auth": "kube-admin", "protocol": "HTTP"},
  {"direct": {"key": "kube-rp-anon.demo.kedge.local", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "kube-rp-wrong-ca.demo.kedge.local", "url": %[1]q}, "proxy_auth": "proxy", "backend_auth": "kube-admin", "protocol": "HTTP"}
]}`

// kubeAuth: %[1]q is the admin's kubeconfig, whose user winch's kube source reads.
const kubeAuth = `{"auth_sources": [
  {"name": "proxy", "token": {"token": "` + pathProxyToken + `"}},
  {"name": "kube-admin", "kube": {"user": "kubeenv-admin", "path": %[1]q}}
]}`

// TestKubeKubectlThroughWinchAndKedge is the headline use against a real API server: kubectl with HTTPS_PROXY
// pointing at winch, kedge tunnelling to the API server.
func TestKubeKubectlThroughWinchAndKedge(t *testing.T) {
	k := startRealKube(t, "kube.demo.kedge.local")
	u, err := url.Parse(k.URL)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	fmt.Sscan(u.Port(), &port)
	otherCA := testutil.NewCA(t).WriteFiles(t, t.TempDir())
	kd := startKedge(t, kubeDirector, fmt.Sprintf(kubePool, port, k.CAFile, otherCA), "--unsafe_bearer_token_proxy_auth="+pathProxyToken)
	w := startWinch(t, fmt.Sprintf(kubeMapper, kedgeURL(kd)), fmt.Sprintf(kubeAuth, k.Kubeconfig), "--client_tls_root_ca_files="+kd.caFile)

	// The user's kubeconfig names the API server by a name only kedge routes; its token is the admin's.
	kc := tokenKubeconfig(t, "https://kube.demo.kedge.local:443", k.CAFile, k.Token)
	kubectl := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := w.kubectl(t, kc, args...)
		if err != nil {
			t.Fatalf("kubectl %s through winch: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	t.Run("CONNECT: get ns; server-side apply of 512 KiB; watch; auth whoami; delete", func(t *testing.T) {
		if out := kubectl(t, "get", "ns"); !strings.Contains(out, "kube-system") || !strings.Contains(out, "default") {
			t.Fatalf("kubectl get ns:\n%s", out)
		}
		blob := strings.Repeat("0123456789abcdef", 512<<10/16)
		cm := writeFile(t, t.TempDir(), "big.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big, namespace: default}\ndata:\n  blob: "+blob+"\n")
		// Client-side apply would store the whole object in the last-applied annotation, over its 256 KiB limit.
		if out := kubectl(t, "apply", "--server-side", "-f", cm); !strings.Contains(out, "configmap/big serverside-applied") {
			t.Fatalf("kubectl apply --server-side:\n%s", out)
		}
		if out := kubectl(t, "get", "cm", "big", "-o", "go-template={{len .data.blob}}"); out != fmt.Sprint(len(blob)) {
			t.Fatalf("the ConfigMap read back holds %s bytes, want %d", out, len(blob))
		}

		// A watch through the tunnel receives an update made elsewhere (directly, as the admin).
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		home := t.TempDir()
		watch := exec.CommandContext(ctx, lookClient(t, "kubectl"), "--kubeconfig", kc, "--cache-dir", filepath.Join(home, "cache"),
			"get", "cm", "big", "-w", "-o", `jsonpath={.metadata.name}={.data.version}{"\n"}`)
		watch.Env = w.proxyEnv("HOME=" + home)
		out := &testutil.Buffer{}
		watch.Stdout, watch.Stderr = out, out
		if err := watch.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = watch.Wait() }()
		testutil.EventuallyWithin(t, 30*time.Second, "the watch to list the ConfigMap", func() bool { return strings.Contains(out.String(), "big=") })
		k.mustKubectl(t, "patch", "cm", "big", "--type=merge", "-p", `{"data":{"version":"two"}}`)
		testutil.EventuallyWithin(t, 10*time.Second, "the watch through winch and kedge to see the update", func() bool {
			return strings.Contains(out.String(), "big=two")
		})

		if out := kubectl(t, "auth", "whoami"); !strings.Contains(out, "kubeenv-admin") || !strings.Contains(out, "system:masters") {
			t.Errorf("kubectl auth whoami:\n%s", out)
		}
		if out := kubectl(t, "delete", "cm", "big"); !strings.Contains(out, `configmap "big" deleted`) {
			t.Errorf("kubectl delete:\n%s", out)
		}
		if out, err := w.kubectl(t, kc, "get", "cm", "big"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("after delete: %v\n%s", err, out)
		}
		if strings.Contains(kd.proc.out.String(), k.Token) || strings.Contains(w.proc.out.String(), k.Token) {
			t.Errorf("kedge or winch logged the user's token")
		}
	})

	t.Run("reverse proxy: kedge verifies the API server and winch injects the kube credential", func(t *testing.T) {
		rp := writeFile(t, t.TempDir(), "kubeconfig-rp", `apiVersion: v1
kind: Config
clusters:
- name: rp
  cluster: {server: "http://kube-rp.demo.kedge.local"}
users:
- name: nobody
  user: {}
contexts:
- name: rp
  context: {cluster: rp, user: nobody}
current-context: rp
`)
		if out, err := w.kubectl(t, rp, "get", "ns", "kube-system", "-o", "name"); err != nil || strings.TrimSpace(out) != "namespace/kube-system" {
			t.Errorf("kubectl get ns through the reverse proxy: %v\n%s", err, out)
		}
		out, err := w.curlVia(t, "-i", "http://kube-rp.demo.kedge.local/apis/authentication.k8s.io/v1/selfsubjectreviews",
			"-H", "Content-Type: application/json", "-d", `{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
		if r := parseCurl(t, out); err != nil || r.status != 201 || !strings.Contains(out, "kubeenv-admin") {
			t.Errorf("whoami through the reverse proxy: %v\n%s", err, out)
		}
		out, err = w.curlVia(t, "-i", "http://kube-rp-anon.demo.kedge.local/api/v1/namespaces")
		if r := parseCurl(t, out); err != nil || r.status != 401 || r.header.Get("X-Kedge-Error-Type") != "" {
			t.Errorf("without the credential: want the API server's own 401: %v\n%s", err, out)
		}
		out, err = w.curlVia(t, "-i", "http://kube-rp-wrong-ca.demo.kedge.local/api/v1/namespaces")
		if r := parseCurl(t, out); err != nil || r.status < 500 || r.header.Get("X-Kedge-Error-Type") == "" {
			t.Errorf("a backend CA that did not sign the API server: want kedge's 5xx: %v\n%s", err, out)
		}
	})
}
