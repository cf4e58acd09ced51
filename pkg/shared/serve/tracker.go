package serve

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Tracker keeps what http.Server.Shutdown does not wait for: connections taken over with Hijack (CONNECT tunnels,
// WebSockets) and the handlers still running on them. Serve drains it (Drain): it waits for the tracker to empty
// and closes whatever is left at the deadline. Servers of other protocols (winch's SOCKS5 port) use it the same
// way without HTTPServer: Track each accepted connection, then Drain at shutdown.
//
// HTTPServer wires it so that a handler which hijacks a connection and serves it until it returns needs to do
// nothing: running handlers are counted, and a connection hijacked by a still-running handler is closed at the
// deadline. A handler that hands a hijacked connection to another goroutine and returns must call Track, and the
// untrack func when that goroutine is done with the connection.
//
// Handlers find the Tracker with TrackerFrom(r.Context()). The zero value is ready to use, and all methods are safe
// on a nil *Tracker (they do nothing), so handlers also work under a plain http.Server.
type Tracker struct {
	handlers     atomic.Int64 // running handlers
	nHijack      atomic.Int64 // len(hijacked), readable without mu
	drainStarted atomic.Bool

	mu       sync.Mutex
	tracked  map[net.Conn]struct{} // registered with Track; guarded by mu
	hijacked map[net.Conn]struct{} // hijacked by a handler that is still running; guarded by mu
	changed  chan struct{}         // closed when tracked shrinks or, while draining, handlers reach zero; guarded by mu
	draining chan struct{}         // closed when the drain starts; guarded by mu
	closed   bool                  // set at the drain deadline: later Track calls close at once; guarded by mu
}

// NewTracker returns an empty Tracker (the same as new(Tracker)).
func NewTracker() *Tracker { return new(Tracker) }

type (
	trackerKey struct{}
	connKey    struct{}
)

// TrackerFrom returns the Tracker of the server that is serving ctx (a request context), or nil.
func TrackerFrom(ctx context.Context) *Tracker {
	t, _ := ctx.Value(trackerKey{}).(*Tracker)
	return t
}

// Track registers a hijacked connection that outlives its handler, so the server's drain waits for it and closes it
// at the deadline. Call untrack (more than once is fine) when the connection is finished. Tracking once Drain has
// closed the tracker (at its deadline, or after it returned) closes conn at once.
func (t *Tracker) Track(conn net.Conn) (untrack func()) {
	if t == nil {
		return func() {}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = conn.Close()
		return func() {}
	}
	if t.tracked == nil {
		t.tracked = map[net.Conn]struct{}{}
	}
	t.tracked[conn] = struct{}{}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if _, ok := t.tracked[conn]; ok {
			delete(t.tracked, conn)
			t.notifyLocked()
		}
	}
}

// Len returns the number of hijacked connections the tracker would close at the deadline.
func (t *Tracker) Len() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.tracked) + len(t.hijacked)
}

// Draining is closed when the server starts draining, so long-lived connections can wind down early (for example
// by shortening an idle timeout). A nil Tracker returns a nil channel, which never fires.
func (t *Tracker) Draining() <-chan struct{} {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.drainingLocked()
}

func (t *Tracker) drainingLocked() chan struct{} {
	if t.draining == nil {
		t.draining = make(chan struct{})
	}
	return t.draining
}

// Drain is the tracker's part of a server's shutdown, called once the server accepts no more connections: it fires
// Draining, waits until no handler runs and no tracked connection is open or until ctx is done, and then closes the
// tracker: the connections still open are closed (those that finished in time were closed by their owners, never
// here), and later Track calls and hijacks close theirs at once. It returns how many connections it closed, and
// ErrDrainTimeout if ctx ended with work in flight (a running handler counts even with no connection to close).
// With nothing in flight Drain returns nil at once, even if ctx is already done. A nil Tracker returns 0, nil.
func (t *Tracker) Drain(ctx context.Context) (closed int, err error) {
	if t == nil {
		return 0, nil
	}
	t.startDrain() // before wait: once the drain has started, a handler that returns wakes it
	err = t.wait(ctx)
	closed = t.closeAll()
	if err != nil {
		return closed, ErrDrainTimeout
	}
	return closed, nil
}

func (t *Tracker) startDrain() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.drainStarted.Load() {
		close(t.drainingLocked())
		t.drainStarted.Store(true)
	}
}

// wrap counts running handlers and forgets the connection a handler hijacked once it returns (the handler either
// closed it or passed it on with Track). The hot path is two atomic adds and one atomic load.
func (t *Tracker) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.handlers.Add(1)
		defer t.leave(r)
		h.ServeHTTP(w, r)
	})
}

func (t *Tracker) leave(r *http.Request) {
	if t.nHijack.Load() > 0 {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			t.mu.Lock()
			if _, ok := t.hijacked[c]; ok {
				delete(t.hijacked, c)
				t.nHijack.Add(-1)
			}
			t.mu.Unlock()
		}
	}
	// Before the drain nobody waits, and wait reads the count itself once the drain has started.
	if t.handlers.Add(-1) == 0 && t.drainStarted.Load() {
		t.mu.Lock()
		t.notifyLocked()
		t.mu.Unlock()
	}
}

// connState is the http.Server.ConnState hook: it runs inside Hijack, before the handler gets the connection.
func (t *Tracker) connState(c net.Conn, s http.ConnState) {
	if s != http.StateHijacked {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return
	}
	if t.hijacked == nil {
		t.hijacked = map[net.Conn]struct{}{}
	}
	t.hijacked[c] = struct{}{}
	t.nHijack.Add(1)
}

// notifyLocked wakes the waiters; the next wait makes a new channel.
func (t *Tracker) notifyLocked() {
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
}

// wait blocks until no handler runs and no connection is tracked, or ctx is done.
func (t *Tracker) wait(ctx context.Context) error {
	for {
		// Read changed before the handler count: a leave that drops the count to zero after this point closes it.
		t.mu.Lock()
		if t.changed == nil {
			t.changed = make(chan struct{})
		}
		changed := t.changed
		idle := len(t.tracked) == 0 && t.handlers.Load() == 0
		t.mu.Unlock()
		if idle {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// closeAll closes every hijacked connection, makes later Track calls and hijacks close at once, and returns how
// many it closed.
func (t *Tracker) closeAll() int {
	t.mu.Lock()
	t.closed = true
	conns := make([]net.Conn, 0, len(t.tracked)+len(t.hijacked))
	for c := range t.tracked {
		conns = append(conns, c)
	}
	for c := range t.hijacked {
		if _, dup := t.tracked[c]; !dup {
			conns = append(conns, c)
		}
	}
	t.tracked = nil
	t.notifyLocked()
	t.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}
