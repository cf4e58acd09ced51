package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// h1Client sends the common request (GET, HEAD or OPTIONS, without a body, an upgrade or a Connection header) to a
// plaintext endpoint on the caller's goroutine: it writes the request and reads the response header itself over a
// kept-alive connection. http.Transport runs a read and a write goroutine per connection and hands every request
// and response between them over channels, which under load costs more CPU than the request's own work; every
// other request (bodies, upgrades, TLS and h2 backends) stays with the backend's http.Transport.
//
// Its connections come from the backend's dialer, so they are tracked and closed with the backend like the
// Transport's. A pooled connection is checked before reuse: one that the endpoint closed, or on which it sent bytes
// nobody asked for, is discarded (a response must never be read as the answer to another request), and a request
// that fails on a reused connection before any byte of an answer arrived is sent once more on a new one.
type h1Client struct {
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle        int
	idleTimeout    time.Duration
	headerTimeout  time.Duration // 0: none
	maxHeaderBytes int64

	mu     sync.Mutex
	idle   map[string][]*h1Conn // per endpoint; the most recently used last
	nidle  int
	sweep  *time.Timer
	closed bool
}

// h1Conn is one kept-alive connection with its buffers.
type h1Conn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	ep        string
	limit     int64 // bytes Read may still take from conn
	nread     int64 // bytes read from conn for the current request
	idleSince time.Time
	keys      map[string]string // header keys seen on this connection, interned (readResponse)
}

// Read reads from the connection within limit (the response header's size bound while the header is read).
func (c *h1Conn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errResponseHeaderTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	c.limit -= int64(n)
	c.nread += int64(n)
	return n, err
}

var (
	errResponseHeaderTooLarge = errors.New("backend response headers too large")
	errUnexpectedSwitch       = errors.New("backend answered 101 Switching Protocols to a request that asked for no upgrade")
	errTooMany1xx             = errors.New("backend sent too many 1xx responses")
)

// max1xx bounds the informational responses (103 Early Hints, ...) read before the final one.
const max1xx = 8

func newH1Client(dial func(ctx context.Context, network, addr string) (net.Conn, error), o Options) *h1Client {
	return &h1Client{
		dial:           dial,
		maxIdle:        o.MaxIdleConnsPerEndpoint,
		idleTimeout:    o.IdleConnTimeout,
		headerTimeout:  o.ResponseHeaderTimeout,
		maxHeaderBytes: maxResponseHeaderBytes,
		idle:           make(map[string][]*h1Conn),
	}
}

// eligible reports whether req is one h1Client sends: it has no body and is idempotent (so it may be sent again
// when a kept-alive connection turns out to be closed), and asks for nothing that needs http.Transport's
// machinery (an upgrade, a Connection header, trailers, a close after the exchange).
func eligible(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return (req.Body == nil || req.Body == http.NoBody) && req.ContentLength <= 0 && !req.Close &&
		len(req.TransferEncoding) == 0 && len(req.Trailer) == 0 &&
		len(req.Header["Upgrade"]) == 0 && len(req.Header["Connection"]) == 0
}

// roundTrip sends req (whose URL names the endpoint ep) and reads the response header. Errors before the request
// was written on a new connection are the dialer's (so the caller may try another endpoint).
func (c *h1Client) roundTrip(req *http.Request, ep string) (*http.Response, error) {
	ctx := req.Context()
	for try := 0; ; try++ {
		var pc *h1Conn
		reused := false
		if try == 0 { // the one retry goes on a new connection
			pc, reused = c.get(ep)
		}
		if pc == nil {
			conn, err := c.dial(ctx, "tcp", ep)
			if err != nil {
				return nil, err
			}
			pc = &h1Conn{conn: conn, ep: ep}
			pc.br = bufio.NewReaderSize(pc, 4096)
			pc.bw = bufio.NewWriterSize(conn, 4096)
		}
		resp, err := c.exchange(ctx, req, pc)
		if err == nil {
			return resp, nil
		}
		_ = pc.conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		// A kept-alive connection the endpoint closed while the request was on its way: nothing of an answer came,
		// and the request is idempotent and has no body, so it goes once more on a new connection.
		if reused && pc.nread == 0 && !errors.Is(err, errResponseHeaderTooLarge) && !isTimeout(err) {
			continue
		}
		return nil, err
	}
}

// exchange writes req on pc and reads the response header.
func (c *h1Client) exchange(ctx context.Context, req *http.Request, pc *h1Conn) (resp *http.Response, err error) {
	// The request's end closes the connection: a deadline would not do, as the header deadline set below could
	// replace it. On success the response body owns stop.
	stop := context.AfterFunc(ctx, func() { _ = pc.conn.Close() })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	pc.nread = 0
	if err := req.Write(pc.bw); err != nil {
		return nil, err
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, err
	}
	if c.headerTimeout > 0 {
		_ = pc.conn.SetReadDeadline(time.Now().Add(c.headerTimeout))
	}
	for n := 0; ; n++ {
		pc.limit = c.maxHeaderBytes // for each response, informational ones too
		resp, err = readResponse(pc, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, errUnexpectedSwitch
		}
		if n == max1xx {
			return nil, errTooMany1xx
		}
		// Informational answers go to the client as they come (httputil.ReverseProxy listens for them).
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return nil, err
			}
		}
	}
	pc.limit = math.MaxInt64
	if c.headerTimeout > 0 {
		_ = pc.conn.SetReadDeadline(time.Time{})
	}
	resp.Body = &h1Body{body: resp.Body, pc: pc, client: c, ctx: ctx, stop: stop, reuse: !resp.Close}
	return resp, nil
}

// h1Body is a response body: read to its end and closed, its connection goes back to the pool; closed early, the
// connection is closed (the rest of the body is not read).
type h1Body struct {
	body   io.ReadCloser
	pc     *h1Conn
	client *h1Client
	ctx    context.Context
	stop   func() bool
	reuse  bool
	eof    bool
	done   bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.ctx.Err() != nil:
		// The request ended (the client went away): say so, rather than what the closed connection said.
		err = b.ctx.Err()
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// stop reports false when the request's context already ended and so closed the connection.
	if b.stop() && b.reuse && (b.eof || b.body == http.NoBody) {
		if err := b.body.Close(); err == nil { // at its end: nothing left to read
			b.client.put(b.pc)
			return nil
		}
	}
	// Closed before its end: the connection goes first, so that the body's Close cannot read the rest of the body
	// from the backend (net/http's drains it to EOF).
	_ = b.pc.conn.Close()
	_ = b.body.Close()
	return nil
}

// get takes the most recently used idle connection to ep that is still usable; reused reports whether it was one.
func (c *h1Client) get(ep string) (pc *h1Conn, reused bool) {
	for {
		c.mu.Lock()
		list := c.idle[ep]
		if len(list) == 0 {
			c.mu.Unlock()
			return nil, false
		}
		pc = list[len(list)-1]
		list[len(list)-1] = nil
		c.idle[ep] = list[:len(list)-1]
		c.nidle--
		c.mu.Unlock()
		if (c.idleTimeout <= 0 || time.Since(pc.idleSince) < c.idleTimeout) && idleConnUsable(pc.conn) {
			return pc, true
		}
		_ = pc.conn.Close()
	}
}

// put returns pc to the pool, or closes it when the pool is full or closed, or pc holds unread bytes.
func (c *h1Client) put(pc *h1Conn) {
	if pc.br.Buffered() > 0 {
		_ = pc.conn.Close()
		return
	}
	pc.idleSince = time.Now()
	c.mu.Lock()
	list := c.idle[pc.ep]
	if c.closed || len(list) >= c.maxIdle {
		c.mu.Unlock()
		_ = pc.conn.Close()
		return
	}
	c.idle[pc.ep] = append(list, pc)
	c.nidle++
	if c.sweep == nil && c.idleTimeout > 0 {
		c.sweep = time.AfterFunc(c.idleTimeout, c.closeExpired)
	}
	c.mu.Unlock()
}

// closeExpired closes the connections idle for longer than idleTimeout, and runs again while any stay idle.
func (c *h1Client) closeExpired() {
	var expired []*h1Conn
	c.mu.Lock()
	now := time.Now()
	for ep, list := range c.idle {
		// The list is in the order the connections went idle: the expired ones are at its start.
		n := 0
		for n < len(list) && now.Sub(list[n].idleSince) >= c.idleTimeout {
			n++
		}
		if n == 0 {
			continue
		}
		expired = append(expired, list[:n]...)
		rest := append(list[:0], list[n:]...)
		clear(list[len(rest):])
		if len(rest) == 0 {
			delete(c.idle, ep)
		} else {
			c.idle[ep] = rest
		}
		c.nidle -= n
	}
	if c.nidle > 0 && !c.closed {
		c.sweep.Reset(c.idleTimeout / 2)
	} else {
		c.sweep = nil
	}
	c.mu.Unlock()
	for _, pc := range expired {
		_ = pc.conn.Close()
	}
}

// close closes every idle connection; connections in use close when their response ends.
func (c *h1Client) close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = make(map[string][]*h1Conn)
	c.nidle = 0
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
	}
	c.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			_ = pc.conn.Close()
		}
	}
}
