package grpcforward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/kedge-proxy/kedge/pkg/shared/conncache"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// connCache holds one long-lived *grpc.ClientConn per kedge (scheme and host of the kedge URL), made on first use
// and closed once no call has used it for the idle timeout (conncache). That also drops the connections of kedges a
// mapper reload removed (and of kedge URLs a regexp route's template made for destinations no longer used) without
// closing any connection a call is still on.
type connCache struct {
	tls   *tls.Config
	log   logging.Logger
	gauge prometheus.Gauge
	cache *conncache.Cache[string, *grpc.ClientConn]
}

func newConnCache(tlsConf *tls.Config, log logging.Logger, idle time.Duration) *connCache {
	if tlsConf == nil {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c := &connCache{
		tls: tlsConf.Clone(),
		log: log,
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "winch_grpc_kedge_connections",
			Help: "Kedges that winch's gRPC proxy holds a connection to.",
		}),
	}
	c.cache = conncache.New[string, *grpc.ClientConn](conncache.Config{
		Idle:   idle,
		OnSize: func(n int) { c.gauge.Set(float64(n)) },
	})
	return c
}

// get returns the connection to the kedge at u and the function that ends the caller's use of it (idempotent):
// TLS (the gRPC path always uses TLS, whatever u's scheme), to u's host and port (443 when u has none), verified
// against u's host name, never through a proxy.
func (c *connCache) get(u *url.URL) (*grpc.ClientConn, func(), error) {
	cc, release, err := c.cache.Get(u.Scheme+"://"+u.Host, func() (*grpc.ClientConn, error) {
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
			return nil, fmt.Errorf("grpcforward: kedge %s: %w", u.Host, err)
		}
		c.log.Debug("new connection to kedge", "kedge", addr)
		return cc, nil
	})
	if errors.Is(err, conncache.ErrClosed) {
		return nil, nil, errors.New("grpcforward: shutting down")
	}
	return cc, release, err
}

func (c *connCache) close() error { return c.cache.Close() }

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
