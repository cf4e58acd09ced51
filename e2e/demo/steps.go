package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// step is one command shown to the user with its output; want lists strings the output must contain.
type step struct {
	title string
	shell string // what the user types, run as is by sh in the demo's directory
	want  []string
}

// tutorialSteps are the commands of the README's tutorial (step 3) and the denied request, with the demo's ports.
func tutorialSteps(p ports) []step {
	proxy := fmt.Sprintf("http://127.0.0.1:%d", p.WinchHTTP)
	return []step{
		{
			title: "Plain HTTP through winch and kedge (http_proxy): winch adds the proxy token, kedge routes by Host",
			shell: "http_proxy=" + proxy + " curl -sS -i http://hello.demo.kedge.local/",
			want:  []string{"200", "X-Kedge-Backend-Name: demo_http", "hello from the demo backend", `Proxy-Authorization ""`},
		},
		{
			title: "HTTPS through a CONNECT tunnel (HTTPS_PROXY): TLS runs end to end between curl and the backend",
			shell: "HTTPS_PROXY=" + proxy + " curl -sS --cacert " + fileBackendCA + " https://api.demo.kedge.local/version",
			want:  []string{"v1.31.0-kedge-demo"},
		},
		{
			title: "kubectl through HTTPS_PROXY: kubectl's own token crosses the tunnel untouched",
			shell: "HTTPS_PROXY=" + proxy + " kubectl --kubeconfig " + fileKubeconfig + " get --raw /version",
			want:  []string{"v1.31.0-kedge-demo", "Bearer kubectl-demo-token"},
		},
		{
			title: "A denied request: kedge without the proxy token answers 401 and says why",
			shell: fmt.Sprintf("curl -sS -i --cacert %s -H 'X-Forwarded-Proto: http' -H 'Host: hello.demo.kedge.local' https://localhost:%d/", fileKedgeCA, p.KedgeHTTPS),
			want:  []string{"401", "X-Kedge-Error-Type: unauthorized", "Proxy-Authenticate: Bearer"},
		},
	}
}

func demonstrate(ctx context.Context, dir string, p ports) error {
	steps := tutorialSteps(p)
	for i, s := range steps {
		fmt.Printf("\n== %d. %s\n$ %s\n", i+1, s.title, s.shell)
		tool := commandName(s.shell)
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Printf("(skipped: %s is not installed; `apt-get install %s` to see this step)\n", tool, debianPackage(tool))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		cmd := exec.CommandContext(cctx, "sh", "-c", s.shell)
		cmd.Dir, cmd.Env, cmd.WaitDelay = dir, cleanEnv(), 2*time.Second
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
	return grpcStep(ctx, len(steps)+1, p)
}

func grpcStep(ctx context.Context, n int, p ports) error {
	fmt.Printf("\n== %d. gRPC through winch's gRPC port: :authority picks the kedge, kedge routes by service\n", n)
	target := addr(p.WinchGRPC)
	fmt.Printf("$ (Go) grpc.NewClient(%q, grpc.WithAuthority(\"grpc.demo.kedge.local:443\")) ... UnaryCall\n", target)
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()),
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

// commandName is the program a shell line runs: its first word that is not a VAR=value assignment.
func commandName(shell string) string {
	for _, w := range strings.Fields(shell) {
		if !strings.Contains(w, "=") {
			return w
		}
	}
	return ""
}
