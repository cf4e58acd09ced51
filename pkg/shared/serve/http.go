// Package serve runs kedge's and winch's servers with the project's limits and a bounded, complete shutdown: serve
// until the context is done, drain in-flight requests, streams and hijacked connections up to a deadline, then cut
// whatever is left.
package serve

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Defaults applied by HTTPServer (reliability catalog §5). There is deliberately no default ReadTimeout or
// WriteTimeout: they cap a whole request or response and so cut long downloads, streams and gRPC calls (the
// original kedge's WriteTimeout bug).
const (
	DefaultReadHeaderTimeout    = 10 * time.Second
	DefaultIdleTimeout          = 120 * time.Second
	DefaultMaxHeaderBytes       = 64 << 10
	DefaultMaxConcurrentStreams = 100
	DefaultMaxReadFrameSize     = 16 << 10
	// DefaultMaxReceiveBufferPerStream is the request body data an HTTP/2 stream may hold unread (its flow-control
	// window; Go's default): one upload or paced gRPC call whose backend stalls holds at most this much.
	DefaultMaxReceiveBufferPerStream = 1 << 20
	// DefaultMaxReceiveBufferPerConnection is the unread request body data of all of a connection's streams
	// together. Go hands the connection's window back only as handlers read, so with Go's default (equal to one
	// stream's) a single stalled upload or gRPC call would stop every other stream of the connection from
	// receiving data; four times a stream's lets three stall and the rest go on.
	DefaultMaxReceiveBufferPerConnection = 4 * DefaultMaxReceiveBufferPerStream
	// DefaultSendPingTimeout is how long an HTTP/2 connection may stay silent before the server sends a PING; with
	// no answer within Go's PingTimeout (15 s) the connection is closed. IdleTimeout only applies to connections
	// without streams, so this is what finds a vanished client behind a quiet stream or tunnel.
	DefaultSendPingTimeout = 60 * time.Second
)

// HTTPOptions tunes HTTPServer. Zero values mean the defaults above; for the timeouts with a default, a negative
// value means none.
type HTTPOptions struct {
	// Name labels the server's log lines (component), e.g. "http_tls" or "http_debug".
	Name string
	// TLSConfig, when set, makes Serve speak TLS on its listener (HTTP/1.1 and h2 by ALPN).
	TLSConfig *tls.Config
	// ReadHeaderTimeout bounds reading a request's headers (and, in Go, the TLS handshake). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout time.Duration
	// ReadTimeout caps reading a whole request, body included. Default none.
	ReadTimeout time.Duration
	// WriteTimeout caps writing a whole response. Default none; setting it cuts streams.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds request headers (h2: MAX_HEADER_LIST_SIZE derives from it). Default 64 KiB.
	MaxHeaderBytes int
	// MaxConcurrentStreams bounds HTTP/2 streams per connection. Default 100.
	MaxConcurrentStreams int
	// MaxReadFrameSize bounds HTTP/2 frames read from clients. Default 16 KiB.
	MaxReadFrameSize int
	// SendPingTimeout makes the server PING an HTTP/2 connection silent this long. Default 60s.
	SendPingTimeout time.Duration
	// Tracker receives the server's hijacked connections; nil means a new one. Handlers reach it with
	// TrackerFrom(r.Context()) either way. One Tracker per server: the drain deadline of one closes its connections.
	Tracker *Tracker
}

// HTTPServer returns an *http.Server for handler with the limits of opts, its error log going to log, and a Tracker
// that Serve drains. Run it with Serve. It sets BaseContext, ConnContext and ConnState for the Tracker; replace them
// only by wrapping.
func HTTPServer(handler http.Handler, opts HTTPOptions, log logging.Logger) *http.Server {
	if handler == nil {
		handler = http.NotFoundHandler() // never fall back to http.DefaultServeMux
	}
	tr := opts.Tracker
	if tr == nil {
		tr = NewTracker()
	}
	name := opts.Name
	if name == "" {
		name = "http"
	}
	base := context.WithValue(context.Background(), trackerKey{}, tr)
	maxHeader := orDefault(opts.MaxHeaderBytes, DefaultMaxHeaderBytes)
	srv := &http.Server{
		Handler:           tr.wrap(limitHeaderBytes(handler, maxHeader)),
		TLSConfig:         opts.TLSConfig,
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		ReadTimeout:       max(opts.ReadTimeout, 0),
		WriteTimeout:      max(opts.WriteTimeout, 0),
		MaxHeaderBytes:    maxHeader,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          orDefault(opts.MaxConcurrentStreams, DefaultMaxConcurrentStreams),
			MaxReadFrameSize:              orDefault(opts.MaxReadFrameSize, DefaultMaxReadFrameSize),
			SendPingTimeout:               orDefault(opts.SendPingTimeout, DefaultSendPingTimeout),
			MaxReceiveBufferPerStream:     DefaultMaxReceiveBufferPerStream,
			MaxReceiveBufferPerConnection: DefaultMaxReceiveBufferPerConnection,
		},
		ErrorLog:    errorLog(log, name),
		BaseContext: func(net.Listener) context.Context { return base },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) },
		ConnState:   tr.connState,
	}
	return srv
}

// limitHeaderBytes answers 431 to requests whose header block is larger than max bytes (0: no limit of ours), and
// passes the others to h.
//
// http.Server.MaxHeaderBytes alone does not hold the limit: net/http stops reading at MaxHeaderBytes plus 4 KiB of
// "bufio slop", and on a kept-alive connection the bytes it buffered while waiting for the next request come on top,
// so up to MaxHeaderBytes + 8 KiB pass, depending on how the client's writes arrive (go1.27's Transport sends a
// request so that a 70 KiB header passed a 64 KiB limit on a reused connection; go1.26.8's did not). net/http's limit
// stays as the bound on what is read before a handler runs; this one is the exact, documented one. HTTP/2 requests
// are measured the same way; Go's HTTP/2 server has already refused header lists over its SETTINGS_MAX_HEADER_LIST_SIZE,
// which counts 32 bytes more per field.
func limitHeaderBytes(h http.Handler, maxBytes int) http.Handler {
	if maxBytes <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r) > maxBytes {
			if r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			http.Error(w, "431 Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// headerBytes is the size of r's request line and header fields as HTTP/1.1 writes them ("Name: value\r\n" each,
// Host included, and the blank line), which is what MaxHeaderBytes counts. Whitespace a client added around values
// is not counted, so a request within the limit on the wire is always within it here.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2 + 2
	if r.Host != "" {
		n += len("Host: ") + len(r.Host) + 2
	}
	for name, values := range r.Header {
		for _, v := range values {
			n += len(name) + 2 + len(v) + 2
		}
	}
	return n
}

// orDefault maps zero to def and negative values to zero ("none").
func orDefault[T time.Duration | int](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// errorLog adapts log for http.Server.ErrorLog. TLS handshake failures are what every internet-facing port sees from
// scanners all day, so they go to debug; everything else (panics in handlers, accept errors) is a warning.
func errorLog(l logging.Logger, name string) *log.Logger {
	if l == nil {
		l = logging.Discard()
	}
	return log.New(&errorLogWriter{
		debug: logging.StdLogger(l, logging.LevelDebug, name),
		warn:  logging.StdLogger(l, logging.LevelWarn, name),
	}, "", 0)
}

type errorLogWriter struct{ debug, warn *log.Logger }

func (w *errorLogWriter) Write(p []byte) (int, error) {
	line := string(p)
	if strings.Contains(line, "TLS handshake error") {
		w.debug.Print(line)
	} else {
		w.warn.Print(line)
	}
	return len(p), nil
}
