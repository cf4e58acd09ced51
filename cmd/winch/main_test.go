package main

import (
	"bytes"
	"path/filepath"
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
	mapper := `--server_mapper_config={"routes": [{"direct": {"key": "svc.example.com:443", "url": "https://kedge.example.com"}, "proxy_auth": "p"}]}`
	auth := `--server_auth_config={"auth_sources": [{"name": "p", "token": {"token": "t"}}]}`
	state := "--state_dir=" + filepath.Join(t.TempDir(), "state")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
		// stdoutNot must not be in stdout.
		stdoutNot string
	}{
		{name: "help", args: []string{"--help"}, code: 0, stdout: "login NAME"},
		{name: "help for a command", args: []string{"route", "--help"}, code: 0, stdout: "Usage: winch route HOST[:PORT]"},
		{name: "help command", args: []string{"help", "ca"}, code: 0, stdout: "Usage: winch ca"},
		{name: "ca help: one space, its own flags only", args: []string{"ca", "--help"}, code: 0,
			stdout: "Usage: winch ca [flags]\n", stdoutNot: "--server_grpc_port"},
		{name: "login help lists login's flags", args: []string{"login", "--help"}, code: 0, stdout: "--no_browser", stdoutNot: "--server_grpc_port"},
		{name: "route help lists route's flags", args: []string{"route", "--help"}, code: 0, stdout: "--server_mapper_config_path", stdoutNot: "--no_browser"},
		{name: "logout help", args: []string{"logout", "--help"}, code: 0, stdout: "--state_dir", stdoutNot: "--pac_file"},
		{name: "run help lists every flag", args: []string{"--help"}, code: 0, stdout: "--server_grpc_port"},
		{name: "did you mean", args: []string{"--server_mapper_confg=x"}, code: 2, stderr: "unknown flag: --server_mapper_confg; did you mean --server_mapper_config?"},
		{name: "did you mean, for a command's flag", args: []string{"login", "x", "--no-brower"}, code: 2, stderr: "did you mean --no_browser?"},
		{name: "logstash", args: []string{"--logstash_hostport=x:1"}, code: 2, stderr: "logstash_* flags are not supported"},
		{name: "completion help", args: []string{"completion", "--help"}, code: 0, stdout: "Usage: winch completion SHELL\n"},
		{name: "completion without a shell", args: []string{"completion"}, code: 2, stderr: "want exactly one SHELL"},
		{name: "completion of an unknown shell", args: []string{"completion", "tcsh"}, code: 2, stderr: `unknown shell "tcsh"`},
		{name: "completion zsh", args: []string{"completion", "zsh"}, code: 0, stdout: "compdef _winch winch"},
		{name: "completion fish: login's flags after login", args: []string{"completion", "fish"}, code: 0,
			stdout: "complete -c winch -n '__fish_seen_subcommand_from login' -l no_browser"},
		{name: "version", args: []string{"--version"}, code: 0, stdout: "go1."},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "unknown flag", args: []string{"--no-such-flag"}, code: 2, stderr: "unknown flag"},
		{name: "missing argument", args: []string{"login"}, code: 2, stderr: "want exactly one NAME"},
		{name: "invalid flags", args: []string{"route", "x", "--unmatched=maybe"}, code: 2, stderr: "--unmatched"},
		{name: "route matched", args: []string{"route", "svc.example.com:443", mapper}, code: 0, stdout: `proxy_auth:   "p"`},
		{name: "route kebab-case flags", args: []string{"route", "svc.example.com:443", strings.Replace(mapper, "server_mapper_config", "server-mapper-config", 1)}, code: 0, stdout: "https://kedge.example.com"},
		{name: "route unmatched", args: []string{"route", "other.example.com", mapper}, code: 1, stdout: "not a kedge destination"},
		{name: "ca", args: []string{"ca", state}, code: 0, stdout: "-----BEGIN CERTIFICATE-----"},
		{name: "logout unknown source", args: []string{"logout", "nope", auth, state, "--server_http_port=1"}, code: 1, stderr: `"nope"`},
		{name: "bad documents, one problem per line", args: []string{state, "--server_http_port=0", "--server_grpc_port=0",
			`--server_mapper_config={"routes": [{"direct": {"key": "a", "url": "ftp://k"}}, {"direct": {"url": "https://k"}}]}`},
			code: 1, stderr: "winch: cannot start: loading config documents:\n" +
				"  --server_mapper_config: routes[0].direct.url: scheme must be http or https\n" +
				"  --server_mapper_config: routes[1].direct.key: required"},
		{name: "route of an https URL: port 443", args: []string{"route", "https://svc.example.com/x", mapper}, code: 0,
			stdout: "https://svc.example.com/x: destination svc.example.com:443"},
		{name: "route of an http URL: the host as written", args: []string{"route", "http://svc.example.com:443/", mapper, auth}, code: 0,
			stdout: `proxy_auth:   "p" (token)`},
		{name: "route of another scheme", args: []string{"route", "ftp://svc.example.com/", mapper}, code: 1, stderr: `scheme "ftp" is not http or https`},
		{name: "route validates the auth document", args: []string{"route", "svc.example.com:443", mapper,
			`--server_auth_config={"auth_sources": [{"name": "p", "token": {}}]}`}, code: 1,
			stderr: "--server_auth_config: auth_sources[0].token.token: required"},
		{name: "route with a source that cannot be loaded", args: []string{"route", "svc.example.com:443", mapper, state,
			`--server_auth_config={"auth_sources": [{"name": "p", "kube": {"user": "u", "path": "/nonexistent/kubeconfig"}}]}`}, code: 1,
			stdout: `proxy_auth:   "p" (cannot be loaded: loading kubeconfig: open /nonexistent/kubeconfig`},
		{name: "check-config valid", args: []string{"--check-config", mapper, auth, state}, code: 0, stdout: "config is valid: 1 routes, 1 auth sources\n"},
		{name: "check_config spelling", args: []string{"--check_config", mapper, auth, state}, code: 0, stdout: "config is valid"},
		{name: "check-config lists every problem of both documents", args: []string{"--check-config", state,
			`--server_mapper_config={"routes": [{"direct": {"key": "a", "url": "ftp://k"}}, {"direct": {"url": "https://k"}}]}`,
			`--server_auth_config={"auth_sources": [{"name": "x"}]}`}, code: 1,
			stderr: "config is invalid:\n" +
				"--server_mapper_config: routes[0].direct.url: scheme must be http or https\n" +
				"--server_mapper_config: routes[1].direct.key: required: the destination \"host\" or \"host:port\"\n" +
				"--server_auth_config: auth_sources[0]: one of dummy"},
		{name: "check-config without a mapper", args: []string{"--check-config", state}, code: 1,
			stderr: "--server_mapper_config_path: not set"},
		{name: "check-config prints warnings", args: []string{"--check-config", mapper, state, "--client_insecure",
			`--server_auth_config={"auth_sources": [{"name": "p", "kube": {"user": "u", "path": "/nonexistent/kubeconfig"}}]}`}, code: 0,
			stderr: "warning: --client_insecure: kedges' certificates are NOT verified; anyone on the path can take your tokens\n" +
				`warning: auth source "p" cannot be loaded; requests through the routes that use it ([0]) fail until it can: auth source "p": loading kubeconfig`},
		{name: "check-config with bad flags", args: []string{"--check-config", mapper, "--unmatched=maybe"}, code: 2, stderr: "--unmatched"},
		{name: "bad auth document for a command", args: []string{"logout", "x", state, `--server_auth_config={"auth_sources": [{"name": "x"}, {"name": "y"}]}`},
			code: 1, stderr: "winch logout:\n  --server_auth_config: auth_sources[0]: one of dummy"},
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
		})
	}
}
