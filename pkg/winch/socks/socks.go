// Package socks is winch's SOCKS5 port (RFC 1928): no authentication (winch binds it to loopback only), the
// CONNECT command only, destinations as domain names (socks5h: winch never resolves them, the mapper and kedge
// see the name), IPv4 or IPv6 addresses. Each tunnel is opened by the same code as winch's HTTP CONNECT
// (httpforward's ServeTunnel: mapper, proxy token, kedge tunnel or direct dial, --unmatched), so a destination is
// treated alike on both ports; this package only speaks the protocol and maps refusals to reply codes.
//
// No SOCKS5 server library was used: the Go module proxy list here offers none, and the protocol subset winch
// needs is a few hundred bytes of parsing, with every read bounded and under a deadline.
package socks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
)

// Tunnels opens a tunnel to hostport the way winch's HTTP CONNECT does and serves it on client until both ends
// close; it calls answer once with the refusal or, on success, the upstream's local address, and closes client.
// *httpforward.Handler implements it.
type Tunnels interface {
	ServeTunnel(ctx context.Context, client net.Conn, hostport string, answer func(bound net.Addr, refusal *http.Response) error)
}

// DefaultHandshakeTimeout bounds reading a client's greeting and request.
const DefaultHandshakeTimeout = 10 * time.Second

// Deps are the server's collaborators and options.
type Deps struct {
	// Tunnels opens the tunnels.
	Tunnels Tunnels
	// Log receives a debug line per refused request. nil discards.
	Log logging.Logger
	// Registerer receives winch_socks_replies_total. nil keeps it unexported.
	Registerer prometheus.Registerer
	// HandshakeTimeout bounds reading the greeting and the request; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// Server serves SOCKS5 clients. Build it with New.
type Server struct {
	tunnels   Tunnels
	log       logging.Logger
	handshake time.Duration
	replies   *prometheus.CounterVec
}

// New builds a server.
func New(d Deps) *Server {
	s := &Server{
		tunnels:   d.Tunnels,
		log:       d.Log,
		handshake: d.HandshakeTimeout,
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "winch_socks_replies_total",
			Help: "Answers on winch's SOCKS5 port, by reply (succeeded, not-allowed, host-unreachable, connection-refused, general-failure, command-not-supported, address-type-not-supported, no-acceptable-method). The tunnels themselves are counted in winch_http_requests_total{proxy=\"socks\"}.",
		}, []string{"reply"}),
	}
	if s.log == nil {
		s.log = logging.Discard()
	}
	if s.handshake <= 0 {
		s.handshake = DefaultHandshakeTimeout
	}
	if d.Registerer != nil {
		d.Registerer.MustRegister(s.replies)
	}
	return s
}

// Serve accepts clients on ln until ctx is done, then stops accepting and gives the open tunnels up to drain to
// end; at that deadline it closes them and returns serve.ErrDrainTimeout. It closes ln and owns every goroutine it
// starts: one per connection (and the tunnel's copy goroutine), all ended when it returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	// Tunnels being set up keep their context through the drain; it ends when Serve gives up on them.
	connCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Each accepted connection is tracked, for the drain, and served on a goroutine of wg, which Serve waits for.
	tracker := serve.NewTracker()
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
accept:
	for backoff := time.Duration(0); ; {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() != nil || errors.Is(aerr, net.ErrClosed) {
				break
			}
			// Out of file descriptors and the like: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("SOCKS accept failed; retrying", logging.FieldError, aerr, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				break accept
			}
		}
		backoff = 0
		untrack := tracker.Track(conn)
		wg.Go(func() {
			defer untrack()
			s.serveConn(connCtx, conn)
		})
	}
	_ = ln.Close()
	dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer dcancel()
	_, err := tracker.Drain(dctx)
	if err != nil {
		cancel() // tunnels still being set up give up too
		err = fmt.Errorf("socks: %w", err)
	}
	wg.Wait()
	return err
}

// serveConn runs one client: handshake under the deadline, then the tunnel. It closes conn.
func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(s.handshake))
	req, err := s.handshakeConn(conn)
	if err != nil {
		var re *requestError
		switch {
		case errors.As(err, &re):
			s.fail(conn, re.reply, re.msg)
		case errors.Is(err, errBadVersion):
			lingerClose(conn) // no reply it would understand, but no reset either
		default:
			_ = conn.Close()
		}
		s.log.Debug("SOCKS handshake failed", logging.FieldError, err)
		return
	}
	// Opening the tunnel has its own limits (dial, kedge's answer, a token); the tunnel has none (idle tunnels stay,
	// as on HTTP CONNECT).
	_ = conn.SetDeadline(time.Time{})
	s.tunnels.ServeTunnel(ctx, conn, req.hostport(), func(bound net.Addr, refusal *http.Response) error {
		code := replySucceeded
		if refusal != nil {
			code = replyFor(refusal)
			_ = refusal.Body.Close()
		}
		s.replies.WithLabelValues(replyNames[code]).Inc()
		_ = conn.SetWriteDeadline(time.Now().Add(s.handshake))
		_, err := conn.Write(appendReply(make([]byte, 0, 22), code, bound))
		if refusal != nil {
			lingerClose(conn)
			return err
		}
		if err == nil {
			err = conn.SetWriteDeadline(time.Time{})
		}
		return err
	})
}

// handshakeConn answers the greeting (no authentication, or none acceptable) and reads the request.
func (s *Server) handshakeConn(conn net.Conn) (request, error) {
	noAuth, err := readGreeting(conn)
	if err != nil {
		return request{}, err
	}
	if !noAuth {
		s.replies.WithLabelValues("no-acceptable-method").Inc()
		_, _ = conn.Write([]byte{version5, methodNoAcceptable})
		lingerClose(conn)
		return request{}, errors.New("socks: the client offers no method winch serves (it serves no authentication only)")
	}
	if _, err := conn.Write([]byte{version5, methodNoAuth}); err != nil {
		return request{}, fmt.Errorf("socks: answering the greeting: %w", err)
	}
	return readRequest(conn)
}

// fail sends a failure reply and closes conn.
func (s *Server) fail(conn net.Conn, code byte, msg string) {
	s.replies.WithLabelValues(replyNames[code]).Inc()
	_, _ = conn.Write(appendReply(make([]byte, 0, 10), code, nil))
	lingerClose(conn)
	s.log.Debug("SOCKS request refused", "reply", replyNames[code], logging.FieldError, msg)
}

// lingerTimeout bounds lingerClose's wait for the client to close.
const lingerTimeout = time.Second

// lingerClose closes conn after a final reply so that the client reads the reply: it half-closes, then reads and
// discards (a bounded amount, for at most lingerTimeout) what the client still sends, because closing a socket with
// unread bytes sends a reset that can destroy the reply before the client reads it.
func lingerClose(conn net.Conn) {
	defer func() { _ = conn.Close() }()
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = conn.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 64<<10))
}
