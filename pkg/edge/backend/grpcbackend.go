package backend

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"
)

// grpcScheme is the target scheme of the resolver each backend's ClientConn gets through grpc.WithResolvers (never
// the global registry).
const grpcScheme = "kedge-backend"

const roundRobinConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// grpcBackend is one gRPC backend: a long-lived ClientConn balancing RPCs over the backend's endpoints.
type grpcBackend struct {
	name     string
	conn     *grpc.ClientConn
	inflight *tracker
}

func newGRPCBackend(spec Spec, eps *endpointSet, tlsCfg *tls.Config, o Options) (*grpcBackend, error) {
	g := &grpcBackend{name: spec.Name, inflight: &tracker{}}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	opts := []grpc.DialOption{
		grpc.WithResolvers(&grpcResolverBuilder{backend: spec.Name, eps: eps}),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobinConfig),
		grpc.WithNoProxy(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: backoff.DefaultConfig.BaseDelay, Multiplier: 1.6, Jitter: 0.2, MaxDelay: grpcMaxBackoff},
			MinConnectTimeout: o.DialTimeout,
		}),
		grpc.WithChainUnaryInterceptor(g.unaryInterceptor),
		grpc.WithChainStreamInterceptor(g.streamInterceptor),
	}
	// With TLS, gRPC takes the :authority from the TLS server name and refuses a different explicit one.
	if a := authorityOf(spec); a != "" && tlsCfg == nil {
		opts = append(opts, grpc.WithAuthority(a))
	}
	conn, err := grpc.NewClient(grpcScheme+":///"+url.PathEscape(spec.Name), opts...)
	if err != nil {
		return nil, fmt.Errorf("creating gRPC client: %w", err)
	}
	g.conn = conn
	return g, nil
}

// authorityOf returns the :authority for RPCs to a plaintext backend's endpoints: the DNS name (with the port of a
// host resolver); empty means gRPC's default (the backend name).
func authorityOf(spec Spec) string {
	name := serverNameOf(spec.Resolver)
	if name != "" && spec.Resolver.Kind == ResolverHost && spec.Resolver.Port != 0 {
		return net.JoinHostPort(name, strconv.FormatUint(uint64(spec.Resolver.Port), 10))
	}
	return name
}

// unaryInterceptor and streamInterceptor count RPCs in flight, so a replaced backend's conn closes after them.
func (g *grpcBackend) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	release, err := g.begin()
	if err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, append(opts, grpc.OnFinish(release))...)
}

func (g *grpcBackend) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	release, err := g.begin()
	if err != nil {
		return nil, err
	}
	return streamer(ctx, desc, cc, method, append(opts, grpc.OnFinish(release))...)
}

// begin counts one RPC; the returned func (called by gRPC exactly once when the RPC ends) uncounts it.
func (g *grpcBackend) begin() (func(error), error) {
	if !g.inflight.acquire() {
		return nil, status.Errorf(codes.Unavailable, "backend %q is closed", g.name)
	}
	var done atomic.Bool
	return func(error) {
		if done.CompareAndSwap(false, true) {
			g.inflight.release()
		}
	}, nil
}

func (g *grpcBackend) close() {
	g.inflight.close()
	_ = g.conn.Close()
}

// grpcResolverBuilder builds the resolver of one backend's ClientConn. gRPC builds a new resolver each time the
// conn leaves idle mode; each subscribes to the backend's endpoint set.
type grpcResolverBuilder struct {
	backend string
	eps     *endpointSet
}

var _ resolver.Builder = (*grpcResolverBuilder)(nil)

func (b *grpcResolverBuilder) Scheme() string { return grpcScheme }

func (b *grpcResolverBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	r := &grpcResolver{backend: b.backend, cc: cc}
	r.unsubscribe = b.eps.subscribe(r)
	return r, nil
}

// grpcResolver pushes a backend's endpoints into one ClientConn. push is called by the source's goroutine and
// once by Build; mu serialises them and drops sets older than the last one pushed.
type grpcResolver struct {
	backend     string
	cc          resolver.ClientConn
	unsubscribe func()
	closed      atomic.Bool

	mu   sync.Mutex // guards last and the calls into cc
	last uint64
}

func (r *grpcResolver) push(version uint64, eps []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || version <= r.last {
		return
	}
	r.last = version
	if len(eps) == 0 {
		r.cc.ReportError(fmt.Errorf("no resolved endpoints for backend %q", r.backend))
		return
	}
	addrs := make([]resolver.Address, len(eps))
	for i, ep := range eps {
		addrs[i] = resolver.Address{Addr: ep}
	}
	// An error here (e.g. the balancer rejected the state) makes gRPC call ResolveNow; the next set fixes it.
	_ = r.cc.UpdateState(resolver.State{Addresses: addrs})
}

// ResolveNow is a no-op: the source re-resolves on its own schedule.
func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *grpcResolver) Close() {
	r.closed.Store(true)
	r.unsubscribe()
}
