package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// String returns "http" or "grpc".
func (p Protocol) String() string {
	switch p {
	case HTTP:
		return "http"
	case GRPC:
		return "grpc"
	default:
		return fmt.Sprintf("protocol(%d)", uint8(p))
	}
}

// MarshalText makes Protocol readable in /debug/config.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// String returns "host", "srv" or "k8s".
func (k ResolverKind) String() string {
	switch k {
	case ResolverHost:
		return "host"
	case ResolverSRV:
		return "srv"
	case ResolverK8s:
		return "k8s"
	default:
		return fmt.Sprintf("resolver(%d)", uint8(k))
	}
}

// MarshalText makes ResolverKind readable in /debug/config.
func (k ResolverKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// backend is one running backend: its endpoint source, endpoint set and protocol part (http or grpc).
type backend struct {
	spec    Spec
	eps     *endpointSet
	src     EndpointSource
	retired atomic.Bool // set when swapped out; its endpoint changes no longer feed the gauge

	stop    context.CancelFunc // stops src; set by start
	stopped chan struct{}      // closed when src.Run returned

	http *httpBackend // HTTP backends
	grpc *grpcBackend // gRPC backends
}

// build makes a backend for spec without starting anything; on error nothing needs closing.
func (p *Pool) build(spec Spec) (*backend, error) {
	b := &backend{spec: spec, stopped: make(chan struct{})}
	proto := spec.Protocol.String()
	b.eps = newEndpointSet(func(eps []string) {
		if !b.retired.Load() {
			p.metrics.endpoints.WithLabelValues(spec.Name, proto).Set(float64(len(eps)))
		}
	})
	log := p.log.With(logging.FieldBackend, spec.Name, "protocol", proto, "resolver", spec.Resolver.Kind.String())
	switch spec.Resolver.Kind {
	case ResolverHost, ResolverSRV:
		b.src = &dnsSource{
			dns:      p.dns,
			res:      spec.Resolver,
			interval: p.opts.ResolveInterval,
			log:      log,
			onError:  func() { p.metrics.resolverErrors.WithLabelValues(spec.Name, spec.Resolver.Kind.String()).Inc() },
		}
	case ResolverK8s:
		if p.k8s == nil {
			return nil, errors.New("the k8s resolver is not available in this build")
		}
		src, err := p.k8s.Source(spec)
		if err != nil {
			return nil, fmt.Errorf("k8s resolver: %w", err)
		}
		b.src = src
	default:
		return nil, fmt.Errorf("unknown resolver kind %v", spec.Resolver.Kind)
	}
	tlsCfg, err := clientTLSConfig(spec)
	if err != nil {
		return nil, err
	}
	switch spec.Protocol {
	case HTTP:
		b.http = newHTTPBackend(spec.Name, b.eps, tlsCfg, p.opts, func(ep string) {
			b.eps.eject(ep, p.opts.EjectionBackoff)
			p.metrics.dialFailures.WithLabelValues(spec.Name, ep).Inc()
			p.metrics.ejections.WithLabelValues(spec.Name).Inc()
			log.Debug("endpoint ejected after a failed connection", logging.FieldEndpoint, ep)
		})
	case GRPC:
		b.grpc, err = newGRPCBackend(spec, b.eps, tlsCfg, p.opts)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown protocol %v", spec.Protocol)
	}
	return b, nil
}

// start runs the backend's source in a goroutine owned by the pool.
func (p *Pool) start(b *backend) {
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	p.wg.Go(func() {
		defer close(b.stopped)
		b.src.Run(ctx, b.eps.publish)
	})
}

// inflight returns the backend's request tracker.
func (b *backend) inflight() *tracker {
	if b.http != nil {
		return b.http.inflight
	}
	return b.grpc.inflight
}

// closeNow stops the source and closes every connection, aborting requests in flight.
func (b *backend) closeNow() {
	if b.stop != nil {
		b.stop()
		<-b.stopped
	}
	if b.http != nil {
		b.http.close()
	}
	if b.grpc != nil {
		b.grpc.close()
	}
}

// clientTLSConfig returns the TLS configuration towards spec's endpoints, nil for plaintext.
func clientTLSConfig(spec Spec) (*tls.Config, error) {
	t := spec.TLS
	if !t.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: t.ServerName,
		// Only when the backend's config asks for it; never a fallback.
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit per-backend opt-in
	}
	if cfg.ServerName == "" {
		cfg.ServerName = serverNameOf(spec.Resolver)
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %q holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, errors.New("a client certificate needs both cert_file and key_file")
		}
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// tracker counts a backend's in-flight requests so that a replaced backend is closed only once they finished.
type tracker struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0; nil when nobody waits
}

// acquire counts one more request; false once the backend is closed.
func (t *tracker) acquire() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.n++
	return true
}

func (t *tracker) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// drained returns a channel closed once no request is in flight.
func (t *tracker) drained() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	return t.idle
}

// close makes acquire fail from now on.
func (t *tracker) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// count returns the number of requests in flight.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}
