package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/conncache"
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

// adhocPool caches one plaintext grpc.ClientConn per adhoc destination (conncache), at most max of them: destination
// names come from clients, so without a bound every name a rule's pattern admits would keep a connection for the
// idle timeout. Its connections dial through kedge's one adhoc dialer, so gRPC follows the dial policy of HTTP and
// CONNECT.
type adhocPool struct {
	dialer *backend.AdhocDialer
	cache  *conncache.Cache[adhocKey, *adhocConn]
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
}

// Close closes the connection (conncache calls it).
func (c *adhocConn) Close() error { return c.cc.Close() }

func newAdhocPool(dialer *backend.AdhocDialer, idle time.Duration, maxConns int) *adhocPool {
	return &adhocPool{dialer: dialer, cache: conncache.New[adhocKey, *adhocConn](conncache.Config{Idle: idle, Max: maxConns})}
}

// get returns the connection to target and the function that ends the caller's use of it. When the pool is full, a
// new destination takes the place of an idle connection, or fails with errTooManyAdhoc.
func (a *adhocPool) get(target route.Target) (*adhocConn, func(), error) {
	key := keyOf(target)
	conn, release, err := a.cache.Get(key, func() (*adhocConn, error) {
		e := &adhocConn{}
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
			return nil, fmt.Errorf("grpcproxy: adhoc %s: %w", key.hostPort, err)
		}
		e.cc = cc
		return e, nil
	})
	switch {
	case errors.Is(err, conncache.ErrFull):
		return nil, nil, errTooManyAdhoc
	case errors.Is(err, conncache.ErrClosed):
		return nil, nil, errClosed
	}
	return conn, release, err
}

// close closes every cached connection, ending calls still using them.
func (a *adhocPool) close() { _ = a.cache.Close() }

// len reports how many destinations have a cached connection.
func (a *adhocPool) len() int { return a.cache.Len() }
