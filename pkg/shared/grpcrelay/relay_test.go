package grpcrelay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// echoBackend is a TestService whose answers carry the request's bytes back, so a test sees whether a message
// arrived intact. It records each call's content type and whether its context ended.
type echoBackend struct {
	testpb.UnimplementedTestServiceServer
	quiet        bool // records nothing (benchmarks)
	mu           sync.Mutex
	contentTypes []string
	ended        chan struct{} // receives once per FullDuplexCall whose context ended
}

func (b *echoBackend) begin(ctx context.Context) {
	if !b.quiet {
		md, _ := metadata.FromIncomingContext(ctx)
		b.mu.Lock()
		b.contentTypes = append(b.contentTypes, strings.Join(md.Get("content-type"), ","))
		b.mu.Unlock()
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-header", "h", "x-secret", "from-backend"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t", "x-secret", "from-backend"))
}

func (b *echoBackend) lastContentType() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.contentTypes[len(b.contentTypes)-1]
}

// UnaryCall echoes the payload, or fails with the requested status (header and trailer still set).
func (b *echoBackend) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	b.begin(ctx)
	if st := req.GetResponseStatus(); st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

// FullDuplexCall sends its header at once, then echoes every message until the client closes its side.
func (b *echoBackend) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	b.begin(stream.Context())
	defer func() {
		if stream.Context().Err() != nil && b.ended != nil {
			b.ended <- struct{}{}
		}
	}()
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
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// relayEnv is a client -> relaying server -> backend chain on 127.0.0.1. relayErrs receives what each Relay call
// returned.
type relayEnv struct {
	backend   *echoBackend
	client    testpb.TestServiceClient
	relayErrs chan error
}

func newRelayEnv(t *testing.T, o Options, viaHTTP bool) *relayEnv {
	t.Helper()
	e := &relayEnv{backend: &echoBackend{ended: make(chan struct{}, 8)}, relayErrs: make(chan error, 64)}
	backendAddr := serve(t, grpc.NewServer(), func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, e.backend) })
	e.client = testpb.NewTestServiceClient(dial(t, e.relayServer(t, backendAddr, o, viaHTTP)))
	return e
}

// relayServer starts a relaying server in front of backendAddr and returns its address. viaHTTP serves it with
// grpc.Server.ServeHTTP behind net/http's unencrypted HTTP/2 and PaceBody (kedge's HTTPS port does the same over
// TLS), whose transport fails differently from grpc.Server.Serve's.
func (e *relayEnv) relayServer(t *testing.T, backendAddr string, o Options, viaHTTP bool, opts ...grpc.ServerOption) string {
	t.Helper()
	backendConn := dial(t, backendAddr)

	handler := func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		in, _ := metadata.FromIncomingContext(ss.Context())
		out := metadata.MD{}
		for _, k := range []string{"x-client"} {
			if v := in.Get(k); len(v) > 0 {
				out[k] = v
			}
		}
		err := Relay(metadata.NewOutgoingContext(ss.Context(), out), ss, backendConn, method, &o)
		e.relayErrs <- err
		return err
	}
	rs := grpc.NewServer(append(opts, grpc.UnknownServiceHandler(handler), ServerOption())...)
	if !viaHTTP {
		return serve(t, rs, nil)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: PacedHandler(rs, DefaultMaxRecvMsgSize), Protocols: new(http.Protocols), ReadHeaderTimeout: 10 * time.Second}
	hs.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

func serve(t testing.TB, s *grpc.Server, register func(*grpc.Server)) string {
	t.Helper()
	if register != nil {
		register(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func body(i, n int) []byte {
	b := bytes.Repeat([]byte(fmt.Sprintf("%08d", i)), n/8+1)
	return b[:n]
}

func TestRelayUnaryCarriesBytesAndMetadata(t *testing.T) {
	t.Parallel()
	for _, viaHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeHTTP=%v", viaHTTP), func(t *testing.T) {
			t.Parallel()
			testRelayUnary(t, newRelayEnv(t, Options{}, viaHTTP))
		})
	}
}

func testRelayUnary(t *testing.T, e *relayEnv) {
	// Sizes around gRPC's buffer boundaries and beyond one HTTP/2 frame, many calls at once: a buffer handed back
	// to gRPC's pool too early would show up as another call's bytes.
	sizes := []int{0, 1, 1023, 16 << 10, 16<<10 + 1, 100 << 10, 1 << 20}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := body(i, sizes[i%len(sizes)])
			var header, trailer metadata.MD
			ctx := metadata.AppendToOutgoingContext(callCtx(t), "x-client", "c")
			resp, err := e.client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: want}},
				grpc.Header(&header), grpc.Trailer(&trailer))
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			if got := resp.GetPayload().GetBody(); !bytes.Equal(got, want) {
				t.Errorf("call %d: %d bytes back, want the %d sent", i, len(got), len(want))
			}
			if header.Get("x-header")[0] != "h" || trailer.Get("x-trailer")[0] != "t" {
				t.Errorf("call %d: header %v trailer %v, want the backend's", i, header, trailer)
			}
		}()
	}
	wg.Wait()
	for range 40 {
		if err := <-e.relayErrs; err != nil {
			t.Errorf("Relay returned %v, want nil", err)
		}
	}
}

func TestRelayStreamsBothWays(t *testing.T) {
	t.Parallel()
	for _, viaHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeHTTP=%v", viaHTTP), func(t *testing.T) {
			t.Parallel()
			testRelayStreams(t, newRelayEnv(t, Options{}, viaHTTP))
		})
	}
}

func testRelayStreams(t *testing.T, e *relayEnv) {
	stream, err := e.client.FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// The backend sends its header before any message; the client waits for it before sending, which deadlocks a
	// relay that holds headers back until the first message.
	header, err := stream.Header()
	if err != nil || header.Get("x-header")[0] != "h" {
		t.Fatalf("header %v, %v; want the backend's before any message", header, err)
	}
	for i := range 50 {
		want := body(i, 1+i*997)
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: want}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), want) {
			t.Fatalf("message %d changed on the way", i)
		}
	}
	// A burst of messages before the client reads any answer (the echo keeps up, so pacing need not stop reading;
	// TestPacedBodyWaitsAndResumes has a backend that stalls).
	const burst = 4 * pacedMaxMessages
	for i := range burst {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body(i, 10)}}); err != nil {
			t.Fatalf("burst send %d: %v", i, err)
		}
	}
	for i := range burst {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("burst recv %d: %v", i, err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), body(i, 10)) {
			t.Fatalf("burst message %d changed on the way", i)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want io.EOF", err)
	}
	if got := stream.Trailer().Get("x-trailer"); len(got) != 1 || got[0] != "t" {
		t.Errorf("trailer %v, want the backend's", stream.Trailer())
	}
	if err := <-e.relayErrs; err != nil {
		t.Errorf("Relay returned %v, want nil", err)
	}
}

func TestRelayErrorStatusKeepsHeader(t *testing.T) {
	t.Parallel()
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("HeaderWithFirstMessage=%v", late), func(t *testing.T) {
			t.Parallel()
			e := newRelayEnv(t, Options{HeaderWithFirstMessage: late}, false)
			var header, trailer metadata.MD
			_, err := e.client.UnaryCall(callCtx(t), &testpb.SimpleRequest{
				ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"},
			}, grpc.Header(&header), grpc.Trailer(&trailer))
			if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such thing" {
				t.Errorf("status %v, want the backend's NotFound", err)
			}
			// A response without messages still carries the backend's header.
			if len(header.Get("x-header")) != 1 || len(trailer.Get("x-trailer")) != 1 {
				t.Errorf("header %v trailer %v, want the backend's", header, trailer)
			}
			if err := <-e.relayErrs; status.Code(err) != codes.NotFound {
				t.Errorf("Relay returned %v, want the backend's status", err)
			}
		})
	}
}

func TestRelayRewritesMetadata(t *testing.T) {
	t.Parallel()
	e := newRelayEnv(t, Options{Metadata: func(md metadata.MD) metadata.MD {
		md = md.Copy()
		delete(md, "x-secret")
		return md
	}}, false)
	for _, fail := range []bool{false, true} {
		var header, trailer metadata.MD
		req := &testpb.SimpleRequest{}
		if fail {
			req.ResponseStatus = &testpb.EchoStatus{Code: int32(codes.Aborted)}
		}
		_, _ = e.client.UnaryCall(callCtx(t), req, grpc.Header(&header), grpc.Trailer(&trailer))
		if len(header.Get("x-secret")) != 0 || len(trailer.Get("x-secret")) != 0 {
			t.Errorf("failing=%v: header %v trailer %v still carry what Options.Metadata drops", fail, header, trailer)
		}
		if len(header.Get("x-header")) != 1 || len(trailer.Get("x-trailer")) != 1 {
			t.Errorf("failing=%v: header %v trailer %v lost what Options.Metadata keeps", fail, header, trailer)
		}
	}
}

func TestRelayHeaderHook(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls int
	)
	e := newRelayEnv(t, Options{Header: func(cs grpc.ClientStream) {
		mu.Lock()
		defer mu.Unlock()
		calls++
	}}, false)
	if _, err := e.client.UnaryCall(callCtx(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	<-e.relayErrs
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("Header hook called %d times, want once", calls)
	}
}

func TestRelayClientCancelEndsBackend(t *testing.T) {
	t.Parallel()
	for _, viaHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeHTTP=%v", viaHTTP), func(t *testing.T) {
			t.Parallel()
			testRelayCancel(t, newRelayEnv(t, Options{}, viaHTTP))
		})
	}
}

func testRelayCancel(t *testing.T, e *relayEnv) {
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := e.client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-e.backend.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the backend's stream did not end after the client cancelled")
	}
	if err := <-e.relayErrs; status.Code(err) != codes.Canceled {
		t.Errorf("Relay returned %v, want Canceled", err)
	}
}

// TestRelayClientGoneWhileStreaming cancels a call while the backend streams answers, on both server transports:
// the relay reports the client's cancellation, not the error its next send to the gone client got.
func TestRelayClientGoneWhileStreaming(t *testing.T) {
	t.Parallel()
	for _, viaHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeHTTP=%v", viaHTTP), func(t *testing.T) {
			t.Parallel()
			e := &relayEnv{relayErrs: make(chan error, 4)}
			backend := testutil.NewGRPCBackend(t, "streaming")
			client := testpb.NewTestServiceClient(dial(t, e.relayServer(t, backend.Addr, Options{}, viaHTTP)))
			ctx, cancel := context.WithCancel(callCtx(t))
			params := make([]*testpb.ResponseParameters, 2000)
			for i := range params {
				params[i] = &testpb.ResponseParameters{Size: 16 << 10}
			}
			stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := stream.Recv(); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			if err := <-e.relayErrs; status.Code(err) != codes.Canceled {
				t.Errorf("Relay returned %v, want Canceled", err)
			}
		})
	}
}

func TestRelayOversizedClientMessage(t *testing.T) {
	t.Parallel()
	for _, viaHTTP := range []bool{false, true} {
		t.Run(fmt.Sprintf("ServeHTTP=%v", viaHTTP), func(t *testing.T) {
			t.Parallel()
			testRelayOversized(t, newRelayEnv(t, Options{}, viaHTTP))
		})
	}
}

func testRelayOversized(t *testing.T, e *relayEnv) {
	stream, err := e.client.FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	big := &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 5<<20)}} // over 4 MiB
	if err := stream.Send(big); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("client got %v, want ResourceExhausted", err)
	}
	// The relay reports the client side's status, not the cancellation it caused on the backend stream.
	if err := <-e.relayErrs; status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Relay returned %v, want ResourceExhausted", err)
	}
}

// subtypeCodec is protobuf under another name, standing for a codec (JSON, say) that the relay knows nothing of.
type subtypeCodec struct{}

func (subtypeCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }
func (subtypeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return protoCodec.Unmarshal(data, v)
}
func (subtypeCodec) Name() string { return "relaytest" }

func init() { encoding.RegisterCodecV2(subtypeCodec{}) }

func TestRelayKeepsContentSubtype(t *testing.T) {
	t.Parallel()
	e := newRelayEnv(t, Options{}, false)
	tests := []struct {
		opts []grpc.CallOption
		want string
	}{
		{nil, "application/grpc"},
		{[]grpc.CallOption{grpc.CallContentSubtype("proto")}, "application/grpc+proto"},
		{[]grpc.CallOption{grpc.CallContentSubtype("relaytest")}, "application/grpc+relaytest"},
	}
	for _, tt := range tests {
		want := body(7, 300)
		resp, err := e.client.UnaryCall(callCtx(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: want}}, tt.opts...)
		if err != nil {
			t.Fatalf("%s: %v", tt.want, err)
		}
		if !bytes.Equal(resp.GetPayload().GetBody(), want) {
			t.Errorf("%s: payload changed", tt.want)
		}
		if got := e.backend.lastContentType(); got != tt.want {
			t.Errorf("backend saw content-type %q, want %q", got, tt.want)
		}
	}
}

func TestContentSubtype(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"application/grpc":       "",
		"application/grpc+proto": "proto",
		"application/grpc;json":  "json",
		"Application/GRPC+JSON":  "json",
		"application/grpc+":      "",
		"application/grpcx":      "",
		"text/plain":             "",
	}
	for in, want := range tests {
		if got := contentSubtype([]string{in}); got != want {
			t.Errorf("contentSubtype(%q) = %q, want %q", in, got, want)
		}
	}
	if got := contentSubtype([]string{"application/grpc+a", "application/grpc+b"}); got != "" {
		t.Errorf("two content types gave %q, want none", got)
	}
}

func TestClientStatus(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want codes.Code
	}{
		{"no failure", cancelled, nil, codes.OK},
		{"read status", t.Context(), status.Error(codes.ResourceExhausted, "big"), codes.ResourceExhausted},
		{"client cancelled", cancelled, errors.New("stream reset"), codes.Canceled},
		{"plain error", t.Context(), errors.New("boom"), codes.Internal},
	}
	for _, tt := range tests {
		if got := status.Code(clientStatus(tt.ctx, tt.err)); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestServerOptionKeepsServices checks that a relaying server still decodes messages for services it registers.
func TestServerOptionKeepsServices(t *testing.T) {
	t.Parallel()
	b := testutil.NewGRPCBackend(t, "plain", ServerOption())
	client := testpb.NewTestServiceClient(dial(t, b.Addr))
	resp, err := client.UnaryCall(callCtx(t), &testpb.SimpleRequest{ResponseSize: 10})
	if err != nil || len(resp.GetPayload().GetBody()) != 10 || resp.GetServerId() != "plain" {
		t.Fatalf("UnaryCall on a registered service: %v, %v", resp, err)
	}
}

// BenchmarkRelayUnary is one small unary call through the relay (client, relay and backend in this process, over
// loopback): allocations per call are the relay's and gRPC's on both hops.
func BenchmarkRelayUnary(b *testing.B) {
	backend := &echoBackend{quiet: true}
	backendConn := dial(b, serve(b, grpc.NewServer(), func(s *grpc.Server) { testpb.RegisterTestServiceServer(s, backend) }))
	o := &Options{}
	relay := func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		return Relay(ss.Context(), ss, backendConn, method, o)
	}
	relayAddr := serve(b, grpc.NewServer(ServerOption(), grpc.UnknownServiceHandler(relay)), nil)
	client := testpb.NewTestServiceClient(dial(b, relayAddr))
	req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 128)}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.UnaryCall(b.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// TestKeep checks which received messages a Frame holds by reference and which it copies: a message is shared only
// while the buffers it keeps alive are at most maxPinned times its size, and a large one only while they are dense.
func TestKeep(t *testing.T) {
	t.Parallel()
	pool := mem.DefaultBufferPool()
	// buffers returns a BufferSlice of n pooled buffers of size each, holding used bytes apiece, as gRPC's receive
	// path leaves them (a 16 KiB frame buffer with a few bytes of message in it).
	buffers := func(n, size, used int) mem.BufferSlice {
		var s mem.BufferSlice
		for i := range n {
			b := pool.Get(size)
			for j := range *b {
				(*b)[j] = byte(i)
			}
			*b = (*b)[:used]
			s = append(s, mem.NewBuffer(b, pool))
		}
		return s
	}
	exact := func(n int) mem.BufferSlice { return mem.BufferSlice{make(mem.SliceBuffer, n)} }
	// afterHeader is a message of n bytes after the 5-byte gRPC message header in one pooled frame buffer.
	afterHeader := func(n int) mem.BufferSlice {
		b := pool.Get(5 + n)
		_, msg := mem.SplitUnsafe(mem.NewBuffer(b, pool), 5)
		return mem.BufferSlice{msg}
	}
	tests := []struct {
		name   string
		in     mem.BufferSlice
		shared bool
	}{
		{"small message in an exact buffer", exact(300), true},
		{"1 KiB message after its header in a 4 KiB buffer", afterHeader(1030), true},
		{"small message in a frame buffer", buffers(1, 16<<10, 6), false},
		{"600 bytes in a 4 KiB buffer", buffers(1, 4<<10, 600), false},
		{"large message of sparse buffers", buffers(64, 16<<10, 600), false},
		{"mid-size message of sparse buffers", buffers(8, 16<<10, 600), false},
		{"large dense message", buffers(4, 16<<10, 16<<10), true},
		{"large message of 4097-byte frames in 16 KiB buffers", buffers(16, 16<<10, 4097), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		want := tt.in.Materialize()
		got := keep(tt.in)
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("%s: kept bytes differ from the message", tt.name)
		}
		shared := len(got) > 0 && len(tt.in) > 0 && &got[0].ReadOnlyData()[0] == &tt.in[0].ReadOnlyData()[0]
		if shared != tt.shared {
			t.Errorf("%s: shared = %v, want %v", tt.name, shared, tt.shared)
		}
		if !tt.shared && len(got) > 1 {
			t.Errorf("%s: copied into %d buffers, want one", tt.name, len(got))
		}
		if !tt.shared && len(got) == 1 && cap(got[0].ReadOnlyData()) > 4*max(got.Len(), 1024) {
			t.Errorf("%s: the copy holds a %d-byte buffer for %d bytes", tt.name, cap(got[0].ReadOnlyData()), got.Len())
		}
		got.Free()
		tt.in.Free()
	}
}
