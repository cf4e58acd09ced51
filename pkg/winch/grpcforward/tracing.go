package grpcforward

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// interceptors are the stream interceptors of winch's gRPC server: with a tracer, trace first (outermost, so that
// its span ends with the status the client gets), then explainUnavailable.
func (p *Proxy) interceptors() []grpc.StreamServerInterceptor {
	if p.tracer == nil {
		return []grpc.StreamServerInterceptor{p.explainUnavailable}
	}
	return []grpc.StreamServerInterceptor{p.trace, p.explainUnavailable}
}

// trace makes the call's span from the client's traceparent metadata and hands it to the director through the
// stream's context; the director sends it to kedge as the next parent (tracing.FromContext in direct).
func (p *Proxy) trace(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	span := p.tracer.StartGRPC(md, info.FullMethod)
	err := handler(srv, &spanStream{ServerStream: ss, ctx: tracing.WithSpan(ctx, span)})
	var addr string
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		addr, _, _ = net.SplitHostPort(pr.Addr.String())
	}
	span.End(tracing.Attrs{RPC: true, Method: info.FullMethod, Code: int(status.Code(err)), Peer: addr,
		RequestID: first(md[wire.MetadataRequestID])})
	return err
}

// spanStream is a server stream whose context carries the call's span.
type spanStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *spanStream) Context() context.Context { return s.ctx }
