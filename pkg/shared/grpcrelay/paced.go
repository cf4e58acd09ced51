package grpcrelay

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"net/http"
	"sync"
)

// What a paced body lets grpc.Server.ServeHTTP's reader hold that Relay has not taken yet, once at least one whole
// message is waiting: so many messages, or so many bytes. Below both, and while no whole message waits (the call
// needs the next bytes to go on), the body reads on.
const (
	pacedMaxMessages = 32
	pacedMaxBytes    = 1 << 20
)

// msgPrefixLen is the length of gRPC's message prefix on the wire: a compression flag and a 4-byte length.
const msgPrefixLen = 5

// DefaultMaxRecvMsgSize is grpc-go's default limit on a received message, which kedge keeps.
const DefaultMaxRecvMsgSize = 4 << 20

type pacedKey struct{}

// PaceBody returns a shallow copy of r, a gRPC request about to be served by grpc.Server.ServeHTTP, whose body gRPC
// reads no further ahead of Relay than it must.
//
// ServeHTTP's transport reads the request body on a goroutine of its own, each read into a new 16 KiB buffer that
// it queues for the call without a bound, and net/http hands the client its flow-control window back as soon as the
// body is read. A client trickling small DATA frames to a backend that does not read could so make kedge hold 16 KiB
// per frame. The paced body:
//   - fills each read until a message is complete or the buffer is full, so the buffers gRPC queues hold at least
//     one whole message or 16 KiB each: trickled bytes cost their size, not a buffer per frame;
//   - stops reading while Relay has not taken pacedMaxMessages whole messages, or pacedMaxBytes with at least one
//     whole message among them, so that the client's window closes and it waits, as it would on grpc-go's own
//     transport.
//
// It never stops while no whole message waits and the current one is within maxMsg, the server's receive limit
// (grpc.MaxRecvMsgSize): then the call cannot go on without the next bytes, and a client always sends a message to
// its end. A message whose prefix claims more than maxMsg stops the reading at its prefix: gRPC refuses it
// (ResourceExhausted) once the relay asks for it, which may be late, while the relay waits on the backend.
//
// Every call on the request must go through Relay, which tells the body what it took: a handler that receives the
// client's messages itself would find reading stopped after pacedMaxMessages of them.
func PaceBody(r *http.Request, maxMsg int) *http.Request {
	b := &pacedBody{body: r.Body, maxMsg: uint32(min(max(int64(maxMsg), 0), math.MaxUint32))}
	b.cond.L = &b.mu
	r = r.WithContext(context.WithValue(r.Context(), pacedKey{}, b))
	r.Body = b
	return r
}

// PacedHandler serves h, a grpc.Server that passes every call to Relay and receives messages of at most maxMsg
// bytes, with each request's body paced by PaceBody.
func PacedHandler(h http.Handler, maxMsg int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, PaceBody(r, maxMsg)) })
}

// pacedFrom returns the paced body of the request a call's context comes from, or nil.
func pacedFrom(ctx context.Context) *pacedBody {
	b, _ := ctx.Value(pacedKey{}).(*pacedBody)
	return b
}

// pacedBody is the body PaceBody installs. Read is called by one goroutine (gRPC's reader); taken by Relay's
// client-side goroutine after each message it received; Close by gRPC once the call is over.
type pacedBody struct {
	body   io.ReadCloser
	maxMsg uint32

	// The message framing of the bytes Read returned, used by Read only.
	prefix    [msgPrefixLen]byte
	prefixLen int    // how much of the current message's prefix was read
	left      uint32 // how much of its payload is still to come, once the prefix is complete
	oversize  bool   // a prefix claimed more than maxMsg: nothing more is read

	mu     sync.Mutex
	cond   sync.Cond // signalled by taken and Close
	read   int64     // bytes Read returned
	ends   []int64   // ends[head:]: where each whole message Relay has not taken ends, in bytes read
	head   int
	done   int64 // where the last message Relay took ends
	closed bool
}

// Read waits while the call holds enough unread messages, then reads until a message is complete, p is full, a
// prefix claims more than maxMsg or the body ends.
func (b *pacedBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	for !b.closed && b.full() {
		b.cond.Wait()
	}
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n := 0
	for {
		m, err := b.body.Read(p[n:])
		stop := b.note(p[n : n+m])
		n += m
		if err != nil || stop || n == len(p) {
			return n, err
		}
	}
}

// full reports whether the call holds enough unread messages for Read to wait, or a prefix over maxMsg. b.mu must
// be held.
func (b *pacedBody) full() bool {
	waiting := len(b.ends) - b.head
	return b.oversize || waiting > 0 && (waiting >= pacedMaxMessages || b.read-b.done >= pacedMaxBytes)
}

// note follows the message framing over p, the bytes just read, and reports whether a message ended in them or a
// prefix claimed more than maxMsg.
func (b *pacedBody) note(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	start := b.read
	b.read += int64(len(p))
	complete := false
	for i := 0; i < len(p); {
		if b.prefixLen < msgPrefixLen {
			n := copy(b.prefix[b.prefixLen:], p[i:])
			b.prefixLen += n
			i += n
			if b.prefixLen < msgPrefixLen {
				break
			}
			b.left = binary.BigEndian.Uint32(b.prefix[1:])
			if b.left > b.maxMsg {
				b.oversize = true
				return true
			}
		}
		n := uint32(min(uint64(len(p)-i), uint64(b.left)))
		i += int(n)
		b.left -= n
		if b.left == 0 {
			b.ends = append(b.ends, start+int64(i))
			b.prefixLen = 0
			complete = true
		}
	}
	return complete
}

// taken records that Relay received the next message.
func (b *pacedBody) taken() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.head == len(b.ends) {
		return // not a message Read saw end; gRPC only gives whole messages, so this does not happen
	}
	b.done = b.ends[b.head]
	b.head++
	if b.head == len(b.ends) || b.head >= 1024 {
		b.ends = b.ends[:copy(b.ends, b.ends[b.head:])]
		b.head = 0
	}
	if !b.full() {
		b.cond.Signal()
	}
}

// Close ends a waiting Read and closes the request body.
func (b *pacedBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	return b.body.Close()
}
