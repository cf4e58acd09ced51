package grpcproxy

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

type forwardKey struct{}

// forward wraps the client's server stream for grpc-proxy's handler and fixes what that handler does not do:
//   - grpc-proxy forwards the backend's response headers only together with the first response message, so a
//     message-less response (an error status, or a stream that only sends headers for a while) lost them (the
//     original kedge's bug 14) and a client waiting for headers before sending could deadlock. forward starts a
//     goroutine per call that sends the headers on as soon as the backend sends them.
//   - grpc-proxy turns every failure to read from the client into Internal "failed proxying s2c"; forward reports the
//     client's cancellation, deadline or read status instead.
//
// It also releases the call's adhoc connection once the handler returns.
type forward struct {
	grpc.ServerStream
	ctx     context.Context // the stream's context plus forwardKey; lives as long as the call
	call    *call
	release func() // set by the director (same goroutine as handle) for adhoc calls
	wg      sync.WaitGroup

	mu         sync.Mutex // serialises header writes and guards the fields below
	headerSent bool
	recvErr    error // first error reading from the client, other than io.EOF
}

// handle is the UnknownServiceHandler: grpc-proxy's transparent handler around a forward.
func (p *Proxy) handle(srv any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	c := callFrom(ctx)
	intercepted := c != nil
	if !intercepted {
		// The interceptor is not installed (a caller built its server differently): still proxy, without logs.
		method, _ := grpc.MethodFromServerStream(ss)
		c = newCall(ctx, method)
		_ = ss.SetHeader(metadata.Pairs(wire.MetadataRequestID, c.requestID))
	}
	f := &forward{ServerStream: ss, call: c}
	f.ctx = context.WithValue(ctx, forwardKey{}, f)
	err := p.transparent(srv, f)
	// grpc-proxy has cancelled the backend stream by now, so the header goroutine returns promptly.
	f.wg.Wait()
	if f.release != nil {
		f.release()
	}
	err = f.result(err)
	if !intercepted {
		markKedgeError(ss, c, err) // otherwise the interceptor does it
	}
	return err
}

func (f *forward) Context() context.Context { return f.ctx }

// SendHeader sends the response headers once: whichever of grpc-proxy and the header goroutine comes first wins,
// and both carry the same backend headers.
func (f *forward) SendHeader(md metadata.MD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.headerSent {
		return nil
	}
	f.headerSent = true
	return f.ServerStream.SendHeader(withoutKedgeMarker(md))
}

// SendMsg sends a response message; gRPC sends the headers with it if they are not out yet.
func (f *forward) SendMsg(m any) error {
	f.mu.Lock()
	f.headerSent = true
	f.mu.Unlock()
	return f.ServerStream.SendMsg(m)
}

// SetTrailer sets the backend's trailer. It is serialised with header writes, which may run on the header
// goroutine.
func (f *forward) SetTrailer(md metadata.MD) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ServerStream.SetTrailer(withoutKedgeMarker(md))
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

// RecvMsg reads a client message, remembering why reading failed.
func (f *forward) RecvMsg(m any) error {
	err := f.ServerStream.RecvMsg(m)
	if err != nil && !errors.Is(err, io.EOF) {
		f.mu.Lock()
		if f.recvErr == nil {
			f.recvErr = err
		}
		f.mu.Unlock()
	}
	return err
}

// result replaces grpc-proxy's Internal "failed proxying s2c" (its wrapper around any client read failure) by the
// status the client side actually ended with. Every other error, including every backend status, passes unchanged.
func (f *forward) result(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Internal || !strings.HasPrefix(st.Message(), "failed proxying s2c") {
		return err
	}
	f.mu.Lock()
	recvErr := f.recvErr
	f.mu.Unlock()
	if _, ok := status.FromError(recvErr); ok && recvErr != nil {
		return recvErr
	}
	if ctxErr := f.ServerStream.Context().Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return err
}

// forwardHeader waits for the backend's response headers and sends them to the client at once. It notes the
// backend endpoint the call went to for the log line. It returns when headers arrive or the backend stream ends.
func (f *forward) forwardHeader(cs grpc.ClientStream) {
	defer f.wg.Done()
	// Header reports no error: a failed stream yields nil metadata, and its status reaches the client via RecvMsg.
	md, _ := cs.Header()
	if p, ok := peer.FromContext(cs.Context()); ok && p.Addr != nil {
		endpoint := p.Addr.String()
		f.call.update(func(c *call) { c.endpoint = endpoint })
	}
	if md == nil {
		return
	}
	// An error means the client is gone; grpc-proxy's own pumps see that too.
	_ = f.SendHeader(md)
}

// backendConn is the connection grpc-proxy opens the backend stream on; it starts the header goroutine for each
// stream and classifies failures to open one.
type backendConn struct {
	grpc.ClientConnInterface
	f     *forward
	adhoc *adhocConn // nil for pool backends
}

func (b *backendConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := b.ClientConnInterface.NewStream(ctx, desc, method, opts...)
	if err != nil {
		switch status.Code(err) {
		case codes.Canceled, codes.DeadlineExceeded:
			// The client gave up; not kedge's failure.
		case codes.Unavailable:
			if b.adhoc != nil && b.adhoc.refused.Load() {
				// Say "not allowed" rather than "unavailable", without the resolved address the guard saw.
				b.f.call.update(func(c *call) { c.errType = wire.ErrForbidden })
				return nil, status.Errorf(codes.PermissionDenied, "adhoc: destination %s is not allowed", b.f.call.adhocTarget())
			}
			b.f.call.update(func(c *call) { c.errType = wire.ErrNoConnection })
		default:
			b.f.call.update(func(c *call) { c.errType = wire.ErrTransportUnknown })
		}
		return nil, err
	}
	b.f.wg.Add(1)
	go b.f.forwardHeader(cs)
	return cs, nil
}
