package discovery

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://kube.example.com:6443", insecure-skip-tls-verify: true}
users:
- name: alice
  user: {token: alice-token}
- name: kedge
  user: {token: kedge-token}
contexts:
- name: ctx
  context: {cluster: c, user: alice}
current-context: ctx
`

func TestRESTConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	token := filepath.Join(dir, "token")
	for name, content := range map[string]string{kubeconfig: testKubeconfig, token: "t0ken"} {
		if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inPod := func(k string) string {
		return map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}[k]
	}
	noEnv := func(string) string { return "" }
	defaults := config.K8sConfig{CAFile: config.DefaultServiceAccountCAFile, TokenFile: config.DefaultServiceAccountTokenFile}
	with := func(f func(*config.K8sConfig)) config.K8sConfig { c := defaults; f(&c); return c }

	tests := []struct {
		name    string
		cfg     config.K8sConfig
		getenv  func(string) string
		host    string
		token   string // BearerToken or, prefixed "file:", BearerTokenFile
		wantErr string
	}{
		{"outside a pod", defaults, noEnv, "", "", "no Kubernetes API"},
		{"in a pod (service-account files absent in this test)", defaults, inPod, "https://10.96.0.1:443", "", ""},
		{"explicit URL and token file", with(func(c *config.K8sConfig) { c.KubeAPIURL = "http://127.0.0.1:8001"; c.TokenFile = token }), noEnv,
			"http://127.0.0.1:8001", "file:" + token, ""},
		{"in a pod with a token file", with(func(c *config.K8sConfig) { c.TokenFile = token }), inPod, "https://10.96.0.1:443", "file:" + token, ""},
		{"explicit token file missing", with(func(c *config.K8sConfig) { c.TokenFile = filepath.Join(dir, "nope") }), inPod, "", "", "--k8sclient_token_file"},
		{"explicit CA file missing", with(func(c *config.K8sConfig) { c.CAFile = filepath.Join(dir, "nope") }), inPod, "", "", "--k8sclient_ca_file"},
		{"kubeconfig current user", with(func(c *config.K8sConfig) { c.KubeconfigPath = kubeconfig }), noEnv, "https://kube.example.com:6443", "alice-token", ""},
		{"kubeconfig other user and URL", with(func(c *config.K8sConfig) {
			c.KubeconfigPath, c.KubeconfigUser, c.KubeAPIURL = kubeconfig, "kedge", "https://other.example.com"
		}), noEnv, "https://other.example.com", "kedge-token", ""},
		{"kubeconfig unknown user", with(func(c *config.K8sConfig) { c.KubeconfigPath, c.KubeconfigUser = kubeconfig, "mallory" }), noEnv, "", "", "mallory"},
		{"kubeconfig missing", with(func(c *config.K8sConfig) { c.KubeconfigPath = filepath.Join(dir, "nope") }), noEnv, "", "", "kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rc, err := RESTConfig(tt.cfg, tt.getenv)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("RESTConfig = %+v, %v; want an error with %q", rc, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Host != tt.host {
				t.Errorf("host = %q, want %q", rc.Host, tt.host)
			}
			gotToken := rc.BearerToken
			if rc.BearerTokenFile != "" {
				gotToken = "file:" + rc.BearerTokenFile
			}
			if gotToken != tt.token {
				t.Errorf("token = %q, want %q", gotToken, tt.token)
			}
		})
	}
	if _, err := NewClient(defaults, noEnv); !errors.Is(err, ErrNoAPI) {
		t.Errorf("NewClient outside a pod: %v, want ErrNoAPI", err)
	}
}
