package e2e

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// transferBytesEnv overrides the size of each transfer of TestLargeTransfers (bytes; `make transfer` sets 1 GiB).
const transferBytesEnv = "KEDGE_E2E_TRANSFER_BYTES"

// transferKey keys the AES-CTR keystream every transfer sends: random-looking data, so no layer can compress it or
// hide a reordered or repeated chunk, made as it is read (no side holds more than a buffer of it), and fast under
// -race too, as the stdlib's AES-CTR is assembly.
var transferKey = []byte("kedge-e2e-bulk!!")

// transferData returns the n bytes every upload and download carries.
func transferData(n int64) io.Reader {
	block, err := aes.NewCipher(transferKey)
	if err != nil {
		panic(err) // a 16-byte key
	}
	return io.LimitReader(cipher.StreamReader{S: cipher.NewCTR(block, make([]byte, aes.BlockSize)), R: zeros{}}, n)
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// transferBackend serves GET /download?bytes=N (the transfer data, with Content-Length) and POST /upload (answers
// "<bytes read> <sha256 hex>" of the body). It speaks HTTP/1.1 in plain text, so it also answers inside a CONNECT
// tunnel.
func transferBackend(t *testing.T) int {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want ?bytes=N", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, transferData(n))
	})
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// transferSize is 256 MiB, or what KEDGE_E2E_TRANSFER_BYTES says.
func transferSize(t *testing.T) int64 {
	t.Helper()
	s := os.Getenv(transferBytesEnv)
	if s == "" {
		return 256 << 20
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number of bytes", transferBytesEnv, s)
	}
	return n
}

// plainKedge returns the name in binDir of a kedge built without -race: the race detector's shadow memory and
// access history grow with the bytes a process moves, so only a plain build's memory says something about kedge.
// Under -race it is built once, on first use.
func plainKedge(t *testing.T) string {
	t.Helper()
	if !raceEnabled {
		return "kedge"
	}
	plainKedgeBuild.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, "kedge-norace"), "../cmd/kedge").CombinedOutput()
		if err != nil {
			plainKedgeBuild.err = fmt.Errorf("building kedge without -race: %v\n%s", err, out)
		}
	})
	if plainKedgeBuild.err != nil {
		t.Fatal(plainKedgeBuild.err)
	}
	return "kedge-norace"
}

var plainKedgeBuild struct {
	sync.Once
	err error
}

// peakRSS returns VmHWM (the peak resident set size so far), in bytes, from /proc/<pid>/status.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, err := parseProcField(status, "VmHWM")
	if err != nil {
		t.Fatalf("/proc/%d/status: %v", pid, err)
	}
	return n
}

// parseProcField returns a "Name:  N kB" field of /proc/<pid>/status, in bytes.
func parseProcField(status []byte, name string) (int64, error) {
	for _, line := range strings.Split(string(status), "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s line %q", name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s line %q: %w", name, line, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", name)
}

// TestLargeTransfers uploads and downloads 256 MiB (1 GiB in `make transfer`) through kedge over HTTP/1.1, HTTP/2
// and a CONNECT tunnel, checks each one's SHA-256, and requires kedge's peak resident memory (VmHWM) to grow by less
// than 32 MiB over all of them: kedge streams bodies through pooled buffers and never holds one whole. The kedge here
// is built without -race (see plainKedge).
func TestLargeTransfers(t *testing.T) {
	t.Parallel()
	size := transferSize(t)
	port := transferBackend(t)
	k := startKedgeBinary(t, plainKedge(t), `{"http": {"routes": [
  {"backend_name": "bulk", "host_matcher": "bulk.example.com"},
  {"backend_name": "bulk", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
]}}`, fmt.Sprintf(`{"http": {"backends": [{"name": "bulk", "host": {"dns_name": "127.0.0.1", "port": %d}}]}}`, port))

	h := sha256.New()
	if _, err := io.Copy(h, transferData(size)); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))

	// Warm up every path once (TLS, HTTP/2, buffer pools, the backend connection), then take the baseline.
	clients := map[string]transferClient{
		"HTTP/1.1": k.httpTransfer(false),
		"HTTP/2":   k.httpTransfer(true),
		"CONNECT":  k.connectTransfer(t),
	}
	for _, name := range []string{"HTTP/1.1", "HTTP/2", "CONNECT"} {
		if _, _, err := clients[name].download(t, 1<<20); err != nil {
			t.Fatalf("%s warm-up download: %v", name, err)
		}
		if _, _, err := clients[name].upload(t, 1<<20); err != nil {
			t.Fatalf("%s warm-up upload: %v", name, err)
		}
	}
	before := peakRSS(t, k.proc.cmd.Process.Pid)

	for _, name := range []string{"HTTP/1.1", "HTTP/2", "CONNECT"} {
		c := clients[name]
		start := time.Now()
		n, sum, err := c.download(t, size)
		if err != nil || n != size || sum != want {
			t.Errorf("%s download: %d bytes, sha256 %s, %v; want %d bytes, sha256 %s", name, n, sum, err, size, want)
		}
		t.Logf("%s download of %d MiB: %v", name, size>>20, time.Since(start).Round(time.Millisecond))
		start = time.Now()
		n, sum, err = c.upload(t, size)
		if err != nil || n != size || sum != want {
			t.Errorf("%s upload: the backend read %d bytes, sha256 %s, %v; want %d bytes, sha256 %s", name, n, sum, err, size, want)
		}
		t.Logf("%s upload of %d MiB: %v", name, size>>20, time.Since(start).Round(time.Millisecond))
	}

	after := peakRSS(t, k.proc.cmd.Process.Pid)
	t.Logf("kedge peak RSS: %.1f MiB before, %.1f MiB after (+%.1f MiB)", mib(before), mib(after), mib(after-before))
	if after-before >= 32<<20 {
		t.Errorf("kedge's peak RSS grew by %.1f MiB moving %d MiB six times; want < 32 MiB", mib(after-before), size>>20)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// transferClient downloads and uploads the transfer data through kedge; each returns the byte count and SHA-256
// (hex) of what arrived at the other end.
type transferClient interface {
	download(t *testing.T, n int64) (int64, string, error)
	upload(t *testing.T, n int64) (int64, string, error)
}

// httpTransfer sends the transfers as ordinary requests for bulk.example.com on kedge's HTTPS port.
type httpTransfer struct{ c *http.Client }

func (e *kedgeEnv) httpTransfer(h2 bool) httpTransfer {
	c := e.client(h2)
	c.Timeout = 5 * time.Minute // 1 GiB with -race binaries on a busy machine
	return httpTransfer{c}
}

func (h httpTransfer) download(t *testing.T, n int64) (int64, string, error) {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://bulk.example.com/download?bytes="+strconv.FormatInt(n, 10), nil)
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	return hashBody(resp)
}

func (h httpTransfer) upload(t *testing.T, n int64) (int64, string, error) {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://bulk.example.com/upload", transferData(n))
	req.ContentLength = n
	resp, err := h.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	return uploadAnswer(resp)
}

// hashBody reads a download's body and returns its length and SHA-256.
func hashBody(resp *http.Response) (int64, string, error) {
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// uploadAnswer parses the backend's "<bytes> <sha256>" answer to an upload.
func uploadAnswer(resp *http.Response) (int64, string, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%s (%s): %s", resp.Status, resp.Header.Get("X-Kedge-Error"), body)
	}
	count, sum, _ := strings.Cut(string(body), " ")
	n, err := strconv.ParseInt(count, 10, 64)
	return n, sum, err
}

// connectTransfer opens a CONNECT tunnel through kedge to tunnel.example.com:443 for each transfer and speaks
// HTTP/1.1 to the backend inside it.
type connectTransfer struct{ e *kedgeEnv }

func (e *kedgeEnv) connectTransfer(*testing.T) connectTransfer { return connectTransfer{e} }

// tunnel returns a connection whose bytes reach the backend through a new CONNECT tunnel.
func (c connectTransfer) tunnel(t *testing.T) (net.Conn, *bufio.Reader, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", c.e.https, &tls.Config{RootCAs: c.e.ca.Pool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, nil, err
	}
	context.AfterFunc(t.Context(), func() { _ = conn.Close() })
	if _, err := io.WriteString(conn, "CONNECT tunnel.example.com:443 HTTP/1.1\r\nHost: tunnel.example.com:443\r\n\r\n"); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		return nil, nil, fmt.Errorf("CONNECT: %s (%s)", resp.Status, resp.Header.Get("X-Kedge-Error"))
	}
	return conn, br, nil
}

func (c connectTransfer) download(t *testing.T, n int64) (int64, string, error) {
	conn, br, err := c.tunnel(t)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://tunnel.example.com/download?bytes="+strconv.FormatInt(n, 10), nil)
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return 0, "", err
	}
	return hashBody(resp)
}

func (c connectTransfer) upload(t *testing.T, n int64) (int64, string, error) {
	conn, br, err := c.tunnel(t)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://tunnel.example.com/upload", transferData(n))
	req.ContentLength = n
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return 0, "", err
	}
	return uploadAnswer(resp)
}
