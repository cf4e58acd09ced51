package tunnel

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// curl runs the real curl through kedge as an HTTPS proxy (--proxytunnel: CONNECT) with args, without the user's
// curlrc or proxy environment. It skips the test when curl is not installed.
func (e *env) curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed; the CONNECT checks with a real client need it")
	}
	full := append([]string{"-q", "--silent", "--show-error", "--max-time", "60",
		"--proxy", "https://" + e.addr, "--proxy-cacert", e.kedgeCAF, "--proxytunnel", "--cacert", e.backCAF}, args...)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestCurlThroughTunnel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})

	t.Run("TLS to the backend inside the tunnel; the backend never sees Proxy-Authorization", func(t *testing.T) {
		out, err := e.curl(t, "--proxy-header", auth(), "-H", "Authorization: Bearer for-the-backend",
			"https://echo.test:443/through?x=1")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		var echo testutil.EchoResponse
		if err := json.Unmarshal([]byte(out), &echo); err != nil {
			t.Fatalf("echo answer %q: %v", out, err)
		}
		if echo.Backend != "echo" || !echo.TLS || echo.Path != "/through" || echo.Host != "echo.test" {
			t.Errorf("echo = %+v", echo)
		}
		for k := range echo.Header {
			if strings.EqualFold(k, "Proxy-Authorization") {
				t.Errorf("the backend saw %s", k)
			}
		}
		if got := echo.Header.Get("Authorization"); got != "Bearer for-the-backend" {
			t.Errorf("the backend saw Authorization %q", got)
		}
	})
	t.Run("denied without a token", func(t *testing.T) {
		out, err := e.curl(t, "https://echo.test:443/")
		if err == nil || !strings.Contains(out, "401") {
			t.Errorf("curl without a token: %v\n%s", err, out)
		}
	})
	t.Run("denied for an unrouted port", func(t *testing.T) {
		out, err := e.curl(t, "--proxy-header", auth(), "https://echo.test:8443/")
		if err == nil || !strings.Contains(out, "502") {
			t.Errorf("curl to an unrouted port: %v\n%s", err, out)
		}
	})
	t.Run("denied for a port an adhoc rule does not allow", func(t *testing.T) {
		out, err := e.curl(t, "--proxy-header", auth(), "https://x.adhoc.test:22/")
		if err == nil || !strings.Contains(out, "403") {
			t.Errorf("curl to a disallowed port: %v\n%s", err, out)
		}
	})
}

// TestBulkTransfer carries 100 MB from a TLS backend through a tunnel to curl and compares checksums (about 2 s
// under the race detector on loopback).
func TestBulkTransfer(t *testing.T) {
	t.Parallel()
	const size = int64(100 << 20)
	e := newEnv(t, envOptions{})
	file := filepath.Join(t.TempDir(), "download")
	start := time.Now()
	out, err := e.curl(t, "--proxy-header", auth(), "-o", file, "https://echo.test:443/size?bytes="+strconv.FormatInt(size, 10))
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	elapsed := time.Since(start)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := sha256.New()
	n, err := io.Copy(got, f)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	_, _ = io.Copy(want, testutil.SizeData(size))
	if n != size || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("downloaded %d bytes with sha256 %x, want %d bytes with %x", n, got.Sum(nil), size, want.Sum(nil))
	}
	t.Logf("%d MB through the tunnel in %v", size>>20, elapsed)
	testutil.Eventually(t, "tunnel closed", func() bool { return testutil.MetricValue(t, e.reg, "kedge_tunnels_open", nil) == 0 })
	if down := testutil.MetricValue(t, e.reg, "kedge_tunnel_bytes_total", map[string]string{"direction": "downstream"}); down < float64(size) {
		t.Errorf("downstream bytes = %v, want >= %d", down, size)
	}
}

// TestHTTP2Connect opens tunnels as HTTP/2 CONNECT streams (RFC 9113 §8.5) with Go's client.
func TestHTTP2Connect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.kedgeCA.Pool(), ServerName: "127.0.0.1"}}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)

	open := func(t *testing.T, target string, token bool) (*io.PipeWriter, *http.Response) {
		t.Helper()
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		req, err := http.NewRequestWithContext(t.Context(), http.MethodConnect, "https://"+e.addr, pr)
		if err != nil {
			t.Fatal(err)
		}
		req.URL = &url.URL{Scheme: "https", Host: e.addr}
		req.Host = target
		if token {
			req.Header.Set("Proxy-Authorization", "Bearer "+testToken)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		return pw, resp
	}

	t.Run("echo both ways", func(t *testing.T) {
		pw, resp := open(t, "reflect.test:7000", true)
		if resp.StatusCode != 200 || resp.Header.Get("X-Kedge-Backend-Name") != "reflect" {
			t.Fatalf("CONNECT: %d %v", resp.StatusCode, resp.Header)
		}
		for i := 0; i < 3; i++ {
			msg := "ping " + strconv.Itoa(i)
			if _, err := io.WriteString(pw, msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != msg {
				t.Fatalf("echo %d: %q, %v", i, buf, err)
			}
		}
	})
	t.Run("client half-close", func(t *testing.T) {
		pw, resp := open(t, "count.test:7000", true)
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT: %d", resp.StatusCode)
		}
		if _, err := io.WriteString(pw, strings.Repeat("y", 5000)); err != nil {
			t.Fatal(err)
		}
		pw.Close() // END_STREAM
		got, err := io.ReadAll(resp.Body)
		if err != nil || string(got) != "got 5000 bytes\n" {
			t.Fatalf("after half-close: %q, %v", got, err)
		}
	})
	t.Run("denied without a token", func(t *testing.T) {
		_, resp := open(t, "reflect.test:7000", false)
		if resp.StatusCode != 401 || resp.Header.Get("X-Kedge-Error-Type") != "unauthorized" {
			t.Errorf("CONNECT without a token: %d %q", resp.StatusCode, resp.Header.Get("X-Kedge-Error-Type"))
		}
	})
	testutil.Eventually(t, "tunnels closed", func() bool { return testutil.MetricValue(t, e.reg, "kedge_tunnels_open", nil) == 0 })
	found := false
	for _, l := range tunnelLines(t, e.logs) {
		found = found || l["proto"] == "HTTP/2.0" && l["status"] == 200.0
	}
	if !found {
		t.Errorf("no HTTP/2 tunnel in the audit lines: %v", tunnelLines(t, e.logs))
	}
}
