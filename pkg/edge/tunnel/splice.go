package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// end is one side of a tunnel as the splice sees it.
type end interface {
	io.Reader
	io.Writer
	// closeWrite tells the peer that no more bytes come (half-close); reading goes on.
	closeWrite()
	// abort ends the side at once and unblocks its pending reads and writes.
	abort()
}

// establish answers 200 and splices client and backend until the tunnel ends; it owns conn.
func (h *Handler) establish(w http.ResponseWriter, r *http.Request, t *tunnel, conn net.Conn, tr *serve.Tracker) {
	defer conn.Close()
	var client end
	if r.ProtoMajor == 1 {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			h.fail(w, r, t, http.StatusInternalServerError, wire.ErrTransportUnknown, "cannot take over the connection: "+err.Error())
			return
		}
		defer c.Close()
		// net/http has cleared the connection's deadlines. Bytes the client sent ahead of our answer (a pipelined
		// TLS ClientHello) wait in brw's buffer; past them, read the connection itself.
		pending, _ := brw.Reader.Peek(brw.Reader.Buffered())
		answer := "HTTP/1.1 200 Connection established\r\n" + wire.HeaderRequestID + ": " + t.reqID + "\r\n"
		if t.label != admission.AdhocLabel {
			answer += wire.HeaderKedgeBackendName + ": " + t.label + "\r\n"
		}
		if _, err := io.WriteString(c, answer+"\r\n"); err != nil {
			t.status, t.errMsg = wire.StatusClientClosed, "writing the 200 answer: "+err.Error()
			return
		}
		client = &connEnd{conn: c, pending: append([]byte(nil), pending...)}
	} else {
		rc := http.NewResponseController(w)
		// A WriteTimeout of the server would cut the stream; tunnels have only the idle timeout.
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		if t.label != admission.AdhocLabel {
			w.Header().Set(wire.HeaderKedgeBackendName, t.label)
		}
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			t.status, t.errMsg = wire.StatusClientClosed, "sending the 200 answer: "+err.Error()
			return
		}
		client = &streamEnd{body: r.Body, w: w, rc: rc}
	}
	t.status = http.StatusOK
	h.m.tunnels.WithLabelValues("established").Inc()
	h.m.open.Inc()
	defer h.m.open.Dec()
	h.splice(t, client, &connEnd{conn: conn}, tr.Draining())
}

// splice copies both ways until both directions are done (each ended by EOF, which is passed on as a half-close)
// or anything fails, the tunnel idles for the idle timeout, or the server drains and the tunnel idles briefly.
// It returns when both copies have stopped.
func (h *Handler) splice(t *tunnel, client, backendEnd end, draining <-chan struct{}) {
	var reason atomic.Pointer[string]
	setReason := func(s string) { reason.CompareAndSwap(nil, &s) }
	abort := sync.OnceFunc(func() {
		client.abort()
		backendEnd.abort()
	})
	watch := newIdleWatch(h.idle, func(draining bool) {
		if draining {
			setReason("server shutting down")
		} else {
			setReason("idle timeout")
		}
		abort()
	})
	stopped := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case <-draining:
			watch.drain(min(h.idle, drainIdleTimeout))
		case <-stopped:
		}
	}()

	var up atomic.Int64
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		err := h.pump(backendEnd, client, &up, h.m.bytesUp, watch)
		if err != nil {
			setReason("client side: " + err.Error())
			abort()
			return
		}
		backendEnd.closeWrite()
	}()
	var down atomic.Int64
	if err := h.pump(client, backendEnd, &down, h.m.bytesDown, watch); err != nil {
		setReason("backend side: " + err.Error())
		abort()
	} else {
		client.closeWrite()
	}
	<-upDone
	// Both directions are done. The backend connection closes now; the client's ends with the handler (HTTP/1:
	// establish closes the connection; HTTP/2: the stream ends cleanly when the handler returns).
	backendEnd.abort()
	watch.stop()
	close(stopped)
	<-watcherDone
	t.up, t.down = up.Load(), down.Load()
	t.closed = "closed"
	if r := reason.Load(); r != nil {
		t.closed = *r
	}
}

// pump copies src to dst until src ends (nil) or either fails, counting the bytes written. There is no per-chunk
// timer work: the idle watch only records the time of the last read and write.
func (h *Handler) pump(dst io.Writer, src io.Reader, total *atomic.Int64, counter prometheus.Counter, watch *idleWatch) error {
	bp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bp)
	buf := *bp
	br, batching := src.(batchReader)
	bw, _ := dst.(buffersWriter)
	batching = batching && bw != nil && br.canBatch()
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			watch.touch()
			var wn int64
			var werr error
			if batching && rerr == nil {
				// TLS hands out one record (at most 16 KiB) per Read: take the records it already holds too and
				// send them all in one write.
				wn, rerr, werr = batchCopy(bw, br, buf[:n])
			} else {
				var m int
				m, werr = dst.Write(buf[:n])
				wn = int64(m)
			}
			total.Add(wn)
			counter.Add(float64(wn))
			watch.touch()
			if werr != nil {
				return werr
			}
		}
		switch {
		case errors.Is(rerr, io.EOF):
			return nil
		case rerr != nil:
			return rerr
		}
	}
}

// batchSize is the most one batched write sends; batch buffers are pooled and held only for one batch, so an idle
// tunnel keeps just its copy buffers.
const batchSize = 256 << 10

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, batchSize); return &b }}

// batchReader is a side whose Read returns less than it already holds (a TLS connection: one record a Read).
type batchReader interface {
	canBatch() bool
	// readBuffered fills p with bytes that are there without waiting for the network; a read error comes back
	// with the bytes read before it.
	readBuffered(p []byte) (int, error)
}

// buffersWriter writes several slices in one system call (writev).
type buffersWriter interface {
	writeBuffers(bufs net.Buffers) (int64, error)
}

// batchCopy writes first and whatever src holds beyond it in one write. rerr is src's error after first (the
// caller handles it after the write), werr dst's.
func batchCopy(dst buffersWriter, src batchReader, first []byte) (written int64, rerr, werr error) {
	bp := batchBuffers.Get().(*[]byte)
	defer batchBuffers.Put(bp)
	m, rerr := src.readBuffered(*bp)
	bufs := net.Buffers{first}
	if m > 0 {
		bufs = append(bufs, (*bp)[:m])
	}
	written, werr = dst.writeBuffers(bufs)
	return written, rerr, werr
}

// connEnd is a net.Conn side: the backend connection, or the client's hijacked HTTP/1 connection (with the bytes
// it sent ahead of the 200 answer in pending).
type connEnd struct {
	conn    net.Conn
	pending []byte
}

func (c *connEnd) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.conn.Read(p)
}

func (c *connEnd) Write(p []byte) (int, error) { return c.conn.Write(p) }

// writeBuffers writes bufs in one writev where the connection (or the one it wraps, as backend connections do) is
// a socket.
func (c *connEnd) writeBuffers(bufs net.Buffers) (int64, error) {
	var w io.Writer = c.conn
	if _, isTLS := c.conn.(*tls.Conn); !isTLS {
		if nc, ok := c.conn.(interface{ NetConn() net.Conn }); ok {
			w = nc.NetConn()
		}
	}
	return bufs.WriteTo(w)
}

// canBatch: a TLS client connection returns one record per Read while it may hold more.
func (c *connEnd) canBatch() bool {
	_, ok := c.conn.(*tls.Conn)
	return ok
}

// expired is a read deadline in the past: reads then return only what the TLS layer already holds.
var expired = time.Unix(1, 0)

func (c *connEnd) readBuffered(p []byte) (int, error) {
	_ = c.conn.SetReadDeadline(expired)
	defer func() { _ = c.conn.SetReadDeadline(time.Time{}) }()
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Nothing more without waiting. A TLS timeout leaves the connection usable (crypto/tls keeps only
			// permanent errors), and a partly read record stays buffered.
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// closeWrite half-closes: a TCP FIN, or a TLS close_notify (which TLS clients read as the end of the stream).
func (c *connEnd) closeWrite() {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.conn.Close()
}

func (c *connEnd) abort() { _ = c.conn.Close() }

// streamEnd is an HTTP/2 CONNECT stream: the request body carries the client's bytes, the response the backend's.
// HTTP/2 can end the client's direction (END_STREAM from the client is an EOF here), but a handler cannot end only
// its response, so when the backend is done the whole stream ends (the handler returns).
type streamEnd struct {
	body io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController
}

func (s *streamEnd) Read(p []byte) (int, error) { return s.body.Read(p) }

func (s *streamEnd) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	return n, err
}

// closeWrite ends the stream: closing the body unblocks the client-to-backend copy, and the handler returns.
func (s *streamEnd) closeWrite() { _ = s.body.Close() }

func (s *streamEnd) abort() {
	_ = s.body.Close()
	_ = s.rc.SetWriteDeadline(time.Now()) // unblocks a write stuck on flow control
}

// idleWatch calls onIdle when touch has not been called for the timeout. It runs on a timer (no goroutine of its
// own) and re-arms itself for the remaining time whenever it fires early. onIdle must not call back into the watch.
type idleWatch struct {
	last     atomic.Int64 // UnixNano of the last activity
	timeout  atomic.Int64 // nanoseconds
	draining atomic.Bool
	done     atomic.Bool
	onIdle   func(draining bool)
	timer    *time.Timer
	mu       sync.Mutex // serialises checks, timer resets and stop
}

func newIdleWatch(timeout time.Duration, onIdle func(draining bool)) *idleWatch {
	w := &idleWatch{onIdle: onIdle}
	w.timeout.Store(int64(timeout))
	w.touch()
	w.mu.Lock()
	w.timer = time.AfterFunc(timeout, w.check)
	w.mu.Unlock()
	return w
}

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }

func (w *idleWatch) check() {
	// Under mu, so that once stop has returned onIdle never runs (it would touch a finished handler's writer).
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done.Load() {
		return
	}
	idle := time.Duration(time.Now().UnixNano() - w.last.Load())
	timeout := time.Duration(w.timeout.Load())
	if idle >= timeout {
		w.onIdle(w.draining.Load())
		return
	}
	w.timer.Reset(timeout - idle)
}

// drain shortens the timeout and checks at once.
func (w *idleWatch) drain(timeout time.Duration) {
	w.draining.Store(true)
	if int64(timeout) < w.timeout.Load() {
		w.timeout.Store(int64(timeout))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done.Load() {
		w.timer.Reset(0)
	}
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done.Store(true)
	w.timer.Stop()
}
