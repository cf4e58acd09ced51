package testutil

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// maxPayload bounds requested payload sizes; gRPC's default message limit is 4 MiB anyway.
const maxPayload = 16 << 20

// GRPCBackend is a real grpc.Server on 127.0.0.1 implementing grpc.testing.TestService. Every call answers with
// header metadata "x-backend: <name>" and trailer "x-trailer: <name>"; UnaryCall and the streaming calls return
// the status in the request's response_status when its code is not OK. Responses carry zero-filled payloads of the
// requested sizes; SimpleResponse.server_id and hostname are the backend name.
type GRPCBackend struct {
	// Name is the backend name it reports.
	Name string
	// Addr is "127.0.0.1:port".
	Addr string
	// Server is the running server, for tests that stop it themselves (GracefulStop, Stop).
	Server *grpc.Server

	calls  atomic.Int64
	mu     sync.Mutex
	lastMD metadata.MD // incoming metadata of the most recent call; guarded by mu
	stop   sync.Once
	served chan struct{}
}

var _ testpb.TestServiceServer = (*grpcService)(nil)

// NewGRPCBackend starts a TestService server named name; t.Cleanup stops it. opts are passed to grpc.NewServer
// (e.g. grpc.Creds for TLS).
func NewGRPCBackend(t testing.TB, name string, opts ...grpc.ServerOption) *GRPCBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: gRPC listener: %v", err)
	}
	b := &GRPCBackend{Name: name, Addr: ln.Addr().String(), Server: grpc.NewServer(opts...), served: make(chan struct{})}
	testpb.RegisterTestServiceServer(b.Server, &grpcService{b: b})
	go func() { defer close(b.served); _ = b.Server.Serve(ln) }()
	t.Cleanup(b.Stop)
	return b
}

// Calls returns how many RPCs the backend has received.
func (b *GRPCBackend) Calls() int64 { return b.calls.Load() }

// LastMetadata returns a copy of the incoming metadata of the most recent call (nil before the first one).
func (b *GRPCBackend) LastMetadata() metadata.MD {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastMD.Copy()
}

// Stop closes the server and every connection and waits for Serve to return. Safe to call more than once.
func (b *GRPCBackend) Stop() {
	b.stop.Do(func() {
		b.Server.Stop()
		<-b.served
	})
}

type grpcService struct {
	testpb.UnimplementedTestServiceServer
	b *GRPCBackend
}

// begin records the call and sets the header and trailer every response carries.
func (s *grpcService) begin(ctx context.Context) {
	s.b.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	s.b.mu.Lock()
	s.b.lastMD = md.Copy()
	s.b.mu.Unlock()
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", s.b.Name))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", s.b.Name))
}

func (s *grpcService) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	s.begin(ctx)
	return &testpb.Empty{}, nil
}

func (s *grpcService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.begin(ctx)
	if err := requestedStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	p, err := payload(req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &testpb.SimpleResponse{Payload: p, ServerId: s.b.Name, Hostname: s.b.Name}, nil
}

func (s *grpcService) CacheableUnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return s.UnaryCall(ctx, req)
}

func (s *grpcService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	s.begin(stream.Context())
	if err := s.respond(stream.Context(), req, stream.Send); err != nil {
		return err
	}
	return requestedStatus(req.GetResponseStatus())
}

func (s *grpcService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	s.begin(stream.Context())
	return sumInput(stream)
}

// sumInput receives a client-streaming call to its end and answers the sum of the payload sizes.
func sumInput(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var total int32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		total += int32(len(req.GetPayload().GetBody()))
	}
}

func (s *grpcService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	s.begin(stream.Context())
	// Send the header now: a client that waits for headers before its first message must not deadlock.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := requestedStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		if err := s.respond(stream.Context(), req, stream.Send); err != nil {
			return err
		}
	}
}

func (s *grpcService) HalfDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	s.begin(stream.Context())
	var reqs []*testpb.StreamingOutputCallRequest
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if err := requestedStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		if err := s.respond(stream.Context(), req, stream.Send); err != nil {
			return err
		}
	}
	return nil
}

// respond sends one message per response parameter, honouring the requested interval.
func (s *grpcService) respond(ctx context.Context, req *testpb.StreamingOutputCallRequest, send func(*testpb.StreamingOutputCallResponse) error) error {
	for _, rp := range req.GetResponseParameters() {
		if us := rp.GetIntervalUs(); us > 0 {
			t := time.NewTimer(time.Duration(us) * time.Microsecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		p, err := payload(rp.GetSize())
		if err != nil {
			return err
		}
		if err := send(&testpb.StreamingOutputCallResponse{Payload: p}); err != nil {
			return err
		}
	}
	return nil
}

func payload(size int32) (*testpb.Payload, error) {
	if size < 0 || size > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "payload size %d out of range 0..%d", size, maxPayload)
	}
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: make([]byte, size)}, nil
}

func requestedStatus(st *testpb.EchoStatus) error {
	if st == nil || codes.Code(st.GetCode()) == codes.OK {
		return nil
	}
	return status.Error(codes.Code(st.GetCode()), st.GetMessage())
}

// GatedService is a TestService whose client-streaming call (StreamingInputCall) reads nothing until the gate armed
// last opens, then answers the sum of the payload sizes it received: a backend that stalls, then catches up. Before
// the first Arm it reads at once.
type GatedService struct {
	testpb.UnimplementedTestServiceServer
	mu   sync.Mutex
	gate chan struct{}
}

// Arm makes the calls that start from now on wait until open is called (more than once is fine).
func (s *GatedService) Arm() (open func()) {
	g := make(chan struct{})
	s.mu.Lock()
	s.gate = g
	s.mu.Unlock()
	return sync.OnceFunc(func() { close(g) })
}

func (s *GatedService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		select {
		case <-g:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
	return sumInput(stream)
}
