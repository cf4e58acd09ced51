package grpcrelay

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Frame is one message in transit: the bytes of its encoding. The codec fills a Frame when a message arrives and
// empties it when the message is sent, so the bytes are never decoded; a large message is held by reference to
// gRPC's receive buffers, not copied (keep). A Frame is used by one goroutine at a time.
type Frame struct {
	data mem.BufferSlice
}

// Len is the size of the message in bytes.
func (f *Frame) Len() int { return f.data.Len() }

// Retain returns a second Frame holding the same bytes, for a caller that may send the message again (winch keeps
// a call's first message to replay it). Send or Free each Frame once.
func (f *Frame) Retain() *Frame {
	f.data.Ref()
	return &Frame{data: f.data}
}

// Free releases the bytes; the Frame is empty afterwards. Freeing an empty Frame does nothing.
func (f *Frame) Free() {
	f.data.Free()
	f.data = nil
}

// codec hands Frames over as they came and encodes anything else as protobuf, so a server built with ServerOption
// still serves ordinary services. Its name is empty: a backend stream opened with it keeps the client's content
// type ("application/grpc" unless the client named a subtype, which callOptions passes on).
type codec struct{}

var (
	_          encoding.CodecV2 = codec{}
	protoCodec                  = encoding.GetCodecV2(protoenc.Name)
)

// Marshal gives gRPC the Frame's reference to its bytes (gRPC frees it once they are written), leaving the Frame
// empty.
func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		data := f.data
		f.data = nil
		return data, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal keeps the received bytes in the Frame (gRPC frees its own reference when Unmarshal returns).
func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.data.Free()
		f.data = keep(data)
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

// A received message is held by reference to gRPC's receive buffers only when it is at least shareMin bytes and
// its buffers hold at least shareMinPerBuffer bytes each on average; anything else is copied.
const (
	shareMin          = 32 << 10
	shareMinPerBuffer = 8 << 10
)

// maxPooledCopy is the largest copy taken from gRPC's buffer pool, whose tiers (4, 16, 32 KiB) are then at most four
// times the message.
const maxPooledCopy = 32 << 10

var pool = mem.DefaultBufferPool()

// keep returns the bytes of a received message for a Frame to hold. gRPC receives each HTTP/2 DATA frame into a
// pooled buffer sized for the frame (16 KiB on a ServeHTTP stream whatever arrived; the padding included), so a
// message of a few bytes may sit in a buffer a thousand times its size. Holding such buffers for every message
// queued towards a slow peer would let a client pin memory far beyond what flow control (which counts message
// bytes) admits: small or sparse messages are copied into a buffer of their own size. Large, dense ones are shared,
// which is where a copy would cost.
func keep(data mem.BufferSlice) mem.BufferSlice {
	n := data.Len()
	switch {
	case n == 0:
		return nil
	case n >= shareMin && n/len(data) >= shareMinPerBuffer:
		data.Ref()
		return data
	case mem.IsBelowBufferPoolingThreshold(n) || n > maxPooledCopy:
		// gRPC's pool rounds a size up to its next tier, and above 32 KiB that is 1 MiB: such copies are allocated
		// at their size (and left to the garbage collector).
		b := make(mem.SliceBuffer, n)
		data.CopyTo(b)
		return mem.BufferSlice{b}
	}
	buf := pool.Get(n)
	data.CopyTo(*buf)
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}
}

func (codec) Name() string { return "" }

// ServerOption makes a grpc.Server hand every received message to its handlers as it came: a relaying server must
// have it, as Relay reads the client's messages into Frames. Handlers of registered services still get decoded
// protobuf messages.
func ServerOption() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{})
}
