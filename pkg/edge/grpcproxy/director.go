package grpcproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// direct routes the call, authenticates the caller and checks the route's requirement (in that order, before any
// backend connection is used), picks the connection the call goes to and builds the outgoing metadata, carried by
// the returned context. release, when not nil, ends the call's use of an adhoc connection. It runs after every
// server interceptor.
func (p *Proxy) direct(ctx context.Context, c *call) (_ context.Context, _ grpc.ClientConnInterface, release func(), _ error) {
	fullMethod, in := c.method, c.in
	c.update(func(c *call) { c.directed = true })
	if !wellFormedMethod(fullMethod) {
		c.update(func(c *call) { c.errType = wire.ErrBadRequest })
		return nil, nil, nil, status.Errorf(codes.Unimplemented, "malformed method name: %q", fullMethod)
	}

	var table *route.GRPCTable // a nil table matches nothing and has no adhoc rules
	if p.routes != nil {
		table = p.routes.GRPCTable()
	}
	res := p.admit.GRPC(ctx, table, &route.GRPCRequest{FullMethod: fullMethod, Authority: c.authority, Metadata: in},
		admission.Caller{Credentials: in.Get(wire.MetadataProxyAuthz), Peer: peerTLS(ctx)})
	if err := p.recordDecision(c, &res); err != nil {
		return nil, nil, nil, err
	}
	r, routeErr, target := res.GRPC, res.RouteErr, res.Adhoc

	var cc *backendConn
	switch {
	case r != nil:
		desc := describeRoute(r)
		conn, ok := p.backendConn(r.Backend)
		c.update(func(c *call) {
			c.route, c.match = r.Backend, desc
			c.backend = r.Backend
			if !ok {
				c.errType = wire.ErrNoBackend
			}
		})
		if !ok {
			return nil, nil, nil, status.Error(codes.Unimplemented, "unknown backend")
		}
		cc = &backendConn{ClientConnInterface: conn, call: c}
	case routeErr != nil:
		return nil, nil, nil, adhocError(c, routeErr)
	default:
		conn, done, err := p.directAdhoc(target, c)
		if err != nil {
			return nil, nil, nil, err
		}
		release = done
		cc = &backendConn{ClientConnInterface: conn.cc, call: c, adhoc: conn}
	}
	md := outgoingMetadata(in, c.requestID)
	if res.Assertion != "" {
		md[wire.MetadataKedgeIdentity] = []string{res.Assertion}
	}
	p.fwd.SetMetadata(md, in, forwarded.Request{Peer: peerAddr(ctx), Host: c.authority, Proto: "https"})
	c.span.InjectGRPC(md)
	return metadata.NewOutgoingContext(ctx, md), cc, release, nil
}

// wellFormedMethod reports whether fullMethod is "/service/method": two non-empty segments, neither a dot segment,
// without escapes or characters a path normaliser would act on. Only such a method is routed, authorized and
// forwarded, so that the service a route's pattern matched is the one a backend (or a path-normalising sidecar in
// front of it) serves. grpc-go itself accepts "/a/b/c" (service "a/b") and "/pkg.Svc/x/../../pkg.Other/M".
func wellFormedMethod(fullMethod string) bool {
	rest, ok := strings.CutPrefix(fullMethod, "/")
	if !ok {
		return false
	}
	service, method, ok := strings.Cut(rest, "/")
	if !ok || service == "" || method == "" || strings.IndexByte(method, '/') >= 0 {
		return false
	}
	for _, seg := range []string{service, method} {
		if seg == "." || seg == ".." {
			return false
		}
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c <= ' ' || c == 0x7f, c == '%', c == '\\', c == '?', c == '#', c == ';':
			return false
		}
	}
	return true
}

// recordDecision records the admission's identity and decision for the log line and returns the Unauthenticated or
// PermissionDenied (or, over a rate limit, ResourceExhausted) status of a refusal.
func (p *Proxy) recordDecision(c *call, res *admission.Result) error {
	d := res.Decision
	c.update(func(c *call) {
		c.identity = d.Identity.String()
		if res.RouteErr == nil || !d.Allowed() {
			c.decision, c.reason = d.Result(), d.Reason()
		}
		if !d.Allowed() {
			c.backend = res.Label
			_, c.errType = authn.HTTPStatus(d.Err)
		}
	})
	if d.Allowed() {
		return nil
	}
	return authn.StatusOf(d.Err).Err()
}

// peerAddr returns the IP address of the call's client, or the zero Addr.
func peerAddr(ctx context.Context) netip.Addr {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.Addr == nil {
		return netip.Addr{}
	}
	if ta, ok := pr.Addr.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	ap, err := netip.ParseAddrPort(pr.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// peerTLS returns the TLS state of the call's client connection. grpc-go provides it on the gRPC port and also for
// calls served through grpc.Server.ServeHTTP on the HTTPS port (from the http.Request's TLS state).
func peerTLS(ctx context.Context) *tls.ConnectionState {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
		return &info.State
	}
	return nil
}

// backendConn returns the named backend's connection.
func (p *Proxy) backendConn(name string) (*grpc.ClientConn, bool) {
	if p.backends == nil {
		return nil, false
	}
	conn, ok := p.backends.GRPC(name)
	return conn, ok && conn != nil
}

// adhocError turns a failure of the adhoc rules (or ErrNoRoute) into the call's status.
func adhocError(c *call, err error) error {
	var adhocErr *route.AdhocError
	switch {
	case errors.Is(err, route.ErrNoRoute):
		c.update(func(c *call) { c.errType = wire.ErrNoRoute })
		return status.Error(codes.Unimplemented, "unknown route to service")
	case errors.As(err, &adhocErr):
		c.update(func(c *call) {
			c.backend = admission.AdhocLabel
			c.errType = wire.ErrUnknownRouteError
		})
		if adhocErr.BadRequest {
			return status.Error(codes.InvalidArgument, adhocErr.Msg)
		}
		return status.Error(codes.NotFound, adhocErr.Msg)
	default:
		c.update(func(c *call) { c.errType = wire.ErrUnknownRouteError })
		return status.Error(codes.Internal, fmt.Sprintf("grpcproxy: adhoc: %v", err))
	}
}

// directAdhoc returns the cached connection to an adhoc destination and the function that ends the call's use of
// it.
func (p *Proxy) directAdhoc(target route.Target, c *call) (*adhocConn, func(), error) {
	c.update(func(c *call) {
		c.backend = admission.AdhocLabel
		c.adhoc = target.HostPort()
		c.route = admission.AdhocLabel
	})
	conn, release, err := p.adhoc.get(target)
	switch {
	case errors.Is(err, errTooManyAdhoc):
		c.update(func(c *call) { c.errType = wire.ErrNoConnection })
		return nil, nil, status.Error(codes.ResourceExhausted, err.Error())
	case err != nil:
		c.update(func(c *call) { c.errType = wire.ErrShuttingDown })
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	return conn, release, nil
}

// outgoingMetadata is the metadata sent to the backend: the client's, minus what belongs to the hop to kedge
// (wire.HopMetadata: pseudo headers, connection headers, gRPC's own transport keys, proxy-authorization) and the
// kedge-owned x-kedge-* keys (as on the HTTP path, only x-kedge-info-logs passes), plus the call's request ID.
func outgoingMetadata(in metadata.MD, requestID string) metadata.MD {
	out := make(metadata.MD, len(in)+1)
	for k, v := range in {
		if dropKey(k) {
			continue
		}
		out[k] = slices.Clone(v)
	}
	out[wire.MetadataRequestID] = []string{requestID}
	return out
}

// dropKey reports whether an incoming metadata key must not be forwarded. Keys are lower case in metadata.MD.
func dropKey(k string) bool {
	return wire.HopMetadata(k) || wire.KedgeOwned(k)
}

// describeRoute names a route in log lines by its conditions; metadata values are left out as they may be secret.
func describeRoute(r *route.GRPCRoute) string {
	var b strings.Builder
	if r.Service == "" {
		b.WriteString("*")
	} else {
		b.WriteString(r.Service)
	}
	if r.AuthorityHost != "" || r.AuthorityPort != 0 {
		b.WriteString("@")
		b.WriteString(r.AuthorityHost)
		if r.AuthorityPort != 0 {
			fmt.Fprintf(&b, ":%d", r.AuthorityPort)
		}
	}
	if len(r.Metadata) > 0 {
		keys := make([]string, 0, len(r.Metadata))
		for k := range r.Metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("[")
		b.WriteString(strings.Join(keys, ","))
		b.WriteString("]")
	}
	return b.String()
}
