package httpproxy

import (
	"bufio"
	"net"
	"net/http"
)

// responseWriter records the status and counts the body bytes of a response. It unwraps for
// http.ResponseController, so flushing, hijacking (WebSocket upgrades) and full duplex keep working through it.
type responseWriter struct {
	rw     http.ResponseWriter
	status int
	bytes  int64
}

var _ interface {
	http.ResponseWriter
	http.Flusher
	http.Hijacker
} = (*responseWriter)(nil)

func (w *responseWriter) Header() http.Header { return w.rw.Header() }

func (w *responseWriter) WriteHeader(code int) {
	// Informational answers (100 Continue, 103 Early Hints) precede the real one; 101 is final for HTTP.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.rw.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.rw.Write(p)
	w.bytes += int64(n)
	return n, err
}

// FlushError flushes buffered data to the client (used by http.ResponseController.Flush).
func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	switch f := w.rw.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
		return nil
	}
	return http.NewResponseController(w.rw).Flush()
}

// Flush implements http.Flusher for code that asserts it.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// Hijack takes over the connection (ReverseProxy does so for 101 Switching Protocols, then writes the 101 itself,
// so the status is recorded here).
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.rw).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.rw }

// bufferPool recycles the ReverseProxy's copy buffers. A bounded channel keeps Get and Put free of allocations
// (sync.Pool would box each slice) and caps what it retains.
type bufferPool struct {
	size int
	free chan []byte
}

// maxPooledBuffers bounds the memory the pool keeps: 128 x 32 KiB = 4 MiB by default.
const maxPooledBuffers = 128

func newBufferPool(size int) *bufferPool {
	return &bufferPool{size: size, free: make(chan []byte, maxPooledBuffers)}
}

func (p *bufferPool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p *bufferPool) Put(b []byte) {
	if cap(b) < p.size {
		return
	}
	select {
	case p.free <- b[:p.size]:
	default:
	}
}
