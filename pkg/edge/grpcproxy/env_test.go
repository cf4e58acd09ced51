package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/forwarded"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/tracing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// seenCall is what a test backend observed about one call.
type seenCall struct {
	md          metadata.MD
	deadline    time.Time
	hasDeadline bool
}

// testBackend is a TestService that names itself in responses, headers and trailers and reports what it saw.
type testBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name  string
	addr  string
	calls atomic.Int64
	seen  chan seenCall // one per call, buffered
	ended chan error    // FullDuplexCall: the stream context's error when the call ended
}

func (b *testBackend) observe(ctx context.Context) {
	b.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	d, ok := ctx.Deadline()
	select {
	case b.seen <- seenCall{md: md, deadline: d, hasDeadline: ok}:
	default:
	}
}

// echoStatus returns the error a request asks for, or nil.
func echoStatus(s *testgrpc.EchoStatus) error {
	if s == nil || s.Code == 0 {
		return nil
	}
	return status.Error(codes.Code(s.Code), s.Message)
}

func (b *testBackend) EmptyCall(ctx context.Context, _ *testgrpc.Empty) (*testgrpc.Empty, error) {
	b.observe(ctx)
	return &testgrpc.Empty{}, nil
}

func (b *testBackend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	b.observe(ctx)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", b.name))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-backend-trailer", b.name))
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{ServerId: b.name, Payload: req.GetPayload()}, nil
}

func (b *testBackend) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	b.observe(stream.Context())
	_ = stream.SetHeader(metadata.Pairs("x-backend", b.name))
	stream.SetTrailer(metadata.Pairs("x-backend-trailer", b.name))
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return err
	}
	for i := range req.GetResponseParameters() {
		body := fmt.Sprintf("%s-%d", b.name, i)
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(body)}}); err != nil {
			return err
		}
	}
	return nil
}

func (b *testBackend) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	b.observe(stream.Context())
	var bodies []string
	size := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		bodies = append(bodies, string(req.GetPayload().GetBody()))
		size += len(req.GetPayload().GetBody())
	}
	stream.SetTrailer(metadata.Pairs("x-received", strings.Join(bodies, ",")))
	return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(size)})
}

// FullDuplexCall sends its headers at once (before any message), then echoes every payload; a request carrying a
// response status ends the call with it.
func (b *testBackend) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	b.observe(stream.Context())
	defer func() {
		select {
		case b.ended <- stream.Context().Err():
		default:
		}
	}()
	if err := stream.SendHeader(metadata.Pairs("x-backend", b.name)); err != nil {
		return err
	}
	stream.SetTrailer(metadata.Pairs("x-backend-trailer", b.name))
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := echoStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

// startBackend serves a testBackend on 127.0.0.1 and returns it with a plaintext connection to it.
func startBackend(t *testing.T, name string) (*testBackend, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &testBackend{name: name, addr: lis.Addr().String(), seen: make(chan seenCall, 64), ended: make(chan error, 64)}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, b)
	serve(t, srv, lis)
	return b, dialPlain(t, b.addr)
}

// serve runs srv on lis until the test ends.
func serve(t *testing.T, srv *grpc.Server, lis net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

func dialPlain(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

type staticRoutes struct{ t *route.GRPCTable }

func (s staticRoutes) GRPCTable() *route.GRPCTable { return s.t }

type backendMap map[string]*grpc.ClientConn

func (m backendMap) GRPC(name string) (*grpc.ClientConn, bool) {
	cc, ok := m[name]
	return cc, ok
}

// logLine is one line written to a recordLogger.
type logLine struct {
	level string
	msg   string
	kv    map[string]any
}

// recordLogger keeps every line; With is not used by the proxy, so it returns the same logger.
type recordLogger struct {
	mu    sync.Mutex
	lines []logLine
}

func (r *recordLogger) add(level, msg string, kv []any) {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[fmt.Sprint(kv[i])] = kv[i+1]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, logLine{level: level, msg: msg, kv: m})
}

func (r *recordLogger) Debug(msg string, kv ...any) { r.add("debug", msg, kv) }
func (r *recordLogger) Info(msg string, kv ...any)  { r.add("info", msg, kv) }
func (r *recordLogger) Warn(msg string, kv ...any)  { r.add("warn", msg, kv) }
func (r *recordLogger) Error(msg string, kv ...any) { r.add("error", msg, kv) }
func (r *recordLogger) With(...any) logging.Logger  { return r }
func (r *recordLogger) Enabled(logging.Level) bool  { return true }

func (r *recordLogger) snapshot() []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logLine(nil), r.lines...)
}

// callLines returns the per-call lines written so far.
func (r *recordLogger) callLines() []logLine { return filterLines(r.snapshot(), "grpc call") }

func filterLines(lines []logLine, msg string) (out []logLine) {
	for _, l := range lines {
		if l.msg == msg {
			out = append(out, l)
		}
	}
	return out
}

// env is a proxy on 127.0.0.1 in front of test backends.
type env struct {
	proxy    *Proxy
	addr     string
	backends map[string]*testBackend
	log      *recordLogger
	reg      *prometheus.Registry
}

type envConfig struct {
	routes    []route.GRPCRoute
	adhoc     []route.Adhoc
	backends  []string                    // names of test backends to start
	conns     map[string]*grpc.ClientConn // extra backend connections
	guard     backend.DialGuard           // of the adhoc dialer; nil means backend.DefaultDialGuard()
	dns       map[string][]string         // names the adhoc dialer resolves; others are not found
	dial      time.Duration               // the adhoc dialer's timeout; 0 means the default
	idle      time.Duration
	forwarded *forwarded.Policy
	reg       *prometheus.Registry
	tracer    *tracing.Tracer
}

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	e := &env{backends: map[string]*testBackend{}, log: &recordLogger{}, reg: cfg.reg}
	if e.reg == nil {
		e.reg = prometheus.NewRegistry()
	}
	conns := backendMap{}
	for _, name := range cfg.backends {
		b, cc := startBackend(t, name)
		e.backends[name] = b
		conns[name] = cc
	}
	for name, cc := range cfg.conns {
		conns[name] = cc
	}
	table, err := route.NewGRPCTable(cfg.routes, cfg.adhoc)
	if err != nil {
		t.Fatalf("route.NewGRPCTable: %v", err)
	}
	e.proxy = New(Deps{
		Log:              e.log,
		Registerer:       e.reg,
		Routes:           staticRoutes{table},
		Backends:         conns,
		Adhoc:            backend.NewAdhocDialer(backend.Deps{DNS: testutil.NewResolver(cfg.dns), Options: backend.Options{DialTimeout: cfg.dial}}, cfg.guard),
		Forwarded:        cfg.forwarded,
		AdhocIdleTimeout: cfg.idle,
		Tracer:           cfg.tracer,
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	e.addr = lis.Addr().String()
	t.Cleanup(e.proxy.Close) // runs after the server below has stopped
	serve(t, grpc.NewServer(e.proxy.ServerOptions()...), lis)
	return e
}

// client dials the proxy; authority, when set, is sent as :authority.
func (e *env) client(t *testing.T, authority string) testgrpc.TestServiceClient {
	t.Helper()
	var opts []grpc.DialOption
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	return testgrpc.NewTestServiceClient(dialPlain(t, e.addr, opts...))
}

// callCtx bounds one test call.
func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitSeen returns the next call a backend observed.
func waitSeen(t *testing.T, b *testBackend) seenCall {
	t.Helper()
	select {
	case s := <-b.seen:
		return s
	case <-time.After(5 * time.Second):
		t.Fatalf("backend %s saw no call", b.name)
		return seenCall{}
	}
}
