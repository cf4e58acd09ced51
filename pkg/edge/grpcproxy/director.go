package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// direct is the grpc-proxy director: it picks the connection a call goes to and builds the outgoing metadata. It runs
// after every server interceptor, on the stream wrapped by handle.
func (p *Proxy) direct(ctx context.Context, fullMethod string) (context.Context, grpc.ClientConnInterface, error) {
	f, ok := ctx.Value(forwardKey{}).(*forward)
	if !ok {
		return nil, nil, status.Error(codes.Internal, "grpcproxy: call state missing")
	}
	c := f.call
	in, _ := metadata.FromIncomingContext(ctx)
	var identity string
	if p.identity != nil {
		identity = p.identity(ctx)
	}
	c.update(func(c *call) {
		c.directed = true
		c.identity = identity
	})

	var table *route.GRPCTable // a nil table matches nothing and has no adhoc rules
	if p.routes != nil {
		table = p.routes.GRPCTable()
	}
	var cc *backendConn
	if r, ok := table.Match(&route.GRPCRequest{FullMethod: fullMethod, Authority: c.authority, Metadata: in}); ok {
		desc := describeRoute(r)
		conn, ok := p.backendConn(r.Backend)
		c.update(func(c *call) {
			c.route = desc
			c.backend = r.Backend
			if !ok {
				c.errType = wire.ErrNoBackend
			}
		})
		if !ok {
			return nil, nil, status.Error(codes.Unimplemented, "unknown backend")
		}
		cc = &backendConn{ClientConnInterface: conn, f: f}
	} else {
		conn, release, err := p.directAdhoc(table, c)
		if err != nil {
			return nil, nil, err
		}
		f.release = release
		cc = &backendConn{ClientConnInterface: conn.cc, f: f, adhoc: conn}
	}
	out := metadata.NewOutgoingContext(ctx, outgoingMetadata(in, c.requestID))
	return out, cc, nil
}

// backendConn returns the named backend's connection.
func (p *Proxy) backendConn(name string) (*grpc.ClientConn, bool) {
	if p.backends == nil {
		return nil, false
	}
	conn, ok := p.backends.GRPC(name)
	return conn, ok && conn != nil
}

// directAdhoc applies the adhoc rules to the call's :authority and returns the cached connection to the destination
// and the function that ends the call's use of it.
func (p *Proxy) directAdhoc(table *route.GRPCTable, c *call) (*adhocConn, func(), error) {
	target, err := table.Adhoc(c.authority)
	if err != nil {
		var adhocErr *route.AdhocError
		switch {
		case errors.Is(err, route.ErrNoRoute):
			c.update(func(c *call) { c.errType = wire.ErrNoRoute })
			return nil, nil, status.Error(codes.Unimplemented, "unknown route to service")
		case errors.As(err, &adhocErr):
			c.update(func(c *call) {
				c.backend = adhocBackend
				c.errType = wire.ErrUnknownRouteError
			})
			if adhocErr.BadRequest {
				return nil, nil, status.Error(codes.InvalidArgument, adhocErr.Msg)
			}
			return nil, nil, status.Error(codes.NotFound, adhocErr.Msg)
		default:
			c.update(func(c *call) { c.errType = wire.ErrUnknownRouteError })
			return nil, nil, status.Error(codes.Internal, fmt.Sprintf("grpcproxy: adhoc: %v", err))
		}
	}
	addr := net.JoinHostPort(target.Host, strconv.FormatUint(uint64(target.Port), 10))
	c.update(func(c *call) {
		c.backend = adhocBackend
		c.adhoc = addr
	})
	conn, release, err := p.adhoc.get(addr)
	if err != nil {
		c.update(func(c *call) { c.errType = wire.ErrShuttingDown })
		return nil, nil, status.Error(codes.Unavailable, err.Error())
	}
	return conn, release, nil
}

// outgoingMetadata is the metadata sent to the backend: the client's, minus credentials meant for kedge, pseudo
// headers, hop-by-hop headers and gRPC's own transport headers, plus the call's request ID.
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
	if strings.HasPrefix(k, ":") {
		return true
	}
	switch k {
	case wire.MetadataProxyAuthz, // kedge's own credential: never leaks to a backend
		"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "host",
		"content-type", "content-length", "user-agent",
		// The proxy's own client negotiates these with the backend.
		"grpc-accept-encoding", "grpc-encoding", "grpc-timeout", "grpc-status", "grpc-message",
		"grpc-status-details-bin", "grpc-message-type", "grpc-previous-rpc-attempts", "grpc-retry-pushback-ms":
		return true
	}
	return false
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
