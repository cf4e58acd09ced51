package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// load sends GET requests to url until stop is closed, counting successes and recording every failure.
type load struct {
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
	wg       sync.WaitGroup
}

func startLoad(ctx context.Context, c *http.Client, url string, workers int) *load {
	l := &load{}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Bounded: at most 20000 requests per worker, and it stops with ctx.
			for n := 0; n < 20000 && ctx.Err() == nil; n++ {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := c.Do(req)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					l.fail(err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					l.fail(fmt.Sprintf("%s: %s (%s)", url, resp.Status, resp.Header.Get("X-Kedge-Error")))
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) fail(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, s)
}

func status(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// atomicWrite replaces path the way editors and ConfigMap updates do: write a temp file, then rename over.
func atomicWrite(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func metricValue(t *testing.T, debugAddr, series string) string {
	t.Helper()
	resp, err := http.Get("http://" + debugAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(readAll(t, resp), "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

func TestKedgeReloadUnderLoad(t *testing.T) {
	b := startBackends(t)
	other := testutil.NewEchoServer(t, testutil.EchoName("other"))
	k := startKedge(t, basicDirector, b.pool())
	c := k.client(true)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l := startLoad(ctx, c, "https://plain.example.com/steady", 4)
	testutil.EventuallyWithin(t, 20*time.Second, "traffic to flow", func() bool { return l.ok.Load() > 50 })

	// 1. Add a route and a backend (file write seen by the directory watch).
	if got := status(c, "https://new.example.com/"); got != http.StatusBadGateway {
		t.Fatalf("before reload new.example.com: %d, want 502", got)
	}
	director2 := strings.Replace(basicDirector, `"http": {"routes": [`, `"http": {"routes": [
    {"backend_name": "other", "host_matcher": "new.example.com"},`, 1)
	pool2 := strings.Replace(b.pool(), `"http": {"backends": [`, fmt.Sprintf(`"http": {"backends": [
    {"name": "other", "host": {"dns_name": "127.0.0.1", "port": %d}},`, other.Port()), 1)
	atomicWrite(t, k.poolPath, pool2)
	atomicWrite(t, k.directorPath, director2)
	testutil.EventuallyWithin(t, 20*time.Second, "the new route", func() bool { return status(c, "https://new.example.com/") == http.StatusOK })

	// 2. An invalid document is rejected and the running config stays.
	atomicWrite(t, k.directorPath, `{"http": {"routes": [{"backend_name": "missing"}]}}`)
	testutil.EventuallyWithin(t, 20*time.Second, "the failed reload to be counted", func() bool {
		return metricValue(t, k.debug, `kedge_config_reloads_total{result="failure"}`) >= "1"
	})
	if got := status(c, "https://new.example.com/"); got != http.StatusOK {
		t.Fatalf("after a rejected reload new.example.com: %d, want 200 (old config kept)", got)
	}

	// 3. Change a backend (the route to it moves to a new endpoint) and remove one, then SIGHUP.
	pool3 := strings.Replace(pool2, fmt.Sprintf(`"port": %d}},`, other.Port()), fmt.Sprintf(`"port": %d}},`, b.plain.Port()), 1)
	if err := os.WriteFile(k.poolPath, []byte(pool3), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.directorPath, []byte(director2), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = k.proc.cmd.Process.Signal(syscall.SIGHUP)
	testutil.EventuallyWithin(t, 20*time.Second, "the changed backend", func() bool {
		resp, err := c.Get("https://new.example.com/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.Header.Get("X-Echo-Backend") == "plain"
	})
	atomicWrite(t, k.poolPath, b.pool())
	atomicWrite(t, k.directorPath, basicDirector)
	testutil.EventuallyWithin(t, 20*time.Second, "the removed route", func() bool { return status(c, "https://new.example.com/") == http.StatusBadGateway })

	cancel()
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests to the unchanged route failed during reloads; first: %s", len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0])
	}
	t.Logf("%d requests to the unchanged route succeeded during 4 reloads", l.ok.Load())
}

func TestKedgeGracefulShutdownFinishesDownload(t *testing.T) {
	b := startBackends(t)
	k := startKedge(t, basicDirector, b.pool())
	c := k.client(false)

	// A response that takes ~2s to stream (20 chunks, 100ms apart): SIGTERM arrives in the middle of it.
	resp, err := c.Get("https://plain.example.com/stream?chunks=20&interval=100ms")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 16)
	if _, err := io.ReadAtLeast(resp.Body, buf, 1); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	if err := k.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness turns false while the download drains.
	testutil.EventuallyWithin(t, 5*time.Second, "/readyz to report not ready", func() bool {
		r, err := http.Get("http://" + k.debug + "/readyz")
		if err != nil {
			return true // the debug listener may already be closed
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download cut by shutdown: %v", err)
	}
	if got := strings.Count(string(buf)+string(rest), "chunk"); got != 20 {
		t.Errorf("got %d chunks, want 20", got)
	}
	select {
	case <-k.proc.done:
		if k.proc.err != nil {
			t.Errorf("kedge exit after drain: %v", k.proc.err)
		}
	case <-time.After(k.drain + 3*time.Second):
		t.Errorf("kedge still running %v after SIGTERM", k.drain+3*time.Second)
	}
}
