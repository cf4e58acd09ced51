// Package e2e runs the real kedge (and winch) binaries with real clients: curl, kubectl and Go gRPC/HTTP clients.
// The binaries are built once per test run into a temp dir (with -race when the tests run with it).
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// binDir holds the binaries built by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kedge-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, name := range []string{"kedge", "winch"} {
		args := []string{"build", "-o", filepath.Join(dir, name)}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/"+name)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building %s: %v\n", name, err)
			return 1
		}
	}
	return m.Run()
}

// process is a running binary under test. Its output is kept and printed when the test fails.
type process struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *testutil.Buffer
	done chan struct{}
	err  error
}

// start runs binary name with args. At cleanup it sends SIGTERM and requires a clean exit within grace; on test
// failure it prints the process output.
func start(t *testing.T, name string, grace time.Duration, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &testutil.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	// Race-built binaries otherwise sleep 1s at exit; no proxy variables leak into the binaries under test.
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "HTTP_PROXY=", "HTTPS_PROXY=", "http_proxy=", "https_proxy=")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(grace)
		if t.Failed() {
			t.Logf("---- %s output ----\n%s---- end of %s output ----", name, p.out.String(), name)
		}
	})
	return p
}

// stop sends SIGTERM and fails the test unless the process exits with status 0 within grace.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("%s exited uncleanly after SIGTERM: %v", p.name, p.err)
		}
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Errorf("%s did not exit within %v of SIGTERM", p.name, grace)
	}
}

// waitOutput waits until the process has written every one of wants (its log lines are batched a few milliseconds
// apart, see --log_flush_interval), and returns its output.
func (p *process) waitOutput(t *testing.T, wants ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := p.out.String()
		missing := ""
		for _, w := range wants {
			if !strings.Contains(out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return out
		}
		if time.Now().After(deadline) {
			t.Errorf("%s's output lacks %q", p.name, missing)
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// freePorts reserves n distinct loopback ports. The binaries bind them right after; the window is small and the
// harness retries the whole start if a port was taken meanwhile (see startKedge).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var lns []net.Listener
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// waitReady polls url until it answers 200, the process exits, or the deadline passes.
func waitReady(t *testing.T, p *process, url string, deadline time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p.exited() {
			t.Fatalf("%s exited before it was ready (%v)", p.name, p.err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s not ready at %s after %v: %s", p.name, url, deadline, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readyDeadline is generous because -race binaries on a loaded 2-core machine start slowly.
func readyDeadline() time.Duration {
	if raceEnabled || runtime.NumCPU() < 4 {
		return 30 * time.Second
	}
	return 10 * time.Second
}

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }
