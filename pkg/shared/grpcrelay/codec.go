package grpcrelay

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Frame is one message in transit: the bytes of its encoding, held by reference to gRPC's receive buffers. The
// codec fills a Frame when a message arrives and empties it when the message is sent, so the bytes are neither
// decoded nor copied on the way through. A Frame is used by one goroutine at a time.
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

// Unmarshal takes its own reference to the received bytes (gRPC frees its reference when Unmarshal returns).
func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.data.Free()
		data.Ref()
		f.data = data
		return nil
	}
	return protoCodec.Unmarshal(data, v)
}

func (codec) Name() string { return "" }

// ServerOption makes a grpc.Server hand every received message to its handlers as it came: a relaying server must
// have it, as Relay reads the client's messages into Frames. Handlers of registered services still get decoded
// protobuf messages.
func ServerOption() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{})
}
