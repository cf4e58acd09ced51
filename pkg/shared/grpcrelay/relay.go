// Package grpcrelay relays gRPC calls to a backend without knowing their services: kedge's gRPC proxy and winch's
// gRPC port both pass calls on through it. Messages travel as the bytes they arrived as (Frame: never decoded, and
// copied only when gRPC's receive buffers are much larger than the message), header and trailer metadata and the status are passed on, and a call costs one goroutine
// beside the one gRPC runs its handler on.
//
// A relaying grpc.Server must be built with ServerOption. Relay opens the backend stream itself, with the matching
// codec and the client's content subtype, so a client using another codec than protobuf is relayed unchanged.
package grpcrelay

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// streamDesc opens every backend stream as a bidirectional one: the relay does not know the method's kind, and on
// the wire a unary call is a stream with one message each way.
var streamDesc = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// Options adjust a relay to its proxy.
type Options struct {
	// Metadata, if set, rewrites the backend's header and trailer metadata before the client gets them (kedge drops
	// the markers a backend must not send). It may return its argument.
	Metadata func(metadata.MD) metadata.MD
	// Header, if set, is called once the backend's header has arrived (or the stream ended without one), before the
	// header goes on; kedge notes the endpoint the call went to.
	Header func(cs grpc.ClientStream)
	// HeaderWithFirstMessage holds the backend's header back until its first response message or the end of the
	// call, instead of passing it on as soon as it arrives. A backend stream that may be replaced before it answers
	// (winch replays a call kedge refused with a fresh token) needs this, so that the client gets the header of the
	// attempt that answered. A client that waits for the header before it sends waits for the first message then.
	HeaderWithFirstMessage bool
}

// Relay passes the call on ss to a stream opened on conn for method and back, until the backend's status: that
// status (nil for OK) is returned, with the backend's trailer set on ss. ctx must derive from ss.Context() and carry
// the outgoing metadata; the backend stream ends when Relay returns. When reading the client fails (it cancelled,
// or sent a message over the server's limit), the backend stream is cancelled and the client side's status is
// returned. Errors opening the stream are returned as conn.NewStream returned them.
func Relay(ctx context.Context, ss grpc.ServerStream, conn grpc.ClientConnInterface, method string, o *Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := conn.NewStream(ctx, streamDesc, method, callOptions(ss.Context())...)
	if err != nil {
		return err
	}
	r := &relay{ss: ss, cs: cs, cancel: cancel, upDone: make(chan struct{}), paced: pacedFrom(ss.Context())}
	go r.clientToBackend()
	err = r.backendToClient(o)
	if err == nil {
		return nil
	}
	// The call failed. When the client side failed first (clientToBackend records why, then cancels the backend
	// stream) or the client's stream has ended (sending to it then fails with whatever the transport says, e.g.
	// Unavailable "transport is closing" on ServeHTTP), the client side's status is the call's.
	if r.ss.Context().Err() != nil {
		<-r.upDone // it ends at once: both streams it uses are done
	}
	if cerr := r.clientFailure(); cerr != nil {
		return cerr
	}
	if ctxErr := r.ss.Context().Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return err
}

// relay is the state of one call that both directions share.
type relay struct {
	ss     grpc.ServerStream
	cs     grpc.ClientStream
	cancel context.CancelFunc

	upDone chan struct{} // closed when clientToBackend returns
	paced  *pacedBody    // the request body of a call served by ServeHTTP behind PaceBody, or nil

	mu      sync.Mutex
	readErr error // why reading the client (or sending to the backend) failed; guarded by mu
}

// clientToBackend passes the client's messages on, then closes the backend stream's sending side. It runs on its own
// goroutine, which may outlive Relay until gRPC ends the client's stream.
func (r *relay) clientToBackend() {
	defer close(r.upDone)
	var f Frame
	for {
		if err := r.ss.RecvMsg(&f); err != nil {
			if errors.Is(err, io.EOF) {
				_ = r.cs.CloseSend() // always nil
			} else {
				r.fail(err)
			}
			return
		}
		if r.paced != nil {
			r.paced.taken()
		}
		if err := r.cs.SendMsg(&f); err != nil {
			f.Free()
			// io.EOF: the backend ended the call, and its status reaches the client through backendToClient.
			if !errors.Is(err, io.EOF) {
				r.fail(err)
			}
			return
		}
	}
}

// fail records why the client side failed and ends the backend stream, which ends backendToClient.
func (r *relay) fail(err error) {
	r.mu.Lock()
	r.readErr = err
	r.mu.Unlock()
	r.cancel()
}

// clientFailure is the status of a failure of the client side, or nil: the status gRPC reported reading the client,
// or the client's cancellation or deadline.
func (r *relay) clientFailure() error {
	r.mu.Lock()
	err := r.readErr
	r.mu.Unlock()
	return clientStatus(r.ss.Context(), err)
}

// clientStatus is the status a call ends with when reading its client failed with err: err itself when it is a
// status, else the client context's end, else Internal. A nil err gives nil.
func clientStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	return status.Errorf(codes.Internal, "grpcrelay: reading the client's messages: %v", err)
}

// backendToClient passes the backend's header, messages and trailer on and returns the backend's status.
func (r *relay) backendToClient(o *Options) error {
	var f Frame
	headerSent := false
	if !o.HeaderWithFirstMessage {
		headerSent = true
		if err := r.sendHeader(o); err != nil {
			return err
		}
	}
	for {
		if err := r.cs.RecvMsg(&f); err != nil {
			if !headerSent {
				// A response without messages: its header (if any) goes with the status.
				if md, _ := r.cs.Header(); md != nil {
					_ = r.ss.SetHeader(o.rewrite(md)) // fails only once a header was sent, and none was
				}
			}
			r.ss.SetTrailer(o.rewrite(r.cs.Trailer()))
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !headerSent {
			headerSent = true
			if err := r.sendHeader(o); err != nil {
				f.Free()
				return err
			}
		}
		if err := r.ss.SendMsg(&f); err != nil {
			f.Free()
			return err
		}
	}
}

// sendHeader waits for the backend's header and sends it to the client. A stream that ends without a header (an
// error status alone) sends nothing here; its status follows.
func (r *relay) sendHeader(o *Options) error {
	// Header reports no error: a failed stream yields nil metadata, and its status comes from RecvMsg.
	md, _ := r.cs.Header()
	if o.Header != nil {
		o.Header(r.cs)
	}
	if md == nil {
		return nil
	}
	return r.ss.SendHeader(o.rewrite(md))
}

func (o *Options) rewrite(md metadata.MD) metadata.MD {
	if o.Metadata == nil || md == nil {
		return md
	}
	return o.Metadata(md)
}

// Call options of the backend stream, by the client's content subtype. Each slice is full, so a ClientConn that
// appends its own options copies it.
var (
	forceCodec   = grpc.ForceCodecV2(codec{})
	plainOptions = []grpc.CallOption{forceCodec}
	protoOptions = []grpc.CallOption{forceCodec, grpc.CallContentSubtype("proto")}
)

// callOptions are the options of the backend stream of the call whose server stream context is ctx: the relaying
// codec, and the client's content subtype, so a JSON or other non-protobuf client reaches a backend that expects
// its encoding.
func callOptions(ctx context.Context) []grpc.CallOption {
	switch sub := contentSubtype(metadata.ValueFromIncomingContext(ctx, "content-type")); sub {
	case "":
		return plainOptions
	case "proto":
		return protoOptions
	default:
		return []grpc.CallOption{forceCodec, grpc.CallContentSubtype(sub)}
	}
}

// contentSubtype is the subtype of a gRPC content type: "" for application/grpc, "json" for application/grpc+json
// (or ;json), lower case as gRPC sends it. Anything else gives "".
func contentSubtype(v []string) string {
	if len(v) != 1 {
		return ""
	}
	rest, ok := strings.CutPrefix(strings.ToLower(v[0]), "application/grpc")
	if !ok || len(rest) < 2 || (rest[0] != '+' && rest[0] != ';') {
		return ""
	}
	return rest[1:]
}
