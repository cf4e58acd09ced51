package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// step is one command shown to the user with its output; want lists strings the output must contain.
type step struct {
	title string
	shell string // what the user would type
	env   []string
	args  []string // argv actually run
	want  []string
}

func demonstrate(ctx context.Context, f files) error {
	kubeconfig := filepath.Join(f.dir, "demo.kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(kubeconfigTemplate, f.backendCA)), 0o600); err != nil {
		return err
	}
	steps := []step{
		{
			title: "Plain HTTP through winch and kedge (http_proxy): winch adds the proxy token, kedge routes by Host",
			shell: "http_proxy=http://127.0.0.1:8070 curl -sS -i http://hello.demo.kedge.local/",
			env:   []string{"HTTP_PROXY=http://127.0.0.1:8070", "http_proxy=http://127.0.0.1:8070"},
			args:  []string{"curl", "-sS", "-i", "--max-time", "10", "http://hello.demo.kedge.local/"},
			want:  []string{"200", "X-Kedge-Backend-Name: demo_http", "hello from the demo backend", `Proxy-Authorization ""`},
		},
		{
			title: "HTTPS through a CONNECT tunnel (HTTPS_PROXY): TLS runs end to end between curl and the backend",
			shell: "HTTPS_PROXY=http://127.0.0.1:8070 curl -sS --cacert " + f.backendCA + " https://api.demo.kedge.local/version",
			env:   []string{"HTTPS_PROXY=http://127.0.0.1:8070", "https_proxy=http://127.0.0.1:8070"},
			args:  []string{"curl", "-sS", "--max-time", "10", "--cacert", f.backendCA, "https://api.demo.kedge.local/version"},
			want:  []string{"v1.31.0-kedge-demo"},
		},
		{
			title: "kubectl through HTTPS_PROXY: kubectl's own token crosses the tunnel untouched",
			shell: "HTTPS_PROXY=http://127.0.0.1:8070 kubectl --kubeconfig " + kubeconfig + " get --raw /version",
			env:   []string{"HTTPS_PROXY=http://127.0.0.1:8070", "https_proxy=http://127.0.0.1:8070"},
			args:  []string{"kubectl", "--kubeconfig", kubeconfig, "--request-timeout=10s", "get", "--raw", "/version"},
			want:  []string{"v1.31.0-kedge-demo", "Bearer kubectl-demo-token"},
		},
		{
			title: "A denied request: kedge without the proxy token answers 401 and says why",
			shell: "curl -sS -i --cacert " + f.kedgeCA + " -H 'X-Forwarded-Proto: http' -H 'Host: hello.demo.kedge.local' https://localhost:8443/",
			args:  []string{"curl", "-sS", "-i", "--max-time", "10", "--cacert", f.kedgeCA, "-H", "X-Forwarded-Proto: http", "-H", "Host: hello.demo.kedge.local", "https://localhost:8443/"},
			want:  []string{"401", "X-Kedge-Error-Type: unauthorized", "Proxy-Authenticate: Bearer"},
		},
	}
	for i, s := range steps {
		fmt.Printf("\n== %d. %s\n$ %s\n", i+1, s.title, s.shell)
		if _, err := exec.LookPath(s.args[0]); err != nil {
			fmt.Printf("(skipped: %s is not installed; `apt-get install %s` to see this step)\n", s.args[0], debianPackage(s.args[0]))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		cmd := exec.CommandContext(cctx, s.args[0], s.args[1:]...)
		cmd.Env = append(cleanEnv(), s.env...)
		out, err := cmd.CombinedOutput()
		cancel()
		fmt.Print(indent(string(out)))
		if err != nil {
			return fmt.Errorf("step %d (%s): %v", i+1, s.shell, err)
		}
		for _, w := range s.want {
			if !strings.Contains(strings.ToLower(string(out)), strings.ToLower(w)) {
				return fmt.Errorf("step %d (%s): output lacks %q", i+1, s.shell, w)
			}
		}
	}
	return grpcStep(ctx, len(steps)+1)
}

func grpcStep(ctx context.Context, n int) error {
	fmt.Printf("\n== %d. gRPC through winch's gRPC port: :authority picks the kedge, kedge routes by service\n", n)
	fmt.Println("$ (Go) grpc.NewClient(\"127.0.0.1:8071\", grpc.WithAuthority(\"grpc.demo.kedge.local:443\")) ... UnaryCall")
	cc, err := grpc.NewClient("127.0.0.1:8071", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc.demo.kedge.local:443"), grpc.WithNoProxy())
	if err != nil {
		return err
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := testpb.NewTestServiceClient(cc).UnaryCall(cctx, &testpb.SimpleRequest{})
	if err != nil {
		return fmt.Errorf("gRPC step: %w", err)
	}
	fmt.Printf("    %s\n", resp.GetPayload().GetBody())
	return nil
}

// cleanEnv is the environment without proxy variables, so each step sets exactly the ones it shows.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "no_proxy", "all_proxy":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NO_PROXY=", "no_proxy=")
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + strings.TrimRight(l, "\r") + "\n")
	}
	return b.String()
}

func debianPackage(bin string) string {
	if bin == "kubectl" {
		return "kubernetes-client"
	}
	return bin
}

// kubeconfigTemplate points kubectl at a name only kedge can route; %s is the backend CA file.
const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://api.demo.kedge.local:443
    certificate-authority: %s
users:
- name: demo
  user:
    token: kubectl-demo-token
contexts:
- name: demo
  context: {cluster: demo, user: demo}
current-context: demo
`
