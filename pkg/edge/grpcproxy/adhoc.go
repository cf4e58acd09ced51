package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
)

const (
	// adhocDialTimeout bounds one TCP connect to an adhoc address.
	adhocDialTimeout = 2 * time.Second
	// adhocMaxAddrs bounds how many resolved addresses one dial tries.
	adhocMaxAddrs = 4
	// defaultMaxAdhocConns bounds the cached adhoc connections: destination names come from clients, so without a
	// bound every distinct name a rule's pattern admits would keep a grpc.ClientConn for the idle timeout.
	defaultMaxAdhocConns = 1024
)

var (
	// errClosed is returned for adhoc calls after Close.
	errClosed = errors.New("grpcproxy: proxy is shutting down")
	// errTooManyAdhoc is returned when every cached adhoc connection is in use and the pool is full.
	errTooManyAdhoc = errors.New("grpcproxy: too many adhoc destinations in use")
)

// adhocPool caches one plaintext grpc.ClientConn per adhoc destination "host:port", at most max of them. A
// connection with no call in flight is closed after the idle timeout, or earlier when a new destination needs its
// place; close closes them all. The pool owns no goroutine: idle expiry runs on time.AfterFunc timers, which are
// stopped or made harmless by close.
type adhocPool struct {
	guard backend.DialGuard
	dns   Resolver
	idle  time.Duration
	max   int

	mu     sync.Mutex // guards the fields below and adhocConn's active, gen and timer
	closed bool
	conns  map[string]*adhocConn
}

// adhocConn is one cached adhoc connection.
type adhocConn struct {
	cc      *grpc.ClientConn
	refused atomic.Bool // the last dial failed because the guard refused every address
	active  int         // calls using cc
	gen     uint64      // bumped whenever the idle timer is re-armed or cancelled
	timer   *time.Timer // armed while active == 0
}

func newAdhocPool(guard backend.DialGuard, dns Resolver, idle time.Duration) *adhocPool {
	return &adhocPool{guard: guard, dns: dns, idle: idle, max: defaultMaxAdhocConns, conns: make(map[string]*adhocConn)}
}

// get returns the connection to target ("host:port") and the function that ends the caller's use of it. When the
// pool is full, a new destination takes the place of an idle connection, or fails with errTooManyAdhoc.
func (a *adhocPool) get(target string) (*adhocConn, func(), error) {
	var evicted *adhocConn
	defer func() {
		if evicted != nil {
			_ = evicted.cc.Close() // outside mu: Close waits for the connection's goroutines
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, nil, errClosed
	}
	e, ok := a.conns[target]
	if !ok {
		if len(a.conns) >= a.max {
			if evicted = a.evictIdleLocked(); evicted == nil {
				return nil, nil, errTooManyAdhoc
			}
		}
		e = &adhocConn{}
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			conn, err := a.dial(ctx, addr)
			var refused *refusedError
			e.refused.Store(errors.As(err, &refused))
			return conn, err
		}
		cc, err := grpc.NewClient("passthrough:///"+target,
			grpc.WithTransportCredentials(insecure.NewCredentials()), // adhoc destinations are plaintext, as in the original
			grpc.WithContextDialer(dial),
			grpc.WithNoProxy(),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: adhocDialTimeout * adhocMaxAddrs,
			}),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("grpcproxy: adhoc %s: %w", target, err)
		}
		e.cc = cc
		a.conns[target] = e
	}
	e.active++
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	return e, sync.OnceFunc(func() { a.release(target, e) }), nil
}

// evictIdleLocked removes one cached connection without calls in flight and returns it for the caller to close, or
// returns nil when every connection is in use. a.mu must be held.
func (a *adhocPool) evictIdleLocked() *adhocConn {
	for target, e := range a.conns {
		if e.active > 0 {
			continue
		}
		delete(a.conns, target)
		e.gen++ // its idle timer, if it fires anyway, finds nothing to do
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
		return e
	}
	return nil
}

func (a *adhocPool) release(target string, e *adhocConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e.active--
	if e.active > 0 || a.closed {
		return
	}
	e.gen++
	gen := e.gen
	e.timer = time.AfterFunc(a.idle, func() { a.expire(target, e, gen) })
}

// expire closes e if it is still cached and nothing used it since the timer of generation gen was armed.
func (a *adhocPool) expire(target string, e *adhocConn, gen uint64) {
	a.mu.Lock()
	if a.conns[target] != e || e.active > 0 || e.gen != gen {
		a.mu.Unlock()
		return
	}
	delete(a.conns, target)
	a.mu.Unlock()
	_ = e.cc.Close() // Close only fails on a connection already closed
}

func (a *adhocPool) close() {
	a.mu.Lock()
	a.closed = true
	conns := a.conns
	a.conns = make(map[string]*adhocConn)
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

// dial connects to addr ("host:port") for gRPC: it resolves host itself and connects only to addresses the guard
// approves, checked on the address actually dialled (net.Dialer.Control), so no name or numeric trick reaches a
// refused address.
func (a *adhocPool) dial(ctx context.Context, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("grpcproxy: adhoc: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("grpcproxy: adhoc: bad port in %q: %w", addr, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		names, err := a.dns.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("grpcproxy: adhoc: cannot resolve %s: %w", host, err)
		}
		for _, n := range names {
			if ip, err := netip.ParseAddr(n); err == nil {
				ips = append(ips, ip)
			}
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("grpcproxy: adhoc: %s resolved to no address", host)
		}
	}
	if len(ips) > adhocMaxAddrs {
		ips = ips[:adhocMaxAddrs]
	}
	d := net.Dialer{Timeout: adhocDialTimeout, Control: a.control}
	var errs []error
	refused := 0
	for _, ip := range ips {
		conn, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		var r *refusedError
		if errors.As(err, &r) {
			refused++
			err = r
		}
		errs = append(errs, err)
	}
	if refused == len(ips) {
		return nil, errs[0] // a *refusedError
	}
	return nil, errors.Join(errs...)
}

// refusedError is the guard's refusal of an address.
type refusedError struct {
	addr string
	err  error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("grpcproxy: adhoc: refusing to dial %s: %v", e.addr, e.err)
}

func (e *refusedError) Unwrap() error { return e.err }

// control vets the address the socket is about to connect to.
func (a *adhocPool) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("grpcproxy: adhoc: unexpected dial address %q", address)
	}
	if err := a.guard(ap.Addr().Unmap()); err != nil {
		return &refusedError{addr: address, err: err}
	}
	return nil
}
