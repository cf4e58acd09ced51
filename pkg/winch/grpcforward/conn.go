package grpcforward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// connCache holds one long-lived *grpc.ClientConn per kedge (scheme and host of the kedge URL), made on first use
// and closed once no call has used it for the idle timeout. That also drops the connections of kedges a mapper
// reload removed (and of kedge URLs a regexp route's template made for destinations no longer used) without
// closing any connection a call is still on. The cache owns no goroutine: idle expiry runs on time.AfterFunc
// timers, which close stops or waits for.
type connCache struct {
	tls   *tls.Config
	log   logging.Logger
	gauge prometheus.Gauge
	idle  time.Duration

	mu       sync.Mutex
	conns    map[string]*kedgeConn // guarded by mu
	closed   bool                  // guarded by mu
	expiring sync.WaitGroup        // timers closing a connection
}

// kedgeConn is one cached kedge connection; its fields are guarded by connCache.mu.
type kedgeConn struct {
	cc     *grpc.ClientConn
	active int         // calls using cc
	gen    uint64      // bumped whenever the idle timer is armed or cancelled, so a stale timer does nothing
	timer  *time.Timer // armed while active == 0
}

func newConnCache(tlsConf *tls.Config, log logging.Logger, idle time.Duration) *connCache {
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	return &connCache{
		tls:   tlsConf.Clone(),
		log:   log,
		idle:  idle,
		conns: map[string]*kedgeConn{},
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "winch_grpc_kedge_connections",
			Help: "Kedges that winch's gRPC proxy holds a connection to.",
		}),
	}
}

// get returns the connection to the kedge at u and the function that ends the caller's use of it (idempotent):
// TLS (the gRPC path always uses TLS, whatever u's scheme), to u's host and port (443 when u has none), verified
// against u's host name, never through a proxy.
func (c *connCache) get(u *url.URL) (*grpc.ClientConn, func(), error) {
	key := u.Scheme + "://" + u.Host
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil, errors.New("grpcforward: shutting down")
	}
	e, ok := c.conns[key]
	if !ok {
		addr := u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		}
		cfg := c.tls.Clone()
		cfg.ServerName = u.Hostname()
		creds := &kedgeCreds{TransportCredentials: credentials.NewTLS(cfg), serverName: u.Hostname()}
		cc, err := grpc.NewClient("passthrough:///"+addr,
			grpc.WithTransportCredentials(creds),
			grpc.WithNoProxy(), // never through HTTPS_PROXY, which may point at winch itself
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		)
		if err != nil {
			return nil, nil, fmt.Errorf("grpcforward: kedge %s: %w", u.Host, err)
		}
		e = &kedgeConn{cc: cc}
		c.conns[key] = e
		c.gauge.Set(float64(len(c.conns)))
		c.log.Debug("new connection to kedge", "kedge", addr)
	}
	e.active++
	e.gen++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	return e.cc, sync.OnceFunc(func() { c.release(key, e) }), nil
}

// release ends one call's use of e and arms its idle timer when it was the last.
func (c *connCache) release(key string, e *kedgeConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.active--
	if e.active > 0 || c.closed {
		return
	}
	e.gen++
	gen := e.gen
	e.timer = time.AfterFunc(c.idle, func() { c.expire(key, e, gen) })
}

// expire closes e if it is still cached and no call used it since the timer of generation gen was armed.
func (c *connCache) expire(key string, e *kedgeConn, gen uint64) {
	c.mu.Lock()
	if c.closed || c.conns[key] != e || e.active > 0 || e.gen != gen {
		c.mu.Unlock()
		return
	}
	delete(c.conns, key)
	c.gauge.Set(float64(len(c.conns)))
	c.expiring.Add(1) // under mu and before closed is set, so close waits for it
	c.mu.Unlock()
	defer c.expiring.Done()
	c.log.Debug("closing idle connection to kedge", "kedge", key)
	_ = e.cc.Close() // fails only on a connection already closed
}

func (c *connCache) close() error {
	c.mu.Lock()
	c.closed = true
	var errs []error
	for key, e := range c.conns {
		if e.timer != nil {
			e.timer.Stop()
		}
		if err := e.cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("grpcforward: closing %s: %w", key, err))
		}
		delete(c.conns, key)
	}
	c.gauge.Set(0)
	c.mu.Unlock()
	c.expiring.Wait()
	return errors.Join(errs...)
}

// kedgeCreds are TLS credentials for one kedge connection that carries calls for many targets. grpc-go takes the
// TLS server name from the authority it dials (and refuses a dial-time authority that differs from a fixed
// ServerName), so the handshake ignores that authority and always verifies the kedge's own host name; Info reports
// no ServerName. Each call then sets its :authority to the target with grpc.CallAuthority, which the AuthInfo
// accepts: the :authority tells kedge where to route, it is not the identity winch verified.
type kedgeCreds struct {
	credentials.TransportCredentials
	serverName string
}

var _ credentials.TransportCredentials = (*kedgeCreds)(nil)

// ClientHandshake verifies the kedge's certificate for serverName, whatever authority grpc passes.
func (c *kedgeCreds) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, c.serverName, raw)
	if err != nil {
		return nil, nil, err
	}
	if ti, ok := info.(credentials.TLSInfo); ok {
		return conn, routedTLSInfo{ti}, nil
	}
	return conn, info, nil
}

// Info is the TLS protocol info without a ServerName.
func (c *kedgeCreds) Info() credentials.ProtocolInfo {
	info := c.TransportCredentials.Info()
	info.ServerName = ""
	return info
}

// Clone returns a copy.
func (c *kedgeCreds) Clone() credentials.TransportCredentials {
	return &kedgeCreds{TransportCredentials: c.TransportCredentials.Clone(), serverName: c.serverName}
}

// OverrideServerName is deprecated in grpc-go; the kedge host name is fixed.
func (c *kedgeCreds) OverrideServerName(string) error { return nil }

// routedTLSInfo is the TLS AuthInfo of a kedge connection. It accepts any :authority override, because the
// authority names the target behind kedge, not the kedge whose certificate was verified.
type routedTLSInfo struct{ credentials.TLSInfo }

// ValidateAuthority accepts every authority; see routedTLSInfo.
func (routedTLSInfo) ValidateAuthority(string) error { return nil }
