package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// os/signal's watcher goroutine lives for the rest of the process once run has called signal.NotifyContext.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("os/signal.signal_recv"), goleak.IgnoreTopFunction("os/signal.loop"))
}

func TestRun(t *testing.T) {
	t.Parallel()
	noListeners := []string{"--server_http_port=0", "--server_http_tls_port=0", "--server_grpc_tls_port=0"}
	pool := `--kedge_config_backendpool_config={"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": 8080}}]}}`
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string
		stderrNot  string
		stdoutNot  string
		stderrLine int // the number of lines stderr must have; 0 = any, -1 = none
	}{
		{name: "help", args: []string{"--help"}, code: 0, stdout: "Usage: kedge [flags]"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, code: 2, stderr: "unknown flag", stderrLine: 1},
		{name: "bad documents, one problem per line",
			args: append([]string{`--kedge_config_director_config={"http": {"routes": [{"backend_name": "nope"}, {"backend_name": "nada"}]}}`}, noListeners...),
			code: 1, stderr: "kedge: cannot start: loading config documents:\n" +
				"  --kedge_config_director_config: http.routes[0].backend_name: \"nope\" names no http backend in the backendpool config\n" +
				"  --kedge_config_director_config: http.routes[1].backend_name: \"nada\" names no http backend",
			stderrNot: `\n`},
		{name: "check-config without documents", args: []string{"--check-config"}, code: 1,
			stderr: "no config documents to check", stderrLine: 1},
		{name: "check-config, discovery only", args: []string{"--check-config", "--kedge_dynamic_routings_enabled"}, code: 0,
			stdout: "every route will come from Kubernetes discovery"},
		{name: "check-config prints startup's warnings",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "host_matcher": "a.example.com", "required_permissions": ["x"]}]}}`, pool},
			code: 0, stdout: "config is valid: 1 HTTP routes",
			stderr: `warning: http route 0 (backend "web") has required_permissions but no OIDC permissions claim is configured (--server_oidc_perms_claim): nobody can use it`},
		{name: "check-config refuses a director without routes",
			args: []string{"--check-config", `--kedge_config_director_config={}`, pool, "--unsafe_bearer_token_proxy_auth=t"},
			code: 1, stdoutNot: "config is valid",
			stderr: "config is invalid:\nthe director config has no routes and no adhoc rules and Kubernetes discovery is off", stderrLine: 2},
		{name: "check-config, routes and a claim: no warning",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "host_matcher": "a.example.com"}]}}`, pool, "--unsafe_bearer_token_proxy_auth=t"},
			code: 0, stdout: "config is valid: 1 HTTP routes", stderrLine: -1},
		{name: "bool flags with a separate value, as the original's scripts wrote them",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "host_matcher": "a.example.com"}]}}`, pool,
				"--unsafe_bearer_token_proxy_auth=t", "--server_tls_client_cert_required", "false", "--server-tracing-grpc-enabled", "true"},
			code: 0, stdout: "config is valid: 1 HTTP routes", stderrLine: -1},
		{name: "check-config warns when nobody is authenticated",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "host_matcher": "a.example.com"}]}}`, pool},
			code: 0, stdout: "config is valid: 1 HTTP routes",
			stderr: "warning: no authentication configured: kedge proxies for anyone who can reach it", stderrLine: 1},
		{name: "did you mean", args: []string{"--server_http_prot=1"}, code: 2,
			stderr: "kedge: unknown flag: --server_http_prot; did you mean --server_http_port? (see --help)", stderrLine: 1},
		{name: "the original's logstash flags", args: []string{"--logstash_host=x:5000"}, code: 2,
			stderr: "unknown flag: --logstash_host: the original's logstash_* flags are not supported: log JSON (--log_format=json)", stderrLine: 1},
		{name: "deprecated flag, misspelled as the original did", args: []string{"--check-config", "--kedge_dynamic_routings_enabled", "--discovery_resync_timouet=1m"},
			code: 0, stderr: "kedge: warning: --discovery_resync_timeout is deprecated: it has no effect", stderrLine: 1},
		{name: "discover without a suffix blames no flag the user did not pass", args: []string{"discover", "--once"}, code: 2,
			stderr: "--discovery_external_domain_suffix is required: generated hosts", stderrNot: "kedge_dynamic_routings_enabled"},
		{name: "discover deprecation notice", args: []string{"discover", "--once", "--k8sresolver_resync_timouet=1m"}, code: 2,
			stderr: "kedge discover: warning: --k8sresolver_resync_timeout is deprecated"},
		{name: "discover did you mean", args: []string{"discover", "--discovery_external_domain_sufix=x"}, code: 2,
			stderr: "did you mean --discovery_external_domain_suffix?"},
		{name: "an unknown field in a document: the valid fields are listed",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "hots": "a"}]}}`, pool}, code: 1,
			stderr: `http.routes[0].hots: unknown field "hots" (line 1, column 46); the fields here are backend_name, path_rules, host_matcher,`},
		{name: "a bad enum: its values are listed",
			args: []string{"--check-config", `--kedge_config_director_config={"http": {"routes": [{"backend_name": "web", "proxy_mode": "REVERSE"}]}}`, pool}, code: 1,
			stderr: `http.routes[0].proxy_mode: unknown value "REVERSE" (line 1, column 60); one of ANY, REVERSE_PROXY, FORWARD_PROXY, CONNECT`},
		{name: "completion help", args: []string{"completion", "--help"}, code: 0, stdout: "Usage: kedge completion bash|zsh|fish"},
		{name: "completion without a shell", args: []string{"completion"}, code: 2, stderr: "want exactly one shell"},
		{name: "completion of an unknown shell", args: []string{"completion", "tcsh"}, code: 2, stderr: `unknown shell "tcsh"`},
		{name: "completion bash", args: []string{"completion", "bash"}, code: 0, stdout: "complete -F _kedge_completion kedge"},
		{name: "completion offers discover's flags after discover", args: []string{"completion", "fish"}, code: 0,
			stdout: "complete -c kedge -n '__fish_seen_subcommand_from discover' -l once"},
		{name: "discover help", args: []string{"discover", "--help"}, code: 0, stdout: "Usage: kedge discover"},
		{name: "discover help names no implied flag", args: []string{"discover", "--help"}, code: 0,
			stdout: "<service>.<namespace>.svc.<suffix> (required)", stdoutNot: "kedge_dynamic_routings_enabled"},
		{name: "discover unknown flag", args: []string{"discover", "--no-such-flag"}, code: 2,
			stderr: "kedge discover: unknown flag: --no-such-flag (see --help)", stderrLine: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr.String())
			}
			if tt.stdoutNot != "" && strings.Contains(stdout.String(), tt.stdoutNot) {
				t.Errorf("stdout has %q:\n%s", tt.stdoutNot, stdout.String())
			}
			if tt.stderrNot != "" && strings.Contains(stderr.String(), tt.stderrNot) {
				t.Errorf("stderr contains %q:\n%s", tt.stderrNot, stderr.String())
			}
			if n := strings.Count(stderr.String(), "\n"); tt.stderrLine != 0 && n != max(tt.stderrLine, 0) {
				t.Errorf("stderr has %d lines, want %d:\n%s", n, tt.stderrLine, stderr.String())
			}
		})
	}
}

// TestSecretFiles runs kedge with the _file form of the static token. No secret may reach the output.
func TestSecretFiles(t *testing.T) {
	t.Parallel()
	const token = "t0ken-in-a-file"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	docs := []string{"--check-config", "--kedge_config_director_config={}", "--kedge_dynamic_routings_enabled"}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"file form", []string{"--unsafe_bearer_token_proxy_auth_file=" + tokenFile}, 0, nil},
		{"kebab-case file form", []string{"--unsafe-bearer-token-proxy-auth-file", tokenFile}, 0, nil},
		{"both forms", []string{"--unsafe_bearer_token_proxy_auth=" + token, "--unsafe_bearer_token_proxy_auth_file=" + tokenFile}, 2,
			[]string{"kedge: invalid flags:", "--unsafe_bearer_token_proxy_auth and --unsafe_bearer_token_proxy_auth_file both given"}},
		{"missing file", []string{"--unsafe_bearer_token_proxy_auth_file=" + missing}, 2,
			[]string{"--unsafe_bearer_token_proxy_auth_file", missing, "no such file"}},
		{"empty file", []string{"--unsafe_bearer_token_proxy_auth_file=" + emptyFile}, 2,
			[]string{"--unsafe_bearer_token_proxy_auth_file", emptyFile, "is empty"}},
		{"file and OIDC", []string{"--unsafe_bearer_token_proxy_auth_file=" + tokenFile, "--server_oidc_provider_url=https://i.example.com",
			"--server_oidc_client_id=k", "--server_http_tls_port=0", "--server_grpc_tls_port=0"}, 2,
			[]string{"--unsafe_bearer_token_proxy_auth cannot be combined with OIDC"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append(slices.Clone(docs), tt.args...)
			if tt.name == "file and OIDC" {
				args = tt.args // not --check-config: it skips the authentication checks
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if strings.Contains(out, token) {
				t.Fatalf("the token is in the output (exit %d)", code)
			}
			if code != tt.code {
				t.Fatalf("exit code %d, want %d\n%s", code, tt.code, out)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestDiscoverUnreachableAPIServer: client-go retries a refused connection without reporting it; the message must
// still name the server's URL and the cause.
func TestDiscoverUnreachableAPIServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now: connections are refused
	var stdout, stderr bytes.Buffer
	code := run([]string{"discover", "--once", "--discovery_external_domain_suffix=example.com", "--k8sclient_kubeapi_url=https://" + addr,
		"--k8s_cache_sync_timeout=1s", "--log_level=error"}, &stdout, &stderr)
	want := "cannot reach the Kubernetes API server at https://" + addr + ": dial tcp " + addr + ": connect: connection refused"
	if code != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("exit code %d, stderr:\n%s\nwant exit code 1 and %q", code, stderr.String(), want)
	}
}
