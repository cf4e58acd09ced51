package grpcproxy

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/grpcrelay"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// handle is the UnknownServiceHandler: it directs the call (route, admission, backend connection, outgoing metadata)
// and relays it.
func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	c := callFrom(ctx)
	intercepted := c != nil
	if !intercepted {
		// The interceptor is not installed (a caller built its server differently): still proxy, without logs.
		method, _ := grpc.MethodFromServerStream(ss)
		c = newCall(ctx, method)
		_ = ss.SetHeader(metadata.Pairs(wire.MetadataRequestID, c.requestID))
	}
	err := p.forward(ctx, ss, c)
	if !intercepted {
		markKedgeError(ss, c, err) // otherwise the interceptor does it
	}
	return err
}

// forward directs the call and relays it to the backend connection chosen.
func (p *Proxy) forward(ctx context.Context, ss grpc.ServerStream, c *call) error {
	outCtx, conn, release, err := p.direct(ctx, c)
	if err != nil {
		return err
	}
	if release != nil {
		defer release()
	}
	// The backend's header goes to the client as soon as it arrives (a client may wait for it before sending, and a
	// message-less response keeps it), without the markers only kedge may send.
	o := &grpcrelay.Options{Metadata: withoutKedgeMarker, Header: c.noteEndpoint}
	return grpcrelay.Relay(outCtx, ss, conn, c.method, o)
}

// noteEndpoint notes the backend endpoint the call went to, for the log line.
func (c *call) noteEndpoint(cs grpc.ClientStream) {
	if p, ok := peer.FromContext(cs.Context()); ok && p.Addr != nil {
		endpoint := p.Addr.String()
		c.update(func(c *call) { c.endpoint = endpoint })
	}
}

// withoutKedgeMarker returns the backend's header or trailer metadata without x-kedge-error and x-kedge-error-type,
// so that a backend cannot pose as kedge (winch drops and refreshes its token on kedge's "unauthorized"). md is
// returned as is when it carries neither.
func withoutKedgeMarker(md metadata.MD) metadata.MD {
	_, hasType := md[wire.MetadataKedgeErrorType]
	_, hasMsg := md[wire.MetadataKedgeError]
	if !hasType && !hasMsg {
		return md
	}
	md = md.Copy()
	delete(md, wire.MetadataKedgeErrorType)
	delete(md, wire.MetadataKedgeError)
	return md
}

// backendConn is the connection the backend stream is opened on; it classifies failures to open one, which are
// kedge's (no connection, a refused adhoc destination), unlike the statuses the backend answers with.
type backendConn struct {
	grpc.ClientConnInterface
	call  *call
	adhoc *adhocConn // nil for pool backends
}

func (b *backendConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := b.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err == nil {
		return cs, nil
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		// The client gave up; not kedge's failure.
	case codes.Unavailable:
		if b.adhoc != nil && b.adhoc.refused.Load() {
			// Say "not allowed" rather than "unavailable", without the resolved address the guard saw.
			b.call.update(func(c *call) { c.errType = wire.ErrForbidden })
			return nil, status.Errorf(codes.PermissionDenied, "adhoc: destination %s is not allowed", b.call.adhocTarget())
		}
		b.call.update(func(c *call) { c.errType = wire.ErrNoConnection })
	default:
		b.call.update(func(c *call) { c.errType = wire.ErrTransportUnknown })
	}
	return nil, err
}
