package serve

import (
	"net"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
)

// ConnLimits are the connection caps of a ConnLimiter. Zero means no limit.
type ConnLimits struct {
	// Total caps the open connections of all the listeners one ConnLimiter wraps together.
	Total int
	// PerIP caps the open connections from one client address: one IPv4 address, or one IPv6 /64 (what a single
	// host or customer usually holds). Behind an L4 load balancer that does not preserve client addresses every
	// connection comes from the balancer's few addresses, so this limit must stay off (0) there.
	PerIP int
	// Namespace prefixes the metric names ("kedge" gives kedge_connections_rejected_total); default "kedge".
	Namespace string
}

// Reasons a ConnLimiter rejects a connection, the reason label of <namespace>_connections_rejected_total.
const (
	RejectTotal = "total"
	RejectPerIP = "per_ip"
)

// ConnLimiter caps the connections open at once across the listeners it wraps. A connection over a limit is closed
// as soon as it is accepted, before any TLS handshake, and counted; established connections are never touched. An
// accepted connection holds its place until it is closed, however that happens (by the server, by a handler that
// hijacked it, at the drain deadline), exactly once.
//
// Its methods are safe for concurrent use; a nil *ConnLimiter wraps nothing.
type ConnLimiter struct {
	limits   ConnLimits
	rejected *prometheus.CounterVec // <ns>_connections_rejected_total{listener,reason}
	open     *prometheus.GaugeVec   // <ns>_connections_open{listener}

	mu    sync.Mutex
	total int                  // open connections; guarded by mu
	byIP  map[netip.Prefix]int // open connections per client address, entries > 0 only; guarded by mu
}

// NewConnLimiter returns a limiter with limits whose metrics are registered on reg (nil: not registered). Two
// limiters on one registry share their metrics.
func NewConnLimiter(limits ConnLimits, reg prometheus.Registerer) (*ConnLimiter, error) {
	ns := limits.Namespace
	if ns == "" {
		ns = "kedge"
	}
	l := &ConnLimiter{limits: limits, byIP: map[netip.Prefix]int{}}
	var err error
	if l.rejected, err = collector.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: ns + "_connections_rejected_total",
		Help: "Connections closed right after accept because a connection limit was reached, by listener and reason (total, per_ip).",
	}, []string{"listener", "reason"})); err != nil {
		return nil, err
	}
	if l.open, err = collector.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: ns + "_connections_open",
		Help: "Client connections open now, by listener (those the connection limits count).",
	}, []string{"listener"})); err != nil {
		return nil, err
	}
	return l, nil
}

// Wrap returns ln with the limiter applied to its connections; name labels its metrics ("https", "grpc").
func (l *ConnLimiter) Wrap(ln net.Listener, name string) net.Listener {
	if l == nil || ln == nil {
		return ln
	}
	for _, reason := range []string{RejectTotal, RejectPerIP} {
		l.rejected.WithLabelValues(name, reason) // export zeros, so rate() works from the first rejection
	}
	return &limitListener{Listener: ln, lim: l, name: name,
		rejectedTotal: l.rejected.WithLabelValues(name, RejectTotal),
		rejectedPerIP: l.rejected.WithLabelValues(name, RejectPerIP),
		open:          l.open.WithLabelValues(name)}
}

// Open returns the number of connections the limiter counts now.
func (l *ConnLimiter) Open() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// acquire takes a place for a connection from key, or returns the reason it may not have one.
func (l *ConnLimiter) acquire(key netip.Prefix, keyed bool) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.limits.Total > 0 && l.total >= l.limits.Total {
		return RejectTotal
	}
	if keyed && l.limits.PerIP > 0 && l.byIP[key] >= l.limits.PerIP {
		return RejectPerIP
	}
	l.total++
	if keyed && l.limits.PerIP > 0 {
		l.byIP[key]++
	}
	return ""
}

func (l *ConnLimiter) release(key netip.Prefix, keyed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if keyed && l.limits.PerIP > 0 {
		if n := l.byIP[key] - 1; n > 0 {
			l.byIP[key] = n
		} else {
			delete(l.byIP, key)
		}
	}
}

// clientKey is the per-IP bucket of addr: the IPv4 address or the IPv6 /64. keyed is false for addresses that are
// not IP (unix sockets, tests with fake conns): those count towards the total only.
func clientKey(addr net.Addr) (_ netip.Prefix, keyed bool) {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

type limitListener struct {
	net.Listener
	lim                          *ConnLimiter
	name                         string
	rejectedTotal, rejectedPerIP prometheus.Counter
	open                         prometheus.Gauge
}

// Accept returns the next connection within the limits; those over a limit are closed and counted here, so the
// server never sees them.
func (ln *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, keyed := clientKey(c.RemoteAddr())
		switch ln.lim.acquire(key, keyed) {
		case RejectTotal:
			ln.rejectedTotal.Inc()
			_ = c.Close()
			continue
		case RejectPerIP:
			ln.rejectedPerIP.Inc()
			_ = c.Close()
			continue
		}
		ln.open.Inc()
		return &limitConn{Conn: c, release: func() {
			ln.lim.release(key, keyed)
			ln.open.Dec()
		}}, nil
	}
}

// limitConn gives its place back on the first Close. Servers and hijacking handlers close the connection they were
// given (net/http hands a hijacker this conn, or the *tls.Conn around it, whose Close closes this one), so every
// accepted connection is released once.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
