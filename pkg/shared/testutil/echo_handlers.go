package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Bounds on query parameters, so a typo cannot make a test run for ever.
const (
	maxChunks   = 1_000_000
	maxDuration = 24 * time.Hour
)

// sizePattern is the repeating content of SizeData: printable, with a length that does not divide common buffer
// sizes, so an offset error shows up in a comparison.
const sizePattern = "abcdefghijklmnopqrstuvwxyz0123456789\n"

// SizeData returns the n bytes /size?bytes=n serves.
func SizeData(n int64) io.Reader { return io.LimitReader(&patternReader{}, n) }

type patternReader struct{ off int }

func (p *patternReader) Read(b []byte) (int, error) {
	for i := 0; i < len(b); {
		k := copy(b[i:], sizePattern[p.off:])
		i += k
		p.off = (p.off + k) % len(sizePattern)
	}
	return len(b), nil
}

func (e *EchoServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !e.enter() {
		http.Error(w, "echo server closed", http.StatusServiceUnavailable)
		return
	}
	defer e.leave()
	e.hits.Add(1)
	e.describe(w.Header(), r)
	switch p := r.URL.Path; {
	case p == "/stream":
		e.stream(w, r)
	case p == "/size":
		e.size(w, r)
	case strings.HasPrefix(p, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(p, "/status/"))
		if err != nil || code < 200 || code > 599 {
			http.Error(w, "want /status/N with 200 <= N <= 599", http.StatusBadRequest)
			return
		}
		e.echo(w, r, code)
	case p == "/slow":
		d, ok := durationParam(w, r, "d", time.Second)
		if !ok {
			return
		}
		e.wait(r, d)
		e.echo(w, r, http.StatusOK)
	case p == "/ws":
		e.websocket(w, r)
	case p == "/reset":
		e.reset(w, r)
	default:
		e.echo(w, r, http.StatusOK)
	}
}

// describe sets the X-Echo-* headers that do not need the body.
func (e *EchoServer) describe(h http.Header, r *http.Request) {
	h.Set("X-Echo-Backend", e.Name)
	h.Set("X-Echo-Method", r.Method)
	h.Set("X-Echo-Proto", r.Proto)
	h.Set("X-Echo-Host", r.Host)
	h.Set("X-Echo-Path", r.URL.EscapedPath())
	h.Set("X-Echo-Query", r.URL.RawQuery)
	h.Set("X-Echo-Tls", strconv.FormatBool(r.TLS != nil))
	if cn := clientCN(r); cn != "" {
		h.Set("X-Echo-Client-Cn", cn)
	}
	for name, vals := range r.Header {
		for _, v := range vals {
			h.Add("X-Echo-Header-"+name, v)
		}
	}
}

func clientCN(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return ""
	}
	return r.TLS.PeerCertificates[0].Subject.CommonName
}

func (e *EchoServer) echo(w http.ResponseWriter, r *http.Request, code int) {
	sum := sha256.New()
	n, err := io.Copy(sum, r.Body)
	if err != nil {
		http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	er := EchoResponse{
		Backend:    e.Name,
		Method:     r.Method,
		Proto:      r.Proto,
		Host:       r.Host,
		Path:       r.URL.EscapedPath(),
		Query:      r.URL.RawQuery,
		Header:     r.Header,
		BodyLength: n,
		BodySHA256: hex.EncodeToString(sum.Sum(nil)),
		TLS:        r.TLS != nil,
		ClientCN:   clientCN(r),
		RemoteAddr: r.RemoteAddr,
	}
	h := w.Header()
	h.Set("X-Echo-Body-Length", strconv.FormatInt(er.BodyLength, 10))
	h.Set("X-Echo-Body-Sha256", er.BodySHA256)
	if code == http.StatusNoContent || code == http.StatusNotModified {
		w.WriteHeader(code)
		return
	}
	body, err := json.Marshal(er)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func (e *EchoServer) stream(w http.ResponseWriter, r *http.Request) {
	chunks := 5
	if s := r.URL.Query().Get("chunks"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxChunks {
			http.Error(w, fmt.Sprintf("chunks must be 0..%d", maxChunks), http.StatusBadRequest)
			return
		}
		chunks = n
	}
	interval, ok := durationParam(w, r, "interval", 10*time.Millisecond)
	if !ok {
		return
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	for i := range chunks {
		if i > 0 {
			e.wait(r, interval)
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (e *EchoServer) size(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "want /size?bytes=N with N >= 0", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, SizeData(n))
}

// websocket answers an Upgrade with 101 and echoes bytes on the hijacked connection. It is WebSocket-shaped only
// (no framing), which is all a proxy test needs: the proxy must pass the 101 and then splice bytes both ways.
func (e *EchoServer) websocket(w http.ResponseWriter, r *http.Request) {
	upgrade := r.Header.Get("Upgrade")
	if r.ProtoMajor != 1 || upgrade == "" || !headerHasToken(r.Header, "Connection", "upgrade") {
		http.Error(w, "want an HTTP/1.1 request with Connection: Upgrade and an Upgrade header", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	untrack, ok := e.trackHijacked(conn)
	if !ok {
		_ = conn.Close()
		return
	}
	defer untrack()
	defer func() { _ = conn.Close() }()
	_, err = fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\nX-Echo-Backend: %s\r\n\r\n",
		upgrade, e.Name)
	if err != nil {
		return
	}
	if _, err := io.Copy(conn, brw.Reader); err != nil {
		return
	}
	// The client half-closed: answer with our own FIN so it sees a clean end.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// reset sends the start of a response and then aborts: over HTTP/1.1 with a TCP RST (SetLinger(0)), over HTTP/2 with
// RST_STREAM (http.ErrAbortHandler).
func (e *EchoServer) reset(w http.ResponseWriter, r *http.Request) {
	const partial = "partial response, then reset"
	if r.ProtoMajor != 1 {
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, partial)
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	_, _ = fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nX-Echo-Backend: %s\r\n\r\n%s", e.Name, partial)
	_ = brw.Flush()
	raw := conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		raw = nc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = raw.Close()
}

// wait sleeps d. When the client leaves or the server closes first it aborts the response (http.ErrAbortHandler), so
// the client never mistakes a cut-short answer for a complete one.
func (e *EchoServer) wait(r *http.Request, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return
	case <-r.Context().Done():
	case <-e.done:
	}
	panic(http.ErrAbortHandler)
}

func durationParam(w http.ResponseWriter, r *http.Request, name string, def time.Duration) (time.Duration, bool) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxDuration {
		http.Error(w, fmt.Sprintf("%s must be a duration between 0 and %s", name, maxDuration), http.StatusBadRequest)
		return 0, false
	}
	return d, true
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
