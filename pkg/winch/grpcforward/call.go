package grpcforward

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/grpcrelay"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// call is one proxied call's view of its kedge connection (the grpc.ClientConnInterface the director returns): it
// sets the target :authority and the proxy token on the stream, and replays the call once with a fresh token
// when kedge rejects the cached one.
type call struct {
	p          *Proxy
	cc         *grpc.ClientConn
	authority  string
	method     string
	kedge      string
	md         metadata.MD // outgoing metadata without the proxy token
	proxyAuth  string      // auth source of the proxy token; "" for none
	proxyToken string
}

var _ grpc.ClientConnInterface = (*call)(nil)

// metadata returns the outgoing metadata with the current proxy token.
func (c *call) metadata() metadata.MD {
	md := c.md.Copy()
	if c.proxyToken != "" {
		md.Set(wire.MetadataProxyAuthz, "bearer "+c.proxyToken)
	}
	return md
}

// Invoke is part of grpc.ClientConnInterface; the relay only streams.
func (c *call) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.cc.Invoke(ctx, method, args, reply, append(opts, grpc.CallAuthority(c.authority))...)
}

// NewStream opens the stream to kedge. ctx carries the outgoing metadata the director built.
func (c *call) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	opts = append(opts, grpc.CallAuthority(c.authority))
	cs, err := c.cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	if c.proxyToken == "" {
		return cs, nil
	}
	return &replayStream{
		c:        c,
		ctx:      ctx,
		desc:     desc,
		opts:     opts,
		cur:      cs,
		sendDone: make(chan struct{}),
	}, nil
}

// replayStream is a client stream to kedge that can be opened a second time. When kedge itself (trailer
// x-kedge-error-type: unauthorized, see kedgeUnauthorized) answers the first attempt with Unauthenticated before any
// response message, the proxy token is invalidated and, if the client sent at most one message and then closed its
// side (unary and server-streaming calls), the call is sent again with a fresh token and the buffered message. For
// calls that keep sending, the error goes to the client; the next call uses the fresh token.
//
// The relay calls SendMsg and CloseSend from one goroutine and RecvMsg, Header and Trailer from another. The stream
// is replaced only after the client closed its side, when SendMsg is no longer called.
type replayStream struct {
	c *call
	// ctx is the call's context as the relay made it for this stream; it lives exactly as long as the stream, so a
	// replayed attempt is bound to the same call.
	ctx  context.Context
	desc *grpc.StreamDesc
	opts []grpc.CallOption

	mu       sync.Mutex
	cur      grpc.ClientStream // guarded by mu
	sent     int               // messages the client sent; guarded by mu
	first    *grpcrelay.Frame  // the first message, kept while a replay is possible; guarded by mu
	settled  bool              // no replay can happen any more: keep no first message; guarded by mu
	halfDone bool              // the client closed its side; guarded by mu
	sendDone chan struct{}     // closed once halfDone or sent > 1: whether a replay is possible is known
	doneOnce sync.Once
	received bool // a response message arrived: no replay; only touched by the receiving goroutine
	replayed bool // only touched by the receiving goroutine
}

func (s *replayStream) stream() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *replayStream) markSendDone() { s.doneOnce.Do(func() { close(s.sendDone) }) }

// SendMsg forwards m and keeps the first message (a second reference to its bytes, not a copy). While a replay may
// still happen, io.EOF from a stream that kedge already ended is not passed on, so that the relay keeps reading the
// client until its end.
func (s *replayStream) SendMsg(m any) error {
	s.mu.Lock()
	s.sent++
	switch {
	case s.sent == 1:
		if f, ok := m.(*grpcrelay.Frame); ok && !s.settled {
			s.first = f.Retain()
		}
	default:
		s.dropFirstLocked()
		s.markSendDone()
	}
	cur, mayReplay := s.cur, s.sent == 1 && s.first != nil
	s.mu.Unlock()
	err := cur.SendMsg(m)
	if errors.Is(err, io.EOF) && mayReplay {
		return nil
	}
	return err
}

// dropFirstLocked releases the kept first message. s.mu must be held.
func (s *replayStream) dropFirstLocked() {
	if s.first != nil {
		s.first.Free()
		s.first = nil
	}
}

// settle marks that no replay can happen any more (a response arrived, or the call ended without one) and releases
// the kept first message; a first message sent after this is not kept. Called by the receiving goroutine.
func (s *replayStream) settle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled = true
	s.dropFirstLocked()
}

// CloseSend closes the client's side.
func (s *replayStream) CloseSend() error {
	s.mu.Lock()
	s.halfDone = true
	cur := s.cur
	s.mu.Unlock()
	s.markSendDone()
	return cur.CloseSend()
}

// RecvMsg receives the next response message, replaying the call once if kedge rejected the proxy token.
func (s *replayStream) RecvMsg(m any) error {
	err := s.stream().RecvMsg(m)
	if err == nil {
		if !s.received {
			s.received = true
			s.settle()
		}
		return nil
	}
	if s.received || s.replayed || !kedgeUnauthorized(err, s.stream().Trailer()) {
		s.settle()
		return err
	}
	s.replayed = true
	s.c.p.invalidate(s.c.proxyAuth, s.c.proxyToken)
	next, ok := s.replay()
	s.settle()
	if !ok {
		return err
	}
	return next.RecvMsg(m)
}

// kedgeUnauthorized reports whether err is kedge's own refusal of the proxy token: Unauthenticated with
// x-kedge-error-type "unauthorized" in the trailer. A backend's Unauthenticated (about the backend token or its own
// auth) carries no such marker, as kedge strips it from backend metadata; it neither drops the proxy token nor
// replays the call.
func kedgeUnauthorized(err error, trailer metadata.MD) bool {
	if status.Code(err) != codes.Unauthenticated {
		return false
	}
	v := trailer.Get(wire.MetadataKedgeErrorType)
	return len(v) == 1 && v[0] == string(wire.ErrUnauthorized)
}

// replay opens the second attempt, if the client's request is complete and at most one message long.
func (s *replayStream) replay() (grpc.ClientStream, bool) {
	timer := time.NewTimer(s.c.p.retryWait)
	defer timer.Stop()
	select {
	case <-s.sendDone:
	case <-timer.C:
		return nil, false
	case <-s.ctx.Done():
		return nil, false
	}
	s.mu.Lock()
	sent, first, half := s.sent, s.first, s.halfDone
	s.first = nil // this goroutine owns it now: sent below, or freed by the deferred Free
	s.mu.Unlock()
	if first != nil {
		defer first.Free() // a no-op once sent: sending empties the Frame
	}
	if !half || sent > 1 || (sent == 1 && first == nil) {
		return nil, false
	}
	tok, err := s.c.p.token(s.ctx, s.c.proxyAuth)
	if err != nil || tok == s.c.proxyToken {
		// No fresher token (the source refreshes at most so often): the same call would be refused again.
		return nil, false
	}
	s.c.proxyToken = tok // only this goroutine uses the call's token from now on
	ctx := metadata.NewOutgoingContext(s.ctx, s.c.metadata())
	next, err := s.c.cc.NewStream(ctx, s.desc, s.c.method, s.opts...)
	if err != nil {
		return nil, false
	}
	if sent == 1 {
		if err := next.SendMsg(first); err != nil && !errors.Is(err, io.EOF) {
			return nil, false
		}
	}
	if err := next.CloseSend(); err != nil {
		return nil, false
	}
	s.mu.Lock()
	s.cur = next
	s.mu.Unlock()
	s.c.p.retries.Inc()
	s.c.p.log.Info("kedge rejected the proxy token; replayed the gRPC call with a fresh one",
		"auth_source", s.c.proxyAuth, logging.FieldGRPC, s.c.method, "authority", s.c.authority)
	return next, true
}

// Header returns the current attempt's header metadata.
func (s *replayStream) Header() (metadata.MD, error) { return s.stream().Header() }

// Trailer returns the current attempt's trailer metadata.
func (s *replayStream) Trailer() metadata.MD { return s.stream().Trailer() }

// Context returns the current attempt's context.
func (s *replayStream) Context() context.Context { return s.stream().Context() }
