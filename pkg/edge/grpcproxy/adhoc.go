package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// defaultMaxAdhocConns bounds the cached adhoc connections: destination names come from clients, so without a
// bound every distinct name a rule's pattern admits would keep a grpc.ClientConn for the idle timeout.
const defaultMaxAdhocConns = 1024

var (
	// errClosed is returned for adhoc calls after Close.
	errClosed = errors.New("grpcproxy: proxy is shutting down")
	// errTooManyAdhoc is returned when every cached adhoc connection is in use and the pool is full.
	errTooManyAdhoc = errors.New("grpcproxy: too many adhoc destinations in use")
)

// adhocPool caches one plaintext grpc.ClientConn per adhoc destination, at most max of them. Its connections dial
// through kedge's one adhoc dialer, so gRPC follows the dial policy of HTTP and CONNECT. A connection with no call in
// flight is closed after the idle timeout, or earlier when a new destination needs its place; close closes them all.
// The pool owns no goroutine: idle expiry runs on time.AfterFunc timers, which are stopped or made harmless by close.
type adhocPool struct {
	dialer *backend.AdhocDialer
	idle   time.Duration
	max    int

	mu     sync.Mutex // guards the fields below and adhocConn's active, gen and timer
	closed bool
	conns  map[adhocKey]*adhocConn
}

// adhocKey identifies a cached connection: the destination, and whether its address is exempt from the dial guard
// (route.Target.Explicit), which a connection keeps for its whole life.
type adhocKey struct {
	hostPort string
	explicit bool
}

func keyOf(t route.Target) adhocKey { return adhocKey{hostPort: t.HostPort(), explicit: t.Explicit} }

// adhocConn is one cached adhoc connection.
type adhocConn struct {
	cc      *grpc.ClientConn
	refused atomic.Bool // the last dial failed because the dial guard refused every address
	active  int         // calls using cc
	gen     uint64      // bumped whenever the idle timer is re-armed or cancelled
	timer   *time.Timer // armed while active == 0
}

func newAdhocPool(dialer *backend.AdhocDialer, idle time.Duration) *adhocPool {
	return &adhocPool{dialer: dialer, idle: idle, max: defaultMaxAdhocConns, conns: make(map[adhocKey]*adhocConn)}
}

// get returns the connection to target and the function that ends the caller's use of it. When the pool is full, a
// new destination takes the place of an idle connection, or fails with errTooManyAdhoc.
func (a *adhocPool) get(target route.Target) (*adhocConn, func(), error) {
	var evicted *adhocConn
	defer func() {
		if evicted != nil {
			_ = evicted.cc.Close() // outside mu: Close waits for the connection's goroutines
		}
	}()
	key := keyOf(target)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, nil, errClosed
	}
	e, ok := a.conns[key]
	if !ok {
		if len(a.conns) >= a.max {
			if evicted = a.evictIdleLocked(); evicted == nil {
				return nil, nil, errTooManyAdhoc
			}
		}
		e = &adhocConn{}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := a.dialer.DialContext(backend.WithAdhocTarget(ctx, target), "tcp", addr)
			var be *backend.Error
			e.refused.Store(errors.As(err, &be) && be.Type == wire.ErrForbidden)
			return conn, err
		}
		cc, err := grpc.NewClient("passthrough:///"+key.hostPort,
			grpc.WithTransportCredentials(insecure.NewCredentials()), // adhoc destinations are plaintext, as in the original
			grpc.WithContextDialer(dial),
			grpc.WithNoProxy(),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: a.dialer.MaxDialTime(), // the dialer bounds each connect itself
			}),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("grpcproxy: adhoc %s: %w", key.hostPort, err)
		}
		e.cc = cc
		a.conns[key] = e
	}
	e.active++
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	return e, sync.OnceFunc(func() { a.release(key, e) }), nil
}

// evictIdleLocked removes one cached connection without calls in flight and returns it for the caller to close, or
// returns nil when every connection is in use. a.mu must be held.
func (a *adhocPool) evictIdleLocked() *adhocConn {
	for key, e := range a.conns {
		if e.active > 0 {
			continue
		}
		delete(a.conns, key)
		e.gen++ // its idle timer, if it fires anyway, finds nothing to do
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		return e
	}
	return nil
}

func (a *adhocPool) release(key adhocKey, e *adhocConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e.active--
	if e.active > 0 || a.closed {
		return
	}
	e.gen++
	gen := e.gen
	e.timer = time.AfterFunc(a.idle, func() { a.expire(key, e, gen) })
}

// expire closes e if it is still cached and nothing used it since the timer of generation gen was armed.
func (a *adhocPool) expire(key adhocKey, e *adhocConn, gen uint64) {
	a.mu.Lock()
	if a.conns[key] != e || e.active > 0 || e.gen != gen {
		a.mu.Unlock()
		return
	}
	delete(a.conns, key)
	a.mu.Unlock()
	_ = e.cc.Close() // Close only fails on a connection already closed
}

func (a *adhocPool) close() {
	a.mu.Lock()
	a.closed = true
	conns := a.conns
	a.conns = make(map[adhocKey]*adhocConn)
	for _, e := range conns {
		e.gen++
		if e.timer != nil {
			e.timer.Stop()
		}
	}
	a.mu.Unlock()
	for _, e := range conns {
		_ = e.cc.Close()
	}
}

// len reports how many destinations have a cached connection.
func (a *adhocPool) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.conns)
}
