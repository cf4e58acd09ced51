package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// winchEnv is a running winch binary with its documents, on free loopback ports.
type winchEnv struct {
	proc                 *process
	dir                  string
	httpPort             int
	proxyURL             string // http://127.0.0.1:<HTTP port>, what HTTP_PROXY and HTTPS_PROXY name
	grpcAddr             string // 127.0.0.1:<gRPC port>
	mapperPath, authPath string
	stateDir             string
}

// winchDrain is winch's --server_shutdown_drain_timeout in the e2e tests.
const winchDrain = 3 * time.Second

// startWinch writes the mapper and auth documents and runs winch with them. extra carries the client TLS flags
// (which CA verifies the kedge, which client certificate winch shows) and anything else a test needs. At cleanup
// winch gets SIGTERM and must exit 0.
func startWinch(t *testing.T, mapperDoc, authDoc string, extra ...string) *winchEnv {
	t.Helper()
	w := &winchEnv{dir: t.TempDir()}
	w.mapperPath = writeFile(t, w.dir, "winch_mapper.json", mapperDoc)
	w.authPath = writeFile(t, w.dir, "winch_auth.json", authDoc)
	w.stateDir = filepath.Join(w.dir, "state")
	ports := freePorts(t, 2)
	w.httpPort = ports[0]
	w.proxyURL = "http://127.0.0.1:" + itoa(ports[0])
	w.grpcAddr = "127.0.0.1:" + itoa(ports[1])
	args := append([]string{
		"--server_http_port=" + itoa(ports[0]),
		"--server_grpc_port=" + itoa(ports[1]),
		"--server_mapper_config_path=" + w.mapperPath,
		"--server_auth_config_path=" + w.authPath,
		"--state_dir=" + w.stateDir,
		"--server-shutdown-drain-timeout=" + winchDrain.String(), // kebab-case works too
		"--log_level=debug",
	}, extra...)
	w.proc = start(t, "winch", winchDrain+5*time.Second, args...)
	waitReady(t, w.proc, w.proxyURL+"/_healthz", readyDeadline())
	return w
}

// kedgeURL is the URL winch reaches k's HTTPS port by (the server certificate names localhost).
func kedgeURL(k *kedgeEnv) string { return "https://localhost:" + itoa(k.httpsPort) }

// kedgeGRPCURL is the URL winch reaches k's gRPC TLS port by.
func kedgeGRPCURL(k *kedgeEnv) string {
	_, port, _ := strings.Cut(k.grpcAddr, ":")
	return "https://localhost:" + port
}

// clientEnv is the environment for a real client: the test's own, without any proxy settings, plus kv.
func clientEnv(kv ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		k, _, _ := strings.Cut(e, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "no_proxy", "all_proxy":
			continue
		}
		env = append(env, e)
	}
	return append(env, kv...)
}

// proxyEnv points the proxy variables at winch as docs/winch.md tells users to: http_proxy in lower case (the only
// spelling curl reads for plain HTTP; Go reads both) and HTTPS_PROXY.
func (w *winchEnv) proxyEnv(kv ...string) []string {
	return clientEnv(append([]string{"http_proxy=" + w.proxyURL, "HTTPS_PROXY=" + w.proxyURL}, kv...)...)
}

// runClient runs a real client binary with env and returns its combined output (see lookClient for a missing one).
func runClient(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	path := lookClient(t, name)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// lookClient returns the path of a real client binary. When it is not installed the test is skipped, with the reason,
// except under CI (CI set), where .ci/run installs every client and a missing one fails the test instead.
func lookClient(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (.ci/run installs it; Debian package %s)", name, debianPackage(name))
	if os.Getenv("CI") != "" {
		t.Fatalf("%s: CI must run this real-client check", msg)
	}
	t.Skipf("%s: skipping this real-client check", msg)
	return ""
}

func debianPackage(bin string) string {
	if bin == "kubectl" {
		return "kubernetes-client"
	}
	return bin
}

// curlVia runs curl with HTTP_PROXY and HTTPS_PROXY set to winch.
func (w *winchEnv) curlVia(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runClient(t, w.proxyEnv(), "curl", append([]string{"--silent", "--show-error", "--max-time", "20"}, args...)...)
}

// curlResponse is the final response in `curl -i` output.
type curlResponse struct {
	status int
	header http.Header
	body   string
}

// parseCurl reads `curl -i` output: the answer to a CONNECT ("200 Connection established") and 1xx answers are
// skipped, the last response is returned.
func parseCurl(t *testing.T, out string) curlResponse {
	t.Helper()
	rest := out
	for i := 0; i < 5; i++ {
		head, body, ok := strings.Cut(rest, "\r\n\r\n")
		if !ok {
			t.Fatalf("not an HTTP response:\n%s", out)
		}
		first, fields, _ := strings.Cut(head, "\r\n")
		parts := strings.Fields(first)
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/") {
			t.Fatalf("bad status line %q in:\n%s", first, out)
		}
		code, err := strconv.Atoi(parts[1])
		if err != nil {
			t.Fatalf("bad status line %q", first)
		}
		hdr := http.Header{}
		for _, l := range strings.Split(fields, "\r\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		if code < 200 || (code == 200 && strings.Contains(first, "Connection established")) {
			rest = body
			continue
		}
		return curlResponse{status: code, header: hdr, body: body}
	}
	t.Fatalf("too many responses in:\n%s", out)
	return curlResponse{}
}

// echo decodes the body as the echo backend's JSON answer.
func (r curlResponse) echo(t *testing.T) testutil.EchoResponse {
	t.Helper()
	var e testutil.EchoResponse
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("body is not an echo answer (%v):\n%s", err, r.body)
	}
	return e
}

// rawConnect sends "CONNECT target" to winch itself and returns winch's answer (the tunnel is not used).
func (w *winchEnv) rawConnect(t *testing.T, target string) *http.Response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(w.proxyURL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("reading winch's answer to CONNECT %s: %v", target, err)
	}
	return resp
}

// winchRun runs the winch binary for a subcommand and returns its stdout, stderr and exit code.
func winchRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "winch"), args...)
	// A -race binary sleeps 1 s at a clean exit unless told not to.
	cmd.Env = clientEnv("GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	return o.String(), e.String(), exitCode(err)
}

func TestWinchHelpAndUsageErrors(t *testing.T) {
	out, _, code := winchRun(t, "--help")
	if code != 0 {
		t.Fatalf("winch --help: exit %d", code)
	}
	for _, want := range []string{"route HOST[:PORT]", "login NAME", "logout NAME", "--server_mapper_config_path", "--unmatched"} {
		if !strings.Contains(out, want) {
			t.Errorf("winch --help does not mention %s:\n%s", want, out)
		}
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--no_such_flag"}, "unknown flag"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"route without a destination", []string{"route"}, "want exactly one HOST[:PORT]"},
		{"bad --unmatched", []string{"--unmatched=sometimes"}, "--unmatched"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := winchRun(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("winch %v: exit %d, stderr %q; want exit 2 mentioning %q", tc.args, code, stderr, tc.want)
			}
		})
	}
}

// TestWinchRouteCommand checks `winch route HOST[:PORT]`: which route, kedge and auth sources a destination gets,
// without sending anything; exit 1 for a destination that no route maps.
func TestWinchRouteCommand(t *testing.T) {
	dir := t.TempDir()
	mapperPath := writeFile(t, dir, "mapper.json", `{"routes": [
  {"direct": {"key": "hello.example.com", "url": "https://kedge-a.example.net:8443"}, "proxy_auth": "corp", "backend_auth": "svc", "protocol": "HTTP"},
  {"regexp": {"exp": "^[a-z0-9-]+[.](?P<cluster>[a-z0-9-]+)[.]internal[.]example[.]com(:[0-9]+)?$", "url": "https://${cluster}.kedge.example.net:443"}, "proxy_auth": "corp"}
]}`)
	tests := []struct {
		name     string
		dest     string
		extra    []string
		wantCode int
		want     []string
	}{
		{"direct HTTP route", "hello.example.com", nil, 0, []string{
			"HTTP and CONNECT: route 0 (direct \"hello.example.com\", protocol HTTP)",
			"kedge:        https://kedge-a.example.net:8443", `proxy_auth:   "corp"`, `backend_auth: "svc"`,
			"gRPC: hello.example.com is not a kedge destination",
		}},
		{"regexp route templates the cluster", "api.eu-1.internal.example.com:443", nil, 0, []string{
			"HTTP and CONNECT: route 1", "gRPC: route 1", "kedge:        https://eu-1.kedge.example.net:443", "backend_auth: none",
		}},
		{"unmatched goes direct", "example.org", nil, 1, []string{"example.org is not a kedge destination; sent directly, without tokens"}},
		{"unmatched is refused with --unmatched=reject", "example.org", []string{"--unmatched=reject"}, 1, []string{"refused with 403"}},
		{"IP address", "10.0.0.1:443", nil, 1, []string{"kedge requires hostname to proxy to but was given IP address 10.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"route", tc.dest, "--server_mapper_config_path=" + mapperPath}, tc.extra...)
			out, stderr, code := winchRun(t, args...)
			if code != tc.wantCode {
				t.Errorf("winch route %s: exit %d, want %d\n%s%s", tc.dest, code, tc.wantCode, out, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("winch route %s output lacks %q:\n%s", tc.dest, w, out)
				}
			}
		})
	}
}

// TestDocsListEveryWinchFlag fails when a flag shown by `winch --help` is not documented in docs/winch.md.
func TestDocsListEveryWinchFlag(t *testing.T) {
	out, _, code := winchRun(t, "--help")
	if code != 0 {
		t.Fatalf("winch --help: exit %d", code)
	}
	doc, err := os.ReadFile("../docs/winch.md")
	if err != nil {
		t.Fatal(err)
	}
	flags := regexp.MustCompile(`(?m)^\s+(--[a-z0-9_-]+)`).FindAllStringSubmatch(out, -1)
	if len(flags) < 15 {
		t.Fatalf("found only %d flags in --help output:\n%s", len(flags), out)
	}
	for _, f := range flags {
		if !strings.Contains(string(doc), "`"+f[1]) {
			t.Errorf("flag %s is not documented in docs/winch.md", f[1])
		}
	}
}

// TestWinchDocuments: a bad document stops winch at startup with errors naming file and field; while running, a
// changed document is applied and a bad one is rejected while the running configuration stays.
func TestWinchDocuments(t *testing.T) {
	t.Run("a route naming a missing auth source stops winch at startup", func(t *testing.T) {
		dir := t.TempDir()
		mapperPath := writeFile(t, dir, "mapper.json", `{"routes": [{"direct": {"key": "a.example.com", "url": "https://kedge.example.net"}, "proxy_auth": "nope"}]}`)
		_, stderr, code := winchRun(t, "--server_mapper_config_path="+mapperPath, "--server_http_port=0", "--server_grpc_port=0",
			"--state_dir="+filepath.Join(dir, "state"))
		if code != 1 || !strings.Contains(stderr, "mapper.json") || !strings.Contains(stderr, "routes[0].proxy_auth") || !strings.Contains(stderr, "no auth source with that name") {
			t.Errorf("exit %d, want 1 with an error naming mapper.json, routes[0].proxy_auth and the missing source:\n%s", code, stderr)
		}
	})

	t.Run("reload on file change; a bad document keeps the running one", func(t *testing.T) {
		w := startWinch(t, pacMapper, "")
		pacHas := func(s string) bool {
			resp, err := http.Get(w.proxyURL + "/proxy.pac")
			if err != nil {
				return false
			}
			return strings.Contains(readAll(t, resp), s)
		}
		atomicWrite(t, w.mapperPath, strings.Replace(pacMapper, "hello.example.com", "reloaded.example.com", 1))
		testutil.EventuallyWithin(t, 20*time.Second, "the changed mapper to reach the PAC file", func() bool { return pacHas(`"reloaded.example.com"`) })

		atomicWrite(t, w.mapperPath, `{"routes": [{"direct": {"key": "x.example.com"}}]}`)
		testutil.EventuallyWithin(t, 20*time.Second, "the bad mapper to be rejected", func() bool {
			return strings.Contains(w.proc.out.String(), "config reload rejected")
		})
		if !pacHas(`"reloaded.example.com"`) {
			t.Errorf("after a rejected reload the PAC file no longer has the running mapper's hosts")
		}
		out, stderr, code := winchRun(t, "route", "x.example.com", "--server_mapper_config_path="+w.mapperPath)
		if code != 1 || !strings.Contains(stderr, "routes[0].direct.url") {
			t.Errorf("winch route with the bad mapper: exit %d, want 1 naming routes[0].direct.url\n%s%s", code, out, stderr)
		}
	})
}
