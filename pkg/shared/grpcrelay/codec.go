package grpcrelay

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Frame is one message in transit: the bytes of its encoding. The codec fills a Frame when a message arrives and
// empties it when the message is sent, so the bytes are never decoded, and are not copied either unless gRPC's
// receive buffers are much larger than the message (keep). A Frame is used by one goroutine at a time.
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

// maxPinned bounds the memory a held message of up to maxPooledCopy bytes may keep alive, as a multiple of its size:
// gRPC's receive buffers are shared only while they are at most this much larger than the message, as a copy from
// gRPC's pool (tiers of 4, 16 and 32 KiB above 1 KiB) may be too. A larger message is shared only while its buffers
// are at most a quarter larger than it (a copy of it is allocated at its size).
const maxPinned = 4

// maxPooledCopy is the largest copy taken from gRPC's buffer pool: above 32 KiB its next tier is 1 MiB.
const maxPooledCopy = 32 << 10

var pool = mem.DefaultBufferPool()

// keep returns the bytes of a received message for a Frame to hold. gRPC receives each HTTP/2 DATA frame into a
// buffer sized for the frame (a pooled one rounded up to its tier; on a ServeHTTP stream 16 KiB whatever arrived;
// padding included), and a message is a slice of such buffers. Holding a buffer far larger than its message for
// every message queued towards a slow peer would let a client pin memory far beyond what the send side admits (gRPC
// limits a stream's queued messages by their length). So a message is shared, without a copy, only when the buffers
// it keeps alive from its first byte on are not much larger than it (maxPinned): a small message gRPC read into an
// exact-size buffer, a 1 KiB message in its frame's 4 KiB buffer, a large one filling its frames. Bytes before its
// first byte can only be earlier messages (and its own 5-byte header), which the send side counted while they were
// queued. Any other message is copied into a buffer of its own size.
func keep(data mem.BufferSlice) mem.BufferSlice {
	n := data.Len()
	if n == 0 {
		return nil
	}
	pinned := 0
	for _, b := range data {
		pinned += cap(b.ReadOnlyData())
	}
	if pinned <= maxPinned*n && (n <= maxPooledCopy || pinned <= n+n/4) {
		data.Ref()
		return data
	}
	if mem.IsBelowBufferPoolingThreshold(n) || n > maxPooledCopy {
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
