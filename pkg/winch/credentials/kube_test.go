package credentials

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
)

// writeKubeconfig writes a kubeconfig whose users section is users (YAML, indented by two spaces) and returns its
// path. The cluster "prod" (https) is used by alice's context, "local" (plain http) by bob's.
func writeKubeconfig(t *testing.T, dir, users string) string {
	t.Helper()
	kc := `apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example.com:6443
- name: local
  cluster:
    server: http://127.0.0.1:8080
contexts:
- name: alice@prod
  context: {cluster: prod, user: alice}
- name: bob@local
  context: {cluster: local, user: bob}
current-context: bob@local
users:
` + users
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func kubeSourceFor(path, user string) config.AuthSource {
	return config.AuthSource{Name: "k8s", Kind: config.KindKube, KubeUser: user, KubeconfigPath: path}
}

func TestKubeStaticToken(t *testing.T) {
	t.Parallel()
	for _, user := range []string{"alice", "bob", "carol"} { // https context, http context, no context
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			path := writeKubeconfig(t, t.TempDir(), `- name: `+user+`
  user:
    token: static-`+user+`
`)
			set := newSetT(t, kubeSourceFor(path, user))
			if tok := mustToken(t, mustGet(t, set, "k8s")); tok != "static-"+user {
				t.Errorf("Token = %q; want static-%s", tok, user)
			}
		})
	}
}

func TestKubeTokenFileRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeKubeconfig(t, dir, `- name: alice
  user:
    tokenFile: `+tokenFile+`
`)
	src := mustGet(t, newSetT(t, kubeSourceFor(path, "alice")), "k8s")
	if tok := mustToken(t, src); tok != "first-token" {
		t.Fatalf("Token = %q; want first-token", tok)
	}
	// Rotate the way kubelet does: a new file renamed over the old one.
	tmp := filepath.Join(dir, "token.new")
	if err := os.WriteFile(tmp, []byte("second-token-rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, tokenFile); err != nil {
		t.Fatal(err)
	}
	if tok := mustToken(t, src); tok != "second-token-rotated" {
		t.Errorf("Token after rotation = %q; want second-token-rotated", tok)
	}
}

func TestKubeExecPlugin(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("exec plugin test needs /bin/sh: ", err)
	}
	dir := t.TempDir()
	plugin := filepath.Join(dir, "plugin.sh")
	script := `#!/bin/sh
n=$(cat "` + dir + `/count" 2>/dev/null || echo 0)
n=$((n+1))
echo "$n" > "` + dir + `/count"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-token-%s"}}' "$n"
`
	if err := os.WriteFile(plugin, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	path := writeKubeconfig(t, dir, `- name: alice
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: `+plugin+`
      interactiveMode: Never
`)
	src := mustGet(t, newSetT(t, kubeSourceFor(path, "alice")), "k8s")
	first := mustToken(t, src)
	if first != "exec-token-1" {
		t.Fatalf("Token = %q; want exec-token-1", first)
	}
	if again := mustToken(t, src); again != first {
		t.Errorf("second Token = %q; want the plugin's cached token", again)
	}
	src.Invalidate(first) // kedge refused it: the plugin must run again
	if fresh := mustToken(t, src); fresh != "exec-token-2" {
		t.Errorf("Token after Invalidate = %q; want exec-token-2", fresh)
	}
}

func TestKubeAuthProviderOIDC(t *testing.T) {
	t.Parallel()
	op := newTestOP(t)
	op.addRefreshToken("kube-refresh")
	claims := op.iss.Claims(op.clientID)
	claims["iss"] = op.URL()
	claims["exp"] = time.Now().Add(-time.Hour).Unix()
	expired := op.iss.Sign(t, claims)
	path := writeKubeconfig(t, t.TempDir(), `- name: alice
  user:
    auth-provider:
      name: oidc
      config:
        idp-issuer-url: `+op.URL()+`
        client-id: `+op.clientID+`
        client-secret: `+op.secret+`
        id-token: `+expired+`
        refresh-token: kube-refresh
`)
	src := mustGet(t, newSetT(t, kubeSourceFor(path, "alice")), "k8s")
	tok := mustToken(t, src)
	if tok == expired || !isCompactJWS(tok) || op.refreshes.Load() != 1 {
		t.Fatalf("Token: refreshed %v, refreshes %d; want the refresh token used once", tok != expired, op.refreshes.Load())
	}
	// client-go writes the new tokens back into the kubeconfig, and the next call uses them without refreshing.
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := kc.AuthInfos["alice"].AuthProvider.Config["id-token"]; got != tok {
		t.Errorf("kubeconfig id-token was not updated")
	}
	if again := mustToken(t, src); again != tok || op.refreshes.Load() != 1 {
		t.Errorf("second Token: same %v, refreshes %d", again == tok, op.refreshes.Load())
	}
}

func TestKubeErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeKubeconfig(t, dir, `- name: alice
  user:
    client-certificate-data: Zm9v
    client-key-data: YmFy
- name: bob
  user:
    token: ok
`)
	tests := []struct {
		name string
		src  config.AuthSource
		want string
	}{
		{"unknown user", kubeSourceFor(path, "mallory"), `kubeconfig has no user "mallory" (users: alice, bob)`},
		{"client certificate only", kubeSourceFor(path, "alice"), "winch can only forward bearer tokens"},
		{"missing kubeconfig", kubeSourceFor(filepath.Join(dir, "nope"), "bob"), "loading kubeconfig"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// New succeeds (only the routes using the source fail); the source answers with the reason.
			set := newSetT(t, tt.src)
			if u := set.Unavailable(); len(u) != 1 || !strings.Contains(u[0].Error(), tt.want) {
				t.Errorf("Unavailable = %v; want one error containing %q", u, tt.want)
			}
			src, _ := set.Get("k8s")
			_, err := src.Token(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), `auth source "k8s"`) {
				t.Errorf("Token = %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

// newSetT builds a Set with test defaults for sources that need no provider.
func newSetT(t *testing.T, srcs ...config.AuthSource) *Set {
	t.Helper()
	s, err := New(srcs, Deps{StateDir: t.TempDir(), Log: newTestLog()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}
