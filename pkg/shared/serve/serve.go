package serve

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// ErrDrainTimeout reports that the drain deadline passed with work in flight, which was then cut. Callers usually
// log it and exit normally: the deadline did its job.
var ErrDrainTimeout = errors.New("serve: drain deadline exceeded")

// closeGrace bounds the wait, after the drain deadline cut every connection, for handlers to notice and return.
const closeGrace = 500 * time.Millisecond

// Serve serves srv on ln until ctx is done, then shuts down: the listener closes at once (new connections are
// refused), idle connections close, in-flight requests and h2 streams may finish (HTTP/1.1 responses get
// Connection: close, h2 connections a GOAWAY), and so may hijacked connections and their handlers (see Tracker).
// At drain after ctx is done everything left is closed and Serve returns an error wrapping ErrDrainTimeout. It
// returns nil after a complete drain, or the serving error if srv stops on its own.
//
// With srv.TLSConfig set, Serve speaks TLS with a copy of that config which it installs as srv.TLSConfig, offering
// h2 and http/1.1 by ALPN as ServeTLS does; each TLS handshake runs on a goroutine of its own before srv sees the
// connection, bounded by srv's TLS handshake timeout. The Tracker is found through srv.BaseContext, as HTTPServer
// installs it; servers built otherwise drain without one.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	var tr *Tracker
	if srv.BaseContext != nil {
		tr = TrackerFrom(srv.BaseContext(ln))
	}
	if srv.TLSConfig != nil {
		// Not ServeTLS: handshakes run on goroutines of their own (see handshakeListener), which srv.Serve closes.
		cfg, err := serverTLSConfig(srv)
		if err != nil {
			return fmt.Errorf("serve: %s: %w", ln.Addr(), err)
		}
		srv.TLSConfig = cfg
		logf := log.Printf // what http.Server logs to without an ErrorLog
		if srv.ErrorLog != nil {
			logf = srv.ErrorLog.Printf
		}
		ln = newHandshakeListener(ln, cfg, tlsHandshakeTimeout(srv), logf)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	if tr == nil {
		tr = NewTracker() // nothing to track, keeps the code below uniform
	}
	tr.startDrain()
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	shutdownErr := srv.Shutdown(dctx)
	<-errc // http.ErrServerClosed, as soon as Shutdown closed the listener
	if shutdownErr != nil {
		cancel() // Shutdown used up the deadline (or failed): the hijacked connections get no more time either
	}
	hijacked, drainErr := tr.Drain(dctx)
	if shutdownErr == nil && drainErr == nil {
		return nil
	}

	// The deadline passed and Drain cut the hijacked connections: cut the rest, then give handlers a moment to see
	// their connections die.
	_ = srv.Close()
	gctx, gcancel := context.WithTimeout(context.Background(), closeGrace)
	defer gcancel()
	_ = tr.wait(gctx)
	return fmt.Errorf("serve: %s: %w after %s (closed %d hijacked connections)", ln.Addr(), ErrDrainTimeout, drain, hijacked)
}

// GRPC serves srv on ln until ctx is done, then stops gracefully (GOAWAY; running RPCs may finish) for at most drain,
// then stops hard and returns an error wrapping ErrDrainTimeout. It returns nil after a complete drain, or the
// serving error if srv stops on its own.
func GRPC(ctx context.Context, srv *grpc.Server, ln net.Listener, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if err == nil {
			return nil // stopped by someone else
		}
		return fmt.Errorf("serve: grpc %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(drain)
	defer timer.Stop()
	var err error
	select {
	case <-stopped:
	case <-timer.C:
		srv.Stop() // cancels the remaining RPCs; GracefulStop then returns
		<-stopped
		err = fmt.Errorf("serve: grpc %s: %w after %s", ln.Addr(), ErrDrainTimeout, drain)
	}
	<-errc
	return err
}
