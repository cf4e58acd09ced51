package serve_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// countingReader counts what an HTTP client took of a request body; after its data it waits for ctx.
type countingReader struct {
	ctx  context.Context
	data *bytes.Reader
	n    atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	r.n.Add(int64(n))
	if err == io.EOF {
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	return n, err
}

// TestHTTP2StalledUploadLeavesOthers sends, on one HTTP/2 connection, an upload to a handler that reads nothing
// until its stream's receive buffer is full, then another upload to a handler that reads: the second must go through.
// net/http hands a connection's window back only as handlers read; with its default connection buffer (equal to one
// stream's) the stalled stream took all of it and the second upload waited for the first.
func TestHTTP2StalledUploadLeavesOthers(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stall" {
			<-r.Context().Done()
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
	})
	addr, _ := tlsServer(t, h, serve.HTTPOptions{TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}}}, nil)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stalled := &countingReader{ctx: ctx, data: bytes.NewReader(make([]byte, 2*serve.DefaultMaxReceiveBufferPerStream))}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/stall", stalled)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	// Wait until the client stops sending: the stream's buffer is full.
	last, stable := int64(-1), 0
	for deadline := time.Now().Add(10 * time.Second); stable < 6 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if n := stalled.n.Load(); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	if last < serve.DefaultMaxReceiveBufferPerStream {
		t.Fatalf("the stalled upload stopped after %d bytes, before filling its stream's buffer", last)
	}

	const size = 512 << 10
	ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel2()
	req2, err := http.NewRequestWithContext(ctx2, http.MethodPost, "https://"+addr+"/echo", bytes.NewReader(make([]byte, size)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req2)
	if err != nil {
		t.Fatalf("an upload beside a stalled one on the same connection: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != strconv.Itoa(size) || resp.ProtoMajor != 2 {
		t.Fatalf("answer %q over HTTP/%d, want %d bytes received over HTTP/2", body, resp.ProtoMajor, size)
	}
}
