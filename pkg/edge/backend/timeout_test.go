package backend

import (
	"io"
	"net/http"
	"testing"
	"time"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestResponseHeaderTimeout: a backend that accepts the request and never answers costs the request
// backend-timeout after ResponseHeaderTimeout, while a backend that sends its headers at once and then trickles
// its body (a stream) is not cut by it.
func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hung := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	stream := serve(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		for i := range 3 {
			_, _ = w.Write([]byte{'a' + byte(i)})
			w.(http.Flusher).Flush()
			time.Sleep(150 * time.Millisecond) // the whole body takes longer than the header timeout
		}
	})
	hungHost, hungPort := hostPort(t, hung)
	streamHost, streamPort := hostPort(t, stream)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{ResponseHeaderTimeout: 200 * time.Millisecond})
	if err := p.Update([]Spec{hostSpec("hung", hungHost, hungPort), hostSpec("stream", streamHost, streamPort)}); err != nil {
		t.Fatal(err)
	}

	rt, _ := p.HTTP("hung")
	start := time.Now()
	resp, err := get(t, rt, t.Context())
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a hung backend answered %s", resp.Status)
	}
	if typ := errType(err); typ != "backend-timeout" {
		t.Errorf("hung backend: error type %q (%v), want backend-timeout", typ, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the request waited %v for a hung backend", d)
	}

	rt, _ = p.HTTP("stream")
	resp, err = get(t, rt, t.Context())
	if err != nil {
		t.Fatalf("streaming backend: %v", err)
	}
	defer resp.Body.Close()
	if body, err := io.ReadAll(resp.Body); err != nil || string(body) != "abc" {
		t.Errorf("streaming body %q, %v; want abc", body, err)
	}
}
