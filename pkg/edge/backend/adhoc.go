package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// DialGuard decides whether an address may be dialled; a non-nil error refuses it. Guards see the resolved IP at
// dial time (never a name), already unmapped from IPv4-in-IPv6.
type DialGuard func(addr netip.Addr) error

// DefaultDialGuard refuses loopback, link-local (169.254/16, fe80::/10), unspecified (and 0/8), multicast,
// broadcast and cloud metadata addresses (169.254.169.254, fd00:ec2::254), also when embedded in NAT64 or 6to4
// addresses, unless the address is inside one of the allow prefixes. Everything else, private ranges included, is
// allowed: reaching in-cluster addresses is kedge's job.
func DefaultDialGuard(allow ...netip.Prefix) DialGuard {
	p := &dialPolicy{
		awsIPv6Metadata: netip.MustParseAddr("fd00:ec2::254"),
		thisNetwork:     netip.MustParsePrefix("0.0.0.0/8"),
		broadcast:       netip.MustParseAddr("255.255.255.255"),
		nat64:           netip.MustParsePrefix("64:ff9b::/96"),
		sixToFour:       netip.MustParsePrefix("2002::/16"),
	}
	for _, a := range allow {
		if a.IsValid() {
			addr := a.Addr().Unmap()
			p.allowed = append(p.allowed, netip.PrefixFrom(addr, min(a.Bits(), addr.BitLen())).Masked())
		}
	}
	return p.check
}

// dialPolicy is the state of DefaultDialGuard.
type dialPolicy struct {
	allowed         []netip.Prefix
	awsIPv6Metadata netip.Addr
	thisNetwork     netip.Prefix
	broadcast       netip.Addr
	nat64           netip.Prefix
	sixToFour       netip.Prefix
}

func (p *dialPolicy) check(addr netip.Addr) error {
	addr = addr.WithZone("").Unmap()
	if slices.ContainsFunc(p.allowed, func(a netip.Prefix) bool { return a.Contains(addr) }) {
		return nil
	}
	why := p.forbiddenReason(addr)
	if why == "" && addr.Is6() && (p.nat64.Contains(addr) || p.sixToFour.Contains(addr)) {
		if why = p.forbiddenReason(p.embeddedIPv4(addr)); why != "" {
			why = "NAT64/6to4 address embedding a " + why
		}
	}
	if why != "" {
		return fmt.Errorf("%w: %s is a %s address", ErrForbiddenAddress, addr, why)
	}
	return nil
}

func (p *dialPolicy) forbiddenReason(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified() || p.thisNetwork.Contains(a):
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a == p.awsIPv6Metadata:
		return "metadata"
	case a.IsLinkLocalUnicast():
		return "link-local" // includes the 169.254.169.254 metadata address
	case a.IsMulticast() || a == p.broadcast:
		return "multicast or broadcast"
	default:
		return ""
	}
}

// embeddedIPv4 returns the IPv4 address inside a NAT64 (last 32 bits) or 6to4 (bits 16-47) address.
func (p *dialPolicy) embeddedIPv4(a netip.Addr) netip.Addr {
	b := a.As16()
	if p.nat64.Contains(a) {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return netip.AddrFrom4([4]byte(b[2:6]))
}

// adhocMaxAddrs bounds how many resolved addresses one adhoc dial tries: the name is client-chosen and may resolve
// to many addresses, each of which may take the whole dial timeout.
const adhocMaxAddrs = 4

// AdhocDialer is kedge's one dialer for adhoc destinations, shared by HTTP, gRPC and CONNECT so that all three
// follow one policy: it resolves the name once, then dials at most adhocMaxAddrs of the resolved IPs in turn, each
// connect bounded by the dial timeout and checked by the guard at dial time (so a second lookup cannot rebind the
// name to a refused address). The guard's one exemption is an address an adhoc rule names exactly
// (route.Target.Explicit), which the caller passes in the context with WithAdhocTarget.
type AdhocDialer struct {
	dns     DNSResolver
	guard   DialGuard
	timeout time.Duration
	dialer  net.Dialer
}

// NewAdhocDialer returns a dialer checking every address with guard (nil means DefaultDialGuard()); each connect
// is bounded by d.Options.DialTimeout.
func NewAdhocDialer(d Deps, guard DialGuard) *AdhocDialer {
	d = d.withDefaults()
	if guard == nil {
		guard = DefaultDialGuard()
	}
	a := &AdhocDialer{dns: d.DNS, guard: guard, timeout: d.Options.DialTimeout}
	a.dialer = net.Dialer{Timeout: a.timeout, ControlContext: a.control}
	return a
}

// MaxDialTime is the longest one DialContext may take: the lookup, then a connect to every address it tries.
func (a *AdhocDialer) MaxDialTime() time.Duration {
	return lookupTimeout + adhocMaxAddrs*a.timeout
}

// explicitKey is the context key of the address (netip.AddrPort, zone-less and unmapped) an adhoc rule names
// exactly.
type explicitKey struct{}

// WithAdhocTarget returns the context in which to dial t: when t is Explicit, an AdhocDialer dialling exactly
// t.HostPort() with it connects even if the guard refuses the address (the operator wrote it down); for any other
// target, or any other address, the guard decides.
func WithAdhocTarget(ctx context.Context, t route.Target) context.Context {
	var ap netip.AddrPort
	if ip, err := netip.ParseAddr(t.Host); err == nil && t.Explicit && t.Port <= 65535 {
		ap = netip.AddrPortFrom(ip.WithZone("").Unmap(), uint16(t.Port))
	}
	if !ap.IsValid() && ctx.Value(explicitKey{}) == nil {
		return ctx
	}
	return context.WithValue(ctx, explicitKey{}, ap)
}

// explicitFrom returns the exempt address of ctx, or the zero AddrPort.
func explicitFrom(ctx context.Context) netip.AddrPort {
	ap, _ := ctx.Value(explicitKey{}).(netip.AddrPort)
	return ap
}

// control runs on the socket about to connect: the address is an IP literal by then.
func (a *AdhocDialer) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrForbiddenAddress, address)
	}
	addr := ap.Addr().WithZone("").Unmap()
	if ex := explicitFrom(ctx); ex.IsValid() && ex == netip.AddrPortFrom(addr, ap.Port()) {
		return nil
	}
	return a.guard(addr)
}

// DialContext connects to address ("host:port"). Failures are *Error (Backend empty): wire.ErrForbidden when the
// guard refused every address, wire.ErrNoResolution when the name did not resolve, wire.ErrNoConnection when no
// address accepted the connection.
func (a *AdhocDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &Error{Type: wire.ErrForbidden, Err: fmt.Errorf("adhoc: network %q is not allowed", network)}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, &Error{Type: wire.ErrNoResolution, Err: fmt.Errorf("adhoc: %w", err)}
	}
	ex := explicitFrom(ctx)
	var ips []string
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []string{ip.String()}
		if ex.IsValid() && (ex.Addr() != ip.WithZone("").Unmap() || strconv.Itoa(int(ex.Port())) != port) {
			ex = netip.AddrPort{}
		}
	} else {
		ex = netip.AddrPort{} // a name is never explicit, whatever it resolves to
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		ips, err = a.dns.LookupHost(lctx, host)
		cancel()
		if err == nil && len(ips) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			return nil, &Error{Type: wire.ErrNoResolution, Err: fmt.Errorf("adhoc: cannot resolve %s: %w", address, err)}
		}
	}
	if explicitFrom(ctx) != ex {
		ctx = context.WithValue(ctx, explicitKey{}, ex) // the exemption covers the literal it names, nothing else
	}
	if len(ips) > adhocMaxAddrs {
		ips = ips[:adhocMaxAddrs]
	}
	var errs []error
	forbidden := 0
	for _, ip := range ips {
		c, err := a.dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrForbiddenAddress) {
			forbidden++
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	err = errors.Join(errs...)
	if forbidden == len(ips) {
		return nil, &Error{Type: wire.ErrForbidden, Err: fmt.Errorf("adhoc: dialling %s: %w", address, err)}
	}
	if ctx.Err() != nil {
		return nil, transportError(ctx, "", address, err)
	}
	return nil, &Error{Type: wire.ErrNoConnection, Err: fmt.Errorf("adhoc: no connection to %s: %w", address, err)}
}

// adhocTransport is the RoundTripper for adhoc destinations.
type adhocTransport struct {
	t *http.Transport
}

// NewAdhocTransport returns the RoundTripper for adhoc destinations: it connects with dialer (nil means
// NewAdhocDialer(d, nil)), so the request's host is resolved and every resolved IP checked at dial time, with the
// exemption of an explicit target when the request's context carries it (WithAdhocTarget); it dials plaintext (the
// URL scheme is forced to http) and never uses environment proxies. Failures are *Error as for AdhocDialer, or
// wire.ErrTransportUnknown / wire.ErrBackendTimeout after the connection was made. The result also has
// CloseIdleConnections.
func NewAdhocTransport(d Deps, dialer *AdhocDialer) http.RoundTripper {
	d = d.withDefaults()
	if dialer == nil {
		dialer = NewAdhocDialer(d, nil)
	}
	return &adhocTransport{t: &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		MaxIdleConnsPerHost:    maxAdhocIdleConnsPerHost,
		ResponseHeaderTimeout:  d.Options.ResponseHeaderTimeout,
		MaxIdleConns:           maxAdhocIdleConns, // hosts are client-chosen names: bound the total too
		IdleConnTimeout:        d.Options.IdleConnTimeout,
		ExpectContinueTimeout:  tlsHandshakeTimeout,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}}
}

// RoundTrip implements http.RoundTripper.
func (a *adhocTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	out := *req
	u := *req.URL
	u.Scheme = "http"
	out.URL = &u
	ctx := req.Context()
	if rec := recorderFrom(ctx); rec != nil {
		// A fresh ClientTrace is composed with any existing one by httptrace; neither is mutated.
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
			rec.Addr = i.Conn.RemoteAddr().String()
		}})
		out = *out.WithContext(ctx)
	}
	resp, err := a.t.RoundTrip(&out)
	if err != nil {
		return nil, transportError(ctx, "", u.Host, err)
	}
	return resp, nil
}

// CloseIdleConnections closes the transport's idle connections.
func (a *adhocTransport) CloseIdleConnections() { a.t.CloseIdleConnections() }
