package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// handshakeListener is a TLS listener whose Accept returns only connections that have completed their handshake.
// Each accepted connection is handshaken on a goroutine of its own that ends with the handshake; the server then
// serves the *tls.Conn on the goroutine it starts for it, where http.Server's own Handshake call is a no-op.
//
// Why: a goroutine keeps the stack it grew for the rest of its life, and a TLS handshake (ECDSA/RSA signatures, key
// exchange, certificate verification) grows a stack well past what serving an idle connection needs. With
// tls.NewListener, http.Server handshakes on the goroutine that then serves the connection, so every idle
// connection held that stack (a standalone probe with full handshakes: 24 KiB of stack per idle h2 connection, 16 KiB
// with the handshake on its own goroutine). A resumed session's handshake needs far less stack, so connections that
// resume gain little (docs/performance.md).
//
// Connections over a ConnLimiter's limits never get here when the limiter wraps the inner listener (they are closed
// before any handshake, as before), and a failed handshake closes the connection, which gives its place back. The
// failure is logged as http.Server logs it, so the error log's levels and the plain-HTTP 400 answer stay the same.
//
// Ownership: the listener owns the accept loop and the handshake goroutines; Close stops them all and returns once
// they are gone.
type handshakeListener struct {
	net.Listener                                  // the inner listener: Addr, and Accept by the accept loop only
	config       *tls.Config                      // server config, NextProtos already set
	timeout      time.Duration                    // bounds each handshake (http.Server's TLS handshake timeout); 0: none
	logf         func(format string, args ...any) // the server's error log
	ready        chan *tls.Conn                   // handshaken connections, to Accept
	errs         chan error                       // errors of the inner Accept, to Accept, one for one
	done         <-chan struct{}                  // closed by Close
	stop         context.CancelFunc               // closes done and interrupts the handshakes in progress
	closeOnce    sync.Once
	closeErr     error          // the inner listener's Close error; written in closeOnce
	wg           sync.WaitGroup // the accept loop and the handshakes
}

var _ net.Listener = (*handshakeListener)(nil)

// newHandshakeListener starts accepting from inner and handshaking with config. The caller must Close it.
func newHandshakeListener(inner net.Listener, config *tls.Config, timeout time.Duration, logf func(string, ...any)) *handshakeListener {
	ctx, stop := context.WithCancel(context.Background())
	l := &handshakeListener{Listener: inner, config: config, timeout: timeout, logf: logf,
		ready: make(chan *tls.Conn), errs: make(chan error), done: ctx.Done(), stop: stop}
	l.wg.Add(1)
	go l.acceptLoop(ctx)
	return l
}

// Accept returns the next connection whose handshake completed, or the next error of the inner listener.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		select {
		case <-l.done: // Close raced with the hand-over: the server is no longer serving
			_ = c.Close()
			return nil, net.ErrClosed
		default:
			return c, nil
		}
	case err := <-l.errs:
		return nil, err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close closes the inner listener, interrupts the handshakes in progress (closing their connections) and closes the
// handshaken connections not yet accepted, then waits for the listener's goroutines to end.
func (l *handshakeListener) Close() error {
	l.closeOnce.Do(func() {
		l.stop()
		l.closeErr = l.Listener.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

// acceptLoop accepts from the inner listener and starts a handshake per connection. It passes each error of the
// inner Accept to one Accept call and carries on: the server decides what an error means (http.Server retries
// temporary ones and stops on the others, which closes this listener).
func (l *handshakeListener) acceptLoop(ctx context.Context) {
	defer l.wg.Done()
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			select {
			case l.errs <- err:
				continue
			case <-ctx.Done():
				return
			}
		}
		l.wg.Add(1)
		go l.handshake(ctx, raw)
	}
}

// handshake runs one connection's TLS handshake and hands the connection to Accept; the goroutine, and the stack
// the handshake grew, end here.
func (l *handshakeListener) handshake(ctx context.Context, raw net.Conn) {
	defer l.wg.Done()
	c := tls.Server(raw, l.config)
	if l.timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(l.timeout))
	}
	if err := c.HandshakeContext(ctx); err != nil {
		if ctx.Err() == nil { // not interrupted by Close
			l.logf("http: TLS handshake error from %s: %v", raw.RemoteAddr(), handshakeFailure(err))
		}
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	select {
	case l.ready <- c:
	case <-ctx.Done():
		_ = c.Close()
	}
}

// handshakeFailure is what http.Server logs for a failed handshake. As http.Server does, a client that spoke plain
// HTTP to the TLS port gets a 400 answer in plain text before the connection closes.
func handshakeFailure(err error) string {
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		_, _ = io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		return "client sent an HTTP request to an HTTPS server"
	}
	return err.Error()
}

// looksLikeHTTP reports whether the first five bytes of a would-be TLS record are the start of an HTTP/1 request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// serverTLSConfig is the config srv.ServeTLS would handshake with: a copy of srv.TLSConfig offering by ALPN the
// protocols srv serves (h2 and http/1.1 unless srv says otherwise). http.Server.Serve configures its HTTP/2 server
// only when srv.TLSConfig offers h2, so Serve installs this copy as srv.TLSConfig too.
func serverTLSConfig(srv *http.Server) (*tls.Config, error) {
	cfg := srv.TLSConfig.Clone()
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil {
		return nil, errors.New("serve: TLS config without a certificate")
	}
	p := srv.Protocols
	_, h2Set := srv.TLSNextProto["h2"]
	h2 := (p == nil || p.HTTP2()) && (srv.TLSNextProto == nil || h2Set) // a TLSNextProto without h2 turns it off
	h1 := p == nil || p.HTTP1() || !p.HTTP2()
	cfg.NextProtos = slices.Clone(cfg.NextProtos)
	if h2 && !slices.Contains(cfg.NextProtos, "h2") {
		cfg.NextProtos = append(cfg.NextProtos, "h2")
	}
	if h1 && !slices.Contains(cfg.NextProtos, "http/1.1") {
		cfg.NextProtos = append(cfg.NextProtos, "http/1.1")
	}
	return cfg, nil
}

// tlsHandshakeTimeout is http.Server's bound on a TLS handshake: the shortest of its positive read-header, read and
// write timeouts, or none.
func tlsHandshakeTimeout(srv *http.Server) time.Duration {
	var d time.Duration
	for _, v := range []time.Duration{srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout} {
		if v > 0 && (d == 0 || v < d) {
			d = v
		}
	}
	return d
}
