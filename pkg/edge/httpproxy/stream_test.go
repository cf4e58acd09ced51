package httpproxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// TestStreamingResponse checks that a response is flushed while the backend is still producing it: the client
// reads the first chunk while the backend holds back the second until the test releases it.
func TestStreamingResponse(t *testing.T) {
	t.Parallel()
	const first, second = "first chunk\n", "second chunk\n"
	release := make(chan struct{})
	b := newBackend(t, "stream", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("kind") {
		case "sse":
			w.Header().Set("Content-Type", "text/event-stream")
		case "length":
			w.Header().Set("Content-Length", strconv.Itoa(len(first+second)))
		}
		io.WriteString(w, first)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, second)
	}))
	routes := []route.HTTPRoute{{Backend: "stream"}}
	h1 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}})
	h2 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, tls: true})
	tests := []struct {
		name string
		e    *env
		kind string
	}{
		{"unknown length", h1, "chunked"},
		{"event stream", h1, "sse"},
		{"known length, flushed by interval", h1, "length"},
		{"HTTP/2 client", h2, "chunked"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share release.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tc.e.proxy.URL+"/?kind="+tc.kind, nil)
			resp, err := tc.e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if tc.e == h2 && resp.ProtoMajor != 2 {
				t.Errorf("client spoke %s", resp.Proto)
			}
			br := bufio.NewReader(resp.Body)
			got, err := br.ReadString('\n')
			if err != nil || got != first {
				t.Fatalf("first chunk %q, %v", got, err)
			}
			release <- struct{}{}
			got, err = br.ReadString('\n')
			if err != nil || got != second {
				t.Fatalf("second chunk %q, %v", got, err)
			}
		})
	}
}

// patternReader yields n deterministic bytes, with no length visible to net/http.
type patternReader struct{ n, off int }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(len(b), p.n-p.off)]
	for i := range b {
		b[i] = byte((p.off + i) % 251)
	}
	p.off += len(b)
	return len(b), nil
}

func TestLargeBodyBothWays(t *testing.T) {
	t.Parallel()
	const size = 10 << 20
	b := newBackend(t, "echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo while still reading: the response streams back before the request body ends.
		_ = http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		_, _ = io.Copy(w, r.Body)
	}))
	routes := []route.HTTPRoute{{Backend: "echo"}}
	h1 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}})
	h2 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, tls: true})
	want := sha256.New()
	io.Copy(want, &patternReader{n: size})
	tests := []struct {
		name          string
		e             *env
		knownLength   bool
		wantHTTPMajor int
	}{
		{"HTTP/1.1 chunked", h1, false, 1},
		{"HTTP/1.1 Content-Length", h1, true, 1},
		{"HTTP/2", h2, false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tc.e.proxy.URL+"/", &patternReader{n: size})
			if tc.knownLength {
				req.ContentLength = size
			}
			resp, err := tc.e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got := sha256.New()
			n, err := io.Copy(got, resp.Body)
			if err != nil || n != size || fmt.Sprintf("%x", got.Sum(nil)) != fmt.Sprintf("%x", want.Sum(nil)) {
				t.Errorf("echoed %d bytes (%v), want %d identical bytes", n, err, size)
			}
			if resp.ProtoMajor != tc.wantHTTPMajor {
				t.Errorf("client spoke %s", resp.Proto)
			}
		})
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(c, brw) // echo until the client side closes
	}))
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "ws"}}, backends: []*testBackend{b}})
	c := e.dialRaw(t)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"X-Kedge-Request-Id: ws-test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", "second message"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q, %v; want %q", buf, err, msg)
		}
	}
	c.Close()
	if line := e.waitLog(t, "ws-test"); line["status"] != float64(http.StatusSwitchingProtocols) {
		t.Errorf("log line %v", line)
	}
}

// TestBackendAnswersBeforeBodyEnds has the backend start its answer before the client has sent the rest of the
// request body; the client only sends the rest once it has seen the start of the answer. Every body byte must
// still reach the backend (net/http would otherwise discard the unread body when kedge starts its response).
func TestBackendAnswersBeforeBodyEnds(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "duplex", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		io.WriteString(w, "ready\n")
		rc.Flush()
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x %v\n", n, h.Sum(nil), err)
	}))
	routes := []route.HTTPRoute{{Backend: "duplex"}}
	h1 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}})
	h2 := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, tls: true})
	for _, e := range []*env{h1, h2} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.proxy.URL+"/", pr)
		req.ContentLength = 100 << 10 // a chunked request would make kedge close the connection, which hides the problem
		// The client transport waits for its body writer; unblock it when the test gives up.
		context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) })
		go func() {
			_, _ = io.Copy(pw, &patternReader{n: 1024})
		}()
		resp, err := e.client.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); line != "ready\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		go func() {
			_, err := io.Copy(pw, &patternReader{n: 100 << 10, off: 1024})
			pw.CloseWithError(err)
		}()
		want := sha256.New()
		io.Copy(want, &patternReader{n: 100 << 10})
		line, _ := br.ReadString('\n')
		if wantLine := fmt.Sprintf("%d %x <nil>\n", 100<<10, want.Sum(nil)); line != wantLine {
			t.Errorf("%s: backend read %q, want %q", resp.Proto, line, wantLine)
		}
		resp.Body.Close()
		cancel()
	}
}
