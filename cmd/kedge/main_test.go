package main

import (
	"bytes"
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
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string
		stderr     string
		stderrNot  string
		stderrLine int // the number of lines stderr must have; 0 = any
	}{
		{name: "help", args: []string{"--help"}, code: 0, stdout: "Usage: kedge [flags]"},
		{name: "unknown flag", args: []string{"--no-such-flag"}, code: 2, stderr: "unknown flag", stderrLine: 1},
		{name: "bad documents, one problem per line",
			args: append([]string{`--kedge_config_director_config={"http": {"routes": [{"backend_name": "nope"}, {"backend_name": "nada"}]}}`}, noListeners...),
			code: 1, stderr: "kedge: cannot start: loading config documents:\n" +
				"  --kedge_config_director_config: http.routes[0].backend_name: \"nope\" names no http backend in the backendpool config\n" +
				"  --kedge_config_director_config: http.routes[1].backend_name: \"nada\" names no http backend",
			stderrNot: `\n`},
		{name: "discover help", args: []string{"discover", "--help"}, code: 0, stdout: "Usage: kedge discover"},
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
			if tt.stderrNot != "" && strings.Contains(stderr.String(), tt.stderrNot) {
				t.Errorf("stderr contains %q:\n%s", tt.stderrNot, stderr.String())
			}
			if n := strings.Count(stderr.String(), "\n"); tt.stderrLine != 0 && n != tt.stderrLine {
				t.Errorf("stderr has %d lines, want %d:\n%s", n, tt.stderrLine, stderr.String())
			}
		})
	}
}
